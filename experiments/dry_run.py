"""Dry run of a paper-scale run: full-size models from abstract shapes, compiled for the mesh.

    python -m experiments.dry_run --config.run=dpo --config.model=llama2-7b --config.devices=8 \
        --config.mesh.fsdp=8 --config.mesh.data=1 --config.batch_size=64 --config.seq_len=512
    python -m experiments.dry_run --config.run=ppo --config.model=llama2-7b --config.cost_model=llama2-7b \
        --config.batch_size=512 --config.mini_batches=4 --config.micro_batches=8

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
    reward_model: str = ""  # ppo / iterative_dpo labeler: "" = model's architecture
    critic_model: str = ""  # ppo: "" = reward_model's (the critic starts from the reward model)
    cost_model: str = ""  # ppo: a cost model and cost critic (PPO-Lagrangian); "" = none
    dtype: Literal["float32", "bfloat16"] = "bfloat16"
    param_dtype: Literal["float32", "bfloat16"] = "float32"  # trained models
    fp32_master: bool = False  # bf16 params + float32 master copies in the optimizer state
    frozen_dtype: Literal["float32", "bfloat16"] = "bfloat16"  # reward / cost models, frozen PPO reference
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


def main(cfg: DryRunConfig) -> dict:
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
