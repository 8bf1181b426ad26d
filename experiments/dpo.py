"""DPO (and its variants: conservative DPO by label smoothing, IPO) on preference pairs.

    python -m experiments.dpo --config.data.format=safe_rlhf_no_dual \
        --config.data.path=/data/PKU-SafeRLHF-30K/train.jsonl.xz \
        --config.data.eval_path=/data/PKU-SafeRLHF-30K/test.jsonl.xz \
        --config.model.hf_path=runs/sft_alpaca/hf_model --config.tokenizer_path=runs/sft_alpaca/hf_model \
        --config.precompute_reference=true --config.workdir=runs/dpo_safe

The reference is the initial policy unless `reference.hf_path` names another checkpoint. With
`precompute_reference=true` its log-probs of every pair are computed once before training and
cached (`reference_cache_dir`, by default `workdir/reference_logps`, keyed by a hash of the
reference weights, the pairs and the tokenization), so the reference model is not resident while
the policy trains; otherwise the reference params are a frozen, non-donated argument of the step.
`data.filters` lists pair filters (`preference_data.PAIR_FILTERS`); the paper's SafeRLHF
dual-unsafe / dual-safe filters are the data formats `safe_rlhf_no_dual_unsafe` / `safe_rlhf_no_dual`.
Held-out metrics on `data.eval_path`: implicit-reward margin and accuracy. The final policy is
saved as a Hugging Face folder `workdir/hf_model`; the run resumes from its checkpoints.
"""

from __future__ import annotations

import dataclasses
import os

import jax
import numpy as np
from flax import nnx

from rlhf_jax import config as config_lib
from rlhf_jax.data import PipelineConfig, batch_iterator, get_template
from rlhf_jax.models import check_vocab, save_pretrained
from rlhf_jax.sharding import MeshConfig, make_mesh, put_batch
from rlhf_jax.training.dpo_reference import folder_fingerprint, reference_tables, with_reference
from rlhf_jax.training.loop import LoopConfig, RunContext
from rlhf_jax.training.preference_data import (
    FilterContext, apply_pair_filters, batch_fields, check_batching, check_pair_data, check_pair_filters,
    evaluate_pairs, one_pass, pair_batches, pair_records)
from rlhf_jax.training.preference_steps import (
    REFERENCE_FIELDS, DPOLoss, cached_jit, dpo_metrics, dpo_step, optimizer, pair_mask, reference_logps)
from rlhf_jax.training.sources import PAIR_SOURCES, ModelSource, build_model, build_tokenizer, read_source
from rlhf_jax.training.state import OptimConfig, cast_copy, init_train_state, split_model


@dataclasses.dataclass(frozen=True)
class DPOData:
    format: str = "safe_rlhf"  # a key of sources.PAIR_SOURCES
    path: str = ""
    eval_path: str = ""  # held-out pairs in the same format; "" = no evaluation
    template: str = "safe_rlhf"
    max_length: int = 512
    max_prompt_length: int = 256
    filters: tuple[str, ...] = ()  # names in preference_data.PAIR_FILTERS, applied in order


@dataclasses.dataclass(frozen=True)
class DPOConfig:
    model: ModelSource = ModelSource()
    reference: ModelSource | None = None  # None: the initial policy
    tokenizer_path: str = ""
    data: DPOData = DPOData()
    dpo: DPOLoss = DPOLoss()
    precompute_reference: bool = False
    # the reference's parameter dtype: "" = the policy's (a float32 policy keeps a float32 reference);
    # "bfloat16" halves a resident reference's memory (its log-probs are computed in `model.dtype`)
    reference_dtype: str = ""
    reference_cache_dir: str = ""  # "": workdir/reference_logps
    mesh: MeshConfig = MeshConfig()
    optim: OptimConfig = OptimConfig(lr=1e-6, warmup_steps=10)
    loop: LoopConfig = LoopConfig(steps=1000, checkpoint_every=200)
    batch_size: int = 64
    micro_batches: int = 1
    seed: int = 0
    workdir: str = "runs/dpo"


def get_config(preset_name: str | None = None) -> DPOConfig:
    if preset_name is not None:
        raise ValueError(f"experiments.dpo has no preset {preset_name!r}; set fields with --config.*")
    return DPOConfig()


def validate(cfg: DPOConfig, mesh) -> None:
    check_batching(cfg.batch_size, cfg.micro_batches, mesh, "dpo")
    check_pair_data(cfg.data.format, PAIR_SOURCES, cfg.data.eval_path)
    check_pair_filters(cfg.data.filters, key="data.filters")
    if cfg.reference_dtype not in ("", "float32", "bfloat16"):
        raise ValueError(f"reference_dtype={cfg.reference_dtype!r}; choose '' (the policy's param dtype), "
                         "'float32' or 'bfloat16'")


def load_reference(src: ModelSource, graphdef, params, *, mesh, vocab_size: int):
    """Params of the reference checkpoint `src`; it must have the policy's architecture."""
    ref_graphdef, ref_params = split_model(build_model(src, mesh=mesh, vocab_size=vocab_size, key="reference"))
    shapes = lambda tree: jax.tree.map(lambda x: (x.shape, x.dtype), tree)  # noqa: E731
    if ref_graphdef != graphdef or shapes(ref_params) != shapes(params):
        raise ValueError("reference: its architecture differs from the policy's (model)")
    return ref_params


def main(cfg: DPOConfig) -> dict:
    mesh = make_mesh(cfg.mesh)
    validate(cfg, mesh)
    tokenizer = build_tokenizer(cfg.tokenizer_path)
    template = get_template(cfg.data.template)
    local_batch = cfg.batch_size // jax.process_count()
    pipe = PipelineConfig(batch_size=local_batch, max_length=cfg.data.max_length,
                          max_prompt_length=cfg.data.max_prompt_length, seed=cfg.seed, num_epochs=None)
    pairs, filter_counts = apply_pair_filters(
        read_source(PAIR_SOURCES, cfg.data.format, cfg.data.path, key="data.path"), cfg.data.filters,
        FilterContext(tokenizer, template, pipe.tokenize_config()))
    print(f"pairs: {filter_counts}")
    if not pairs:
        raise ValueError(f"data.path={cfg.data.path!r}: no pair is left after the filters {cfg.data.filters}")
    eval_pairs = (read_source(PAIR_SOURCES, cfg.data.format, cfg.data.eval_path, key="data.eval_path")
                  if cfg.data.eval_path else [])
    records, eval_records = pair_records(pairs), pair_records(eval_pairs)

    model = build_model(cfg.model, mesh=mesh, vocab_size=len(tokenizer))
    check_vocab(tokenizer, model.cfg, source=cfg.tokenizer_path)
    graphdef, params = split_model(model)
    if cfg.reference is not None:
        ref_params = load_reference(cfg.reference, graphdef, params, mesh=mesh, vocab_size=len(tokenizer))
        if cfg.reference_dtype:
            ref_params = cast_copy(ref_params, cfg.reference_dtype)
    elif cfg.precompute_reference and not cfg.reference_dtype:
        ref_params = params  # only read before training starts
    else:  # the initial policy; kept apart from the policy's buffers, which each step donates
        ref_params = cast_copy(params, cfg.reference_dtype or None)
    fields = batch_fields(records)
    # One forward program computes log-probs for the reference pass and for evaluation.
    logps_fn = cached_jit(reference_logps, graphdef=graphdef)
    tables, cache_info = {}, {}
    if cfg.precompute_reference:
        tokenization = dict(tokenizer=folder_fingerprint(cfg.tokenizer_path), template=cfg.data.template,
                            max_length=cfg.data.max_length, max_prompt_length=cfg.data.max_prompt_length,
                            dtype=(cfg.reference or cfg.model).dtype)
        if cfg.reference_dtype:  # (unset: the key of caches written before the option existed)
            tokenization["reference_dtype"] = cfg.reference_dtype
        tables, cache_info = reference_tables(
            logps_fn, ref_params, {"train": records, "eval": eval_records},
            cache_dir=cfg.reference_cache_dir or os.path.join(cfg.workdir, "reference_logps"),
            tokenization=tokenization, batches=lambda recs: one_pass(recs, tokenizer, template, pipe),
            put=lambda b: put_batch(b, mesh))
        ref_params = None  # not resident while training

    tx = optimizer(cfg.optim)
    run = RunContext(cfg.workdir, cfg.loop)
    state, meta, start = run.restore_or(init_train_state(params, tx), data_state=None)
    batches = batch_iterator(pair_batches(records, tokenizer, template, pipe), meta["data_state"])
    step_fn = cached_jit(dpo_step, state=state, graphdef=graphdef, tx=tx, loss=cfg.dpo,
                         num_micro=cfg.micro_batches)
    metrics_fn = cached_jit(dpo_metrics, loss=cfg.dpo)

    def host_batch(batch, name):
        batch = {k: np.asarray(batch[k]) for k in fields}
        return with_reference(batch, tables[name]) if name in tables else batch

    def evaluate(params) -> dict:
        def one(batch):
            rows = {k: batch[k] for k in fields}
            ref = ({k: batch[k] for k in REFERENCE_FIELDS} if ref_params is None else logps_fn(ref_params, rows))
            return metrics_fn(logps_fn(params, rows), ref, pair_mask(batch))
        return evaluate_pairs(one, eval_records, tokenizer, template, pipe, mesh,
                              prepare=lambda b: host_batch(b, "eval"))

    for step in run.steps(start):
        batch = put_batch(host_batch(next(batches), "train"), mesh)
        state, metrics = step_fn(state, batch, ref_params)
        run.record(step, metrics, save=lambda: (state, {"data_state": batches.get_state()}))
        if cfg.loop.eval_every and step % cfg.loop.eval_every == 0:
            run.log(step, evaluate(state.params), prefix="eval")
    run.finish()
    final_eval = evaluate(state.params)
    out_dir = os.path.join(cfg.workdir, "hf_model")
    save_pretrained(nnx.merge(graphdef, state.params), out_dir, tokenizer=tokenizer)
    print(f"saved {out_dir}; eval {final_eval}")
    return {"state": state, "reference_params": ref_params, "eval": final_eval, "hf_model": out_dir,
            "reference_cache": cache_info, "filter_counts": filter_counts, "stopped_early": run.stopped_early}


if __name__ == "__main__":
    config_lib.run(get_config, main)
