"""Like-for-like VQA: MVaEMa and the BLIP peer are decoded with one generation config, MVaEMa's own settings."""

import numpy as np
import pytest
import torch
from transformers.generation.utils import GenerationMixin

from instruct_tuning.data import PixelStore, QATable
from instruct_tuning.evaluation import decoding_settings, generate_answers, generation_config_for, shared_generation_config
from instruct_tuning.peer import BlipPeerForQuestionAnswering, blip_peer_config
from modeling_mvaema.modeling_mvaema import default_generation_config
from tests.model_fixtures import IMAGE_SIZE, qa_batch, tiny_config, tiny_model, tiny_processor


def qa_table(processor) -> tuple[QATable, PixelStore]:
    """The fixtures' four QA pairs as a split table over a four-image pixel store."""
    batch = qa_batch(processor)
    prompt_ids, prompt_mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
    table = QATable(image_index=torch.arange(4), prompt_ids=prompt_ids, prompt_mask=prompt_mask,
                    prompt_ids_no_caption=prompt_ids, prompt_mask_no_caption=prompt_mask, labels=labels,
                    category=torch.zeros(4, dtype=torch.long), caption_ids=prompt_ids, caption_mask=prompt_mask)
    pixels = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (4, 3, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8))
    return table, PixelStore(pixels, [f"image-{i}" for i in range(4)])


def peer_model() -> BlipPeerForQuestionAnswering:
    torch.manual_seed(0)
    return BlipPeerForQuestionAnswering(blip_peer_config(tiny_config()))


def test_both_models_are_decoded_with_identical_settings(monkeypatch):
    processor = tiny_processor()
    table, store = qa_table(processor)
    received = []
    original = GenerationMixin.generate

    def recording_generate(self, *args, generation_config=None, **kwargs):
        received.append(generation_config.to_dict())
        return original(self, *args, generation_config=generation_config, **kwargs)

    monkeypatch.setattr(GenerationMixin, "generate", recording_generate)
    for model in (tiny_model(), peer_model()):
        prompts = {"input_ids": table.prompt_ids, "attention_mask": table.prompt_mask}
        answers = generate_answers(model, processor, store.normalized(table.image_index), prompts,
                                   torch.device("cpu"), batch_size=4, max_new_tokens=table.labels.shape[1])
        assert len(answers) == 4
    mvaema_settings, peer_settings = received
    assert mvaema_settings == peer_settings
    assert peer_settings["no_repeat_ngram_size"] == 4 and peer_settings["num_beams"] == 1
    assert peer_settings["max_new_tokens"] == table.labels.shape[1]


def test_the_shared_settings_are_mvaema_defaults_and_the_tables_name_them():
    processor = tiny_processor()
    shared = shared_generation_config(processor, max_new_tokens=12)
    own = default_generation_config(tiny_config())
    assert (shared.no_repeat_ngram_size, shared.suppress_tokens) == (own.no_repeat_ngram_size, own.suppress_tokens)
    assert (shared.bos_token_id, shared.eos_token_id, shared.pad_token_id) == (own.bos_token_id, own.eos_token_id, own.pad_token_id)
    stated = decoding_settings(shared, processor)
    assert stated == {"max_new_tokens": 12, "num_beams": 1, "do_sample": False, "no_repeat_ngram_size": 4,
                      "suppress_tokens": ["[PAD]", "[CLS]", "[MASK]", "[ENC]", "[DEC]"]}


def test_a_model_with_other_special_token_ids_is_refused():
    processor = tiny_processor()
    shared = shared_generation_config(processor, max_new_tokens=12)
    model = tiny_model()
    model.config.sep_token_id = 99
    with pytest.raises(ValueError, match="evaluate a model with the processor .tokenizer. it was trained with"):
        generation_config_for(model, shared)
    assert generation_config_for(peer_model(), shared) is shared


def test_the_peer_trains_on_the_drawn_pairs_and_leaves_mvaemas_answer_only_rows_out():
    """`lm_only_rows` (MVaEMa's extra category questions) are MVaEMa's auxiliary signal: the peer's loss is the one
    it gets from the drawn pairs alone."""
    processor, peer = tiny_processor(), peer_model().eval()
    batch = qa_batch(processor, [0, 1, 2, 0])
    drawn = {name: batch[name][:2] for name in ("input_ids", "attention_mask", "labels", "image_index")}
    with torch.no_grad():
        with_extra_rows = peer(**batch, lm_only_rows=2).loss
        drawn_only = peer(pixel_values=batch["pixel_values"], **drawn).loss
        every_row = peer(**batch).loss
    torch.testing.assert_close(with_extra_rows, drawn_only)
    assert not torch.isclose(every_row, drawn_only)
