"""APPS (Hendrycks et al. 2021) from local Hugging Face files: problems with their unit tests.

Source layout (Hugging Face `codeparrot/apps`): `train.jsonl` and `test.jsonl` (5,000 problems
each), or Parquet conversions of them; one object per line with
    problem_id: int, question: str, difficulty: "introductory" | "interview" | "competition",
    solutions: JSON text of a list of Python programs (may be "" when there are none),
    input_output: JSON text {"inputs": [...], "outputs": [...], optional "fn_name": str}
                  (may be "" for the few problems without tests),
    starter_code: str (LeetCode-style `class Solution` stub for call-based problems), url: str.
Without `fn_name` a test feeds `inputs[i]` to standard input and compares standard output with
`outputs[i]` (a list of lines in either is joined with "\\n"). With `fn_name` `inputs[i]` is the list
of arguments and `outputs[i]` the expected return value (usually wrapped in a one-element list).
Every problem in the JSON is kept; a malformed record raises DataFormatError naming file, line and
field. Problems without tests are kept too (`CodeProblem.private_tests == ()`); `with_tests` drops
them and returns how many it dropped.

The paper (Xu et al. 2024, Sec. 6): PPO's reward is 10 when a program passes all of a training
problem's tests; the metric is pass@5 on the test split, per difficulty.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from typing import Any

from rlhf_jax.data.records import Record, find_split_file, iter_records
from rlhf_jax.rewards.problems import CodeProblem
from rlhf_jax.rewards.verdicts import TestCase

log = logging.getLogger(__name__)

DIFFICULTIES = ("introductory", "interview", "competition")
SPLIT_PATTERNS = ("{split}.jsonl", "{split}.jsonl.gz", "data/{split}-*.parquet", "{split}.parquet")


def _json_text(rec: Record, field: str) -> Any:
    """Decode a field holding JSON text; "" (no value in the dataset) decodes to None."""
    text = rec.str_field(field)
    if not text.strip():
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise rec.error(field, f"invalid JSON text: {e.msg} at column {e.colno}") from e


def _stdio_text(rec: Record, field: str, value: Any) -> str:
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return "\n".join(value)
    if not isinstance(value, str):
        raise rec.error(field, f"standard-input tests need strings (or lists of lines), got {value!r:.80}")
    return value


def parse_input_output(rec: Record, field: str = "input_output") -> tuple[tuple[TestCase, ...], str | None]:
    """The tests and `fn_name` of an APPS `input_output` field ((), None when it is empty)."""
    spec = _json_text(rec, field)
    if spec is None:
        return (), None
    if not isinstance(spec, dict) or not {"inputs", "outputs"} <= set(spec):
        raise rec.error(field, f'expected {{"inputs": [...], "outputs": [...]}}, got {str(spec)[:80]}')
    inputs, outputs, fn_name = spec["inputs"], spec["outputs"], spec.get("fn_name")
    if not isinstance(inputs, list) or not isinstance(outputs, list) or len(inputs) != len(outputs):
        raise rec.error(field, "inputs and outputs must be lists of the same length "
                               f"(got {type(inputs).__name__} and {type(outputs).__name__})")
    if fn_name is not None and (not isinstance(fn_name, str) or not fn_name.isidentifier()):
        raise rec.error(f"{field}.fn_name", f"expected a Python identifier, got {fn_name!r:.80}")
    tests = []
    for i, (given, wanted) in enumerate(zip(inputs, outputs)):
        if fn_name is None:
            tests.append(TestCase(_stdio_text(rec, f"{field}.inputs[{i}]", given),
                                  _stdio_text(rec, f"{field}.outputs[{i}]", wanted)))
        elif not isinstance(given, list):
            raise rec.error(f"{field}.inputs[{i}]", f"call-based inputs are argument lists, got {given!r:.80}")
        else:
            tests.append(TestCase(given, wanted))
    return tuple(tests), fn_name


def problem_from_record(rec: Record) -> CodeProblem:
    """One APPS row as a CodeProblem; raises DataFormatError naming file, line and field."""
    problem_id = rec.data.get("problem_id")
    if isinstance(problem_id, bool) or not isinstance(problem_id, (int, str)):
        raise rec.error("problem_id", f"expected an integer, got {problem_id!r:.80}")
    difficulty = rec.str_field("difficulty")
    if difficulty not in DIFFICULTIES:
        raise rec.error("difficulty", f"expected one of {list(DIFFICULTIES)}, got {difficulty!r:.80}")
    solutions = _json_text(rec, "solutions") or []
    if not isinstance(solutions, list) or not all(isinstance(s, str) for s in solutions):
        raise rec.error("solutions", "expected JSON text of a list of strings")
    tests, fn_name = parse_input_output(rec)
    starter_code = rec.str_field("starter_code") if "starter_code" in rec.data else ""
    return CodeProblem(
        problem_id=str(problem_id), dataset="apps", question=rec.str_field("question", allow_empty=False),
        difficulty=difficulty, private_tests=tests, fn_name=fn_name, starter_code=starter_code,
        solutions=tuple(solutions), where=rec.where,
    )


def read_apps(path: str | os.PathLike) -> list[CodeProblem]:
    """Every problem of one APPS file (`.jsonl[.gz]` or `.parquet`), in file order."""
    return [problem_from_record(rec) for rec in iter_records(path)]


def load_apps(root: str | os.PathLike, split: str, *, difficulties: Iterable[str] = DIFFICULTIES) -> list[CodeProblem]:
    """The problems of `split` ("train" or "test") under `root`, keeping only `difficulties`.

    Raises ValueError for an unknown difficulty name, FileNotFoundError when no split file is found.
    """
    wanted = tuple(difficulties)
    unknown = sorted(set(wanted) - set(DIFFICULTIES))
    if unknown:
        raise ValueError(f"unknown APPS difficulties {unknown}; known: {list(DIFFICULTIES)}")
    problems = read_apps(find_split_file(root, split, SPLIT_PATTERNS))
    return [p for p in problems if p.difficulty in wanted]


def with_tests(problems: Iterable[CodeProblem]) -> tuple[list[CodeProblem], int]:
    """The problems that have at least one test, and how many had none (logged, never silent)."""
    problems = list(problems)
    kept = [p for p in problems if p.all_tests]
    dropped = len(problems) - len(kept)
    if dropped:
        log.info("dropped %d of %d problems without tests: %s", dropped, len(problems),
                 ", ".join(p.where for p in problems if not p.all_tests)[:500])
    return kept, dropped

