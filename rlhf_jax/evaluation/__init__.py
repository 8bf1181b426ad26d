"""The paper's evaluations: Help / Harm / Safety rate (SafeRLHF) and mean judge reward (HH-RLHF).

- `metrics`: pure functions over score arrays.
- `scoring`: scores texts with reward / cost models loaded into our Flax LLaMA (`load_pretrained`).
- `external`: judges of other architectures (the GPT-NeoX HH-RLHF judge) through PyTorch, optional.
- `report`: Markdown and JSON tables laid out like the paper's Tables 2, 4 and 6.
- `generation`: the protocol end to end: answers generated with the rollout engine
  (`generate_responses`), then judged (`evaluate_policy_safety`).
- `code_generation`: sampled programs run against unit tests, pass@k per difficulty
  (`evaluate_policy_code`, Tables 7 / 8).
"""

from rlhf_jax.evaluation.code_generation import evaluate_policy_code
from rlhf_jax.evaluation.generation import evaluate_policy_safety, generate_responses
from rlhf_jax.evaluation.metrics import help_harm_safety, mean_reward
from rlhf_jax.evaluation.report import Report, reward_report, safety_report
from rlhf_jax.evaluation.scoring import evaluate_safety, score_texts

__all__ = ["Report", "evaluate_policy_code", "evaluate_policy_safety", "evaluate_safety", "generate_responses", "help_harm_safety", "mean_reward", "reward_report",
           "safety_report", "score_texts"]
