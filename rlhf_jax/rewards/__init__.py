"""Code-generation rewards and benchmarks (Xu et al. 2024, Sec. 6: APPS and CodeContests).

- `sandbox.evaluate_program` / `pool.evaluate_programs`: isolated execution of model-written Python,
  a verdict per test (`verdicts`); `compare`: the APPS / CodeContests output rules; `judge`: raw
  outcome -> verdict.
- `apps`, `codecontests`: loaders of the local Hugging Face files into `problems.CodeProblem`s,
  with prompt formatting and program extraction.
- `reward`: the paper's 10/0 unit-test reward (partial credit optional).
- `metrics`: unbiased pass@k, n@k with public-test filtering, per-difficulty Markdown/JSON reports.
- `preference`: APPS iterative-DPO pairs and CodeContests plain DPO pairs.
No JAX: rewards are computed on the host, next to the rollout.
"""

from rlhf_jax.rewards.apps import load_apps, read_apps, with_tests
from rlhf_jax.rewards.codecontests import load_code_contests, read_code_contests
from rlhf_jax.rewards.compare import compare_stdout, compare_values
from rlhf_jax.rewards.metrics import CodeReport, ProblemSamples, code_report, n_at_k, pass_at_k
from rlhf_jax.rewards.pool import ProgramRequest, evaluate_programs
from rlhf_jax.rewards.preference import apps_iterative_pairs, code_contests_pairs, format_response
from rlhf_jax.rewards.problems import PROMPT_STYLES, CodeProblem, extract_program, format_prompt
from rlhf_jax.rewards.reward import code_rewards, unit_test_reward
from rlhf_jax.rewards.sandbox import SandboxConfig, SandboxError, evaluate_program, sandbox_uid_range
from rlhf_jax.rewards.verdicts import ProgramResult, TestCase, TestResult, Verdict

__all__ = [
    "PROMPT_STYLES", "CodeProblem", "CodeReport", "ProblemSamples", "ProgramRequest", "ProgramResult",
    "SandboxConfig", "SandboxError", "TestCase", "TestResult", "Verdict", "apps_iterative_pairs",
    "code_contests_pairs", "code_report", "code_rewards", "compare_stdout", "compare_values", "evaluate_program",
    "evaluate_programs", "extract_program", "format_prompt", "format_response", "load_apps",
    "load_code_contests", "n_at_k", "pass_at_k", "read_apps", "read_code_contests", "sandbox_uid_range",
    "unit_test_reward", "with_tests",
]
