"""A programming problem as the rewards, metrics and preference pairs see it, and its prompt.

Both loaders (`apps.py`, `codecontests.py`) produce `CodeProblem`s. Tests come in three groups, as
in CodeContests: `public_tests` (the examples in the statement, used to filter samples for n@k),
`private_tests` and `generated_tests` (hidden; the evaluation). APPS has a single group, stored as
`private_tests`.

Prompt styles (`format_prompt`), registered by name:
- "apps": the APPS paper's format for code models:
  "\nQUESTION:\n{question}\n{starter_code}\nUse Standard Input format|Use Call-Based format\nANSWER:\n"
- "instruct": a plain instruction for chat-tuned code models, asking for one ```python block.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable

from rlhf_jax.rewards.verdicts import TestCase


@dataclasses.dataclass(frozen=True)
class CodeProblem:
    """One problem: statement, tests, reference solutions and limits. `where` is "file:line"."""

    problem_id: str
    dataset: str  # "apps" | "code_contests"
    question: str
    difficulty: str
    public_tests: tuple[TestCase, ...] = ()
    private_tests: tuple[TestCase, ...] = ()
    generated_tests: tuple[TestCase, ...] = ()
    fn_name: str | None = None  # call-based tests when set
    starter_code: str = ""
    solutions: tuple[str, ...] = ()  # correct Python 3 programs
    incorrect_solutions: tuple[str, ...] = ()
    time_limit_s: float | None = None
    memory_limit_mb: int | None = None
    where: str = ""

    @property
    def hidden_tests(self) -> tuple[TestCase, ...]:
        """The tests a submission is judged on: private and generated (APPS: all of its tests)."""
        return self.private_tests + self.generated_tests

    @property
    def all_tests(self) -> tuple[TestCase, ...]:
        """Public, private and generated tests."""
        return self.public_tests + self.private_tests + self.generated_tests


def _apps_prompt(problem: CodeProblem) -> str:
    text = "\nQUESTION:\n" + problem.question
    if problem.starter_code:
        text += "\n" + problem.starter_code
    text += "\nUse Call-Based format" if problem.fn_name else "\nUse Standard Input format"
    return text + "\nANSWER:\n"


def _instruct_prompt(problem: CodeProblem) -> str:
    if problem.fn_name:
        how = (f"Complete the function `{problem.fn_name}` below; it is called directly with the test "
               f"arguments and its return value is checked.\n\n```python\n{problem.starter_code}\n```")
    else:
        how = "Read the input from standard input and write the answer to standard output."
    return (f"Solve the following programming problem in Python 3.\n\n{problem.question}\n\n{how}\n\n"
            "Answer with the complete program in a single ```python code block.")


PROMPT_STYLES: dict[str, Callable[[CodeProblem], str]] = {"apps": _apps_prompt, "instruct": _instruct_prompt}


def format_prompt(problem: CodeProblem, style: str = "apps") -> str:
    """The model prompt for `problem` in a registered style (see the module docstring)."""
    if style not in PROMPT_STYLES:
        raise ValueError(f"unknown prompt style {style!r}; known: {sorted(PROMPT_STYLES)}")
    return PROMPT_STYLES[style](problem)


_FENCE = re.compile(r"```[ \t]*(?:python3?|py)?[ \t]*\n(.*?)```", re.DOTALL | re.IGNORECASE)


def extract_program(completion: str, problem: CodeProblem | None = None) -> str:
    """The program in a model completion: the first fenced code block if there is one, else all of it.

    For call-based problems whose completion continues the starter code (the "apps" prompt ends
    with it), the starter code is prepended when the completion does not define `fn_name` itself.
    """
    match = _FENCE.search(completion)
    program = match.group(1) if match else completion
    if problem is not None and problem.fn_name and problem.starter_code:
        if not re.search(rf"\bdef\s+{re.escape(problem.fn_name)}\s*\(", program):
            program = problem.starter_code + program
    return program
