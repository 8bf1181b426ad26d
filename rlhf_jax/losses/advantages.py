"""PPO rewards and advantages for language models: KL-shaped per-token rewards and masked GAE.

Setting of Xu et al. (ICML 2024, Section 5 and PAPER_NOTES): the reward model gives one scalar score
per response, placed at its last token and clipped to [-20, 20]; every response token also gets the
KL penalty -kl_coef * (log pi_old - log pi_ref); advantages come from GAE with gamma = lambda = 1.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from rlhf_jax.losses._checks import (
    check_float,
    check_mask,
    check_non_negative,
    check_positive,
    check_rank,
    check_same_shape,
    check_unit_interval,
    upcast,
)


def last_token_mask(mask_BxT: jax.Array) -> jax.Array:
    """[B, T] bool, True only at the last position where mask_BxT == 1 (all False if none)."""
    check_rank("mask_BxT", mask_BxT, 2)
    check_mask("mask_BxT", mask_BxT)
    valid = jnp.asarray(mask_BxT) != 0
    t = valid.shape[1]
    positions_BxT = jnp.broadcast_to(jnp.arange(t), valid.shape)
    last_B = jnp.max(jnp.where(valid, positions_BxT, -1), axis=1)
    return positions_BxT == last_B[:, None]


def kl_penalized_rewards(
    scores_B: jax.Array,
    logps_BxT: jax.Array,
    ref_logps_BxT: jax.Array,
    mask_BxT: jax.Array,
    *,
    kl_coef: float,
    reward_clip: float | None,
) -> jax.Array:
    """Per-token PPO rewards: KL penalty on every response token, sequence score on the last one.

      r_t = -kl_coef * (log pi_old(y_t) - log pi_ref(y_t))  + [t is last valid] * clip(score)

    where clip(score) = clip(score, -reward_clip, reward_clip) if reward_clip is given (the paper
    uses 20) and the log-ratio is the single-sample (k1) KL estimate of the sampled token: the
    KL-regularized reward of Ouyang et al. 2022 (eq. 2), spread over tokens as in Xu et al. 2024.

    Args:
      scores_B: [B] float, reward-model score of each full response.
      logps_BxT: [B, T] float, log-probs of the sampled tokens under the rollout policy
        (pi_old; treated as data, not differentiated by any caller).
      ref_logps_BxT: [B, T] float, the same under the reference model.
      mask_BxT: [B, T] 0/1, 1 on response tokens. The score goes to the last 1 of each row;
        a row with no 1 gets no reward at all.
      kl_coef: >= 0 (the paper uses 0.1).
      reward_clip: > 0 (the paper uses 20), or None for no clipping; required so that no
        caller forgets the paper's clip by omission.

    Returns:
      rewards_BxT: [B, T] float32, 0 where mask == 0.
    """
    check_rank("scores_B", scores_B, 1)
    check_float("scores_B", scores_B)
    for name, x in (("logps_BxT", logps_BxT), ("ref_logps_BxT", ref_logps_BxT)):
        check_rank(name, x, 2)
        check_float(name, x)
    check_same_shape(logps_BxT=logps_BxT, ref_logps_BxT=ref_logps_BxT, mask_BxT=mask_BxT)
    if jnp.shape(scores_B)[0] != jnp.shape(mask_BxT)[0]:
        raise ValueError(
            f"scores_B{list(jnp.shape(scores_B))} and mask_BxT{list(jnp.shape(mask_BxT))} "
            "must have the same batch size"
        )
    check_non_negative("kl_coef", kl_coef)
    if reward_clip is not None:
        check_positive("reward_clip", reward_clip)

    last = last_token_mask(mask_BxT)
    valid = jnp.asarray(mask_BxT) != 0
    score = upcast(scores_B)
    if reward_clip is not None:
        score = jnp.clip(score, -reward_clip, reward_clip)
    log_ratio = upcast(logps_BxT) - upcast(ref_logps_BxT)
    rewards = -kl_coef * jnp.where(valid, log_ratio, 0.0) + jnp.where(last, score[:, None], 0.0)
    return jnp.where(valid, rewards, 0.0)


def gae_advantages(
    rewards_BxT: jax.Array,
    values_BxT: jax.Array,
    mask_BxT: jax.Array,
    *,
    gamma: float,
    lam: float,
) -> tuple[jax.Array, jax.Array]:
    """Generalized advantage estimation (Schulman et al. 2016, eq. 16) over masked positions.

    Over the valid positions t_1 < t_2 < ... < t_n of a row (mask == 1), with V(after t_n) = 0
    (the response ends there):
      delta_k = r_{t_k} + gamma * V_{t_{k+1}} - V_{t_k}
      A_{t_k} = delta_k + gamma * lam * A_{t_{k+1}},   A_{t_{n+1}} = 0
      R_{t_k} = A_{t_k} + V_{t_k}   (the value target)
    Masked positions are skipped entirely, so left padding, right padding and gaps all work.
    With gamma = lam = 1 (the paper's setting) A_t = sum_{s >= t} r_s - V_t. Computed with a
    reverse `lax.scan` over T; rows are independent, so batch sharding needs no communication.

    Args:
      rewards_BxT: [B, T] float per-token rewards (e.g. from `kl_penalized_rewards`).
      values_BxT: [B, T] float critic values of the states before each token (denormalized).
      mask_BxT: [B, T] 0/1 response-token mask.
      gamma: discount in [0, 1].
      lam: GAE lambda in [0, 1].

    Returns:
      (advantages_BxT, returns_BxT): float32, 0 where mask == 0. The values are treated as
      constants (`stop_gradient`).
    """
    for name, x in (("rewards_BxT", rewards_BxT), ("values_BxT", values_BxT)):
        check_rank(name, x, 2)
        check_float(name, x)
    check_same_shape(rewards_BxT=rewards_BxT, values_BxT=values_BxT, mask_BxT=mask_BxT)
    check_mask("mask_BxT", mask_BxT)
    check_unit_interval("gamma", gamma)
    check_unit_interval("lam", lam)

    valid_TxB = (jnp.asarray(mask_BxT) != 0).T
    rewards_TxB = jnp.where(valid_TxB, upcast(rewards_BxT).T, 0.0)
    values_TxB = jnp.where(valid_TxB, jax.lax.stop_gradient(upcast(values_BxT)).T, 0.0)

    def step(carry, xs):
        next_value_B, next_adv_B = carry
        r_B, v_B, valid_B = xs
        delta_B = r_B + gamma * next_value_B - v_B
        adv_B = delta_B + gamma * lam * next_adv_B
        carry = (jnp.where(valid_B, v_B, next_value_B), jnp.where(valid_B, adv_B, next_adv_B))
        return carry, jnp.where(valid_B, adv_B, 0.0)

    zeros_B = jnp.zeros(rewards_TxB.shape[1:], rewards_TxB.dtype)
    _, adv_TxB = jax.lax.scan(step, (zeros_B, zeros_B), (rewards_TxB, values_TxB, valid_TxB),
                              reverse=True)
    advantages_BxT = adv_TxB.T
    returns_BxT = jnp.where(valid_TxB.T, advantages_BxT + values_TxB.T, 0.0)
    return advantages_BxT, returns_BxT
