"""Rollout engines: generate responses for RL, with log-probs exact against the training forward.

`base` holds the interface (`Rollout`, `RolloutConfig`, `PromptBatch`, `RolloutOutput`,
`FinishReason`); `sampling` the pure sampling math; `decode` the jitted KV-cache loop; `jax_sampler`
the default engine `JaxSampler`. Benchmark: `python bench/rollout_bench.py --preset tiny`.
"""

from rlhf_jax.rollout.base import FinishReason, PromptBatch, Rollout, RolloutConfig, RolloutOutput
from rlhf_jax.rollout.jax_sampler import DEFAULT_BUCKETS, SAMPLING_RULES, JaxSampler
from rlhf_jax.rollout.sampling import filter_logits, sample_tokens

__all__ = [
    "FinishReason", "PromptBatch", "Rollout", "RolloutConfig", "RolloutOutput", "DEFAULT_BUCKETS",
    "SAMPLING_RULES", "JaxSampler", "filter_logits", "sample_tokens",
]
