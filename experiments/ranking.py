"""PRO and RRHF (the listwise baselines of Xu et al. Table 4): K ranked candidates per prompt.

    python -m experiments.ranking --config.algorithm=pro \
        --config.data.format=hh_rlhf --config.data.path=/data/hh-rlhf --config.data.template=hh \
        --config.eval.format=hh_rlhf_test --config.eval.path=/data/hh-rlhf --config.eval.max_pairs=512 \
        --config.model.hf_path=runs/sft_hh/hf_model --config.tokenizer_path=runs/sft_hh/hf_model \
        --config.workdir=runs/pro_hh

`--config.algorithm=rrhf` trains RRHF on the same candidates. Candidates (`candidates.sources`) are
the pair's own responses ("dataset") and optionally `candidates.num_samples` responses sampled
from the starting policy ("policy"); they are ranked by the pair's labels (`candidates.ranker=labels`)
or by a reward model (`ranker=reward_model`, `--config.reward_model.hf_path=...`), once, before
training, and cached in `workdir/candidates/`. Each step trains `pro_loss` / `rrhf_loss` on the
policy's length-normalized log-probs of every candidate plus SFT on the best one.

Validation on held-out pairs (`eval.path`) at step 0, every `loop.eval_every` steps and at the end:
the ranking loss, `pair_accuracy` and `margin` (length-normalized log-prob of the better minus the
worse candidate) and, with `eval.reward=true`, `reward`: the reward model's mean score of greedy
answers to the first `eval.reward_prompts` held-out prompts. The best model by `selection.metric`
is kept in `workdir/best` (see `rlhf_jax.training.selection`), the final one in `workdir/hf_model`.
"""

from __future__ import annotations

import dataclasses
import functools
import os

import jax
import numpy as np
from flax import nnx

from rlhf_jax import config as config_lib
from rlhf_jax.data import PipelineConfig, batch_iterator, get_template
from rlhf_jax.models import check_vocab, save_pretrained
from rlhf_jax.sharding import MeshConfig, make_mesh, put_batch, validate_mesh
from rlhf_jax.training.loop import LoopConfig, RunContext, pad_rows
from rlhf_jax.training.ranking_candidates import (
    RANKERS, CandidateConfig, CandidateEnv, RewardModelConfig, build_candidates, check_candidate_config,
    check_reward_model)
from rlhf_jax.training.ranking_data import RANKING_FIELDS, num_candidates, ranking_dataset
from rlhf_jax.training.ranking_steps import (
    RANKING_LOSSES, PROConfig, RRHFConfig, make_ranking_loss, ranking_eval, ranking_step)
from rlhf_jax.training.selection import BestCheckpoint, SelectionConfig
from rlhf_jax.training.sources import PAIR_SOURCES, ModelSource, build_model, build_tokenizer, read_source
from rlhf_jax.training.state import OptimConfig, init_train_state, make_optimizer, split_model
from rlhf_jax.training.steps import jit_step

EVAL_PAIR_SOURCES = PAIR_SOURCES  # held-out formats included (e.g. "hh_rlhf_test")
RANKING_EVAL_METRICS = ("loss", "pair_accuracy", "margin", "sft_loss")


@dataclasses.dataclass(frozen=True)
class RankingData:
    format: str = "hh_rlhf"  # a PAIR_SOURCES name
    path: str = ""
    template: str = "hh"
    max_length: int = 512  # PRO's sequence length
    max_prompt_length: int = 256
    max_pairs: int | None = None  # only the first pairs (sampling and scoring cost per prompt)


@dataclasses.dataclass(frozen=True)
class RankingEval:
    format: str = "hh_rlhf_test"  # a PAIR_SOURCES name
    path: str = ""  # "": no validation (and no selection)
    max_pairs: int | None = None
    ranker: str = "labels"  # how the held-out pair is ranked: its labels or the reward model
    reward: bool = False  # also the mean reward of greedy answers (needs reward_model.hf_path)
    reward_prompts: int = 64


@dataclasses.dataclass(frozen=True)
class RankingConfig:
    algorithm: str = "pro"  # a RANKING_LOSSES name: "pro" | "rrhf"
    pro: PROConfig = PROConfig()
    rrhf: RRHFConfig = RRHFConfig()
    model: ModelSource = ModelSource()
    tokenizer_path: str = ""
    data: RankingData = RankingData()
    candidates: CandidateConfig = CandidateConfig()
    reward_model: RewardModelConfig = RewardModelConfig()
    eval: RankingEval = RankingEval()
    selection: SelectionConfig = SelectionConfig(metric="pair_accuracy", mode="max")
    mesh: MeshConfig = MeshConfig()
    optim: OptimConfig = OptimConfig(lr=5e-6)  # PRO's learning rate
    loop: LoopConfig = LoopConfig(steps=1000, checkpoint_every=200, eval_every=200)
    batch_size: int = 64  # prompts per step (each with K candidates)
    micro_batches: int = 1
    seed: int = 0
    workdir: str = "runs/ranking"


def get_config(preset_name: str | None = None) -> RankingConfig:
    if preset_name is not None:
        raise ValueError(f"experiments.ranking has no preset {preset_name!r}; set fields with --config.*")
    return RankingConfig()


def _uses_reward_model(cfg: RankingConfig) -> bool:
    held_out = bool(cfg.eval.path) and (cfg.eval.ranker == "reward_model" or cfg.eval.reward)
    return cfg.candidates.ranker == "reward_model" or held_out


def _check_template(name: str, key: str) -> None:
    try:
        get_template(name)
    except KeyError as e:
        raise ValueError(f"{key}={name!r}: {e.args[0]}") from None


def validate(cfg: RankingConfig, mesh) -> None:
    """Rejects a bad config before anything is loaded, naming the key."""
    validate_mesh(mesh, batch_size=cfg.batch_size, what="ranking")
    if cfg.batch_size % cfg.micro_batches:
        raise ValueError(f"batch_size={cfg.batch_size} is not divisible by micro_batches={cfg.micro_batches}")
    if (cfg.batch_size // cfg.micro_batches) % jax.process_count():
        raise ValueError("each micro-batch must split evenly over the processes")
    if cfg.algorithm not in RANKING_LOSSES:
        raise ValueError(f"algorithm={cfg.algorithm!r}; choose from {sorted(RANKING_LOSSES)}")
    if cfg.pro.sft_weight is not None and cfg.pro.sft_weight < 0:
        raise ValueError(f"pro.sft_weight={cfg.pro.sft_weight} must be >= 0")
    if cfg.rrhf.rank_weight < 0:
        raise ValueError(f"rrhf.rank_weight={cfg.rrhf.rank_weight} must be >= 0")
    if cfg.data.format not in PAIR_SOURCES:
        raise ValueError(f"data.format={cfg.data.format!r}; choose from {sorted(PAIR_SOURCES)}")
    _check_template(cfg.data.template, "data.template")
    check_candidate_config(cfg.candidates)
    if cfg.eval.path:
        if cfg.eval.format not in EVAL_PAIR_SOURCES:
            raise ValueError(f"eval.format={cfg.eval.format!r}; choose from {sorted(EVAL_PAIR_SOURCES)}")
        if cfg.eval.ranker not in RANKERS:
            raise ValueError(f"eval.ranker={cfg.eval.ranker!r}; choose from {sorted(RANKERS)}")
    elif cfg.eval.reward:
        raise ValueError("eval.reward=true needs held-out prompts: set eval.path")
    if cfg.eval.reward and cfg.eval.reward_prompts < 1:
        raise ValueError(f"eval.reward_prompts={cfg.eval.reward_prompts} must be >= 1")
    if _uses_reward_model(cfg):
        check_reward_model(cfg.reward_model)
        _check_template(cfg.reward_model.template, "reward_model.template")
    if cfg.selection.metric is not None:
        names = RANKING_EVAL_METRICS + (("reward",) if cfg.eval.reward else ())
        if not cfg.eval.path:
            raise ValueError(f"selection.metric={cfg.selection.metric!r} needs validation data: set "
                             "eval.path, or selection.metric=none")
        if cfg.selection.metric not in names:
            raise ValueError(f"selection.metric={cfg.selection.metric!r}; choose from {list(names)}"
                             + ("" if cfg.eval.reward else " ('reward' with eval.reward=true)"))
        if cfg.selection.mode not in ("max", "min"):
            raise ValueError(f"selection.mode={cfg.selection.mode!r}; choose 'max' or 'min'")


def _pairs(registry, name: str, path: str, max_pairs: int | None, *, key: str):
    pairs = read_source(registry, name, path, key=f"{key}.path")
    return pairs if max_pairs is None else pairs[:max_pairs]


def _fingerprints(cfg: RankingConfig) -> tuple[dict, dict]:
    """What the train and held-out candidates depend on (a changed value refuses the cache)."""
    enc = config_lib.to_dict
    reward = enc(cfg.reward_model)
    d = cfg.data
    train = {"data": [d.format, d.path, d.max_pairs, d.template, d.max_prompt_length],
             "candidates": enc(cfg.candidates),
             "policy": enc(cfg.model) if "policy" in cfg.candidates.sources else None,
             "reward_model": reward if cfg.candidates.ranker == "reward_model" else None,
             "seed": cfg.seed}
    held_out = {"eval": [cfg.eval.format, cfg.eval.path, cfg.eval.max_pairs],
                "reward_model": reward if cfg.eval.ranker == "reward_model" else None}
    return train, held_out


def main(cfg: RankingConfig) -> dict:
    mesh = make_mesh(cfg.mesh)
    validate(cfg, mesh)
    tokenizer = build_tokenizer(cfg.tokenizer_path)
    template = get_template(cfg.data.template)
    pairs = _pairs(PAIR_SOURCES, cfg.data.format, cfg.data.path, cfg.data.max_pairs, key="data")
    eval_pairs = (_pairs(EVAL_PAIR_SOURCES, cfg.eval.format, cfg.eval.path, cfg.eval.max_pairs, key="eval")
                  if cfg.eval.path else [])

    model = build_model(cfg.model, mesh=mesh, vocab_size=len(tokenizer))
    check_vocab(tokenizer, model.cfg, source=cfg.tokenizer_path)
    graphdef, params = split_model(model)
    env = CandidateEnv(policy=lambda: nnx.merge(graphdef, params), tokenizer=tokenizer, template=template,
                       cfg=cfg.candidates, reward=cfg.reward_model,
                       max_prompt_length=cfg.data.max_prompt_length, mesh=mesh, seed=cfg.seed)
    if cfg.eval.reward:
        _ = env.sampler  # built now from the starting weights: the first step donates them
    cache = os.path.join(cfg.workdir, "candidates")
    train_fp, eval_fp = _fingerprints(cfg)
    records = build_candidates(pairs, sources=cfg.candidates.sources, ranker=cfg.candidates.ranker, env=env,
                               cache_path=os.path.join(cache, "train.jsonl"), fingerprint=train_fp)
    eval_records = (build_candidates(eval_pairs, sources=("dataset",), ranker=cfg.eval.ranker, env=env,
                                     cache_path=os.path.join(cache, "eval.jsonl"), fingerprint=eval_fp)
                    if eval_pairs else [])
    k = num_candidates(records, what="candidates")
    # Held-out pairs (K = 2) are scored with the training loss's hyperparameters (PRO's K-based
    # SFT weight included), so train and eval losses are the same function.
    loss = make_ranking_loss(cfg.algorithm, pro=cfg.pro, rrhf=cfg.rrhf, num_candidates=k)

    local_batch = cfg.batch_size // jax.process_count()
    pipe = PipelineConfig(batch_size=local_batch, max_length=cfg.data.max_length,
                          max_prompt_length=cfg.data.max_prompt_length, seed=cfg.seed, num_epochs=None)
    dataset = ranking_dataset(records, tokenizer, template, pipe)
    tx = make_optimizer(cfg.optim)
    run = RunContext(cfg.workdir, cfg.loop)
    state, meta, start = run.restore_or(init_train_state(params, tx), data_state=None, selection=None)
    batches = batch_iterator(dataset, meta["data_state"])
    selection = BestCheckpoint(cfg.workdir, cfg.selection) if cfg.selection.metric else None
    if selection is not None:
        selection.restore(meta["selection"])
    step_fn = jit_step(ranking_step, state=state, graphdef=graphdef, tx=tx, loss=loss, num_micro=cfg.micro_batches)
    eval_fn = jax.jit(functools.partial(ranking_eval, graphdef=graphdef, loss=loss))
    eval_pipe = dataclasses.replace(pipe, shuffle=False, num_epochs=1, drop_remainder=False)
    reward_prompts = [p.prompt for p in eval_pairs[:cfg.eval.reward_prompts]]

    def evaluate(params) -> dict[str, float]:
        sums: dict[str, float] = {}
        count = 0.0
        for batch in ranking_dataset(eval_records, tokenizer, template, eval_pipe):
            batch = pad_rows({key: np.asarray(batch[key]) for key in RANKING_FIELDS}, local_batch)
            metrics = jax.device_get(eval_fn(params, put_batch(batch, mesh)))
            n = float(metrics.pop("count"))
            count += n
            for name, value in metrics.items():
                sums[name] = sums.get(name, 0.0) + float(value) * n
        out = {name: total / max(count, 1.0) for name, total in sums.items()}
        out["prompts"] = count
        if cfg.eval.reward:
            answers = env.sample(reward_prompts, params=params, greedy=True)
            out["reward"] = float(np.mean(env.scorer.score(reward_prompts, answers)))
        return out

    last_eval: dict[str, float] = {}

    def validation(step: int, params) -> None:
        last_eval.clear()
        last_eval.update(evaluate(params))
        run.log(step, last_eval, prefix="eval")
        if selection is not None:
            selection.update(step, last_eval, lambda: nnx.merge(graphdef, params), tokenizer=tokenizer)

    def checkpoint_meta():
        return state, {"data_state": batches.get_state(),
                       "selection": None if selection is None else selection.state_dict()}

    if eval_records and start == 0:
        validation(0, state.params)
    for step in run.steps(start):
        batch = put_batch({key: np.asarray(v) for key, v in next(batches).items() if key in RANKING_FIELDS},
                          mesh)
        state, metrics = step_fn(state, batch)
        due = cfg.loop.eval_every and step % cfg.loop.eval_every == 0
        if eval_records and (due or step == cfg.loop.steps):
            validation(step, state.params)  # before `record`, so a checkpoint here holds its result
        run.record(step, metrics, save=checkpoint_meta)
    run.finish()
    out_dir = os.path.join(cfg.workdir, "hf_model")
    save_pretrained(nnx.merge(graphdef, state.params), out_dir, tokenizer=tokenizer)
    best = None if selection is None else selection.best
    print(f"saved {out_dir}; last eval {last_eval}; best {best}")
    return {"state": state, "eval": dict(last_eval), "best": best, "num_candidates": k,
            "best_dir": None if selection is None else selection.path, "hf_model": out_dir,
            "selection": None if selection is None else selection.state_dict(),
            "stopped_early": run.stopped_early}


if __name__ == "__main__":
    config_lib.run(get_config, main)
