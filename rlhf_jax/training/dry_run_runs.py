"""What each run keeps resident and compiles, from abstract shapes: one builder per run kind.

`RUNS[cfg.run](cfg, mesh) -> dry_run.Report`, where `cfg` is `experiments.dry_run.DryRunConfig`:
- "sft", "reward": the trained model (params, optimizer state) and its training step;
- "dpo": the policy, its frozen reference (a copy in the policy's parameter dtype, as
  experiments.dpo keeps it) and the DPO step;
- "iterative_dpo": the policy and the DPO step against precomputed reference log-probs, the
  sampler's copy of the policy and its generate program (the KV cache of `sample_batch` rows), the
  reference log-prob pass, and with `reward_model` the labeler reward model and its scoring program;
- "ppo": actor and critic (params and optimizer states), the reference (the EMA of the actor in its
  parameter dtype, or a frozen copy in `frozen_dtype`), the reward model if `reward_model` is set
  (else the reward is programmatic, e.g. unit tests) and with `cost_model` the cost model and cost
  critic, frozen models in `frozen_dtype`, the sampler's copy of the actor, and every program of a
  PPO iteration: generate, reward (cost) scores, actor / reference log-probs, critic values, the
  actor, critic (cost critic) and EMA steps.
Every program is lowered and compiled for the mesh; nothing is allocated.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import numpy as np

from rlhf_jax.models import LlamaForCausalLM, LlamaForScore, preset
from rlhf_jax.rollout.jax_sampler import SAMPLING_RULES, sampling_dtype
from rlhf_jax.training import dry_run as dr
from rlhf_jax.training.state import OptimConfig, make_optimizer

SEQUENCE = ("input_ids", "attention_mask", "loss_mask", "positions", "segment_ids")


def model_config(cfg, name: str, param_dtype: str):
    return preset(name, dtype=cfg.dtype, param_dtype=param_dtype, remat=cfg.remat)


def trained_model(report: dr.Report, label: str, model_cls, model_cfg, mesh, *, fp32_master: bool):
    """(graphdef, abstract TrainState, tx) of a trained model, recorded in `report`."""
    graphdef, params = dr.abstract_params(model_cls, model_cfg, mesh)
    tx = make_optimizer(OptimConfig(fp32_master=fp32_master))
    state = dr.abstract_train_state(params, tx)
    report.add_model(label, params, state.opt_state)
    return graphdef, state, tx


def frozen_model(report: dr.Report, label: str, model_cls, model_cfg, mesh):
    graphdef, params = dr.abstract_params(model_cls, model_cfg, mesh)
    report.add_model(label, params)
    return graphdef, params


def sequence_batch(rows: int, length: int, mesh, prefixes=("",)) -> dict[str, jax.ShapeDtypeStruct]:
    return dr.abstract_batch({p + k: ((rows, length), np.int32) for p in prefixes for k in SEQUENCE}, mesh)


def _title(cfg, run: str, model_cfg, mesh, shape: str) -> str:
    n = model_cfg.num_params(with_lm_head=run != "reward")
    return (f"{run}, {cfg.model} ({n / 1e9:.2f}B params), mesh {dict(mesh.shape)}, {shape}, remat "
            f"{cfg.remat}, params {cfg.param_dtype}{' + fp32 masters' if cfg.fp32_master else ''} "
            f"— per device")


def sft_or_reward(cfg, mesh) -> dr.Report:
    from rlhf_jax.training.preference_steps import score_model_step
    from rlhf_jax.training.steps import jit_step, sft_step

    model_cfg = model_config(cfg, cfg.model, cfg.param_dtype)
    report = dr.Report(_title(cfg, cfg.run, model_cfg, mesh,
                              f"batch {cfg.batch_size} x {cfg.seq_len} in {cfg.micro_batches} micro-batches"))
    model_cls = LlamaForScore if cfg.run == "reward" else LlamaForCausalLM
    graphdef, state, tx = trained_model(report, "model", model_cls, model_cfg, mesh, fp32_master=cfg.fp32_master)
    if cfg.run == "sft":
        step = jit_step(sft_step, state=state, graphdef=graphdef, tx=tx, num_micro=cfg.micro_batches)
        batch = sequence_batch(cfg.batch_size, cfg.seq_len, mesh)
    else:
        step = jit_step(score_model_step, state=state, graphdef=graphdef, tx=tx, kind="reward",
                        num_micro=cfg.micro_batches)
        batch = sequence_batch(cfg.batch_size, cfg.seq_len, mesh, ("chosen_", "rejected_"))
    report.programs[f"{cfg.run} step"] = dr.compile_memory(step, state, batch)
    return report


def dpo(cfg, mesh) -> dr.Report:
    from rlhf_jax.training.preference_steps import DPOLoss, dpo_step
    from rlhf_jax.training.steps import jit_step

    model_cfg = model_config(cfg, cfg.model, cfg.param_dtype)
    report = dr.Report(_title(cfg, "dpo", model_cfg, mesh,
                              f"batch {cfg.batch_size} pairs x {cfg.seq_len} in {cfg.micro_batches} micro-batches"))
    graphdef, state, tx = trained_model(report, "policy", LlamaForCausalLM, model_cfg, mesh,
                                        fp32_master=cfg.fp32_master)
    # experiments.dpo: a copy of the policy, in its param dtype unless `reference_dtype` is set
    ref = dr.abstract_like(state.params, cfg.reference_dtype or model_cfg.param_dtype)
    report.add_model(f"reference (frozen copy, {cfg.reference_dtype or model_cfg.param_dtype})", ref)
    step = jit_step(dpo_step, state=state, graphdef=graphdef, tx=tx, loss=DPOLoss(), num_micro=cfg.micro_batches)
    batch = sequence_batch(cfg.batch_size, cfg.seq_len, mesh, ("chosen_", "rejected_"))
    report.programs["dpo step"] = dr.compile_memory(step, state, batch, dr.frozen_view(ref))
    return report


def _sampler(report: dr.Report, cfg, model_cfg, mesh, *, batch: int):
    """The sampler's copy of the policy (JaxSampler's SAMPLING_RULES layout, in `sampling_dtype`) and its
    generate program."""
    graphdef, params = dr.abstract_params(LlamaForCausalLM, model_cfg, mesh, SAMPLING_RULES)
    params = dr.abstract_like(params, sampling_dtype(model_cfg))
    report.add_model("sampler copy of the policy", params)
    mem = dr.compile_generate(graphdef, params, mesh, batch=batch, prompt_len=cfg.prompt_len,
                              new_tokens=cfg.new_tokens, top_k=cfg.top_k)
    # PPO and iterative DPO replace the sampler's copy (update_params) and generate from it: no
    # second, transient copy of the policy in the sampling layout
    report.programs[f"generate ({batch} rows, {cfg.prompt_len}+{cfg.new_tokens} tokens)"] = mem
    kv = dr.kv_cache_bytes(model_cfg, batch=batch, length=cfg.prompt_len + cfg.new_tokens, mesh=mesh)
    report.notes.append(f"generate: KV cache {kv / dr.GiB:.3f} GiB per device (in its temporaries)")
    return kv


def iterative_dpo(cfg, mesh) -> dr.Report:
    from rlhf_jax.training.preference_steps import DPOLoss, dpo_step, reference_logps
    from rlhf_jax.training.ppo_rewards import sequence_scores
    from rlhf_jax.training.steps import jit_step

    model_cfg = model_config(cfg, cfg.model, cfg.param_dtype)
    report = dr.Report(_title(cfg, "iterative_dpo", model_cfg, mesh,
                              f"batch {cfg.batch_size} pairs x {cfg.seq_len} in {cfg.micro_batches} micro-batches, "
                              f"sampling {cfg.sample_batch} rows"))
    graphdef, state, tx = trained_model(report, "policy", LlamaForCausalLM, model_cfg, mesh,
                                        fp32_master=cfg.fp32_master)
    step = jit_step(dpo_step, state=state, graphdef=graphdef, tx=tx, loss=DPOLoss(), num_micro=cfg.micro_batches)
    pairs = sequence_batch(cfg.batch_size, cfg.seq_len, mesh, ("chosen_", "rejected_"))
    with_ref = dict(pairs, **dr.abstract_batch({k: ((cfg.batch_size,), np.float32)
                                                for k in ("ref_chosen_logps", "ref_rejected_logps")}, mesh))
    report.programs["dpo step (precomputed reference)"] = dr.compile_memory(step, state, with_ref)
    report.programs["reference log-probs (round start)"] = dr.compile_memory(
        jax.jit(functools.partial(reference_logps, graphdef=graphdef)), state.params, pairs)
    _sampler(report, cfg, model_cfg, mesh, batch=cfg.sample_batch)
    if not cfg.reward_model:  # labelled by unit tests or another programmatic labeler
        return report
    rm_cfg = model_config(cfg, cfg.reward_model, cfg.frozen_dtype)
    rm_graphdef, rm_params = frozen_model(report, "labeler reward model", LlamaForScore, rm_cfg, mesh)
    rows = dr.abstract_batch({"ids": ((cfg.sample_batch, cfg.seq_len), np.int32),
                              "mask": ((cfg.sample_batch, cfg.seq_len), np.int32)}, mesh)
    report.programs["labeler scores"] = dr.compile_memory(
        jax.jit(functools.partial(sequence_scores, graphdef=rm_graphdef)), dr.frozen_view(rm_params), rows["ids"],
        rows["mask"])
    return report


def ppo(cfg, mesh) -> dr.Report:
    from rlhf_jax.training import ppo_rollout as pr, ppo_steps as ps
    from rlhf_jax.training.ppo_rewards import sequence_scores

    B, P, N = cfg.batch_size, cfg.prompt_len, cfg.new_tokens
    T = P + N
    actor_cfg = model_config(cfg, cfg.model, cfg.param_dtype)
    report = dr.Report(_title(cfg, "ppo", actor_cfg, mesh,
                              f"{B} rollouts of {P}+{N} tokens, {cfg.mini_batches} mini-batches x "
                              f"{cfg.micro_batches} micro-batches"))
    actor_gd, actor, actor_tx = trained_model(report, "actor", LlamaForCausalLM, actor_cfg, mesh,
                                              fp32_master=cfg.fp32_master)
    critic_cfg = model_config(cfg, cfg.critic_model or cfg.reward_model or cfg.model, cfg.param_dtype)
    critic_gd, critic, critic_tx = trained_model(report, "critic", LlamaForScore, critic_cfg, mesh,
                                                 fp32_master=cfg.fp32_master)
    ref_dtype = actor_cfg.param_dtype if cfg.ema_reference else cfg.frozen_dtype
    ref = dr.abstract_like(actor.params, ref_dtype)
    report.add_model("reference (EMA of the actor)" if cfg.ema_reference else "reference (frozen)", ref)
    scorers: list[tuple[str, Any, Any]] = []
    if cfg.reward_model:
        rm_gd, rm = frozen_model(report, "reward model", LlamaForScore,
                                 model_config(cfg, cfg.reward_model, cfg.frozen_dtype), mesh)
        scorers.append(("reward", rm_gd, rm))
    critics: list[tuple[str, Any, Any, Any]] = [("critic", critic_gd, critic, critic_tx)]
    if cfg.cost_model:
        cm_gd, cm = frozen_model(report, "cost model", LlamaForScore,
                                 model_config(cfg, cfg.cost_model, cfg.frozen_dtype), mesh)
        scorers.append(("cost", cm_gd, cm))
        cc_gd, cc, cc_tx = trained_model(report, "cost critic", LlamaForScore,
                                         model_config(cfg, cfg.cost_model, cfg.param_dtype), mesh,
                                         fp32_master=cfg.fp32_master)
        critics.append(("cost critic", cc_gd, cc, cc_tx))
    _sampler(report, cfg, actor_cfg, mesh, batch=B)

    seq = dr.abstract_batch({"input_ids": ((B, T), np.int32), "attention_mask": ((B, T), np.bool_),
                             "response_mask": ((B, N), np.bool_)}, mesh)
    per_token = lambda *names: dr.abstract_batch({k: ((B, N), np.float32) for k in names}, mesh)  # noqa: E731
    idx = dr.abstract_batch({"idx": ((B // cfg.mini_batches,), np.int32)}, mesh)["idx"]
    chunks = dict(prompt_length=P, num_chunks=cfg.mini_batches * cfg.micro_batches)
    ids, mask = seq["input_ids"], seq["attention_mask"]
    programs = report.programs
    with jax.set_mesh(mesh):
        for name, gd, params in scorers:
            programs[f"{name} scores (chunked)"] = dr.compile_memory(jax.jit(functools.partial(
                sequence_scores, graphdef=gd, num_chunks=chunks["num_chunks"])), dr.frozen_view(params), ids, mask)
        logps = jax.jit(functools.partial(pr.response_logps, graphdef=actor_gd, **chunks))
        programs["actor log-probs"] = dr.compile_memory(logps, actor.params, ids, mask)
        if ref_dtype != actor_cfg.param_dtype:
            programs["reference log-probs"] = dr.compile_memory(logps, dr.frozen_view(ref), ids, mask)
        for name, gd, state, _ in critics:
            programs[f"{name} values"] = dr.compile_memory(
                jax.jit(functools.partial(pr.response_values, graphdef=gd, **chunks)), state.params, ids, mask)
        actor_step = jax.jit(functools.partial(
            ps.actor_step, graphdef=actor_gd, tx=actor_tx, prompt_length=P, clip_eps=0.2,
            num_micro=cfg.micro_batches), donate_argnums=(0,))
        programs["actor step"] = dr.compile_memory(actor_step, actor, seq, per_token("old_logps", "advantages"), idx)
        for name, gd, state, tx in critics:
            step = jax.jit(functools.partial(ps.critic_step, graphdef=gd, tx=tx, prompt_length=P, value_clip=0.2,
                                             num_micro=cfg.micro_batches), donate_argnums=(0,))
            programs[f"{name} step"] = dr.compile_memory(step, state, seq, per_token("old_values", "targets"), idx)
        if cfg.ema_reference:
            ema = jax.jit(functools.partial(ps.ema_step, eta=0.001), donate_argnums=(0,))
            programs["EMA reference step"] = dr.compile_memory(ema, ref, actor.params)
    if cfg.offload_optimizer:  # ppo.offload_optimizer: Adam's moments are on the host while rolling out
        parked = sum(parts.get("optimizer", 0) for parts in report.models.values())
        report.away = {name: parked for name in programs if not name.endswith("step")}
        report.notes.append(f"offload_optimizer: {parked / dr.GiB:.3f} GiB of optimizer states parked in host "
                            "memory during generation, scoring and the log-prob / value forwards")
    return report


RUNS: dict[str, Callable[[Any, Any], dr.Report]] = {
    "sft": sft_or_reward,
    "reward": sft_or_reward,
    "dpo": dpo,
    "iterative_dpo": iterative_dpo,
    "ppo": ppo,
}
