"""APPS and CodeContests loaders on the fixtures (real schemas), prompts, and malformed records."""

import json
import os

import pytest

from rlhf_jax.data.records import DataFormatError
from rlhf_jax.rewards.apps import load_apps, read_apps, with_tests
from rlhf_jax.rewards.codecontests import difficulty_name, load_code_contests, read_code_contests
from rlhf_jax.rewards.pool import ProgramRequest, evaluate_programs
from rlhf_jax.rewards.problems import extract_program, format_prompt
from rlhf_jax.rewards.verdicts import TestCase, Verdict

FIXTURES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures", "code")
APPS = os.path.join(FIXTURES, "apps")
CODE_CONTESTS = os.path.join(FIXTURES, "code_contests")


def test_apps_train_split():
    problems = load_apps(APPS, "train")
    assert [p.problem_id for p in problems] == ["0", "1", "2", "3"]
    assert [p.difficulty for p in problems] == ["introductory", "interview", "interview", "competition"]
    add, two_sum, squares, empty = problems
    assert add.private_tests[0] == TestCase("1 2\n", "3\n") and add.public_tests == ()
    assert add.fn_name is None and add.hidden_tests == add.all_tests == add.private_tests
    assert two_sum.fn_name == "twoSum" and two_sum.starter_code.startswith("class Solution:")
    assert two_sum.private_tests[0] == TestCase([[2, 7, 11, 15], 9], [[0, 1]])
    assert squares.private_tests[0] == TestCase("3", "1\n4\n9")  # lists of lines joined
    assert empty.private_tests == () and empty.solutions == ()
    assert empty.where == os.path.join(APPS, "train.jsonl") + ":4"
    kept, dropped = with_tests(problems)
    assert [p.problem_id for p in kept] == ["0", "1", "2"] and dropped == 1


def test_apps_difficulty_filter():
    assert [p.problem_id for p in load_apps(APPS, "test", difficulties=["competition"])] == ["4002"]
    with pytest.raises(ValueError, match="unknown APPS difficulties"):
        load_apps(APPS, "test", difficulties=["easy"])
    with pytest.raises(FileNotFoundError, match="valid"):
        load_apps(APPS, "valid")


def test_dataset_solutions_pass_their_own_tests():
    # The fixtures are consistent: every reference solution passes, every incorrect one does not.
    apps = [p for p in load_apps(APPS, "train") + load_apps(APPS, "test") if p.all_tests]
    contests = load_code_contests(CODE_CONTESTS, "valid") + load_code_contests(CODE_CONTESTS, "test")
    requests = [ProgramRequest(p.solutions[0], p.all_tests, p.fn_name) for p in apps + contests]
    requests += [ProgramRequest(p.incorrect_solutions[0], p.all_tests) for p in contests]
    verdicts = [r.verdict for r in evaluate_programs(requests, timeout_s=2.0)]
    n = len(apps) + len(contests)
    assert verdicts[:n] == [Verdict.PASSED] * n
    assert verdicts[n:] == [Verdict.WRONG_ANSWER] * len(contests)


def test_code_contests_parquet_and_jsonl():
    largest, average = load_code_contests(CODE_CONTESTS, "valid")
    assert largest.problem_id == "1A. Largest number" and largest.dataset == "code_contests"
    assert largest.public_tests == (TestCase("3\n1 5 2\n", "5\n"),)
    assert len(largest.private_tests) == 2 and len(largest.generated_tests) == 1
    assert largest.hidden_tests == largest.private_tests + largest.generated_tests
    assert len(largest.solutions) == 1 and "max" in largest.solutions[0]  # Python 2 and C++ dropped
    assert len(largest.incorrect_solutions) == 1 and "min" in largest.incorrect_solutions[0]
    assert (largest.time_limit_s, largest.memory_limit_mb, largest.difficulty) == (2.0, 256, "A")
    assert average.time_limit_s == 1.5 and average.where.endswith("valid-00000-of-00001.parquet:2")
    (echo,) = load_code_contests(CODE_CONTESTS, "test")
    assert echo.difficulty == "easy" and echo.public_tests == (TestCase("hello\n", "hello\n"),)
    assert [difficulty_name(v) for v in (0, 3, 6, 7, 9, 99)] == ["unknown", "hard", "external", "A", "C",
                                                                  "difficulty_99"]


def _write(tmp_path, name, rows):
    path = tmp_path / name
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _apps_row(**fields):
    row = {"problem_id": 7, "question": "q", "solutions": "[]", "difficulty": "interview", "url": "",
           "starter_code": "", "input_output": json.dumps({"inputs": ["1"], "outputs": ["1"]})}
    row.update(fields)
    return row


@pytest.mark.parametrize(
    "fields, message",
    [
        (dict(difficulty="easy"), "field 'difficulty': expected one of"),
        (dict(input_output="{not json"), "field 'input_output': invalid JSON text"),
        (dict(input_output=json.dumps({"inputs": ["1"]})), "field 'input_output': expected"),
        (dict(input_output=json.dumps({"inputs": ["1", "2"], "outputs": ["1"]})), "same length"),
        (dict(input_output=json.dumps({"inputs": [1], "outputs": ["1"]})), r"input_output.inputs\[0\]"),
        (dict(input_output=json.dumps({"fn_name": "f", "inputs": ["x"], "outputs": [1]})),
         r"input_output.inputs\[0\]': call-based"),
        (dict(input_output=json.dumps({"fn_name": "no good", "inputs": [], "outputs": []})), "fn_name"),
        (dict(solutions=json.dumps([1])), "field 'solutions'"),
        (dict(question=""), "field 'question': is empty"),
        (dict(problem_id=None), "field 'problem_id'"),
    ],
)
def test_malformed_apps_records_name_file_line_and_field(tmp_path, fields, message):
    path = _write(tmp_path, "train.jsonl", [_apps_row(), _apps_row(**fields)])
    with pytest.raises(DataFormatError, match=message) as error:
        read_apps(path)
    assert str(error.value).startswith(f"{path}:2: ")


def _cc_row(**fields):
    tests = {"input": ["1\n"], "output": ["1\n"]}
    row = {"name": "p", "description": "d", "public_tests": tests, "private_tests": tests,
           "generated_tests": {"input": [], "output": []}, "difficulty": 1,
           "solutions": {"language": [3], "solution": ["print(input())"]},
           "incorrect_solutions": {"language": [], "solution": []},
           "time_limit": {"seconds": 1, "nanos": 0}, "memory_limit_bytes": 1 << 28}
    row.update(fields)
    return row


@pytest.mark.parametrize(
    "fields, message",
    [
        (dict(public_tests={"input": ["1"]}), "field 'public_tests': expected an object"),
        (dict(private_tests={"input": ["1"], "output": []}), "field 'private_tests': 'input' and 'output'"),
        (dict(generated_tests={"input": [1], "output": ["1"]}), r"generated_tests\[0\]'"),
        (dict(solutions={"language": ["3"], "solution": ["x"]}), r"field 'solutions\[0\]'"),
        (dict(time_limit={"seconds": "1"}), "field 'time_limit'"),
        (dict(memory_limit_bytes=-1), "field 'memory_limit_bytes'"),
        (dict(difficulty="easy"), "field 'difficulty'"),
        (dict(name=""), "field 'name': is empty"),
    ],
)
def test_malformed_code_contests_records_name_file_row_and_field(tmp_path, fields, message):
    path = _write(tmp_path, "valid.jsonl", [_cc_row(), _cc_row(**fields)])
    with pytest.raises(DataFormatError, match=message) as error:
        read_code_contests(path)
    assert str(error.value).startswith(f"{path}:2: ")


def test_prompt_styles():
    add, two_sum = load_apps(APPS, "train")[:2]
    assert format_prompt(add) == ("\nQUESTION:\nGiven two integers a and b, print a + b."
                                  "\nUse Standard Input format\nANSWER:\n")
    assert format_prompt(two_sum).endswith(two_sum.starter_code + "\nUse Call-Based format\nANSWER:\n")
    instruct = format_prompt(two_sum, "instruct")
    assert "`twoSum`" in instruct and two_sum.starter_code in instruct and "```python" in instruct
    with pytest.raises(ValueError, match="unknown prompt style 'chat'"):
        format_prompt(add, "chat")


def test_extract_program():
    two_sum = load_apps(APPS, "train")[1]
    assert extract_program("Here:\n```python\nprint(1)\n```\nDone.") == "print(1)\n"
    assert extract_program("print(2)\n") == "print(2)\n"
    body = "seen = {}\n        return [0, 1]\n"  # continues the starter code of the "apps" prompt
    assert extract_program(body, two_sum) == two_sum.starter_code + body
    full = "class Solution:\n    def twoSum(self, nums, target):\n        return [0, 1]\n"
    assert extract_program(full, two_sum) == full
