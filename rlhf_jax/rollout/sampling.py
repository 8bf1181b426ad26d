"""Token sampling math as pure functions: temperature, top-k, top-p (nucleus) and greedy.

One decode step turns next-token logits [B, V] into one token per row and two log-probs of it:

    logp           = log softmax(logits)[token]     the policy at temperature 1 (PPO's old log-prob)
    sampling_logp  = log softmax(filtered)[token]   the distribution the token was drawn from

`filtered` is logits / temperature, then top-k, then top-p, with every token outside the kept set at
-inf (Hugging Face's warper order). Greedy takes the argmax (the first one on ties, as torch does);
its sampling distribution is a point mass, so its sampling log-prob is 0.

Kept sets, with the logits sorted in decreasing order x_(1) >= x_(2) >= ...:
- top-k keeps every token whose logit is >= x_(k);
- top-p keeps x_(j) when the probability mass strictly before it, under the distribution after
  top-k renormalized, is < p. That is the smallest prefix whose mass reaches p; x_(1) is always kept.
Both are applied as a threshold on the logit, so tokens tied with the last kept one are kept too
(Hugging Face splits such ties by sort position instead; with real-valued logits ties are rare).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp


def check_sampling_args(*, temperature: float, top_k: int, top_p: float) -> None:
    """Raises ValueError naming the argument when a sampling hyperparameter is out of range."""
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not (
            math.isfinite(temperature) and temperature > 0):
        raise ValueError(
            f"temperature must be a finite number > 0 (use greedy for argmax), got {temperature!r}")
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0:
        raise ValueError(f"top_k must be an int >= 0 (0 = off), got {top_k!r}")
    if isinstance(top_p, bool) or not isinstance(top_p, (int, float)) or not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1] (1 = off), got {top_p!r}")


def _is_static(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def filter_logits(logits_BxV: jax.Array, *, temperature: float | jax.Array = 1.0, top_k: int = 0,
                  top_p: float | jax.Array = 1.0) -> jax.Array:
    """float32 logits / temperature with -inf outside the top-k and then top-p set.

    top_k (a Python int) = 0 and top_p = 1 switch those filters off; with both off no sort is
    done. top_k > V is the same as top_k = V. `temperature` and `top_p` may be traced scalars (a
    traced top_p always runs the filter); Python numbers are range-checked here.
    """
    check_sampling_args(temperature=temperature if _is_static(temperature) else 1.0, top_k=top_k,
                        top_p=top_p if _is_static(top_p) else 1.0)
    if logits_BxV.ndim != 2:
        raise ValueError(f"logits_BxV must be [B, V], got shape {logits_BxV.shape}")
    x_BxV = logits_BxV.astype(jnp.float32) / jnp.asarray(temperature, jnp.float32)
    vocab = x_BxV.shape[-1]
    use_top_p = not _is_static(top_p) or top_p < 1
    if top_k in (0, vocab) and not use_top_p:
        return x_BxV
    k = vocab if top_k == 0 else min(top_k, vocab)
    if not use_top_p:  # only the k-th largest logit is needed: no sort
        return jnp.where(x_BxV >= kth_largest(x_BxV, k)[:, None], x_BxV, -jnp.inf)
    sorted_BxK, _ = jax.lax.top_k(x_BxV, k)  # decreasing: top-p needs the kept values in order
    probs_BxK = jax.nn.softmax(sorted_BxK, axis=-1)  # renormalized over the top-k set
    mass_before_BxK = jnp.cumsum(probs_BxK, axis=-1) - probs_BxK
    keep_BxK = mass_before_BxK < top_p
    threshold_B = jnp.min(jnp.where(keep_BxK, sorted_BxK, jnp.inf), axis=-1)
    return jnp.where(x_BxV >= threshold_B[:, None], x_BxV, -jnp.inf)


def kth_largest(x_BxV: jax.Array, k: int) -> jax.Array:
    """[B] the k-th largest value of each float32 row (k static, 1 <= k <= V): exactly
    `lax.top_k(x, k)[0][:, -1]`, without sorting.

    Floats are mapped to unsigned integers of the same order (the sign bit flipped for positives,
    every bit for negatives), and the answer is built bit by bit from the top: the largest T with at
    least k keys >= T is the k-th largest key. 32 passes of a compare-and-count over the row instead
    of a sort (30x faster for top-k 200 over a 32000-token vocabulary on a CPU; on an accelerator a
    row of logits is a few hundred KB that the passes read from cache).
    """
    bits = jax.lax.bitcast_convert_type(x_BxV.astype(jnp.float32), jnp.int32)
    key = jnp.where(bits >= 0, bits, bits ^ jnp.int32(0x7FFFFFFF))  # int order == float order
    ukey = jax.lax.bitcast_convert_type(key, jnp.uint32) ^ jnp.uint32(0x80000000)  # unsigned order

    def bit(i, t_B):
        cand_B = t_B | (jnp.uint32(1) << (jnp.uint32(31) - i.astype(jnp.uint32)))
        enough_B = jnp.sum(ukey >= cand_B[:, None], axis=-1, dtype=jnp.int32) >= k
        return jnp.where(enough_B, cand_B, t_B)

    t_B = jax.lax.fori_loop(0, 32, bit, jnp.zeros(x_BxV.shape[:1], jnp.uint32))
    key = jax.lax.bitcast_convert_type(t_B ^ jnp.uint32(0x80000000), jnp.int32)
    return jax.lax.bitcast_convert_type(jnp.where(key >= 0, key, key ^ jnp.int32(0x7FFFFFFF)), jnp.float32)


def _gather(x_BxV, tokens_B):
    return jnp.take_along_axis(x_BxV, tokens_B[:, None], axis=-1)[:, 0]


def sample_tokens(key: jax.Array | None, logits_BxV: jax.Array, *, greedy: bool = False,
                  temperature: float | jax.Array = 1.0, top_k: int = 0,
                  top_p: float | jax.Array = 1.0):
    """Draws one token per row; returns (tokens_B int32, logps_B, sampling_logps_B) in float32.

    Args:
      key: a PRNG key (unused, may be None, when greedy).
      logits_BxV: next-token logits of any float dtype; the log-probs are computed in float32.
      greedy: argmax instead of sampling (temperature, top_k, top_p are then ignored).
      temperature, top_k, top_p: as in `filter_logits`.
    """
    logits_BxV = logits_BxV.astype(jnp.float32)
    logp_all_BxV = jax.nn.log_softmax(logits_BxV, axis=-1)
    if greedy:
        tokens_B = jnp.argmax(logits_BxV, axis=-1).astype(jnp.int32)
        sampling_logps_B = jnp.zeros(tokens_B.shape, jnp.float32)
    else:
        if key is None:
            raise ValueError("key: a PRNG key is required to sample (only greedy decoding needs none)")
        filtered_BxV = filter_logits(logits_BxV, temperature=temperature, top_k=top_k, top_p=top_p)
        tokens_B = jax.random.categorical(key, filtered_BxV, axis=-1).astype(jnp.int32)
        sampling_logps_B = _gather(jax.nn.log_softmax(filtered_BxV, axis=-1), tokens_B)
    return tokens_B, _gather(logp_all_BxV, tokens_B), sampling_logps_B
