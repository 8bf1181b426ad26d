"""Supervised fine-tuning on prompt/response data (loss on response tokens only).

    python -m experiments.sft --config.data.format=alpaca --config.data.path=/data/alpaca_data.json \
        --config.model.hf_path=/models/Llama-2-7b-hf --config.tokenizer_path=/models/Llama-2-7b-hf \
        --config.workdir=runs/sft_alpaca

Writes Orbax checkpoints (resumed automatically from `workdir`), TensorBoard and JSONL metrics, and
the final model as a Hugging Face folder `workdir/hf_model` for the next stage (reward model, DPO,
PPO). `--config.data.pack=true` packs several examples per row.
"""

from __future__ import annotations

import dataclasses
import os

import jax
import numpy as np
from flax import nnx

from rlhf_jax import config as config_lib
from rlhf_jax.data import PipelineConfig, batch_iterator, get_template, sft_dataset
from rlhf_jax.data.schema import encode_sft
from rlhf_jax.models import check_vocab, save_pretrained
from rlhf_jax.sharding import MeshConfig, make_mesh, put_batch
from rlhf_jax.training.loop import LoopConfig, RunContext, pad_rows, precompile
from rlhf_jax.training.sources import SFT_SOURCES, ModelSource, build_model, build_tokenizer, read_source
from rlhf_jax.training.state import (
    OptimConfig, check_batching, init_train_state, make_optimizer, split_model)
from rlhf_jax.training.steps import jit_step, sft_eval, sft_step

SFT_FIELDS = ("input_ids", "attention_mask", "loss_mask", "positions", "segment_ids")


@dataclasses.dataclass(frozen=True)
class SFTData:
    format: str = "alpaca"
    path: str = ""
    template: str = "safe_rlhf"
    max_length: int = 512
    max_prompt_length: int = 256
    pack: bool = False
    eval_examples: int = 0  # held out from the end of the file for a validation loss


@dataclasses.dataclass(frozen=True)
class SFTConfig:
    model: ModelSource = ModelSource()
    tokenizer_path: str = ""
    data: SFTData = SFTData()
    mesh: MeshConfig = MeshConfig()
    optim: OptimConfig = OptimConfig(lr=2e-5, schedule="cosine", warmup_steps=10)
    loop: LoopConfig = LoopConfig(steps=1000, checkpoint_every=200)
    batch_size: int = 64
    micro_batches: int = 1
    seed: int = 0
    workdir: str = "runs/sft"


def get_config(preset_name: str | None = None) -> SFTConfig:
    if preset_name is not None:
        raise ValueError(f"experiments.sft has no preset {preset_name!r}; set fields with --config.*")
    return SFTConfig()


def validate(cfg: SFTConfig, mesh) -> None:
    check_batching(cfg.batch_size, cfg.micro_batches, mesh, "sft")
    if cfg.data.format not in SFT_SOURCES:
        raise ValueError(f"data.format={cfg.data.format!r}; choose from {sorted(SFT_SOURCES)}")


def main(cfg: SFTConfig) -> dict:
    mesh = make_mesh(cfg.mesh)
    validate(cfg, mesh)
    tokenizer = build_tokenizer(cfg.tokenizer_path)
    examples = [encode_sft(e) for e in read_source(SFT_SOURCES, cfg.data.format, cfg.data.path,
                                                   key="data.path")]
    n_eval = cfg.data.eval_examples
    train_examples, eval_examples = examples[:len(examples) - n_eval], examples[len(examples) - n_eval:]
    template = get_template(cfg.data.template)
    local_batch = cfg.batch_size // jax.process_count()
    pipe = PipelineConfig(batch_size=local_batch, max_length=cfg.data.max_length,
                          max_prompt_length=cfg.data.max_prompt_length, seed=cfg.seed,
                          num_epochs=None, pack=cfg.data.pack)
    dataset = sft_dataset(train_examples, tokenizer, template, pipe)

    model = build_model(cfg.model, mesh=mesh, vocab_size=len(tokenizer))
    check_vocab(tokenizer, model.cfg, source=cfg.tokenizer_path)
    graphdef, params = split_model(model)
    tx = make_optimizer(cfg.optim)
    run = RunContext(cfg.workdir, cfg.loop)
    state, meta, start = run.restore_or(init_train_state(params, tx), data_state=None)
    batches = batch_iterator(dataset, meta["data_state"])
    step_fn = jit_step(sft_step, state=state, graphdef=graphdef, tx=tx, num_micro=cfg.micro_batches)
    eval_fn = jax.jit(lambda p, b: sft_eval(p, b, graphdef=graphdef))

    def evaluate(params) -> dict:
        if not eval_examples:
            return {}
        eval_pipe = dataclasses.replace(pipe, shuffle=False, num_epochs=1, drop_remainder=False, pack=False)
        sums, count = 0.0, 0.0
        for batch in sft_dataset(eval_examples, tokenizer, template, eval_pipe):
            batch = pad_rows({k: np.asarray(batch[k]) for k in SFT_FIELDS}, local_batch)
            m = eval_fn(params, put_batch(batch, mesh))
            sums += float(m["loss"]) * float(m["count"])
            count += float(m["count"])
        return {"loss": sums / max(count, 1.0), "tokens": count}

    def next_batch():
        return put_batch({k: np.asarray(v) for k, v in next(batches).items() if k in SFT_FIELDS}, mesh)

    pending = next_batch() if start < cfg.loop.steps else None
    if pending is not None:
        step_fn = precompile(step_fn, state, pending)
    for step in run.steps(start):
        batch, pending = (pending, None) if pending is not None else (next_batch(), None)
        state, metrics = step_fn(state, batch)
        run.record(step, metrics, save=lambda: (state, {"data_state": batches.get_state()}))
        if cfg.loop.eval_every and step % cfg.loop.eval_every == 0:
            run.log(step, evaluate(state.params), prefix="eval")
    run.finish()
    final_eval = evaluate(state.params)
    out_dir = os.path.join(cfg.workdir, "hf_model")
    save_pretrained(nnx.merge(graphdef, state.params), out_dir, tokenizer=tokenizer)
    print(f"saved {out_dir}; eval {final_eval}")
    return {"state": state, "eval": final_eval, "hf_model": out_dir, "stopped_early": run.stopped_early}


if __name__ == "__main__":
    config_lib.run(get_config, main)
