"""CodeContests (Li et al. 2022, AlphaCode) from local Hugging Face files.

Source layout (Hugging Face `deepmind/code_contests`): `data/{split}-*.parquet` (splits train,
valid, test), or JSON Lines exports; one problem per row with
    name: str, description: str,
    public_tests / private_tests / generated_tests: {"input": [str], "output": [str]},
    solutions / incorrect_solutions: {"language": [int], "solution": [str]}
        (language 1 = Python 2, 2 = C++, 3 = Python 3, 4 = Java, 0 = unknown),
    time_limit: {"seconds": int, "nanos": int} or null, memory_limit_bytes: int,
    difficulty: int (the dataset's Difficulty enum), plus source, cf_* fields (ignored).
The sandbox runs Python 3, so only language-3 programs are kept as `solutions` /
`incorrect_solutions`. Malformed rows raise DataFormatError naming file, row and field.

The paper (Xu et al. 2024, Table 8) reports 10@1k on valid and test: 1,000 samples per problem,
filtered by the public tests, up to 10 submitted to the hidden (private + generated) tests.
Plain DPO pairs come from `solutions` (chosen) vs `incorrect_solutions` (rejected).
"""

from __future__ import annotations

import glob
import os
from typing import Any

from rlhf_jax.data.records import Record, iter_records
from rlhf_jax.rewards.problems import CodeProblem
from rlhf_jax.rewards.verdicts import TestCase

PYTHON3 = 3
LANGUAGES = {0: "unknown", 1: "python2", 2: "cpp", 3: "python3", 4: "java"}
# The dataset's Difficulty enum: 0-6 named levels, then Codeforces problem letters from 7 (A) on.
_NAMED = ("unknown", "easy", "medium", "hard", "harder", "hardest", "external")
SPLIT_PATTERNS = ("data/{split}-*.parquet", "{split}.parquet", "{split}.jsonl", "{split}.jsonl.gz")
TEST_GROUPS = ("public_tests", "private_tests", "generated_tests")


def difficulty_name(value: int) -> str:
    """The name of a CodeContests difficulty value ("easy", ..., or the Codeforces letter "A", "B", ...)."""
    if 0 <= value < len(_NAMED):
        return _NAMED[value]
    if len(_NAMED) <= value < len(_NAMED) + 26:
        return chr(ord("A") + value - len(_NAMED))
    return f"difficulty_{value}"


def _struct(rec: Record, field: str, keys: tuple[str, str]) -> dict[str, list]:
    value = rec.data.get(field)
    if not isinstance(value, dict) or set(keys) - set(value):
        raise rec.error(field, f"expected an object with lists {list(keys)}, got {str(value)[:80]}")
    first, second = value[keys[0]], value[keys[1]]
    if not isinstance(first, list) or not isinstance(second, list) or len(first) != len(second):
        raise rec.error(field, f"{keys[0]!r} and {keys[1]!r} must be lists of the same length")
    return value


def parse_tests(rec: Record, field: str) -> tuple[TestCase, ...]:
    """One test group ({"input": [...], "output": [...]}) as TestCases."""
    value = _struct(rec, field, ("input", "output"))
    tests = []
    for i, (given, wanted) in enumerate(zip(value["input"], value["output"])):
        if not isinstance(given, str) or not isinstance(wanted, str):
            raise rec.error(f"{field}[{i}]", "input and output must be strings")
        tests.append(TestCase(given, wanted))
    return tuple(tests)


def parse_programs(rec: Record, field: str, language: int = PYTHON3) -> tuple[str, ...]:
    """The programs in `language` of a {"language": [...], "solution": [...]} field."""
    value = _struct(rec, field, ("language", "solution"))
    programs = []
    for i, (lang, program) in enumerate(zip(value["language"], value["solution"])):
        if isinstance(lang, bool) or not isinstance(lang, int) or not isinstance(program, str):
            raise rec.error(f"{field}[{i}]", f"expected an integer language and a string, got {lang!r:.20}")
        if lang == language:
            programs.append(program)
    return tuple(programs)


def _time_limit(rec: Record) -> float | None:
    value: Any = rec.data.get("time_limit")
    if value is None:
        return None
    if not isinstance(value, dict) or not all(isinstance(value.get(k, 0), int) for k in ("seconds", "nanos")):
        raise rec.error("time_limit", f'expected {{"seconds": int, "nanos": int}} or null, got {value!r:.80}')
    seconds = value.get("seconds", 0) + value.get("nanos", 0) / 1e9
    return seconds if seconds > 0 else None


def problem_from_record(rec: Record) -> CodeProblem:
    """One CodeContests row as a CodeProblem; raises DataFormatError naming file, row and field."""
    difficulty = rec.data.get("difficulty", 0)
    if isinstance(difficulty, bool) or not isinstance(difficulty, int):
        raise rec.error("difficulty", f"expected an integer, got {difficulty!r:.80}")
    memory = rec.data.get("memory_limit_bytes")
    if memory is not None and (isinstance(memory, bool) or not isinstance(memory, int) or memory < 0):
        raise rec.error("memory_limit_bytes", f"expected a non-negative integer, got {memory!r:.80}")
    public, private, generated = (parse_tests(rec, group) for group in TEST_GROUPS)
    return CodeProblem(
        problem_id=rec.str_field("name", allow_empty=False), dataset="code_contests",
        question=rec.str_field("description", allow_empty=False), difficulty=difficulty_name(difficulty),
        public_tests=public, private_tests=private, generated_tests=generated,
        solutions=parse_programs(rec, "solutions"), incorrect_solutions=parse_programs(rec, "incorrect_solutions"),
        time_limit_s=_time_limit(rec), memory_limit_mb=(memory >> 20) if memory else None, where=rec.where,
    )


def read_code_contests(path: str | os.PathLike) -> list[CodeProblem]:
    """Every problem of one CodeContests file (`.parquet` or `.jsonl[.gz]`), in file order."""
    return [problem_from_record(rec) for rec in iter_records(path)]


def split_files(root: str | os.PathLike, split: str) -> list[str]:
    """The files of `split` under `root`: all shards of the first pattern that matches any file."""
    root = os.fspath(root)
    for pattern in SPLIT_PATTERNS:
        matches = sorted(glob.glob(os.path.join(root, pattern.format(split=split))))
        if matches:
            return matches
    tried = ", ".join(os.path.join(root, p.format(split=split)) for p in SPLIT_PATTERNS)
    raise FileNotFoundError(f"no file for CodeContests split {split!r}; looked for: {tried}")


def load_code_contests(root: str | os.PathLike, split: str) -> list[CodeProblem]:
    """The problems of `split` ("train", "valid" or "test") under `root`, all shards in order."""
    return [problem for path in split_files(root, split) for problem in read_code_contests(path)]
