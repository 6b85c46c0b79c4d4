# Copyright 2026 The MVaEMa authors. Licensed under the Apache License, Version 2.0.
"""The layers of MVaEMa's two towers: attention, feed-forward, the vision transformer and the shared text stack.

The text stack is ONE list of `MVaEMaTextLayer`s, each holding a bidirectional self-attention, a causal
self-attention, one cross-attention and one feed-forward network; the mode decides which attentions run (unimodal
text encoder, image-grounded encoder, answer decoder), so the decoder shares the encoder's cross-attention and
feed-forward weights by construction.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers.activations import ACT2FN
from transformers.cache_utils import DynamicCache, EncoderDecoderCache

from .configuration_mvaema import MVaEMaConfig, MVaEMaTextConfig, MVaEMaVisionConfig


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


def residual_on_rows(hidden_states: torch.Tensor, block: nn.Module, rows: torch.Tensor | None) -> torch.Tensor:
    """`hidden_states + block(hidden_states)` for `(N, L, hidden)` states, with `block` run only on `rows` (indices
    into the N * L flattened positions) when given; the other positions keep their input. Padding makes up a third
    of a training batch's text positions, and position-wise blocks need not compute what nobody reads."""
    if rows is None:
        return hidden_states + block(hidden_states)
    flat = hidden_states.flatten(0, 1)
    # Under autocast `block` answers in the autocast dtype; the residual stream keeps its own, as `+` above does.
    return flat.index_add(0, rows, block(flat.index_select(0, rows)).to(flat.dtype)).view_as(hidden_states)


def padding_mask(attention_mask: torch.Tensor | None) -> torch.Tensor | None:
    """Boolean key mask, or None when nothing is padded (sdpa then skips masking)."""
    if attention_mask is None or bool(attention_mask.all()):
        return None
    return attention_mask.bool()


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
                f"pixel_values must have shape [num_images, {', '.join(map(str, expected))}] "
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
        return residual_on_rows(hidden_states, self.feed_forward, feed_forward_rows)


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
                    f"a text of {past_length + length} tokens exceeds "
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
