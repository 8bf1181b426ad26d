"""Orbax checkpoints of everything a resume needs, restored straight into sharded targets.

    ckpt = Checkpointer(workdir + "/checkpoints", max_to_keep=3)
    ckpt.save(step, {"params": nnx.state(model), "opt_state": opt_state, "rng": key},
              meta={"data_iterator": iterator.get_state(), "round": 2})
    ...
    state, meta = ckpt.restore(target=abstract_state)   # latest complete step, into target shardings

`state` is any pytree of jax arrays (nnx.State, optax states, scalars, typed PRNG keys); `meta` is
JSON (iterator positions, counters, config echoes). `target` gives each leaf's shape, dtype and
sharding (`abstract_target`), so a checkpoint saved on one mesh restores onto another.

Saves are asynchronous: `save` returns once the arrays are copied off the devices, and writing
goes on in the background (`wait()` blocks until it is durable). Orbax writes each step into a
temporary folder and renames it only when complete, so a crash during a save leaves no step
that `restore` would pick up half-written.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

def _is_key(x) -> bool:
    return hasattr(x, "dtype") and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def abstract_target(tree: Any) -> Any:
    """ShapeDtypeStructs (with shardings) mirroring a pytree of arrays: a restore target."""
    def one(x):
        if isinstance(x, jax.ShapeDtypeStruct):
            return x
        x = jax.numpy.asarray(x) if not isinstance(x, jax.Array) else x
        return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
    return jax.tree.map(one, tree)


_IMPLS = "__prng_key_impls__"  # reserved meta entry: tree path -> PRNG implementation name


def _keys_to_data(tree):
    """Typed PRNG keys -> raw key data (what Orbax stores), and their implementations by path."""
    impls = {}

    def one(path, x):
        if not _is_key(x):
            return x
        impls[jax.tree_util.keystr(path)] = str(jax.random.key_impl(x))
        return jax.random.key_data(x)

    return jax.tree_util.tree_map_with_path(one, tree), impls


class Checkpointer:
    """A thin, strict wrapper over `ocp.CheckpointManager` (state pytree + JSON metadata)."""

    def __init__(self, directory: str, *, max_to_keep: int | None = 3, async_save: bool = True,
                 save_interval_steps: int = 1):
        self.directory = os.path.abspath(directory)
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, save_interval_steps=save_interval_steps,
            enable_async_checkpointing=async_save, create=True)
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    def save(self, step: int, state: Any, *, meta: dict | None = None, force: bool = False) -> bool:
        """Starts saving `state` (and JSON `meta`) as `step`; returns False if skipped by interval."""
        meta = dict(meta or {})
        if _IMPLS in meta:
            raise ValueError(f"meta key {_IMPLS!r} is reserved")
        data, meta[_IMPLS] = _keys_to_data(state)
        args = ocp.args.Composite(state=ocp.args.StandardSave(data), meta=ocp.args.JsonSave(meta))
        return self._manager.save(int(step), args=args, force=force)

    def restore(self, step: int | None = None, *, target: Any) -> tuple[Any, dict]:
        """Restores `step` (default: latest complete) into `target`'s shapes, dtypes and shardings."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no complete checkpoint in {self.directory}")
        if step not in self.all_steps():
            raise FileNotFoundError(f"checkpoint step {step} not in {self.directory}; have {self.all_steps()}")
        target = abstract_target(target)
        data_target = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(jax.eval_shape(jax.random.key_data, x).shape, np.uint32,
                                           sharding=x.sharding) if _is_key(x) else x, target)
        restored = self._manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(data_target), meta=ocp.args.JsonRestore()))
        # Orbax may hand back small arrays (scalars) on one device; put every leaf where the target
        # says, so a jitted step sees one device set.
        state = jax.tree.map(
            lambda x, t: x if t.sharding is None or x.sharding == t.sharding else jax.device_put(x, t.sharding),
            restored["state"], data_target)
        meta = dict(restored["meta"] or {})
        impls = meta.pop(_IMPLS, {})

        def rewrap(path, x):
            impl = impls.get(jax.tree_util.keystr(path))
            return x if impl is None else jax.random.wrap_key_data(x, impl=impl)

        return jax.tree_util.tree_map_with_path(rewrap, state), meta

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def wait(self) -> None:
        """Blocks until every started save is durable on disk."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
