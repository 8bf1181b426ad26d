"""Value normalization: running mean and variance of value targets as pure state functions.

Xu et al. (ICML 2024) turn value normalization on but do not give its form. We keep exact running
moments over every valid token seen so far (Chan et al. 1979 parallel merge of (count, mean, M2)),
so the state after batches A then B equals the state after the concatenated batch A + B, and the
critic learns targets (R - mean) / std. Use it as a namespace; one PPO step, for example:

  from rlhf_jax.losses import value_normalizer as vn
  state = vn.init()                                      # once, then checkpoint it
  values_BxT = vn.denormalize(state, critic_out_BxT)     # raw-scale values for GAE
  adv_BxT, returns_BxT = gae_advantages(rewards_BxT, values_BxT, mask_BxT, gamma=1.0, lam=1.0)
  state = vn.update(state, returns_BxT, mask_BxT)
  targets_BxT = vn.normalize(state, returns_BxT)         # what the critic regresses on

The state is a NamedTuple, hence a pytree: jit it, shard it (replicated), checkpoint it.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from rlhf_jax.losses._checks import check_positive, check_same_shape, upcast
from rlhf_jax.losses.masked import masked_count, masked_mean, masked_var

__all__ = ["ValueNormalizerState", "denormalize", "init", "normalize", "update"]


class ValueNormalizerState(NamedTuple):
    """Running moments of all valid values seen: mean, population variance, count (float32 scalars).

    Float32 `count` is exact up to 2^24 tokens and then rounds to ~1e-7 relative error, which only
    shifts the merge weights by that much.
    """

    mean: jax.Array
    var: jax.Array
    count: jax.Array


def init() -> ValueNormalizerState:
    """Empty state: count 0, mean 0, var 1 (so normalize is the identity up to eps until data)."""
    return ValueNormalizerState(
        mean=jnp.zeros((), jnp.float32),
        var=jnp.ones((), jnp.float32),
        count=jnp.zeros((), jnp.float32),
    )


def update(state: ValueNormalizerState, x: jax.Array, mask: jax.Array) -> ValueNormalizerState:
    """Merges the valid entries of `x` (any shape, e.g. returns_BxT) into the running moments.

    Batch moments (n_b, m_b, v_b), running (n_a, m_a, v_a), n = n_a + n_b, d = m_b - m_a:
      mean = m_a + d * n_b / n
      var  = (n_a * v_a + n_b * v_b + d^2 * n_a * n_b / n) / n
    A batch with no valid entry leaves the state unchanged. The batch moments are global under
    `jax.jit` with sharded inputs. `x` is treated as a constant (`stop_gradient`).

    Args:
      state: the running moments.
      x: float array of any shape.
      mask: 0/1, same shape as `x`.

    Returns:
      the new state (float32 scalars).
    """
    check_same_shape(x=x, mask=mask)
    x = jax.lax.stop_gradient(upcast(x))
    n_b = masked_count(mask)
    m_b = masked_mean(x, mask)
    v_b = masked_var(x, mask)
    n_a, m_a, v_a = state.count, state.mean, state.var
    n = n_a + n_b
    w_b = jnp.where(n > 0, n_b / jnp.where(n > 0, n, 1.0), 0.0)
    w_a = 1.0 - w_b
    delta = m_b - m_a
    mean = m_a + delta * w_b
    var = w_a * v_a + w_b * v_b + jnp.square(delta) * w_a * w_b
    return ValueNormalizerState(mean=mean, var=var, count=n)


def normalize(state: ValueNormalizerState, x: jax.Array, *, eps: float = 1e-5) -> jax.Array:
    """(x - mean) / sqrt(var + eps), float32, any shape, element-wise (no reduction)."""
    check_positive("eps", eps)
    return (upcast(x) - state.mean) * jax.lax.rsqrt(state.var + eps)


def denormalize(state: ValueNormalizerState, x: jax.Array, *, eps: float = 1e-5) -> jax.Array:
    """Inverse of `normalize` with the same eps: x * sqrt(var + eps) + mean, element-wise."""
    check_positive("eps", eps)
    return upcast(x) * jnp.sqrt(state.var + eps) + state.mean
