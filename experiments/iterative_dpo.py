"""Iterative DPO (DPO-Iter): rounds of sample -> label -> pair -> DPO, the reference reset each round.

    python -m experiments.iterative_dpo --config.prompts.format=safe_rlhf \
        --config.prompts.path=/data/PKU-SafeRLHF-30K/train.jsonl.xz \
        --config.model.hf_path=runs/sft_alpaca/hf_model --config.tokenizer_path=runs/sft_alpaca/hf_model \
        --config.labeler.name=reward_model --config.labeler.model.hf_path=runs/rm_safe/hf_model \
        --config.rounds=4 --config.steps_per_round=200 --config.workdir=runs/dpo_iter_safe

    # APPS: 5 programs per problem labelled by the unit tests, the paper's pairing rule
    python -m experiments.iterative_dpo --config.prompts.format=apps --config.prompts.path=/data/apps/train.jsonl \
        --config.prompts.template=alpaca --config.labeler.name=unit_tests --config.pair_rule=apps_tests \
        --config.sampling.samples_per_prompt=5 --config.sampling.max_new_tokens=1024 ...

Each round (Xu et al. 2024, Sec. 5-6): k responses per prompt from the current policy (the rollout
engine), scored by a labeler (`labeler.name`: a reward model, unit tests, ...), paired by a rule
(`pair_rule`), then `steps_per_round` DPO steps whose reference is the policy at the start of the
round (its log-probs of the round's pairs are computed once, before the round trains; the reference
weights are never held as a second copy). Round data lives in `workdir/rounds/<r>/` (pairs.jsonl,
reference_logps.npz, stats.json); round statistics (mean label of the samples, pairs, ties) are
logged under `round/`. The checkpoint meta holds the round and the data position, so a run resumes
in the middle of a round on the same pairs. One optimizer state runs through all rounds. The final
policy is saved as a Hugging Face folder `workdir/hf_model`; with `--config.export_rounds=true`, each
round's final policy too, as `workdir/rounds/<r>/hf_model` (Table 2's rounds 1-4).
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
from rlhf_jax.rewards import PROMPT_STYLES
from rlhf_jax.rollout import JaxSampler
from rlhf_jax.sharding import MeshConfig, make_mesh, put_batch, validate_mesh
from rlhf_jax.training.dpo_reference import with_reference
from rlhf_jax.training.iterative_labels import (
    LABELERS, PAIR_RULES, PROMPT_SOURCES, RULE_NEEDS_LABELER, LabelContext, LabelerConfig)
from rlhf_jax.training.iterative_rounds import (
    SamplingConfig, read_round_records, reference_of_policy, round_dir, round_prompts, round_reference,
    sample_responses, write_round)
from rlhf_jax.training.loop import LoopConfig, RunContext
from rlhf_jax.training.preference_data import batch_fields, check_batching, one_pass, pair_batches
from rlhf_jax.training.preference_steps import DPOLoss, cached_jit, dpo_step, optimizer, reference_logps
from rlhf_jax.training.sources import ModelSource, build_model, build_tokenizer
from rlhf_jax.training.state import OptimConfig, init_train_state, split_model


@dataclasses.dataclass(frozen=True)
class PromptData:
    format: str = "safe_rlhf"  # a key of iterative_labels.PROMPT_SOURCES
    path: str = ""
    template: str = "safe_rlhf"
    max_prompt_length: int = 256
    max_length: int = 512  # prompt + response rows of the DPO pairs
    prompt_style: str = "apps"  # code prompts: a key of rewards.PROMPT_STYLES


@dataclasses.dataclass(frozen=True)
class IterativeDPOConfig:
    model: ModelSource = ModelSource()
    tokenizer_path: str = ""
    prompts: PromptData = PromptData()
    sampling: SamplingConfig = SamplingConfig()
    labeler: LabelerConfig = LabelerConfig()
    pair_rule: str = "best_vs_worst"  # a key of iterative_labels.PAIR_RULES
    dpo: DPOLoss = DPOLoss()
    rounds: int = 4
    steps_per_round: int = 100
    batch_size: int = 64
    micro_batches: int = 1
    mesh: MeshConfig = MeshConfig()
    optim: OptimConfig = OptimConfig(lr=1e-6, warmup_steps=10)
    loop: LoopConfig = LoopConfig(steps=0, checkpoint_every=50)  # steps: rounds * steps_per_round
    seed: int = 0
    workdir: str = "runs/iterative_dpo"
    export_rounds: bool = False  # also save each round's final policy to workdir/rounds/<r>/hf_model


def get_config(preset_name: str | None = None) -> IterativeDPOConfig:
    if preset_name is not None:
        raise ValueError(f"experiments.iterative_dpo has no preset {preset_name!r}; set fields with --config.*")
    return IterativeDPOConfig()


def _choice(key: str, value: str, registry) -> None:
    if value not in registry:
        raise ValueError(f"{key}={value!r}; choose from {sorted(registry)}")


def validate(cfg: IterativeDPOConfig, mesh) -> None:
    check_batching(cfg.batch_size, cfg.micro_batches, mesh, "iterative_dpo")
    if jax.process_count() > 1:
        raise ValueError("iterative_dpo samples and labels on one host; run it with one process")
    _choice("prompts.format", cfg.prompts.format, PROMPT_SOURCES)
    _choice("prompts.prompt_style", cfg.prompts.prompt_style, PROMPT_STYLES)
    _choice("labeler.name", cfg.labeler.name, LABELERS)
    _choice("pair_rule", cfg.pair_rule, PAIR_RULES)
    needed = RULE_NEEDS_LABELER.get(cfg.pair_rule)
    if needed is not None and cfg.labeler.name != needed:
        raise ValueError(f"pair_rule={cfg.pair_rule!r} needs labeler.name={needed!r}, got {cfg.labeler.name!r}")
    if cfg.rounds < 1 or cfg.steps_per_round < 1:
        raise ValueError(f"rounds={cfg.rounds} and steps_per_round={cfg.steps_per_round} must be >= 1")
    if cfg.loop.steps not in (0, cfg.rounds * cfg.steps_per_round):
        raise ValueError(f"loop.steps={cfg.loop.steps}: the run has rounds * steps_per_round = "
                         f"{cfg.rounds * cfg.steps_per_round} steps; leave loop.steps at 0")
    k = cfg.sampling.samples_per_prompt
    if k < 2:
        raise ValueError(f"sampling.samples_per_prompt={k}: pairs need at least 2 samples per prompt")
    if cfg.sampling.batch_size % k:
        raise ValueError(f"sampling.batch_size={cfg.sampling.batch_size} is not a multiple of "
                         f"sampling.samples_per_prompt={k}")
    validate_mesh(mesh, batch_size=cfg.sampling.batch_size, what="sampling.batch_size")
    if not os.path.exists(cfg.prompts.path):
        raise FileNotFoundError(f"prompts.path: {cfg.prompts.path!r} does not exist")


def main(cfg: IterativeDPOConfig) -> dict:
    mesh = make_mesh(cfg.mesh)
    validate(cfg, mesh)
    tokenizer = build_tokenizer(cfg.tokenizer_path)
    template = get_template(cfg.prompts.template)
    items = PROMPT_SOURCES[cfg.prompts.format](cfg.prompts.path, cfg.prompts.prompt_style)
    if not items:
        raise ValueError(f"prompts.path={cfg.prompts.path!r} holds no prompts")
    pipe = PipelineConfig(batch_size=cfg.batch_size, max_length=cfg.prompts.max_length,
                          max_prompt_length=cfg.prompts.max_prompt_length, seed=cfg.seed, num_epochs=None)
    model = build_model(cfg.model, mesh=mesh, vocab_size=len(tokenizer))
    check_vocab(tokenizer, model.cfg, source=cfg.tokenizer_path)
    graphdef, params = split_model(model)
    sampler = JaxSampler(model, mesh=mesh, prompt_buckets=(cfg.prompts.max_prompt_length,))
    labeler = LABELERS[cfg.labeler.name](cfg.labeler, LabelContext(mesh, tokenizer, template))
    rule = PAIR_RULES[cfg.pair_rule]

    spr = cfg.steps_per_round
    tx = optimizer(cfg.optim)
    run = RunContext(cfg.workdir, dataclasses.replace(cfg.loop, steps=cfg.rounds * spr))
    state, meta, start = run.restore_or(init_train_state(params, tx), round=0, data_state=None)
    step_fn = cached_jit(dpo_step, state=state, graphdef=graphdef, tx=tx, loss=cfg.dpo,
                         num_micro=cfg.micro_batches)
    logps_fn = cached_jit(reference_logps, graphdef=graphdef)
    put = functools.partial(put_batch, mesh=mesh)
    in_order = functools.partial(one_pass, tokenizer=tokenizer, template=template, config=pipe)

    def start_round(r: int, data_state):
        """(records, reference table, batch iterator, stats or None) of round r."""
        directory = round_dir(cfg.workdir, r)
        stats = None
        if data_state is None:  # a fresh round: sample, label, pair, fix the reference
            prompts = round_prompts(items, r, cfg.sampling.prompts_per_round, cfg.seed)
            responses, stats = sample_responses(
                sampler, state.params, prompts, tokenizer, template, cfg.sampling,
                max_prompt_length=cfg.prompts.max_prompt_length, key=jax.random.fold_in(jax.random.key(cfg.seed), r))
            labels = labeler(prompts, responses)
            pairs, counts = rule(prompts, responses, labels, cfg.prompts.prompt_style)
            stats = {"round": r, "mean_score": float(labels.scores.mean()),
                     "mean_best_score": float(labels.scores.max(axis=1).mean()), **counts, **stats}
            print(f"round {r}: {stats}")
            if not pairs:
                raise ValueError(f"round {r}: the pair rule {cfg.pair_rule!r} formed no pair ({counts})")
            write_round(directory, pairs, stats)
        records = read_round_records(directory)
        compute = (reference_of_policy(logps_fn, state.params, in_order, put)
                   if data_state is None else None)
        table = round_reference(directory, records, compute=compute)
        dataset = pair_batches(records, tokenizer, template, dataclasses.replace(pipe, seed=cfg.seed + r))
        return records, table, batch_iterator(dataset, data_state), stats

    current_round, batches, table, fields, round_stats = None, None, None, None, None
    for step in run.steps(start):
        r = (step - 1) // spr + 1
        if r != current_round:
            resuming = current_round is None and start % spr != 0
            if resuming and meta["round"] != r:
                raise ValueError(f"checkpoint at step {start} says round {meta['round']}, expected {r}")
            records, table, batches, round_stats = start_round(r, meta["data_state"] if resuming else None)
            current_round, fields = r, batch_fields(records)
        host = with_reference({k: np.asarray(v) for k, v in next(batches).items() if k in fields}, table)
        state, metrics = step_fn(state, put(host), None)
        run.record(step, metrics, save=lambda: (state, {"round": current_round, "data_state": batches.get_state()}))
        if round_stats is not None:
            run.log(step, round_stats, prefix="round")
            round_stats = None
        if cfg.export_rounds and step % spr == 0:
            save_pretrained(nnx.merge(graphdef, state.params),
                            os.path.join(round_dir(cfg.workdir, current_round), "hf_model"), tokenizer=tokenizer)
    run.finish()
    out_dir = os.path.join(cfg.workdir, "hf_model")
    save_pretrained(nnx.merge(graphdef, state.params), out_dir, tokenizer=tokenizer)
    print(f"saved {out_dir}")
    return {"state": state, "hf_model": out_dir, "stopped_early": run.stopped_early}


if __name__ == "__main__":
    config_lib.run(get_config, main)
