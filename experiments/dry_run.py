"""Dry run of a paper-scale run: full-size models from abstract shapes, compiled for the mesh.

    python -m experiments.dry_run --config.run=dpo --config.model=llama2-7b --config.devices=8 \
        --config.mesh.fsdp=8 --config.mesh.data=1 --config.batch_size=64 --config.seq_len=512
    python -m experiments.dry_run --config.run=ppo --config.model=llama2-7b --config.reward_model=llama2-7b \
        --config.batch_size=512 --config.mini_batches=4 --config.micro_batches=8
    python -m experiments.dry_run --config.preset=llama2-7b-saferlhf-ppo --config.layout=h100x8

With `preset` (a paper preset of rlhf_jax.training.paper_configs) the models, batch and sequence
shapes, mesh, remat and device memory come from the experiment config that preset builds on
`layout`; the dtype fields stay the dry run's (bf16 compute, float32 trained weights, bf16 frozen
models: the presets' choices).

Allocates no weights: on a CPU host it creates `devices` virtual devices (one per chip of the
target), builds every model of the run as sharded ShapeDtypeStructs (PPO: actor, critic, reference,
reward model, optional cost model and cost critic, the sampler's copy of the actor), lowers and
compiles every program of the run (training steps; for PPO also generation, scoring, log-prob and
value forwards; `rlhf_jax.training.dry_run_runs`), and prints per-device memory: parameters and
optimizer state per model, XLA's temporaries per program (activations, gradients, KV cache,
workspace), and a peak estimate against `device_memory_gib`.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Literal

from rlhf_jax import config as config_lib
from rlhf_jax.sharding import MeshConfig


@dataclasses.dataclass(frozen=True)
class DryRunConfig:
    run: Literal["sft", "reward", "dpo", "iterative_dpo", "ppo"] = "sft"
    model: str = "llama2-7b"  # a preset of rlhf_jax.models.PRESETS: the trained model (PPO: the actor)
    preset: str = ""  # a paper preset (rlhf_jax.training.paper_configs.PRESETS): sets the fields below
    layout: str = ""  # with preset: a hardware layout of paper_configs.LAYOUTS ("" = the preset's)
    reward_model: str = ""  # ppo reward model / iterative_dpo labeler; "" = none (programmatic reward)
    critic_model: str = ""  # ppo: "" = reward_model's, else model's (the critic's initial checkpoint)
    cost_model: str = ""  # ppo: a cost model and cost critic (PPO-Lagrangian); "" = none
    dtype: Literal["float32", "bfloat16"] = "bfloat16"
    param_dtype: Literal["float32", "bfloat16"] = "float32"  # trained models
    fp32_master: bool = False  # bf16 params + float32 master copies in the optimizer state
    offload_optimizer: bool = False  # ppo: optimizer states in host memory while rolling out (ppo.offload_optimizer)
    frozen_dtype: Literal["float32", "bfloat16"] = "bfloat16"  # reward / cost models, frozen PPO reference
    reference_dtype: Literal["", "float32", "bfloat16"] = ""  # dpo: experiments.dpo's; "" = param_dtype
    remat: Literal["none", "full", "dots", "dots_no_batch"] = "full"
    devices: int = 8  # virtual CPU devices to create: the chips of the target slice
    mesh: MeshConfig = MeshConfig(data=1, fsdp=-1, tensor=1)
    batch_size: int = 64  # sft/reward/dpo: sequences or pairs per step; ppo: rollouts per iteration
    micro_batches: int = 8  # per step (ppo: per mini-batch)
    seq_len: int = 512  # sft/reward/dpo rows; iterative_dpo: pair rows and labeler rows
    mini_batches: int = 4  # ppo: optimizer steps per rollout batch
    ema_reference: bool = True  # ppo: the reference is an EMA of the actor (else frozen)
    prompt_len: int = 256  # ppo / iterative_dpo sampling: prompt bucket
    new_tokens: int = 256  # ppo / iterative_dpo sampling: max new tokens
    top_k: int = 200
    sample_batch: int = 64  # iterative_dpo: rows per generate call
    device_memory_gib: float = 80.0  # H100 80 GB; TPU v4 32, v5p 95, v5e 16


def get_config(preset_name: str | None = None) -> DryRunConfig:
    if preset_name is not None:
        raise ValueError(f"experiments.dry_run has no preset {preset_name!r}; set fields with --config.*")
    return DryRunConfig()


def _use_virtual_devices(n: int) -> None:
    flag = f"--xla_force_host_platform_device_count={n}"
    flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if "device_count" not in f]
    os.environ["XLA_FLAGS"] = " ".join(flags + [flag])
    os.environ.setdefault("JAX_PLATFORMS", "cpu")


PRESET_FIELDS = ("run", "model", "reward_model", "critic_model", "cost_model", "batch_size", "micro_batches",
                 "seq_len", "mini_batches", "ema_reference", "prompt_len", "new_tokens", "top_k", "sample_batch",
                 "devices", "mesh", "remat", "device_memory_gib")


def _shape_of(experiment: str, exp) -> dict:
    """The dry-run fields of an experiment config (what it builds and the shapes it runs)."""
    from rlhf_jax.training.paper_configs import models_in_use

    models = models_in_use(experiment, exp)
    if experiment == "experiments.ppo":
        from rlhf_jax.training.ppo_config import critic_source

        return dict(run="ppo", model=exp.actor.preset, critic_model=critic_source(exp).preset,
                    reward_model=models["reward.model"].preset if "reward.model" in models else "",
                    cost_model=models["cost.model"].preset if "cost.model" in models else "",
                    batch_size=exp.ppo.rollout_batch_size, mini_batches=exp.ppo.mini_batches,
                    micro_batches=exp.ppo.micro_batches, ema_reference=exp.ppo.ema_reference,
                    prompt_len=exp.data.max_prompt_length, new_tokens=exp.generation.max_new_tokens,
                    top_k=exp.generation.top_k)
    if experiment == "experiments.iterative_dpo":
        return dict(run="iterative_dpo", model=exp.model.preset, batch_size=exp.batch_size,
                    reward_model=models["labeler.model"].preset if "labeler.model" in models else "",
                    micro_batches=exp.micro_batches, seq_len=exp.prompts.max_length,
                    sample_batch=exp.sampling.batch_size, prompt_len=exp.prompts.max_prompt_length,
                    new_tokens=exp.sampling.max_new_tokens, top_k=exp.sampling.top_k)
    run = {"experiments.sft": "sft", "experiments.reward_model": "reward", "experiments.dpo": "dpo"}[experiment]
    return dict(run=run, model=exp.model.preset, batch_size=exp.batch_size, micro_batches=exp.micro_batches,
                seq_len=exp.data.max_length)


def from_preset(cfg: DryRunConfig) -> DryRunConfig:
    """`cfg` with the fields of paper preset `cfg.preset` on layout `cfg.layout`: the experiment's own
    config is built from the preset, and the models and shapes are read from it."""
    import importlib

    from rlhf_jax.training import paper_configs as pc

    if cfg.preset not in pc.PRESETS:
        raise config_lib.ConfigError(f"preset={cfg.preset!r} is unknown; choose from {sorted(pc.PRESETS)}")
    if cfg.layout and cfg.layout not in pc.LAYOUTS:
        raise config_lib.ConfigError(f"layout={cfg.layout!r} is unknown; choose from {sorted(pc.LAYOUTS)}")
    defaults = DryRunConfig()
    clash = [k for k in PRESET_FIELDS if getattr(cfg, k) != getattr(defaults, k)]
    if clash:
        raise config_lib.ConfigError(f"{clash} are set by preset={cfg.preset!r}; drop them, or drop preset and "
                                     "set every field")
    preset = pc.PRESETS[cfg.preset]
    layout_name = cfg.layout or preset.layout
    experiment = importlib.import_module(preset.experiment)
    exp, _ = pc.with_preset(preset.experiment, f"{cfg.preset}@{layout_name}", experiment.get_config())
    layout = pc.LAYOUTS[layout_name]
    shape = _shape_of(preset.experiment, exp)
    # memory options a preset may set, which the command line may also turn on
    if preset.experiment == "experiments.ppo":
        shape["offload_optimizer"] = cfg.offload_optimizer or exp.ppo.offload_optimizer
    if preset.experiment == "experiments.dpo":
        shape["reference_dtype"] = cfg.reference_dtype or exp.reference_dtype
    return dataclasses.replace(cfg, **shape, devices=layout.devices, mesh=exp.mesh,
                               remat=layout.remat, device_memory_gib=layout.device_memory_gib)


def check(cfg: DryRunConfig, mesh) -> None:
    """Rejects batch shapes the mesh or the micro-batching does not divide; errors name the key."""
    from rlhf_jax.sharding import validate_mesh

    for key in ("batch_size", "micro_batches", "seq_len", "mini_batches", "prompt_len", "new_tokens",
                "sample_batch"):
        if getattr(cfg, key) < 1:
            raise ValueError(f"{key}={getattr(cfg, key)} must be >= 1")
    split = cfg.micro_batches * (cfg.mini_batches if cfg.run == "ppo" else 1)
    if cfg.batch_size % split:
        raise ValueError(f"batch_size={cfg.batch_size} is not divisible by "
                         + ("mini_batches * micro_batches" if cfg.run == "ppo" else "micro_batches") + f" = {split}")
    validate_mesh(mesh, batch_size=cfg.batch_size // split, what="dry_run micro-batch")
    if cfg.run in ("ppo", "iterative_dpo"):
        rows = cfg.batch_size if cfg.run == "ppo" else cfg.sample_batch
        validate_mesh(mesh, batch_size=rows, what="dry_run sampling batch")
    if cfg.fp32_master and cfg.param_dtype != "bfloat16":
        raise ValueError("fp32_master=true keeps float32 masters of bfloat16 params: set param_dtype=bfloat16")
    if cfg.offload_optimizer and cfg.run != "ppo":
        raise ValueError(f"offload_optimizer=true is a PPO option (ppo.offload_optimizer); run={cfg.run!r}")


def main(cfg: DryRunConfig) -> dict:
    if cfg.preset:
        cfg = from_preset(cfg)
        flags = [f"--config.{f.name}={getattr(cfg, f.name)}" for f in dataclasses.fields(cfg)
                 if f.name in PRESET_FIELDS and f.name != "mesh"]
        flags += [f"--config.mesh.{a}={getattr(cfg.mesh, a)}" for a in ("data", "fsdp", "tensor")]
        print(f"preset {cfg.preset} on layout {cfg.layout or 'default'}: " + " ".join(flags))
    elif cfg.layout:
        raise config_lib.ConfigError("layout is set without preset; set mesh, devices and device_memory_gib instead")
    if cfg.devices < 1:
        raise ValueError(f"devices={cfg.devices} must be >= 1")
    _use_virtual_devices(cfg.devices)  # before the backend starts
    import jax

    from rlhf_jax.sharding import make_mesh
    from rlhf_jax.training.dry_run_runs import RUNS

    if len(jax.devices()) != cfg.devices:
        raise RuntimeError(f"expected {cfg.devices} devices, the backend has {len(jax.devices())} "
                           "(jax was started before the dry run could set the device count)")
    mesh = make_mesh(cfg.mesh)
    check(cfg, mesh)
    report = RUNS[cfg.run](cfg, mesh)
    print(report.format(cfg.device_memory_gib))
    return report.to_dict(cfg.device_memory_gib)


if __name__ == "__main__":
    config_lib.run(get_config, main)
