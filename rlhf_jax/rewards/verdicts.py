"""Test cases and what the sandbox says about a program: one verdict per test and one overall."""

from __future__ import annotations

import dataclasses
import enum
from typing import Any


class Verdict(str, enum.Enum):
    """The outcome of running a program on one test (or on all of them, for the overall verdict)."""

    PASSED = "passed"
    WRONG_ANSWER = "wrong_answer"
    RUNTIME_ERROR = "runtime_error"
    TIMEOUT = "timeout"
    MEMORY_LIMIT = "memory_limit"
    SYNTAX_ERROR = "syntax_error"
    OUTPUT_LIMIT = "output_limit"  # printed more than the output cap: stopped early
    NOT_RUN = "not_run"  # skipped: `fail_fast` and an earlier test failed


@dataclasses.dataclass(frozen=True)
class TestCase:
    """One unit test.

    Standard-input tests: `input` and `output` are strings (fed to stdin, compared with stdout).
    Call-based tests (`fn_name` given to the evaluator): `input` is the list of positional arguments
    and `output` the expected return value, both as decoded JSON (APPS stores the expected value
    wrapped in a one-element list; either form is accepted).
    """

    __test__ = False  # not a pytest class

    input: Any
    output: Any


@dataclasses.dataclass(frozen=True)
class TestResult:
    """The verdict on one test, with timings and short diagnostics."""

    __test__ = False

    verdict: Verdict
    wall_s: float
    cpu_s: float
    detail: str = ""  # e.g. the exception, the signal, or the first differing token
    stdout_head: str = ""
    stderr_tail: str = ""


@dataclasses.dataclass(frozen=True)
class ProgramResult:
    """Every test's verdict for one program, the overall verdict and the protections in force.

    `verdict` is PASSED when every test passed, else the verdict of the first test that did not.
    `network_isolation` is "netns" (a new, empty network namespace) or "socket_guard" (Python-level
    socket functions disabled; the fallback where namespaces are not allowed). `protections` lists
    everything else that was in force (namespaces, uid, rlimits, ...).
    """

    verdict: Verdict
    tests: tuple[TestResult, ...]
    wall_s: float
    network_isolation: str
    protections: tuple[str, ...]

    @property
    def passed(self) -> bool:
        """True when every test passed."""
        return self.verdict is Verdict.PASSED

    @property
    def num_passed(self) -> int:
        """How many tests passed."""
        return sum(t.verdict is Verdict.PASSED for t in self.tests)

    @property
    def pass_fraction(self) -> float:
        """Share of tests passed (partial credit)."""
        return self.num_passed / len(self.tests)


def overall_verdict(verdicts: list[Verdict]) -> Verdict:
    """PASSED if all passed, else the first verdict that is neither PASSED nor NOT_RUN."""
    for verdict in verdicts:
        if verdict not in (Verdict.PASSED, Verdict.NOT_RUN):
            return verdict
    return Verdict.PASSED
