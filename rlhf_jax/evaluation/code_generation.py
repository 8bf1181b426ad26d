"""The paper's code protocol end to end: sample programs with the rollout engine, run the unit tests.

    report, completions = evaluate_policy_code(sampler, None, tokenizer, template, problems,
                                               RolloutConfig(max_new_tokens=1024, temperature=1.0, ...),
                                               samples_per_problem=5, ks=(1, 5), batch_size=32, key=key)
    print(report.to_markdown("APPS test"))   # pass@1 / pass@5 per difficulty, as Table 7

Each problem gets `samples_per_problem` completions (greedy decoding needs exactly one: every
greedy sample would be the same). The program of a completion is taken by
`rlhf_jax.rewards.extract_program` and run in the sandbox on the problem's hidden tests ("all" for
APPS, which has no public/hidden split); pass@k is the unbiased estimator (`rewards.pass_at_k`).
Prompts are rendered exactly as in training: `format_prompt(problem, prompt_style)` as the user turn
of `template`.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax

from rlhf_jax.data.schema import user_prompt
from rlhf_jax.data.templates import PromptTemplate
from rlhf_jax.evaluation.generation import generate_responses
from rlhf_jax.rewards import CodeProblem, CodeReport, ProblemSamples, code_report, code_rewards, format_prompt
from rlhf_jax.rollout import Rollout, RolloutConfig


def evaluate_policy_code(sampler: Rollout, params, tokenizer, template: PromptTemplate,
                         problems: Sequence[CodeProblem], config: RolloutConfig, *, samples_per_problem: int,
                         ks: Sequence[int] = (1,), batch_size: int, prompt_style: str = "apps",
                         test_set: str = "all", max_prompt_length: int = 512, key: jax.Array | None = None,
                         difficulties: Sequence[str] | None = None, timeout_s: float = 4.0,
                         max_workers: int | None = None) -> tuple[CodeReport, list[list[str]]]:
    """(pass@k report per difficulty, completions[problem][sample]) of the policy on `problems`."""
    if not problems:
        raise ValueError("evaluate_policy_code needs at least one problem")
    if samples_per_problem < 1:
        raise ValueError(f"samples_per_problem must be >= 1, got {samples_per_problem}")
    if config.greedy and samples_per_problem != 1:
        raise ValueError(f"greedy decoding gives one distinct sample per problem; got samples_per_problem="
                         f"{samples_per_problem} (sample with greedy=False for pass@k, k > 1)")
    if max(ks) > samples_per_problem:
        raise ValueError(f"pass@{max(ks)} needs samples_per_problem >= {max(ks)}, got {samples_per_problem}")
    conversations = [user_prompt(format_prompt(p, prompt_style)) for p in problems
                     for _ in range(samples_per_problem)]
    texts = generate_responses(sampler, params, tokenizer, template, conversations, config,
                               batch_size=batch_size, max_prompt_length=max_prompt_length, key=key)
    repeated = [p for p in problems for _ in range(samples_per_problem)]
    _, results = code_rewards(repeated, texts, test_set=test_set, timeout_s=timeout_s, max_workers=max_workers)
    k = samples_per_problem
    samples = [ProblemSamples(str(p.problem_id), p.difficulty,
                              tuple(r.passed for r in results[i * k:(i + 1) * k]))
               for i, p in enumerate(problems)]
    completions = [texts[i * k:(i + 1) * k] for i in range(len(problems))]
    return code_report(samples, ks=ks, difficulties=difficulties), completions
