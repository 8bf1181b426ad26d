"""PRO and RRHF steps: per-candidate log-probs of [B, K, T] batches fed to the listwise losses.

The losses are `rlhf_jax.losses.pro_loss` / `rrhf_loss`, registered by name in `RANKING_LOSSES`;
`make_ranking_loss` binds their hyperparameters once K is known. Steps follow
`rlhf_jax.training.steps`: module-level pure functions `(state, batch) -> (state, metrics)` with
the graphdef, optimizer, loss and micro-batch count bound by `jit_step`. Micro-batches split the
prompts (axis B), never the candidates of one prompt, so accumulation is exact.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable

import jax.numpy as jnp
import optax

from rlhf_jax.losses import (
    better_than, length_normalized, masked_count, masked_mean, masked_sum, pro_loss, rrhf_loss,
    safe_divide)
from rlhf_jax.training.ranking_data import SEQUENCE_FIELDS
from rlhf_jax.training.state import TrainState, accumulate_gradients, apply_gradients
from rlhf_jax.training.steps import sequence_token_logps

RankingLoss = Callable  # (logp_sums_BxK, token_counts_BxK, rewards_BxK, *, mask_B) -> (loss, metrics)


@dataclasses.dataclass(frozen=True)
class PROConfig:
    """PRO (Song et al. 2023). `sft_weight` None = their beta = 0.05 * (K - 1)^2."""

    sft_weight: float | None = None
    reward_temperature: bool = True  # reward-gap temperatures (full PRO); False: plain ranking


@dataclasses.dataclass(frozen=True)
class RRHFConfig:
    """RRHF (Yuan et al. 2023): L = rank_weight * L_rank + L_ft."""

    rank_weight: float = 1.0


def _pro(pro: PROConfig, rrhf: RRHFConfig, k: int) -> RankingLoss:
    weight = 0.05 * (k - 1) ** 2 if pro.sft_weight is None else pro.sft_weight
    return functools.partial(pro_loss, sft_weight=weight, reward_temperature=pro.reward_temperature)


def _rrhf(pro: PROConfig, rrhf: RRHFConfig, k: int) -> RankingLoss:
    return functools.partial(rrhf_loss, rank_weight=rrhf.rank_weight)


RANKING_LOSSES: dict[str, Callable[[PROConfig, RRHFConfig, int], RankingLoss]] = {
    "pro": _pro,
    "rrhf": _rrhf,
}


def make_ranking_loss(algorithm: str, *, pro: PROConfig, rrhf: RRHFConfig, num_candidates: int
                      ) -> RankingLoss:
    """The registered loss `algorithm` with its hyperparameters bound for K = `num_candidates`."""
    if algorithm not in RANKING_LOSSES:
        raise ValueError(f"algorithm={algorithm!r}; choose from {sorted(RANKING_LOSSES)}")
    return RANKING_LOSSES[algorithm](pro, rrhf, num_candidates)


def candidate_logps(graphdef, params, batch):
    """(logp_sums_BxK, token_counts_BxK): summed response-token log-probs of each candidate."""
    b, k, t = batch["input_ids"].shape
    rows = {key: batch[key].reshape(b * k, t) for key in SEQUENCE_FIELDS}
    logps_NxT = sequence_token_logps(graphdef, params, rows)
    sums = masked_sum(logps_NxT, rows["loss_mask"], axis=-1).reshape(b, k)
    counts = masked_count(rows["loss_mask"], axis=-1).reshape(b, k)
    return sums, counts


def ranking_margin(scores_BxK, rewards_BxK):
    """[B] mean of score[better] - score[worse] over the strictly reward-ordered pairs of each
    prompt (for K = 2: chosen minus rejected); 0 for a prompt without such a pair."""
    better_BxKxK = better_than(rewards_BxK)  # [b, i, j]: j better than i
    gap_BxKxK = scores_BxK[:, None, :] - scores_BxK[:, :, None]
    return safe_divide(jnp.sum(jnp.where(better_BxKxK, gap_BxKxK, 0.0), axis=(1, 2)),
                       jnp.sum(better_BxKxK, axis=(1, 2), dtype=jnp.float32))


def ranking_loss_fn(loss: RankingLoss, graphdef, params, batch):
    """The ranking loss and its metrics plus `margin` (of length-normalized log-probs), all means
    over the prompts with tokens (all-padding rows, as `pad_rows` adds, are masked out)."""
    sums, counts = candidate_logps(graphdef, params, batch)
    rewards = batch["rewards"]
    valid_B = jnp.all(counts > 0, axis=-1)
    value, metrics = loss(sums, counts, rewards, mask_B=valid_B)
    margin_B = ranking_margin(length_normalized(sums, counts), rewards.astype(jnp.float32))
    return value, dict(metrics, margin=masked_mean(margin_B, valid_B))


def ranking_step(state: TrainState, batch, *, graphdef, tx, loss: RankingLoss, num_micro: int = 1):
    """One PRO/RRHF update over a [B, K, T] batch, exact over `num_micro` micro-batches of prompts."""
    loss_fn = functools.partial(ranking_loss_fn, loss, graphdef)
    grads, metrics = accumulate_gradients(loss_fn, state.params, batch, num_micro)
    metrics = dict(metrics, grad_norm=optax.tree.norm(grads))
    return apply_gradients(state, grads, tx), metrics


def ranking_eval(params, batch, *, graphdef, loss: RankingLoss):
    """Metrics of `ranking_loss_fn` (loss, pair_accuracy, margin, ..., count) without an update."""
    return ranking_loss_fn(loss, graphdef, params, batch)[1]
