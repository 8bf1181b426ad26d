"""Dry run of a paper-scale step: full-size models from abstract shapes, compiled for the mesh.

    python -m experiments.dry_run --config.run=dpo --config.model=llama2-7b --config.devices=8 \
        --config.mesh.fsdp=8 --config.mesh.data=1 --config.batch_size=64 --config.seq_len=512

Allocates no weights: on a CPU host it creates `devices` virtual devices (one per chip of the
target), builds the models of the run as sharded ShapeDtypeStructs, compiles the training step,
and prints per-device memory: parameters, optimizer state, frozen models (the DPO reference),
and XLA's temporaries (activations, gradients, workspace), against `device_memory_gib`.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Literal

from rlhf_jax import config as config_lib
from rlhf_jax.sharding import MeshConfig


@dataclasses.dataclass(frozen=True)
class DryRunConfig:
    run: Literal["sft", "reward", "dpo"] = "sft"
    model: str = "llama2-7b"  # a preset of rlhf_jax.models.PRESETS
    dtype: Literal["float32", "bfloat16"] = "bfloat16"
    param_dtype: Literal["float32", "bfloat16"] = "float32"
    remat: Literal["none", "full", "dots", "dots_no_batch"] = "full"
    devices: int = 8  # virtual CPU devices to create: the chips of the target slice
    mesh: MeshConfig = MeshConfig(data=1, fsdp=-1, tensor=1)
    batch_size: int = 64
    micro_batches: int = 8
    seq_len: int = 512
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


def main(cfg: DryRunConfig) -> dict:
    if cfg.devices < 1:
        raise ValueError(f"devices={cfg.devices} must be >= 1")
    _use_virtual_devices(cfg.devices)  # before the backend starts
    import jax
    import numpy as np

    from rlhf_jax.models import LlamaForCausalLM, LlamaForScore, preset
    from rlhf_jax.sharding import make_mesh, validate_mesh
    from rlhf_jax.training import dry_run as dr
    from rlhf_jax.training.preference_steps import DPOLoss, dpo_step, score_model_step
    from rlhf_jax.training.state import OptimConfig, make_optimizer
    from rlhf_jax.training.steps import jit_step, sft_step

    if len(jax.devices()) != cfg.devices:
        raise RuntimeError(f"expected {cfg.devices} devices, the backend has {len(jax.devices())} "
                           "(jax was started before the dry run could set the device count)")
    mesh = make_mesh(cfg.mesh)
    validate_mesh(mesh, batch_size=cfg.batch_size // cfg.micro_batches, what="dry_run micro-batch")
    model_cfg = preset(cfg.model, dtype=cfg.dtype, param_dtype=cfg.param_dtype, remat=cfg.remat)
    model_cls = LlamaForScore if cfg.run == "reward" else LlamaForCausalLM
    graphdef, params = dr.abstract_params(model_cls, model_cfg, mesh)
    tx = make_optimizer(OptimConfig())
    state = dr.abstract_train_state(params, tx)
    B, T = cfg.batch_size, cfg.seq_len
    seq = {"input_ids": ((B, T), np.int32), "attention_mask": ((B, T), np.int32),
           "loss_mask": ((B, T), np.int32), "positions": ((B, T), np.int32),
           "segment_ids": ((B, T), np.int32)}
    rows = [("parameters", dr.per_device_bytes(params)), ("optimizer state", dr.per_device_bytes(state.opt_state))]
    if cfg.run == "sft":
        step, args = jit_step(sft_step, state=state, graphdef=graphdef, tx=tx, num_micro=cfg.micro_batches), ()
        batch = dr.abstract_batch(seq, mesh)
    else:
        pair = {f"{side}_{k}": v for side in ("chosen", "rejected") for k, v in seq.items()}
        if cfg.run == "reward":
            step = jit_step(score_model_step, state=state, graphdef=graphdef, tx=tx, kind="reward",
                            num_micro=cfg.micro_batches)
            args = ()
        else:
            step = jit_step(dpo_step, state=state, graphdef=graphdef, tx=tx, loss=DPOLoss(),
                            num_micro=cfg.micro_batches)
            ref = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, model_cfg.dtype, sharding=x.sharding),
                               params)  # the frozen reference, kept in the compute dtype
            rows.append(("reference model (frozen)", dr.per_device_bytes(ref)))
            args = (ref,)
        batch = dr.abstract_batch(pair, mesh)
    mem = dr.compile_memory(step, state, batch, *args)
    rows.append(("step temporaries (activations, grads)", mem["temporaries"]))
    peak = dr.peak_estimate(mem)
    rows.append(("peak estimate (args + outputs - donated + temps)", peak))
    n_params = model_cfg.num_params(with_lm_head=cfg.run != "reward")
    title = (f"{cfg.run} step, {cfg.model} ({n_params / 1e9:.2f}B params), mesh {dict(mesh.shape)}, "
             f"batch {B} x {T} in {cfg.micro_batches} micro-batches, remat {cfg.remat} — per device")
    print(dr.format_table(rows, title))
    fits = peak <= cfg.device_memory_gib * dr.GiB
    print(f"{'fits' if fits else 'does NOT fit'} in {cfg.device_memory_gib:g} GiB per device")
    return {"rows": dict(rows), "memory": mem, "fits": fits, "num_params": n_params}


if __name__ == "__main__":
    config_lib.run(get_config, main)
