# Copyright 2026 The MVaEMa authors. Licensed under the Apache License, Version 2.0.
"""The MVaEMa training objectives: image-text contrastive (ITC), image-text matching (ITM) with hard negatives, and
language modelling (LM), as functions of features and logits.

The model computes features (`MVaEMaModel.get_image_features`, `get_text_features`, `itm_logits`); these functions
turn them into losses. One micrograph has many question/answer pairs, so every function that tells positives from
negatives works on *image keys*: a global id per micrograph, equal for all of its pairs, on every process.

`MVaEMaLossesMixin` wires them to the model: which texts ITC and ITM read, which pairs ITM scores, the weighted sum.
"""

from collections.abc import Mapping
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def gather_across_ranks(tensor: torch.Tensor, with_grad: bool) -> torch.Tensor:
    """Rows of `tensor` from every rank, concatenated in rank order (the identity without torch.distributed).

    Ranks may hold different numbers of rows (e.g. of distinct images), so rows are padded to the largest count for
    the collective and trimmed afterwards. With `with_grad`, gradients flow back to each rank's own rows.
    """
    if not is_distributed():
        return tensor
    count = torch.tensor([tensor.shape[0]], device=tensor.device)
    counts = [torch.zeros_like(count) for _ in range(dist.get_world_size())]
    dist.all_gather(counts, count)
    counts = [int(c) for c in counts]
    padded = F.pad(tensor, (0, 0) * (tensor.ndim - 1) + (0, max(counts) - tensor.shape[0]))
    if with_grad:
        from torch.distributed.nn.functional import all_gather as all_gather_with_grad

        gathered = all_gather_with_grad(padded)
    else:
        gathered = [torch.empty_like(padded) for _ in counts]
        dist.all_gather(gathered, padded)
    return torch.cat([part[:n] for part, n in zip(gathered, counts, strict=True)])


def contrastive_term(
    logits: torch.Tensor, positives: torch.Tensor, num_rows: torch.Tensor | None = None
) -> torch.Tensor:
    """Cross-entropy of each row of `logits` against a uniform distribution over its positives (bool, same shape);
    rows without a positive are left out. With exactly one positive per row this is the usual InfoNCE term. The mean
    over the rows kept, or with `num_rows` their sum over `num_rows` (the rows kept on all ranks together)."""
    has_positive = positives.any(dim=1)
    targets = positives[has_positive].float()
    targets = targets / targets.sum(dim=1, keepdim=True)
    row_losses = -(targets * logits[has_positive].log_softmax(dim=1)).sum(dim=1)
    return row_losses.mean() if num_rows is None else row_losses.sum() / num_rows


def image_text_contrastive_loss(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    image_keys: torch.Tensor,
    text_keys: torch.Tensor,
    temperature: torch.Tensor,
    across_ranks: bool = True,
) -> torch.Tensor:
    """Symmetric InfoNCE in which an image and a text are a positive pair when their keys are equal.

    image_features `(I, D)` and text_features `(B, D)` are L2-normalised; image_keys `(I,)` and text_keys `(B,)` name
    the micrograph (see `micrograph_keys`), so all questions about one micrograph are its positives, never its
    negatives. Text-to-image and image-to-text terms each use soft targets spread evenly over the positives; with one
    text per image this is the paper's L_ITC = (L_I2T + L_T2I) / 2. Under torch.distributed, with `across_ranks`, the
    features of all ranks are gathered (with gradients) and each rank scores its own rows against all of them; each
    term is then this rank's row sum times the world size over the rows of all ranks, so that DDP's averaging of
    gradients gives the gradient of the global mean also when the ranks hold different numbers of images or texts.
    """
    gathered = across_ranks and is_distributed()
    gather = gather_across_ranks if gathered else lambda tensor, with_grad: tensor
    all_images = gather(image_features, with_grad=True)
    all_texts = gather(text_features, with_grad=True)
    all_image_keys = gather(image_keys, with_grad=False)
    all_text_keys = gather(text_keys, with_grad=False)
    texts_scored = images_scored = None
    if gathered:  # rows with a positive, on all ranks, counted from the gathered keys (no further collective)
        world_size = dist.get_world_size()
        texts_scored = torch.isin(all_text_keys, all_image_keys).sum() / world_size
        images_scored = torch.isin(all_image_keys, all_text_keys).sum() / world_size
    text_to_image = contrastive_term(
        text_features @ all_images.T / temperature, text_keys[:, None] == all_image_keys, texts_scored
    )
    image_to_text = contrastive_term(
        image_features @ all_texts.T / temperature, image_keys[:, None] == all_text_keys, images_scored
    )
    return (text_to_image + image_to_text) / 2


def language_modeling_loss(
    token_logits: torch.Tensor, token_labels: torch.Tensor, num_items_in_batch: int | torch.Tensor | None = None
) -> torch.Tensor:
    """Mean cross-entropy over answer tokens: token_logits `(T, vocab)`, token_labels `(T,)` (-100 ignored).

    With `num_items_in_batch` (answer tokens of the whole global batch, all processes) it is this process's token-loss
    sum times the world size over that count, so that DDP's averaging of gradients gives exactly the gradient of the
    global per-token mean, whatever each process's share of tokens.
    """
    if num_items_in_batch is None:
        return F.cross_entropy(token_logits, token_labels, ignore_index=-100)
    world_size = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
    token_loss_sum = F.cross_entropy(token_logits, token_labels, ignore_index=-100, reduction="sum")
    return token_loss_sum * world_size / num_items_in_batch


def image_text_matching_loss(logits: torch.Tensor, num_positives: int) -> torch.Tensor:
    """The paper's binary cross-entropy: logits `(N,)` of which the first `num_positives` are matching pairs."""
    targets = torch.zeros_like(logits)
    targets[:num_positives] = 1.0
    return F.binary_cross_entropy_with_logits(logits, targets)


def micrograph_keys(
    image_index: torch.Tensor, image_keys: torch.Tensor | None, num_images: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Global identities of the images `(I,)` and of each pair's image `(B,)`: equal keys, same micrograph.

    image_index `(B,)` is each pair's row of `pixel_values`. Default keys: that row, made unique across processes as
    `row * world_size + rank`. With `image_keys` `(B,)` (e.g. dataset rows) a micrograph repeated in several rows or
    on several processes is recognised too; rows that no pair uses get -1.
    """
    if image_keys is None:
        world_size, rank = (dist.get_world_size(), dist.get_rank()) if is_distributed() else (1, 0)
        row_keys = torch.arange(num_images, device=image_index.device) * world_size + rank
        return row_keys, row_keys[image_index]
    if image_keys.shape != image_index.shape or image_keys.dtype != torch.long or bool((image_keys < 0).any()):
        raise ValueError(
            f"image_keys must be a LongTensor of shape {list(image_index.shape)} with values >= 0 (one micrograph id "
            f"per question), got {image_keys.dtype} {list(image_keys.shape)}."
        )
    row_keys = image_keys.new_full((num_images,), -1).scatter(0, image_index, image_keys)
    if not torch.equal(row_keys[image_index], image_keys):
        raise ValueError(
            "questions that share a row of pixel_values (image_index) have different image_keys; give each "
            "micrograph one key."
        )
    return row_keys, image_keys


def pairs_per_key(keys: torch.Tensor, limit: int, shuffle: bool) -> torch.Tensor:
    """Ascending indices of at most `limit` entries per distinct value of `keys` `(N,)`: random ones when `shuffle`,
    else the first ones in order (`limit` 0: all of them)."""
    positions = torch.arange(len(keys), device=keys.device)
    if limit == 0:
        return positions
    order = torch.randperm(len(keys), device=keys.device) if shuffle else positions
    sorted_keys, by_key = keys[order].sort(stable=True)
    rank_within_key = positions - torch.searchsorted(sorted_keys, sorted_keys)
    return order[by_key[rank_within_key < limit]].sort().values


def at_most(indices: torch.Tensor, limit: int, shuffle: bool) -> torch.Tensor:
    """At most `limit` of `indices` `(N,)`, ascending: random ones when `shuffle`, else the first (`limit` 0: all)."""
    if limit == 0 or len(indices) <= limit:
        return indices
    kept = torch.randperm(len(indices), device=indices.device)[:limit] if shuffle else torch.arange(limit, device=indices.device)
    return indices[kept.sort().values]


def token_sequence_keys(token_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """A key `(N,)` per text `(N, L)` that is equal for equal token sequences (padding ignored), and the same on every
    process: identical texts (the one caption of a category) are then one text to the contrastive loss, a positive for
    every image it describes rather than a negative for all but one."""
    ids = token_ids.masked_fill(attention_mask.eq(0), 0).long()
    # Position weights below 2**31 and ids below 2**20 keep the sum of at most 2**10 products inside int64.
    weights = torch.arange(1, ids.shape[1] + 1, device=ids.device).mul_(1_000_003).remainder_(2**31 - 1)
    return (ids * weights).sum(dim=1) * 4096 + attention_mask.sum(dim=1)


def pick_negatives(scores: torch.Tensor, positive: torch.Tensor, sample: bool) -> torch.Tensor:
    """Per row, one column that is not `positive` (bool, same shape): drawn from softmax(scores) or the best score."""
    scores = scores.masked_fill(positive, float("-inf"))
    if sample:
        return torch.multinomial(scores.softmax(dim=1), 1).squeeze(1)
    return scores.argmax(dim=1)


@torch.no_grad()
def matching_negatives(
    text_to_image: torch.Tensor,
    image_index: torch.Tensor,
    row_keys: torch.Tensor,
    text_keys: torch.Tensor,
    pairs: torch.Tensor,
    sample: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """ITM's negatives for the scored pairs `pairs` `(P,)`: an image row of another micrograph for each pair's text
    `(P,)` and a text of the batch about another micrograph for each pair's image `(P,)`.

    text_to_image `(B, I)`: the similarities negatives are drawn by (BLIP's hard negatives: ITC logits; all zeros for
    uniform draws); sampled from their softmax when `sample`, else the most similar (ties: the first other).
    """
    pair_keys = text_keys[pairs, None]
    negative_images = pick_negatives(text_to_image[pairs], pair_keys == row_keys[None, :], sample)
    image_to_text = text_to_image.T[image_index[pairs]]
    negative_texts = pick_negatives(image_to_text, pair_keys == text_keys[None, :], sample)
    return negative_images, negative_texts


def pair_texts(
    prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, labels: torch.Tensor, pad_token_id: int, max_length: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ITC/ITM text of each pair `(B, T)` and its mask: the prompt "[CLS] caption question [SEP]" `(B, Lq)`
    followed by the answer tokens of `labels` `(B, La)`, packed to the left and cut at `max_length` tokens.

    The text of a pair is the whole instruction sample, as the paper's text encoder reads "caption + question": with a
    caption it names the category (the strongest image-specific words), without one the answer carries what is
    specific to the image.
    """
    tokens = torch.cat([prompt_ids, labels.masked_fill(labels.eq(-100), pad_token_id)], dim=1)
    keep = torch.cat([prompt_mask.bool(), labels.ne(-100)], dim=1)
    # A stable sort on "is padding" moves the kept tokens to the front and keeps their order.
    order = torch.sort((~keep).to(torch.uint8), dim=1, stable=True).indices
    length = min(int(keep.sum(dim=1).max()), max_length)
    keep = keep.gather(1, order)[:, :length]
    tokens = tokens.gather(1, order)[:, :length].masked_fill(~keep, pad_token_id)
    return tokens, keep.long()


class MVaEMaLossesMixin:
    """The joint objective of a model holding the shared encoders as `self.mvaema` and a config with the loss switches
    and weights (`MVaEMaForQuestionAnswering`): `_losses` takes the LM logits of the scored answer tokens and adds ITC
    and ITM on the pairs' "prompt + answer" texts. `training_inputs` are the training-only inputs of `forward`
    (`modeling_mvaema.MVaEMaTrainingKwargs`)."""

    def _losses(
        self,
        labels: torch.Tensor,
        token_logits: torch.Tensor,
        token_labels: torch.Tensor,
        image_embeds: torch.Tensor | None,
        image_index: torch.Tensor | None,
        prompt: tuple[torch.Tensor | None, torch.Tensor | None],
        training_inputs: Mapping[str, Any],
    ) -> dict[str, torch.Tensor | None]:
        """The enabled losses and their weighted sum; ITC and ITM read "prompt + answer" (`pair_texts`) of the first
        `len(labels)` questions (the others are answer-only rows, `lm_only_rows`)."""
        losses = {
            "loss_lm": language_modeling_loss(token_logits, token_labels, training_inputs.get("num_items_in_batch")),
            "loss_itc": None,
            "loss_itm": None,
        }
        if self.config.use_itc or self.config.use_itm:
            prompt_ids, prompt_mask = prompt
            if image_embeds is None or image_index is None or prompt_ids is None:
                raise ValueError(
                    "ITC/ITM need the image embeddings and the prompt; pass pixel_values and input_ids (with "
                    "encoder_outputs from encode(), which keeps the image embeddings, pass input_ids and "
                    "attention_mask too)."
                )
            prompt_mask = self.mvaema.text_attention_mask(prompt_ids, prompt_mask, "the pair prompt")
            text_ids, text_mask = pair_texts(
                prompt_ids, prompt_mask, labels, self.config.pad_token_id, self.config.contrastive_max_length
            )
            losses["loss_itc"], losses["loss_itm"] = self._image_text_losses(
                text_ids, text_mask, image_embeds, image_index[: len(labels)], training_inputs
            )
        weights = {
            "loss_itc": self.config.itc_loss_weight,
            "loss_itm": self.config.itm_loss_weight,
            "loss_lm": self.config.lm_loss_weight,
        }
        losses["loss"] = sum(weights[name] * loss for name, loss in losses.items() if loss is not None)
        return losses

    def _image_text_losses(
        self,
        text_ids: torch.Tensor,
        text_mask: torch.Tensor,
        image_embeds: torch.Tensor,
        image_index: torch.Tensor,
        training_inputs: Mapping[str, Any],
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """ITC over the batch (gathered across processes while training) and ITM on hard negatives drawn from it:
        texts `(B, L)` of the pairs, image_embeds `(I, 1 + patches, Hv)`, image_index `(B,)`."""
        row_keys, text_keys = micrograph_keys(image_index, training_inputs.get("image_keys"), image_embeds.shape[0])
        loss_itc, text_to_image = None, None
        if self.config.use_itc:
            image_features = self.mvaema.normalized_image_features(image_embeds)
            text_features = self.mvaema.normalized_text_features(text_ids, text_mask)
            temperature = self.mvaema.clamped_temperature()
            # Gathering serves training; an evaluation loss is computed per process, so that each process can score
            # a whole validation set on its own without waiting for the others.
            loss_itc = image_text_contrastive_loss(
                image_features, text_features, row_keys, text_keys, temperature, across_ranks=self.training
            )
            if training_inputs.get("caption_ids") is not None:
                loss_caption = self._caption_contrastive_loss(image_features, image_index, temperature, training_inputs)
                loss_itc = (loss_itc + loss_caption) / 2
            text_to_image = (text_features @ image_features.T / temperature).detach()
        loss_itm = None
        if self.config.use_itm and text_keys.unique().numel() > 1:
            loss_itm = self._itm_loss(
                text_ids, text_mask, image_embeds, image_index, row_keys, text_keys, text_to_image
            )
        return loss_itc, loss_itm

    def _caption_contrastive_loss(
        self,
        image_features: torch.Tensor,
        image_index: torch.Tensor,
        temperature: torch.Tensor,
        training_inputs: Mapping[str, Any],
    ) -> torch.Tensor:
        """InfoNCE between the images `(I, D)` and the distinct captions of the batch: an image's positives are the
        copies of its own caption (on every process), its negatives the other categories' captions."""
        caption_ids = training_inputs["caption_ids"]
        caption_mask = self.mvaema.text_attention_mask(caption_ids, training_inputs.get("caption_mask"), "caption_ids")
        keys = token_sequence_keys(caption_ids, caption_mask)
        distinct_keys, caption_of_pair = keys.unique(return_inverse=True)
        first_pair = caption_of_pair.new_full((len(distinct_keys),), len(keys)).scatter_reduce(
            0, caption_of_pair, torch.arange(len(keys), device=keys.device), reduce="amin"
        )
        caption_features = self.mvaema.normalized_text_features(caption_ids[first_pair], caption_mask[first_pair])
        image_caption_keys = keys.new_full((image_features.shape[0],), -1).scatter(0, image_index, keys)
        return image_text_contrastive_loss(
            image_features, caption_features, image_caption_keys, distinct_keys, temperature, across_ranks=self.training
        )

    def _itm_loss(
        self,
        text_ids: torch.Tensor,
        text_mask: torch.Tensor,
        image_embeds: torch.Tensor,
        image_index: torch.Tensor,
        row_keys: torch.Tensor,
        text_keys: torch.Tensor,
        text_to_image: torch.Tensor | None,
    ) -> torch.Tensor:
        """Binary cross-entropy over P scored pairs (`config.itm_pairs_per_image` per micrograph, at most
        `config.itm_pairs_per_batch`), P (text, negative image) and P (negative text, image) pairs; negatives drawn by
        `config.itm_negatives`."""
        pairs = pairs_per_key(text_keys, self.config.itm_pairs_per_image, shuffle=self.training)
        pairs = at_most(pairs, self.config.itm_pairs_per_batch, shuffle=self.training)
        negative_images, negative_texts = self.itm_negatives(text_to_image, image_index, row_keys, text_keys, pairs)
        text_ids = torch.cat([text_ids[pairs], text_ids[pairs], text_ids[negative_texts]])
        text_mask = torch.cat([text_mask[pairs], text_mask[pairs], text_mask[negative_texts]])
        image_rows = torch.cat([image_index[pairs], negative_images, image_index[pairs]])
        return image_text_matching_loss(
            self.mvaema.itm_logits(text_ids, text_mask, image_embeds, image_rows), len(pairs)
        )

    def itm_negatives(
        self,
        text_to_image: torch.Tensor | None,
        image_index: torch.Tensor,
        row_keys: torch.Tensor,
        text_keys: torch.Tensor,
        pairs: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """ITM negatives for pairs `(P,)` (default all B): sampled while training from the softmax of the ITC logits
        `(B, I)` (uniformly without ITC or with `itm_negatives="uniform"`); otherwise the most similar one (without ITC
        or similarities: the first other). See `losses_mvaema.matching_negatives`."""
        if text_to_image is None or self.config.itm_negatives == "uniform":
            text_to_image = torch.zeros(len(text_keys), len(row_keys), device=text_keys.device)
        if pairs is None:
            pairs = torch.arange(len(text_keys), device=text_keys.device)
        sample = self.training and self.config.itm_negatives != "hardest"
        return matching_negatives(text_to_image, image_index, row_keys, text_keys, pairs, sample)
