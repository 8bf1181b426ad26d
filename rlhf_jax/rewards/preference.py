"""Preference pairs for code, as `rlhf_jax.data.schema.PreferencePair`s the DPO pipeline reads.

- APPS iterative DPO (Xu et al. 2024, Sec. 6): each round samples k programs per training problem
  from the current policy and labels them with the unit tests. Every failing sample is a rejected
  response; it is paired with a passing sample (taken in turn), or with one of the dataset's
  solutions when no sample passes. Problems where every sample passes give no pair.
- CodeContests plain DPO: the dataset's correct Python 3 `solutions` (chosen) against its
  `incorrect_solutions` (rejected): each incorrect solution once, paired with the solutions in turn.
The prompt is `format_prompt(problem, style)` as one user turn; `meta` names the problem, its
difficulty, and where each side came from. Both builders return counts of what gave no pair.
"""

from __future__ import annotations

from collections.abc import Sequence

from rlhf_jax.data.schema import PreferencePair, user_prompt
from rlhf_jax.rewards.problems import PROMPT_STYLES, CodeProblem, format_prompt
from rlhf_jax.rewards.verdicts import ProgramResult


def format_response(program: str, style: str = "apps") -> str:
    """A program as the response text a model trained with `style` prompts is expected to produce."""
    if style not in PROMPT_STYLES:
        raise ValueError(f"unknown prompt style {style!r}; known: {sorted(PROMPT_STYLES)}")
    return f"```python\n{program.rstrip()}\n```" if style == "instruct" else program


def _problem_pairs(problem: CodeProblem, samples: Sequence[str], results: Sequence[ProgramResult],
                   style: str) -> tuple[list[PreferencePair], str]:
    winners = [s for s, r in zip(samples, results) if r.passed]
    losers = [(s, r) for s, r in zip(samples, results) if not r.passed]
    if not losers:
        return [], "all_passed"
    outcome, source = ("sample_winner", "sample") if winners else ("dataset_winner", "dataset")
    winners = winners or list(problem.solutions)
    if not winners:
        return [], "no_winner"
    prompt = user_prompt(format_prompt(problem, style))
    pairs = [
        PreferencePair(prompt, format_response(winners[i % len(winners)], style), format_response(loser, style),
                       {"problem_id": problem.problem_id, "difficulty": problem.difficulty, "chosen_source": source,
                        "rejected_verdict": result.verdict.value, "where": problem.where})
        for i, (loser, result) in enumerate(losers)
    ]
    return pairs, outcome


def apps_iterative_pairs(problems: Sequence[CodeProblem], samples: Sequence[Sequence[str]],
                         results: Sequence[Sequence[ProgramResult]], *, style: str = "apps",
                         ) -> tuple[list[PreferencePair], dict[str, int]]:
    """One round's pairs: `samples[p][i]` is the i-th program sampled for `problems[p]` and `results[p][i]`
    its evaluation on that problem's tests.

    Returns the pairs and counts of problems by outcome: "sample_winner", "dataset_winner",
    "all_passed" (no loser) and "no_winner" (no sample passed and the dataset has no solution).
    """
    if not len(problems) == len(samples) == len(results):
        raise ValueError(f"{len(problems)} problems, {len(samples)} sample lists, {len(results)} result lists")
    pairs: list[PreferencePair] = []
    counts = {"problems": len(problems), "pairs": 0, "sample_winner": 0, "dataset_winner": 0, "all_passed": 0,
              "no_winner": 0}
    for problem, programs, evaluations in zip(problems, samples, results):
        if len(programs) != len(evaluations):
            raise ValueError(f"{problem.where}: {len(programs)} samples but {len(evaluations)} results")
        new, outcome = _problem_pairs(problem, programs, evaluations, style)
        pairs += new
        counts[outcome] += 1
    counts["pairs"] = len(pairs)
    return pairs, counts


def code_contests_pairs(problems: Sequence[CodeProblem], *, style: str = "apps",
                        max_pairs_per_problem: int | None = None) -> tuple[list[PreferencePair], dict[str, int]]:
    """Plain DPO pairs from the dataset's correct vs incorrect Python 3 programs.

    Returns the pairs and counts: problems, pairs, and problems skipped for lack of correct or of
    incorrect Python 3 programs.
    """
    pairs: list[PreferencePair] = []
    counts = {"problems": 0, "pairs": 0, "no_correct_python3": 0, "no_incorrect_python3": 0}
    for problem in problems:
        counts["problems"] += 1
        if not problem.solutions:
            counts["no_correct_python3"] += 1
            continue
        if not problem.incorrect_solutions:
            counts["no_incorrect_python3"] += 1
            continue
        prompt = user_prompt(format_prompt(problem, style))
        rejected = problem.incorrect_solutions[:max_pairs_per_problem]
        for i, bad in enumerate(rejected):
            good = problem.solutions[i % len(problem.solutions)]
            pairs.append(PreferencePair(prompt, format_response(good, style), format_response(bad, style),
                                        {"problem_id": problem.problem_id, "difficulty": problem.difficulty,
                                         "chosen_source": "dataset", "where": problem.where}))
    counts["pairs"] = len(pairs)
    return pairs, counts
