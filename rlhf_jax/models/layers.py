"""Building blocks of the LLaMA decoder: RMSNorm, RoPE (with llama3 scaling), attention, MLP.

All parameters of one decoder layer are created with a leading `layers` axis of size `stack`, so
the model holds the whole depth as one stacked layer and runs it with `lax.scan` (compile time does
not grow with depth). Inside the scan body each layer sees its own unstacked slice.

Shape letters: B batch, T query length, S key length, D model width, N query heads, K kv heads,
H head dim, F MLP width, L layers.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from rlhf_jax.models.config import LlamaConfig
from rlhf_jax.sharding import constrain


def dtype_of(name: str):
    return jnp.dtype(name)


def param(rngs: nnx.Rngs | None, shape, axes, dtype, *, std: float | None):
    """An nnx.Param with `logical_axes` metadata; std=None means ones (norm weights)."""
    if std is None:
        value = jnp.ones(shape, dtype)
    else:
        value = (std * jax.random.normal(rngs.params(), shape, jnp.float32)).astype(dtype)
    return nnx.Param(value, logical_axes=tuple(axes))


def rms_norm(x, weight, eps: float):
    """HF LlamaRMSNorm: normalize in fp32, cast back to the input dtype, then scale."""
    x32 = x.astype(jnp.float32)
    x32 = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)
    return weight.astype(x.dtype).reshape((1,) * (x.ndim - 1) + weight.shape) * x32.astype(x.dtype)


def rope_inv_freq(cfg: LlamaConfig) -> jnp.ndarray:
    """Inverse frequencies [H/2], with Llama 3.1's piecewise scaling or linear scaling applied."""
    hd = cfg.resolved_head_dim
    inv_freq = 1.0 / (cfg.rope_theta ** (jnp.arange(0, hd, 2, dtype=jnp.float32) / hd))
    s = cfg.rope_scaling
    if s is None:
        return inv_freq
    if s.kind == "linear":
        return inv_freq / s.factor
    low_wavelen = s.original_max_position_embeddings / s.low_freq_factor
    high_wavelen = s.original_max_position_embeddings / s.high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    scaled = jnp.where(wavelen > low_wavelen, inv_freq / s.factor, inv_freq)
    smooth = (s.original_max_position_embeddings / wavelen - s.low_freq_factor) / (
        s.high_freq_factor - s.low_freq_factor)
    smoothed = (1 - smooth) * scaled / s.factor + smooth * scaled
    medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
    return jnp.where(medium, smoothed, scaled)


def rope_tables(cfg: LlamaConfig, positions_BxT):
    """cos, sin tables [B, T, H] in fp32 for integer positions."""
    freqs = positions_BxT.astype(jnp.float32)[..., None] * rope_inv_freq(cfg)[None, None, :]
    emb = jnp.concatenate([freqs, freqs], axis=-1)
    return jnp.cos(emb), jnp.sin(emb)


def apply_rope(x_BxTxNxH, cos_BxTxH, sin_BxTxH):
    """HF's rotate-half RoPE convention (the layout of HF LLaMA checkpoints)."""
    half = x_BxTxNxH.shape[-1] // 2
    x1, x2 = x_BxTxNxH[..., :half], x_BxTxNxH[..., half:]
    rotated = jnp.concatenate([-x2, x1], axis=-1)
    cos = cos_BxTxH[:, :, None, :].astype(x_BxTxNxH.dtype)
    sin = sin_BxTxH[:, :, None, :].astype(x_BxTxNxH.dtype)
    return x_BxTxNxH * cos + rotated * sin


def make_attention_mask(query_slots_BxT, key_valid_BxS, sliding_window: int | None, segment_ids_BxT=None):
    """Boolean [B, T, S]: causal in slot order, padding keys hidden, optional sliding window.

    With `segment_ids` (packed rows, no cache: S == T) a query sees only keys of its own segment.

    Slot s holds the s-th token written (in a KV cache or a full sequence). A query always sees its
    own slot, so rows of pure padding stay finite instead of attending to nothing.
    """
    S = key_valid_BxS.shape[1]
    k_slots = jnp.arange(S, dtype=jnp.int32)[None, None, :]
    q_slots = query_slots_BxT[:, :, None]
    causal = k_slots <= q_slots
    if sliding_window is not None:
        causal &= (q_slots - k_slots) < sliding_window
    if segment_ids_BxT is not None:
        causal &= segment_ids_BxT[:, :, None] == segment_ids_BxT[:, None, :]
    return (causal & key_valid_BxS[:, None, :]) | (k_slots == q_slots)


# attention kind -> (the backend it needs, the kernel: jax.nn.dot_product_attention's implementation
# or "splash" for rlhf_jax.models.splash)
FUSED_ATTENTION = {"cudnn": ("gpu", "cudnn"), "splash": ("tpu", "splash")}


def attention(q_BxTxNxH, k_BxSxKxH, v_BxSxKxH, mask_BxTxS, *, scale: float, kind: str = "xla",
              segments_BxT=None, sliding_window: int | None = None):
    """Grouped-query attention under a boolean mask [B, T, S] (True = the key is seen).

    kind "xla": XLA's attention (materializes the [B, N, T, S] logits). The fused kinds are for
    full-sequence forwards only (no KV cache: query slot t is key slot t):
    - "cudnn" (GPU): cuDNN flash attention; the causal structure is passed as `is_causal` (cuDNN
      skips the blocks above the diagonal) and the rest of the mask (padding, packed segments, a
      sliding window) rides along as a mask;
    - "splash" (TPU): the Pallas splash kernel (`rlhf_jax.models.splash`), which takes the mask as
      what it is made of: causal (or local, with `sliding_window`) within `segments_BxT`.
    """
    if kind == "xla":
        return jax.nn.dot_product_attention(q_BxTxNxH, k_BxSxKxH, v_BxSxKxH, mask=mask_BxTxS[:, None],
                                            scale=scale)
    if kind not in FUSED_ATTENTION:
        raise ValueError(f"attention={kind!r}; choose from {['xla', *FUSED_ATTENTION]}")
    backend, implementation = FUSED_ATTENTION[kind]
    if jax.default_backend() != backend:
        raise ValueError(f"attention={kind!r} runs on a {backend} backend only, this is "
                         f"{jax.default_backend()!r}; use attention='xla'")
    if q_BxTxNxH.shape[1] != k_BxSxKxH.shape[1]:
        raise ValueError(f"attention={kind!r} is for full-sequence forwards (T == S), got T="
                         f"{q_BxTxNxH.shape[1]}, S={k_BxSxKxH.shape[1]}")
    if implementation == "splash":
        from rlhf_jax.models.splash import splash_attention

        return splash_attention(q_BxTxNxH, k_BxSxKxH, v_BxSxKxH, segments_BxT, scale=scale,
                                sliding_window=sliding_window)
    return jax.nn.dot_product_attention(q_BxTxNxH, k_BxSxKxH, v_BxSxKxH, mask=mask_BxTxS[:, None],
                                        is_causal=True, scale=scale, implementation=implementation)


class DecoderLayers(nnx.Module):
    """All `stack` decoder layers, parameters stacked on a leading `layers` axis."""

    def __init__(self, cfg: LlamaConfig, *, stack: int, rngs: nnx.Rngs):
        D, F, N, K, H = (cfg.hidden_size, cfg.intermediate_size, cfg.num_heads, cfg.num_kv_heads,
                         cfg.resolved_head_dim)
        L, std, pd = (stack,), cfg.initializer_range, dtype_of(cfg.param_dtype)
        la = ("layers",)
        self.attn_norm = param(rngs, L + (D,), la + ("norm",), pd, std=None)
        self.wq = param(rngs, L + (D, N, H), la + ("embed", "heads", "head_dim"), pd, std=std)
        self.wk = param(rngs, L + (D, K, H), la + ("embed", "kv_heads", "head_dim"), pd, std=std)
        self.wv = param(rngs, L + (D, K, H), la + ("embed", "kv_heads", "head_dim"), pd, std=std)
        self.wo = param(rngs, L + (N, H, D), la + ("heads", "head_dim", "embed"), pd, std=std)
        self.mlp_norm = param(rngs, L + (D,), la + ("norm",), pd, std=None)
        self.w_gate = param(rngs, L + (D, F), la + ("embed", "mlp"), pd, std=std)
        self.w_up = param(rngs, L + (D, F), la + ("embed", "mlp"), pd, std=std)
        self.w_down = param(rngs, L + (F, D), la + ("mlp", "embed"), pd, std=std)
        self.cfg = cfg

    def layer(self, x_BxTxD, cos, sin, mask_BxTxS, kv_cache=None, segments_BxT=None):
        """One layer (called on an unstacked slice inside the scan). Returns x, k, v.

        Without `kv_cache`, keys are this call's tokens and k, v are this call's. With
        `kv_cache = (k_LxBxSxKxH, v_LxBxSxKxH, layer, index)`, the stacked caches of all layers,
        this layer's new keys are written in place at [layer, :, index] (only the new slots are
        written, so a decode step does not copy the cache), attention runs over this layer's whole
        cache, and k, v are the updated stacked caches.
        """
        cfg, dt = self.cfg, x_BxTxD.dtype
        h = rms_norm(x_BxTxD, self.attn_norm[...], cfg.rms_norm_eps)
        q = jnp.einsum("btd,dnh->btnh", h, self.wq[...].astype(dt))
        k = jnp.einsum("btd,dkh->btkh", h, self.wk[...].astype(dt))
        v = jnp.einsum("btd,dkh->btkh", h, self.wv[...].astype(dt))
        q = constrain(apply_rope(q, cos, sin), ("batch", "length", "act_heads", None))
        k = constrain(apply_rope(k, cos, sin), ("batch", "length", "act_kv_heads", None))
        v = constrain(v, ("batch", "length", "act_kv_heads", None))
        if kv_cache is not None:
            k_all, v_all, layer, index = kv_cache
            at = (layer, 0, index, 0, 0)
            k_all = jax.lax.dynamic_update_slice(k_all, k.astype(k_all.dtype)[None], at)
            v_all = jax.lax.dynamic_update_slice(v_all, v.astype(v_all.dtype)[None], at)
            k = jax.lax.dynamic_index_in_dim(k_all, layer, axis=0, keepdims=False)
            v = jax.lax.dynamic_index_in_dim(v_all, layer, axis=0, keepdims=False)
        attn = attention(q, k.astype(dt), v.astype(dt), mask_BxTxS, scale=cfg.resolved_head_dim ** -0.5,
                         kind="xla" if kv_cache is not None else cfg.attention, segments_BxT=segments_BxT,
                         sliding_window=cfg.sliding_window)
        x = x_BxTxD + jnp.einsum("btnh,nhd->btd", attn, self.wo[...].astype(dt))
        h = rms_norm(x, self.mlp_norm[...], cfg.rms_norm_eps)
        gate = jnp.einsum("btd,df->btf", h, self.w_gate[...].astype(dt))
        up = jnp.einsum("btd,df->btf", h, self.w_up[...].astype(dt))
        act = constrain(jax.nn.silu(gate) * up, ("batch", "length", "act_mlp"))
        x = x + jnp.einsum("btf,fd->btd", act, self.w_down[...].astype(dt))
        x = constrain(x, ("batch", "length", "act_embed"))
        return (x, k, v) if kv_cache is None else (x, k_all, v_all)


REMAT_POLICIES = {
    "full": None,  # save nothing: recompute the whole layer in the backward pass
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_no_batch": jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,
}


def scan_layers(layers: DecoderLayers, x_BxTxD, cos, sin, mask_BxTxS, cache_k=None, cache_v=None,
                index=None, segments_BxT=None):
    """Runs the stacked layers with `lax.scan`; returns x and, with a cache, the updated [L, ...] k, v.

    The cache rides in the scan carry (not in xs/ys), so each layer updates its new slots in place
    instead of the scan re-stacking a full copy of the cache on every call.
    """
    graphdef, state = nnx.split(layers)
    remat = layers.cfg.remat
    cached = cache_k is not None

    def body(carry, xs):
        x, k_all, v_all = carry
        layer_state, layer_idx = xs
        layer = nnx.merge(graphdef, layer_state)
        kv_cache = (k_all, v_all, layer_idx, index) if cached else None
        x, k, v = layer.layer(x, cos, sin, mask_BxTxS, kv_cache, segments_BxT)
        return (x, k, v) if cached else (x, None, None), None  # no k/v kept when training

    if remat != "none":
        if remat not in REMAT_POLICIES:
            raise ValueError(f"remat={remat!r}; choose from {['none', *REMAT_POLICIES]}")
        body = jax.checkpoint(body, policy=REMAT_POLICIES[remat], prevent_cse=False)
    num_layers = jax.tree.leaves(state)[0].shape[0]
    (x, k, v), _ = jax.lax.scan(body, (x_BxTxD, cache_k, cache_v),
                                (state, jnp.arange(num_layers, dtype=jnp.int32)))
    return x, k, v
