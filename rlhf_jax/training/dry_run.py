"""Dry runs: build full-size models from abstract shapes, compile their steps, report memory.

Nothing here allocates a weight. Parameters are `jax.ShapeDtypeStruct`s carrying the shardings
the real run would use; optimizer states get theirs from compiling `tx.init`; steps are lowered
and compiled for the configured mesh, and XLA's own memory analysis gives the per-device bytes of
arguments, outputs and temporaries (activations, gradients, workspace). Run it on a CPU host with
as many virtual devices as the target mesh has chips (`experiments/dry_run.py` does) to know,
before booking hardware, whether a layout fits.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import numpy as np
from flax import nnx

from rlhf_jax.models import model_shardings
from rlhf_jax.sharding import batch_sharding
from rlhf_jax.training.state import TrainState, opt_state_shardings

GiB = 2 ** 30


def per_device_bytes(tree: Any) -> int:
    """Bytes one device holds for a pytree of (abstract or concrete) sharded arrays (the largest shard)."""
    total = 0
    for leaf in jax.tree.leaves(tree):
        shape = leaf.sharding.shard_shape(leaf.shape) if leaf.sharding is not None else leaf.shape
        total += math.prod(shape) * np.dtype(leaf.dtype).itemsize
    return total


def abstract_params(model_cls, cfg, mesh):
    """(graphdef, params): the model's parameters as sharded ShapeDtypeStructs (no memory)."""
    graphdef, abstract, shardings = model_shardings(model_cls, cfg, mesh)
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


def peak_estimate(mem: dict[str, int]) -> int:
    """Arguments + outputs not aliased to (donated) arguments + temporaries."""
    return mem["arguments"] + mem["outputs"] - mem["aliased"] + mem["temporaries"]


def format_table(rows: list[tuple[str, float]], title: str) -> str:
    width = max(len(name) for name, _ in rows)
    lines = [title, "-" * len(title)]
    lines += [f"{name:<{width}}  {value / GiB:10.3f} GiB" for name, value in rows]
    return "\n".join(lines)
