"""PPO-Lagrangian for a cost constraint, as in safe-rlhf (Dai et al. 2024, "Safe RLHF").

Constrained problem: max_pi J_r(pi) s.t. J_c(pi) <= d, with J_c the mean episode cost (cost-model
score of a response) and d the cost limit.
Lagrangian: min_{lambda >= 0} max_pi J_r - lambda (J_c - d).

Parameterization: as safe-rlhf we optimize log(lambda), so lambda = exp(log_lambda) stays positive.
safe-rlhf minimizes L(log_lambda) = -(J_c - d) * exp(log_lambda) (with Adam); `lagrange_loss`
returns that objective for use with any optax optimizer, and `lagrange_update` does one plain
gradient-descent step on it. When the constraint is violated (J_c > d) lambda grows, otherwise it
shrinks towards 0 (never reaching it).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from rlhf_jax.losses._checks import (
    check_float,
    check_non_negative,
    check_positive,
    check_rank,
    check_same_shape,
    upcast,
)


def lagrange_loss(
    log_lambda: jax.Array, mean_episode_cost: jax.Array, *, cost_limit: float
) -> jax.Array:
    """-(J_c - d) * exp(log_lambda): the multiplier's objective (minimize it w.r.t. log_lambda).

    `mean_episode_cost` is a constant (`stop_gradient`); both arguments are scalars.
    """
    check_rank("log_lambda", log_lambda, 0)
    check_rank("mean_episode_cost", mean_episode_cost, 0)
    violation = jax.lax.stop_gradient(upcast(mean_episode_cost)) - cost_limit
    return -violation * jnp.exp(upcast(log_lambda))


def lagrange_update(
    log_lambda: jax.Array,
    mean_episode_cost: jax.Array,
    *,
    cost_limit: float,
    lr: float,
    max_lambda: float | None = None,
) -> jax.Array:
    """One gradient step on `lagrange_loss`: log_lambda + lr * (J_c - d) * exp(log_lambda).

    Args:
      log_lambda: scalar float, log of the Lagrange multiplier.
      mean_episode_cost: scalar float J_c, mean cost over the batch's responses.
      cost_limit: the threshold d (safe-rlhf uses 0: a safe response has cost <= 0).
      lr: > 0 step size.
      max_lambda: optional > 0 upper bound; log_lambda is clipped to log(max_lambda).

    Returns:
      new log_lambda, scalar float32.
    """
    check_float("log_lambda", log_lambda)
    check_positive("lr", lr)
    if max_lambda is not None:
        check_positive("max_lambda", max_lambda)
    check_rank("log_lambda", log_lambda, 0)
    check_rank("mean_episode_cost", mean_episode_cost, 0)
    log_lambda = upcast(log_lambda)
    violation = jax.lax.stop_gradient(upcast(mean_episode_cost)) - cost_limit
    # d lagrange_loss / d log_lambda = -(J_c - d) * exp(log_lambda); descend on it.
    new = log_lambda + lr * violation * jnp.exp(log_lambda)
    if max_lambda is not None:
        new = jnp.minimum(new, jnp.log(max_lambda))
    return new


def lagrangian_advantages(
    reward_advantages_BxT: jax.Array, cost_advantages_BxT: jax.Array, lam: jax.Array
) -> jax.Array:
    """(A_r - lambda * A_c) / (1 + lambda): the actor's advantage under the Lagrangian (safe-rlhf).

    Dividing by 1 + lambda keeps the advantage scale bounded as lambda grows.

    Args:
      reward_advantages_BxT, cost_advantages_BxT: same-shape float arrays (any shape).
      lam: scalar lambda >= 0 (e.g. exp(log_lambda)); treated as a constant (`stop_gradient`).
    """
    check_float("reward_advantages_BxT", reward_advantages_BxT)
    check_float("cost_advantages_BxT", cost_advantages_BxT)
    check_same_shape(
        reward_advantages_BxT=reward_advantages_BxT, cost_advantages_BxT=cost_advantages_BxT
    )
    check_rank("lam", lam, 0)
    check_non_negative("lam", lam)
    lam = jax.lax.stop_gradient(upcast(lam))
    return (upcast(reward_advantages_BxT) - lam * upcast(cost_advantages_BxT)) / (1.0 + lam)
