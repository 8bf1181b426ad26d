"""Reward-model and cost-model training on preference pairs, from an SFT checkpoint.

    python -m experiments.reward_model --config.data.format=hh_rlhf --config.data.path=/data/hh-rlhf \
        --config.model.hf_path=runs/sft_alpaca/hf_model --config.tokenizer_path=runs/sft_alpaca/hf_model \
        --config.workdir=runs/rm_hh

    python -m experiments.reward_model --config.kind=cost --config.data.format=safe_rlhf_safer \
        --config.data.path=/data/PKU-SafeRLHF-30K/train.jsonl.xz \
        --config.data.eval_path=/data/PKU-SafeRLHF-30K/test.jsonl.xz \
        --config.model.hf_path=runs/sft_alpaca/hf_model --config.tokenizer_path=runs/sft_alpaca/hf_model \
        --config.workdir=runs/cost_safe

The model is the SFT checkpoint with a fresh scalar head (`LlamaForScore`: the score of a sequence
is the head's value at its last token, the EOS). `kind=reward` trains the Bradley-Terry loss;
`kind=cost` trains safe-rlhf's cost loss, which also pushes safe responses to negative cost and
unsafe ones to positive cost, from the per-response safety labels of PKU-SafeRLHF
(`data.format=safe_rlhf_safer`: chosen = the safer response). Held-out pairs (`data.eval_path`)
give the pairwise accuracy (and, for costs, the sign accuracy). The result is saved as a Hugging
Face `LlamaForSequenceClassification` folder `workdir/hf_model` for PPO and evaluation.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Literal

import jax
import numpy as np
from flax import nnx

from rlhf_jax import config as config_lib
from rlhf_jax.data import PipelineConfig, batch_iterator, get_template
from rlhf_jax.models import check_vocab, save_pretrained
from rlhf_jax.sharding import MeshConfig, make_mesh, put_batch
from rlhf_jax.training.loop import LoopConfig, RunContext
from rlhf_jax.training.preference_data import (
    COST_FORMATS, SCORE_PAIR_SOURCES, batch_fields, check_batching, check_pair_data, evaluate_pairs, pair_batches,
    pair_records)
from rlhf_jax.training.preference_steps import cached_jit, optimizer, score_model_eval, score_model_step
from rlhf_jax.training.sources import ModelSource, build_model, build_tokenizer, read_source
from rlhf_jax.training.state import OptimConfig, init_train_state, split_model


@dataclasses.dataclass(frozen=True)
class ScoreData:
    format: str = "safe_rlhf_helpful"  # a key of preference_data.SCORE_PAIR_SOURCES
    path: str = ""
    eval_path: str = ""  # held-out pairs in the same format; "" = no evaluation
    template: str = "safe_rlhf"
    max_length: int = 512
    max_prompt_length: int = 256


@dataclasses.dataclass(frozen=True)
class RewardModelConfig:
    kind: Literal["reward", "cost"] = "reward"
    model: ModelSource = ModelSource()  # an SFT (causal LM) checkpoint gets a fresh score head
    tokenizer_path: str = ""
    data: ScoreData = ScoreData()
    mesh: MeshConfig = MeshConfig()
    optim: OptimConfig = OptimConfig(lr=2e-5, schedule="cosine", warmup_steps=10, weight_decay=0.1)
    loop: LoopConfig = LoopConfig(steps=1000, checkpoint_every=200)
    batch_size: int = 64
    micro_batches: int = 1
    seed: int = 0
    workdir: str = "runs/reward_model"


def get_config(preset_name: str | None = None) -> RewardModelConfig:
    if preset_name is not None:
        raise ValueError(f"experiments.reward_model has no preset {preset_name!r}; set fields with --config.*")
    return RewardModelConfig()


def validate(cfg: RewardModelConfig, mesh) -> None:
    check_batching(cfg.batch_size, cfg.micro_batches, mesh, "reward_model")
    check_pair_data(cfg.data.format, SCORE_PAIR_SOURCES, cfg.data.eval_path)
    if cfg.kind == "cost" and cfg.data.format not in COST_FORMATS:
        raise ValueError(f"data.format={cfg.data.format!r} has no per-response safety labels; "
                         f"kind=cost needs one of {list(COST_FORMATS)}")


def main(cfg: RewardModelConfig) -> dict:
    mesh = make_mesh(cfg.mesh)
    validate(cfg, mesh)
    tokenizer = build_tokenizer(cfg.tokenizer_path)
    template = get_template(cfg.data.template)
    safety = cfg.kind == "cost"
    records = pair_records(read_source(SCORE_PAIR_SOURCES, cfg.data.format, cfg.data.path, key="data.path"),
                           safety=safety)
    eval_records = (pair_records(read_source(SCORE_PAIR_SOURCES, cfg.data.format, cfg.data.eval_path,
                                             key="data.eval_path"), safety=safety)
                    if cfg.data.eval_path else [])
    local_batch = cfg.batch_size // jax.process_count()
    pipe = PipelineConfig(batch_size=local_batch, max_length=cfg.data.max_length,
                          max_prompt_length=cfg.data.max_prompt_length, seed=cfg.seed, num_epochs=None)

    model = build_model(cfg.model, mesh=mesh, head="score", vocab_size=len(tokenizer))
    check_vocab(tokenizer, model.cfg, source=cfg.tokenizer_path)
    graphdef, params = split_model(model)
    tx = optimizer(cfg.optim)
    run = RunContext(cfg.workdir, cfg.loop)
    state, meta, start = run.restore_or(init_train_state(params, tx), data_state=None)
    batches = batch_iterator(pair_batches(records, tokenizer, template, pipe), meta["data_state"])
    fields = batch_fields(records)
    step_fn = cached_jit(score_model_step, state=state, graphdef=graphdef, tx=tx, kind=cfg.kind,
                         num_micro=cfg.micro_batches)
    eval_fn = cached_jit(score_model_eval, graphdef=graphdef, kind=cfg.kind)

    def evaluate(params) -> dict:
        return evaluate_pairs(lambda b: eval_fn(params, b), eval_records, tokenizer, template, pipe, mesh)

    for step in run.steps(start):
        batch = put_batch({k: np.asarray(v) for k, v in next(batches).items() if k in fields}, mesh)
        state, metrics = step_fn(state, batch)
        run.record(step, metrics, save=lambda: (state, {"data_state": batches.get_state()}))
        if cfg.loop.eval_every and step % cfg.loop.eval_every == 0:
            run.log(step, evaluate(state.params), prefix="eval")
    run.finish()
    final_eval = evaluate(state.params)
    out_dir = os.path.join(cfg.workdir, "hf_model")
    save_pretrained(nnx.merge(graphdef, state.params), out_dir, tokenizer=tokenizer)
    print(f"saved {out_dir} ({cfg.kind} model); eval {final_eval}")
    return {"state": state, "eval": final_eval, "hf_model": out_dir, "stopped_early": run.stopped_early}


if __name__ == "__main__":
    config_lib.run(get_config, main)
