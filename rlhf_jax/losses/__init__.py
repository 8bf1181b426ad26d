"""Alignment losses as pure functions over log-prob, value and score arrays (no models inside).

Public API (one small module per family):
- Log-probs (`logprobs`): `token_logps(logits, labels, mask)`, `sequence_logps(...)`,
  `segment_logps(...)` (per-example sums of packed rows).
- Supervised (`sft`): `sft_loss(logps, mask)`, token-mean NLL over response tokens.
- Reward and cost models (`reward_model`): `reward_loss(chosen_scores, rejected_scores)`
  (Bradley-Terry), `cost_loss(...)` (safe-rlhf, with safety sign terms).
- Direct preference (`dpo`): `dpo_loss(..., *, beta, label_smoothing=0.0, variant="sigmoid")`
  with variants registered in `DPO_VARIANTS` ("sigmoid": DPO and conservative DPO, "ipo": IPO);
  `check_dpo_variant(name)` validates a config's variant name.
- Listwise ranking (`rrhf`, `pro`, shared pieces in `ranking`): `rrhf_loss`, `pro_loss`,
  `length_normalized`, `best_candidate_nll`, `better_than`, `pair_accuracy`.
- PPO (`advantages`, `ppo`, `masked`): `kl_penalized_rewards`, `last_token_mask`,
  `gae_advantages`, `masked_whiten`, `ppo_policy_loss` (optional dual clip), `ppo_value_loss`.
- Value normalization: the module `value_normalizer` with pure state functions
  `init() / update(state, x, mask) / normalize(state, x) / denormalize(state, x)` over a
  `value_normalizer.ValueNormalizerState` pytree.
- EMA reference (`ema`): `ema_update(ref_params, policy_params, *, eta)`.
- PPO-Lagrangian (`lagrangian`, safe-rlhf): `lagrange_loss`, `lagrange_update` (the lambda step),
  `lagrangian_advantages` ((A_r - lambda A_c) / (1 + lambda)).
- Masked reductions (`masked`): `masked_sum/count/mean/var`, `safe_divide`, `combine_metrics`.

Conventions shared by every function here:
- Shapes are batch-major: [B, T] per token (`logps_BxT`), [B] per sequence, [B, K] per candidate.
- Masks are 0/1 arrays (bool or numeric) shaped like the data; 1 marks a valid entry. Values at
  masked positions are ignored, even NaN or -inf.
- Each loss returns `(loss, metrics)`. `loss` is a mean over valid elements (tokens for PPO and
  SFT, pairs or prompts otherwise) computed as one sum divided by one count; it is 0, not NaN,
  when nothing is valid (an all-zero mask is a defined value, not an error). `metrics` holds
  scalars that are all means over those same elements plus `"count"`, their number. Across
  micro-batches or hosts, `combine_metrics` merges them exactly (count-weighted), and
  `loss * metrics["count"]` is the differentiable sum for gradient accumulation:
  grad_total = sum_i grad(loss_i * count_i) / sum_i count_i.
- Shape, rank, dtype, unknown-variant and (Python-number) hyperparameter errors raise ValueError
  at trace time, naming the argument.
- Computation is in float32 at least, whatever the input dtype.
"""

from rlhf_jax.losses import value_normalizer
from rlhf_jax.losses.advantages import gae_advantages, kl_penalized_rewards, last_token_mask
from rlhf_jax.losses.dpo import DPO_VARIANTS, check_dpo_variant, dpo_loss
from rlhf_jax.losses.ema import ema_update
from rlhf_jax.losses.lagrangian import lagrange_loss, lagrange_update, lagrangian_advantages
from rlhf_jax.losses.logprobs import segment_logps, sequence_logps, token_logps
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
from rlhf_jax.losses.reward_model import cost_loss, reward_loss
from rlhf_jax.losses.rrhf import rrhf_loss
from rlhf_jax.losses.sft import sft_loss

__all__ = [
    "DPO_VARIANTS",
    "best_candidate_nll",
    "better_than",
    "check_dpo_variant",
    "combine_metrics",
    "cost_loss",
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
    "reward_loss",
    "rrhf_loss",
    "safe_divide",
    "segment_logps",
    "sequence_logps",
    "sft_loss",
    "token_logps",
    "value_normalizer",
]
