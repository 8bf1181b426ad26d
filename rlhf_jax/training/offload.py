"""Moving state between accelerator memory and host memory between the phases of a run.

    host, where = to_host(opt_state)      # before generation: the optimizer state leaves the device
    ...                                   # generate, score, forwards: that memory is free for them
    opt_state = to_device(host, where)    # before the updates: back, in its original shardings

PPO's optimizer states (Adam's two moments: twice the trained weights) are needed only by the
update steps, yet in a plain run they sit in accelerator memory through generation, whose KV cache
is the iteration's largest temporary. `ppo.offload_optimizer` parks them in pinned host memory
(`memory_kind="pinned_host"`, on GPUs and TPUs; the CPU backend has it too, so this is tested for
real) for the rollout phase.

Moving is like donation: the source arrays are deleted once their copy has landed (jax cannot
donate across memory kinds), so the caller's references to them are invalid afterwards, as after
a donating step. Arrays come back in exactly the shardings they left with, so the jitted steps
that take them see the same input types and do not recompile.
"""

from __future__ import annotations

from typing import Any

import jax

HOST = "pinned_host"


def host_memory_available(kind: str = HOST) -> bool:
    """Whether this process's devices have memory of `kind`."""
    return all(kind in {m.kind for m in d.addressable_memories()} for d in jax.local_devices())


def _move(x: jax.Array, sharding) -> jax.Array:
    y = jax.block_until_ready(jax.device_put(x, sharding))
    x.delete()
    return y


def to_host(tree, kind: str = HOST) -> tuple[Any, Any]:
    """(`tree` moved to host memory `kind`, the shardings it had); its source arrays are deleted."""
    where = jax.tree.map(lambda x: x.sharding, tree)
    return jax.tree.map(lambda x, s: _move(x, s.with_memory_kind(kind)), tree, where), where


def to_device(tree, where) -> Any:
    """`tree` moved back to the shardings `where` (from `to_host`); its host arrays are deleted."""
    return jax.tree.map(_move, tree, where)


def memory_kinds(tree) -> set[str | None]:
    """The memory kinds `tree`'s arrays live in."""
    return {x.sharding.memory_kind for x in jax.tree.leaves(tree)}
