"""PPO update steps as pure functions, and the state a PPO run carries (and checkpoints).

Steps follow `rlhf_jax.training.steps`: module-level `(state, batch, ...) -> (state, metrics)`,
static arguments bound once and jitted with the state donated:
- `actor_step`: the clipped surrogate (`rlhf_jax.losses.ppo_policy_loss`) on one mini-batch;
- `critic_step`: the clipped value loss (`ppo_value_loss`) on one mini-batch, for the reward
  critic and (PPO-Lagrangian) the cost critic alike;
- `ema_step`: ref <- (1 - eta) ref + eta actor (`ema_update`), run after every actor step when the
  reference is an EMA (Xu et al. 2024, Table 3 "+ ref EMA").
A mini-batch is chosen inside the step by row indices into the whole rollout batch (`idx_b`), so
each step compiles once for the run; gradients over `num_micro` micro-batches are exact
(`accumulate_gradients`: token-sum losses over the total token count). `counted_jit` counts the
traces of each program, so a run can show that nothing recompiles after its first iteration.
"""

from __future__ import annotations

import collections
import functools
from typing import Any, Callable, NamedTuple

import jax
import optax
from flax import nnx

from rlhf_jax.losses import ema_update, ppo_policy_loss, ppo_value_loss, value_normalizer as vn
from rlhf_jax.sharding import constrain
from rlhf_jax.training.logprobs import model_token_logps
from rlhf_jax.training.state import TrainState, accumulate_gradients, apply_gradients


class PPOState(NamedTuple):
    """Everything a PPO run updates. `ref_params` is the EMA reference or the frozen initial actor;
    the cost fields are None unless PPO-Lagrangian is on."""

    actor: TrainState
    critic: TrainState
    ref_params: Any
    value_norm: vn.ValueNormalizerState
    rng: jax.Array
    cost_critic: TrainState | None = None
    cost_value_norm: vn.ValueNormalizerState | None = None
    log_lambda: jax.Array | None = None


def settle(tree):
    """`tree` once computed, on the CPU backend only; elsewhere `tree` at once (async dispatch).

    With 8 virtual CPU devices on a loaded machine, a PPO iteration dispatched without waiting
    (a dozen multi-device programs in flight) sometimes aborted the process inside XLA's CPU
    collectives ("Termination timeout for `all gather` ... Expected 8 threads to join the
    rendezvous, but only 7 of them arrived"), most likely participants of two programs starving
    each other on the CPU client's shared thread pool. Waiting for each program keeps one in flight
    (no abort in our runs since); GPUs and TPUs run programs in order on their streams and keep
    fully asynchronous dispatch.
    """
    return jax.block_until_ready(tree) if jax.default_backend() == "cpu" else tree


def counted_jit(fn: Callable, traces: collections.Counter, name: str, **jit_kwargs):
    """`jax.jit(fn)` that adds 1 to `traces[name]` each time it is traced (= compiled); its results
    are `settle`d (one program at a time on CPU)."""
    def traced(*args, **kwargs):
        traces[name] += 1
        return fn(*args, **kwargs)
    traced.__name__ = traced.__qualname__ = name  # names the compiled program
    jitted = jax.jit(traced, **jit_kwargs)

    def call(*args, **kwargs):
        return settle(jitted(*args, **kwargs))
    call.jitted = jitted
    return call


def checkpoint_tree(state: PPOState, *, ema_reference: bool) -> dict[str, Any]:
    """What a checkpoint holds: every non-None field; the reference only when it moves (EMA).

    A frozen reference is the initial actor, rebuilt from its source on resume."""
    tree = {k: v for k, v in state._asdict().items() if v is not None}
    if not ema_reference:
        del tree["ref_params"]
    return tree


def from_checkpoint_tree(state: PPOState, tree: dict[str, Any]) -> PPOState:
    """`state` with the fields of a (restored) `checkpoint_tree` put back."""
    return state._replace(**tree)


def gather_rows(batch: dict[str, jax.Array], idx_b: jax.Array) -> dict[str, jax.Array]:
    """Rows `idx_b` of every [B, ...] array, sharded by rows again (under `jax.set_mesh`)."""
    def one(x):
        return constrain(x[idx_b], ("batch",) + (None,) * (x.ndim - 1))
    return jax.tree.map(one, batch)


def _policy_loss(graphdef, prompt_length: int, clip_eps: float, dual_clip, params, mb):
    model = nnx.merge(graphdef, params)
    logps = model_token_logps(model, mb["input_ids"], mb["attention_mask"])[:, prompt_length:]
    return ppo_policy_loss(logps, mb["old_logps"], mb["advantages"], mb["response_mask"],
                           clip_eps=clip_eps, dual_clip=dual_clip)


def actor_step(state: TrainState, seq: dict, actor_batch: dict, idx_b: jax.Array, *, graphdef, tx,
               prompt_length: int, clip_eps: float, dual_clip: float | None = None,
               num_micro: int = 1) -> tuple[TrainState, dict]:
    """One actor update on rows `idx_b`: PPO clipped surrogate, token mean over the mini-batch.

    `seq`: input_ids / attention_mask [B, T], response_mask [B, N]; `actor_batch`: old_logps and
    advantages [B, N] (from `ppo_rollout.compute_advantages`)."""
    batch = gather_rows({**seq, **actor_batch}, idx_b)
    loss_fn = functools.partial(_policy_loss, graphdef, prompt_length, clip_eps, dual_clip)
    grads, metrics = accumulate_gradients(loss_fn, state.params, batch, num_micro)
    metrics = dict(metrics, grad_norm=optax.tree.norm(grads))
    return apply_gradients(state, grads, tx), metrics


def _value_loss(graphdef, prompt_length: int, value_clip, params, mb):
    model = nnx.merge(graphdef, params)
    length = mb["input_ids"].shape[1]
    values = model(mb["input_ids"], mb["attention_mask"]).values[:, prompt_length - 1:length - 1]
    return ppo_value_loss(values, mb["old_values"], mb["targets"], mb["response_mask"],
                          clip_eps=value_clip)


def critic_step(state: TrainState, seq: dict, critic_batch: dict, idx_b: jax.Array, *, graphdef, tx,
                prompt_length: int, value_clip: float | None, num_micro: int = 1
                ) -> tuple[TrainState, dict]:
    """One critic update on rows `idx_b`: clipped value loss against `targets` (old_values and
    targets [B, N], in the critic's normalized space when value normalization is on)."""
    batch = gather_rows({**seq, **critic_batch}, idx_b)
    loss_fn = functools.partial(_value_loss, graphdef, prompt_length, value_clip)
    grads, metrics = accumulate_gradients(loss_fn, state.params, batch, num_micro)
    metrics = dict(metrics, grad_norm=optax.tree.norm(grads))
    return apply_gradients(state, grads, tx), metrics


def ema_step(ref_params, actor_params, *, eta: float):
    """The EMA reference after an actor step: (1 - eta) ref + eta actor, leaf by leaf."""
    return ema_update(ref_params, actor_params, eta=eta)


def minibatch_indices(batch_size: int, mini_batches: int, *, seed: int, iteration: int, epoch: int
                      ) -> list:
    """Row indices of each mini-batch of one PPO epoch: a permutation of the batch, a pure function
    of (seed, iteration, epoch), so a resumed run draws the same ones."""
    import numpy as np

    perm = np.random.default_rng([seed, iteration, epoch]).permutation(batch_size).astype(np.int32)
    return np.split(perm, mini_batches)
