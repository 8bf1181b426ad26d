"""One device mesh with axes (data, fsdp, tensor), and logical-axis rules that map onto it.

Every parameter carries `logical_axes` metadata naming its dimensions ("vocab", "embed", "heads",
...). `LOGICAL_RULES` maps each logical name to a mesh axis (or None: replicated). The same model
code then runs on 1 CPU, 8 virtual CPU devices, a GPU or a TPU pod: only the mesh changes.

    mesh = make_mesh(MeshConfig(data=2, fsdp=2, tensor=2))
    model = create_model(LlamaForCausalLM, cfg, mesh=mesh)        # params created sharded
    batch = put_batch({"input_ids": ids_local}, mesh)             # each process gives its rows

Mesh sizes of -1 fill the remaining devices. `validate_mesh` rejects a mesh that does not divide
the batch, the attention heads, or the other sharded dimensions, naming which.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any, Mapping, Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")

# Logical dimension name -> mesh axis (or a tuple of axes, or None for replicated).
LOGICAL_RULES: dict[str, Any] = {
    # parameters
    "vocab": "tensor",
    "embed": "fsdp",
    "heads": "tensor",
    "kv_heads": "tensor",
    "head_dim": None,
    "mlp": "tensor",
    "layers": None,
    "norm": None,
    "score": None,
    # activations
    "batch": BATCH_AXES,
    "length": None,
    "act_embed": None,
    "act_heads": "tensor",
    "act_kv_heads": "tensor",
    "act_mlp": "tensor",
    "act_vocab": "tensor",
}


@dataclasses.dataclass(frozen=True)
class MeshConfig:
    """Sizes of the (data, fsdp, tensor) mesh axes; at most one may be -1 (use what is left)."""

    data: int = -1
    fsdp: int = 1
    tensor: int = 1

    def resolve(self, num_devices: int) -> tuple[int, int, int]:
        sizes = [self.data, self.fsdp, self.tensor]
        for name, s in zip(AXES, sizes):
            if s == 0 or s < -1:
                raise ValueError(f"mesh.{name}={s}: sizes must be positive or -1")
        if sizes.count(-1) > 1:
            raise ValueError(f"mesh {dict(zip(AXES, sizes))}: at most one axis may be -1")
        known = math.prod(s for s in sizes if s != -1)
        if -1 in sizes:
            if num_devices % known:
                raise ValueError(
                    f"mesh {dict(zip(AXES, sizes))}: {num_devices} devices are not divisible by "
                    f"the fixed axes' product {known}")
            sizes[sizes.index(-1)] = num_devices // known
        if math.prod(sizes) != num_devices:
            raise ValueError(
                f"mesh {dict(zip(AXES, sizes))} needs {math.prod(sizes)} devices, "
                f"but {num_devices} are available")
        return tuple(sizes)


def make_mesh(config: MeshConfig | Sequence[int] = MeshConfig(), devices: Sequence[Any] | None = None) -> Mesh:
    """A (data, fsdp, tensor) mesh over `devices` (default: all, across every process)."""
    devices = list(jax.devices() if devices is None else devices)
    if not isinstance(config, MeshConfig):
        config = MeshConfig(*config)
    shape = config.resolve(len(devices))
    return jax.make_mesh(shape, AXES, axis_types=(AxisType.Auto,) * 3, devices=devices)


def logical_to_spec(logical_axes: Sequence[str | None], rules: Mapping[str, Any] = LOGICAL_RULES) -> PartitionSpec:
    """PartitionSpec for a tuple of logical dimension names; a mesh axis is used at most once."""
    used: set[str] = set()
    out = []
    for name in logical_axes:
        if name is None:
            out.append(None)
            continue
        if name not in rules:
            raise KeyError(f"logical axis {name!r} has no sharding rule; known: {sorted(rules)}")
        target = rules[name]
        axes = (target,) if isinstance(target, str) else tuple(target or ())
        axes = tuple(a for a in axes if a not in used)
        used.update(axes)
        out.append(None if not axes else axes[0] if len(axes) == 1 else axes)
    return PartitionSpec(*out)


def _axis_size(mesh: Mesh, entry) -> int:
    if entry is None:
        return 1
    names = (entry,) if isinstance(entry, str) else entry
    return math.prod(mesh.shape[n] for n in names)


def _divisible_spec(shape, spec: PartitionSpec, mesh: Mesh, name: str) -> PartitionSpec:
    """`spec` with each dimension that its mesh axes do not divide replicated instead (logged)."""
    out = []
    for dim, (size, entry) in enumerate(zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec)))):
        n = _axis_size(mesh, entry)
        if size % n:
            logging.warning("parameter %s: dimension %d of size %d is not divisible by mesh axes %s "
                            "(size %d); replicating that dimension", name, dim, size, entry, n)
            entry = None
        out.append(entry)
    return PartitionSpec(*out)


def _is_variable(x) -> bool:
    from flax import nnx
    return isinstance(x, nnx.Variable)


def state_shardings(abstract_state, mesh: Mesh, rules: Mapping[str, Any] = LOGICAL_RULES):
    """NamedShardings for a pytree holding nnx Variables (of abstract or concrete arrays).

    Each Variable's sharding comes from its `logical_axes` metadata; plain array leaves (an
    optimizer's step count) are replicated. Works for model States and for optimizer states built
    over them (optax maps over the Variables, so Adam's moments keep the metadata and get the
    parameters' shardings). Returns the same structure with NamedSharding leaves, usable as
    `out_shardings`. A dimension its mesh axes do not divide (say a vocabulary of 32001 over
    tensor=2) is replicated instead, with a logged warning; the heads and the batch are checked by
    `validate_mesh`.
    """
    def one(path, leaf):
        name = "/".join(str(getattr(p, "key", p)) for p in path)
        if not _is_variable(leaf):
            return NamedSharding(mesh, PartitionSpec())
        axes = leaf.get_metadata().get("logical_axes")
        shape = leaf.get_value().shape
        if axes is None:
            spec = PartitionSpec()
        else:
            if len(axes) != len(shape):
                raise ValueError(f"parameter {name}: logical_axes {axes} do not match shape {shape}")
            spec = _divisible_spec(shape, logical_to_spec(axes, rules), mesh, name)
        return leaf.replace(value=NamedSharding(mesh, spec))

    return jax.tree_util.tree_map_with_path(one, abstract_state, is_leaf=_is_variable)


def validate_mesh(mesh: Mesh, *, batch_size: int | None = None, num_heads: int | None = None,
                  num_kv_heads: int | None = None, what: str = "config") -> None:
    """Rejects, at config time, a mesh that does not divide the batch or the heads."""
    batch_shards = mesh.shape["data"] * mesh.shape["fsdp"]
    if batch_size is not None and batch_size % batch_shards:
        raise ValueError(
            f"{what}: batch size {batch_size} is not divisible by data*fsdp = "
            f"{mesh.shape['data']}*{mesh.shape['fsdp']} = {batch_shards}")
    t = mesh.shape["tensor"]
    for name, n in (("num_heads", num_heads), ("num_kv_heads", num_kv_heads)):
        if n is not None and n % t:
            raise ValueError(f"{what}: {name}={n} is not divisible by the tensor axis size {t}")


def batch_sharding(mesh: Mesh, ndim: int) -> NamedSharding:
    """Rows over (data, fsdp); every other dimension replicated."""
    return NamedSharding(mesh, PartitionSpec(BATCH_AXES, *([None] * (ndim - 1))))


def put_batch(batch: Any, mesh: Mesh):
    """Places a pytree of this process's rows as global arrays sharded by rows over (data, fsdp).

    Multi-host safe: each process passes only its local rows (`jax.make_array_from_process_local_data`);
    the global batch is the concatenation over processes in process order.
    """
    def place(x):
        x = np.asarray(x)
        if x.ndim == 0:
            raise ValueError("put_batch: scalars cannot be sharded by rows; pass arrays with a batch dim")
        return jax.make_array_from_process_local_data(batch_sharding(mesh, x.ndim), x)

    return jax.tree.map(place, batch)


def constrain(x, logical_axes: Sequence[str | None], rules: Mapping[str, Any] = LOGICAL_RULES):
    """`with_sharding_constraint` by logical names when a mesh is set (`jax.set_mesh`); else a no-op."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or set(mesh.axis_names) != set(AXES):
        return x
    return jax.lax.with_sharding_constraint(x, logical_to_spec(logical_axes, rules))
