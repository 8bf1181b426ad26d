"""Train state, optimizers and exact gradient accumulation for the pure step functions.

A model is split once into a static `graphdef` and its parameter State (`split_model`); step
functions are module-level pure functions over `TrainState(params, opt_state, step)` and are
jitted once with the state donated. Frozen models (reference, reward, cost) are separate,
non-donated arguments.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Literal, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from rlhf_jax.losses import combine_metrics
from rlhf_jax.sharding import LOGICAL_RULES, state_shardings


class TrainState(NamedTuple):
    params: Any  # nnx.State of Params
    opt_state: Any
    step: jax.Array  # int32 scalar


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    """AdamW with linear warmup and a constant or cosine schedule, and global-norm clipping.

    `fp32_master`: for bf16 parameters (the model's `param_dtype="bfloat16"`), the optimizer keeps a
    float32 master copy and runs AdamW on it; the parameters are the masters rounded to bf16 after
    every step (`with_fp32_master`). Forwards, samplers and reference copies then read bf16 weights
    while small updates still accumulate in float32.
    """

    lr: float = 1e-5
    schedule: Literal["constant", "cosine"] = "constant"
    warmup_steps: int = 0
    total_steps: int = 1000  # for the cosine schedule
    weight_decay: float = 0.0
    b1: float = 0.9
    b2: float = 0.95
    eps: float = 1e-8
    max_grad_norm: float | None = 1.0
    fp32_master: bool = False


class MasterState(NamedTuple):
    """`with_fp32_master`'s state: float32 copies of the parameters and the inner optimizer's state."""

    master: Any
    inner: Any


def with_fp32_master(tx: optax.GradientTransformation) -> optax.GradientTransformation:
    """`tx` run on float32 master copies of low-precision parameters.

    init: masters = params in float32, inner state over the masters (so Adam's moments are float32).
    update: gradients cast to float32, the inner update applied to the masters, and the returned
    update is `new_master - params` in float32, so `optax.apply_updates(params, update)` gives the
    new masters rounded to the parameters' dtype. Float32 parameters are rejected: their masters
    would be a redundant copy.
    """
    def init(params):
        dtypes = {jnp.dtype(x.dtype) for x in jax.tree.leaves(params)}
        if dtypes == {jnp.dtype(jnp.float32)}:
            raise ValueError("optim.fp32_master=true, but the parameters are already float32 (a redundant "
                             "copy); load the model with param_dtype='bfloat16' or set fp32_master=false")
        master = jax.tree.map(lambda p: p.astype(jnp.float32), params)
        return MasterState(master, tx.init(master))

    def update(grads, state: MasterState, params=None):
        if params is None:
            raise ValueError("with_fp32_master: update needs the current params")
        grads32 = jax.tree.map(lambda g: g.astype(jnp.float32), grads)
        updates, inner = tx.update(grads32, state.inner, state.master)
        master = optax.apply_updates(state.master, updates)
        delta = jax.tree.map(lambda m, p: m - p.astype(jnp.float32), master, params)
        return delta, MasterState(master, inner)

    return optax.GradientTransformation(init, update)


def make_optimizer(cfg: OptimConfig) -> optax.GradientTransformation:
    if cfg.schedule == "cosine":
        warmup = max(cfg.warmup_steps, 1)  # optax needs a warmup step and a decay step after it
        lr = optax.warmup_cosine_decay_schedule(0.0, cfg.lr, warmup, max(cfg.total_steps, warmup + 1))
    elif cfg.warmup_steps > 0:
        lr = optax.join_schedules([optax.linear_schedule(0.0, cfg.lr, cfg.warmup_steps),
                                   optax.constant_schedule(cfg.lr)], [cfg.warmup_steps])
    else:
        lr = cfg.lr
    parts = [] if cfg.max_grad_norm is None else [optax.clip_by_global_norm(cfg.max_grad_norm)]
    parts.append(optax.adamw(lr, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay))
    tx = optax.chain(*parts)
    return with_fp32_master(tx) if cfg.fp32_master else tx


def split_model(model) -> tuple[nnx.GraphDef, Any]:
    """(graphdef, params): the static structure and the parameter State of an NNX model."""
    graphdef, params = nnx.split(model, nnx.Param)
    return graphdef, params


def cast_copy(params, dtype: str | None = None):
    """Every array of `params` copied into new buffers (same shardings), in `dtype` (None: each
    array's own), safe to keep while the originals are donated; a frozen reference in bfloat16
    takes half the memory of float32."""
    def one(x):
        dt = x.dtype if dtype is None else jnp.dtype(dtype)
        return jnp.copy(x) if x.dtype == dt else x.astype(dt)
    return jax.tree.map(one, params)


def merge(graphdef, params):
    return nnx.merge(graphdef, params)


def on_mesh_of(params, tree):
    """Every array of `tree` not already on the parameters' mesh, replicated over that mesh.

    jit places outputs that do not depend on sharded inputs (Adam's step count, a step counter) on
    one device; a later step that mixes them with sharded parameters would see two device sets
    (and a checkpoint would restore them that way).
    """
    mesh = getattr(jax.tree.leaves(params)[0].sharding, "mesh", None)
    if mesh is None:
        return tree
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())

    def place(x):
        on_mesh = getattr(x.sharding, "mesh", None) == mesh
        return x if on_mesh else jax.device_put(x, replicated)

    return jax.tree.map(place, tree)


def opt_state_shardings(params, tx: optax.GradientTransformation, rules=LOGICAL_RULES):
    """Shardings of `tx.init(params)`: moments like their parameters, scalars replicated.

    Left to itself, jit replicates `zeros_like` outputs on every device (they do not depend on the
    sharded inputs' values), which at 7B would put full fp32 Adam moments on each chip.
    """
    mesh = jax.tree.leaves(params)[0].sharding.mesh
    return state_shardings(jax.eval_shape(tx.init, params), mesh, rules)


def init_train_state(params, tx: optax.GradientTransformation, rules=LOGICAL_RULES) -> TrainState:
    """Optimizer state created directly in the parameters' shardings (see opt_state_shardings)."""
    opt_state = jax.jit(tx.init, out_shardings=opt_state_shardings(params, tx, rules))(params)
    return TrainState(params, opt_state, on_mesh_of(params, jnp.zeros((), jnp.int32)))


def apply_gradients(state: TrainState, grads, tx: optax.GradientTransformation) -> TrainState:
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    return TrainState(optax.apply_updates(state.params, updates), opt_state, state.step + 1)


def check_batching(batch_size: int, micro_batches: int, mesh, what: str) -> None:
    """Rejects a global batch that the mesh, the micro-batch count or the processes do not divide."""
    from rlhf_jax.sharding import validate_mesh

    validate_mesh(mesh, batch_size=batch_size, what=what)
    if micro_batches < 1 or batch_size % micro_batches:
        raise ValueError(f"batch_size={batch_size} is not divisible by micro_batches={micro_batches}")
    if (batch_size // micro_batches) % jax.process_count():
        raise ValueError(f"micro-batches of {batch_size // micro_batches} rows do not split over "
                         f"{jax.process_count()} processes")


def split_micro_batches(batch, num_micro: int):
    """[B, ...] -> [num_micro, B / num_micro, ...] for every array of the batch.

    Micro-batch i takes rows i, i + num_micro, i + 2 num_micro, ...: with rows sharded in blocks
    over (data, fsdp), every device then keeps its own rows in every micro-batch, and the split
    moves no data between devices (a contiguous split would re-shard the batch).
    """
    def one(x):
        if x.shape[0] % num_micro:
            raise ValueError(f"batch of {x.shape[0]} rows is not divisible into {num_micro} micro-batches")
        return jnp.swapaxes(x.reshape((x.shape[0] // num_micro, num_micro) + x.shape[1:]), 0, 1)
    return jax.tree.map(one, batch)


def accumulate_gradients(loss_fn: Callable, params, batch, num_micro: int = 1):
    """Gradient and metrics of a token/pair-mean loss over `num_micro` micro-batches, exactly.

    `loss_fn(params, micro_batch) -> (loss, metrics)` follows rlhf_jax.losses: `loss` is a mean
    over `metrics["count"]` elements. The result equals the full-batch gradient however the batch
    is split: grad = sum_i grad(loss_i * count_i) / sum_i count_i (never a mean of means).
    """
    def summed(p, micro):
        loss, metrics = loss_fn(p, micro)
        return loss * metrics["count"], metrics

    grad_fn = jax.grad(summed, has_aux=True)
    if num_micro == 1:
        grads, metrics = grad_fn(params, batch)
        count = metrics["count"]
    else:
        micro = split_micro_batches(batch, num_micro)

        def body(acc, mb):
            g, m = grad_fn(params, mb)
            return jax.tree.map(jnp.add, acc, g), m

        zeros = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), params)
        grads, per_micro = jax.lax.scan(body, zeros, micro)
        metrics = combine_metrics([{k: v[i] for k, v in per_micro.items()} for i in range(num_micro)])
        count = metrics["count"]
    scale = 1.0 / jnp.maximum(count, 1.0)
    grads = jax.tree.map(lambda g, p: (g * scale).astype(p.dtype), grads, params)
    return grads, metrics
