# Copyright 2026 The MVaEMa authors. Licensed under the Apache License, Version 2.0.
"""MVaEMa: a small BLIP-style vision-language model for electron micrographs, trained with ITC + ITM + LM.

Layout (the paper's Figure 1, BLIP's VQA design):

    pixel_values [I, 3, 224, 224] -> vision tower (pre-LN ViT) -> image_embeds [I, 1 + patches, Hv]
    question [B, Lq] (+caption) -> grounded encoder (text stack, [ENC] at position 0, cross-attends to the image of
        each pair, chosen by `image_index`) -> fused question states [B, Lq, H]
    answer -> decoder (same text stack: causal self-attention + the same cross-attention and feed-forward weights,
        attending to the fused question states) -> logits [B, La, V]

The text stack is ONE list of `MVaEMaTextLayer`s, each holding a bidirectional self-attention, a causal
self-attention, one cross-attention and one feed-forward network; the mode decides which attentions run. The
contrastive (ITC) and matching (ITM) objectives read the answer, the image-specific text.
"""

from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from transformers import GenerationConfig, GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.cache_utils import DynamicCache, EncoderDecoderCache
from transformers.utils import ModelOutput

from .configuration_mvaema import MVaEMaConfig, MVaEMaTextConfig, MVaEMaVisionConfig

CLASSIFY_METHODS = ("itc", "itm", "lm")
VQA_AUTO_CLASS = "AutoModelForVisualQuestionAnswering"


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
    """

    last_hidden_state: torch.FloatTensor | None = None
    image_embeds: torch.FloatTensor | None = None
    image_index: torch.LongTensor | None = None


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
            keys/values read from the fused question states, for incremental decoding.
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


@dataclass
class TextMemory:
    """What a text sequence attends to besides itself: image patch states or fused question states.

    states: `(num_memories, memory_length, text_hidden_size)`; mask: `(num_sequences, memory_length)` bool (True =
    attend) or None; index: `(num_sequences,)` row of `states` each sequence reads, or None for row i -> sequence i.
    Keys/values are projected once per memory row and then gathered, so an image shared by many questions is
    projected once.
    """

    states: torch.Tensor
    mask: torch.Tensor | None = None
    index: torch.Tensor | None = None


@dataclass
class MemoryKeyValues:
    key: torch.Tensor  # (num_sequences, heads, memory_length, head_dim)
    value: torch.Tensor
    mask: torch.Tensor | None  # (num_sequences, memory_length) bool


def dropout(probability: float) -> nn.Module:
    """Dropout, or nothing at all when the probability is 0 (the default): one module call less per block, which
    shows in token-by-token generation."""
    return nn.Dropout(probability) if probability > 0 else nn.Identity()


def split_heads(states: torch.Tensor, num_heads: int) -> torch.Tensor:
    """(N, L, heads * d) -> (N, heads, L, d)"""
    return states.unflatten(-1, (num_heads, -1)).transpose(1, 2)


def merge_heads(states: torch.Tensor) -> torch.Tensor:
    """(N, heads, L, d) -> (N, L, heads * d)"""
    return states.transpose(1, 2).flatten(2)


def add_on_rows(hidden_states: torch.Tensor, block: nn.Module, rows: torch.Tensor | None) -> torch.Tensor:
    """`hidden_states + block(hidden_states)` for `(N, L, hidden)` states, with `block` run only on `rows` (indices
    into the N * L flattened positions) when given; the other positions keep their input. Padding makes up a third
    of a training batch's text positions, and position-wise blocks need not compute what nobody reads."""
    if rows is None:
        return hidden_states + block(hidden_states)
    flat = hidden_states.flatten(0, 1)
    # Under autocast `block` answers in the autocast dtype; the residual stream keeps its own, as `+` above does.
    return flat.index_add(0, rows, block(flat.index_select(0, rows)).to(flat.dtype)).view_as(hidden_states)


def self_attention_mask(
    query_length: int,
    key_length: int,
    is_causal: bool,
    key_mask: torch.Tensor | None,
    prefix_mask: torch.Tensor | None,
    device: torch.device,
) -> torch.Tensor:
    """Boolean sdpa mask (True = may attend) of shape `(N or 1, 1, query_length or 1, prefix_length + key_length)`.

    `key_length` counts cached plus new tokens; the queries are the last `query_length` of them. `key_mask`
    `(N, key_length)` marks padding; `prefix_mask` `(N, prefix_length)` covers keys placed before the tokens (the
    image or question prefix when cross-attention is ablated). A query with no visible key (a masked first token)
    gets zeros from sdpa.
    """
    if key_mask is not None:
        allowed = key_mask[:, None, None, :]
    else:
        allowed = torch.ones(1, 1, 1, key_length, dtype=torch.bool, device=device)
    if is_causal:
        keys = torch.arange(key_length, device=device)
        queries = torch.arange(key_length - query_length, key_length, device=device)[:, None]
        allowed = allowed & (keys <= queries)
    if prefix_mask is None:
        return allowed
    rows, queries_shown = max(prefix_mask.shape[0], allowed.shape[0]), allowed.shape[2]
    prefix = prefix_mask[:, None, None, :].expand(rows, 1, queries_shown, -1)
    return torch.cat([prefix, allowed.expand(rows, 1, queries_shown, -1)], dim=-1)


class MVaEMaSelfAttention(nn.Module):
    """Pre-LayerNorm multi-head self-attention with one fused query/key/value projection, run by torch's sdpa.

    Keys/values of a prefix (`MemoryKeyValues`) are attended together with the tokens, in one softmax: that is how the
    image or the question enters when cross-attention is ablated.
    """

    def __init__(self, config: MVaEMaTextConfig | MVaEMaVisionConfig, is_causal: bool):
        super().__init__()
        self.is_causal = is_causal
        self.num_heads = config.num_attention_heads
        self.attention_dropout = config.attention_dropout
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.qkv_proj = nn.Linear(config.hidden_size, 3 * config.hidden_size)
        self.out_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout = dropout(config.hidden_dropout)

    def key_values(self, states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of prefix states `(M, Lm, hidden)` from this attention's own key/value weights."""
        hidden_size = self.out_proj.in_features
        key_value = F.linear(states, self.qkv_proj.weight[hidden_size:], self.qkv_proj.bias[hidden_size:])
        key, value = key_value.chunk(2, dim=-1)
        return split_heads(key, self.num_heads), split_heads(value, self.num_heads)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        prefix: MemoryKeyValues | None = None,
        cache: DynamicCache | None = None,
        layer_idx: int = 0,
    ) -> torch.Tensor:
        """hidden_states `(N, L, hidden)`; attention_mask from `self_attention_mask` (None: all keys visible, or
        causal when `self.is_causal`); cache: this stack's self-attention cache. Returns `(N, L, hidden)`."""
        query, key, value = self.qkv_proj(self.layer_norm(hidden_states)).chunk(3, dim=-1)
        query, key, value = (split_heads(states, self.num_heads) for states in (query, key, value))
        # sdpa applies causal masking itself when queries and keys are the same positions: no cached past, no prefix.
        is_causal = self.is_causal and attention_mask is None and prefix is None
        if cache is not None:
            is_causal = is_causal and cache.get_seq_length(layer_idx) == 0
            key, value = cache.update(key, value, layer_idx)
        if prefix is not None:
            key = torch.cat([prefix.key, key], dim=2)
            value = torch.cat([prefix.value, value], dim=2)
        attended = F.scaled_dot_product_attention(
            query,
            key,
            value,
            attn_mask=attention_mask,
            dropout_p=self.attention_dropout if self.training else 0.0,
            is_causal=is_causal,
        )
        return self.dropout(self.out_proj(merge_heads(attended)))


class MVaEMaCrossAttention(nn.Module):
    """Pre-LayerNorm multi-head attention from text tokens to memory states (image patches or fused question)."""

    def __init__(self, config: MVaEMaTextConfig):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.attention_dropout = config.attention_dropout
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.q_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.kv_proj = nn.Linear(config.hidden_size, 2 * config.hidden_size)
        self.out_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout = dropout(config.hidden_dropout)

    def key_values(self, states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of memory states `(M, Lm, hidden)`."""
        key, value = self.kv_proj(states).chunk(2, dim=-1)
        return split_heads(key, self.num_heads), split_heads(value, self.num_heads)

    def forward(self, hidden_states: torch.Tensor, memory: MemoryKeyValues) -> torch.Tensor:
        """hidden_states `(N, L, hidden)` -> `(N, L, hidden)`."""
        query = split_heads(self.q_proj(self.layer_norm(hidden_states)), self.num_heads)
        mask = None if memory.mask is None else memory.mask[:, None, None, :]
        attended = F.scaled_dot_product_attention(
            query,
            memory.key,
            memory.value,
            attn_mask=mask,
            dropout_p=self.attention_dropout if self.training else 0.0,
        )
        return self.dropout(self.out_proj(merge_heads(attended)))


class MVaEMaFeedForward(nn.Module):
    """Pre-LayerNorm two-layer MLP."""

    def __init__(self, config: MVaEMaTextConfig | MVaEMaVisionConfig):
        super().__init__()
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.activation = ACT2FN[config.hidden_act]
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)
        self.dropout = dropout(config.hidden_dropout)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.fc2(self.activation(self.fc1(self.layer_norm(hidden_states)))))


class MVaEMaVisionEmbeddings(nn.Module):
    """Non-overlapping patches (a strided convolution) + a learnt [CLS] token + learnt absolute positions."""

    def __init__(self, config: MVaEMaVisionConfig):
        super().__init__()
        self.config = config
        self.patch_embedding = nn.Conv2d(
            config.num_channels, config.hidden_size, kernel_size=config.patch_size, stride=config.patch_size
        )
        self.class_embedding = nn.Parameter(torch.empty(config.hidden_size))
        self.position_embedding = nn.Parameter(torch.empty(1, config.num_patches + 1, config.hidden_size))

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """pixel_values `(I, channels, image_size, image_size)` -> `(I, 1 + num_patches, hidden)`."""
        expected = (self.config.num_channels, self.config.image_size, self.config.image_size)
        if pixel_values.ndim != 4 or tuple(pixel_values.shape[1:]) != expected:
            raise ValueError(
                f"modeling_mvaema.py: pixel_values must have shape [num_images, {', '.join(map(str, expected))}] "
                f"(vision_config), got {list(pixel_values.shape)}; prepare images with MVaEMaProcessor."
            )
        patches = self.patch_embedding(pixel_values.to(self.patch_embedding.weight.dtype)).flatten(2).transpose(1, 2)
        class_token = self.class_embedding.expand(patches.shape[0], 1, -1)
        return torch.cat([class_token, patches], dim=1) + self.position_embedding


class MVaEMaVisionLayer(nn.Module):
    def __init__(self, config: MVaEMaVisionConfig):
        super().__init__()
        self.self_attention = MVaEMaSelfAttention(config, is_causal=False)
        self.feed_forward = MVaEMaFeedForward(config)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden_states = hidden_states + self.self_attention(hidden_states)
        return hidden_states + self.feed_forward(hidden_states)


class MVaEMaVisionModel(nn.Module):
    """Pre-LayerNorm ViT. Output `(I, 1 + num_patches, hidden)` after one final LayerNorm; row 0 is the [CLS] state
    that ITC projects (no second LayerNorm on the pooled token)."""

    def __init__(self, config: MVaEMaVisionConfig):
        super().__init__()
        self.embeddings = MVaEMaVisionEmbeddings(config)
        self.dropout = dropout(config.hidden_dropout)
        self.layers = nn.ModuleList(MVaEMaVisionLayer(config) for _ in range(config.num_hidden_layers))
        self.final_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        hidden_states = self.dropout(self.embeddings(pixel_values))
        for layer in self.layers:
            hidden_states = layer(hidden_states)
        return self.final_layer_norm(hidden_states)


class MVaEMaTextEmbeddings(nn.Module):
    def __init__(self, config: MVaEMaTextConfig, pad_token_id: int):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.dropout = dropout(config.hidden_dropout)

    def forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.word_embeddings(input_ids) + self.position_embeddings(position_ids))


class MVaEMaTextLayer(nn.Module):
    """One layer of the shared text stack.

    Modes (chosen per call, the weights are the same):
      - unimodal text encoder: `self_attention` (bidirectional) + `feed_forward`;
      - image-grounded encoder: `self_attention` + `cross_attention` (to image patches) + `feed_forward`;
      - answer decoder: `causal_self_attention` + the SAME `cross_attention` (to the fused question) + the SAME
        `feed_forward`.
    An ablated attention is absent (None). Without cross-attention the memory becomes a prefix of the self-attention.
    """

    def __init__(self, config: MVaEMaConfig, layer_idx: int):
        super().__init__()
        text_config = config.text_config
        self.layer_idx = layer_idx
        self.self_attention = MVaEMaSelfAttention(text_config, is_causal=False) if config.use_self_attention else None
        self.causal_self_attention = (
            MVaEMaSelfAttention(text_config, is_causal=True) if config.use_causal_self_attention else None
        )
        self.cross_attention = MVaEMaCrossAttention(text_config) if config.use_cross_attention else None
        self.feed_forward = MVaEMaFeedForward(text_config)

    def memory_key_values(
        self, memory: TextMemory, reader: nn.Module, cache: EncoderDecoderCache | None
    ) -> MemoryKeyValues:
        """Keys/values of the memory for this layer; computed once per generation and then read from the cache."""
        if cache is not None and cache.is_updated.get(self.layer_idx):
            layer_cache = cache.cross_attention_cache.layers[self.layer_idx]
            return MemoryKeyValues(layer_cache.keys, layer_cache.values, memory.mask)
        key, value = reader.key_values(memory.states)
        if memory.index is not None:
            key, value = key.index_select(0, memory.index), value.index_select(0, memory.index)
        if cache is not None:
            key, value = cache.cross_attention_cache.update(key, value, self.layer_idx)
            cache.is_updated[self.layer_idx] = True
        return MemoryKeyValues(key, value, memory.mask)

    def forward(
        self,
        hidden_states: torch.Tensor,
        self_attention_mask: torch.Tensor | None,
        is_causal: bool,
        memory: TextMemory | None,
        cache: EncoderDecoderCache | None = None,
        feed_forward_rows: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """hidden_states `(N, L, hidden)` -> `(N, L, hidden)`; `feed_forward_rows`: see `MVaEMaTextModel.forward`."""
        self_attention = self.causal_self_attention if is_causal else self.self_attention
        memory_key_values = None
        if memory is not None:
            reader = self.cross_attention if self.cross_attention is not None else self_attention
            memory_key_values = self.memory_key_values(memory, reader, cache)
        if self_attention is not None:
            prefix = memory_key_values if self.cross_attention is None else None
            self_cache = None if cache is None else cache.self_attention_cache
            hidden_states = hidden_states + self_attention(
                hidden_states, self_attention_mask, prefix, self_cache, self.layer_idx
            )
        if self.cross_attention is not None and memory_key_values is not None:
            hidden_states = hidden_states + self.cross_attention(hidden_states, memory_key_values)
        return add_on_rows(hidden_states, self.feed_forward, feed_forward_rows)


class MVaEMaTextModel(nn.Module):
    """The shared text stack: embeddings, `MVaEMaTextLayer`s, one final LayerNorm.

    `forward(input_ids, attention_mask)` is the unimodal text encoder; with `memory` it is the image-grounded encoder;
    with `is_causal=True` (and memory) it is the answer decoder, which may use a cache.
    """

    def __init__(self, config: MVaEMaConfig):
        super().__init__()
        self.config = config
        self.embeddings = MVaEMaTextEmbeddings(config.text_config, config.pad_token_id)
        self.layers = nn.ModuleList(MVaEMaTextLayer(config, i) for i in range(config.text_config.num_hidden_layers))
        self.final_layer_norm = nn.LayerNorm(config.text_config.hidden_size, eps=config.text_config.layer_norm_eps)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        memory: TextMemory | None = None,
        is_causal: bool = False,
        position_ids: torch.Tensor | None = None,
        cache: EncoderDecoderCache | None = None,
        read_positions: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """input_ids `(N, L)`; attention_mask `(N, past + L)` (1 = token, 0 = padding); returns `(N, L, hidden)`.

        read_positions `(N, L)` (bool): the positions whose states are read, by the caller or by other positions; the
        feed-forward networks skip the others, whose returned states are then unspecified. Default: the tokens of a
        bidirectional stack's attention_mask (padding is hidden from every query, and poolings leave it out); every
        position of the causal decoder.
        """
        past_length = 0 if cache is None else cache.get_seq_length()
        length = input_ids.shape[1]
        if position_ids is None:
            if past_length + length > self.config.text_config.max_position_embeddings:
                raise ValueError(
                    f"modeling_mvaema.py: a text of {past_length + length} tokens exceeds "
                    f"text_config.max_position_embeddings={self.config.text_config.max_position_embeddings}; "
                    "truncate it (processor max_question_length / max_answer_length, generate max_new_tokens)."
                )
            position_ids = torch.arange(past_length, past_length + length, device=input_ids.device)[None]
        if read_positions is None and not is_causal:
            read_positions = attention_mask
        feed_forward_rows = None
        if read_positions is not None and not bool(read_positions.all()):
            feed_forward_rows = read_positions.flatten().nonzero().squeeze(1)
        hidden_states = self.embeddings(input_ids, position_ids)
        attention_mask = self._self_attention_mask(attention_mask, memory, is_causal, length, past_length)
        for layer in self.layers:
            hidden_states = layer(hidden_states, attention_mask, is_causal, memory, cache, feed_forward_rows)
        return self.final_layer_norm(hidden_states)

    def _self_attention_mask(
        self, attention_mask: torch.Tensor | None, memory: TextMemory | None, is_causal: bool, length: int, past: int
    ) -> torch.Tensor | None:
        """The sdpa mask shared by all layers, or None when sdpa needs none (no padding, no prefix, and either
        bidirectional or plain causal attention that sdpa applies itself)."""
        key_mask = None if attention_mask is None or bool(attention_mask.all()) else attention_mask.bool()
        prefix_mask = None
        if memory is not None and not self.config.use_cross_attention:
            prefix_mask = memory.mask
            if prefix_mask is None:
                rows = memory.states.shape[0] if memory.index is None else memory.index.shape[0]
                prefix_mask = memory.states.new_ones(rows, memory.states.shape[1], dtype=torch.bool)
        if key_mask is None and prefix_mask is None and (not is_causal or past == 0 or length == 1):
            return None
        device = self.embeddings.word_embeddings.weight.device
        return self_attention_mask(length, past + length, is_causal, key_mask, prefix_mask, device)


def gather_across_ranks(tensor: torch.Tensor, with_grad: bool) -> torch.Tensor:
    """Rows of `tensor` from every rank, concatenated in rank order (the identity without torch.distributed).

    Ranks may hold different numbers of rows (e.g. of distinct images), so rows are padded to the largest count for
    the collective and trimmed afterwards. With `with_grad`, gradients flow back to each rank's own rows.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
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


def contrastive_term(logits: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of each row of `logits` against a uniform distribution over its positives (bool, same shape);
    rows without a positive are left out. With exactly one positive per row this is the usual InfoNCE term."""
    has_positive = positives.any(dim=1)
    targets = positives[has_positive].float()
    targets = targets / targets.sum(dim=1, keepdim=True)
    return -(targets * logits[has_positive].log_softmax(dim=1)).sum(dim=1).mean()


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
    the micrograph (globally, see `MVaEMaForQuestionAnswering._image_keys`), so all questions about one micrograph are
    its positives, never its negatives. Text-to-image and image-to-text terms each use soft targets spread evenly over
    the positives; with one text per image this is the paper's L_ITC = (L_I2T + L_T2I) / 2. Under torch.distributed,
    with `across_ranks`, the features of all ranks are gathered (with gradients) and each rank scores its own rows
    against all of them.
    """
    gather = gather_across_ranks if across_ranks else lambda tensor, with_grad: tensor
    all_images = gather(image_features, with_grad=True)
    all_texts = gather(text_features, with_grad=True)
    all_image_keys = gather(image_keys, with_grad=False)
    all_text_keys = gather(text_keys, with_grad=False)
    text_to_image = contrastive_term(text_features @ all_images.T / temperature, text_keys[:, None] == all_image_keys)
    image_to_text = contrastive_term(image_features @ all_texts.T / temperature, image_keys[:, None] == all_text_keys)
    return (text_to_image + image_to_text) / 2


def pick_negatives(scores: torch.Tensor, positive: torch.Tensor, sample: bool) -> torch.Tensor:
    """Per row, one column that is not `positive` (bool, same shape): drawn from softmax(scores) or the best score."""
    scores = scores.masked_fill(positive, float("-inf"))
    if sample:
        return torch.multinomial(scores.softmax(dim=1), 1).squeeze(1)
    return scores.argmax(dim=1)


def pairs_per_key(keys: torch.Tensor, limit: int, shuffle: bool) -> torch.Tensor:
    """Ascending indices of at most `limit` entries per distinct value of `keys` `(N,)`: random ones when `shuffle`,
    else the first ones in order."""
    positions = torch.arange(len(keys), device=keys.device)
    order = torch.randperm(len(keys), device=keys.device) if shuffle else positions
    sorted_keys, by_key = keys[order].sort(stable=True)
    rank_within_key = positions - torch.searchsorted(sorted_keys, sorted_keys)
    return order[by_key[rank_within_key < limit]].sort().values


class MVaEMaEncoder:
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
        elif isinstance(module, MVaEMaForQuestionAnswering) and module.temperature is not None:
            init.constant_(module.temperature, self.config.temperature_init)

    def _reads_images(self, module: nn.Module) -> bool:
        """Whether `module` belongs to the vision tower or is the ITC image projection."""
        return module is getattr(self, "vision_projection", None) or any(
            module is member for member in self.vision_model.modules()
        )


class MVaEMaForQuestionAnswering(MVaEMaPreTrainedModel, GenerationMixin):
    """MVaEMa: image encoder + shared text stack + heads for ITC (projections, temperature), ITM and LM.

    Training: `model(pixel_values, input_ids, attention_mask, labels, image_index)` returns the three losses and their
    weighted sum. Inference: `model.generate(pixel_values=..., input_ids=..., attention_mask=...)` answers questions;
    `model.classify(...)` ranks label texts for each image.
    """

    _tied_weights_keys = {"lm_head.weight": "text_model.embeddings.word_embeddings.weight"}

    def __init__(self, config: MVaEMaConfig):
        super().__init__(config)
        vision_size, text_size = config.vision_config.hidden_size, config.text_config.hidden_size
        self.vision_model = MVaEMaVisionModel(config.vision_config)
        # The text stack reads the image at its own width, through cross-attention or (w/o CA) as a prefix.
        self.image_memory_projection = nn.Linear(vision_size, text_size)
        self.text_model = MVaEMaTextModel(config)
        self.lm_head = nn.Linear(text_size, config.text_config.vocab_size)
        self.vision_projection = nn.Linear(vision_size, config.projection_dim) if config.use_itc else None
        self.text_projection = nn.Linear(text_size, config.projection_dim) if config.use_itc else None
        self.temperature = nn.Parameter(torch.empty(())) if config.use_itc else None
        self.itm_head = nn.Linear(text_size, 1) if config.use_itm else None
        # `register_for_auto_class` maps one auto class; the VQA one is added to the saved auto_map by hand.
        model_reference = f"{type(self).__module__.rsplit('.', 1)[-1]}.{type(self).__name__}"
        config.auto_map = {**(getattr(config, "auto_map", None) or {}), VQA_AUTO_CLASS: model_reference}
        self.generation_config = GenerationConfig(
            decoder_start_token_id=config.dec_token_id,
            bos_token_id=config.dec_token_id,
            eos_token_id=config.sep_token_id,
            pad_token_id=config.pad_token_id,
            max_new_tokens=64,
            # Tiny models fall into loops; a repeated 4-gram is almost never right in a 8-40 word answer.
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
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.text_model.embeddings.word_embeddings

    def set_input_embeddings(self, value: nn.Embedding):
        self.text_model.embeddings.word_embeddings = value

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def set_output_embeddings(self, value: nn.Linear):
        self.lm_head = value

    def get_encoder(self, modality: str | None = None):
        """`MVaEMaEncoder` (image + question -> fused states); `modality="image"` gives the vision tower."""
        return self.vision_model if modality == "image" else MVaEMaEncoder(self)

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
        return self._encode(pixel_values, input_ids, self._text_mask(input_ids, attention_mask), image_index)

    def _encode(
        self,
        pixel_values: torch.Tensor | None,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        image_index: torch.Tensor | None,
    ) -> MVaEMaEncoderOutput:
        if pixel_values is None:
            raise ValueError("modeling_mvaema.py: pass pixel_values (or encoder_outputs from a previous encode()).")
        image_embeds = self.vision_model(pixel_values)
        self._check_image_index(image_index, image_embeds.shape[0], input_ids.shape[0])
        question_states = self._grounded_states(image_embeds, image_index, input_ids, attention_mask)
        if image_index is None:
            image_index = torch.arange(input_ids.shape[0], device=input_ids.device)
        return MVaEMaEncoderOutput(
            last_hidden_state=question_states, image_embeds=image_embeds, image_index=image_index
        )

    def _grounded_states(
        self,
        image_embeds: torch.Tensor,
        image_rows: torch.Tensor | None,
        text_ids: torch.Tensor,
        text_mask: torch.Tensor,
    ) -> torch.Tensor:
        """Image-grounded encoder: text i `(N, L)`, its [CLS] replaced by [ENC], attends to image `image_rows[i]`
        (image i when None); returns `(N, L, hidden)`. Each image's keys/values are projected once, however many
        texts read it."""
        memory = TextMemory(self.image_memory_projection(image_embeds), index=image_rows)
        return self.text_model(self._with_first_token(text_ids, self.config.enc_token_id), text_mask, memory)

    def _text_mask(
        self, text_ids: torch.Tensor | None, attention_mask: torch.Tensor | None, name: str = "input_ids"
    ) -> torch.Tensor:
        """Checks a [CLS]-led text batch and returns its attention mask (default: the non-[PAD] tokens)."""
        if text_ids is None:
            raise ValueError(f"modeling_mvaema.py: pass {name} (tokenized with MVaEMaProcessor).")
        if text_ids.ndim != 2 or text_ids.dtype != torch.long or text_ids.shape[1] == 0:
            raise ValueError(
                f"modeling_mvaema.py: {name} must be a non-empty 2-D LongTensor [batch, length], got "
                f"{text_ids.dtype} {list(text_ids.shape)}."
            )
        if attention_mask is None:
            attention_mask = text_ids.ne(self.config.pad_token_id).long()
        if attention_mask.shape != text_ids.shape:
            raise ValueError(
                f"modeling_mvaema.py: the attention mask of {name} has shape {list(attention_mask.shape)}, "
                f"expected {list(text_ids.shape)}."
            )
        if not bool((text_ids[:, 0] == self.config.cls_token_id).all()) or not bool(attention_mask[:, 0].all()):
            raise ValueError(
                f"modeling_mvaema.py: every row of {name} must start with an unmasked [CLS] token (id "
                f"{self.config.cls_token_id}); tokenize with MVaEMaProcessor, which adds it."
            )
        return attention_mask

    @staticmethod
    def _check_image_index(image_index: torch.Tensor | None, num_images: int, batch_size: int):
        if image_index is None:
            if num_images != batch_size:
                raise ValueError(
                    f"modeling_mvaema.py: {num_images} images for {batch_size} questions; pass image_index [batch] "
                    "(which image row each question uses) or one image per question."
                )
            return
        if image_index.shape != (batch_size,) or image_index.dtype != torch.long:
            raise ValueError(
                f"modeling_mvaema.py: image_index must be a LongTensor of shape [{batch_size}] (one image row per "
                f"question), got {image_index.dtype} {list(image_index.shape)}."
            )
        if batch_size and (int(image_index.min()) < 0 or int(image_index.max()) >= num_images):
            raise ValueError(
                f"modeling_mvaema.py: image_index values must lie in [0, {num_images - 1}] (rows of pixel_values), "
                f"got min {int(image_index.min())} and max {int(image_index.max())}."
            )

    @staticmethod
    def _with_first_token(input_ids: torch.Tensor, token_id: int) -> torch.Tensor:
        return torch.cat([input_ids.new_full((input_ids.shape[0], 1), token_id), input_ids[:, 1:]], dim=1)

    def _pool(self, states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Text embedding `(N, hidden)`: the first token's state, or (w/o self-attention, where that token sees
        nothing of the text) the mean over the unmasked tokens."""
        if self.config.use_self_attention:
            return states[:, 0]
        weights = attention_mask.unsqueeze(-1).to(states.dtype)
        return (states * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1)

    def _image_features(self, image_embeds: torch.Tensor) -> torch.Tensor:
        """L2-normalised ITC embedding `(I, projection_dim)` of each image's [CLS] state."""
        return F.normalize(self.vision_projection(image_embeds[:, 0]), dim=-1)

    def _text_features(self, text_ids: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
        """L2-normalised ITC embedding `(N, projection_dim)` of [CLS]-led texts, from the unimodal text encoder."""
        return F.normalize(self.text_projection(self._pool(self.text_model(text_ids, text_mask), text_mask)), dim=-1)

    def _itm_logits(
        self, text_ids: torch.Tensor, text_mask: torch.Tensor, image_embeds: torch.Tensor, image_rows: torch.Tensor
    ) -> torch.Tensor:
        """Matching logit `(N,)` of text i with image `image_rows[i]`, from the grounded encoder's [ENC] state."""
        states = self._grounded_states(image_embeds, image_rows, text_ids, text_mask)
        return self.itm_head(self._pool(states, text_mask)).squeeze(-1)

    # ------------------------------------------------------------------------------------------------ forward

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        attention_mask: torch.LongTensor | None = None,
        labels: torch.LongTensor | None = None,
        image_index: torch.LongTensor | None = None,
        image_keys: torch.LongTensor | None = None,
        decoder_input_ids: torch.LongTensor | None = None,
        decoder_attention_mask: torch.LongTensor | None = None,
        decoder_position_ids: torch.LongTensor | None = None,
        encoder_outputs: MVaEMaEncoderOutput | tuple | None = None,
        cache: EncoderDecoderCache | None = None,
        past_key_values: EncoderDecoderCache | None = None,
        use_cache: bool | None = None,
        return_logits: bool | None = None,
        return_dict: bool | None = None,
        num_items_in_batch: int | torch.Tensor | None = None,
        pair_prompt_ids: torch.LongTensor | None = None,
        pair_prompt_mask: torch.LongTensor | None = None,
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
            image_keys (`(B,)`): optional global id (>= 0, e.g. the dataset row) of each question's micrograph. Pairs
                with equal keys are ITC positives and never ITM negatives, also when one micrograph sits in several
                rows of `pixel_values` or on several processes; default: the row of `pixel_values`.
            decoder_input_ids (`(B, L)`): default `prepare_decoder_input_ids_from_labels(labels)`.
            decoder_attention_mask (`(B, past + L)`): only needed for padding that is not at the end.
            decoder_position_ids (`(B or 1, L)`): default continues after the cached decoder tokens.
            encoder_outputs (`MVaEMaEncoderOutput`): from `encode()`; skips the vision tower and grounded encoder.
            cache (`EncoderDecoderCache`), past_key_values: the decoder cache (`past_key_values` is the name used
                before transformers 5.24; pass one of them).
            use_cache (`bool`): return a cache for incremental decoding (default: True when a cache is passed).
            return_logits (`bool`): return the logits of every answer position. Default: yes, except in training mode
                with `labels`, where the LM head then runs on the answer tokens only (not on padding, which is about
                a third of a batch's answer grid and would cost a vocabulary-sized projection and softmax per
                position); `logits` is then None. The loss is the same either way.
            return_dict (`bool`): return an `MVaEMaOutput` (default) or a tuple.
            num_items_in_batch (`int`): answer tokens in the whole global batch (all processes). The LM loss is then
                this process's token-loss sum times the world size over it, so that DDP's averaging of gradients gives
                exactly the gradient of the global per-token mean, whatever each process's share of tokens.
            pair_prompt_ids (`(B, Lp)`), pair_prompt_mask (`(B, Lp)`): the prompt ITC and ITM put before the answer,
                instead of `input_ids`: e.g. with the caption that the VQA prompt leaves out, since the caption
                describes the image whatever the question (`QACollator` passes it when it drops captions).
        """
        cache = self._decoder_cache(cache, past_key_values, use_cache)
        if encoder_outputs is None:
            attention_mask = self._text_mask(input_ids, attention_mask)
            encoder_outputs = self._encode(pixel_values, input_ids, attention_mask, image_index)
        elif not isinstance(encoder_outputs, MVaEMaEncoderOutput):
            encoder_outputs = MVaEMaEncoderOutput(*encoder_outputs)
        decoder_input_ids = self._decoder_input_ids(
            labels, decoder_input_ids, decoder_position_ids, encoder_outputs.last_hidden_state.shape[0], cache
        )
        if return_logits is None:
            return_logits = not (self.training and labels is not None)
        memory = TextMemory(encoder_outputs.last_hidden_state, mask=self._padding_mask(attention_mask))
        decoder_states = self.text_model(
            decoder_input_ids,
            decoder_attention_mask,
            memory,
            is_causal=True,
            position_ids=decoder_position_ids,
            cache=cache,
            read_positions=None if return_logits else self._up_to_last_answer_token(labels),
        )
        logits = self.lm_head(decoder_states) if return_logits else None
        losses = {}
        if labels is not None:
            token_logits, token_labels = self._answer_token_logits(decoder_states, logits, labels)
            losses = self._losses(
                labels, token_logits, token_labels, encoder_outputs, image_keys, num_items_in_batch,
                *((input_ids, attention_mask) if pair_prompt_ids is None else (pair_prompt_ids, pair_prompt_mask)),
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

    def _decoder_cache(
        self, cache: EncoderDecoderCache | None, past_key_values: EncoderDecoderCache | None, use_cache: bool | None
    ) -> EncoderDecoderCache | None:
        if cache is not None and past_key_values is not None and cache is not past_key_values:
            raise ValueError("modeling_mvaema.py: pass the decoder cache as `cache` or `past_key_values`, not both.")
        cache = cache if cache is not None else past_key_values
        if use_cache is False:
            return None
        if cache is None and use_cache:
            text_config = self.config.text_config
            cache = EncoderDecoderCache(DynamicCache(config=text_config), DynamicCache(config=text_config))
        if cache is not None and not isinstance(cache, EncoderDecoderCache):
            raise TypeError(
                f"modeling_mvaema.py: the decoder cache must be an EncoderDecoderCache, got {type(cache).__name__}."
            )
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
                    "modeling_mvaema.py: pass labels (training) or decoder_input_ids; to answer questions call "
                    "model.generate(pixel_values=..., input_ids=..., attention_mask=...)."
                )
            decoder_input_ids = self.prepare_decoder_input_ids_from_labels(labels)
        if decoder_input_ids.shape[0] != num_questions or (
            labels is not None and labels.shape != decoder_input_ids.shape
        ):
            raise ValueError(
                f"modeling_mvaema.py: labels/decoder_input_ids of shape {list(decoder_input_ids.shape)} for "
                f"{num_questions} questions; give one answer per question (labels and decoder_input_ids alike)."
            )
        steps_without_positions = cache is not None and cache.is_updated.get(0) and decoder_position_ids is None
        if not self.config.use_causal_self_attention and steps_without_positions:
            raise ValueError(
                "modeling_mvaema.py: without causal self-attention (w/o CSA) the cache holds no decoder tokens to "
                "count positions from; pass decoder_position_ids when decoding step by step."
            )
        return decoder_input_ids

    @staticmethod
    def _padding_mask(attention_mask: torch.Tensor | None) -> torch.Tensor | None:
        """Boolean key mask, or None when nothing is padded (sdpa then skips masking)."""
        if attention_mask is None or bool(attention_mask.all()):
            return None
        return attention_mask.bool()

    def prepare_decoder_input_ids_from_labels(self, labels: torch.Tensor) -> torch.Tensor:
        """[DEC] + `labels` shifted right by one, with -100 replaced by [PAD]: `(B, La)` -> `(B, La)`."""
        if labels.ndim != 2 or labels.dtype != torch.long:
            raise ValueError(
                f"modeling_mvaema.py: labels must be a 2-D LongTensor [batch, answer_length], got {labels.dtype} "
                f"{list(labels.shape)}."
            )
        shifted = labels[:, :-1].masked_fill(labels[:, :-1] == -100, self.config.pad_token_id)
        return torch.cat([labels.new_full((labels.shape[0], 1), self.config.dec_token_id), shifted], dim=1)

    # ------------------------------------------------------------------------------------------------- losses

    @staticmethod
    def _up_to_last_answer_token(labels: torch.Tensor) -> torch.Tensor:
        """`(B, La)` bool: the decoder positions up to each row's last scored label. Later ones (padding) feed no
        scored position, causal attention looking only backwards."""
        return labels.ne(-100).flip(1).cumsum(1).flip(1) > 0

    def _answer_token_logits(
        self, decoder_states: torch.Tensor, logits: torch.Tensor | None, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Next-token logits `(T, vocab)` and targets `(T,)` for the LM loss: the full grid flattened (targets -100 on
        padding) when `logits` were computed, else the LM head applied to the answer positions alone."""
        if logits is not None:
            return logits.flatten(0, 1), labels.flatten()
        is_answer = labels.ne(-100)
        return self.lm_head(decoder_states[is_answer]), labels[is_answer]

    def _losses(
        self,
        labels: torch.Tensor,
        token_logits: torch.Tensor,
        token_labels: torch.Tensor,
        encoder_outputs: MVaEMaEncoderOutput,
        image_keys: torch.Tensor | None,
        num_items_in_batch: int | torch.Tensor | None = None,
        prompt_ids: torch.Tensor | None = None,
        prompt_mask: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor | None]:
        """The enabled losses and their weighted sum; ITC and ITM read "prompt + answer" (`_pair_texts`)."""
        losses = {"loss_lm": self._lm_loss(token_logits, token_labels, num_items_in_batch)}
        losses["loss_itc"], losses["loss_itm"] = None, None
        if self.config.use_itc or self.config.use_itm:
            if encoder_outputs.image_embeds is None or encoder_outputs.image_index is None or prompt_ids is None:
                raise ValueError(
                    "modeling_mvaema.py: ITC/ITM need the image embeddings and the prompt; pass pixel_values and "
                    "input_ids (with encoder_outputs from encode(), which keeps the image embeddings, pass input_ids "
                    "and attention_mask too)."
                )
            text_ids, text_mask = self._pair_texts(prompt_ids, self._text_mask(prompt_ids, prompt_mask), labels)
            losses["loss_itc"], losses["loss_itm"] = self._image_text_losses(
                text_ids, text_mask, encoder_outputs.image_embeds, encoder_outputs.image_index, image_keys
            )
        weights = {
            "loss_itc": self.config.itc_loss_weight,
            "loss_itm": self.config.itm_loss_weight,
            "loss_lm": self.config.lm_loss_weight,
        }
        losses["loss"] = sum(weights[name] * loss for name, loss in losses.items() if loss is not None)
        return losses

    @staticmethod
    def _lm_loss(token_logits: torch.Tensor, token_labels: torch.Tensor, num_items_in_batch) -> torch.Tensor:
        """Mean cross-entropy over answer tokens (-100 ignored), or the DDP-exact share of the global mean.
        token_logits `(T, vocab)`, token_labels `(T,)`."""
        if num_items_in_batch is None:
            return F.cross_entropy(token_logits, token_labels, ignore_index=-100)
        world_size = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
        token_loss_sum = F.cross_entropy(token_logits, token_labels, ignore_index=-100, reduction="sum")
        return token_loss_sum * world_size / num_items_in_batch

    def _pair_texts(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The ITC/ITM text of each pair `(B, T)` and its mask: the prompt "[CLS] caption question [SEP]" followed by
        the answer tokens, packed to the left and cut at `config.contrastive_max_length` tokens.

        The text of a pair is the whole instruction sample, as the paper's text encoder reads "caption + question":
        with a caption it names the category (the strongest image-specific words), without one the answer carries
        what is specific to the image.
        """
        tokens = torch.cat([input_ids, labels.masked_fill(labels.eq(-100), self.config.pad_token_id)], dim=1)
        keep = torch.cat([attention_mask.bool(), labels.ne(-100)], dim=1)
        # A stable sort on "is padding" moves the kept tokens to the front and keeps their order.
        order = torch.sort((~keep).to(torch.uint8), dim=1, stable=True).indices
        length = min(int(keep.sum(dim=1).max()), self.config.contrastive_max_length)
        keep = keep.gather(1, order)[:, :length]
        tokens = tokens.gather(1, order)[:, :length].masked_fill(~keep, self.config.pad_token_id)
        return tokens, keep.long()

    @staticmethod
    def _image_keys(
        image_index: torch.Tensor, image_keys: torch.Tensor | None, num_images: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Global identities of the images `(I,)` and of each pair's image `(B,)`: equal keys, same micrograph.

        Default: the row of `pixel_values`, made unique across processes as `row * world_size + rank`. With
        `image_keys` a micrograph repeated in several rows or on several processes is recognised too; rows that no
        question uses get -1.
        """
        if image_keys is None:
            distributed = dist.is_available() and dist.is_initialized()
            world_size, rank = (dist.get_world_size(), dist.get_rank()) if distributed else (1, 0)
            row_keys = torch.arange(num_images, device=image_index.device) * world_size + rank
            return row_keys, row_keys[image_index]
        if image_keys.shape != image_index.shape or image_keys.dtype != torch.long or bool((image_keys < 0).any()):
            raise ValueError(
                f"modeling_mvaema.py: image_keys must be a LongTensor of shape {list(image_index.shape)} with values "
                f">= 0 (one micrograph id per question), got {image_keys.dtype} {list(image_keys.shape)}."
            )
        row_keys = image_keys.new_full((num_images,), -1).scatter(0, image_index, image_keys)
        if not torch.equal(row_keys[image_index], image_keys):
            raise ValueError(
                "modeling_mvaema.py: questions that share a row of pixel_values (image_index) have different "
                "image_keys; give each micrograph one key."
            )
        return row_keys, image_keys

    def _image_text_losses(
        self,
        text_ids: torch.Tensor,
        text_mask: torch.Tensor,
        image_embeds: torch.Tensor,
        image_index: torch.Tensor,
        image_keys: torch.Tensor | None,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        row_keys, text_keys = self._image_keys(image_index, image_keys, image_embeds.shape[0])
        loss_itc, text_to_image = None, None
        if self.config.use_itc:
            image_features = self._image_features(image_embeds)
            text_features = self._text_features(text_ids, text_mask)
            temperature = self.temperature.clamp(self.config.temperature_min, self.config.temperature_max)
            # Gathering serves training; an evaluation loss is computed per process, so that each process can score
            # a whole validation set on its own without waiting for the others.
            loss_itc = image_text_contrastive_loss(
                image_features, text_features, row_keys, text_keys, temperature, across_ranks=self.training
            )
            text_to_image = (text_features @ image_features.T / temperature).detach()
        loss_itm = None
        if self.config.use_itm and text_keys.unique().numel() > 1:
            pairs = self._itm_pairs(text_keys)
            negative_images, negative_texts = self._itm_negatives(
                text_to_image, image_index, row_keys, text_keys, pairs
            )
            loss_itm = self._itm_loss(
                text_ids, text_mask, image_embeds, image_index, pairs, negative_images, negative_texts
            )
        return loss_itc, loss_itm

    def _itm_pairs(self, text_keys: torch.Tensor) -> torch.Tensor:
        """The pairs ITM scores `(P,)`: `config.itm_pairs_per_image` per micrograph (random ones while training), or
        all of them."""
        if self.config.itm_pairs_per_image == 0:
            return torch.arange(len(text_keys), device=text_keys.device)
        return pairs_per_key(text_keys, self.config.itm_pairs_per_image, shuffle=self.training)

    def _itm_loss(
        self,
        text_ids: torch.Tensor,
        text_mask: torch.Tensor,
        image_embeds: torch.Tensor,
        image_index: torch.Tensor,
        pairs: torch.Tensor,
        negative_images: torch.Tensor,
        negative_texts: torch.Tensor,
    ) -> torch.Tensor:
        """Binary cross-entropy over the P scored pairs `pairs`, P (text, negative image) and P (negative text, image)
        pairs."""
        text_ids = torch.cat([text_ids[pairs], text_ids[pairs], text_ids[negative_texts]])
        text_mask = torch.cat([text_mask[pairs], text_mask[pairs], text_mask[negative_texts]])
        image_rows = torch.cat([image_index[pairs], negative_images, image_index[pairs]])
        logits = self._itm_logits(text_ids, text_mask, image_embeds, image_rows)
        targets = torch.zeros_like(logits)
        targets[: len(pairs)] = 1.0
        return F.binary_cross_entropy_with_logits(logits, targets)

    @torch.no_grad()
    def _itm_negatives(
        self,
        text_to_image: torch.Tensor | None,
        image_index: torch.Tensor,
        row_keys: torch.Tensor,
        text_keys: torch.Tensor,
        pairs: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """For each scored pair p (`pairs` `(P,)`, default all B): an image row of another micrograph (negative image
        for text p, `(P,)`) and a text of the batch about another micrograph (negative text for p's image, `(P,)`).
        Sampled while training from the softmax of the ITC logits `(B, I)` (uniformly without ITC or with
        `itm_negatives="uniform"`); otherwise the most similar one (without ITC or similarities: the first other)."""
        if text_to_image is None or self.config.itm_negatives == "uniform":
            text_to_image = torch.zeros(len(text_keys), len(row_keys), device=text_keys.device)
        if pairs is None:
            pairs = torch.arange(len(text_keys), device=text_keys.device)
        sample = self.training and self.config.itm_negatives != "hardest"
        pair_keys = text_keys[pairs, None]
        negative_images = pick_negatives(text_to_image[pairs], pair_keys == row_keys[None, :], sample)
        image_to_text = text_to_image.T[image_index[pairs]]
        negative_texts = pick_negatives(image_to_text, pair_keys == text_keys[None, :], sample)
        return negative_images, negative_texts

    # --------------------------------------------------------------------------------------------- generation

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        attention_mask: torch.LongTensor | None = None,
        image_index: torch.LongTensor | None = None,
        encoder_outputs: MVaEMaEncoderOutput | None = None,
        **generate_kwargs,
    ) -> torch.LongTensor:
        """Answer the questions: `(B, 1 + new_tokens)` ids starting with [DEC] (decode with the processor).

        Images and questions are encoded once, here, before `GenerationMixin.generate` expands them for beams or
        samples; the decoder's cache keeps the keys/values of the fused question states, so they too are projected
        once. `generate_kwargs` are the usual ones (`max_new_tokens`, `num_beams`, `do_sample`, `generation_config`,
        ...); the defaults live in `model.generation_config`.
        """
        if encoder_outputs is None:
            attention_mask = self._text_mask(input_ids, attention_mask)
            encoded = self._encode(pixel_values, input_ids, attention_mask, image_index)
            # The decoder reads only the fused question states; beams would otherwise copy the image states too.
            encoder_outputs = MVaEMaEncoderOutput(last_hidden_state=encoded.last_hidden_state)
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

    # ------------------------------------------------------------------------------------------ classification

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
        label_attention_mask = self._text_mask(label_input_ids, label_attention_mask, "label_input_ids")
        image_embeds = self.vision_model(pixel_values)
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
                label_attention_mask = self._text_mask(label_pair_input_ids, label_pair_attention_mask, "label_pair")
            scores = None
            if self.config.use_itc:
                scores = (
                    self._image_features(image_embeds) @ self._text_features(label_input_ids, label_attention_mask).T
                )
            if method == "itm":
                candidates = max(itm_candidates, top_k)
                scores = self._itm_scores(image_embeds, label_input_ids, label_attention_mask, scores, candidates)
        top = scores.topk(min(top_k, scores.shape[1]), dim=1)
        return MVaEMaClassificationOutput(scores=scores, top_k_indices=top.indices, top_k_scores=top.values)

    def _check_classify_method(self, method: str, question_input_ids: torch.Tensor | None):
        if method not in CLASSIFY_METHODS:
            raise ValueError(f"modeling_mvaema.py: classify method must be one of {CLASSIFY_METHODS}, got {method!r}.")
        if method == "itc" and not self.config.use_itc:
            raise ValueError(
                "modeling_mvaema.py: this model was built without ITC (use_itc=False, ablation 'no_itc'), so it has "
                "no image/text embeddings to compare; use method='itm' or method='lm'."
            )
        if method == "itm" and not self.config.use_itm:
            raise ValueError(
                "modeling_mvaema.py: this model was built without ITM (use_itm=False, ablation 'no_itm'), so it has "
                "no matching head; use method='itc' or method='lm'."
            )
        if method == "lm" and question_input_ids is None:
            raise ValueError(
                "modeling_mvaema.py: method='lm' scores each label as the answer to a question; pass "
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
        probabilities = self._itm_logits(label_ids[pairs], label_mask[pairs], image_embeds, image_rows).sigmoid()
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
                f"modeling_mvaema.py: question_input_ids has {question_ids.shape[0]} rows; give one question for "
                f"all {num_images} images or one per image."
            )
        question_mask = self._text_mask(question_ids, question_mask, "question_input_ids")
        question_ids, question_mask = question_ids.expand(num_images, -1), question_mask.expand(num_images, -1)
        question_states = self._grounded_states(image_embeds, None, question_ids, question_mask)
        is_target = label_mask[:, 1:].bool() & label_ids[:, 1:].ne(self.config.sep_token_id)
        targets = label_ids[:, 1:].masked_fill(~is_target, -100)
        image_rows = torch.arange(num_images, device=label_ids.device).repeat_interleave(num_labels)
        pairs = torch.arange(num_labels, device=label_ids.device).repeat(num_images)
        memory = TextMemory(question_states, mask=self._padding_mask(question_mask[image_rows]), index=image_rows)
        decoder_ids = self.prepare_decoder_input_ids_from_labels(targets)[pairs]
        log_probs = self.lm_head(self.text_model(decoder_ids, None, memory, is_causal=True)).log_softmax(dim=-1)
        is_target, targets = is_target[pairs], targets[pairs]
        token_scores = log_probs.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1) * is_target
        scores = token_scores.sum(dim=1)
        if length_normalize:
            scores = scores / is_target.sum(dim=1).clamp(min=1)
        return scores.view(num_images, num_labels)


def compile_for_training(model: MVaEMaForQuestionAnswering, **compile_kwargs) -> MVaEMaForQuestionAnswering:
    """Compile, in place, every layer of the vision tower and of the text stack with `torch.compile`; returns `model`.

    The layers hold the arithmetic and none of the data-dependent control flow (input checks, ITM pair and negative
    selection, cache bookkeeping), so each compiles into one graph without breaks. Text lengths change from batch to
    batch (each batch is trimmed to its longest text), hence `dynamic=True` unless `compile_kwargs` say otherwise.
    It is meant for GPUs, where a model this small is bound by kernel launches; on CPU it costs a minute of
    compilation and was no faster (benchmarks/README.md).
    """
    compile_kwargs.setdefault("dynamic", True)
    for layer in (*model.vision_model.layers, *model.text_model.layers):
        layer.compile(**compile_kwargs)
    return model


MVaEMaForQuestionAnswering.register_for_auto_class("AutoModel")

__all__ = [
    "MVaEMaClassificationOutput",
    "MVaEMaEncoderOutput",
    "MVaEMaForQuestionAnswering",
    "MVaEMaOutput",
    "MVaEMaPreTrainedModel",
    "compile_for_training",
]
