"""Pieces shared by the listwise ranking losses (RRHF, PRO) over K candidates per prompt.

Inputs are per-candidate sums of token log-probs and token counts ([B, K] each, e.g. from
`masked_sum(token_logps(...), mask, axis=-1)` and `masked_count(mask, axis=-1)` on the flattened
[B*K, T] batch) plus one scalar reward per candidate ([B, K]). Higher reward = better.

Ties: two candidates with equal rewards are never ordered against each other; no pair and no
ranking step treats one of them as better than the other. The SFT target (the "best" candidate) is
the first highest-reward candidate in index order.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from rlhf_jax.losses._checks import check_float, check_mask, check_rank, check_same_shape, upcast
from rlhf_jax.losses.masked import safe_divide


def _prepare_candidates(
    logp_sums_BxK: jax.Array,
    token_counts_BxK: jax.Array,
    rewards_BxK: jax.Array,
    mask_B: jax.Array | None,
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """Validates ranking-loss inputs; returns (sums, counts, rewards) as float32 zeroed on padding
    examples, and the example mask as bool [B] (all True if `mask_B` is None)."""
    for name, x in (("logp_sums_BxK", logp_sums_BxK), ("rewards_BxK", rewards_BxK)):
        check_rank(name, x, 2)
        check_float(name, x)
    check_rank("token_counts_BxK", token_counts_BxK, 2)
    check_same_shape(
        logp_sums_BxK=logp_sums_BxK, token_counts_BxK=token_counts_BxK, rewards_BxK=rewards_BxK
    )
    b = jnp.shape(logp_sums_BxK)[0]
    if mask_B is None:
        valid_B = jnp.ones((b,), jnp.bool_)
    else:
        check_rank("mask_B", mask_B, 1)
        check_mask("mask_B", mask_B)
        if jnp.shape(mask_B)[0] != b:
            raise ValueError(
                f"mask_B{list(jnp.shape(mask_B))} and "
                f"logp_sums_BxK{list(jnp.shape(logp_sums_BxK))} must have the same batch size"
            )
        valid_B = jnp.asarray(mask_B) != 0
    arrays = (
        jnp.where(valid_B[:, None], upcast(x), 0.0)
        for x in (logp_sums_BxK, token_counts_BxK, rewards_BxK)
    )
    sums, counts, rewards = arrays
    return sums, counts, rewards, valid_B


def length_normalized(logp_sums_BxK: jax.Array, token_counts_BxK: jax.Array) -> jax.Array:
    """p = logp_sum / token_count per candidate ([B, K]); 0 for an empty candidate."""
    return safe_divide(upcast(logp_sums_BxK), upcast(token_counts_BxK))


def best_candidate_nll(
    logp_sums_BxK: jax.Array, token_counts_BxK: jax.Array, rewards_BxK: jax.Array
) -> jax.Array:
    """[B] token-mean negative log-likelihood of each prompt's highest-reward candidate.

    -logp_sum[best] / token_count[best] with best = argmax_k rewards (first index among ties): the
    SFT term of RRHF (L_ft) and PRO (L_SFT). 0 if that candidate has no tokens.
    """
    best_B = jnp.argmax(rewards_BxK, axis=-1)
    take = lambda x: jnp.take_along_axis(x, best_B[:, None], axis=-1)[:, 0]
    return -safe_divide(take(upcast(logp_sums_BxK)), take(upcast(token_counts_BxK)))


def better_than(rewards_BxK: jax.Array) -> jax.Array:
    """[B, K, K] bool: out[b, i, j] = rewards[b, j] > rewards[b, i] (j strictly better than i)."""
    return rewards_BxK[:, None, :] > rewards_BxK[:, :, None]


def pair_accuracy(scores_BxK: jax.Array, rewards_BxK: jax.Array) -> jax.Array:
    """[B] share of strictly reward-ordered pairs whose better candidate also scores higher
    (0 for a prompt with no such pair)."""
    better = better_than(rewards_BxK)
    right = better & (scores_BxK[:, None, :] > scores_BxK[:, :, None])
    return safe_divide(
        jnp.sum(right, axis=(1, 2), dtype=jnp.float32),
        jnp.sum(better, axis=(1, 2), dtype=jnp.float32),
    )
