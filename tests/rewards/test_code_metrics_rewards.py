"""pass@k, n@k, per-difficulty reports, the 10/0 reward, and code preference pairs."""

import json
import math
import os

import pytest

from rlhf_jax.rewards.apps import load_apps
from rlhf_jax.rewards.codecontests import load_code_contests
from rlhf_jax.rewards.metrics import ProblemSamples, code_report, n_at_k, pass_at_k
from rlhf_jax.rewards.preference import apps_iterative_pairs, code_contests_pairs, format_response
from rlhf_jax.rewards.problems import format_prompt
from rlhf_jax.rewards.reward import code_rewards, unit_test_reward
from rlhf_jax.rewards.verdicts import ProgramResult, TestResult, Verdict

FIXTURES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures", "code")


def _result(*verdicts):
    tests = tuple(TestResult(v, 0.0, 0.0) for v in verdicts)
    overall = next((v for v in verdicts if v not in (Verdict.PASSED, Verdict.NOT_RUN)), Verdict.PASSED)
    return ProgramResult(overall, tests, 0.0, "netns", ())


def test_pass_at_k_by_hand():
    # n=5, c=2, k=1: 2/5. k=2: 1 - C(3,2)/C(5,2) = 1 - 3/10. k=4: 1 - C(3,4)/C(5,4) = 1 (n-c < k).
    assert pass_at_k(5, 2, 1) == pytest.approx(0.4)
    assert pass_at_k(5, 2, 2) == pytest.approx(0.7)
    assert pass_at_k(5, 2, 4) == 1.0
    assert pass_at_k(5, 0, 5) == 0.0 and pass_at_k(5, 5, 1) == 1.0
    for n, c, k in [(10, 3, 5), (200, 17, 100), (7, 1, 7)]:
        assert pass_at_k(n, c, k) == pytest.approx(1 - math.comb(n - c, k) / math.comb(n, k))


def test_pass_at_k_is_stable_for_large_n():
    # C(1000, 500) overflows a float; the product form does not.
    value = pass_at_k(1000, 3, 500)
    assert value == pytest.approx(1 - (500 * 499 * 498) / (1000 * 999 * 998))


@pytest.mark.parametrize("n, c, k", [(5, 6, 1), (5, -1, 1), (5, 2, 0), (5, 2, 6)])
def test_pass_at_k_rejects_impossible_counts(n, c, k):
    with pytest.raises(ValueError, match="pass@k needs"):
        pass_at_k(n, c, k)


def test_n_at_k_filters_on_public_tests():
    public = [True, False, True, True, False]
    hidden = [False, True, True, False, True]  # the failing-public samples would have solved it
    # 3 survivors, 1 correct: submitting 1 at random solves with probability 1/3, 2 -> 1 - C(2,2)/C(3,2).
    assert n_at_k(public, hidden, 1) == pytest.approx(1 / 3)
    assert n_at_k(public, hidden, 2) == pytest.approx(2 / 3)
    assert n_at_k(public, hidden, 10) == 1.0  # all survivors submitted
    assert n_at_k([False] * 5, hidden, 10) == 0.0
    with pytest.raises(ValueError, match="public outcomes"):
        n_at_k([True], hidden, 1)


def test_report_per_difficulty_markdown_and_json():
    samples = [
        ProblemSamples("a", "introductory", (True, False, False, False, False)),
        ProblemSamples("b", "introductory", (False,) * 5),
        ProblemSamples("c", "interview", (True,) * 5),
    ]
    report = code_report(samples, ks=(1, 5), difficulties=["introductory", "interview"])
    assert report.rows["introductory"] == {"pass@1": pytest.approx(0.1), "pass@5": pytest.approx(0.5)}
    assert report.rows["interview"] == {"pass@1": 1.0, "pass@5": 1.0}
    assert report.rows["all"]["pass@1"] == pytest.approx((0.2 + 0 + 1) / 3)
    assert report.counts == {"introductory": 2, "interview": 1, "all": 3}
    markdown = report.to_markdown("APPS test")
    assert "| introductory | 2 | 10.0 | 50.0 |" in markdown and "| all | 3 | 40.0 | 66.7 |" in markdown
    assert json.loads(report.to_json())["metrics"]["interview"]["pass@5"] == 1.0
    with pytest.raises(ValueError, match="no problems of difficulty"):
        code_report(samples, difficulties=["introductory", "interview", "competition"])
    with pytest.raises(ValueError, match="same number of samples"):
        code_report(samples + [ProblemSamples("d", "interview", (True,))])
    with pytest.raises(ValueError, match="pass@10 needs"):
        code_report(samples, ks=(10,))


def test_report_with_n_at_k():
    samples = [ProblemSamples("x", "A", (True, False, True, False), (False, True, True, True)),
               ProblemSamples("y", "B", (False, False, False, True), (True, True, True, True))]
    report = code_report(samples, ks=(1,), n_submit=1)
    # x: survivors 1..3 with hidden (False, True, False) -> 1/3; y: all survive, 1 correct of 4 -> 1/4.
    assert report.rows["A"]["1@4"] == pytest.approx(1 / 3)
    assert report.rows["B"]["1@4"] == pytest.approx(0.25)


def test_unit_test_reward_is_ten_or_zero():
    P, W, N = Verdict.PASSED, Verdict.WRONG_ANSWER, Verdict.NOT_RUN
    assert unit_test_reward(_result(P, P)) == 10.0
    assert unit_test_reward(_result(P, W)) == 0.0
    assert unit_test_reward(_result(P, W, P, P), partial_credit=True) == pytest.approx(7.5)
    assert unit_test_reward(_result(W, W), partial_credit=True, fail_reward=-1.0) == -1.0
    with pytest.raises(ValueError, match="fail_fast=False"):
        unit_test_reward(_result(W, N), partial_credit=True)


def test_code_rewards_end_to_end():
    add, two_sum = load_apps(os.path.join(FIXTURES, "apps"), "train")[:2]
    completions = [
        "```python\na, b = map(int, input().split())\nprint(a + b)\n```",
        "a, b = map(int, input().split())\nprint(a - b)\n",
        "seen = {}\n        for i, x in enumerate(nums):\n            if target - x in seen:\n"
        "                return [seen[target - x], i]\n            seen[x] = i\n",
    ]
    rewards, results = code_rewards([add, add, two_sum], completions, timeout_s=2.0)
    assert rewards == [10.0, 0.0, 10.0]
    assert [t.verdict for t in results[1].tests] == [Verdict.WRONG_ANSWER, Verdict.NOT_RUN, Verdict.NOT_RUN]
    partial, _ = code_rewards([add], ["a, b = map(int, input().split())\nprint(abs(a) + b)"], partial_credit=True)
    assert partial == [pytest.approx(20 / 3)]  # passes 2 of 3 tests
    with pytest.raises(ValueError, match="no public tests"):
        code_rewards([add], ["x"], test_set="public")
    with pytest.raises(ValueError, match="2 problems but 1 completions"):
        code_rewards([add, add], ["x"])


def test_apps_iterative_pairs():
    add, two_sum, squares, empty = load_apps(os.path.join(FIXTURES, "apps"), "train")
    P, W, T = Verdict.PASSED, Verdict.WRONG_ANSWER, Verdict.TIMEOUT
    problems = [add, squares, two_sum, empty]
    samples = [["good1", "bad1", "good2", "bad2", "bad3"], ["bad4", "bad5"], ["good3"], ["bad6"]]
    results = [[_result(P), _result(W), _result(P), _result(T), _result(W)], [_result(W), _result(T)],
               [_result(P)], [_result(W)]]
    pairs, counts = apps_iterative_pairs(problems, samples, results)
    assert counts == {"problems": 4, "pairs": 5, "sample_winner": 1, "dataset_winner": 1, "all_passed": 1,
                      "no_winner": 1}
    assert [(p.chosen, p.rejected) for p in pairs[:3]] == [("good1", "bad1"), ("good2", "bad2"), ("good1", "bad3")]
    assert pairs[1].meta["rejected_verdict"] == "timeout" and pairs[0].meta["chosen_source"] == "sample"
    assert [(p.chosen, p.rejected) for p in pairs[3:]] == [(squares.solutions[0], "bad4"), (squares.solutions[0], "bad5")]
    assert pairs[3].meta["chosen_source"] == "dataset" and pairs[3].meta["problem_id"] == "2"
    assert pairs[0].prompt[0].text == format_prompt(add)
    with pytest.raises(ValueError, match="2 samples but 1 results"):
        apps_iterative_pairs([add], [["a", "b"]], [[_result(P)]])


def test_code_contests_pairs():
    problems = load_code_contests(os.path.join(FIXTURES, "code_contests"), "valid")
    pairs, counts = code_contests_pairs(problems, style="instruct")
    assert counts == {"problems": 2, "pairs": 2, "no_correct_python3": 0, "no_incorrect_python3": 0}
    assert pairs[0].chosen == format_response(problems[0].solutions[0], "instruct")
    assert pairs[0].chosen.startswith("```python\n") and "max" in pairs[0].chosen and "min" in pairs[0].rejected
    assert pairs[1].meta == {"problem_id": "1B. Average", "difficulty": "B", "chosen_source": "dataset",
                             "where": problems[1].where}
    with pytest.raises(ValueError, match="unknown prompt style"):
        format_response("x", "chat")
