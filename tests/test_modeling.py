"""Behaviour of the MVaEMa model: losses against direct recomputation, learning, KV cache, weight sharing and
ablations."""

import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F
from huggingface_hub.errors import StrictDataclassError
from model_fixtures import (
    ANSWERS,
    IMAGE_SIZE,
    QUESTIONS,
    micrographs,
    qa_batch,
    tiny_config,
    tiny_model,
    tiny_processor,
    tiny_tokenizer,
)

from modeling_mvaema import ABLATIONS, MVaEMaConfig, MVaEMaForQuestionAnswering, MVaEMaProcessor, layers_mvaema
from modeling_mvaema.losses_mvaema import (
    at_most,
    image_text_contrastive_loss,
    micrograph_keys,
    pair_texts,
    pairs_per_key,
)
from modeling_mvaema.modeling_mvaema import MVaEMaEncoderOutput, compile_for_training

SHARED_IMAGES = [0, 0, 1, 2]  # questions 0 and 1 are about the same micrograph


def reference_itc(image_features, text_features, image_keys, text_keys, temperature):
    """The contrastive loss written out pair by pair: an image and a text with equal keys are positives."""
    similarity = image_features @ text_features.T / temperature  # (images, texts)

    def direction(logits, row_keys, column_keys):
        losses = []
        for row, key in enumerate(row_keys):
            positives = [column for column, other in enumerate(column_keys) if other == key]
            if positives:
                terms = [torch.logsumexp(logits[row], 0) - logits[row, column] for column in positives]
                losses.append(sum(terms) / len(terms))
        return torch.stack(losses).mean()

    return (direction(similarity.T, text_keys, image_keys) + direction(similarity, image_keys, text_keys)) / 2


def pair_rows(batch: dict, config: MVaEMaConfig) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Each pair's ITC/ITM text as its own unpadded "[CLS] caption question [SEP] answer [SEP]" (ids, mask), cut
    like the model cuts it."""
    rows = []
    for prompt, mask, answer in zip(batch["input_ids"], batch["attention_mask"], batch["labels"], strict=True):
        ids = torch.cat([prompt[mask.bool()], answer[answer != -100]])[: config.contrastive_max_length][None]
        rows.append((ids, torch.ones_like(ids)))
    return rows


@pytest.mark.parametrize(
    ("image_keys", "text_keys"),
    [
        ([0, 1, 2, 3], [0, 0, 1, 2, 2, 2]),  # shared images; image 3 has no text in the batch
        ([5, 7, 5, 9], [5, 5, 7, 9, 9, 7]),  # rows 0 and 2 hold the same micrograph
    ],
)
def test_itc_loss_matches_pairwise_reference(image_keys, text_keys):
    torch.manual_seed(0)
    image_features = F.normalize(torch.randn(4, 8), dim=-1)
    text_features = F.normalize(torch.randn(6, 8), dim=-1)
    temperature = torch.tensor(0.07)
    loss = image_text_contrastive_loss(
        image_features, text_features, torch.tensor(image_keys), torch.tensor(text_keys), temperature
    )
    torch.testing.assert_close(loss, reference_itc(image_features, text_features, image_keys, text_keys, temperature))


def test_itc_loss_is_the_papers_infonce_with_one_text_per_image():
    torch.manual_seed(1)
    image_features, text_features = F.normalize(torch.randn(5, 8), dim=-1), F.normalize(torch.randn(5, 8), dim=-1)
    logits = image_features @ text_features.T / 0.1
    paper = (F.cross_entropy(logits, torch.arange(5)) + F.cross_entropy(logits.T, torch.arange(5))) / 2
    keys = torch.arange(5)
    loss = image_text_contrastive_loss(image_features, text_features, keys, keys, torch.tensor(0.1))
    torch.testing.assert_close(loss, paper)


def test_forward_itc_loss_equals_recomputation_from_unpadded_pair_texts():
    model, processor = tiny_model().eval(), tiny_processor()
    batch = qa_batch(processor, SHARED_IMAGES)
    with torch.no_grad():
        output = model(**batch)
        image_features = F.normalize(model.mvaema.vision_projection(output.image_embeds[:, 0]), dim=-1)
        text_features = torch.cat(
            [
                F.normalize(model.mvaema.text_projection(model.mvaema.text_model(ids, mask)[:, 0]), dim=-1)
                for ids, mask in pair_rows(batch, model.config)
            ]
        )
    expected = reference_itc(image_features, text_features, [0, 1, 2], SHARED_IMAGES, model.mvaema.temperature)
    torch.testing.assert_close(output.loss_itc, expected)


def test_image_keys_make_repeated_rows_one_micrograph():
    model, processor = tiny_model().eval(), tiny_processor()
    batch = qa_batch(processor)
    keys = [11, 12, 11, 13]  # rows 0 and 2 are two views (say, crops) of one micrograph
    with torch.no_grad():
        output = model(**batch, image_keys=torch.tensor(keys))
        image_features = F.normalize(model.mvaema.vision_projection(output.image_embeds[:, 0]), dim=-1)
        text_features = torch.cat(
            [
                F.normalize(model.mvaema.text_projection(model.mvaema.text_model(ids, mask)[:, 0]), dim=-1)
                for ids, mask in pair_rows(batch, model.config)
            ]
        )
        expected = reference_itc(image_features, text_features, keys, keys, model.mvaema.temperature)
        torch.testing.assert_close(output.loss_itc, expected)
        assert not torch.allclose(model(**batch).loss_itc, expected)  # without keys row 2 is another image
    with pytest.raises(ValueError, match="share a row of pixel_values"):
        model(**{**batch, "image_index": torch.tensor([0, 0, 1, 2])}, image_keys=torch.tensor(keys))
    with pytest.raises(ValueError, match="values >= 0"):
        model(**batch, image_keys=torch.tensor([-1, 12, 11, 13]))


@pytest.mark.parametrize("mode", ["sample", "hardest", "uniform"])
def test_itm_negatives_never_use_the_pairs_own_micrograph(mode):
    model = tiny_model(itm_negatives=mode)
    generator = torch.Generator().manual_seed(0)
    row_keys = torch.tensor([3, 4, 5, 3])  # rows 0 and 3 hold the same micrograph
    for trial in range(40):
        model.train(trial % 2 == 0)
        image_index = torch.randint(0, 4, (7,), generator=generator)
        image_index[:2] = torch.tensor([0, 1])  # at least two distinct micrographs
        text_keys = row_keys[image_index]
        text_to_image = torch.randn(7, 4, generator=generator) * 5
        negative_images, negative_texts = model.itm_negatives(text_to_image, image_index, row_keys, text_keys)
        assert (row_keys[negative_images] != text_keys).all()
        assert (text_keys[negative_texts] != text_keys).all()
    model.eval()  # eval: the hardest (most similar) image and text of another micrograph
    negative_images, negative_texts = model.itm_negatives(text_to_image, image_index, row_keys, text_keys)
    if mode == "uniform":  # similarities are ignored: the first other micrograph
        text_to_image = torch.zeros_like(text_to_image)
    masked = text_to_image.masked_fill(text_keys[:, None] == row_keys, float("-inf"))
    assert torch.equal(negative_images, masked.argmax(dim=1))
    masked_texts = text_to_image.T[image_index].masked_fill(text_keys[:, None] == text_keys, float("-inf"))
    assert torch.equal(negative_texts, masked_texts.argmax(dim=1))


@pytest.mark.parametrize(
    ("pairs_per_image", "scored"),
    [(0, [0, 1, 2, 3]), (1, [0, 2, 3]), (2, [0, 1, 2, 3])],  # eval mode scores the first pairs of each micrograph
)
def test_itm_loss_equals_pair_by_pair_recomputation(pairs_per_image, scored):
    model = tiny_model(itm_pairs_per_image=pairs_per_image, itm_negatives="sample").eval()
    processor = tiny_processor()
    batch = qa_batch(processor, SHARED_IMAGES)
    with torch.no_grad():
        output = model(**batch)
        image_embeds = output.image_embeds
        texts = pair_rows(batch, model.config)
        image_features = F.normalize(model.mvaema.vision_projection(image_embeds[:, 0]), dim=-1)
        text_features = torch.cat(
            [F.normalize(model.mvaema.text_projection(model.mvaema.text_model(ids, mask)[:, 0]), dim=-1) for ids, mask in texts]
        )
        similarity = text_features @ image_features.T
        image_index = torch.tensor(SHARED_IMAGES)
        negative_images = similarity.masked_fill(image_index[:, None] == torch.arange(3), -2).argmax(dim=1)
        negative_texts = similarity.T[image_index].masked_fill(image_index[:, None] == image_index, -2).argmax(1)
        pairs = [(b, image_index[b], 1.0) for b in scored]
        pairs += [(b, negative_images[b], 0.0) for b in scored]
        pairs += [(negative_texts[b], image_index[b], 0.0) for b in scored]
        logits, targets = [], []
        for text, image, target in pairs:
            ids, mask = texts[text]
            states = model.mvaema.grounded_text_states(image_embeds[int(image)][None], None, ids, mask)
            logits.append(model.mvaema.itm_head(states[:, 0]).squeeze())
            targets.append(target)
    expected = F.binary_cross_entropy_with_logits(torch.stack(logits), torch.tensor(targets))
    torch.testing.assert_close(output.loss_itm, expected)


def test_uniform_itm_negatives_ignore_the_similarities():
    model = tiny_model(itm_negatives="uniform").train()
    row_keys, image_index = torch.arange(4), torch.arange(8) % 4
    text_to_image = torch.tensor([[0.0, 100.0, 0.0, 0.0]]).expand(8, -1)  # image 1 is by far the most similar
    torch.manual_seed(0)
    chosen = torch.cat([model.itm_negatives(text_to_image, image_index, row_keys, image_index)[0] for _ in range(20)])
    about_micrograph_0 = (image_index == 0).repeat(20)
    assert set(chosen[about_micrograph_0].tolist()) == {1, 2, 3}


def test_pair_prompt_replaces_the_prompt_for_itc_and_itm_only():
    """ITC and ITM read `pair_prompt_ids` + answer; the question encoder and the LM still read `input_ids`."""
    processor, model = tiny_processor(), tiny_model().eval()
    with_captions = qa_batch(processor, SHARED_IMAGES)
    without = processor(images=micrographs(3), questions=QUESTIONS, answers=ANSWERS, image_index=SHARED_IMAGES)
    mixed = model(**without, pair_prompt_ids=with_captions["input_ids"], pair_prompt_mask=with_captions["attention_mask"])
    captioned, plain = model(**with_captions), model(**without)
    torch.testing.assert_close(mixed.loss_itc, captioned.loss_itc)
    torch.testing.assert_close(mixed.loss_itm, captioned.loss_itm)
    torch.testing.assert_close(mixed.loss_lm, plain.loss_lm)
    assert not torch.isclose(captioned.loss_itc, plain.loss_itc)


def test_answer_only_rows_add_to_the_lm_loss_and_leave_itc_and_itm_alone():
    """`lm_only_rows`: the last rows (the training script's extra category questions) are answered by the decoder
    and scored by the LM loss over all answer tokens; ITC and ITM read the other rows exactly as without them."""
    processor, model = tiny_processor(), tiny_model().eval()
    pairs = qa_batch(processor, SHARED_IMAGES)
    extra = processor(images=micrographs(3), questions=QUESTIONS[:2], answers=ANSWERS[:2], image_index=[2, 0])
    width = max(pairs["input_ids"].shape[1], extra["input_ids"].shape[1])
    answer_width = max(pairs["labels"].shape[1], extra["labels"].shape[1])

    def padded(tensor, to, value):
        return F.pad(tensor, (0, to - tensor.shape[1]), value=value)

    both = {
        "pixel_values": pairs["pixel_values"],
        "input_ids": torch.cat([padded(b["input_ids"], width, model.config.pad_token_id) for b in (pairs, extra)]),
        "attention_mask": torch.cat([padded(b["attention_mask"], width, 0) for b in (pairs, extra)]),
        "labels": torch.cat([padded(b["labels"], answer_width, -100) for b in (pairs, extra)]),
        "image_index": torch.cat([pairs["image_index"], extra["image_index"]]),
    }
    with torch.no_grad():
        mixed = model(**both, lm_only_rows=2)
        alone = model(**pairs)
        every_row = model(**both)
    torch.testing.assert_close(mixed.loss_itc, alone.loss_itc)
    torch.testing.assert_close(mixed.loss_itm, alone.loss_itm)
    torch.testing.assert_close(mixed.loss_lm, every_row.loss_lm)
    assert not torch.isclose(mixed.loss_lm, alone.loss_lm)
    assert not torch.isclose(every_row.loss_itc, alone.loss_itc)
    # Training decodes the answer-only rows apart, cut to their scored tokens: the same loss as the full grid.
    model.train()
    torch.manual_seed(0)
    apart = model(**both, lm_only_rows=2)
    torch.manual_seed(0)
    full_grid = model(**both, lm_only_rows=2, return_logits=True)
    assert apart.logits is None and full_grid.logits is not None
    torch.testing.assert_close(apart.loss_lm, full_grid.loss_lm)
    torch.testing.assert_close(apart.loss_lm, mixed.loss_lm)


def test_single_image_batch_skips_itm_and_still_trains():
    model, processor = tiny_model(), tiny_processor()
    output = model(**qa_batch(processor, [0, 0, 0, 0]))
    assert output.loss_itm is None and torch.isfinite(output.loss_itc) and torch.isfinite(output.loss_lm)
    output.loss.backward()
    assert model.mvaema.itm_head.weight.grad is None and model.mvaema.vision_projection.weight.grad is not None


def test_lm_loss_ignores_padding_and_padding_does_not_leak():
    model, processor = tiny_model().eval(), tiny_processor()
    batch = qa_batch(processor)
    labels = batch["labels"]
    assert (labels == -100).any(), "the batch needs padded answers for this test"
    with torch.no_grad():
        output = model(**batch)
        log_probs = output.logits.log_softmax(dim=-1)
        terms = [
            -log_probs[b, t, labels[b, t]] for b in range(4) for t in range(labels.shape[1]) if labels[b, t] != -100
        ]
        torch.testing.assert_close(output.loss_lm, torch.stack(terms).mean())
        shortest = int((labels != -100).sum(dim=1).argmin())
        length = int((labels[shortest] != -100).sum())
        alone = {key: value[shortest : shortest + 1] for key, value in batch.items()}
        alone["labels"] = alone["labels"][:, :length]
        alone_output = model(**alone)
    torch.testing.assert_close(alone_output.logits[0], output.logits[shortest, :length])
    torch.testing.assert_close(
        alone_output.loss_lm, -log_probs[shortest, torch.arange(length), labels[shortest, :length]].mean()
    )


def test_total_loss_is_the_configured_weighted_sum():
    model = tiny_model(itc_loss_weight=0.5, itm_loss_weight=2.0, lm_loss_weight=0.25).eval()
    output = model(**qa_batch(tiny_processor(), SHARED_IMAGES))
    torch.testing.assert_close(output.loss, 0.5 * output.loss_itc + 2.0 * output.loss_itm + 0.25 * output.loss_lm)


def test_shared_images_give_the_same_outputs_as_repeated_images():
    model, processor = tiny_model().eval(), tiny_processor()
    shared = qa_batch(processor, SHARED_IMAGES)
    repeated = dict(shared)
    repeated["pixel_values"] = shared["pixel_values"][torch.tensor(SHARED_IMAGES)]
    del repeated["image_index"]
    with torch.no_grad():
        torch.testing.assert_close(model(**shared).logits, model(**repeated).logits)


def test_tiny_model_learns_four_answers_and_reproduces_them_greedily():
    model, processor = tiny_model(seed=1), tiny_processor()
    batch = qa_batch(processor)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(150):
        output = model(**batch)
        output.loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(output.loss_lm.item())
    assert losses[-1] < 0.05 * losses[0]
    model.eval()
    generated = model.generate(
        pixel_values=batch["pixel_values"], input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
    )
    assert processor.batch_decode(generated) == ANSWERS


@pytest.mark.parametrize(
    "ablation, memory",
    [(None, "image_and_question"), (None, "question"), ("no_ca", "image_and_question"),
     ("no_csa", "image_and_question"), ("no_sa", "image_and_question")],
)
@pytest.mark.parametrize("decoding", [{}, {"num_beams": 3}], ids=["greedy", "beam"])
def test_generate_gives_the_same_tokens_with_and_without_cache(ablation, memory, decoding):
    model, processor = tiny_model(ablation, decoder_memory=memory).eval(), tiny_processor()
    batch = qa_batch(processor, SHARED_IMAGES, answers=False)
    settings = dict(max_new_tokens=12, min_new_tokens=12, no_repeat_ngram_size=0, **decoding)
    cached = model.generate(**batch, use_cache=True, **settings)
    uncached = model.generate(**batch, use_cache=False, **settings)
    assert cached.shape == (4, 13)
    assert torch.equal(cached, uncached)


@pytest.mark.parametrize("ablation", [None, "no_ca", "no_csa", "no_sa"])
def test_step_by_step_decoding_with_cache_matches_full_forward(ablation):
    model, processor = tiny_model(ablation).eval(), tiny_processor()
    batch = qa_batch(processor)
    with torch.no_grad():
        full = model(**batch)
        encoded = model.encode(batch["pixel_values"], batch["input_ids"], batch["attention_mask"])
        decoder_ids = model.prepare_decoder_input_ids_from_labels(batch["labels"])
        cache, steps = None, []
        for t in range(decoder_ids.shape[1]):
            step = model(
                encoder_outputs=encoded,
                attention_mask=batch["attention_mask"],
                decoder_input_ids=decoder_ids[:, t : t + 1],
                decoder_position_ids=torch.tensor([[t]]),
                cache=cache,
                use_cache=True,
            )
            cache = step.cache
            steps.append(step.logits)
    torch.testing.assert_close(torch.cat(steps, dim=1), full.logits, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("ablation", [None, "no_ca"])
def test_decoder_reads_the_image_patches_beside_the_fused_question(ablation):
    """With the default decoder memory, the answer's scores change with the image even when the fused question states
    are held fixed (the decoder reads the patches itself); with decoder_memory="question" the memory is those states
    alone, so the image reaches the answer only through them."""
    model, processor = tiny_model(ablation).eval(), tiny_processor()
    batch = qa_batch(processor)
    with torch.no_grad():
        encoded = model.encode(batch["pixel_values"], batch["input_ids"], batch["attention_mask"])
        other = model.encode(batch["pixel_values"].flip(0), batch["input_ids"], batch["attention_mask"])
        patches = 1 + model.config.vision_config.num_patches
        assert encoded.answer_memory.shape[1] == patches + batch["input_ids"].shape[1]
        torch.testing.assert_close(encoded.answer_memory[:, patches:], encoded.last_hidden_state)
        swapped = MVaEMaEncoderOutput(
            answer_memory=torch.cat([other.answer_memory[:, :patches], encoded.answer_memory[:, patches:]], dim=1),
            answer_memory_mask=encoded.answer_memory_mask,
        )
        decoder_ids = model.prepare_decoder_input_ids_from_labels(batch["labels"])
        own = model(encoder_outputs=encoded, decoder_input_ids=decoder_ids).logits
        other_image = model(encoder_outputs=swapped, decoder_input_ids=decoder_ids).logits
    assert (own - other_image).abs().max() > 1e-3
    question_only = tiny_model(ablation, decoder_memory="question").eval()
    with torch.no_grad():
        encoded = question_only.encode(batch["pixel_values"], batch["input_ids"], batch["attention_mask"])
    torch.testing.assert_close(encoded.answer_memory, encoded.last_hidden_state)


def test_decoder_memory_is_checked():
    with pytest.raises(StrictDataclassError, match="decoder_memory=.image.; use one of"):
        tiny_config(decoder_memory="image")


@pytest.mark.parametrize("ablation", [None, "no_ca"])
def test_decoder_padding_mask_only_hides_padding(ablation):
    """Right padding marked in decoder_attention_mask changes nothing before it (causal masking already hides it)."""
    model, processor = tiny_model(ablation).eval(), tiny_processor()
    batch = qa_batch(processor)
    decoder_mask = (batch["labels"] != -100).long()
    with torch.no_grad():
        plain = model(**batch).logits
        masked = model(**batch, decoder_attention_mask=decoder_mask).logits
    valid = decoder_mask.bool()
    torch.testing.assert_close(masked[valid], plain[valid])


def test_encoder_and_decoder_share_exactly_cross_attention_and_feed_forward():
    model, processor = tiny_model().eval(), tiny_processor()
    batch = qa_batch(processor)

    def used_layer_parameters(loss):
        model.zero_grad(set_to_none=True)
        loss.backward()
        return {
            name
            for name, p in model.mvaema.text_model.layers.named_parameters()
            if p.grad is not None and p.grad.abs().sum() > 0
        }

    encoded = model.encode(batch["pixel_values"], batch["input_ids"], batch["attention_mask"])
    encoder_parameters = used_layer_parameters(encoded.last_hidden_state.square().sum())
    encoded.answer_memory = encoded.answer_memory.detach()
    decoder_parameters = used_layer_parameters(
        model(encoder_outputs=encoded, input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
              labels=batch["labels"]).loss_lm
    )

    def blocks(names):
        return {tuple(name.split(".")[:2]) for name in names}

    layers = range(model.config.text_config.num_hidden_layers)
    shared = {(str(i), block) for i in layers for block in ("cross_attention", "feed_forward")}
    assert blocks(encoder_parameters & decoder_parameters) == shared
    assert blocks(encoder_parameters - decoder_parameters) == {(str(i), "self_attention") for i in layers}
    assert blocks(decoder_parameters - encoder_parameters) == {(str(i), "causal_self_attention") for i in layers}
    all_parameters = list(model.named_parameters(remove_duplicate=False))
    aliases = {name for name, p in all_parameters if sum(q is p for _, q in all_parameters) > 1}
    assert aliases == {"lm_head.weight", "mvaema.text_model.embeddings.word_embeddings.weight"}  # the tied LM head only


ABSENT_MODULES = {
    "no_itc": lambda model: model.mvaema.vision_projection is None and model.mvaema.temperature is None,
    "no_itm": lambda model: model.mvaema.itm_head is None,
    "no_sa": lambda model: all(layer.self_attention is None for layer in model.mvaema.text_model.layers),
    "no_ca": lambda model: all(layer.cross_attention is None for layer in model.mvaema.text_model.layers),
    "no_csa": lambda model: all(layer.causal_self_attention is None for layer in model.mvaema.text_model.layers),
}


@pytest.mark.parametrize("ablation", sorted(ABLATIONS))
def test_ablation_builds_trains_saves_loads_and_generates(ablation, tmp_path):
    model, processor = tiny_model(ablation), tiny_processor()
    assert ABSENT_MODULES[ablation](model) and model.config.ablation == ablation
    batch = qa_batch(processor, SHARED_IMAGES)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    output = model(**batch)
    assert (output.loss_itc is None) == (ablation == "no_itc") and (output.loss_itm is None) == (ablation == "no_itm")
    output.loss.backward()
    torch.optim.Adam(model.parameters(), lr=1e-3).step()
    assert any(not torch.equal(before[name], p) for name, p in model.named_parameters())
    model.save_pretrained(tmp_path)
    loaded = MVaEMaForQuestionAnswering.from_pretrained(tmp_path).eval()
    model.eval()
    assert loaded.config.ablation == ablation
    with torch.no_grad():
        torch.testing.assert_close(loaded(**batch).logits, model(**batch).logits)
    generated = loaded.generate(**{k: v for k, v in batch.items() if k != "labels"}, max_new_tokens=6)
    assert generated.shape[0] == 4 and (generated[:, 0] == loaded.config.dec_token_id).all()


def test_no_csa_step_decoding_needs_positions():
    model, processor = tiny_model("no_csa").eval(), tiny_processor()
    batch = qa_batch(processor, answers=False)
    start = torch.full((4, 1), model.config.dec_token_id)
    first = model(**batch, decoder_input_ids=start, use_cache=True)
    with pytest.raises(ValueError, match="decoder_position_ids"):
        model(**batch, decoder_input_ids=start, cache=first.cache)


def test_classify_scores_and_top_k():
    model, processor = tiny_model().eval(), tiny_processor()
    labels = processor.prepare_label_texts(["nanowires", "porous film", "particles", "MEMS device", "tips"])
    pixel_values = qa_batch(processor)["pixel_values"]
    question = processor(questions=["Which material category is this?"])
    itc = model.classify(pixel_values, **labels, method="itc", top_k=3)
    assert itc.scores.shape == (4, 5) and itc.top_k_indices.shape == (4, 3)
    torch.testing.assert_close(itc.top_k_scores, itc.scores.gather(1, itc.top_k_indices))
    assert (itc.top_k_scores[:, :-1] >= itc.top_k_scores[:, 1:]).all() and (itc.scores.abs() <= 1 + 1e-6).all()
    itm = model.classify(pixel_values, **labels, method="itm", top_k=2, itm_candidates=2)
    assert (torch.isinf(itm.scores).sum(dim=1) == 3).all()  # only the 2 best ITC labels are re-ranked
    assert torch.equal(
        itm.scores.isfinite(),
        torch.zeros_like(itm.scores, dtype=torch.bool).scatter(1, itc.top_k_indices[:, :2], True),
    )
    summed = model.classify(
        pixel_values, **labels, method="lm", question_input_ids=question["input_ids"], length_normalize=False
    )
    averaged = model.classify(pixel_values, **labels, method="lm", question_input_ids=question["input_ids"])
    lengths = (labels["label_attention_mask"].sum(dim=1) - 2).float()  # without [CLS] and [SEP]
    torch.testing.assert_close(averaged.scores, summed.scores / lengths)
    assert (summed.scores < 0).all()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"vision_config": {"hidden_size": 30}}, "not divisible by num_attention_heads"),
        ({"text_config": {"hidden_size": 30}}, "not divisible by num_attention_heads"),
        ({"vision_config": {"image_size": 225}}, "not divisible by patch_size"),
        ({"use_itc": False, "use_itm": False, "lm_loss_weight": 0.0}, "every loss is disabled"),
        ({"use_cross_attention": False, "use_self_attention": False}, "no way into the grounded encoder"),
        ({"use_cross_attention": False, "use_causal_self_attention": False}, "decoder no way"),
        ({"itm_negatives": "random"}, "itm_negatives"),
        ({"temperature_init": 0.9}, "temperature"),
        ({"pad_token_id": 10_000}, "outside the vocabulary"),
        ({"itc_loss_weight": -1.0}, "must be >= 0"),
        ({"itm_pairs_per_image": -1}, "itm_pairs_per_image must be >= 0"),
        ({"itm_pairs_per_batch": -1}, "itm_pairs_per_batch must be >= 0"),
    ],
)
def test_bad_configs_say_what_is_wrong(overrides, message):
    with pytest.raises(StrictDataclassError, match=message):
        MVaEMaConfig(**overrides)


def test_unknown_ablation_lists_the_known_ones():
    with pytest.raises(ValueError, match="no_ca.*no_csa.*no_itc.*no_itm.*no_sa"):
        MVaEMaConfig.for_ablation("no_ffn")


def test_bad_inputs_say_what_is_wrong():
    model, processor = tiny_model().eval(), tiny_processor()
    batch = qa_batch(processor)
    pixel_values = batch["pixel_values"]
    cases = [
        ({"pixel_values": pixel_values[:, :1]}, r"pixel_values must have shape \[num_images, 3, 32, 32\]"),
        ({"pixel_values": torch.zeros(4, 3, 64, 64)}, "got \\[4, 3, 64, 64\\]"),
        ({"pixel_values": pixel_values[:3]}, "3 images for 4 questions"),
        ({"pixel_values": pixel_values[:2], "image_index": torch.tensor([0, 1, 2, 0])}, r"must lie in \[0, 1\]"),
        ({"image_index": torch.tensor([0, 1])}, "shape \\[4\\]"),
        ({"labels": batch["labels"][:2]}, "one answer per question"),
        ({"input_ids": batch["input_ids"][:, 1:], "attention_mask": batch["attention_mask"][:, 1:]}, r"\[CLS\]"),
        ({"attention_mask": batch["attention_mask"][:, :3]}, "attention mask of input_ids"),
    ]
    for change, message in cases:
        with pytest.raises(ValueError, match=message):
            model(**{**batch, **change})
    with pytest.raises(ValueError, match="pass labels .* or decoder_input_ids"):
        model(**{key: value for key, value in batch.items() if key != "labels"})
    labels = processor.prepare_label_texts(["nanowires", "particles"])
    with pytest.raises(ValueError, match="classify method must be one of"):
        model.classify(pixel_values, **labels, method="knn")
    with pytest.raises(ValueError, match="pass question_input_ids"):
        model.classify(pixel_values, **labels, method="lm")
    with pytest.raises(ValueError, match="without ITC"):
        tiny_model("no_itc").classify(pixel_values, **labels, method="itc")
    with pytest.raises(ValueError, match="without ITM"):
        tiny_model("no_itm").classify(pixel_values, **labels, method="itm")


def test_long_text_error_names_the_limit():
    model = tiny_model().eval()
    too_long = torch.full((1, 70), 20)
    too_long[:, 0] = model.config.cls_token_id
    with pytest.raises(ValueError, match="max_position_embeddings=64"):
        model(input_ids=too_long, pixel_values=torch.zeros(1, 3, IMAGE_SIZE, IMAGE_SIZE), labels=too_long[:, 1:3])


# ------------------------------------------------------------------------------------------ training fast paths


def gradients(model: MVaEMaForQuestionAnswering) -> dict[str, torch.Tensor]:
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def train_step(model: MVaEMaForQuestionAnswering, batch, **forward_kwargs):
    torch.manual_seed(0)  # the same ITM pairs and negatives in every run
    output = model(**batch, **forward_kwargs)
    output.loss.backward()
    return output, gradients(model)


@pytest.mark.parametrize("ablation", [None, "no_ca", "no_sa", "no_csa"])
def test_training_fast_paths_leave_losses_and_gradients_unchanged(ablation, monkeypatch):
    """The LM head on answer tokens only and the feed-forward networks on read positions only give exactly the losses
    and gradients of the plain computation (logits on the whole answer grid, feed-forward on every position)."""
    batch = qa_batch(tiny_processor(), SHARED_IMAGES)
    assert (batch["labels"] == -100).any() and (batch["attention_mask"] == 0).any(), "the batch needs padding"
    fast, fast_gradients = train_step(tiny_model(ablation).train(), batch)
    with monkeypatch.context() as patch:
        patch.setattr(layers_mvaema, "residual_on_rows", lambda states, block, rows: states + block(states))
        plain, plain_gradients = train_step(tiny_model(ablation).train(), batch, return_logits=True)
    assert fast.logits is None and plain.logits.shape == (*batch["labels"].shape, tiny_model().config.text_config.vocab_size)
    for name in ("loss", "loss_itc", "loss_itm", "loss_lm"):
        torch.testing.assert_close(getattr(fast, name), getattr(plain, name))
    assert fast_gradients.keys() == plain_gradients.keys()
    for name, gradient in fast_gradients.items():
        torch.testing.assert_close(gradient, plain_gradients[name], msg=name)


@pytest.mark.parametrize("ablation", [None, "no_ca", "no_sa", "no_csa"])
def test_bf16_autocast_trains_and_generates_close_to_fp32(ablation):
    """Mixed precision (`accelerate launch --mixed_precision bf16`, the GPU benchmarks) runs every path, the
    feed-forward networks on read rows only included, and stays within bf16 rounding of fp32."""
    batch = qa_batch(tiny_processor(), SHARED_IMAGES)
    exact, _ = train_step(tiny_model(ablation).train(), batch)
    model = tiny_model(ablation).train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed, mixed_gradients = train_step(model, batch)
    assert mixed.loss.dtype == torch.float32 and torch.isfinite(mixed.loss)
    torch.testing.assert_close(mixed.loss, exact.loss, rtol=0.05, atol=0.05)
    assert all(torch.isfinite(gradient).all() for gradient in mixed_gradients.values())
    model.eval()
    inputs = {name: batch[name] for name in ("pixel_values", "image_index", "input_ids", "attention_mask")}
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        answers = model.generate(**inputs, max_new_tokens=5, do_sample=False)
    assert answers.shape[0] == batch["input_ids"].shape[0]


def test_text_stack_skips_only_positions_nobody_reads():
    model, processor = tiny_model().eval(), tiny_processor()
    batch = qa_batch(processor)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    with torch.no_grad():
        skipping = model.mvaema.text_model(ids, mask)  # bidirectional: padding is skipped by default
        everything = model.mvaema.text_model(ids, mask, read_positions=torch.ones_like(mask))
    torch.testing.assert_close(skipping[mask.bool()], everything[mask.bool()])
    assert not torch.allclose(skipping[~mask.bool()], everything[~mask.bool()])  # padding really was skipped
    # The decoder keeps every position up to the last scored label, unscored ones (a prompt) included.
    labels = torch.tensor([[5, -100, 7, -100, -100], [-100, -100, -100, -100, 9], [8, 9, 10, 11, 12]])
    expected = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 1, 1, 1, 1]], dtype=torch.bool)
    assert torch.equal(MVaEMaForQuestionAnswering._up_to_last_answer_token(labels), expected)


def test_itm_pairs_take_at_most_the_limit_per_micrograph_and_all_take_turns():
    keys = torch.tensor([4, 4, 7, 4, 9, 7, 4])
    assert pairs_per_key(keys, 1, shuffle=False).tolist() == [0, 2, 4]  # eval mode: the first pair of each
    assert pairs_per_key(keys, 2, shuffle=False).tolist() == [0, 1, 2, 4, 5]
    assert pairs_per_key(keys, 9, shuffle=False).tolist() == list(range(7))
    torch.manual_seed(0)
    drawn = [pairs_per_key(keys, 1, shuffle=True).tolist() for _ in range(60)]
    assert all(sorted(keys[pairs].tolist()) == [4, 7, 9] and pairs == sorted(pairs) for pairs in drawn)
    assert {index for pairs in drawn for index in pairs} == set(range(7))  # every pair takes its turn


def test_each_micrograph_is_one_itm_positive_per_step_by_default():
    model, processor = tiny_model().train(), tiny_processor()
    scored = []
    model.mvaema.itm_logits = lambda ids, mask, embeds, rows: scored.append(len(rows)) or torch.zeros(len(rows))
    model(**qa_batch(processor, SHARED_IMAGES))  # 4 pairs about 3 micrographs
    model.config.itm_pairs_per_image = 0
    model(**qa_batch(processor, SHARED_IMAGES))
    assert scored == [3 * 3, 3 * 4]  # (positive, negative image, negative text) per scored pair
    model.config.itm_pairs_per_batch = 2
    model(**qa_batch(processor, SHARED_IMAGES))
    assert scored[-1] == 3 * 2  # a batch of many micrographs scores at most itm_pairs_per_batch of them


def test_at_most_keeps_a_random_subset_while_training_and_the_first_ones_in_eval():
    indices = torch.tensor([1, 3, 4, 8, 9])
    assert at_most(indices, 0, shuffle=True).tolist() == [1, 3, 4, 8, 9]
    assert at_most(indices, 9, shuffle=True).tolist() == [1, 3, 4, 8, 9]
    assert at_most(indices, 2, shuffle=False).tolist() == [1, 3]
    torch.manual_seed(0)
    drawn = [at_most(indices, 2, shuffle=True).tolist() for _ in range(40)]
    assert all(len(kept) == 2 and kept == sorted(kept) and set(kept) <= {1, 3, 4, 8, 9} for kept in drawn)
    assert {index for kept in drawn for index in kept} == {1, 3, 4, 8, 9}


@pytest.mark.slow
def test_compiled_layers_trace_whole_and_train_identically():
    """`compile_for_training` compiles each layer into one graph (fullgraph: no breaks) with the same results."""
    batch = qa_batch(tiny_processor(), SHARED_IMAGES)
    eager, eager_gradients = train_step(tiny_model().train(), batch)
    compiled_model = compile_for_training(tiny_model().train(), backend="aot_eager", fullgraph=True)
    compiled, compiled_gradients = train_step(compiled_model, batch)
    torch.testing.assert_close(compiled.loss, eager.loss)
    for name, gradient in eager_gradients.items():
        torch.testing.assert_close(compiled_gradients[name], gradient, msg=name)


@pytest.mark.slow
def test_itc_across_two_processes_equals_the_single_process_loss(tmp_path):
    """Gathered features (with gradients) on 2 gloo ranks reproduce the loss and gradients of the whole batch: with
    default keys, with image_keys that name one micrograph present on both ranks, and with ranks holding different
    numbers of images and texts (as when a global batch's micrographs split unevenly)."""
    script = tmp_path / "itc_ddp.py"
    script.write_text(
        textwrap.dedent(
            """
            import torch, torch.distributed as dist, torch.nn.functional as F
            from modeling_mvaema.losses_mvaema import image_text_contrastive_loss, micrograph_keys

            def loss_and_grads(images, texts, image_keys, text_keys):
                images, texts = images.detach().requires_grad_(), texts.detach().requires_grad_()
                loss = image_text_contrastive_loss(
                    F.normalize(images, dim=-1), F.normalize(texts, dim=-1), image_keys, text_keys, torch.tensor(0.1)
                )
                loss.backward()
                return loss.detach(), images.grad, texts.grad

            torch.manual_seed(0)
            images, texts = torch.randn(6, 8), torch.randn(8, 8)
            scenarios = {  # full-batch keys of the 6 images and 8 texts, each text's image, rank 0's images and texts
                "default": (torch.arange(6), torch.tensor([0, 0, 1, 2, 3, 3, 4, 5]),
                            torch.tensor([0, 0, 1, 2, 3, 3, 4, 5]), 3, 4),
                "shared": (torch.tensor([10, 11, 12, 12, 13, 14]), torch.tensor([10, 10, 11, 12, 12, 12, 13, 14]),
                           torch.tensor([0, 0, 1, 2, 3, 3, 4, 5]), 3, 4),
                "uneven": (torch.arange(6), torch.tensor([0, 1, 1, 2, 3, 4, 5, 5]),
                           torch.tensor([0, 1, 1, 2, 3, 4, 5, 5]), 2, 3),
            }
            references = {name: loss_and_grads(images, texts, keys[0], keys[1]) for name, keys in scenarios.items()}

            dist.init_process_group("gloo")  # after the single-process references, which must not gather
            rank = dist.get_rank()
            for name, (image_keys, text_keys, image_index, images_on_0, texts_on_0) in scenarios.items():
                mine_images = slice(0, images_on_0) if rank == 0 else slice(images_on_0, 6)
                mine_texts = slice(0, texts_on_0) if rank == 0 else slice(texts_on_0, 8)
                local_index = image_index[mine_texts] - mine_images.start
                given = None if name == "default" else text_keys[mine_texts]
                row_keys, pair_keys = micrograph_keys(local_index, given, mine_images.stop - mine_images.start)
                local_images = images[mine_images].clone().requires_grad_()
                local_texts = texts[mine_texts].clone().requires_grad_()
                loss = image_text_contrastive_loss(
                    F.normalize(local_images, dim=-1), F.normalize(local_texts, dim=-1), row_keys, pair_keys,
                    torch.tensor(0.1),
                )
                loss.backward()
                image_grad, text_grad = torch.zeros(6, 8), torch.zeros(8, 8)
                image_grad[mine_images], text_grad[mine_texts] = local_images.grad, local_texts.grad
                for value in (loss := loss.detach().clone(), image_grad, text_grad):
                    dist.all_reduce(value)  # DDP sums gradients and averages them over the 2 ranks
                full_loss, full_image_grad, full_text_grad = references[name]
                torch.testing.assert_close(loss / 2, full_loss, msg=name)
                torch.testing.assert_close(image_grad / 2, full_image_grad, msg=name)
                torch.testing.assert_close(text_grad / 2, full_text_grad, msg=name)
            dist.destroy_process_group()
            """
        )
    )
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29517", str(script)],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr[-3000:]


def test_each_tower_is_initialised_at_its_own_scale():
    """Vision weights (and the ITC image projection) follow vision_config.initializer_range, the rest text_config's."""
    config = MVaEMaConfig.from_tokenizer(
        tiny_tokenizer(), vision_config={"initializer_range": 0.03}, text_config={"initializer_range": 0.3}
    )
    torch.manual_seed(0)
    model = MVaEMaForQuestionAnswering(config)
    vision = [model.mvaema.vision_model.embeddings.patch_embedding.weight, model.mvaema.vision_projection.weight]
    vision += [p for n, p in model.mvaema.vision_model.layers.named_parameters() if n.endswith(("proj.weight", "fc1.weight", "fc2.weight"))]
    text = [model.mvaema.text_model.embeddings.word_embeddings.weight[1:], model.mvaema.text_projection.weight]
    text += [p for n, p in model.mvaema.text_model.layers.named_parameters() if n.endswith(("proj.weight", "fc1.weight", "fc2.weight"))]
    for weight in vision:
        assert weight.std().item() == pytest.approx(0.03, rel=0.15)
    for weight in text:
        assert weight.std().item() == pytest.approx(0.3, rel=0.15)


def mean_pairwise_cosine(features: torch.Tensor) -> float:
    off_diagonal = ~torch.eye(len(features), dtype=torch.bool)
    return float((features @ features.T)[off_diagonal].mean())


def test_default_model_keeps_itc_features_apart_under_the_papers_optimiser():
    """Regression: at BERT's 0.02 initialisation a width-64 model's ITC features of different images and texts
    collapsed to one direction within three Adam steps at the paper's 1e-3 (mean cosine 0.999 for images, 0.996 for
    texts here), a stationary point the loss never left. At the default scale they stay apart (0.97 and 0.91)."""
    torch.manual_seed(0)
    config = MVaEMaConfig.from_tokenizer(tiny_tokenizer(), use_itm=False, lm_loss_weight=0.0)
    model = MVaEMaForQuestionAnswering(config).train()
    processor = MVaEMaProcessor.from_tokenizer(tiny_tokenizer(), image_size=config.vision_config.image_size)
    batch = processor(images=micrographs(4), questions=QUESTIONS, captions=[None] * 4, answers=ANSWERS)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(3):
        model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    with torch.no_grad():
        image_features = model.mvaema.normalized_image_features(model.mvaema.vision_model(batch["pixel_values"]))
        texts = pair_texts(batch["input_ids"], batch["attention_mask"], batch["labels"], model.config.pad_token_id, model.config.contrastive_max_length)
        text_features = model.mvaema.normalized_text_features(*texts)
    assert mean_pairwise_cosine(image_features) < 0.99
    assert mean_pairwise_cosine(text_features) < 0.99



def test_captions_are_one_text_per_category_in_the_contrastive_loss():
    """With the captions given, ITC is the mean of the pair term and an image-caption term in which equal captions are
    one text: a caption is the positive of every image it describes, never the negative of one of them."""
    model, processor = tiny_model().eval(), tiny_processor()
    image_index = [0, 0, 1, 2]  # images 0 and 2 share a category caption, image 1 has its own
    batch = qa_batch(processor, image_index)
    captions = ["SEM micrograph of nanowires", "SEM micrograph of nanowires", "A porous film", "SEM micrograph of nanowires"]
    caption_batch = processor.tokenizer(captions, padding=True, return_tensors="pt")
    inputs = {**batch, "caption_ids": caption_batch["input_ids"], "caption_mask": caption_batch["attention_mask"]}
    with torch.no_grad():
        with_captions = model(**inputs)
        pair_only = model(**batch)
        image_features = F.normalize(model.mvaema.vision_projection(with_captions.image_embeds[:, 0]), dim=-1)
        distinct = processor.tokenizer(["SEM micrograph of nanowires", "A porous film"], return_tensors="pt", padding=True)
        caption_features = F.normalize(
            model.mvaema.text_projection(model.mvaema.text_model(distinct["input_ids"], distinct["attention_mask"])[:, 0]),
            dim=-1,
        )
    caption_term = reference_itc(image_features, caption_features, [0, 1, 0], [0, 1], model.mvaema.temperature)
    torch.testing.assert_close(with_captions.loss_itc, (pair_only.loss_itc + caption_term) / 2)
    torch.testing.assert_close(with_captions.loss_lm, pair_only.loss_lm)


def categorised_processor() -> MVaEMaProcessor:
    processor = tiny_processor()
    processor.category_names = ["MEMS", "Fibres", "Tips"]
    processor.category_captions = ["SEM micrograph of a MEMS device", "SEM micrograph", "a micrograph of tips"]
    return processor


def test_the_processor_adds_self_captioning_inputs_only_to_uncaptioned_inference_prompts():
    processor = categorised_processor()
    images = micrographs(2)
    asked = processor(images=images, questions=QUESTIONS[:2])
    assert asked["captioned_input_ids"].shape[:2] == (2, 3)
    assert asked["caption_candidate_input_ids"].shape[0] == 3
    expected = processor(questions=[QUESTIONS[1]], captions=[processor.category_captions[2]])["input_ids"][0]
    row = asked["captioned_input_ids"][1, 2]
    torch.testing.assert_close(row[: len(expected)], expected)
    for plain in (processor(images=images, questions=QUESTIONS[:2], self_caption=False),
                  processor(images=images, questions=QUESTIONS[:2], captions=["SEM micrograph", None]),
                  processor(images=images, questions=QUESTIONS[:2], answers=ANSWERS[:2]),
                  tiny_processor()(images=images, questions=QUESTIONS[:2])):
        assert "captioned_input_ids" not in plain
    with pytest.raises(ValueError, match="self_caption=True captions the questions itself"):
        processor(images=images, questions=QUESTIONS[:2], captions=["SEM micrograph", None], self_caption=True)
    with pytest.raises(ValueError, match="self_caption needs the category captions"):
        tiny_processor()(images=images, questions=QUESTIONS[:2], self_caption=True)


@pytest.mark.parametrize("ablation", [None, "no_itc"])
def test_self_captioned_generation_asks_after_the_caption_the_model_ranks_first(ablation):
    """generate() with the processor's self-captioning inputs answers exactly as if each question had been asked
    after the caption of its image's top-ranked category (ITC; ITM without ITC)."""
    model, processor = tiny_model(ablation).eval(), categorised_processor()
    images = micrographs(2)
    inputs = processor(images=images, questions=QUESTIONS, image_index=[0, 1, 1, 0])
    settings = dict(max_new_tokens=6, min_new_tokens=6, no_repeat_ngram_size=0)
    self_captioned = model.generate(**inputs, **settings)
    ranking = model.classify(inputs["pixel_values"], inputs["caption_candidate_input_ids"],
                             inputs["caption_candidate_attention_mask"], method="itm" if ablation else "itc")
    top = ranking.top_k_indices[:, 0].tolist()
    captions = [processor.category_captions[top[image]] for image in (0, 1, 1, 0)]
    captioned = processor(images=images, questions=QUESTIONS, captions=captions, image_index=[0, 1, 1, 0])
    assert torch.equal(self_captioned, model.generate(**captioned, **settings))
