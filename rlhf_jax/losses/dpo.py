"""Direct Preference Optimization loss (Rafailov et al. 2023), as used by Xu et al. (ICML 2024).

Pure function of four per-sequence log-prob arrays; it knows nothing of models. Get the log-probs
with `rlhf_jax.losses.sequence_logps` (sum over response tokens).
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


def dpo_loss(
    policy_chosen_logps_B: jax.Array,
    policy_rejected_logps_B: jax.Array,
    ref_chosen_logps_B: jax.Array,
    ref_rejected_logps_B: jax.Array,
    *,
    beta: float,
    mask_B: jax.Array | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """DPO loss, mean over valid pairs (Rafailov et al. 2023, eq. 7).

    For a pair (y_w preferred over y_l) given x:
      h = beta * [(log pi(y_w|x) - log pi_ref(y_w|x)) - (log pi(y_l|x) - log pi_ref(y_l|x))]
      loss = -log sigmoid(h) = softplus(-h)
    Equivalently log(1 + (pi(y_l) pi_ref(y_w) / (pi(y_w) pi_ref(y_l)))^beta): the loss depends only
    on the two compared responses, which is why DPO's optimum can put mass anywhere else
    (Xu et al. 2024, Theorem 4.1, Table 1). At policy == reference the loss is log 2.

    The reference log-probs are wrapped in `stop_gradient`: the reference model never moves.

    Args:
      policy_chosen_logps_B, policy_rejected_logps_B: [B] float, log pi(y|x) summed over tokens.
      ref_chosen_logps_B, ref_rejected_logps_B: [B] float, same under the reference model.
      beta: > 0, inverse temperature of the implicit reward (the paper uses 0.1).
      mask_B: optional [B] 0/1, 0 for padding pairs (e.g. to fill a fixed batch shape).

    Returns:
      loss: scalar, sum of per-pair losses over valid pairs / their number (0 if none).
      metrics: scalars, all means over valid pairs, plus "count" (number of valid pairs):
        loss; chosen_reward, rejected_reward (beta * log-ratio to the reference);
        reward_margin (their difference); reward_accuracy (share with chosen > rejected reward).
    """
    arrays = dict(
        policy_chosen_logps_B=policy_chosen_logps_B,
        policy_rejected_logps_B=policy_rejected_logps_B,
        ref_chosen_logps_B=ref_chosen_logps_B,
        ref_rejected_logps_B=ref_rejected_logps_B,
    )
    for name, x in arrays.items():
        check_rank(name, x, 1)
        check_float(name, x)
    check_same_shape(**arrays, mask_B=mask_B)
    check_positive("beta", beta)
    if mask_B is None:
        mask_B = jnp.ones(jnp.shape(policy_chosen_logps_B), jnp.bool_)
    check_mask("mask_B", mask_B)
    valid = jnp.asarray(mask_B) != 0
    # Zero padding pairs before any arithmetic so a NaN there cannot reach the loss or gradient.
    pc, pr, rc, rr = (jnp.where(valid, upcast(x), 0.0) for x in arrays.values())

    chosen_reward = beta * (pc - jax.lax.stop_gradient(rc))
    rejected_reward = beta * (pr - jax.lax.stop_gradient(rr))
    margin = chosen_reward - rejected_reward
    losses = jax.nn.softplus(-margin)

    loss = masked_mean(losses, valid)
    metrics = {
        "loss": loss,
        "chosen_reward": masked_mean(chosen_reward, valid),
        "rejected_reward": masked_mean(rejected_reward, valid),
        "reward_margin": masked_mean(margin, valid),
        "reward_accuracy": masked_mean((margin > 0).astype(jnp.float32), valid),
        "count": masked_count(valid),
    }
    return loss, metrics
