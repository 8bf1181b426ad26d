"""The Flax NNX LLaMA family: a causal LM and a scalar-head (value / reward / cost) model.

    model = LlamaForCausalLM(cfg, rngs=nnx.Rngs(0))
    logits_BxTxV = model(input_ids_BxT, attention_mask_BxT)       # positions from the mask

    scorer = LlamaForScore(cfg, rngs=nnx.Rngs(0))
    out = scorer(input_ids_BxT, attention_mask_BxT)
    out.values   # [B, T] fp32 per-token values (PPO critic)
    out.scores   # [B]    value at each row's last valid token (reward / cost model)

Left-padded batches give each row the same outputs as the row run alone: positions default to the
running count of valid tokens, and padding keys are masked. For decoding, `init_cache` makes a
static KV cache and `forward_with_cache` writes new tokens into it (see rlhf_jax.rollout).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from rlhf_jax.models.config import LlamaConfig
from rlhf_jax.models.layers import (
    DecoderLayers, dtype_of, make_attention_mask, param, rms_norm, rope_tables, scan_layers)
from rlhf_jax.sharding import constrain


class KVCache(NamedTuple):
    """A static KV cache: k, v [L, B, S, K, H]; `key_valid` [B, S]; `index` = next slot to write."""

    k: jax.Array
    v: jax.Array
    key_valid: jax.Array
    index: jax.Array


class ScoreOutput(NamedTuple):
    values: jax.Array  # [B, T] fp32
    scores: jax.Array  # [B] fp32, at the last valid token


def default_positions(attention_mask_BxT):
    """Position of each token = number of valid tokens before it (left padding gets position 0)."""
    return jnp.maximum(jnp.cumsum(attention_mask_BxT.astype(jnp.int32), axis=1) - 1, 0)


def last_valid_index(attention_mask_BxT):
    """Index of each row's last valid token (works for left and right padding)."""
    T = attention_mask_BxT.shape[1]
    idx = jnp.arange(T, dtype=jnp.int32)[None, :]
    return jnp.max(jnp.where(attention_mask_BxT.astype(bool), idx, -1), axis=1).clip(0)


def _check_inputs(input_ids, attention_mask, positions, segment_ids=None):
    if input_ids.ndim != 2:
        raise ValueError(f"input_ids must be [B, T], got shape {input_ids.shape}")
    if segment_ids is not None and positions is None:
        raise ValueError("segment_ids (packed rows) need explicit positions restarting at each segment")
    for name, arr in (("attention_mask", attention_mask), ("positions", positions),
                      ("segment_ids", segment_ids)):
        if arr is not None and arr.shape != input_ids.shape:
            raise ValueError(f"{name} shape {arr.shape} does not match input_ids shape {input_ids.shape}")


class LlamaModel(nnx.Module):
    """Embeddings, the stacked decoder layers and the final norm; returns hidden states."""

    def __init__(self, cfg: LlamaConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        self.embed = param(rngs, (cfg.vocab_size, cfg.hidden_size), ("vocab", "embed"),
                           dtype_of(cfg.param_dtype), std=cfg.initializer_range)
        self.layers = DecoderLayers(cfg, stack=cfg.num_layers, rngs=rngs)
        self.norm = param(rngs, (cfg.hidden_size,), ("norm",), dtype_of(cfg.param_dtype), std=None)

    def __call__(self, input_ids, attention_mask=None, positions=None, cache: KVCache | None = None,
                 segment_ids=None):
        """Hidden states [B, T, D] and the updated cache (None without one).

        `segment_ids` [B, T] (packed rows: several sequences per row, numbered 1, 2, ...; 0 =
        padding) keep attention inside each sequence; they need `positions` and no cache.
        """
        _check_inputs(input_ids, attention_mask, positions, segment_ids)
        if segment_ids is not None and cache is not None:
            raise ValueError("segment_ids (packing) cannot be combined with a KV cache")
        cfg = self.cfg
        B, T = input_ids.shape
        mask = jnp.ones((B, T), bool) if attention_mask is None else attention_mask.astype(bool)
        if cache is None:
            key_valid, q_slots, index = mask, jnp.broadcast_to(jnp.arange(T, dtype=jnp.int32), (B, T)), None
            if positions is None:
                positions = default_positions(mask)
        else:
            index = cache.index
            key_valid = jax.lax.dynamic_update_slice(cache.key_valid, mask, (0, index))
            q_slots = jnp.broadcast_to(index + jnp.arange(T, dtype=jnp.int32), (B, T))
            if positions is None:  # continue counting the valid tokens already in the cache
                seen = jnp.sum(cache.key_valid, axis=1, dtype=jnp.int32)[:, None]
                positions = jnp.maximum(seen + jnp.cumsum(mask, axis=1, dtype=jnp.int32) - 1, 0)
        x = jnp.take(self.embed[...], input_ids, axis=0).astype(dtype_of(cfg.dtype))
        x = constrain(x, ("batch", "length", "act_embed"))
        cos, sin = rope_tables(cfg, positions)
        mask_BxTxS = make_attention_mask(q_slots, key_valid, cfg.sliding_window, segment_ids)
        # what attention='splash' takes instead of the dense mask: causal within segments (0 = padding)
        segments = None if cache is not None else (
            segment_ids if segment_ids is not None else mask.astype(jnp.int32))
        x, ks, vs = scan_layers(self.layers, x, cos, sin, mask_BxTxS,
                                None if cache is None else cache.k,
                                None if cache is None else cache.v, index, segments)
        x = rms_norm(x, self.norm[...], cfg.rms_norm_eps)
        new_cache = None if cache is None else KVCache(ks, vs, key_valid, index + T)
        return x, new_cache


class LlamaForCausalLM(nnx.Module):
    """LLaMA with the LM head: logits [B, T, V] (logits at t predict the token at t + 1)."""

    def __init__(self, cfg: LlamaConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        self.model = LlamaModel(cfg, rngs=rngs)
        if not cfg.tie_word_embeddings:
            self.lm_head = param(rngs, (cfg.hidden_size, cfg.vocab_size), ("embed", "vocab"),
                                 dtype_of(cfg.param_dtype), std=cfg.initializer_range)

    def head_weight(self):
        """The [D, V] output projection (the transposed embedding when tied)."""
        return self.model.embed[...].T if self.cfg.tie_word_embeddings else self.lm_head[...]

    def hidden(self, input_ids, attention_mask=None, positions=None, segment_ids=None):
        """Final-norm hidden states [B, T, D], for memory-aware chunked log-prob computation."""
        return self.model(input_ids, attention_mask, positions, segment_ids=segment_ids)[0]

    def logits_from_hidden(self, hidden_BxTxD):
        logits = jnp.einsum("btd,dv->btv", hidden_BxTxD, self.head_weight().astype(hidden_BxTxD.dtype))
        return constrain(logits, ("batch", "length", "act_vocab"))

    def __call__(self, input_ids, attention_mask=None, positions=None, segment_ids=None):
        return self.logits_from_hidden(self.hidden(input_ids, attention_mask, positions, segment_ids))

    def init_cache(self, batch_size: int, max_length: int, dtype=None) -> KVCache:
        """An empty static cache for `max_length` slots (prompt + new tokens)."""
        cfg = self.cfg
        shape = (cfg.num_layers, batch_size, max_length, cfg.num_kv_heads, cfg.resolved_head_dim)
        dt = dtype_of(cfg.dtype) if dtype is None else dtype
        return KVCache(jnp.zeros(shape, dt), jnp.zeros(shape, dt),
                       jnp.zeros((batch_size, max_length), bool), jnp.zeros((), jnp.int32))

    def forward_with_cache(self, input_ids, cache: KVCache, attention_mask=None, positions=None):
        """Writes the tokens into `cache` at `cache.index`; returns (logits [B, T, V], new cache)."""
        h, cache = self.model(input_ids, attention_mask, positions, cache=cache)
        return self.logits_from_hidden(h), cache


class LlamaForScore(nnx.Module):
    """LLaMA with a scalar head (HF `LlamaForSequenceClassification` with num_labels=1)."""

    def __init__(self, cfg: LlamaConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        self.model = LlamaModel(cfg, rngs=rngs)
        self.score = param(rngs, (cfg.hidden_size,), ("embed",), dtype_of(cfg.param_dtype),
                           std=cfg.initializer_range)

    def __call__(self, input_ids, attention_mask=None, positions=None, segment_ids=None) -> ScoreOutput:
        h, _ = self.model(input_ids, attention_mask, positions, segment_ids=segment_ids)
        values = jnp.einsum("btd,d->bt", h.astype(jnp.float32), self.score[...].astype(jnp.float32))
        if attention_mask is None:
            last = jnp.full((input_ids.shape[0],), input_ids.shape[1] - 1, jnp.int32)
        else:
            last = last_valid_index(attention_mask)
        scores = jnp.take_along_axis(values, last[:, None], axis=1)[:, 0]
        return ScoreOutput(values, scores)
