"""From the runner's raw outcome of one test (exit status, output, status line) to a verdict.

Pure function of its inputs, so every branch is unit-testable without running anything. The order
of the checks is the order a judge reports them: syntax error, time limit (wall clock, or the CPU
rlimit's SIGXCPU), output limit, memory limit (MemoryError), runtime error (non-zero exit, signal,
exception), and only for a clean exit the comparison with the expected output.
"""

from __future__ import annotations

import json
import signal
from typing import Any

from rlhf_jax.rewards.compare import compare_stdout, compare_values
from rlhf_jax.rewards.verdicts import TestCase, TestResult, Verdict

STDOUT_HEAD_CHARS = 500


def parse_status(text: str) -> dict[str, Any]:
    """The last JSON object the child wrote on its status fd, or {} if none could be read."""
    for line in reversed(text.splitlines()):
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict) and isinstance(value.get("kind"), str):
            return value
    return {}


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def judge_test(raw: dict[str, Any], test: TestCase, *, call_based: bool, timeout_s: float,
               float_tol: float) -> TestResult:
    """Verdict for one test from the runner's raw outcome (see `_runner._run_one` for its keys)."""
    status = parse_status(raw["status"])
    kind = status.get("kind")

    def result(verdict: Verdict, detail: str = "") -> TestResult:
        return TestResult(verdict, float(raw["wall_s"]), float(raw["cpu_s"]), detail,
                          raw["stdout"][:STDOUT_HEAD_CHARS], raw["stderr_tail"])

    sig, exit_code = raw["signal"], raw["exit_code"]
    if kind == "syntax":
        return result(Verdict.SYNTAX_ERROR, status.get("message", ""))
    if raw["outcome"] == "timeout":
        return result(Verdict.TIMEOUT, f"wall clock over {timeout_s:g} s")
    if sig == signal.SIGXCPU or (sig == signal.SIGKILL and raw["cpu_s"] > timeout_s):
        return result(Verdict.TIMEOUT, f"CPU time over the limit ({raw['cpu_s']:.2f} s)")
    if raw["outcome"] == "output_limit":
        return result(Verdict.OUTPUT_LIMIT, "output over the cap; the program was stopped")
    if kind == "memory" or (exit_code != 0 and "MemoryError" in raw["stderr_tail"]):
        return result(Verdict.MEMORY_LIMIT, "MemoryError")
    if sig is not None:
        return result(Verdict.RUNTIME_ERROR, f"killed by {_signal_name(sig)}")
    if exit_code != 0:
        if kind == "exception":
            return result(Verdict.RUNTIME_ERROR, f"{status.get('type')}: {status.get('message', '')}")
        return result(Verdict.RUNTIME_ERROR, f"exit code {exit_code}")
    if call_based:
        if kind == "unserializable":
            return result(Verdict.WRONG_ANSWER, f"returned {status.get('repr')}, which is not JSON data")
        if kind != "ok" or "value" not in status:
            return result(Verdict.RUNTIME_ERROR, "the program exited without reporting a return value")
        matched, why = compare_values(status["value"], test.output, float_tol=float_tol)
    else:
        matched, why = compare_stdout(raw["stdout"], test.output, float_tol=float_tol)
    return result(Verdict.PASSED if matched else Verdict.WRONG_ANSWER, why)
