"""Alignment losses as pure functions over log-prob, value and score arrays (no models inside).

Conventions shared by every function here:
- Shapes are batch-major: [B, T] per token (`logps_BxT`), [B] per sequence, [B, K] per candidate.
- Masks are 0/1 arrays (bool or numeric) shaped like the data; 1 marks a valid entry. Values at
  masked positions are ignored, even NaN or -inf.
- Each loss returns `(loss, metrics)`. `loss` is a mean over valid elements (tokens for PPO,
  pairs or prompts otherwise) computed as one sum divided by one count; it is 0, not NaN, when
  nothing is valid. `metrics` holds scalars that are all means over those same elements plus
  `"count"`, their number. Across micro-batches or hosts, `combine_metrics` merges them exactly
  (count-weighted), and `loss * metrics["count"]` is the differentiable sum for gradient
  accumulation:
  grad_total = sum_i grad(loss_i * count_i) / sum_i count_i.
- Shape, rank, dtype and (Python-number) hyperparameter errors raise ValueError at trace time,
  naming the argument.
- Computation is in float32 at least, whatever the input dtype.
"""

from rlhf_jax.losses.advantages import gae_advantages, kl_penalized_rewards, last_token_mask
from rlhf_jax.losses.dpo import dpo_loss
from rlhf_jax.losses.ema import ema_update
from rlhf_jax.losses.lagrangian import lagrange_loss, lagrange_update, lagrangian_advantages
from rlhf_jax.losses.logprobs import sequence_logps, token_logps
from rlhf_jax.losses.masked import (
    combine_metrics,
    masked_count,
    masked_mean,
    masked_sum,
    masked_var,
    masked_whiten,
    safe_divide,
)
from rlhf_jax.losses.ppo import ppo_policy_loss, ppo_value_loss
from rlhf_jax.losses.pro import pro_loss
from rlhf_jax.losses.ranking import (
    best_candidate_nll,
    better_than,
    length_normalized,
    pair_accuracy,
)
from rlhf_jax.losses.reward_model import cost_model_loss, reward_model_loss
from rlhf_jax.losses.rrhf import rrhf_loss
from rlhf_jax.losses.value_norm import ValueNormalizer

__all__ = [
    "ValueNormalizer",
    "best_candidate_nll",
    "better_than",
    "combine_metrics",
    "cost_model_loss",
    "dpo_loss",
    "ema_update",
    "gae_advantages",
    "kl_penalized_rewards",
    "lagrange_loss",
    "lagrange_update",
    "lagrangian_advantages",
    "last_token_mask",
    "length_normalized",
    "masked_count",
    "masked_mean",
    "masked_sum",
    "masked_var",
    "masked_whiten",
    "pair_accuracy",
    "ppo_policy_loss",
    "ppo_value_loss",
    "pro_loss",
    "reward_model_loss",
    "rrhf_loss",
    "safe_divide",
    "sequence_logps",
    "token_logps",
]
