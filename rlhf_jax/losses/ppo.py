"""PPO clipped surrogate losses for the actor and the critic, token-level means.

Both losses average over all valid tokens of the (global) batch: sum over tokens / number of tokens,
as in ReaLHF, the system Xu et al. (ICML 2024) used. Advantages are normalized before they reach the
actor loss (`masked_whiten`); with value normalization on, pass normalized values and returns.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from rlhf_jax.losses._checks import (
    check_float,
    check_mask,
    check_positive,
    check_rank,
    check_same_shape,
    upcast,
)
from rlhf_jax.losses.masked import masked_count, masked_mean


def _check_token_arrays(mask_BxT: jax.Array, **arrays: jax.Array) -> jax.Array:
    for name, x in arrays.items():
        check_rank(name, x, 2)
        check_float(name, x)
    check_same_shape(**arrays, mask_BxT=mask_BxT)
    check_mask("mask_BxT", mask_BxT)
    return jnp.asarray(mask_BxT) != 0


def ppo_policy_loss(
    logps_BxT: jax.Array,
    old_logps_BxT: jax.Array,
    advantages_BxT: jax.Array,
    mask_BxT: jax.Array,
    *,
    clip_eps: float,
    dual_clip: float | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """PPO clipped surrogate (Schulman et al. 2017, eq. 7), negated, token-level mean.

      rho_t = exp(log pi(y_t) - log pi_old(y_t))
      l_t   = max(-A_t * rho_t, -A_t * clip(rho_t, 1 - eps, 1 + eps))
      loss  = sum_t mask_t * l_t / sum_t mask_t

    With `dual_clip` = c > 1 (dual-clip PPO, Ye et al. 2020, "Mastering Complex Control in MOBA
    Games with Deep Reinforcement Learning", AAAI 2020), tokens with A_t < 0 use min(l_t, -c * A_t):
    a huge ratio on a bad action can no longer make the loss (and its gradient) unbounded.
    `old_logps_BxT` and `advantages_BxT` are constants (`stop_gradient`).

    Args:
      logps_BxT: [B, T] float log-probs of the sampled tokens under the current policy.
      old_logps_BxT: [B, T] float, same under the rollout policy.
      advantages_BxT: [B, T] float (normally whitened over the global batch).
      mask_BxT: [B, T] 0/1 response-token mask.
      clip_eps: eps > 0 (0.2 in our configs; not stated in the paper).
      dual_clip: None (off) or c > 1 (3 is usual).

    Returns:
      loss: scalar, 0 if no valid token.
      metrics: token means plus "count" (number of valid tokens): loss, clip_fraction (share of
        tokens where the clipped term is the active one), dual_clip_fraction (share where the
        dual bound -c * A is active; 0 when off), approx_kl (mean of
        0.5 * (log pi - log pi_old)^2), importance_ratio (mean rho).
    """
    valid = _check_token_arrays(
        mask_BxT,
        logps_BxT=logps_BxT,
        old_logps_BxT=old_logps_BxT,
        advantages_BxT=advantages_BxT,
    )
    check_positive("clip_eps", clip_eps)
    if dual_clip is not None and isinstance(dual_clip, (int, float)) and not dual_clip > 1.0:
        raise ValueError(f"dual_clip must be > 1 or None, got {dual_clip}")
    # Padding may hold anything (NaN, -inf log-probs): zero every input there first, so that
    # neither the loss nor its gradient can pick up a NaN from a masked position.
    logps, old_logps, adv = (
        jnp.where(valid, upcast(x), 0.0) for x in (logps_BxT, old_logps_BxT, advantages_BxT)
    )
    adv = jax.lax.stop_gradient(adv)
    log_ratio = logps - jax.lax.stop_gradient(old_logps)
    ratio = jnp.exp(log_ratio)
    unclipped = -adv * ratio
    clipped = -adv * jnp.clip(ratio, 1.0 - clip_eps, 1.0 + clip_eps)
    losses = jnp.maximum(unclipped, clipped)
    if dual_clip is None:
        dual_active = jnp.zeros_like(losses, jnp.bool_)
    else:
        dual_bound = -dual_clip * adv
        dual_active = (adv < 0) & (losses > dual_bound)
        losses = jnp.where(dual_active, dual_bound, losses)

    loss = masked_mean(losses, valid)
    metrics = {
        "loss": loss,
        "clip_fraction": masked_mean((clipped > unclipped).astype(jnp.float32), valid),
        "dual_clip_fraction": masked_mean(dual_active.astype(jnp.float32), valid),
        "approx_kl": masked_mean(0.5 * jnp.square(log_ratio), valid),
        "importance_ratio": masked_mean(ratio, valid),
        "count": masked_count(valid),
    }
    return loss, metrics


def ppo_value_loss(
    values_BxT: jax.Array,
    old_values_BxT: jax.Array,
    returns_BxT: jax.Array,
    mask_BxT: jax.Array,
    *,
    clip_eps: float | None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Clipped value loss (as in OpenAI baselines PPO2 and ReaLHF), token-level mean.

      v_clip = old_v + clip(v - old_v, -eps, eps)
      l_t    = 0.5 * max((v - R)^2, (v_clip - R)^2)
      loss   = sum_t mask_t * l_t / sum_t mask_t

    or l_t = 0.5 * (v - R)^2 when clip_eps is None. `old_values_BxT` and `returns_BxT` are
    constants.
    Xu et al. use value-loss clipping (clip range not stated; 0.2 in our configs).

    Args:
      values_BxT: [B, T] float critic outputs (normalized space if value normalization is on).
      old_values_BxT: [B, T] float critic outputs at rollout time, same space.
      returns_BxT: [B, T] float value targets, same space.
      mask_BxT: [B, T] 0/1 response-token mask.
      clip_eps: eps > 0, or None for the unclipped loss.

    Returns:
      loss: scalar, 0 if no valid token.
      metrics: token means plus "count": loss, clip_fraction (share of tokens where the clipped
        error is the larger one), value (mean v), squared_error (mean (v - R)^2).
    """
    valid = _check_token_arrays(
        mask_BxT, values_BxT=values_BxT, old_values_BxT=old_values_BxT, returns_BxT=returns_BxT
    )
    if clip_eps is not None:
        check_positive("clip_eps", clip_eps)
    values, old_values, returns = (
        jnp.where(valid, upcast(x), 0.0) for x in (values_BxT, old_values_BxT, returns_BxT)
    )
    old_values = jax.lax.stop_gradient(old_values)
    returns = jax.lax.stop_gradient(returns)
    err = jnp.square(values - returns)
    if clip_eps is None:
        losses, clip_frac = 0.5 * err, jnp.zeros_like(err)
    else:
        v_clipped = old_values + jnp.clip(values - old_values, -clip_eps, clip_eps)
        err_clipped = jnp.square(v_clipped - returns)
        losses = 0.5 * jnp.maximum(err, err_clipped)
        clip_frac = (err_clipped > err).astype(jnp.float32)

    loss = masked_mean(losses, valid)
    metrics = {
        "loss": loss,
        "clip_fraction": masked_mean(clip_frac, valid),
        "value": masked_mean(values, valid),
        "squared_error": masked_mean(err, valid),
        "count": masked_count(valid),
    }
    return loss, metrics
