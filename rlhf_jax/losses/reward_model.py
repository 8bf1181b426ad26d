"""Preference losses for scalar-head reward and cost models.

`reward_loss` is the Bradley-Terry pairwise loss behind the reward model that PPO optimizes.
`cost_loss` is the safe-rlhf cost-model loss (Dai et al. 2024, "Safe RLHF") that the study's
SafeRLHF evaluation relies on (Xu et al. 2024, Section 6 / PAPER_NOTES): it ranks the pair and also
classifies each response as safe (cost < 0) or unsafe (cost > 0).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from rlhf_jax.losses._checks import check_float, check_mask, check_rank, check_same_shape, upcast
from rlhf_jax.losses.masked import masked_count, masked_mean


def _check_scores(mask_B: jax.Array | None, **scores: jax.Array) -> jax.Array:
    """Checks [B] float scores and an optional mask; returns the mask as bool (all True if None)."""
    for name, x in scores.items():
        check_rank(name, x, 1)
        check_float(name, x)
    check_same_shape(**scores, mask_B=mask_B)
    if mask_B is None:
        return jnp.ones(jnp.shape(next(iter(scores.values()))), jnp.bool_)
    check_mask("mask_B", mask_B)
    return jnp.asarray(mask_B) != 0


def reward_loss(
    chosen_scores_B: jax.Array,
    rejected_scores_B: jax.Array,
    *,
    mask_B: jax.Array | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Bradley-Terry loss: mean over valid pairs of -log sigmoid(r(x, y_w) - r(x, y_l)).

    (Ouyang et al. 2022, eq. 1.) Equal scores give log 2.

    Args:
      chosen_scores_B, rejected_scores_B: [B] float rewards of the preferred / other response.
      mask_B: optional [B] 0/1, 0 for padding pairs.

    Returns:
      loss: scalar (0 if no valid pair).
      metrics: means over valid pairs plus "count": loss, accuracy (share with chosen > rejected),
        margin (chosen - rejected), chosen_score, rejected_score.
    """
    mask_B = _check_scores(
        mask_B, chosen_scores_B=chosen_scores_B, rejected_scores_B=rejected_scores_B
    )
    # Padding pairs are zeroed first so a NaN there reaches neither the loss nor the gradient.
    chosen, rejected = (
        jnp.where(mask_B, upcast(x), 0.0) for x in (chosen_scores_B, rejected_scores_B)
    )
    margin = chosen - rejected
    loss = masked_mean(jax.nn.softplus(-margin), mask_B)
    metrics = {
        "loss": loss,
        "accuracy": masked_mean((margin > 0).astype(jnp.float32), mask_B),
        "margin": masked_mean(margin, mask_B),
        "chosen_score": masked_mean(chosen, mask_B),
        "rejected_score": masked_mean(rejected, mask_B),
        "count": masked_count(mask_B),
    }
    return loss, metrics


def cost_loss(
    safer_costs_B: jax.Array,
    unsafer_costs_B: jax.Array,
    safer_is_safe_B: jax.Array,
    unsafer_is_safe_B: jax.Array,
    *,
    mask_B: jax.Array | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Cost-model loss of safe-rlhf (Dai et al. 2024, "Safe RLHF"), mean over valid pairs.

      loss = -log sigmoid(c_unsafer - c_safer)
             - log sigmoid(s_safer * c_safer) - log sigmoid(s_unsafer * c_unsafer)

    with sign s = -1 for a response labelled safe and s = +1 for an unsafe one, so safe responses
    are pushed to negative cost and unsafe ones to positive cost; the safety rate of a policy is
    then the share of its responses with cost <= 0.

    Args:
      safer_costs_B: [B] float cost of the response labelled safer (less harmful).
      unsafer_costs_B: [B] float cost of the other response.
      safer_is_safe_B, unsafer_is_safe_B: [B] 0/1 (bool or numeric), 1 if that response is safe.
      mask_B: optional [B] 0/1, 0 for padding pairs.

    Returns:
      loss: scalar (0 if no valid pair).
      metrics: means over valid pairs plus "count": loss, accuracy (share with
        c_unsafer > c_safer), sign_accuracy (share of the 2B responses whose cost sign matches the
        label, cost <= 0 counting as safe), safer_cost, unsafer_cost.
    """
    mask_B = _check_scores(mask_B, safer_costs_B=safer_costs_B, unsafer_costs_B=unsafer_costs_B)
    for name, x in (("safer_is_safe_B", safer_is_safe_B), ("unsafer_is_safe_B", unsafer_is_safe_B)):
        check_mask(name, x)
        check_same_shape(safer_costs_B=safer_costs_B, **{name: x})
    safer, unsafer = (jnp.where(mask_B, upcast(x), 0.0) for x in (safer_costs_B, unsafer_costs_B))
    safer_safe = jnp.asarray(safer_is_safe_B) != 0
    unsafer_safe = jnp.asarray(unsafer_is_safe_B) != 0
    s_safer = jnp.where(safer_safe, -1.0, 1.0)
    s_unsafer = jnp.where(unsafer_safe, -1.0, 1.0)
    margin = unsafer - safer
    losses = (
        jax.nn.softplus(-margin)
        + jax.nn.softplus(-s_safer * safer)
        + jax.nn.softplus(-s_unsafer * unsafer)
    )
    sign_ok = 0.5 * (
        ((safer <= 0) == safer_safe).astype(jnp.float32)
        + ((unsafer <= 0) == unsafer_safe).astype(jnp.float32)
    )
    loss = masked_mean(losses, mask_B)
    metrics = {
        "loss": loss,
        "accuracy": masked_mean((margin > 0).astype(jnp.float32), mask_B),
        "sign_accuracy": masked_mean(sign_ok, mask_B),
        "safer_cost": masked_mean(safer, mask_B),
        "unsafer_cost": masked_mean(unsafer, mask_B),
        "count": masked_count(mask_B),
    }
    return loss, metrics
