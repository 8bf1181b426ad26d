"""Iterative DPO's registries: where prompts come from, who labels samples, how pairs are formed.

- `PROMPT_SOURCES[name](path, style) -> list[PromptItem]`: every key of `sources.PAIR_SOURCES`
  (a prompt once, the chosen response as its reference answer), of `sources.SFT_SOURCES` (the
  response as reference), "apps" and "code_contests" (problems with tests; the first solution as
  reference).
- `LABELERS[name](cfg, ctx) -> labeler`, a labeler mapping (items, responses [P][k]) to `Labels`
  (scores [P, k], higher is better):
  "reward_model": a scalar-head model (`LlamaForScore`, e.g. `experiments.reward_model`'s output)
  scores prompt + response in the training layout (BOS, template-rendered prompt, response, EOS);
  "unit_tests": the paper's 10/0 unit-test reward on APPS problems (`rlhf_jax.rewards`);
  "reference_similarity": a cheap programmatic label, the `difflib` similarity ratio of the response
  to the item's reference answer (for sanity runs and tests).
- `PAIR_RULES[name](items, responses, labels, style) -> (pairs, counts)`:
  "best_vs_worst": the highest- against the lowest-scored sample of each prompt; a prompt whose
  samples all score the same is dropped and counted as a tie;
  "apps_tests": the paper's APPS rule (`rewards.apps_iterative_pairs`): every failing program
  against a passing one, or against the dataset's solution when none passes (needs "unit_tests").
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
from flax import nnx

from rlhf_jax.data import PreferencePair
from rlhf_jax.data.batching import pad_id_of, sequence_row
from rlhf_jax.data.schema import Conversation, user_prompt
from rlhf_jax.data.tokenize import encode_prompt, encode_response, join
from rlhf_jax.rewards import (
    CodeProblem, apps_iterative_pairs, code_rewards, extract_program, format_prompt, read_apps, read_code_contests,
    with_tests)
from rlhf_jax.training.loop import pad_rows
from rlhf_jax.training.preference_steps import cached_jit
from rlhf_jax.training.sources import PAIR_SOURCES, SFT_SOURCES, ModelSource, build_model, build_tokenizer


@dataclasses.dataclass(frozen=True)
class PromptItem:
    """A prompt to sample from, with a reference answer and a code problem when there are any."""

    prompt: Conversation
    reference: str | None = None
    problem: CodeProblem | None = None


def _from_pairs(reader):
    def read(path: str, style: str) -> list[PromptItem]:
        items: dict[Conversation, PromptItem] = {}
        for pair in reader(path):
            items.setdefault(pair.prompt, PromptItem(pair.prompt, pair.chosen))
        return list(items.values())
    return read


def _from_sft(reader):
    def read(path: str, style: str) -> list[PromptItem]:
        return [PromptItem(e.prompt, e.response) for e in reader(path)]
    return read


def _code(reader):
    def read(path: str, style: str) -> list[PromptItem]:
        problems, dropped = with_tests(reader(path))
        print(f"{path}: {len(problems)} problems with tests ({dropped} without)")
        return [PromptItem(user_prompt(format_prompt(p, style)), p.solutions[0] if p.solutions else None, p)
                for p in problems]
    return read


PROMPT_SOURCES: dict[str, Callable[[str, str], list[PromptItem]]] = {
    **{name: _from_pairs(reader) for name, reader in PAIR_SOURCES.items()},
    **{name: _from_sft(reader) for name, reader in SFT_SOURCES.items()},
    "apps": _code(read_apps),
    "code_contests": _code(read_code_contests),
}


@dataclasses.dataclass(frozen=True)
class LabelerConfig:
    """Which labeler, and its settings (each labeler reads the fields it needs)."""

    name: str = "reward_model"
    model: ModelSource = ModelSource()  # reward_model: the score model
    tokenizer_path: str = ""  # reward_model: "" = the policy's tokenizer
    template: str = ""  # reward_model: "" = the prompts' template
    batch_size: int = 64  # reward_model: rows per scoring call
    max_length: int = 512  # reward_model: prompt + response tokens scored
    max_prompt_length: int = 256
    timeout_s: float = 4.0  # unit_tests: per-test limit when a problem has none
    max_workers: int | None = None  # unit_tests: sandbox processes


@dataclasses.dataclass(frozen=True)
class LabelContext:
    """What labelers may use besides their config: the mesh, the policy's tokenizer and template."""

    mesh: Any
    tokenizer: Any
    template: Any


@dataclasses.dataclass(frozen=True)
class Labels:
    """Scores [P, k] of the k responses to each of P prompts; `results` [P][k] for unit tests."""

    scores: np.ndarray
    results: list[list[Any]] | None = None


def score_rows(params, rows, *, graphdef):
    """Scores [B] of a score model on sequence rows (the SFT row layout)."""
    model = nnx.merge(graphdef, params)
    return model(rows["input_ids"], rows["attention_mask"], rows["positions"], rows["segment_ids"]).scores


def score_sequences(graphdef, params, tokenizer, template, prompts: Sequence[Conversation],
                    responses: Sequence[str], *, lengths, batch_size: int, mesh) -> np.ndarray:
    """Scores [N] of a score model on prompt + response rows laid out as in training
    (`lengths` a TokenizeConfig); fixed [batch_size, max_length] batches, so one compilation."""
    from rlhf_jax.sharding import put_batch

    score_fn = cached_jit(score_rows, graphdef=graphdef)
    pad_id = pad_id_of(tokenizer)
    rows = []
    for prompt, response in zip(prompts, responses):
        prompt_ids, _ = encode_prompt(tokenizer, template, prompt, lengths.max_prompt_length)
        ids, loss_mask, _ = join(prompt_ids, encode_response(tokenizer, template, response), lengths.max_length)
        rows.append(sequence_row(ids, loss_mask, lengths.max_length, pad_id))
    out = []
    for start in range(0, len(rows), batch_size):
        chunk = rows[start:start + batch_size]
        batch = pad_rows({k: np.stack([r[k] for r in chunk]) for k in chunk[0]}, batch_size)
        out.append(np.asarray(jax.device_get(score_fn(params, put_batch(batch, mesh))))[:len(chunk)])
    return np.concatenate(out) if out else np.zeros((0,), np.float32)


def _reward_model(cfg: LabelerConfig, ctx: LabelContext):
    from rlhf_jax.data import get_template
    from rlhf_jax.data.tokenize import TokenizeConfig
    from rlhf_jax.training.state import split_model

    tokenizer = build_tokenizer(cfg.tokenizer_path, key="labeler.tokenizer_path") if cfg.tokenizer_path \
        else ctx.tokenizer
    template = get_template(cfg.template) if cfg.template else ctx.template
    model = build_model(cfg.model, mesh=ctx.mesh, head="score", vocab_size=len(tokenizer), key="labeler.model")
    graphdef, params = split_model(model)
    lengths = TokenizeConfig(cfg.max_length, cfg.max_prompt_length)

    def label(items: Sequence[PromptItem], responses: Sequence[Sequence[str]]) -> Labels:
        k = len(responses[0])
        prompts = [item.prompt for item in items for _ in range(k)]
        flat = [r for rs in responses for r in rs]
        scores = score_sequences(graphdef, params, tokenizer, template, prompts, flat, lengths=lengths,
                                 batch_size=cfg.batch_size, mesh=ctx.mesh)
        return Labels(scores.reshape(len(items), k))
    return label


def _unit_tests(cfg: LabelerConfig, ctx: LabelContext):
    def label(items: Sequence[PromptItem], responses: Sequence[Sequence[str]]) -> Labels:
        if any(item.problem is None for item in items):
            raise ValueError("labeler.name='unit_tests' needs code problems (prompts.format='apps' or 'code_contests')")
        k = len(responses[0])
        problems = [item.problem for item in items for _ in range(k)]
        rewards, results = code_rewards(problems, [r for rs in responses for r in rs], timeout_s=cfg.timeout_s,
                                        max_workers=cfg.max_workers)
        scores = np.asarray(rewards, np.float32).reshape(len(items), k)
        return Labels(scores, [results[i * k:(i + 1) * k] for i in range(len(items))])
    return label


def _reference_similarity(cfg: LabelerConfig, ctx: LabelContext):
    def label(items: Sequence[PromptItem], responses: Sequence[Sequence[str]]) -> Labels:
        if any(item.reference is None for item in items):
            raise ValueError("labeler.name='reference_similarity' needs a reference answer for every prompt")
        scores = [[difflib.SequenceMatcher(None, r, item.reference).ratio() for r in rs]
                  for item, rs in zip(items, responses)]
        return Labels(np.asarray(scores, np.float32))
    return label


LABELERS: dict[str, Callable[[LabelerConfig, LabelContext], Callable[..., Labels]]] = {
    "reward_model": _reward_model,
    "unit_tests": _unit_tests,
    "reference_similarity": _reference_similarity,
}


def _best_vs_worst(items, responses, labels: Labels, style: str):
    pairs, ties = [], 0
    for item, rs, scores in zip(items, responses, labels.scores):
        best, worst = int(np.argmax(scores)), int(np.argmin(scores))
        if scores[best] == scores[worst]:
            ties += 1
            continue
        pairs.append(PreferencePair(item.prompt, rs[best], rs[worst],
                                    {"chosen_score": float(scores[best]), "rejected_score": float(scores[worst])}))
    return pairs, {"prompts": len(items), "pairs": len(pairs), "ties": ties}


def _apps_tests(items, responses, labels: Labels, style: str):
    if labels.results is None:
        raise ValueError("pair_rule='apps_tests' needs labeler.name='unit_tests'")
    problems = [item.problem for item in items]
    programs = [[extract_program(r, p) for r in rs] for p, rs in zip(problems, responses)]
    return apps_iterative_pairs(problems, programs, labels.results, style=style)


PAIR_RULES: dict[str, Callable[..., tuple[list[PreferencePair], dict[str, int]]]] = {
    "best_vs_worst": _best_vs_worst,
    "apps_tests": _apps_tests,
}

#: Pair rules that only work with one labeler.
RULE_NEEDS_LABELER = {"apps_tests": "unit_tests"}
