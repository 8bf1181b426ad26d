"""Reward (and cost) sources for PPO: one scalar per response, registered by name.

    source = build_reward_source(cfg.reward, ctx, key="reward")   # validated at config load
    scores_B = source(RewardInputs(...))                          # [B] float32, rows as the rollout

`REWARD_SOURCES` maps a config name to a builder `(RewardConfig, RewardContext, key) -> source`:
- "model": a LlamaForScore (reward or cost model, Xu et al. use the safe-rlhf and OpenAssistant
  models) scoring prompt + response; the score is its value at the last valid token. The model must
  share the actor's tokenizer. The source keeps `graphdef` and `params`, so the critic can start
  from the same weights.
- "apps_unit_tests": the paper's code reward, 10 if the program in the response passes every test
  of its APPS problem, else 0 (`rlhf_jax.rewards.code_rewards`); the prompt's meta names the
  problem (`problem_id`, as the "apps" prompt source writes it).
- "code_contests_unit_tests": the same over CodeContests problems (every public, private and generated
  test), with the "code_contests" prompt source.
- "word_count": +1 per occurrence of `word` in the decoded response, a programmatic toy task.
Programmatic sources run on the host over this process's rows (`host_reward`); register another
with `REWARD_SOURCES[name] = builder`.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import math
import os
from typing import Any, Callable, NamedTuple, Protocol, Sequence

import jax
import numpy as np
from flax import nnx

from rlhf_jax.models import check_vocab
from rlhf_jax.sharding import put_batch
from rlhf_jax.training.ppo_config import RewardConfig
from rlhf_jax.training.ppo_rollout import in_chunks
from rlhf_jax.training.ppo_steps import counted_jit
from rlhf_jax.training.sources import build_model
from rlhf_jax.training.state import split_model


class RewardInputs(NamedTuple):
    """One rollout batch as a reward source sees it.

    input_ids_BxT / attention_mask_BxT: prompt (left-padded) + response (right-padded), global arrays
    sharded by rows; response_ids_BxN / response_mask_BxN: the response part; metas: the prompt
    metadata of this process's rows, in row order.
    """

    input_ids_BxT: jax.Array
    attention_mask_BxT: jax.Array
    response_ids_BxN: jax.Array
    response_mask_BxN: jax.Array
    metas: Sequence[dict[str, Any]]


class RewardSource(Protocol):
    def __call__(self, inputs: RewardInputs) -> jax.Array:
        """[B] float32 scores, sharded by rows like the inputs."""


@dataclasses.dataclass
class RewardContext:
    """What builders may need: the mesh, the actor's tokenizer, a trace counter for jits, and the
    number of row chunks a model source scores a batch in (PPO: mini-batches x micro-batches)."""

    mesh: Any
    tokenizer: Any
    traces: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    score_chunks: int = 1


def sequence_scores(params, input_ids_BxT, attention_mask_BxT, *, graphdef, num_chunks: int = 1):
    """[B] float32: a LlamaForScore's value at each row's last valid token.

    The rows are scored in `num_chunks` chunks, one after another (`in_chunks`), so the forward's
    activations are those of B / num_chunks rows; when B is not a multiple of `num_chunks`, the
    largest common divisor of the two is used (static: shapes are known when tracing).
    """
    model = nnx.merge(graphdef, params)
    chunks = math.gcd(input_ids_BxT.shape[0], num_chunks) if num_chunks > 1 else 1
    return in_chunks(lambda ids, mask: model(ids, mask).scores, chunks, input_ids_BxT, attention_mask_BxT)


class ModelReward:
    """A score model as a reward source; `graphdef` / `params` are public for critic init."""

    def __init__(self, model, *, traces: collections.Counter, name: str, num_chunks: int = 1):
        if not isinstance(num_chunks, int) or num_chunks < 1:
            raise ValueError(f"{name}: num_chunks must be a positive int, got {num_chunks!r}")
        self.graphdef, self.params = split_model(model)
        self.cfg = model.cfg
        self._score = counted_jit(functools.partial(sequence_scores, graphdef=self.graphdef,
                                                    num_chunks=num_chunks), traces, f"{name}_scores")

    def __call__(self, inputs: RewardInputs) -> jax.Array:
        return self._score(self.params, inputs.input_ids_BxT, inputs.attention_mask_BxT)


def _model_source(cfg: RewardConfig, ctx: RewardContext, key: str) -> ModelReward:
    model = build_model(cfg.model, mesh=ctx.mesh, head="score", vocab_size=len(ctx.tokenizer),
                        key=f"{key}.model")
    check_vocab(ctx.tokenizer, model.cfg, source=cfg.model.hf_path or f"{key}.model.preset")
    return ModelReward(model, traces=ctx.traces, name=key, num_chunks=ctx.score_chunks)


def local_rows(x: jax.Array) -> np.ndarray:
    """This process's rows of a row-sharded global array, in global row order (as `put_batch` took them)."""
    shards = {}
    for shard in x.addressable_shards:
        start = shard.index[0].start or 0
        shards.setdefault(start, shard)
    return np.concatenate([np.asarray(shards[s].data) for s in sorted(shards)])


def response_texts(tokenizer, inputs: RewardInputs) -> list[str]:
    """This process's responses as text (special tokens such as EOS dropped)."""
    ids, mask = local_rows(inputs.response_ids_BxN), local_rows(inputs.response_mask_BxN).astype(bool)
    return [tokenizer.decode(row[m].tolist(), skip_special_tokens=True) for row, m in zip(ids, mask)]


def host_reward(fn: Callable[[list[str], Sequence[dict]], Sequence[float]], ctx: RewardContext
                ) -> RewardSource:
    """A source from a host function `fn(response_texts, metas) -> one float per response`."""
    def source(inputs: RewardInputs) -> jax.Array:
        texts = response_texts(ctx.tokenizer, inputs)
        if len(inputs.metas) != len(texts):
            raise ValueError(f"{len(inputs.metas)} prompt metas for {len(texts)} local responses")
        scores = np.asarray(fn(texts, inputs.metas), np.float32)
        if scores.shape != (len(texts),):
            raise ValueError(f"reward function returned shape {scores.shape}, expected ({len(texts)},)")
        return put_batch(scores, ctx.mesh)
    return source


def word_count(texts: list[str], metas: Sequence[dict], *, word: str) -> list[float]:
    """Non-overlapping occurrences of `word` in each text."""
    return [float(t.count(word)) for t in texts]


def _word_count_source(cfg: RewardConfig, ctx: RewardContext, key: str) -> RewardSource:
    if not cfg.word:
        raise ValueError(f"{key}.word must be set (non-empty) for {key}.source='word_count'")
    return host_reward(functools.partial(word_count, word=cfg.word), ctx)


def apps_rewards(texts: list[str], metas: Sequence[dict], *, problems: dict, cfg: RewardConfig,
                 key: str) -> list[float]:
    """10 / 0 unit-test rewards of responses to code prompts (APPS, CodeContests; metas carry `problem_id`)."""
    from rlhf_jax.rewards import code_rewards

    chosen = []
    for meta in metas:
        pid = str(meta.get("problem_id"))
        if pid not in problems:
            raise ValueError(f"{key}.path: no problem with tests has problem_id {pid!r} (prompt meta {meta})")
        chosen.append(problems[pid])
    rewards, _ = code_rewards(chosen, texts, partial_credit=cfg.partial_credit, timeout_s=cfg.timeout_s)
    return rewards


def _code_source(reader: str, source: str, what: str):
    """A unit-test reward source over the problems of a file read by `rlhf_jax.rewards.<reader>`."""
    def build(cfg: RewardConfig, ctx: RewardContext, key: str) -> RewardSource:
        from rlhf_jax import rewards

        if not os.path.exists(cfg.path):
            raise FileNotFoundError(f"{key}.path={cfg.path!r} does not exist ({what} problems for "
                                    f"{key}.source={source!r})")
        problems, _ = rewards.with_tests(getattr(rewards, reader)(cfg.path))
        by_id = {str(p.problem_id): p for p in problems}
        return host_reward(functools.partial(apps_rewards, problems=by_id, cfg=cfg, key=key), ctx)
    return build


REWARD_SOURCES: dict[str, Callable[[RewardConfig, RewardContext, str], RewardSource]] = {
    "model": _model_source,
    "apps_unit_tests": _code_source("read_apps", "apps_unit_tests", "APPS"),
    "code_contests_unit_tests": _code_source("read_code_contests", "code_contests_unit_tests", "CodeContests"),
    "word_count": _word_count_source,
}


def build_reward_source(cfg: RewardConfig, ctx: RewardContext, *, key: str) -> RewardSource:
    """The source `cfg.source` names; `key` ("reward" or "cost") prefixes error messages."""
    if cfg.source not in REWARD_SOURCES:
        raise ValueError(f"{key}.source={cfg.source!r}; choose from {sorted(REWARD_SOURCES)}")
    return REWARD_SOURCES[cfg.source](cfg, ctx, key)
