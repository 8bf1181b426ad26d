"""evaluate_program / evaluate_programs on ordinary programs: every verdict, both test kinds."""

import os
import time

import pytest

from rlhf_jax.rewards.pool import ProgramRequest, evaluate_programs
from rlhf_jax.rewards import sandbox
from rlhf_jax.rewards.sandbox import SandboxConfig, SandboxError, evaluate_program
from rlhf_jax.rewards.verdicts import TestCase, Verdict

ADD = "a, b = map(int, input().split())\nprint(a + b)\n"
ADD_TESTS = (TestCase("1 2\n", "3\n"), TestCase("10 -4\n", "6"), TestCase("0 0\n", "0\n"))

LEETCODE = """
class Solution:
    def twoSum(self, nums: List[int], target: int) -> List[int]:
        seen = {}
        for i, x in enumerate(nums):
            if target - x in seen:
                return (seen[target - x], i)
            seen[x] = i
"""
TWO_SUM_TESTS = (TestCase([[2, 7, 11, 15], 9], [[0, 1]]), TestCase([[3, 2, 4], 6], [1, 2]))


def _verdicts(result):
    return [t.verdict for t in result.tests]


def test_passing_program_gets_a_verdict_per_test():
    result = evaluate_program(ADD, ADD_TESTS, timeout_s=2.0)
    assert result.verdict is Verdict.PASSED and result.passed
    assert _verdicts(result) == [Verdict.PASSED] * 3
    assert [t.detail for t in result.tests] == ["exact", "tokens", "exact"]
    assert result.tests[0].stdout_head == "3\n"
    assert result.num_passed == 3 and result.pass_fraction == 1.0
    if os.geteuid() == 0:  # CI runs as root: the full set of protections must be in force
        assert result.network_isolation == "netns"
        assert {"pidns", "mountns", "ipcns", "no_new_privs"} <= set(result.protections)
        assert any(p.startswith("uid ") for p in result.protections)


def test_wrong_answer_on_one_test_only():
    program = "a, b = map(int, input().split())\nprint(a + b if a else 99)\n"
    result = evaluate_program(program, ADD_TESTS)
    assert _verdicts(result) == [Verdict.PASSED, Verdict.PASSED, Verdict.WRONG_ANSWER]
    assert result.verdict is Verdict.WRONG_ANSWER
    assert result.num_passed == 2 and result.pass_fraction == pytest.approx(2 / 3)


def test_fail_fast_stops_at_the_first_failure():
    program = "a, b = map(int, input().split())\nprint(a - b)\n"
    tests = (TestCase("0 0", "0"), TestCase("1 2", "3"), TestCase("2 2", "4"))
    result = evaluate_program(program, tests, fail_fast=True)
    assert _verdicts(result) == [Verdict.PASSED, Verdict.WRONG_ANSWER, Verdict.NOT_RUN]
    assert result.verdict is Verdict.WRONG_ANSWER


def test_syntax_error_is_reported_on_every_test():
    result = evaluate_program("print(1\n", ADD_TESTS)
    assert _verdicts(result) == [Verdict.SYNTAX_ERROR] * 3
    assert "SyntaxError" in result.tests[0].detail


@pytest.mark.parametrize(
    "program, verdict, detail_part",
    [
        ("print(1 // 0)", Verdict.RUNTIME_ERROR, "ZeroDivisionError"),
        ("import sys\nsys.exit(3)", Verdict.RUNTIME_ERROR, "SystemExit"),
        ("import os\nos._exit(4)", Verdict.RUNTIME_ERROR, "exit code 4"),
        ("import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)", Verdict.RUNTIME_ERROR, "SIGSEGV"),
        ("x = bytearray(1 << 33)", Verdict.MEMORY_LIMIT, "MemoryError"),
        ("while True:\n    pass", Verdict.TIMEOUT, "wall clock"),
        ("import time\ntime.sleep(30)", Verdict.TIMEOUT, "wall clock"),
        ("while True:\n    print('y' * 4096)", Verdict.OUTPUT_LIMIT, "output"),
    ],
)
def test_failure_verdicts(program, verdict, detail_part):
    start = time.monotonic()
    result = evaluate_program(program, (TestCase("", "3"),), timeout_s=0.5, memory_mb=128,
                              config=SandboxConfig(max_output_bytes=1 << 16))
    assert result.verdict is verdict
    assert detail_part in result.tests[0].detail
    assert time.monotonic() - start < 0.5 + 1.0


def test_normal_endings_count_as_success():
    # sys.exit(0), output from a worker thread, and output flushed by an atexit hook all pass.
    programs = [
        "print(7)\nimport sys\nsys.exit(0)\nprint(8)",
        "import threading\nthreading.Thread(target=lambda: print(7)).start()",
        "import atexit, io, sys\nbuf = io.StringIO()\natexit.register(lambda: sys.__stdout__.write(buf.getvalue()))\n"
        "buf.write('7\\n')",
    ]
    results = evaluate_programs([ProgramRequest(p, (TestCase("", "7"),)) for p in programs])
    assert [r.verdict for r in results] == [Verdict.PASSED] * 3


def test_call_based_leetcode_class_and_plain_function():
    leetcode = evaluate_program(LEETCODE, TWO_SUM_TESTS, fn_name="twoSum")
    assert _verdicts(leetcode) == [Verdict.PASSED, Verdict.PASSED]
    function = evaluate_program("def add(a, b):\n    return a + b\n",
                                (TestCase([1, 2], [3]), TestCase([0.1, 0.2], 0.3), TestCase([1, 1], 3)),
                                fn_name="add")
    assert _verdicts(function) == [Verdict.PASSED, Verdict.PASSED, Verdict.WRONG_ANSWER]
    missing = evaluate_program("def other():\n    pass\n", (TestCase([], 1),), fn_name="add")
    assert missing.verdict is Verdict.RUNTIME_ERROR and "add" in missing.tests[0].detail
    odd = evaluate_program("def f():\n    return object()\n", (TestCase([], 1),), fn_name="f")
    assert odd.verdict is Verdict.WRONG_ANSWER and "not JSON data" in odd.tests[0].detail


def test_program_reads_all_of_a_large_input():
    numbers = list(range(200_000))
    test = TestCase(f"{len(numbers)}\n" + " ".join(map(str, numbers)) + "\n", str(sum(numbers)))
    program = "import sys\ndata = sys.stdin.read().split()\nprint(sum(map(int, data[1:])))\n"
    assert evaluate_program(program, (test,)).verdict is Verdict.PASSED


def test_pool_keeps_order_and_per_request_time_limits():
    slow = "import time\ntime.sleep(0.6)\nprint(3)"
    requests = [ProgramRequest(ADD, ADD_TESTS), ProgramRequest(slow, (TestCase("", "3"),), timeout_s=0.3),
                ProgramRequest(slow, (TestCase("", "3"),), timeout_s=2.0), ProgramRequest("print(", ADD_TESTS)]
    results = evaluate_programs(requests, max_workers=2)
    assert [r.verdict for r in results] == [Verdict.PASSED, Verdict.TIMEOUT, Verdict.PASSED, Verdict.SYNTAX_ERROR]
    assert evaluate_programs([]) == []
    with pytest.raises(ValueError, match="max_workers"):
        evaluate_programs(requests, max_workers=0)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(tests=()), ValueError, "at least one test"),
        (dict(timeout_s=0), ValueError, "timeout_s"),
        (dict(memory_mb=16), ValueError, "memory_mb"),
        (dict(fn_name="not a name"), ValueError, "fn_name"),
        (dict(tests=(TestCase(1, "1"),)), TypeError, r"tests\[0\]: standard-input"),
        (dict(tests=(("1", "1"),)), TypeError, r"tests\[0\]: expected a TestCase"),
        (dict(tests=(TestCase("1", 1),), fn_name="f"), TypeError, r"tests\[0\]: call-based"),
    ],
)
def test_bad_arguments_are_rejected_before_running(kwargs, error, message):
    arguments = dict(tests=ADD_TESTS)
    arguments.update(kwargs)
    tests = arguments.pop("tests")
    with pytest.raises(error, match=message):
        evaluate_program(ADD, tests, **arguments)


# Stand-ins for the runner, to show that the harness survives a runner that misbehaves.
_READY = 'print(json.dumps({"event": "ready", "protections": [], "network": "netns"}), flush=True)\n'
FAKE_RUNNERS = {
    "hangs_after_ready": _READY + "time.sleep(60)\n",
    "dies_after_ready": _READY + "os._exit(3)\n",
    "never_ready": "time.sleep(60)\n",
    "fatal": 'print(json.dumps({"event": "fatal", "message": "probe failed: test"}), flush=True)\n',
}


def _fake_runner(tmp_path, monkeypatch, name):
    path = tmp_path / f"{name}.py"
    path.write_text("import json, os, sys, time\nsys.stdin.readline()\n" + FAKE_RUNNERS[name])
    monkeypatch.setattr(sandbox, "RUNNER", str(path))


def test_harness_gives_verdicts_when_the_runner_hangs_or_dies(tmp_path, monkeypatch):
    config = SandboxConfig(grace_s=0.5)
    _fake_runner(tmp_path, monkeypatch, "hangs_after_ready")
    start = time.monotonic()
    hung = evaluate_program(ADD, ADD_TESTS, timeout_s=0.5, config=config)
    assert time.monotonic() - start < 0.5 + 0.5 + 1.0
    assert _verdicts(hung) == [Verdict.TIMEOUT, Verdict.NOT_RUN, Verdict.NOT_RUN]
    assert "stopped answering" in hung.tests[0].detail
    _fake_runner(tmp_path, monkeypatch, "dies_after_ready")
    died = evaluate_program(ADD, ADD_TESTS, timeout_s=0.5, config=config)
    assert _verdicts(died) == [Verdict.RUNTIME_ERROR] * 3 and "exited unexpectedly" in died.tests[0].detail


@pytest.mark.parametrize("name, message", [("never_ready", "no answer"), ("fatal", "probe failed: test")])
def test_sandbox_error_when_the_runner_cannot_start(tmp_path, monkeypatch, name, message):
    _fake_runner(tmp_path, monkeypatch, name)
    start = time.monotonic()
    with pytest.raises(SandboxError, match=message):
        evaluate_program(ADD, ADD_TESTS, config=SandboxConfig(grace_s=0.2))
    assert time.monotonic() - start < 0.2 + 2.0 + 1.0
