"""Direct preference losses on per-sequence log-probs: DPO, conservative DPO and IPO.

Pure functions of four per-sequence log-prob arrays; they know nothing of models. Get the log-probs
with `rlhf_jax.losses.sequence_logps` (sum over response tokens).

Variants are registered by name in `DPO_VARIANTS`; a config validates its `variant` string once
with `check_dpo_variant` when it loads, and `dpo_loss(..., variant=name)` looks the function up.
To add a variant, add one entry: a function (h, beta, label_smoothing) -> per-pair losses, where
h = (log pi(y_w) - log pi_ref(y_w)) - (log pi(y_l) - log pi_ref(y_l)) is the log-ratio margin.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Mapping

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


def _sigmoid_losses(h: jax.Array, beta: float, label_smoothing: float) -> jax.Array:
    """DPO (Rafailov et al. 2023, eq. 7) and, with label_smoothing = eps > 0, conservative DPO
    (Mitchell 2023, "A note on DPO with noisy preferences"): the label is flipped with
    probability eps, so
      loss = -(1 - eps) log sigmoid(beta h) - eps log sigmoid(-beta h)
           = softplus(-beta h) + eps * beta * h      (as softplus(x) - softplus(-x) = x).
    """
    x = beta * h
    if isinstance(label_smoothing, (int, float)) and label_smoothing == 0:
        return jax.nn.softplus(-x)  # exact at an infinite margin (0 * inf would be NaN)
    smooth = jnp.where(label_smoothing > 0, label_smoothing * jax.nn.softplus(x), 0.0)
    return (1.0 - label_smoothing) * jax.nn.softplus(-x) + smooth


def _ipo_losses(h: jax.Array, beta: float, label_smoothing: float) -> jax.Array:
    """IPO (Azar et al. 2023, "A General Theoretical Paradigm to Understand Learning from Human
    Preferences", its empirical IPO loss on sampled pairs, with tau = beta):
      loss = (h - 1 / (2 beta))^2
    a squared loss that drives the log-ratio margin to 1 / (2 beta) instead of to infinity.
    Label smoothing has no meaning here and must be 0.
    """
    if not (isinstance(label_smoothing, (int, float)) and label_smoothing == 0):
        raise ValueError(f"variant 'ipo' takes no label_smoothing, got {label_smoothing!r}")
    return jnp.square(h - 1.0 / (2.0 * beta))


DpoVariant = Callable[[jax.Array, float, float], jax.Array]

#: Registered DPO variants: name -> (h, beta, label_smoothing) -> per-pair losses.
DPO_VARIANTS: Mapping[str, DpoVariant] = types.MappingProxyType(
    {"sigmoid": _sigmoid_losses, "ipo": _ipo_losses}
)


def check_dpo_variant(variant: str) -> str:
    """Returns `variant` if it names an entry of `DPO_VARIANTS`, else raises ValueError listing
    the valid names. Call it when a config loads, so a typo fails before any compilation."""
    if not isinstance(variant, str) or variant not in DPO_VARIANTS:
        raise ValueError(
            f"unknown DPO variant {variant!r}; valid variants: {', '.join(sorted(DPO_VARIANTS))}"
        )
    return variant


def dpo_loss(
    policy_chosen_logps_B: jax.Array,
    policy_rejected_logps_B: jax.Array,
    ref_chosen_logps_B: jax.Array,
    ref_rejected_logps_B: jax.Array,
    *,
    beta: float,
    label_smoothing: float = 0.0,
    variant: str = "sigmoid",
    mask_B: jax.Array | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Direct preference loss of a registered variant, mean over valid pairs.

    For a pair (y_w preferred over y_l) given x, with the log-ratio margin
      h = (log pi(y_w|x) - log pi_ref(y_w|x)) - (log pi(y_l|x) - log pi_ref(y_l|x)):
      "sigmoid" (DPO, Rafailov et al. 2023, eq. 7):  loss = -log sigmoid(beta h) = softplus(-beta h)
        with label_smoothing = eps (conservative DPO): softplus(-beta h) + eps * beta * h
      "ipo" (Azar et al. 2023, empirical IPO):       loss = (h - 1 / (2 beta))^2
    DPO equals log(1 + (pi(y_l) pi_ref(y_w) / (pi(y_w) pi_ref(y_l)))^beta): it depends only on
    the two compared responses, which is why DPO's optimum can put mass anywhere else
    (Xu et al. 2024, Theorem 4.1, Table 1). At policy == reference, DPO gives log 2 for every beta
    and IPO gives 1 / (4 beta^2).

    IPO's paper scores whole sequences; some codebases (TRL) use token-mean log-probs for it.
    Either works here: pass sums or `sequence_logps(..., length_normalized=True)`.
    The reference log-probs are wrapped in `stop_gradient`: the reference model never moves.

    Args:
      policy_chosen_logps_B, policy_rejected_logps_B: [B] float, log pi(y|x) summed over tokens.
      ref_chosen_logps_B, ref_rejected_logps_B: [B] float, same under the reference model.
      beta: > 0, inverse temperature of the implicit reward (the paper uses 0.1); IPO's tau.
      label_smoothing: eps in [0, 0.5), the assumed share of flipped labels ("sigmoid" only).
      variant: a key of `DPO_VARIANTS` (a static Python string).
      mask_B: optional [B] 0/1, 0 for padding pairs (e.g. to fill a fixed batch shape).

    Returns:
      loss: scalar, sum of per-pair losses over valid pairs / their number (0 if none).
      metrics: scalars, all means over valid pairs, plus "count" (number of valid pairs):
        loss; chosen_reward, rejected_reward (implicit rewards beta * log-ratio to the reference);
        margin (chosen_reward - rejected_reward); accuracy (share with chosen > rejected reward).
    """
    losses_fn = DPO_VARIANTS[check_dpo_variant(variant)]
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
    if isinstance(label_smoothing, (int, float)) and not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"label_smoothing must be in [0, 0.5), got {label_smoothing}")
    if mask_B is None:
        mask_B = jnp.ones(jnp.shape(policy_chosen_logps_B), jnp.bool_)
    check_mask("mask_B", mask_B)
    valid = jnp.asarray(mask_B) != 0
    # Zero padding pairs before any arithmetic so a NaN there cannot reach the loss or gradient.
    pc, pr, rc, rr = (jnp.where(valid, upcast(x), 0.0) for x in arrays.values())

    chosen_logratio = pc - jax.lax.stop_gradient(rc)
    rejected_logratio = pr - jax.lax.stop_gradient(rr)
    h = chosen_logratio - rejected_logratio
    losses = losses_fn(h, beta, label_smoothing)
    chosen_reward = beta * chosen_logratio
    rejected_reward = beta * rejected_logratio
    margin = chosen_reward - rejected_reward

    loss = masked_mean(losses, valid)
    metrics = {
        "loss": loss,
        "chosen_reward": masked_mean(chosen_reward, valid),
        "rejected_reward": masked_mean(rejected_reward, valid),
        "margin": masked_mean(margin, valid),
        "accuracy": masked_mean((margin > 0).astype(jnp.float32), valid),
        "count": masked_count(valid),
    }
    return loss, metrics
