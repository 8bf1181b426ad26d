"""PRO: Preference Ranking Optimization (Song et al. 2023), a baseline in Xu et al. Table 4."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from rlhf_jax.losses._checks import check_non_negative
from rlhf_jax.losses.masked import masked_count, masked_mean
from rlhf_jax.losses.ranking import (
    best_candidate_nll,
    better_than,
    _prepare_candidates,
    length_normalized,
    pair_accuracy,
)


def pro_loss(
    logp_sums_BxK: jax.Array,
    token_counts_BxK: jax.Array,
    rewards_BxK: jax.Array,
    *,
    sft_weight: float,
    reward_temperature: bool = True,
    mask_B: jax.Array | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """PRO loss L = L_PRO + beta * L_SFT per prompt, mean over valid prompts.

    Song et al. 2023, Section 3. With candidates sorted by reward, y^1 best, and the policy score
    r(y) = (1 / |y|) sum_t log pi(y_t | x, y_<t), the ranking loss is
      L_PRO = -sum_{k=1}^{n-1} log[ exp(r(y^k) / T_k^k) / sum_{i=k}^{n} exp(r(y^i) / T_k^i) ]
    with the dynamic temperature (their "T") from the reward model's scores R:
      1 / T_k^i = R(y^k) - R(y^i)  (i > k),    1 / T_k^k = max_{i > k} 1 / T_k^i,
    or all T = 1 when `reward_temperature=False` (plain Plackett-Luce ranking). L_SFT is the
    token-mean NLL of the best candidate y^1 and beta = `sft_weight`.

    Ties: step k ranks y^k only against the candidates with strictly lower reward, and a candidate
    with no strictly worse one contributes no step. With distinct rewards this is exactly the
    formula above (steps k = 1 .. n-1, y^n has no worse candidate); with ties it no longer depends
    on how tied candidates are ordered, and no tied pair gets the zero temperature gap 1/T = 0.
    No sorting is needed: each step is computed from the [K, K] reward comparison.

    Args:
      logp_sums_BxK: [B, K] float, sum of token log-probs of each candidate under the policy.
      token_counts_BxK: [B, K] number of tokens of each candidate.
      rewards_BxK: [B, K] float reward-model scores (for a given ranking pass -rank and
        `reward_temperature=False`).
      sft_weight: beta >= 0.
      reward_temperature: use the reward-gap temperature (True, as in the paper's full PRO).
      mask_B: optional [B] 0/1, 0 for padding prompts.

    Returns:
      loss: scalar, mean over valid prompts (0 if none).
      metrics: means over valid prompts plus "count": loss, ranking_loss, sft_loss, pair_accuracy.
    """
    check_non_negative("sft_weight", sft_weight)
    sums, counts, rewards, valid_B = _prepare_candidates(
        logp_sums_BxK, token_counts_BxK, rewards_BxK, mask_B
    )
    p_BxK = length_normalized(sums, counts)
    # worse[b, k, i]: candidate i is strictly worse than k (i.e. k better than i).
    worse_BxKxK = jnp.swapaxes(better_than(rewards), 1, 2)
    if reward_temperature:
        inv_temp_BxKxK = jnp.where(worse_BxKxK, rewards[:, :, None] - rewards[:, None, :], 0.0)
        self_inv_temp_BxK = jnp.max(inv_temp_BxKxK, axis=-1)
    else:
        inv_temp_BxKxK = jnp.ones_like(worse_BxKxK, jnp.float32)
        self_inv_temp_BxK = jnp.ones_like(p_BxK)
    self_logit_BxK = p_BxK * self_inv_temp_BxK
    other_logits_BxKxK = jnp.where(worse_BxKxK, p_BxK[:, None, :] * inv_temp_BxKxK, -jnp.inf)
    all_logits = jnp.concatenate([self_logit_BxK[:, :, None], other_logits_BxKxK], axis=-1)
    step_BxK = jax.nn.logsumexp(all_logits, axis=-1) - self_logit_BxK
    has_step_BxK = jnp.any(worse_BxKxK, axis=-1)
    ranking_B = jnp.sum(jnp.where(has_step_BxK, step_BxK, 0.0), axis=-1)
    sft_B = best_candidate_nll(sums, counts, rewards)

    loss = masked_mean(ranking_B + sft_weight * sft_B, valid_B)
    metrics = {
        "loss": loss,
        "ranking_loss": masked_mean(ranking_B, valid_B),
        "sft_loss": masked_mean(sft_B, valid_B),
        "pair_accuracy": masked_mean(pair_accuracy(p_BxK, rewards), valid_B),
        "count": masked_count(valid_B),
    }
    return loss, metrics
