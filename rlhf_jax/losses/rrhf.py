"""RRHF: Rank Responses to align Human Feedback (Yuan et al. 2023), Xu et al. Table 4 baseline."""

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


def rrhf_loss(
    logp_sums_BxK: jax.Array,
    token_counts_BxK: jax.Array,
    rewards_BxK: jax.Array,
    *,
    rank_weight: float = 1.0,
    mask_B: jax.Array | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """RRHF loss L = rank_weight * L_rank + L_ft per prompt, mean over valid prompts.

    Yuan et al. 2023, Section 3 (eqs. for p_i, L_rank, L_ft and L = L_rank + L_ft):
      p_i    = (1 / |y_i|) sum_t log pi(y_{i,t} | x, y_{i,<t})       (length-normalized score)
      L_rank = sum_{i, j : r_i < r_j} max(0, p_i - p_j)               (over all ordered pairs)
      L_ft   = -(1 / |y_b|) sum_t log pi(y_{b,t} | x, y_{b,<t}),  b = argmax_i r_i
    Deviations, both explicit: L_ft is the token mean (the paper's equation writes a token sum, its
    code divides by the padded length); `rank_weight` (1 in the paper) is the `rrhf_weight` of the
    authors' code. Ties (r_i == r_j) form no pair; the best candidate is the first among tied best.

    Args:
      logp_sums_BxK: [B, K] float, sum of token log-probs of each candidate under the policy.
      token_counts_BxK: [B, K] number of tokens of each candidate (|y_i| > 0 for real candidates).
      rewards_BxK: [B, K] float reward (or any score where higher is better, e.g. -rank).
      rank_weight: >= 0 weight of L_rank.
      mask_B: optional [B] 0/1, 0 for padding prompts.

    Returns:
      loss: scalar, mean over valid prompts (0 if none).
      metrics: means over valid prompts plus "count" (valid prompts): loss, rank_loss, sft_loss,
        pair_accuracy (share of strictly ordered pairs with p_better > p_worse).
    """
    check_non_negative("rank_weight", rank_weight)
    sums, counts, rewards, valid_B = _prepare_candidates(
        logp_sums_BxK, token_counts_BxK, rewards_BxK, mask_B
    )
    p_BxK = length_normalized(sums, counts)
    # Pair (i worse, j better): penalty max(0, p_i - p_j).
    gap_BxKxK = p_BxK[:, :, None] - p_BxK[:, None, :]
    rank_B = jnp.sum(jnp.where(better_than(rewards), jax.nn.relu(gap_BxKxK), 0.0), axis=(1, 2))
    sft_B = best_candidate_nll(sums, counts, rewards)
    loss = masked_mean(rank_weight * rank_B + sft_B, valid_B)
    metrics = {
        "loss": loss,
        "rank_loss": masked_mean(rank_B, valid_B),
        "sft_loss": masked_mean(sft_B, valid_B),
        "pair_accuracy": masked_mean(pair_accuracy(p_BxK, rewards), valid_B),
        "count": masked_count(valid_B),
    }
    return loss, metrics
