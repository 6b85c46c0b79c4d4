# Copyright 2026 The MVaEMa authors. Licensed under the Apache License, Version 2.0.
"""MVaEMa configuration: a ViT image encoder and one shared text stack (encoder, grounded encoder, decoder).

Values stated in the paper are the defaults: 224 px images cut into 32 px patches, hidden size 64, 4 attention
heads of 16 dimensions. Values the paper leaves open are chosen here and documented on each field.
"""

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig

# The paper's ablations ("w/o ITC", "w/o CTC", "w/o SA", "w/o CA", "w/o CSA") as short ids and the switch each
# one turns off. "CTC" in the paper is the image-text matching loss, called ITM here.
ABLATIONS = {
    "no_itc": "use_itc",
    "no_itm": "use_itm",
    "no_sa": "use_self_attention",
    "no_ca": "use_cross_attention",
    "no_csa": "use_causal_self_attention",
}
PAPER_ABLATION_NAMES = {
    "no_itc": "w/o ITC",
    "no_itm": "w/o CTC",
    "no_sa": "w/o SA",
    "no_ca": "w/o CA",
    "no_csa": "w/o CSA",
}
ITM_NEGATIVE_MODES = ("sample", "hardest", "uniform")
# What the answer decoder's cross-attention reads (`MVaEMaConfig.decoder_memory`).
DECODER_MEMORIES = ("image_and_question", "question")
# Config field -> token text, in the order `train_wordpiece_tokenizer` creates them (so the default ids match).
SPECIAL_TOKENS = {
    "pad_token_id": "[PAD]",
    "unk_token_id": "[UNK]",
    "cls_token_id": "[CLS]",
    "sep_token_id": "[SEP]",
    "mask_token_id": "[MASK]",
    "enc_token_id": "[ENC]",
    "dec_token_id": "[DEC]",
}


@strict
class MVaEMaTowerConfig(PreTrainedConfig):
    r"""
    What the two towers share: a stack of pre-LayerNorm transformer layers. The defaults are the paper's sizes
    (hidden size 64, 4 attention heads of 16 dimensions) and choices the paper leaves open.

    Args:
        hidden_size (`int`, defaults to 64): embedding and layer width (paper).
        intermediate_size (`int`, defaults to 256): feed-forward size; not in the paper, 4 x hidden as in ViT/BERT.
        num_hidden_layers (`int`, defaults to 6): not in the paper; 6 keeps the model small and quick to train.
        num_attention_heads (`int`, defaults to 4): paper (4 heads of 16 dimensions).
        hidden_act (`str`, defaults to `"gelu"`), layer_norm_eps (`float`, defaults to 1e-6).
        attention_dropout / hidden_dropout (`float`, default 0.0): the paper states no dropout; early stopping
            limits overfitting instead.
        initializer_range (`float`, defaults to 0.1): std of the normal initialisation of this tower's weights.
            Not in the paper. BERT's and ViT's 0.02 is sized for width 768; at width 64 each linear layer would
            shrink its input about six-fold, every pooled state would be almost the same for every input, and with
            the paper's Adam at 1e-3 the ITC features collapse to one direction within a few steps (a stationary
            point). 0.1 is close to 1/sqrt(hidden_size), the fan-in scale.
    """

    hidden_size: int = 64
    intermediate_size: int = 256
    num_hidden_layers: int = 6
    num_attention_heads: int = 4
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-6
    attention_dropout: float | int = 0.0
    hidden_dropout: float | int = 0.0
    initializer_range: float = 0.1

    def validate_architecture(self):
        tower = self.base_config_key
        if self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(
                f"{tower} hidden_size={self.hidden_size} is not divisible by num_attention_heads="
                f"{self.num_attention_heads}; pick a hidden_size that is a multiple of the head count (the paper "
                "uses 64 = 4 heads x 16)."
            )
        for name in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{tower} {name} must be >= 1, got {getattr(self, name)}.")
        for name in ("attention_dropout", "hidden_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{tower} {name} must be in [0, 1), got {getattr(self, name)}.")


@strict
class MVaEMaVisionConfig(MVaEMaTowerConfig):
    r"""
    Configuration of the MVaEMa image encoder, a pre-LayerNorm ViT whose first token ([CLS]) summarises the image.
    The shared fields are those of [`MVaEMaTowerConfig`].

    Args:
        image_size (`int`, defaults to 224): paper (micrographs are resized to 224 x 224).
        patch_size (`int`, defaults to 32): paper (non-overlapping 32 px patches, so 7 x 7 = 49 patches + [CLS]).
        num_channels (`int`, defaults to 3): RGB; greyscale micrographs are replicated by the processor.
    """

    model_type = "mvaema_vision_model"
    base_config_key = "vision_config"

    image_size: int = 224
    patch_size: int = 32
    num_channels: int = 3

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    def validate_architecture(self):
        super().validate_architecture()
        if self.image_size % self.patch_size != 0:
            raise ValueError(
                f"vision_config image_size={self.image_size} is not divisible by patch_size={self.patch_size}; "
                "patches must tile the image (the paper uses 224 / 32 = 7)."
            )


@strict
class MVaEMaTextConfig(MVaEMaTowerConfig):
    r"""
    Configuration of the MVaEMa text stack. One stack of `num_hidden_layers` layers serves three modes: the unimodal
    text encoder (bidirectional self-attention), the image-grounded encoder (plus cross-attention to the image) and the
    answer decoder (causal self-attention plus the same cross-attention and feed-forward weights). The shared fields
    are those of [`MVaEMaTowerConfig`].

    Args:
        vocab_size (`int`, defaults to 8192): size of the WordPiece vocabulary trained on the corpus; set it from the
            tokenizer (`MVaEMaConfig.from_tokenizer`).
        max_position_embeddings (`int`, defaults to 128): covers the processor's 48 question and 64 answer tokens.
    """

    model_type = "mvaema_text_model"
    base_config_key = "text_config"

    vocab_size: int = 8192
    max_position_embeddings: int = 128

    def validate_architecture(self):
        super().validate_architecture()
        if self.vocab_size < 8:
            raise ValueError(
                f"text_config vocab_size={self.vocab_size} cannot hold the 7 special tokens plus text; set it from "
                "the tokenizer with MVaEMaConfig.from_tokenizer(tokenizer)."
            )


@strict
class MVaEMaConfig(PreTrainedConfig):
    r"""
    Configuration of [`MVaEMaForQuestionAnswering`].

    Args:
        vision_config (`dict` or `MVaEMaVisionConfig`), text_config (`dict` or `MVaEMaTextConfig`): the two towers.
        projection_dim (`int`, defaults to 64): size of the shared image-text embedding space used by ITC.
        itc_loss_weight, itm_loss_weight, lm_loss_weight (`float`, default 1.0): the total loss is
            `itc_loss_weight * loss_itc + itm_loss_weight * loss_itm + lm_loss_weight * loss_lm` (joint optimisation
            of all objectives, as in the paper).
        temperature_init (`float`, defaults to 0.07): initial ITC softmax temperature (learnable), kept within
            [`temperature_min`, `temperature_max`] = [0.001, 0.5] when used.
        itm_negatives (`str`, defaults to `"uniform"`): how ITM picks its negatives while training: `"uniform"`
            any other micrograph of the batch (and any other micrograph's text), `"sample"` draws them from the
            softmax of the ITC similarities (BLIP's hard negatives), `"hardest"` takes the most similar non-matching
            one (deterministic). In eval mode negatives are the hardest (`"uniform"`: the first other), so validation
            losses are reproducible. Hard negatives assume no other image of the batch fits the text; on a corpus
            whose texts mostly name the category, ITC's most similar images are micrographs of the same category,
            which nearly do. Measured on the built-in corpus (fold 0, 12 epochs), ITM with `"sample"` stayed at
            chance for the whole run (loss 0.636, the entropy of its 1-in-3 positives: a constant logit), so it never
            made the grounded encoder read the image; with `"uniform"` it learns (0.45-0.50) and the answers owe more
            to the image (docs/results.md).
        itm_pairs_per_image (`int`, defaults to 1): how many of each micrograph's question/answer pairs the ITM loss
            scores per batch, each with its hard negative image and hard negative text (3 grounded-encoder sequences per
            pair); 0 scores every pair, as BLIP does with one caption per image. Batches group several questions per
            image (`questions_per_image` in the training script), so scoring every pair would run the grounded encoder
            on 3 x batch sequences, most of a training step, while its positives would repeat one image several times.
            With 1, ITM sees each micrograph of the batch once as a positive, against negatives still drawn from the
            whole batch (every image and every answer); the pair is drawn at random while training (so every pair
            takes its turn over the epochs) and is the first of each micrograph in eval mode (reproducible validation
            losses). The ITM objective stays the paper's binary cross-entropy over matching and non-matching pairs.
        itm_pairs_per_batch (`int`, defaults to 16): at most this many of those pairs per batch (per process), drawn
            at random while training, the first ones in eval mode; 0: no limit. Batches of one question per micrograph
            hold 48 micrographs, and ITM on every one of them would cost more than the rest of the step: 16 positives
            (48 grounded sequences with their negatives) keep ITM at about the cost it has with four questions per
            micrograph, while ITC still contrasts every micrograph of the batch.
        decoder_memory (`str`, defaults to `"image_and_question"`): what the answer decoder's cross-attention (the
            grounded encoder's, shared) reads. `"image_and_question"`: the image patch states (as the grounded encoder
            reads them) followed by the fused question states, so every answer token is predicted from the image and
            the question, P(w_i | w_<i, I, q) in the paper's words. `"question"`: the fused question states only
            (BLIP's VQA decoder): the image reaches the answer only through the question tokens, and measured on the
            built-in corpus the answers then hardly depend on the image (docs/results.md, the blank-image control).
            The paper's text has the decoder read the image through the encoder's cross-attention; reading the image
            patches alone would leave it without the question, so both are read.
        contrastive_max_length (`int`, defaults to 48): ITC and ITM read a pair's text "[CLS] caption question [SEP]
            answer" up to this many tokens (the grounded encoder's copy starts with [ENC]). 48 holds the caption, the
            question and the answer's first sentence (which names what is specific to the image); the ITM pass runs
            several sequences per step, so this bounds a large share of training cost.
        use_itc (`bool`): image-text contrastive loss. `False` is the paper's "w/o ITC": no projections, no
            temperature, ITM negatives drawn uniformly among the other images of the batch, `classify(method="itc")`
            unavailable.
        use_itm (`bool`): image-text matching loss ("w/o CTC" when `False`): no ITM head,
            `classify(method="itm")` unavailable.
        use_self_attention (`bool`): bidirectional self-attention of the text encoder and of the image-grounded encoder
            ("w/o SA" when `False`; the decoder keeps its causal self-attention). Without it a token never sees another
            token of its own text: in the grounded encoder tokens only read the image through cross-attention, the
            unimodal text encoder becomes a per-token feed-forward network (a bag of words), and the ITC/ITM text
            embedding is the masked mean of the token states instead of the first token's state (which could not
            summarise anything).
        use_cross_attention (`bool`): cross-attention in every text layer ("w/o CA" when `False`). Without it the
            other sequence becomes a prefix of the self-attention instead, so the model is not blind: the grounded
            encoder's bidirectional self-attention also attends to the image patch states (brought to the text width
            by `image_memory_projection`, as for cross-attention; keys/values from the self-attention's own
            projections), and the decoder's causal self-attention attends to the fused question states the same way;
            one softmax spans prefix and text. The cache keeps the prefix keys/values where cross-attention keeps
            its own.
        use_causal_self_attention (`bool`): the decoder's causal self-attention ("w/o CSA" when `False`). Without it
            each answer position sees only its own token, its position and (through cross-attention) the fused
            question states, i.e. the decoder predicts the next word from the current word, not the words before it.
        tie_word_embeddings (`bool`, defaults to `True`): the language-model head reuses the word embeddings.
        pad_token_id, unk_token_id, cls_token_id, sep_token_id, mask_token_id, enc_token_id, dec_token_id (`int`):
            ids of [PAD], [UNK], [CLS], [SEP], [MASK], [ENC], [DEC]; the defaults are the order in which
            `train_wordpiece_tokenizer` creates them. [SEP] ends an answer (generation's end-of-sequence token), [ENC]
            replaces [CLS] at position 0 in the image-grounded encoder and [DEC] starts the decoder.
    """

    model_type = "mvaema"
    sub_configs_defaults = {"vision_config": MVaEMaVisionConfig, "text_config": MVaEMaTextConfig}

    vision_config: dict | PreTrainedConfig | None = None
    text_config: dict | PreTrainedConfig | None = None
    projection_dim: int = 64
    itc_loss_weight: float | int = 1.0
    itm_loss_weight: float | int = 1.0
    lm_loss_weight: float | int = 1.0
    temperature_init: float = 0.07
    temperature_min: float = 0.001
    temperature_max: float = 0.5
    itm_negatives: str = "uniform"
    itm_pairs_per_image: int = 1
    itm_pairs_per_batch: int = 16
    contrastive_max_length: int = 48
    decoder_memory: str = "image_and_question"
    use_itc: bool = True
    use_itm: bool = True
    use_self_attention: bool = True
    use_cross_attention: bool = True
    use_causal_self_attention: bool = True
    tie_word_embeddings: bool = True
    is_encoder_decoder: bool = True
    pad_token_id: int = 0
    unk_token_id: int = 1
    cls_token_id: int = 2
    sep_token_id: int = 3
    mask_token_id: int = 4
    enc_token_id: int = 5
    dec_token_id: int = 6

    @classmethod
    def for_ablation(cls, ablation: str | None, **kwargs) -> "MVaEMaConfig":
        """Config of the full model (`ablation=None`) or of one of the paper's ablated variants.

        `ablation` is one of `"no_itc"`, `"no_itm"`, `"no_sa"`, `"no_ca"`, `"no_csa"` (the paper's w/o ITC, w/o CTC,
        w/o SA, w/o CA, w/o CSA); `kwargs` are further config fields.
        """
        if ablation is None:
            return cls(**kwargs)
        if ablation not in ABLATIONS:
            raise ValueError(
                f"unknown ablation {ablation!r}; use one of {sorted(ABLATIONS)} (or None for the full model)."
            )
        return cls(**{**kwargs, ABLATIONS[ablation]: False})

    @classmethod
    def from_tokenizer(cls, tokenizer, ablation: str | None = None, **kwargs) -> "MVaEMaConfig":
        """Config whose vocabulary size and special-token ids match `tokenizer` (see `train_wordpiece_tokenizer`)."""
        ids = dict(zip(SPECIAL_TOKENS, tokenizer.convert_tokens_to_ids(list(SPECIAL_TOKENS.values())), strict=True))
        missing = [
            SPECIAL_TOKENS[name]
            for name, token_id in ids.items()
            if token_id is None or (token_id == tokenizer.unk_token_id and name != "unk_token_id")
        ]
        if missing:
            raise ValueError(
                f"the tokenizer has no {missing} token(s); build it with "
                "processing_mvaema.train_wordpiece_tokenizer, which adds [PAD] [UNK] [CLS] [SEP] [MASK] [ENC] [DEC]."
            )
        text_config = {**kwargs.pop("text_config", {}), "vocab_size": len(tokenizer)}
        return cls.for_ablation(ablation, text_config=text_config, **ids, **kwargs)

    @property
    def ablation(self) -> str | None:
        """The ablation id these switches amount to: None (full model), one of `ABLATIONS`, or "custom"."""
        disabled = [ablation for ablation, switch in ABLATIONS.items() if not getattr(self, switch)]
        if not disabled:
            return None
        return disabled[0] if len(disabled) == 1 else "custom"

    def validate_losses(self):
        weights = {
            "itc_loss_weight": self.itc_loss_weight,
            "itm_loss_weight": self.itm_loss_weight,
            "lm_loss_weight": self.lm_loss_weight,
        }
        negative = {name: weight for name, weight in weights.items() if weight < 0}
        if negative:
            raise ValueError(f"loss weights must be >= 0, got {negative}.")
        active = (self.use_itc and self.itc_loss_weight > 0) or (self.use_itm and self.itm_loss_weight > 0)
        if not active and self.lm_loss_weight == 0:
            raise ValueError(
                "every loss is disabled (use_itc/use_itm off or weight 0, lm_loss_weight 0); "
                "enable at least one objective."
            )
        if self.itm_negatives not in ITM_NEGATIVE_MODES:
            raise ValueError(f"itm_negatives={self.itm_negatives!r}; use one of {ITM_NEGATIVE_MODES}.")
        if not 0 < self.temperature_min <= self.temperature_init <= self.temperature_max:
            raise ValueError(
                "need 0 < temperature_min <= temperature_init <= temperature_max, got "
                f"{self.temperature_min}, {self.temperature_init}, {self.temperature_max}."
            )
        if self.itm_pairs_per_image < 0:
            raise ValueError(f"itm_pairs_per_image must be >= 0 (0 = every pair), got {self.itm_pairs_per_image}.")
        if self.itm_pairs_per_batch < 0:
            raise ValueError(f"itm_pairs_per_batch must be >= 0 (0 = no limit), got {self.itm_pairs_per_batch}.")
        if self.projection_dim < 1 or self.contrastive_max_length < 1:
            raise ValueError(
                "projection_dim and contrastive_max_length must be >= 1, got "
                f"{self.projection_dim} and {self.contrastive_max_length}."
            )

    def validate_decoder_memory(self):
        if self.decoder_memory not in DECODER_MEMORIES:
            raise ValueError(f"decoder_memory={self.decoder_memory!r}; use one of {DECODER_MEMORIES}.")

    def validate_ablation_switches(self):
        if not self.use_cross_attention and not self.use_self_attention:
            raise ValueError(
                "use_cross_attention=False and use_self_attention=False together leave the "
                "image no way into the grounded encoder (without cross-attention the image enters as a prefix of "
                "the self-attention); disable one of them, not both."
            )
        if not self.use_cross_attention and not self.use_causal_self_attention:
            raise ValueError(
                "use_cross_attention=False and use_causal_self_attention=False together "
                "leave the decoder no way to read the question and image; disable one of them, not both."
            )

    def validate_token_ids(self):
        ids = {name: getattr(self, name) for name in SPECIAL_TOKENS}
        vocab_size = self.text_config.vocab_size
        outside = {name: token_id for name, token_id in ids.items() if not 0 <= token_id < vocab_size}
        if outside:
            raise ValueError(
                f"special token ids {outside} are outside the vocabulary "
                f"(text_config.vocab_size={vocab_size}); build the config with MVaEMaConfig.from_tokenizer(tokenizer)."
            )
        if len(set(ids.values())) != len(ids):
            raise ValueError(f"special token ids must be distinct, got {ids}.")


MVaEMaConfig.register_for_auto_class()

__all__ = [
    "ABLATIONS",
    "DECODER_MEMORIES",
    "PAPER_ABLATION_NAMES",
    "SPECIAL_TOKENS",
    "MVaEMaConfig",
    "MVaEMaTextConfig",
    "MVaEMaTowerConfig",
    "MVaEMaVisionConfig",
]
