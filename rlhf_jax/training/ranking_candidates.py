"""Candidate responses for PRO / RRHF and their ranking, built once before training and cached.

For each prompt of a preference dataset, the configured candidate *sources* (`CANDIDATE_SOURCES`)
each contribute responses, concatenated in source order:
    "dataset"  the pair's own two responses (chosen, rejected), as in HH-RLHF; labelled 1 / 0
    "policy"   `num_samples` responses sampled from the starting policy (the SFT model) with the
               rollout engine, RRHF's self-generated candidates; unlabelled
A *ranker* (`RANKERS`) then gives each candidate a reward (higher = better):
    "labels"        the data's own labels (chosen 1, rejected 0); only for labelled sources
    "reward_model"  the score of a reward model (a LlamaForScore HF folder), all texts in one pass
The result (`ranking_data` stored form) is written to a JSONL cache with a fingerprint of what
produced it, so a resumed run trains on exactly the same candidates without sampling or scoring
again, and a changed config is refused instead of reusing stale candidates.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, NamedTuple

import jax
import numpy as np
from flax import nnx

from rlhf_jax.data import PreferencePair, get_template
from rlhf_jax.data.batching import pad_id_of
from rlhf_jax.data.schema import Conversation
from rlhf_jax.data.templates import PromptTemplate
from rlhf_jax.evaluation import generate_responses, score_texts
from rlhf_jax.models import load_pretrained
from rlhf_jax.models.config import HF_SCORE_ARCHS
from rlhf_jax.models.hf_io import read_hf_config
from rlhf_jax.rollout import JaxSampler, RolloutConfig
from rlhf_jax.training.ranking_data import RankingExample, encode_ranking
from rlhf_jax.training.sources import build_tokenizer


@dataclasses.dataclass(frozen=True)
class CandidateConfig:
    """Which candidates each prompt gets and how they are ranked (see the module docstring)."""

    sources: tuple[str, ...] = ("dataset",)
    ranker: str = "labels"
    num_samples: int = 0  # per prompt, for the "policy" source
    max_new_tokens: int = 128  # PRO's setting
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    sample_batch_size: int = 64  # prompt rows per generate call


@dataclasses.dataclass(frozen=True)
class RewardModelConfig:
    """A reward model: an HF folder of a LlamaForSequenceClassification, read with its own template."""

    hf_path: str | None = None
    tokenizer_path: str | None = None  # None: hf_path
    template: str = "safe_rlhf"
    batch_size: int = 16
    max_length: int | None = None  # longer texts keep their end (where the score is read)
    dtype: Literal["float32", "bfloat16"] = "float32"


@dataclasses.dataclass(frozen=True)
class Candidate:
    """One candidate response, where it came from, and its label when the data gives one."""

    text: str
    origin: str
    label: float | None = None  # a reward the data itself gives (chosen 1, rejected 0)


def check_reward_model(cfg: RewardModelConfig, *, key: str = "reward_model") -> None:
    """Raises naming `{key}.hf_path` unless it is a folder holding a score model."""
    if cfg.hf_path is None:
        raise ValueError(f"{key}.hf_path is not set; a reward model folder is needed")
    if not os.path.isdir(cfg.hf_path):
        raise FileNotFoundError(f"{key}.hf_path={cfg.hf_path!r} is not a folder")
    try:
        archs = read_hf_config(cfg.hf_path).get("architectures") or []
    except FileNotFoundError as e:
        raise FileNotFoundError(f"{key}.hf_path: {e}") from None
    if not set(archs) & set(HF_SCORE_ARCHS):
        raise ValueError(f"{key}.hf_path={cfg.hf_path!r} holds {archs}, not a reward model "
                         f"(one of {list(HF_SCORE_ARCHS)})")


class RewardScorer:
    """Scores (conversation, response) pairs with a reward model, rendered in its own template."""

    def __init__(self, cfg: RewardModelConfig, *, mesh, key: str = "reward_model"):
        check_reward_model(cfg, key=key)
        self.cfg = cfg
        self.model = load_pretrained(cfg.hf_path, mesh=mesh, dtype=cfg.dtype, head="score")
        self.tokenizer = build_tokenizer(cfg.tokenizer_path or cfg.hf_path, key=f"{key}.tokenizer_path")
        self.template = get_template(cfg.template)

    def score(self, prompts: Sequence[Conversation], responses: Sequence[str]) -> np.ndarray:
        """float32 [N]: the reward of each response to its prompt."""
        eos = self.tokenizer.eos_token
        rendered = [self.template.render_prompt(c, eos_token=eos) for c in prompts]
        texts = [self.template.render_response(r) for r in responses]
        return score_texts(self.model, self.tokenizer, rendered, texts, batch_size=self.cfg.batch_size,
                           max_length=self.cfg.max_length)


class CandidateEnv:
    """What sources and rankers may need; the sampler and reward model are built on first use."""

    def __init__(self, *, policy: Callable[[], nnx.Module], tokenizer, template: PromptTemplate,
                 cfg: CandidateConfig, reward: RewardModelConfig, max_prompt_length: int, mesh,
                 seed: int):
        self.policy, self.tokenizer, self.template = policy, tokenizer, template
        self.cfg, self.reward_cfg, self.mesh, self.seed = cfg, reward, mesh, seed
        self.max_prompt_length = max_prompt_length

    @functools.cached_property
    def sampler(self) -> JaxSampler:
        return JaxSampler(self.policy(), mesh=self.mesh)

    @functools.cached_property
    def scorer(self) -> RewardScorer:
        return RewardScorer(self.reward_cfg, mesh=self.mesh)

    def sample(self, prompts: Sequence[Conversation], *, params=None, greedy: bool = False,
               key: jax.Array | None = None) -> list[str]:
        """One response text per prompt from `params` (None: the starting policy), decoded with the
        candidate settings; the template's response prefix is removed (it is added back when the
        text is tokenized as a response)."""
        c = self.cfg
        rollout = RolloutConfig(max_new_tokens=c.max_new_tokens, greedy=greedy, temperature=c.temperature,
                                top_k=c.top_k, top_p=c.top_p, eos_token_id=self.tokenizer.eos_token_id,
                                pad_token_id=pad_id_of(self.tokenizer))
        texts = generate_responses(self.sampler, params, self.tokenizer, self.template, prompts, rollout,
                                   batch_size=c.sample_batch_size,
                                   max_prompt_length=self.max_prompt_length, key=key)
        prefix = self.template.response_prefix
        return [t[len(prefix):] if prefix and t.startswith(prefix) else t for t in texts]


def _dataset(pairs: Sequence[PreferencePair], env: CandidateEnv) -> list[list[Candidate]]:
    return [[Candidate(p.chosen, "chosen", 1.0), Candidate(p.rejected, "rejected", 0.0)] for p in pairs]


def _policy(pairs: Sequence[PreferencePair], env: CandidateEnv) -> list[list[Candidate]]:
    n = env.cfg.num_samples
    texts = env.sample([p.prompt for p in pairs for _ in range(n)], key=jax.random.key(env.seed))
    return [[Candidate(texts[i * n + j], f"policy_{j}") for j in range(n)] for i in range(len(pairs))]


class CandidateSource(NamedTuple):
    build: Callable[[Sequence[PreferencePair], CandidateEnv], list[list[Candidate]]]
    labelled: bool  # every candidate carries a label from the data


CANDIDATE_SOURCES: dict[str, CandidateSource] = {
    "dataset": CandidateSource(_dataset, labelled=True),
    "policy": CandidateSource(_policy, labelled=False),
}


def _label_rewards(pairs, candidates: list[list[Candidate]], env: CandidateEnv) -> np.ndarray:
    unlabelled = sorted({c.origin for row in candidates for c in row if c.label is None})
    if unlabelled:
        raise ValueError(f"ranker 'labels' cannot rank the unlabelled candidates {unlabelled}; "
                         "use the 'reward_model' ranker")
    return np.asarray([[c.label for c in row] for row in candidates], np.float32)


def _reward_model_rewards(pairs, candidates: list[list[Candidate]], env: CandidateEnv) -> np.ndarray:
    prompts = [p.prompt for p, row in zip(pairs, candidates) for _ in row]
    scores = env.scorer.score(prompts, [c.text for row in candidates for c in row])
    return scores.reshape(len(candidates), -1)


RANKERS: dict[str, Callable[[Sequence[PreferencePair], list[list[Candidate]], CandidateEnv], np.ndarray]] = {
    "labels": _label_rewards,
    "reward_model": _reward_model_rewards,
}


def check_candidate_config(cfg: CandidateConfig, *, key: str = "candidates") -> None:
    """Rejects unknown or inconsistent source / ranker settings, naming the key."""
    if not cfg.sources:
        raise ValueError(f"{key}.sources is empty; choose from {sorted(CANDIDATE_SOURCES)}")
    for name in cfg.sources:
        if name not in CANDIDATE_SOURCES:
            raise ValueError(f"{key}.sources: {name!r} is unknown; choose from {sorted(CANDIDATE_SOURCES)}")
    if len(set(cfg.sources)) != len(cfg.sources):
        raise ValueError(f"{key}.sources={cfg.sources} names a source twice")
    if cfg.ranker not in RANKERS:
        raise ValueError(f"{key}.ranker={cfg.ranker!r}; choose from {sorted(RANKERS)}")
    unlabelled = [s for s in cfg.sources if not CANDIDATE_SOURCES[s].labelled]
    if cfg.ranker == "labels" and unlabelled:
        raise ValueError(f"{key}.ranker='labels' cannot rank candidates of {unlabelled} (they have no "
                         f"labels); use {key}.ranker=reward_model")
    if "policy" in cfg.sources and cfg.num_samples < 1:
        raise ValueError(f"{key}.num_samples={cfg.num_samples}: the 'policy' source needs at least 1")
    if "policy" not in cfg.sources and cfg.num_samples:
        raise ValueError(f"{key}.num_samples={cfg.num_samples} has no effect without the 'policy' "
                         f"source in {key}.sources")
    if cfg.sample_batch_size < 1:
        raise ValueError(f"{key}.sample_batch_size={cfg.sample_batch_size} must be positive")


def _read_cache(path: str, fingerprint: Mapping[str, Any]) -> list[dict[str, Any]] | None:
    if not os.path.exists(path):
        return None
    with open(path) as f:
        header = json.loads(f.readline())
        records = [json.loads(line) for line in f]
    old = header.get("fingerprint", {})
    changed = sorted(k for k in set(old) | set(fingerprint) if old.get(k) != fingerprint.get(k))
    if changed:
        detail = ", ".join(f"{k}: {old.get(k)!r} -> {fingerprint.get(k)!r}" for k in changed)
        raise ValueError(f"candidate cache {path} was built with other settings ({detail}); "
                         "use a new workdir, or delete the cache to rebuild it")
    if len(records) != header.get("count"):
        raise ValueError(f"candidate cache {path} holds {len(records)} records, its header says "
                         f"{header.get('count')}; delete it to rebuild")
    return records


def _write_cache(path: str, fingerprint: Mapping[str, Any], records: Sequence[Mapping[str, Any]]) -> None:
    if jax.process_index() != 0:
        return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(json.dumps({"fingerprint": dict(fingerprint), "count": len(records)}) + "\n")
        f.writelines(json.dumps(r) + "\n" for r in records)
    os.replace(tmp, path)


def build_candidates(pairs: Sequence[PreferencePair], *, sources: Sequence[str], ranker: str,
                     env: CandidateEnv, cache_path: str, fingerprint: Mapping[str, Any]
                     ) -> list[dict[str, Any]]:
    """Stored ranking examples for `pairs`: read from `cache_path` when it was built with the same
    `fingerprint` (JSON values), else built from `sources` and `ranker` and written there."""
    fingerprint = {**fingerprint, "sources": list(sources), "ranker": ranker, "pairs": len(pairs)}
    cached = _read_cache(cache_path, fingerprint)
    if cached is not None:
        print(f"read {len(cached)} ranked prompts from {cache_path}")
        return cached
    per_source = [CANDIDATE_SOURCES[name].build(pairs, env) for name in sources]
    candidates = [[c for part in parts for c in part] for parts in zip(*per_source)]
    rewards = RANKERS[ranker](pairs, candidates, env)
    records = [encode_ranking(RankingExample(p.prompt, tuple(c.text for c in row),
                                             tuple(float(r) for r in rewards_k),
                                             tuple(c.origin for c in row), p.meta))
               for p, row, rewards_k in zip(pairs, candidates, rewards)]
    _write_cache(cache_path, fingerprint, records)
    print(f"built {len(records)} ranked prompts ({len(candidates[0]) if candidates else 0} candidates "
          f"each) -> {cache_path}")
    return records
