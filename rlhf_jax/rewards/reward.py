"""The paper's unit-test reward for code: 10 when a program passes every test, else 0.

Xu et al. 2024, Sec. 6: PPO on APPS / CodeContests gets reward 10 for a program that passes all the
training tests of its problem and 0 otherwise (one scalar at the last token of the response).
`partial_credit` instead gives `pass_reward * (tests passed / tests)`, a denser option the paper
does not use.
"""

from __future__ import annotations

from collections.abc import Sequence

from rlhf_jax.rewards.pool import ProgramRequest, evaluate_programs
from rlhf_jax.rewards.problems import CodeProblem, extract_program
from rlhf_jax.rewards.sandbox import SandboxConfig
from rlhf_jax.rewards.verdicts import ProgramResult, Verdict

PASS_REWARD = 10.0
FAIL_REWARD = 0.0
TEST_SETS = ("all", "public", "hidden")


def unit_test_reward(result: ProgramResult, *, partial_credit: bool = False, pass_reward: float = PASS_REWARD,
                     fail_reward: float = FAIL_REWARD) -> float:
    """The reward for one evaluated program: `pass_reward` if every test passed, else `fail_reward`.

    With `partial_credit`: fail_reward + (pass_reward - fail_reward) * fraction of tests passed; this
    needs every test run, so a result evaluated with `fail_fast` (NOT_RUN tests) is rejected.
    """
    if not partial_credit:
        return pass_reward if result.passed else fail_reward
    if any(t.verdict is Verdict.NOT_RUN for t in result.tests):
        raise ValueError("partial credit needs every test run: evaluate with fail_fast=False")
    return fail_reward + (pass_reward - fail_reward) * result.pass_fraction


def _tests(problem: CodeProblem, test_set: str):
    tests = {"all": problem.all_tests, "public": problem.public_tests, "hidden": problem.hidden_tests}[test_set]
    if not tests:
        raise ValueError(f"{problem.where or problem.problem_id}: problem has no {test_set} tests")
    return tests


def code_rewards(problems: Sequence[CodeProblem], completions: Sequence[str], *, test_set: str = "all",
                 partial_credit: bool = False, timeout_s: float = 4.0, memory_mb: int = 512,
                 max_workers: int | None = None, config: SandboxConfig = SandboxConfig(),
                 ) -> tuple[list[float], list[ProgramResult]]:
    """Rewards for a batch of completions, `completions[i]` answering `problems[i]`.

    The program is taken from each completion (`extract_program`), run in the sandbox pool on the
    problem's `test_set` tests ("all", "public" or "hidden") with the problem's own time limit when it
    has one, else `timeout_s`. All-or-nothing rewards stop at the first failing test.
    Returns (rewards, results), in the order of the inputs.
    """
    if len(problems) != len(completions):
        raise ValueError(f"{len(problems)} problems but {len(completions)} completions")
    if test_set not in TEST_SETS:
        raise ValueError(f"test_set must be one of {TEST_SETS}, got {test_set!r}")
    requests = [
        ProgramRequest(extract_program(text, problem), _tests(problem, test_set), problem.fn_name,
                       problem.time_limit_s)
        for problem, text in zip(problems, completions)
    ]
    results = evaluate_programs(requests, timeout_s=timeout_s, memory_mb=memory_mb, fail_fast=not partial_credit,
                                max_workers=max_workers, config=config)
    return [unit_test_reward(r, partial_credit=partial_credit) for r in results], results
