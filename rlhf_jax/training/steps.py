"""Pure, jittable step functions: `(state, batch, *frozen) -> (state, metrics)`.

Each is a module-level function of arrays and static arguments (`graphdef`, the optimizer, the
number of micro-batches); `jit_step` binds the static ones and jits it once with the train state
donated. Batches follow the layouts of `rlhf_jax.data.batching`.
"""

from __future__ import annotations

import functools

import jax
from flax import nnx

from rlhf_jax.losses import sft_loss
from rlhf_jax.training.logprobs import model_token_logps
from rlhf_jax.training.state import TrainState, accumulate_gradients, apply_gradients


def sequence_token_logps(graphdef, params, batch, prefix: str = ""):
    """Per-token log-probs [B, T] of `{prefix}input_ids` (rows laid out as rlhf_jax.data.batching)."""
    model = nnx.merge(graphdef, params)
    return model_token_logps(model, batch[prefix + "input_ids"], batch[prefix + "attention_mask"],
                             batch[prefix + "positions"], batch[prefix + "segment_ids"])


def sft_loss_fn(graphdef, params, batch):
    logps = sequence_token_logps(graphdef, params, batch)
    return sft_loss(logps, batch["loss_mask"])


def sft_step(state: TrainState, batch, *, graphdef, tx, num_micro: int = 1):
    """One SFT update: token-mean NLL of the response tokens (`loss_mask`), exact accumulation."""
    loss_fn = functools.partial(sft_loss_fn, graphdef)
    grads, metrics = accumulate_gradients(loss_fn, state.params, batch, num_micro)
    metrics = dict(metrics, grad_norm=_global_norm(grads))
    return apply_gradients(state, grads, tx), metrics


def sft_eval(params, batch, *, graphdef):
    return sft_loss_fn(graphdef, params, batch)[1]


def _global_norm(tree):
    import optax
    return optax.tree.norm(tree)


def shardings_of(tree):
    """The shardings of a pytree of arrays (for `jit`'s in/out_shardings)."""
    return jax.tree.map(lambda x: x.sharding, tree)


def jit_step(step_fn, *, state=None, **static):
    """`step_fn` with its static arguments bound, jitted with the state (argument 0) donated.

    With `state` (an example of the train state), the new state is pinned to the same shardings
    (`out_shardings`): otherwise XLA may pick another layout for some outputs, and the next call,
    seeing new input shardings, would silently compile a second program.
    """
    fn = functools.partial(step_fn, **static)
    if state is None:
        return jax.jit(fn, donate_argnums=(0,))
    leaf = jax.tree.leaves(state)[0]
    replicated = jax.sharding.NamedSharding(leaf.sharding.mesh, jax.sharding.PartitionSpec())
    return jax.jit(fn, donate_argnums=(0,), out_shardings=(shardings_of(state), replicated))
