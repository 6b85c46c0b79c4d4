# Copyright 2026 The MVaEMa authors. Licensed under the Apache License, Version 2.0.
"""MVaEMa: a small BLIP-style vision-language model for electron micrographs, trained with ITC + ITM + LM.

Layout (the paper's Figure 1, BLIP's VQA design):

    pixel_values [I, 3, 224, 224] -> vision tower (pre-LN ViT) -> image_embeds [I, 1 + patches, Hv]
    question [B, Lq] (+caption) -> grounded encoder (text stack, [ENC] at position 0, cross-attends to the image of
        each pair, chosen by `image_index`) -> fused question states [B, Lq, H]
    answer -> decoder (same text stack: causal self-attention + the same cross-attention and feed-forward weights,
        attending to the image patches and the fused question states, `config.decoder_memory`) -> logits [B, La, V]

The layers live in `layers_mvaema.py`, the objectives in `losses_mvaema.py`. Here: `MVaEMaModel`, the shared
encoders with BLIP's `get_image_features` / `get_text_features` (on its own, the zero-shot image classifier), and
`MVaEMaForQuestionAnswering`, which adds the language-model head, the joint loss, generation and classification.
"""

from dataclasses import dataclass
from typing import TypedDict, Unpack

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationConfig, GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.cache_utils import DynamicCache, EncoderDecoderCache
from transformers.utils import ModelOutput
from transformers.utils.deprecation import deprecate_kwarg

from .classification_mvaema import MVaEMaClassificationMixin, MVaEMaClassificationOutput, check_image_index
from .configuration_mvaema import MVaEMaConfig
from .layers_mvaema import MVaEMaTextModel, MVaEMaVisionEmbeddings, MVaEMaVisionModel, TextMemory, padding_mask
from .losses_mvaema import MVaEMaLossesMixin
from .safe_loading_mvaema import checked_loading_options

# `register_for_auto_class` records one auto class per model class; these are added to the saved auto_map by hand.
QUESTION_ANSWERING_AUTO_CLASSES = ("AutoModelForVisualQuestionAnswering", "AutoModelForImageTextToText")
ZERO_SHOT_AUTO_CLASS = "AutoModelForZeroShotImageClassification"


@dataclass
class MVaEMaEncoderOutput(ModelOutput):
    """
    What the image-grounded encoder hands the decoder (and the losses).

    Args:
        last_hidden_state (`torch.FloatTensor` of shape `(batch_size, question_length, text_hidden_size)`):
            fused question states: the question tokens after cross-attending to their image.
        image_embeds (`torch.FloatTensor` of shape `(num_images, 1 + num_patches, vision_hidden_size)`):
            the vision tower's output; row 0 of each image is its [CLS] summary.
        image_index (`torch.LongTensor` of shape `(batch_size,)`): the image row each question belongs to.
        answer_memory (`torch.FloatTensor` of shape `(batch_size, memory_length, text_hidden_size)`): what the answer
            decoder cross-attends to (`config.decoder_memory`): the question's image patches, then its fused states.
        answer_memory_mask (`torch.LongTensor` of shape `(batch_size, memory_length)`): 1 where the decoder may look.
    """

    last_hidden_state: torch.FloatTensor | None = None
    image_embeds: torch.FloatTensor | None = None
    image_index: torch.LongTensor | None = None
    answer_memory: torch.FloatTensor | None = None
    answer_memory_mask: torch.LongTensor | None = None


@dataclass
class MVaEMaOutput(ModelOutput):
    """
    Output of [`MVaEMaForQuestionAnswering.forward`].

    Args:
        loss (`torch.FloatTensor` of shape `()`, returned with `labels`): weighted sum of the enabled losses.
        loss_itc, loss_itm, loss_lm (`torch.FloatTensor` of shape `()`): each objective; `None` when disabled, when no
            `labels` were given, or (ITM) when the batch holds a single image and so no negative pair exists.
        logits (`torch.FloatTensor` of shape `(batch_size, answer_length, vocab_size)`): next-token scores; `None` in
            training mode with `labels` unless `return_logits=True` (the LM head then scores the answer tokens only).
        cache (`EncoderDecoderCache`, returned with `use_cache=True`): decoder self-attention keys/values and the
            keys/values read from the answer memory (image patches and fused question states), for incremental
            decoding.
        encoder_last_hidden_state (`torch.FloatTensor` of shape `(batch_size, question_length, hidden_size)`).
        image_embeds (`torch.FloatTensor` of shape `(num_images, 1 + num_patches, vision_hidden_size)`).
    """

    loss: torch.FloatTensor | None = None
    loss_itc: torch.FloatTensor | None = None
    loss_itm: torch.FloatTensor | None = None
    loss_lm: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    cache: EncoderDecoderCache | None = None
    encoder_last_hidden_state: torch.FloatTensor | None = None
    image_embeds: torch.FloatTensor | None = None


@dataclass
class MVaEMaZeroShotOutput(ModelOutput):
    """
    Output of [`MVaEMaModel.forward`]: ITC similarities, as CLIP's and BLIP's base models return them.

    Args:
        logits_per_image (`torch.FloatTensor` of shape `(num_images, num_texts)`): cosine similarity / temperature.
        logits_per_text (`torch.FloatTensor` of shape `(num_texts, num_images)`): its transpose.
        image_embeds (`torch.FloatTensor` of shape `(num_images, projection_dim)`), text_embeds
            (`torch.FloatTensor` of shape `(num_texts, projection_dim)`): the L2-normalised ITC embeddings.
    """

    logits_per_image: torch.FloatTensor | None = None
    logits_per_text: torch.FloatTensor | None = None
    image_embeds: torch.FloatTensor | None = None
    text_embeds: torch.FloatTensor | None = None


class MVaEMaQuestionEncoder:
    """The image-grounded question encoder as `generate()` sees an encoder-decoder model (`model.get_encoder()`).

    It owns no weights (the vision tower and the text stack belong to the model, the text stack also being the
    decoder): calling it runs `MVaEMaForQuestionAnswering.encode`.
    """

    main_input_name = "input_ids"

    def __init__(self, model: "MVaEMaForQuestionAnswering"):
        self.model = model

    def forward(
        self,
        input_ids: torch.LongTensor,
        pixel_values: torch.FloatTensor,
        attention_mask: torch.LongTensor | None = None,
        image_index: torch.LongTensor | None = None,
    ) -> MVaEMaEncoderOutput:
        return self.model.encode(pixel_values, input_ids, attention_mask, image_index)

    __call__ = forward


class MVaEMaPreTrainedModel(PreTrainedModel):
    config: MVaEMaConfig
    config_class = MVaEMaConfig
    base_model_prefix = "mvaema"
    main_input_name = "input_ids"
    input_modalities = ("image", "text")
    _no_split_modules = ["MVaEMaVisionLayer", "MVaEMaTextLayer"]
    _supports_sdpa = True

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        # Weights from model.safetensors only, sizes and generation settings bounded (safe_loading_mvaema).
        kwargs = checked_loading_options(pretrained_model_name_or_path, kwargs)
        return super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)

    def _init_weights(self, module: nn.Module):
        """transformers' defaults at `text_config.initializer_range`; the vision tower's weights and the ITC image
        projection at `vision_config.initializer_range`."""
        super()._init_weights(module)
        vision_std = self.config.vision_config.initializer_range
        if isinstance(module, (nn.Linear, nn.Conv2d)) and self._reads_images(module):
            init.normal_(module.weight, std=vision_std)
        elif isinstance(module, MVaEMaVisionEmbeddings):
            init.trunc_normal_(module.class_embedding, std=vision_std)
            init.trunc_normal_(module.position_embedding, std=vision_std)
        elif isinstance(module, MVaEMaModel) and module.temperature is not None:
            init.constant_(module.temperature, self.config.temperature_init)

    def _reads_images(self, module: nn.Module) -> bool:
        """Whether `module` belongs to the vision tower or is the ITC image projection."""
        encoders = self if isinstance(self, MVaEMaModel) else getattr(self, self.base_model_prefix)
        return module is encoders.vision_projection or any(
            module is member for member in encoders.vision_model.modules()
        )


class MVaEMaModel(MVaEMaPreTrainedModel):
    """The shared encoders: the vision tower, the text stack (unimodal and image-grounded encoder, and the decoder's
    layers), the ITC projections and temperature, and the ITM head. Task models hold it as `model.mvaema`; on its own
    it is the zero-shot image classifier (as CLIP's and BLIP's base models are): `forward` scores every image against
    every text with the ITC similarity. It loads from a saved `MVaEMaForQuestionAnswering` (whose weights sit under
    `mvaema.`), leaving out the language-model head it does not use.
    """

    _keys_to_ignore_on_load_unexpected = [r"^lm_head\."]

    def __init__(self, config: MVaEMaConfig):
        super().__init__(config)
        vision_size, text_size = config.vision_config.hidden_size, config.text_config.hidden_size
        self.vision_model = MVaEMaVisionModel(config.vision_config)
        # The text stack reads the image at its own width, through cross-attention or (w/o CA) as a prefix.
        self.image_memory_projection = nn.Linear(vision_size, text_size)
        self.text_model = MVaEMaTextModel(config)
        self.vision_projection = nn.Linear(vision_size, config.projection_dim) if config.use_itc else None
        self.text_projection = nn.Linear(text_size, config.projection_dim) if config.use_itc else None
        self.temperature = nn.Parameter(torch.empty(())) if config.use_itc else None
        self.itm_head = nn.Linear(text_size, 1) if config.use_itm else None
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.text_model.embeddings.word_embeddings

    def set_input_embeddings(self, value: nn.Embedding):
        self.text_model.embeddings.word_embeddings = value

    # ------------------------------------------------------------------------------------------ public features

    def get_image_features(self, pixel_values: torch.FloatTensor) -> torch.FloatTensor:
        """ITC image embeddings `(I, projection_dim)` (projected, not normalised, as BLIP's and CLIP's) of
        pixel_values `(I, 3, image_size, image_size)`."""
        self._require_itc()
        return self.vision_projection(self.vision_model(pixel_values)[:, 0])

    def get_text_features(
        self, input_ids: torch.LongTensor, attention_mask: torch.LongTensor | None = None
    ) -> torch.FloatTensor:
        """ITC text embeddings `(N, projection_dim)` (projected, not normalised) of "[CLS] ... [SEP]" texts
        input_ids `(N, L)`, from the unimodal text encoder."""
        self._require_itc()
        attention_mask = self.text_attention_mask(input_ids, attention_mask)
        return self.text_projection(self.pooled(self.text_model(input_ids, attention_mask), attention_mask))

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        attention_mask: torch.LongTensor | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> MVaEMaZeroShotOutput | tuple:
        r"""
        Image-text similarity of every image with every text, for zero-shot image classification.

        Args:
            input_ids (`(N, L)`): "[CLS] label text [SEP]" token ids (the tokenizer adds [CLS] and [SEP]).
            pixel_values (`(I, 3, image_size, image_size)`): the images.
            attention_mask (`(N, L)`): 1 for tokens, 0 for padding; default: the non-[PAD] tokens.
            kwargs: other tokenizer outputs (such as `token_type_ids`), which the model does not use.
        """
        if pixel_values is None:
            raise ValueError("pass pixel_values (the images) and input_ids (the label texts).")
        image_embeds = F.normalize(self.get_image_features(pixel_values), dim=-1)
        text_embeds = F.normalize(self.get_text_features(input_ids, attention_mask), dim=-1)
        logits_per_image = image_embeds @ text_embeds.T / self.clamped_temperature()
        output = MVaEMaZeroShotOutput(
            logits_per_image=logits_per_image,
            logits_per_text=logits_per_image.T,
            image_embeds=image_embeds,
            text_embeds=text_embeds,
        )
        use_return_dict = self.config.return_dict if return_dict is None else return_dict
        return output if use_return_dict else output.to_tuple()

    # ------------------------------------------------------------------------- building blocks of the task models

    def clamped_temperature(self) -> torch.Tensor:
        return self.temperature.clamp(self.config.temperature_min, self.config.temperature_max)

    def normalized_image_features(self, image_embeds: torch.Tensor) -> torch.Tensor:
        """L2-normalised ITC embedding `(I, projection_dim)` of the vision tower's output `(I, 1 + patches, Hv)`."""
        return F.normalize(self.vision_projection(image_embeds[:, 0]), dim=-1)

    def normalized_text_features(self, text_ids: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
        """L2-normalised ITC embedding `(N, projection_dim)` of checked [CLS]-led texts `(N, L)`."""
        return F.normalize(self.text_projection(self.pooled(self.text_model(text_ids, text_mask), text_mask)), dim=-1)

    def grounded_text_states(
        self,
        image_embeds: torch.Tensor,
        image_index: torch.Tensor | None,
        text_ids: torch.Tensor,
        text_mask: torch.Tensor,
    ) -> torch.Tensor:
        """Image-grounded encoder: text i `(N, L)`, its [CLS] replaced by [ENC], attends to image `image_index[i]`
        (image i when None); returns `(N, L, hidden)`. Each image's keys/values are projected once, however many
        texts read it."""
        memory = TextMemory(self.image_memory_projection(image_embeds), index=image_index)
        return self.text_model(self._with_first_token(text_ids, self.config.enc_token_id), text_mask, memory)

    def answer_memory(
        self,
        question_states: torch.Tensor,
        question_mask: torch.Tensor,
        image_embeds: torch.Tensor,
        image_index: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """What the answer decoder cross-attends to (`config.decoder_memory`): states `(B, Lm, hidden)` and their
        mask `(B, Lm)` (1 = attend). Question i, fused states `question_states` `(B, Lq, hidden)` with mask
        `question_mask` `(B, Lq)`, is about image `image_index[i]` of `image_embeds` `(I, 1 + patches, Hv)` (image i
        when None). With `"image_and_question"` the memory is that image's patch states (at the text width, as the
        grounded encoder reads them) followed by the question states, so Lm = 1 + patches + Lq."""
        if self.config.decoder_memory == "question":
            return question_states, question_mask
        patches = self.image_memory_projection(image_embeds)
        if image_index is not None:
            patches = patches.index_select(0, image_index)
        patch_mask = question_mask.new_ones(patches.shape[:2])
        return torch.cat([patches, question_states], dim=1), torch.cat([patch_mask, question_mask], dim=1)

    def itm_logits(
        self, text_ids: torch.Tensor, text_mask: torch.Tensor, image_embeds: torch.Tensor, image_index: torch.Tensor
    ) -> torch.Tensor:
        """Matching logit `(N,)` of text i with image `image_index[i]`, from the grounded encoder's [ENC] state."""
        states = self.grounded_text_states(image_embeds, image_index, text_ids, text_mask)
        return self.itm_head(self.pooled(states, text_mask)).squeeze(-1)

    def pooled(self, states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Text embedding `(N, hidden)`: the first token's state, or (w/o self-attention, where that token sees
        nothing of the text) the mean over the unmasked tokens."""
        if self.config.use_self_attention:
            return states[:, 0]
        weights = attention_mask.unsqueeze(-1).to(states.dtype)
        return (states * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1)

    def text_attention_mask(
        self, text_ids: torch.Tensor | None, attention_mask: torch.Tensor | None, name: str = "input_ids"
    ) -> torch.Tensor:
        """Checks a [CLS]-led text batch and returns its attention mask (default: the non-[PAD] tokens)."""
        if text_ids is None:
            raise ValueError(f"pass {name} (tokenized with MVaEMaProcessor).")
        if text_ids.ndim != 2 or text_ids.dtype != torch.long or text_ids.shape[1] == 0:
            raise ValueError(
                f"{name} must be a non-empty 2-D LongTensor [batch, length], got {text_ids.dtype} "
                f"{list(text_ids.shape)}."
            )
        if attention_mask is None:
            attention_mask = text_ids.ne(self.config.pad_token_id).long()
        if attention_mask.shape != text_ids.shape:
            raise ValueError(
                f"the attention mask of {name} has shape {list(attention_mask.shape)}, expected {list(text_ids.shape)}."
            )
        if not bool((text_ids[:, 0] == self.config.cls_token_id).all()) or not bool(attention_mask[:, 0].all()):
            raise ValueError(
                f"every row of {name} must start with an unmasked [CLS] token (id {self.config.cls_token_id}); "
                "tokenize with MVaEMaProcessor, which adds it."
            )
        return attention_mask

    @staticmethod
    def _with_first_token(input_ids: torch.Tensor, token_id: int) -> torch.Tensor:
        return torch.cat([input_ids.new_full((input_ids.shape[0], 1), token_id), input_ids[:, 1:]], dim=1)

    def _require_itc(self) -> None:
        if not self.config.use_itc:
            raise ValueError(
                "this model was built without ITC (use_itc=False, ablation 'no_itc'), so it has no image/text "
                "embeddings to compare; classify with method='itm' or method='lm'."
            )


class MVaEMaTrainingKwargs(TypedDict, total=False):
    """Training-only inputs of `MVaEMaForQuestionAnswering.forward` (what the training loop's collator adds).

    num_items_in_batch (`int`): answer tokens in the whole global batch (all processes); see
        `losses_mvaema.language_modeling_loss`.
    image_keys (`(B,)`): a global id (>= 0, e.g. the dataset row) of each question's micrograph. Pairs with equal keys
        are ITC positives and never ITM negatives, also when one micrograph sits in several rows of `pixel_values` or on
        several processes; default: the row of `pixel_values`.
    pair_prompt_ids (`(B, Lp)`), pair_prompt_mask (`(B, Lp)`): the prompt ITC and ITM put before the answer instead
        of `input_ids`, e.g. with the caption that the VQA prompt leaves out (the caption describes the image whatever
        the question).
    caption_ids (`(B, Lc)`), caption_mask (`(B, Lc)`): "[CLS] caption [SEP]" of each pair's image (the caption that
        states its category). ITC then also contrasts each image with the captions of the batch, identical captions
        being one text (`losses_mvaema.token_sequence_keys`): the caption of a category is a positive for every image
        of that category. Zero-shot classification ranks exactly these caption texts.
    lm_only_rows (`int`): the last R rows of input_ids, attention_mask, labels and image_index train the answer
        decoder only (LM loss), not ITC or ITM: extra questions a batch asks of its micrographs (the training script's
        `--ask_category_every_view`: each micrograph's category question, with or without the caption).
        `pair_prompt_ids`, `caption_ids` and `image_keys` then cover the first B - R rows. Without logits (training)
        the decoder reads those rows apart, cut to their last scored token, so a few scored tokens per row cost a
        few positions, not the batch's answer width.
    return_logits (`bool`): return the logits of every answer position. Default: yes, except in training mode with
        `labels`, where the LM head then runs on the answer tokens only (padding is about a third of a batch's answer
        grid and would cost a vocabulary-sized projection per position); `logits` is then None. Same loss either way.
    """

    num_items_in_batch: int | torch.Tensor | None
    image_keys: torch.LongTensor | None
    pair_prompt_ids: torch.LongTensor | None
    pair_prompt_mask: torch.LongTensor | None
    caption_ids: torch.LongTensor | None
    caption_mask: torch.LongTensor | None
    lm_only_rows: int | None
    return_logits: bool | None


class MVaEMaForQuestionAnswering(MVaEMaPreTrainedModel, MVaEMaLossesMixin, MVaEMaClassificationMixin, GenerationMixin):
    """MVaEMa for visual question answering: the shared encoders (`model.mvaema`) and the language-model head.

    Training: `model(pixel_values, input_ids, attention_mask, labels, image_index)` returns the three losses (ITC, ITM,
    LM) and their weighted sum. Inference: `model.generate(pixel_values=..., input_ids=..., attention_mask=...)`
    answers questions; `model.classify(...)` ranks label texts for each image.
    """

    _tied_weights_keys = {"lm_head.weight": "mvaema.text_model.embeddings.word_embeddings.weight"}

    def __init__(self, config: MVaEMaConfig):
        super().__init__(config)
        self.mvaema = MVaEMaModel(config)
        self.lm_head = nn.Linear(config.text_config.hidden_size, config.text_config.vocab_size)
        # `register_for_auto_class` maps one auto class per model class; the task mappings are added here by hand.
        module = type(self).__module__.rsplit(".", 1)[-1]
        config.auto_map = {
            **(getattr(config, "auto_map", None) or {}),
            **{auto_class: f"{module}.{type(self).__name__}" for auto_class in QUESTION_ANSWERING_AUTO_CLASSES},
            ZERO_SHOT_AUTO_CLASS: f"{module}.{MVaEMaModel.__name__}",
        }
        self.generation_config = default_generation_config(config)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.mvaema.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Embedding):
        self.mvaema.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def set_output_embeddings(self, value: nn.Linear):
        self.lm_head = value

    def get_encoder(self, modality: str | None = None):
        """`MVaEMaQuestionEncoder` (image + question -> fused states); `modality="image"` gives the vision tower."""
        return self.mvaema.vision_model if modality == "image" else MVaEMaQuestionEncoder(self)

    def get_image_features(self, pixel_values: torch.FloatTensor) -> torch.FloatTensor:
        """ITC image embeddings `(I, projection_dim)`; see `MVaEMaModel.get_image_features`."""
        return self.mvaema.get_image_features(pixel_values)

    def get_text_features(
        self, input_ids: torch.LongTensor, attention_mask: torch.LongTensor | None = None
    ) -> torch.FloatTensor:
        """ITC text embeddings `(N, projection_dim)`; see `MVaEMaModel.get_text_features`."""
        return self.mvaema.get_text_features(input_ids, attention_mask)

    # ----------------------------------------------------------------------------------------------- encoding

    def encode(
        self,
        pixel_values: torch.FloatTensor,
        input_ids: torch.LongTensor,
        attention_mask: torch.LongTensor | None = None,
        image_index: torch.LongTensor | None = None,
    ) -> MVaEMaEncoderOutput:
        """Image-grounded encoding of the questions.

        pixel_values `(I, 3, H, W)`; input_ids `(B, Lq)` starting with [CLS] (replaced by [ENC]); attention_mask
        `(B, Lq)`, default: non-[PAD] tokens; image_index `(B,)` row of `pixel_values` for each question (default
        `arange(B)`, which needs I == B). Each image goes through the vision tower once, however many questions
        share it.
        """
        return self._encode(
            pixel_values, input_ids, self.mvaema.text_attention_mask(input_ids, attention_mask), image_index
        )

    def _encode(
        self,
        pixel_values: torch.Tensor | None,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        image_index: torch.Tensor | None,
    ) -> MVaEMaEncoderOutput:
        if pixel_values is None:
            raise ValueError("pass pixel_values (or encoder_outputs from a previous encode()).")
        image_embeds = self.mvaema.vision_model(pixel_values)
        check_image_index(image_index, image_embeds.shape[0], input_ids.shape[0])
        question_states = self.mvaema.grounded_text_states(image_embeds, image_index, input_ids, attention_mask)
        answer_memory, answer_memory_mask = self.mvaema.answer_memory(
            question_states, attention_mask, image_embeds, image_index
        )
        if image_index is None:
            image_index = torch.arange(input_ids.shape[0], device=input_ids.device)
        return MVaEMaEncoderOutput(
            last_hidden_state=question_states,
            image_embeds=image_embeds,
            image_index=image_index,
            answer_memory=answer_memory,
            answer_memory_mask=answer_memory_mask,
        )

    # ------------------------------------------------------------------------------------------------ forward

    @deprecate_kwarg("past_key_values", "6.0.0", new_name="cache")
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        attention_mask: torch.LongTensor | None = None,
        labels: torch.LongTensor | None = None,
        image_index: torch.LongTensor | None = None,
        decoder_input_ids: torch.LongTensor | None = None,
        decoder_attention_mask: torch.LongTensor | None = None,
        decoder_position_ids: torch.LongTensor | None = None,
        encoder_outputs: MVaEMaEncoderOutput | tuple | None = None,
        cache: EncoderDecoderCache | None = None,
        use_cache: bool | None = None,
        return_dict: bool | None = None,
        **kwargs: Unpack[MVaEMaTrainingKwargs],
    ) -> MVaEMaOutput | tuple:
        r"""
        Args:
            input_ids (`(B, Lq)`): "[CLS] caption question [SEP]" token ids (see `MVaEMaProcessor`).
            pixel_values (`(I, 3, image_size, image_size)`): the images, each once.
            attention_mask (`(B, Lq)`): 1 for tokens, 0 for padding; default: the non-[PAD] tokens.
            labels (`(B, La)`): answer tokens + [SEP], -100 where no loss is wanted (padding). Turns on the losses:
                LM on the answer, ITC and ITM on the pair's text: prompt then answer (first
                `config.contrastive_max_length` tokens).
            image_index (`(B,)`): row of `pixel_values` for each question; default `arange(B)` (needs I == B).
                Lets a batch encode each micrograph once for all of its questions.
            decoder_input_ids (`(B, L)`): default `prepare_decoder_input_ids_from_labels(labels)`.
            decoder_attention_mask (`(B, past + L)`): only needed for padding that is not at the end.
            decoder_position_ids (`(B or 1, L)`): default continues after the cached decoder tokens.
            encoder_outputs (`MVaEMaEncoderOutput`): from `encode()`; skips the vision tower and grounded encoder.
            cache (`EncoderDecoderCache`): the decoder cache (transformers' name for it since 5.24; the older name
                `past_key_values` is accepted with a deprecation warning, as by transformers' own models).
            use_cache (`bool`): return a cache for incremental decoding (default: True when a cache is passed).
            return_dict (`bool`): return an `MVaEMaOutput` (default) or a tuple.
            kwargs (`MVaEMaTrainingKwargs`): training-only inputs (`num_items_in_batch`, `image_keys`,
                `pair_prompt_ids`, `pair_prompt_mask`, `return_logits`).
        """
        training_inputs = checked_training_kwargs(kwargs)
        cache = self._decoder_cache(cache, use_cache)
        if encoder_outputs is None:
            attention_mask = self.mvaema.text_attention_mask(input_ids, attention_mask)
            encoder_outputs = self._encode(pixel_values, input_ids, attention_mask, image_index)
        elif not isinstance(encoder_outputs, MVaEMaEncoderOutput):
            encoder_outputs = MVaEMaEncoderOutput(*encoder_outputs)
        if encoder_outputs.answer_memory is None or encoder_outputs.answer_memory_mask is None:
            raise ValueError("encoder_outputs must hold answer_memory and answer_memory_mask; take them from encode().")
        decoder_input_ids = self._decoder_input_ids(
            labels, decoder_input_ids, decoder_position_ids, encoder_outputs.answer_memory.shape[0], cache
        )
        return_logits = training_inputs.get("return_logits")
        if return_logits is None:
            return_logits = not (self.training and labels is not None)
        memory = TextMemory(encoder_outputs.answer_memory, mask=padding_mask(encoder_outputs.answer_memory_mask))
        lm_only_rows = training_inputs.get("lm_only_rows") or 0
        logits = None
        if return_logits:
            decoder_states = self.mvaema.text_model(
                decoder_input_ids, decoder_attention_mask, memory, is_causal=True, position_ids=decoder_position_ids,
                cache=cache,
            )
            logits = self.lm_head(decoder_states)
        losses = {}
        if labels is not None:
            if return_logits:
                token_logits, token_labels = logits.flatten(0, 1), labels.flatten()
            else:
                answer_states, token_labels = self._answer_states(
                    decoder_input_ids, decoder_attention_mask, decoder_position_ids, memory, cache, labels, lm_only_rows
                )
                token_logits = self.lm_head(answer_states)
            pairs = labels.shape[0] - lm_only_rows  # the rows ITC and ITM read
            prompt = (training_inputs.get("pair_prompt_ids"), training_inputs.get("pair_prompt_mask"))
            if prompt[0] is None:
                prompt = (input_ids[:pairs], attention_mask[:pairs])
            losses = self._losses(
                labels[:pairs], token_logits, token_labels, encoder_outputs.image_embeds, encoder_outputs.image_index,
                prompt, training_inputs,
            )
        output = MVaEMaOutput(
            logits=logits,
            cache=cache,
            encoder_last_hidden_state=encoder_outputs.last_hidden_state,
            image_embeds=encoder_outputs.image_embeds,
            **losses,
        )
        use_return_dict = self.config.return_dict if return_dict is None else return_dict
        return output if use_return_dict else output.to_tuple()

    def _decoder_cache(self, cache: EncoderDecoderCache | None, use_cache: bool | None) -> EncoderDecoderCache | None:
        if use_cache is False:
            return None
        if cache is None and use_cache:
            text_config = self.config.text_config
            cache = EncoderDecoderCache(DynamicCache(config=text_config), DynamicCache(config=text_config))
        if cache is not None and not isinstance(cache, EncoderDecoderCache):
            raise TypeError(f"the decoder cache must be an EncoderDecoderCache, got {type(cache).__name__}.")
        return cache

    def _decoder_input_ids(
        self,
        labels: torch.Tensor | None,
        decoder_input_ids: torch.Tensor | None,
        decoder_position_ids: torch.Tensor | None,
        num_questions: int,
        cache: EncoderDecoderCache | None,
    ) -> torch.Tensor:
        """The decoder's input ids (from `labels` unless given), after checking they fit the batch and the cache."""
        if decoder_input_ids is None:
            if labels is None:
                raise ValueError(
                    "pass labels (training) or decoder_input_ids; to answer questions call "
                    "model.generate(pixel_values=..., input_ids=..., attention_mask=...)."
                )
            decoder_input_ids = self.prepare_decoder_input_ids_from_labels(labels)
        if decoder_input_ids.shape[0] != num_questions or (
            labels is not None and labels.shape != decoder_input_ids.shape
        ):
            raise ValueError(
                f"labels/decoder_input_ids of shape {list(decoder_input_ids.shape)} for {num_questions} questions; "
                "give one answer per question (labels and decoder_input_ids alike)."
            )
        steps_without_positions = cache is not None and cache.is_updated.get(0) and decoder_position_ids is None
        if not self.config.use_causal_self_attention and steps_without_positions:
            raise ValueError(
                "without causal self-attention (w/o CSA) the cache holds no decoder tokens to count positions from; "
                "pass decoder_position_ids when decoding step by step."
            )
        return decoder_input_ids

    def prepare_decoder_input_ids_from_labels(self, labels: torch.Tensor) -> torch.Tensor:
        """[DEC] + `labels` shifted right by one, with -100 replaced by [PAD]: `(B, La)` -> `(B, La)`."""
        if labels.ndim != 2 or labels.dtype != torch.long:
            raise ValueError(
                f"labels must be a 2-D LongTensor [batch, answer_length], got {labels.dtype} {list(labels.shape)}."
            )
        shifted = labels[:, :-1].masked_fill(labels[:, :-1] == -100, self.config.pad_token_id)
        return torch.cat([labels.new_full((labels.shape[0], 1), self.config.dec_token_id), shifted], dim=1)

    # ------------------------------------------------------------------------------------------------- losses

    @staticmethod
    def _up_to_last_answer_token(labels: torch.Tensor) -> torch.Tensor:
        """`(B, La)` bool: the decoder positions up to each row's last scored label. Later ones (padding) feed no
        scored position, causal attention looking only backwards."""
        return labels.ne(-100).flip(1).cumsum(1).flip(1) > 0

    def _answer_states(
        self,
        decoder_input_ids: torch.Tensor,
        decoder_attention_mask: torch.Tensor | None,
        decoder_position_ids: torch.Tensor | None,
        memory: TextMemory,
        cache: EncoderDecoderCache | None,
        labels: torch.Tensor,
        lm_only_rows: int,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The decoder's states at the scored answer positions `(T, hidden)` and their targets `(T,)`, row by row in
        order, without logits over the whole grid. With causal self-attention the answer-only rows (`lm_only_rows`,
        scored on a few leading tokens) are decoded apart, cut to their last scored position: a position never reads
        a later one, so the states are those of one pass over the padded batch, at a fraction of the cost."""
        rows = labels.shape[0]
        if 0 < lm_only_rows < rows and self.config.use_causal_self_attention and cache is None:
            groups = [slice(0, rows - lm_only_rows), slice(rows - lm_only_rows, rows)]
        else:
            groups = [slice(0, rows)]
        states, targets = [], []
        for group in groups:
            read_positions = self._up_to_last_answer_token(labels[group])
            width = max(1, int(read_positions.sum(1).max())) if len(groups) > 1 else labels.shape[1]
            position_ids = decoder_position_ids
            if position_ids is not None:
                position_ids = position_ids[group if position_ids.shape[0] == rows else slice(None), :width]
            group_states = self.mvaema.text_model(
                decoder_input_ids[group, :width],
                None if decoder_attention_mask is None else decoder_attention_mask[group, :width],
                TextMemory(memory.states[group], None if memory.mask is None else memory.mask[group]),
                is_causal=True,
                position_ids=position_ids,
                cache=cache,
                read_positions=read_positions[:, :width],
            )
            is_answer = labels[group, :width].ne(-100)
            states.append(group_states[is_answer])
            targets.append(labels[group, :width][is_answer])
        return torch.cat(states), torch.cat(targets)

    # --------------------------------------------------------------------------------------------- generation

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        attention_mask: torch.LongTensor | None = None,
        image_index: torch.LongTensor | None = None,
        encoder_outputs: MVaEMaEncoderOutput | None = None,
        captioned_input_ids: torch.LongTensor | None = None,
        captioned_attention_mask: torch.LongTensor | None = None,
        caption_candidate_input_ids: torch.LongTensor | None = None,
        caption_candidate_attention_mask: torch.LongTensor | None = None,
        **generate_kwargs,
    ) -> torch.LongTensor:
        """Answer the questions: `(B, 1 + new_tokens)` ids starting with [DEC] (decode with the processor).

        With the processor's self-captioning inputs (`captioned_*` `(B, C, Lq')`, `caption_candidate_*` `(C, Lc)`:
        `MVaEMaProcessor(..., self_caption=True)`), each question is asked after the category caption the model ranks
        first for its image (`self_captioned_prompts`) instead of as `input_ids`.

        Images and questions are encoded once, here, before `GenerationMixin.generate` expands them for beams or
        samples; the decoder's cache keeps the keys/values of its memory (image patches and fused question states),
        so they too are projected once. `generate_kwargs` are the usual ones (`max_new_tokens`, `num_beams`, `do_sample`, `generation_config`,
        ...); the defaults live in `model.generation_config`.
        """
        if captioned_input_ids is not None:
            input_ids, attention_mask = self.self_captioned_prompts(
                pixel_values, image_index, captioned_input_ids, captioned_attention_mask,
                caption_candidate_input_ids, caption_candidate_attention_mask,
            )
        if encoder_outputs is None:
            attention_mask = self.mvaema.text_attention_mask(input_ids, attention_mask)
            encoded = self._encode(pixel_values, input_ids, attention_mask, image_index)
            # The decoder reads only its memory; beams would otherwise copy the vision tower's states too.
            encoder_outputs = MVaEMaEncoderOutput(
                answer_memory=encoded.answer_memory, answer_memory_mask=encoded.answer_memory_mask
            )
        return super().generate(
            input_ids=input_ids, attention_mask=attention_mask, encoder_outputs=encoder_outputs, **generate_kwargs
        )

    def prepare_inputs_for_generation(self, input_ids: torch.LongTensor, **kwargs) -> dict:
        """GenerationMixin's inputs plus the positions of the decoder tokens fed in this step: without causal
        self-attention (w/o CSA) the cache holds no decoder tokens to count them from."""
        model_inputs = super().prepare_inputs_for_generation(input_ids, **kwargs)
        total_length, new_length = input_ids.shape[1], model_inputs["decoder_input_ids"].shape[1]
        positions = torch.arange(total_length - new_length, total_length, device=input_ids.device)
        model_inputs["decoder_position_ids"] = positions[None]
        return model_inputs


def checked_training_kwargs(kwargs: dict) -> MVaEMaTrainingKwargs:
    unknown = sorted(set(kwargs) - set(MVaEMaTrainingKwargs.__annotations__))
    if unknown:
        raise TypeError(
            f"MVaEMaForQuestionAnswering.forward got unexpected arguments {unknown}; the training-only ones are "
            f"{sorted(MVaEMaTrainingKwargs.__annotations__)}."
        )
    return kwargs


def default_generation_config(config: MVaEMaConfig) -> GenerationConfig:
    """Decoding defaults, shared by every model MVaEMa is compared with (so answers are decoded alike)."""
    return GenerationConfig(
        decoder_start_token_id=config.dec_token_id,
        bos_token_id=config.dec_token_id,
        eos_token_id=config.sep_token_id,
        pad_token_id=config.pad_token_id,
        max_new_tokens=64,
        # Tiny models fall into loops; a repeated 4-gram is almost never right in an 8-40 word answer.
        no_repeat_ngram_size=4,
        # Tokens that never occur inside an answer.
        suppress_tokens=[
            config.pad_token_id,
            config.cls_token_id,
            config.mask_token_id,
            config.enc_token_id,
            config.dec_token_id,
        ],
    )


def compile_for_training(model: MVaEMaForQuestionAnswering, **compile_kwargs) -> MVaEMaForQuestionAnswering:
    """Compile, in place, every layer of the vision tower and of the text stack with `torch.compile`; returns `model`.

    The layers hold the arithmetic and none of the data-dependent control flow (input checks, ITM pair and negative
    selection, cache bookkeeping), so each compiles into one graph without breaks. Text lengths change from batch to
    batch (each batch is trimmed to its longest text), hence `dynamic=True` unless `compile_kwargs` say otherwise.
    It is meant for GPUs, where a model this small is bound by kernel launches; on a CPU it mostly costs compilation
    time.
    """
    compile_kwargs.setdefault("dynamic", True)
    for layer in (*model.mvaema.vision_model.layers, *model.mvaema.text_model.layers):
        layer.compile(**compile_kwargs)
    return model


MVaEMaForQuestionAnswering.register_for_auto_class("AutoModel")
MVaEMaModel.register_for_auto_class(ZERO_SHOT_AUTO_CLASS)

__all__ = [
    "MVaEMaClassificationOutput",
    "MVaEMaEncoderOutput",
    "MVaEMaForQuestionAnswering",
    "MVaEMaModel",
    "MVaEMaOutput",
    "MVaEMaTrainingKwargs",
    "MVaEMaZeroShotOutput",
    "MVaEMaPreTrainedModel",
    "compile_for_training",
]
