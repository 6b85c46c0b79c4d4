"""MVaEMa processor and tokenizer: formats, exact decoding, image modes, and errors that say what is wrong."""

import logging

import numpy as np
import pytest
import torch
from image_fixtures import PROC_STATUS, large_sixteen_bit_png, peak_mib_added_by
from model_fixtures import ANSWERS, CORPUS, QUESTIONS, micrographs, tiny_processor, tiny_tokenizer
from PIL import Image
from tokenizers import Tokenizer, models
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from modeling_mvaema import MVaEMaConfig, MVaEMaProcessor, train_wordpiece_tokenizer
from modeling_mvaema.configuration_mvaema import SPECIAL_TOKENS


def test_tokenizer_special_tokens_match_the_config_defaults():
    tokenizer = tiny_tokenizer()
    config = MVaEMaConfig()
    for field, token in SPECIAL_TOKENS.items():
        assert tokenizer.convert_tokens_to_ids(token) == getattr(config, field)
    assert {"[ENC]", "[DEC]"} <= set(tokenizer.all_special_tokens)
    assert len(tokenizer) <= 300


def test_tokenizer_decodes_text_exactly_even_unseen_words(tmp_path):
    tokenizer = tiny_tokenizer()
    texts = CORPUS + ["Unseen words: zebra-42 (Q) & 3.5x/[bar]!"]
    for text in texts:
        ids = tokenizer(text)["input_ids"]
        assert ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id
        assert tokenizer.unk_token_id not in ids, text
        assert tokenizer.decode(ids, skip_special_tokens=True) == text
    tokenizer.save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    for text in texts:
        assert reloaded(text)["input_ids"] == tokenizer(text)["input_ids"]
        assert reloaded.decode(reloaded(text)["input_ids"], skip_special_tokens=True) == text


def test_tokenizer_rejects_a_vocabulary_too_small_for_its_alphabet():
    with pytest.raises(ValueError, match="vocab_size=100 is too small"):
        train_wordpiece_tokenizer(CORPUS, vocab_size=100)


def test_config_from_tokenizer_takes_vocabulary_and_ids():
    config = MVaEMaConfig.from_tokenizer(tiny_tokenizer(), "no_csa")
    assert config.text_config.vocab_size == len(tiny_tokenizer())
    assert config.use_causal_self_attention is False and config.ablation == "no_csa"
    wordpiece = Tokenizer(
        models.WordPiece({"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "a": 4}, unk_token="[UNK]")
    )
    incomplete = PreTrainedTokenizerFast(tokenizer_object=wordpiece, unk_token="[UNK]", pad_token="[PAD]")
    with pytest.raises(ValueError, match=r"no \['\[MASK\]', '\[ENC\]', '\[DEC\]'\] token"):
        MVaEMaConfig.from_tokenizer(incomplete)


def test_processor_builds_questions_answers_and_pixels():
    processor = MVaEMaProcessor.from_tokenizer(tiny_tokenizer())  # the paper's 224 px
    batch = processor(
        images=micrographs(2),
        questions=QUESTIONS[:3],
        captions=["SEM micrograph", None, None],
        answers=ANSWERS[:3],
        image_index=[0, 1, 1],
    )
    tokenizer = processor.tokenizer
    assert batch["pixel_values"].shape == (2, 3, 224, 224)
    assert batch["pixel_values"].min() >= -1 and batch["pixel_values"].max() <= 1
    assert batch["image_index"].tolist() == [0, 1, 1]
    caption = tokenizer("SEM micrograph", add_special_tokens=False)["input_ids"]
    question = tokenizer(QUESTIONS[0], add_special_tokens=False)["input_ids"]
    row = batch["input_ids"][0][batch["attention_mask"][0].bool()].tolist()
    assert row == [tokenizer.cls_token_id, *caption, *question, tokenizer.sep_token_id]
    for labels, answer in zip(batch["labels"], ANSWERS[:3], strict=True):
        tokens = labels[labels != -100].tolist()
        assert tokens[-1] == tokenizer.sep_token_id
        assert processor.decode(tokens) == answer
        assert (labels[len(tokens) :] == -100).all()
    assert batch["input_ids"].dtype == batch["labels"].dtype == torch.long


def test_long_captions_give_way_before_the_question():
    processor = tiny_processor()
    question = "What does the micrograph show?"
    batch = processor(questions=[question], captions=["high-aspect-ratio MEMS device " * 20], max_question_length=16)
    ids = batch["input_ids"][0].tolist()
    question_ids = processor.tokenizer(question, add_special_tokens=False)["input_ids"]
    assert len(ids) == 16 and ids[-len(question_ids) - 1 : -1] == question_ids
    long_answer = processor(questions=[question], answers=["nanowires " * 100], max_answer_length=10)
    assert long_answer["labels"].shape == (1, 10) and long_answer["labels"][0, -1] == processor.tokenizer.sep_token_id


def _pixels(processor, image):
    return processor(images=[image], questions=["What is shown?"])["pixel_values"][0]


def test_images_of_every_mode_become_rgb():
    processor = tiny_processor()
    grey = np.tile(np.linspace(0, 255, 64).astype(np.uint8), (48, 1))
    reference = _pixels(processor, Image.fromarray(grey))
    sixteen_bit = Image.fromarray(grey.astype(np.uint16) * 4 + 1000)  # a 12-bit detector's range
    assert sixteen_bit.mode == "I;16"
    torch.testing.assert_close(_pixels(processor, sixteen_bit), reference, atol=2 / 255, rtol=0)
    palette = Image.fromarray(grey).convert("P")
    torch.testing.assert_close(_pixels(processor, palette), reference, atol=2 / 255, rtol=0)
    for mode in ("RGB", "CMYK", "RGBA", "LA"):
        assert _pixels(processor, Image.fromarray(grey).convert(mode)).shape == (3, 32, 32)
    transparent = Image.new("RGBA", (40, 40), (0, 0, 0, 0))
    assert (_pixels(processor, transparent) == 1).all()  # composited onto white


def test_a_nan_pixel_leaves_a_float_image_given_to_the_processor_stretched_and_is_named(caplog):
    """A float micrograph handed straight to the processor (the README's snippet): a pixel with no measured value is
    shown black (as the lowest value) and reported, instead of making the range NaN and the whole image black."""
    processor = tiny_processor()
    values = np.tile(np.linspace(0.5, 2.5, 64, dtype=np.float32), (48, 1))
    values[10, 20] = np.nan
    with caplog.at_level(logging.WARNING):
        with_nan = _pixels(processor, Image.fromarray(values))
    assert "an image: NaN or infinite pixels (no measured value) are shown black" in caplog.text
    values[10, 20] = 0.5
    assert torch.equal(with_nan, _pixels(processor, Image.fromarray(values)))
    assert with_nan.max() - with_nan.min() > 1.9  # nearly the whole normalised range, -1 to 1: still stretched


class ConvertedImages:
    """Stands in for BLIP's resize (a cost of its own on a 9000 x 9000 RGB image) and keeps what it was given."""

    def __init__(self):
        self.images = []

    def __call__(self, images, return_tensors):
        self.images += images
        return {"pixel_values": torch.zeros(len(images), 3, 32, 32)}


@pytest.mark.skipif(not PROC_STATUS.exists(), reason="peak memory is read from Linux's /proc/self")
def test_a_large_sixteen_bit_image_given_to_the_processor_is_converted_in_a_few_hundred_megabytes(tmp_path):
    processor = tiny_processor()
    processor.image_processor = converted = ConvertedImages()
    image = Image.open(large_sixteen_bit_png(tmp_path / "large.png"))
    image.load()
    added = peak_mib_added_by(lambda: processor(images=image, questions="What is shown?"))
    assert added < 500  # the 8-bit RGB result alone is 309 MiB; converting it in float64 took 1.3 GiB more
    assert converted.images[0].getextrema() == ((0, 255),) * 3


def test_batch_decode_drops_special_tokens():
    processor = tiny_processor()
    tokenizer = processor.tokenizer
    answer = tokenizer(ANSWERS[0], add_special_tokens=False)["input_ids"]
    generated = torch.tensor([[tokenizer.convert_tokens_to_ids("[DEC]"), *answer, tokenizer.sep_token_id, 0, 0]])
    assert processor.batch_decode(generated) == [ANSWERS[0]]


def test_label_texts_are_tokenized_like_answers():
    processor = tiny_processor()
    tokenizer = processor.tokenizer
    texts = ["nanowires", "porous film"]
    labels = processor.prepare_label_texts(texts)
    for ids, mask, text in zip(labels["label_input_ids"], labels["label_attention_mask"], texts, strict=True):
        tokens = ids[mask.bool()].tolist()
        assert tokens == [
            tokenizer.cls_token_id,
            *tokenizer(text, add_special_tokens=False)["input_ids"],
            tokenizer.sep_token_id,
        ]


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (dict(questions=["What?", "  "]), ValueError, r"questions\[1\] is '  '"),
        (dict(questions=[]), ValueError, "non-empty list of strings"),
        (dict(questions=["What?"], captions=[None, None]), ValueError, "2 captions for 1 questions"),
        (dict(questions=["What?", "Why?"], answers=["Yes."]), ValueError, "1 answers for 2 questions"),
        (dict(questions=["What?"], answers=[""]), ValueError, r"answers\[0\]"),
        (dict(questions=["What?"], images=[np.zeros((8, 8, 3))]), TypeError, "not a PIL image"),
        (dict(questions=["What?"], images="image.png"), TypeError, "PIL image"),
        (dict(questions=["What?", "Why?"], images=micrographs(1)), ValueError, "1 images for 2 questions"),
        (dict(questions=["What?"], images=micrographs(1), image_index=[1]), ValueError, r"must lie in \[0, 0\]"),
        (dict(questions=["What?"], image_index=[0]), ValueError, "without images"),
    ],
)
def test_bad_inputs_say_what_is_wrong(call, error, message):
    with pytest.raises(error, match=message):
        tiny_processor()(**call)
