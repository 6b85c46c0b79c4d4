# Copyright 2026 The MVaEMa authors. Licensed under the Apache License, Version 2.0.
"""Zero-shot classification with MVaEMa: rank label texts for each image by the ITC similarity, by ITM re-ranking of
the best ITC labels, or by the decoder's likelihood of each label as the answer to a question; and self-captioning,
which puts the category caption ranked first before each question."""

from dataclasses import dataclass

import torch
from transformers.utils import ModelOutput

from .layers_mvaema import TextMemory, padding_mask

CLASSIFY_METHODS = ("itc", "itm", "lm")


@dataclass
class MVaEMaClassificationOutput(ModelOutput):
    """
    Output of [`MVaEMaForQuestionAnswering.classify`].

    Args:
        scores (`torch.FloatTensor` of shape `(num_images, num_labels)`): higher is better. `"itc"`: cosine similarity;
            `"itm"`: matching probability (labels outside the re-ranked ITC candidates get `-inf`); `"lm"`: decoder
            log-likelihood of the label text as the answer (per token when `length_normalize=True`).
        top_k_indices (`torch.LongTensor` of shape `(num_images, k)`), top_k_scores (`torch.FloatTensor` of shape
            `(num_images, k)`): the `k = min(top_k, num_labels)` best labels per image, best first.
    """

    scores: torch.FloatTensor | None = None
    top_k_indices: torch.LongTensor | None = None
    top_k_scores: torch.FloatTensor | None = None


class MVaEMaClassificationMixin:
    """`classify` for a model holding the shared encoders as `self.mvaema` and a language-model head `self.lm_head`
    (`MVaEMaForQuestionAnswering`)."""

    @torch.no_grad()
    def classify(
        self,
        pixel_values: torch.FloatTensor,
        label_input_ids: torch.LongTensor,
        label_attention_mask: torch.LongTensor | None = None,
        method: str = "itc",
        question_input_ids: torch.LongTensor | None = None,
        question_attention_mask: torch.LongTensor | None = None,
        top_k: int = 5,
        itm_candidates: int = 16,
        length_normalize: bool = True,
        label_pair_input_ids: torch.LongTensor | None = None,
        label_pair_attention_mask: torch.LongTensor | None = None,
    ) -> MVaEMaClassificationOutput:
        """Rank label texts (e.g. "The image shows nanowires") for each image.

        Args:
            pixel_values (`(N, 3, H, W)`): the images.
            label_input_ids (`(C, L)`), label_attention_mask (`(C, L)`): "[CLS] label [SEP]" per label, tokenized
                like answers (`MVaEMaProcessor.prepare_label_texts`).
            label_pair_input_ids (`(C, L')`), label_pair_attention_mask: what `"itc"` and `"itm"` compare with the
                image, in the training pairs' format "[CLS] caption question [SEP] label [SEP]" (e.g. the caption
                that names the category; `prepare_label_texts(..., questions=, captions=)`); default: the labels.
            method: `"itc"` cosine similarity of the image and label embeddings; `"itm"` matching probability of the
                grounded encoder, re-ranking the `max(itm_candidates, top_k)` best ITC labels (all labels when there
                are that few, or without ITC); `"lm"` log-likelihood of the label tokens (without the final [SEP]:
                a label is the start of an answer) as the decoder's answer to `question_input_ids` (`(1 or N, Lq)`),
                summed, or averaged per token when `length_normalize` (the default, so long labels are not
                penalised).
            top_k: how many labels to return per image.
        """
        self._check_classify_method(method, question_input_ids)
        label_attention_mask = self.mvaema.text_attention_mask(label_input_ids, label_attention_mask, "label_input_ids")
        image_embeds = self.mvaema.vision_model(pixel_values)
        if method == "lm":
            scores = self._lm_scores(
                image_embeds,
                label_input_ids,
                label_attention_mask,
                question_input_ids,
                question_attention_mask,
                length_normalize,
            )
        else:
            if label_pair_input_ids is not None:
                label_input_ids = label_pair_input_ids
                label_attention_mask = self.mvaema.text_attention_mask(
                    label_pair_input_ids, label_pair_attention_mask, "label_pair"
                )
            scores = None
            if self.config.use_itc:
                scores = (
                    self.mvaema.normalized_image_features(image_embeds)
                    @ self.mvaema.normalized_text_features(label_input_ids, label_attention_mask).T
                )
            if method == "itm":
                candidates = max(itm_candidates, top_k)
                scores = self._itm_scores(image_embeds, label_input_ids, label_attention_mask, scores, candidates)
        top = scores.topk(min(top_k, scores.shape[1]), dim=1)
        return MVaEMaClassificationOutput(scores=scores, top_k_indices=top.indices, top_k_scores=top.values)

    @torch.no_grad()
    def self_captioned_prompts(
        self,
        pixel_values: torch.FloatTensor,
        image_index: torch.LongTensor | None,
        captioned_input_ids: torch.LongTensor,
        captioned_attention_mask: torch.LongTensor,
        caption_candidate_input_ids: torch.LongTensor,
        caption_candidate_attention_mask: torch.LongTensor | None = None,
    ) -> tuple[torch.LongTensor, torch.LongTensor]:
        """Each question's prompt with the category caption the model ranks first for its image: the ITC ranking of
        the C candidate captions `(C, Lc)` (ITM's without ITC), as `classify` ranks them. Returns `input_ids` and
        `attention_mask` `(B, Lq')`, row i being `captioned_input_ids[i, top caption of image image_index[i]]`."""
        if captioned_input_ids.ndim != 3 or caption_candidate_input_ids is None:
            raise ValueError(
                "self-captioning needs captioned_input_ids [batch, captions, length] and caption_candidate_input_ids "
                "[captions, length], as MVaEMaProcessor(..., self_caption=True) makes them."
            )
        if pixel_values is None:
            raise ValueError("self-captioning ranks the captions against the images: pass pixel_values.")
        method = "itc" if self.config.use_itc else "itm"
        ranking = self.classify(
            pixel_values, caption_candidate_input_ids, caption_candidate_attention_mask, method=method, top_k=1
        )
        chosen = ranking.top_k_indices[:, 0]
        check_image_index(image_index, chosen.shape[0], captioned_input_ids.shape[0])
        if image_index is not None:
            chosen = chosen[image_index]
        rows = torch.arange(captioned_input_ids.shape[0], device=chosen.device)
        input_ids, attention_mask = captioned_input_ids[rows, chosen], captioned_attention_mask[rows, chosen]
        length = int(attention_mask.sum(1).max())
        return input_ids[:, :length], attention_mask[:, :length]

    def _check_classify_method(self, method: str, question_input_ids: torch.Tensor | None):
        if method not in CLASSIFY_METHODS:
            raise ValueError(f"classify method must be one of {CLASSIFY_METHODS}, got {method!r}.")
        if method == "itc" and not self.config.use_itc:
            raise ValueError(
                "this model was built without ITC (use_itc=False, ablation 'no_itc'), so it has "
                "no image/text embeddings to compare; use method='itm' or method='lm'."
            )
        if method == "itm" and not self.config.use_itm:
            raise ValueError(
                "this model was built without ITM (use_itm=False, ablation 'no_itm'), so it has "
                "no matching head; use method='itc' or method='lm'."
            )
        if method == "lm" and question_input_ids is None:
            raise ValueError(
                "method='lm' scores each label as the answer to a question; pass "
                "question_input_ids (e.g. the processor's tokenization of the classification question)."
            )

    def _itm_scores(
        self,
        image_embeds: torch.Tensor,
        label_ids: torch.Tensor,
        label_mask: torch.Tensor,
        itc_scores: torch.Tensor | None,
        candidates: int,
    ) -> torch.Tensor:
        num_images, num_labels = image_embeds.shape[0], label_ids.shape[0]
        if itc_scores is None or num_labels <= candidates:
            candidate_labels = torch.arange(num_labels, device=label_ids.device).expand(num_images, -1)
        else:
            candidate_labels = itc_scores.topk(candidates, dim=1).indices
        image_rows = torch.arange(num_images, device=label_ids.device).repeat_interleave(candidate_labels.shape[1])
        pairs = candidate_labels.flatten()
        probabilities = self.mvaema.itm_logits(label_ids[pairs], label_mask[pairs], image_embeds, image_rows).sigmoid()
        scores = probabilities.new_full((num_images, num_labels), float("-inf"))
        return scores.scatter(1, candidate_labels, probabilities.view(num_images, -1))

    def _lm_scores(
        self,
        image_embeds: torch.Tensor,
        label_ids: torch.Tensor,
        label_mask: torch.Tensor,
        question_ids: torch.Tensor,
        question_mask: torch.Tensor | None,
        length_normalize: bool,
    ) -> torch.Tensor:
        num_images, num_labels = image_embeds.shape[0], label_ids.shape[0]
        if question_ids.shape[0] not in (1, num_images):
            raise ValueError(
                f"question_input_ids has {question_ids.shape[0]} rows; give one question for "
                f"all {num_images} images or one per image."
            )
        question_mask = self.mvaema.text_attention_mask(question_ids, question_mask, "question_input_ids")
        question_ids, question_mask = question_ids.expand(num_images, -1), question_mask.expand(num_images, -1)
        question_states = self.mvaema.grounded_text_states(image_embeds, None, question_ids, question_mask)
        memory_states, memory_mask = self.mvaema.answer_memory(question_states, question_mask, image_embeds, None)
        is_target = label_mask[:, 1:].bool() & label_ids[:, 1:].ne(self.config.sep_token_id)
        targets = label_ids[:, 1:].masked_fill(~is_target, -100)
        image_rows = torch.arange(num_images, device=label_ids.device).repeat_interleave(num_labels)
        pairs = torch.arange(num_labels, device=label_ids.device).repeat(num_images)
        memory = TextMemory(memory_states, mask=padding_mask(memory_mask[image_rows]), index=image_rows)
        decoder_ids = self.prepare_decoder_input_ids_from_labels(targets)[pairs]
        log_probs = self.lm_head(self.mvaema.text_model(decoder_ids, None, memory, is_causal=True)).log_softmax(dim=-1)
        is_target, targets = is_target[pairs], targets[pairs]
        token_scores = log_probs.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1) * is_target
        scores = token_scores.sum(dim=1)
        if length_normalize:
            scores = scores / is_target.sum(dim=1).clamp(min=1)
        return scores.view(num_images, num_labels)


def check_image_index(image_index: torch.Tensor | None, num_images: int, batch_size: int) -> None:
    """`image_index` `(B,)` must name a row of `pixel_values` for each question (None: one image per question)."""
    if image_index is None:
        if num_images != batch_size:
            raise ValueError(
                f"{num_images} images for {batch_size} questions; pass image_index [batch] (which image row each "
                "question uses) or one image per question."
            )
        return
    if image_index.shape != (batch_size,) or image_index.dtype != torch.long:
        raise ValueError(
            f"image_index must be a LongTensor of shape [{batch_size}] (one image row per question), got "
            f"{image_index.dtype} {list(image_index.shape)}."
        )
    if batch_size and (int(image_index.min()) < 0 or int(image_index.max()) >= num_images):
        raise ValueError(
            f"image_index values must lie in [0, {num_images - 1}] (rows of pixel_values), got min "
            f"{int(image_index.min())} and max {int(image_index.max())}."
        )
