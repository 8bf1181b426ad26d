"""Code-generation rewards (Xu et al. 2024, Sec. 6): run model-written programs on unit tests.

- `sandbox.evaluate_program` / `pool.evaluate_programs`: isolated execution, a verdict per test;
- `compare`: the APPS / CodeContests output comparison rules; `judge`: raw outcome -> verdict.
Pure Python (no JAX): rewards are computed on the host, next to the rollout.
"""

from rlhf_jax.rewards.compare import compare_stdout, compare_values
from rlhf_jax.rewards.pool import ProgramRequest, evaluate_programs
from rlhf_jax.rewards.sandbox import SandboxConfig, SandboxError, evaluate_program, sandbox_uid_range
from rlhf_jax.rewards.verdicts import ProgramResult, TestCase, TestResult, Verdict

__all__ = [
    "ProgramRequest", "ProgramResult", "SandboxConfig", "SandboxError", "TestCase", "TestResult", "Verdict",
    "compare_stdout", "compare_values", "evaluate_program", "evaluate_programs", "sandbox_uid_range",
]
