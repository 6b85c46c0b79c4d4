"""The peer: transformers' own `BlipForQuestionAnswering` at MVaEMa's size, trained by the same loop on the same batches.

Every results table and benchmark compares MVaEMa with this model, so the comparison must be fair:
same vocabulary, image size, patch size, width, depth, heads, weight initialisation scale, data, optimiser and
epochs. Two things are
adapted, both in the peer's favour: batches from the image-grouped collator are expanded to one image
per question (BLIP encodes per question), and decoder inputs are built as BLIP expects ("labels already
shifted right", starting with the decoder start token) so its loss ignores padding. The answer-only category
questions that `--ask_category_every_view` appends to MVaEMa's batches (`lm_only_rows`) are left out: like ITC and
ITM they are MVaEMa's auxiliary training signal, and the peer trains on the QA pairs of the corpus.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import BlipConfig, BlipForQuestionAnswering


def blip_peer_config(mvaema_config) -> BlipConfig:
    """A BlipConfig with the same vision and text dimensions, initialisation scale and special tokens as
    `mvaema_config`. BLIP's own defaults (0.02, and 1e-10 for the vision embeddings) are sized for BLIP's
    pretrained width; at width 64 trained from scratch they stall as MVaEMa's would (see MVaEMaVisionConfig)."""
    vision, text = mvaema_config.vision_config, mvaema_config.text_config
    return BlipConfig(
        vision_config={
            "hidden_size": vision.hidden_size,
            "intermediate_size": vision.intermediate_size,
            "num_hidden_layers": vision.num_hidden_layers,
            "num_attention_heads": vision.num_attention_heads,
            "image_size": vision.image_size,
            "patch_size": vision.patch_size,
            "initializer_range": vision.initializer_range,
        },
        text_config={
            "vocab_size": text.vocab_size,
            "hidden_size": text.hidden_size,
            "encoder_hidden_size": vision.hidden_size,
            "intermediate_size": text.intermediate_size,
            "num_hidden_layers": text.num_hidden_layers,
            "num_attention_heads": text.num_attention_heads,
            "max_position_embeddings": text.max_position_embeddings,
            "pad_token_id": mvaema_config.pad_token_id,
            "bos_token_id": mvaema_config.dec_token_id,
            "sep_token_id": mvaema_config.sep_token_id,
            "eos_token_id": mvaema_config.sep_token_id,
            "initializer_range": text.initializer_range,
        },
        initializer_range=text.initializer_range,
        projection_dim=getattr(mvaema_config, "projection_dim", vision.hidden_size),
    )


@dataclass
class PeerClassificationOutput:
    scores: torch.Tensor
    top_k_indices: torch.Tensor
    top_k_scores: torch.Tensor


class BlipPeerForQuestionAnswering(BlipForQuestionAnswering):
    """`BlipForQuestionAnswering`, accepting the training loop's batches and scoring candidate answers."""

    def _decoder_inputs(self, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        start = torch.full_like(labels[:, :1], self.decoder_start_token_id)
        blip_labels = torch.cat([start, labels], dim=1)
        decoder_input_ids = blip_labels.masked_fill(blip_labels == -100, self.decoder_pad_token_id)
        return decoder_input_ids, (blip_labels != -100).long(), blip_labels

    def forward(self, pixel_values, input_ids, attention_mask=None, labels=None, image_index=None, image_keys=None,
                num_items_in_batch=None, lm_only_rows=None, **kwargs):
        """BLIP's VQA forward on image-grouped batches. `image_keys` and `num_items_in_batch` are accepted for the
        shared loop and not used: BLIP's loss is its own per-process token mean, as transformers computes it. The
        last `lm_only_rows` questions (MVaEMa's extra category questions) are dropped."""
        if lm_only_rows:
            pairs = len(input_ids) - lm_only_rows
            input_ids, labels, image_index = input_ids[:pairs], labels[:pairs], image_index[:pairs]
            attention_mask = None if attention_mask is None else attention_mask[:pairs]
        if image_index is not None:
            pixel_values = pixel_values[image_index]
        if labels is None:
            return super().forward(input_ids=input_ids, pixel_values=pixel_values, attention_mask=attention_mask, **kwargs)
        decoder_input_ids, decoder_attention_mask, blip_labels = self._decoder_inputs(labels)
        return super().forward(
            input_ids=input_ids,
            pixel_values=pixel_values,
            attention_mask=attention_mask,
            decoder_input_ids=decoder_input_ids,
            decoder_attention_mask=decoder_attention_mask,
            labels=blip_labels,
        )

    @torch.no_grad()
    def answer_log_likelihood(self, pixel_values, input_ids, attention_mask, labels) -> torch.Tensor:
        """Mean log-probability per answer token of `labels` [B, La] (-100 padded) given image and question: [B]."""
        image_embeds = self.vision_model(pixel_values=pixel_values).last_hidden_state
        image_mask = torch.ones(image_embeds.shape[:-1], dtype=torch.long, device=image_embeds.device)
        question_states = self.text_encoder(
            input_ids=input_ids, attention_mask=attention_mask,
            encoder_hidden_states=image_embeds, encoder_attention_mask=image_mask,
        ).last_hidden_state
        decoder_input_ids, decoder_attention_mask, blip_labels = self._decoder_inputs(labels)
        logits = self.text_decoder(
            input_ids=decoder_input_ids, attention_mask=decoder_attention_mask,
            encoder_hidden_states=question_states, encoder_attention_mask=attention_mask,
        ).logits[:, :-1]
        targets = blip_labels[:, 1:]
        token_log_probs = logits.log_softmax(-1).gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        answer_tokens = targets != -100
        return (token_log_probs * answer_tokens).sum(1) / answer_tokens.sum(1)

    @torch.no_grad()
    def classify(self, pixel_values, label_input_ids, label_attention_mask, method: str = "lm",
                 question_input_ids=None, question_attention_mask=None, top_k: int = 5,
                 label_pair_input_ids=None, label_pair_attention_mask=None) -> PeerClassificationOutput:
        """MVaEMa's `classify` for the peer, which has only its decoder to score with (method "lm"): the mean
        log-probability of each "[CLS] label [SEP]" text's label tokens as the answer. Scores are [N, C]. The
        `label_pair_*` texts serve ITC/ITM, which BLIP's VQA model does not have."""
        if method != "lm":
            raise ValueError(f"the BLIP peer classifies by decoder likelihood only (method='lm'), not {method!r}")
        num_images, num_labels = len(pixel_values), len(label_input_ids)
        label_tokens = label_input_ids[:, 1:].masked_fill(label_attention_mask[:, 1:] == 0, -100)
        label_tokens = label_tokens.masked_fill(label_tokens == self.config.text_config.sep_token_id, -100)
        question_input_ids = question_input_ids.expand(num_images, -1)
        question_attention_mask = question_attention_mask.expand(num_images, -1)
        scores = self.answer_log_likelihood(
            pixel_values.repeat_interleave(num_labels, 0),
            question_input_ids.repeat_interleave(num_labels, 0),
            question_attention_mask.repeat_interleave(num_labels, 0),
            label_tokens.repeat(num_images, 1),
        ).view(num_images, num_labels)
        top = scores.topk(min(top_k, num_labels), dim=1)
        return PeerClassificationOutput(scores, top.indices, top.values)
