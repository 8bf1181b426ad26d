"""Output comparison rules (APPS / CodeContests) and the raw-outcome -> verdict mapping, no processes."""

import signal

import pytest

from rlhf_jax.rewards.compare import compare_stdout, compare_values
from rlhf_jax.rewards.judge import judge_test, parse_status
from rlhf_jax.rewards.verdicts import TestCase, Verdict, overall_verdict


@pytest.mark.parametrize(
    "actual, expected, rule",
    [
        ("3\n", "3\n", "exact"),
        ("1 2 3  \n\n", "1 2 3\n", "tokens"),  # trailing spaces and blank lines
        ("1\r\n2\r\n", "1\n2", "tokens"),  # CRLF
        ("1 2\n3\n", "1\n2 3", "tokens"),  # layout of whitespace does not matter
        ("0.3333333", "0.333333333", "numeric"),  # |diff| = 3.3e-8
        ("1000000.5", "1000000.0", "numeric"),  # relative 5e-7 <= 1e-5
        ("2.00000", "2", "numeric"),
        ("1e3", "1000", "numeric"),
    ],
)
def test_stdout_matches_by_the_first_rule_that_applies(actual, expected, rule):
    assert compare_stdout(actual, expected) == (True, rule)


@pytest.mark.parametrize(
    "actual, expected, reason",
    [
        ("4", "3", "token 0: expected '3', got '4'"),
        ("0.3334", "0.3333", "token 0: expected '0.3333', got '0.3334'"),  # 1e-4 apart: too far
        ("1 2", "1 2 3", "expected 3 tokens, got 2"),
        ("yes", "YES", "token 0: expected 'YES', got 'yes'"),  # case matters
        ("nan", "nan", None),  # equal strings: exact
        ("3", "three", "token 0: expected 'three', got '3'"),  # reference not numeric: no tolerance
        ("inf", "1e309", "token 0: expected '1e309', got 'inf'"),  # not finite: no tolerance
    ],
)
def test_stdout_mismatches_name_the_first_difference(actual, expected, reason):
    matched, why = compare_stdout(actual, expected)
    if reason is None:
        assert matched and why == "exact"
    else:
        assert (matched, why) == (False, reason)


def test_float_tolerance_is_a_parameter():
    assert compare_stdout("1.001", "1.0", float_tol=1e-2)[0]
    assert not compare_stdout("1.001", "1.0")[0]


@pytest.mark.parametrize(
    "actual, expected, matched",
    [
        ([1, 2], [1, 2], True),
        ([1, 2], [[1, 2]], True),  # APPS wraps the expected value in a list
        (3, [3], True),
        ([[1, 2], [3]], [[[1, 2], [3]]], True),
        (0.1 + 0.2, 0.3, True),  # float tolerance
        (True, 1, True),  # Python's == as in APPS
        ("a", "b", False),
        ([1, 2], [2, 1], False),
        ({"a": 1}, {"a": 1.0000001}, True),
        (None, [None], True),
        ([3], 3, False),  # only the expected side is unwrapped
    ],
)
def test_call_based_values(actual, expected, matched):
    assert compare_values(actual, expected)[0] is matched


def _raw(**overrides):
    raw = {"outcome": "exited", "exit_code": 0, "signal": None, "wall_s": 0.01, "cpu_s": 0.01,
           "stdout": "", "stderr_tail": "", "status": '{"kind": "ok"}\n'}
    raw.update(overrides)
    return raw


def _judge(raw, test=TestCase("", "42"), call_based=False):
    return judge_test(raw, test, call_based=call_based, timeout_s=1.0, float_tol=1e-5)


@pytest.mark.parametrize(
    "raw, verdict, detail",
    [
        (_raw(stdout="42\n"), Verdict.PASSED, "tokens"),
        (_raw(stdout="41\n"), Verdict.WRONG_ANSWER, "token 0: expected '42', got '41'"),
        (_raw(status='{"kind": "syntax", "message": "SyntaxError: bad"}', exit_code=1),
         Verdict.SYNTAX_ERROR, "SyntaxError: bad"),
        (_raw(outcome="timeout", exit_code=None, signal=9), Verdict.TIMEOUT, "wall clock over 1 s"),
        (_raw(exit_code=None, signal=int(signal.SIGXCPU), cpu_s=2.0), Verdict.TIMEOUT,
         "CPU time over the limit (2.00 s)"),
        (_raw(exit_code=None, signal=int(signal.SIGKILL), cpu_s=3.0), Verdict.TIMEOUT,
         "CPU time over the limit (3.00 s)"),
        (_raw(exit_code=None, signal=int(signal.SIGKILL), cpu_s=0.1), Verdict.RUNTIME_ERROR, "killed by SIGKILL"),
        (_raw(outcome="output_limit", exit_code=None, signal=9), Verdict.OUTPUT_LIMIT,
         "output over the cap; the program was stopped"),
        (_raw(status='{"kind": "memory"}', exit_code=1), Verdict.MEMORY_LIMIT, "MemoryError"),
        (_raw(status="", exit_code=None, signal=int(signal.SIGSEGV)), Verdict.RUNTIME_ERROR, "killed by SIGSEGV"),
        (_raw(status='{"kind": "exception", "type": "ZeroDivisionError", "message": "division by zero"}',
              exit_code=1), Verdict.RUNTIME_ERROR, "ZeroDivisionError: division by zero"),
        (_raw(status="", exit_code=3), Verdict.RUNTIME_ERROR, "exit code 3"),
        # The program overwrote fd 3 with junk and exited 0: judged on its output alone.
        (_raw(status="junk", stdout="42"), Verdict.PASSED, "exact"),
    ],
)
def test_judge_maps_raw_outcomes_to_verdicts(raw, verdict, detail):
    result = _judge(raw)
    assert (result.verdict, result.detail) == (verdict, detail)


def test_judge_call_based():
    test = TestCase([1, 2], [3])
    ok = _judge(_raw(status='{"kind": "ok", "value": 3}'), test, call_based=True)
    wrong = _judge(_raw(status='{"kind": "ok", "value": 4}'), test, call_based=True)
    silent = _judge(_raw(status=""), test, call_based=True)
    odd = _judge(_raw(status='{"kind": "unserializable", "repr": "<object>"}'), test, call_based=True)
    assert ok.verdict is Verdict.PASSED
    assert (wrong.verdict, wrong.detail) == (Verdict.WRONG_ANSWER, "expected [3], got 4")
    assert silent.verdict is Verdict.RUNTIME_ERROR
    assert odd.verdict is Verdict.WRONG_ANSWER


def test_parse_status_takes_the_last_status_object():
    assert parse_status('{"kind": "ok", "value": 1}\n{"kind": "ok", "value": 2}\n') == {"kind": "ok", "value": 2}
    assert parse_status('noise\n{"kind": "memory"}\n[1]\n') == {"kind": "memory"}
    assert parse_status("") == {}


def test_overall_verdict_is_the_first_failure():
    P, W, T, N = Verdict.PASSED, Verdict.WRONG_ANSWER, Verdict.TIMEOUT, Verdict.NOT_RUN
    assert overall_verdict([P, P]) is P
    assert overall_verdict([P, T, W]) is T
    assert overall_verdict([W, N, N]) is W
