"""Masked reductions: sums over valid entries divided by their count, never means of means.

Masks are 0/1 arrays (bool, or any numeric dtype holding only 0 and 1) with the same shape as the
data, e.g. `mask_BxT[b, t] = 1` when token t of sequence b is a response token. Entries where the
mask is 0 are ignored through `jnp.where`, so a NaN or -inf sitting in padding never leaks into a
result. Reductions accumulate in float32 (or wider) whatever the input dtype.

Zero valid entries: `masked_mean`, `masked_var` and `masked_whiten` return 0 (not NaN) when the mask
is all zero, and `masked_count` returns 0, so a trainer that sums `mean * count` over micro-batches
gets an exact 0 contribution from an empty one.

Global batch statistics: every reduction here is an ordinary `jnp` reduction, so under `jax.jit`
with inputs sharded over a mesh the compiler inserts the cross-device sums and the result is the
statistic of the whole (global) batch, identical to the single-device value.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp

from rlhf_jax.losses._checks import check_mask, check_same_shape, upcast

Axis = int | tuple[int, ...] | None


def _bool_mask(mask: jax.Array) -> jax.Array:
    check_mask("mask", mask)
    mask = jnp.asarray(mask)
    return mask if mask.dtype == jnp.bool_ else mask != 0


def masked_count(mask: jax.Array, axis: Axis = None) -> jax.Array:
    """Number of valid (mask == 1) entries along `axis`, as float32."""
    return jnp.sum(_bool_mask(mask), axis=axis, dtype=jnp.float32)


def masked_sum(x: jax.Array, mask: jax.Array, axis: Axis = None) -> jax.Array:
    """sum(x[mask == 1]) along `axis`, accumulated in float32; `x` and `mask` share one shape."""
    check_same_shape(x=x, mask=mask)
    return jnp.sum(jnp.where(_bool_mask(mask), upcast(x), 0.0), axis=axis)


def safe_divide(total: jax.Array, count: jax.Array) -> jax.Array:
    """total / count where count > 0, and exactly 0 where count == 0 (no NaN, finite gradients)."""
    nonzero = count > 0
    return jnp.where(nonzero, total / jnp.where(nonzero, count, 1.0), 0.0)


def masked_mean(x: jax.Array, mask: jax.Array, axis: Axis = None) -> jax.Array:
    """masked_sum(x, mask) / masked_count(mask); 0 where there are no valid entries.

    A token-level mean over a batch is one sum over all valid tokens divided by their number
    (not a mean of per-sequence means). To combine micro-batches, add `masked_sum`s and
    `masked_count`s separately and divide once.
    """
    return safe_divide(masked_sum(x, mask, axis), masked_count(mask, axis))


def masked_var(x: jax.Array, mask: jax.Array, axis: Axis = None) -> jax.Array:
    """Population variance of the valid entries: masked_mean((x - mean)^2); 0 if none are valid.

    Two-pass (mean first, then squared deviations) for numerical stability. Divides by N, not N - 1.
    """
    mean = masked_mean(x, mask, axis)
    if axis is not None:
        mean = jnp.expand_dims(mean, axis)
    return masked_mean(jnp.square(upcast(x) - mean), mask, axis)


def masked_whiten(
    x: jax.Array, mask: jax.Array, *, shift_mean: bool = True, eps: float = 1e-8
) -> jax.Array:
    """Normalizes the valid entries of `x` to zero mean and unit variance over the whole array.

    out = (x - mean) / sqrt(var + eps)         if shift_mean
    out = (x - mean) / sqrt(var + eps) + mean  otherwise (rescale only, keep the mean)

    with mean and population variance taken over all valid entries of `x` (every axis). Used for
    PPO advantage normalization (Xu et al. 2024, Table 3 "+ adv. norm"). Under `jax.jit` with a
    batch-sharded `x` the statistics are those of the global batch, not per-device ones.

    Args:
      x: any shape, e.g. advantages_BxT.
      mask: 0/1, same shape as `x`.
      shift_mean: if False, the mean is added back after scaling.
      eps: added to the variance before the square root.

    Returns:
      float32 (or wider) array shaped like `x`, 0 where mask == 0. All-zero mask: all zeros.
    """
    check_same_shape(x=x, mask=mask)
    mean = masked_mean(x, mask)
    var = masked_var(x, mask)
    out = (upcast(x) - mean) * jax.lax.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return jnp.where(_bool_mask(mask), out, 0.0)


def combine_metrics(metrics: Sequence[Mapping[str, jax.Array]]) -> dict[str, jax.Array]:
    """Merges per-micro-batch metrics dicts exactly: count-weighted means, summed counts.

    Every loss in `rlhf_jax.losses` returns `(loss, metrics)` where all entries of `metrics` are
    means over the same valid elements (tokens or sequences) and `metrics["count"]` is their number.
    For micro-batches i, the full-batch mean of a key is sum_i(m_i[key] * count_i) / sum_i(count_i);
    this computes that for every key (0 if the total count is 0).

    Args:
      metrics: non-empty sequence of dicts with identical keys, each holding a "count" entry.

    Returns:
      one dict with the same keys; "count" is the total count.
    """
    if not metrics:
        raise ValueError("metrics must be a non-empty sequence of dicts")
    keys = set(metrics[0])
    for i, m in enumerate(metrics):
        if "count" not in m:
            raise ValueError(f"metrics[{i}] has no 'count' entry; got keys {sorted(m)}")
        if set(m) != keys:
            raise ValueError(
                f"metrics[{i}] keys {sorted(m)} differ from metrics[0] keys {sorted(keys)}"
            )
    total = sum(upcast(m["count"]) for m in metrics)
    out = {
        k: safe_divide(sum(upcast(m[k]) * upcast(m["count"]) for m in metrics), total)
        for k in metrics[0]  # a fixed order: the traced program (and its cache key) is deterministic
        if k != "count"
    }
    out["count"] = total
    return out
