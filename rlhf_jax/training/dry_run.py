"""Dry runs: build full-size models from abstract shapes, compile their steps, report memory.

Nothing here allocates a weight. Parameters are `jax.ShapeDtypeStruct`s carrying the shardings
the real run would use; optimizer states get theirs from compiling `tx.init`; steps are lowered
and compiled for the configured mesh, and XLA's own memory analysis gives the per-device bytes of
arguments, outputs and temporaries (activations, gradients, workspace). Run it on a CPU host with
as many virtual devices as the target mesh has chips (`experiments/dry_run.py` does) to know,
before booking hardware, whether a layout fits.

A `Report` holds what a run keeps resident (per model: parameters and optimizer state) and what
each compiled program adds while it runs (temporaries and outputs not aliased to donated inputs);
its peak estimate is the resident bytes plus the largest program's additions. Per-run builders are
in `rlhf_jax.training.dry_run_runs`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from rlhf_jax.models import model_shardings
from rlhf_jax.sharding import LOGICAL_RULES, batch_sharding
from rlhf_jax.training.state import TrainState, opt_state_shardings

GiB = 2 ** 30


def per_device_bytes(tree: Any) -> int:
    """Bytes one device holds for a pytree of (abstract or concrete) sharded arrays (the largest shard)."""
    total = 0
    for leaf in jax.tree.leaves(tree):
        shape = leaf.sharding.shard_shape(leaf.shape) if leaf.sharding is not None else leaf.shape
        total += math.prod(shape) * np.dtype(leaf.dtype).itemsize
    return total


def abstract_params(model_cls, cfg, mesh, rules: Mapping[str, Any] = LOGICAL_RULES):
    """(graphdef, params): the model's parameters as sharded ShapeDtypeStructs (no memory)."""
    graphdef, abstract, shardings = model_shardings(model_cls, cfg, mesh, rules)
    params = jax.tree.map(
        lambda v, s: v.replace(value=jax.ShapeDtypeStruct(v.get_value().shape, v.get_value().dtype,
                                                          sharding=s.get_value())),
        abstract, shardings, is_leaf=lambda x: isinstance(x, nnx.Variable))
    return graphdef, params


def abstract_train_state(params, tx) -> TrainState:
    """A TrainState of ShapeDtypeStructs with the shardings `init_train_state` would give."""
    shapes = jax.eval_shape(tx.init, params)
    opt_state = jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                             shapes, opt_state_shardings(params, tx))
    mesh = jax.tree.leaves(params)[0].sharding.mesh
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    return TrainState(params, opt_state, jax.ShapeDtypeStruct((), np.int32, sharding=replicated))


def abstract_batch(fields: dict[str, tuple[tuple[int, ...], Any]], mesh) -> dict[str, jax.ShapeDtypeStruct]:
    """Batch arrays as ShapeDtypeStructs sharded by rows over (data, fsdp)."""
    return {k: jax.ShapeDtypeStruct(shape, dtype, sharding=batch_sharding(mesh, len(shape)))
            for k, (shape, dtype) in fields.items()}


def compile_memory(jitted, *args) -> dict[str, int]:
    """Compiles `jitted` for abstract `args`; XLA's per-device memory analysis in bytes."""
    compiled = jitted.lower(*args).compile()
    analysis = compiled.memory_analysis()
    if analysis is None:
        raise RuntimeError("this backend reports no memory analysis for compiled programs")
    return {"arguments": int(analysis.argument_size_in_bytes),
            "outputs": int(analysis.output_size_in_bytes),
            "aliased": int(analysis.alias_size_in_bytes),
            "temporaries": int(analysis.temp_size_in_bytes),
            "code": int(analysis.generated_code_size_in_bytes)}


def frozen_view(params):
    """Read-only bf16 weights as a CPU compile should see them: as float32.

    The CPU backend has no bf16 matmul: it upcasts bf16 operands to float32, and XLA hoists those
    converts of loop-invariant weights out of the layer scan and the decode loop, so a CPU compile of
    a program over bf16 weights holds a float32 copy of each (twice their bytes) that a GPU or TPU
    compile (native bf16 matmuls) does not. Compiled over float32 weights, the program's temporaries
    are free of that artifact; resident bytes are still counted in the weights' own dtype.
    """
    if jax.default_backend() != "cpu":
        return params
    bf16 = np.dtype(jnp.bfloat16)
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(
        x.shape, np.float32 if np.dtype(x.dtype) == bf16 else x.dtype, sharding=x.sharding), params)


def peak_estimate(mem: dict[str, int]) -> int:
    """Arguments + outputs not aliased to (donated) arguments + temporaries."""
    return mem["arguments"] + mem["outputs"] - mem["aliased"] + mem["temporaries"]


def program_extra(mem: dict[str, int]) -> int:
    """What a program adds to the resident state while it runs: temporaries and the outputs that
    do not reuse donated argument buffers."""
    return mem["temporaries"] + mem["outputs"] - mem["aliased"]


def abstract_like(params, dtype):
    """ShapeDtypeStructs of `params` (same shapes and shardings) in another dtype."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, dtype, sharding=x.sharding), params)


def compile_generate(graphdef, params, mesh, *, batch: int, prompt_len: int, new_tokens: int,
                     top_k: int = 0) -> dict[str, int]:
    """Memory of the rollout program (`rlhf_jax.rollout.decode`: prefill + decode loop over a static
    KV cache of `prompt_len + new_tokens` slots), as `JaxSampler` compiles it, for `params` in the
    sampler's layout and `batch` prompt rows sharded over (data, fsdp)."""
    from rlhf_jax.rollout import RolloutConfig
    from rlhf_jax.rollout.decode import decode, split_config

    program, knobs = split_config(RolloutConfig(max_new_tokens=new_tokens, top_k=top_k, eos_token_id=2))

    def generate(p, ids_BxP, mask_BxP, key, knobs):
        return decode(nnx.merge(graphdef, p), ids_BxP, mask_BxP, key, program, knobs)

    rows = abstract_batch({"ids": ((batch, prompt_len), np.int32), "mask": ((batch, prompt_len), np.bool_)},
                          mesh)
    with jax.set_mesh(mesh):
        return compile_memory(jax.jit(generate), frozen_view(params), rows["ids"], rows["mask"], jax.random.key(0),
                              jax.tree.map(jnp.asarray, knobs))


def kv_cache_bytes(model_cfg, *, batch: int, length: int, mesh) -> int:
    """Per-device bytes of a static KV cache (k and v, every layer) for `batch` rows sharded over
    (data, fsdp) and kv heads over tensor (when it divides them), in the compute dtype."""
    shards = mesh.shape["data"] * mesh.shape["fsdp"]
    heads = model_cfg.num_kv_heads
    heads_per_device = heads // mesh.shape["tensor"] if heads % mesh.shape["tensor"] == 0 else heads
    itemsize = np.dtype(model_cfg.dtype).itemsize
    return (2 * model_cfg.num_layers * math.ceil(batch / shards) * length * heads_per_device
            * model_cfg.resolved_head_dim * itemsize)


@dataclasses.dataclass
class Report:
    """Per-device memory of a run: resident models and the programs that run over them."""

    title: str
    models: dict[str, dict[str, int]] = dataclasses.field(default_factory=dict)  # name -> part -> bytes
    programs: dict[str, dict[str, int]] = dataclasses.field(default_factory=dict)  # compile_memory
    notes: list[str] = dataclasses.field(default_factory=list)
    # program -> resident bytes parked off the device while it runs (ppo.offload_optimizer)
    away: dict[str, int] = dataclasses.field(default_factory=dict)

    def add_model(self, name: str, params, opt_state=None) -> None:
        parts = {"params": per_device_bytes(params)}
        if opt_state is not None:
            parts["optimizer"] = per_device_bytes(opt_state)
        self.models[name] = parts

    def resident(self) -> int:
        return sum(sum(parts.values()) for parts in self.models.values())

    def largest_program(self) -> tuple[str, int]:
        """The program with the highest peak, and its temporaries and new outputs less what is away."""
        name = max(self.programs, key=lambda k: program_extra(self.programs[k]) - self.away.get(k, 0))
        return name, program_extra(self.programs[name]) - self.away.get(name, 0)

    def peak(self) -> int:
        """Resident bytes + the largest program's temporaries and new outputs (less what is parked
        off the device while it runs)."""
        return self.resident() + self.largest_program()[1]

    def format(self, device_memory_gib: float) -> str:
        unit, size = ("GiB", GiB) if self.peak() >= GiB else ("MiB", 2 ** 20)
        width = max(len(n) for n in list(self.models) + list(self.programs)) + 2
        lines = [self.title, "-" * len(self.title), f"resident, per model ({unit}):",
                 f"  {'':<{width}}{'params':>10} {'optimizer':>10}"]
        for name, parts in self.models.items():
            opt = f"{parts['optimizer'] / size:10.3f}" if "optimizer" in parts else f"{'-':>10}"
            lines.append(f"  {name:<{width}}{parts['params'] / size:10.3f} {opt}")
        lines.append(f"  {'total resident':<{width}}{self.resident() / size:10.3f}")
        lines += [f"while running, per program ({unit}):", f"  {'':<{width}}{'temporaries':>11} {'outputs':>10}"]
        for name, mem in self.programs.items():
            lines.append(f"  {name:<{width}}{mem['temporaries'] / size:11.3f} "
                         f"{(mem['outputs'] - mem['aliased']) / size:10.3f}")
        largest, _ = self.largest_program()
        peak = self.peak()
        away = f" - {self.away[largest] / size:.3f} parked on the host" if self.away.get(largest) else ""
        lines.append(f"peak estimate: resident{away} + {largest} = {peak / size:.3f} {unit} per device; "
                     f"{'fits' if peak <= device_memory_gib * GiB else 'does NOT fit'} in "
                     f"{device_memory_gib:g} GiB")
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)

    def to_dict(self, device_memory_gib: float) -> dict[str, Any]:
        return {"models": self.models, "programs": self.programs, "away": self.away, "resident": self.resident(),
                "peak": self.peak(), "fits": self.peak() <= device_memory_gib * GiB, "notes": self.notes}
