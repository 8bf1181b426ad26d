"""Shared helpers of the rollout tests: a tiny model on one device and an independent reference
for log-probs (a plain training forward, written out here rather than taken from the sampler)."""

from __future__ import annotations

import math

import jax
import numpy as np
from flax import nnx

from rlhf_jax.models import LlamaConfig, LlamaForCausalLM
from rlhf_jax.sharding import MeshConfig, make_mesh

TINY = LlamaConfig(vocab_size=97, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4,
                   num_kv_heads=2, max_position_embeddings=128)


def one_device_mesh():
    return make_mesh(MeshConfig(1, 1, 1), devices=jax.devices()[:1])


def tiny_model(seed: int = 0, cfg: LlamaConfig = TINY, *, head_scale: float = 1.0):
    """A random model on the first device, its params drawn with numpy (nothing to compile):
    weights N(0, 0.02^2), norm weights U(0.5, 1.5) so a swapped norm would show. `head_scale`
    multiplies the output projection: > 1 gives peakier next-token distributions, so that top-k
    and top-p cut off real probability mass."""
    graphdef, abstract = nnx.split(nnx.eval_shape(lambda: LlamaForCausalLM(cfg, rngs=nnx.Rngs(0))))
    rng = np.random.default_rng(seed)

    def draw(path, x):
        name = jax.tree_util.keystr(path)
        if "norm" in name:
            value = rng.uniform(0.5, 1.5, x.shape)
        else:
            value = rng.normal(0.0, 0.02, x.shape) * (head_scale if "lm_head" in name else 1.0)
        return jax.device_put(value.astype(x.dtype), jax.devices()[0])

    return nnx.merge(graphdef, jax.tree_util.tree_map_with_path(draw, abstract))


_forward = nnx.jit(lambda model, ids, mask: model(ids, mask))


def forward_logprobs(model, tokens_BxT, mask_BxT) -> np.ndarray:
    """[B, T-1, V] float64 log-softmax of a full training forward; row t predicts tokens[:, t + 1]."""
    logits = np.asarray(_forward(model, tokens_BxT, mask_BxT), np.float64)[:, :-1]
    logits -= logits.max(axis=-1, keepdims=True)
    return logits - np.log(np.exp(logits).sum(axis=-1, keepdims=True))


def chi2_critical(df: int, z: float = 3.719) -> float:
    """Upper quantile of chi-square(df) at the normal quantile z (3.719 -> p = 1e-4), by the
    Wilson-Hilferty cube approximation (accurate to ~1% for df >= 3)."""
    a = 2.0 / (9.0 * df)
    return df * (1.0 - a + z * math.sqrt(a)) ** 3


def reference_filter(logits_BxV, temperature: float, top_k: int, top_p: float):
    """(keep_BxV, probs_BxV) in float64, from the definitions: scale by 1/temperature; keep the
    top_k largest (0 = all); then keep the shortest prefix, by decreasing probability renormalized
    over the top-k, whose mass reaches top_p; probs_BxV is the distribution renormalized over keep."""
    x = np.asarray(logits_BxV, np.float64) / temperature
    order = np.argsort(-x, axis=-1)
    ranks = np.argsort(order, axis=-1)  # rank of each token, 0 = largest
    keep = ranks < (top_k or x.shape[-1])
    p = np.where(keep, np.exp(x - x.max(axis=-1, keepdims=True)), 0.0)
    p /= p.sum(axis=-1, keepdims=True)
    p_sorted = np.take_along_axis(p, order, axis=-1)
    mass_before = np.take_along_axis(np.cumsum(p_sorted, axis=-1) - p_sorted, ranks, axis=-1)
    keep &= mass_before < top_p
    q = np.where(keep, p, 0.0)
    return keep, q / q.sum(axis=-1, keepdims=True)
