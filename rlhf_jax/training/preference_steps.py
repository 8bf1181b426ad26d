"""Pure step functions for pairwise preference training: reward / cost models and DPO.

Batches follow the preference-pair layout of `rlhf_jax.data.batching` (`chosen_*` and `rejected_*`
rows), plus the fields this module names:
- cost models: `chosen_is_safe`, `rejected_is_safe` [B] (0/1), with chosen = the safer response;
- DPO with precomputed reference log-probs: `ref_chosen_logps`, `ref_rejected_logps` [B] float32.
A pair whose chosen row has no valid token (`pad_rows` filler) is masked out of every loss.

Chosen and rejected sequences go through the model as one [2B, T] batch (one forward, one
backward). Each step is a module-level pure function `(state, batch, *frozen) -> (state, metrics)`
for `rlhf_jax.training.steps.jit_step` (`cached_jit` memoizes it); the DPO reference params are a
frozen, non-donated argument, or `None` when the batch carries precomputed reference log-probs.
"""

from __future__ import annotations

import collections
import dataclasses
import functools

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from rlhf_jax.config import ConfigError
from rlhf_jax.losses import check_dpo_variant, cost_loss, dpo_loss, masked_sum, reward_loss
from rlhf_jax.training.state import OptimConfig, TrainState, accumulate_gradients, apply_gradients, make_optimizer
from rlhf_jax.training.steps import jit_step, sequence_token_logps

SEQUENCE_KEYS = ("input_ids", "attention_mask", "loss_mask", "positions", "segment_ids")
PAIR_FIELDS = tuple(f"{side}_{k}" for side in ("chosen", "rejected") for k in SEQUENCE_KEYS)
SAFETY_FIELDS = ("chosen_is_safe", "rejected_is_safe")
REFERENCE_FIELDS = ("ref_chosen_logps", "ref_rejected_logps")


@functools.lru_cache(maxsize=None)
def optimizer(cfg: OptimConfig) -> optax.GradientTransformation:
    """`make_optimizer(cfg)`, one object per config, so that `cached_jit` keys on it."""
    return make_optimizer(cfg)


_JITTED: collections.OrderedDict = collections.OrderedDict()


def cached_jit(fn, *, state=None, **static):
    """`jit_step(fn, state=state, **static)` for a step (the state donated, the new state pinned to
    its shardings), or `jax.jit(partial(fn, **static))` without `state`; built once per (fn, static
    arguments, state layout). A run started again in the same process with the same model and
    settings (a resume, a sweep, a notebook) reuses the trace and the compiled program instead of
    tracing again. Static arguments must be hashable: a GraphDef, a config dataclass, an optimizer
    from `optimizer(cfg)`."""
    layout = None if state is None else (
        jax.tree.structure(state), tuple(x.sharding for x in jax.tree.leaves(state)))
    key = (fn, layout, tuple(sorted(static.items(), key=lambda item: item[0])))
    if key not in _JITTED:
        _JITTED[key] = (jax.jit(functools.partial(fn, **static)) if state is None
                        else jit_step(fn, state=state, **static))
        if len(_JITTED) > 32:
            _JITTED.popitem(last=False)
    return _JITTED[key]


def pair_mask(batch) -> jax.Array:
    """[B] bool: the pair holds real tokens (filler rows added by `pad_rows` do not)."""
    return jnp.any(batch["chosen_attention_mask"] != 0, axis=-1)


def stacked_sequences(batch) -> dict[str, jax.Array]:
    """The chosen rows followed by the rejected rows, as one [2B, T] sequence batch."""
    return {k: jnp.concatenate([batch[f"chosen_{k}"], batch[f"rejected_{k}"]], axis=0)
            for k in SEQUENCE_KEYS}


def pair_logps(graphdef, params, batch) -> tuple[jax.Array, jax.Array]:
    """(log pi(chosen | prompt), log pi(rejected | prompt)), each [B]: sums over response tokens."""
    rows = stacked_sequences(batch)
    logps_2BxT = sequence_token_logps(graphdef, params, rows)
    total_2B = masked_sum(logps_2BxT, rows["loss_mask"], axis=-1)
    return jnp.split(total_2B, 2)


def pair_scores(graphdef, params, batch) -> tuple[jax.Array, jax.Array]:
    """Scalar-head scores (at each sequence's last valid token) of the chosen and rejected rows."""
    rows = stacked_sequences(batch)
    model = nnx.merge(graphdef, params)
    scores_2B = model(rows["input_ids"], rows["attention_mask"], rows["positions"],
                      rows["segment_ids"]).scores
    return jnp.split(scores_2B, 2)


# ----------------------------------------------------------------------------- reward / cost models

def _reward_objective(chosen_B, rejected_B, batch, mask_B):
    return reward_loss(chosen_B, rejected_B, mask_B=mask_B)


def _cost_objective(safer_B, unsafer_B, batch, mask_B):
    return cost_loss(safer_B, unsafer_B, batch["chosen_is_safe"], batch["rejected_is_safe"], mask_B=mask_B)


#: Score-model kinds: name -> (chosen scores, rejected scores, batch, mask) -> (loss, metrics).
#: "reward": Bradley-Terry; "cost": safe-rlhf's cost loss (chosen = the safer response).
SCORE_OBJECTIVES = {"reward": _reward_objective, "cost": _cost_objective}


def check_score_kind(kind: str) -> str:
    """`kind` if it names an entry of SCORE_OBJECTIVES, else ValueError listing them."""
    if kind not in SCORE_OBJECTIVES:
        raise ValueError(f"kind={kind!r}; choose from {sorted(SCORE_OBJECTIVES)}")
    return kind


def score_loss_fn(graphdef, params, batch, *, kind: str):
    """(loss, metrics) of a score model on a batch of pairs (see SCORE_OBJECTIVES)."""
    chosen_B, rejected_B = pair_scores(graphdef, params, batch)
    return SCORE_OBJECTIVES[check_score_kind(kind)](chosen_B, rejected_B, batch, pair_mask(batch))


def score_model_step(state: TrainState, batch, *, graphdef, tx, kind: str, num_micro: int = 1):
    """One reward- or cost-model update with exact micro-batch accumulation."""
    loss_fn = functools.partial(score_loss_fn, graphdef, kind=kind)
    grads, metrics = accumulate_gradients(loss_fn, state.params, batch, num_micro)
    return apply_gradients(state, grads, tx), dict(metrics, grad_norm=optax.tree.norm(grads))


def score_model_eval(params, batch, *, graphdef, kind: str):
    """Metrics of `score_loss_fn` (accuracy, margin, ..., count) without an update."""
    return score_loss_fn(graphdef, params, batch, kind=kind)[1]


# ----------------------------------------------------------------------------- DPO

@dataclasses.dataclass(frozen=True)
class DPOLoss:
    """Settings of `rlhf_jax.losses.dpo_loss`; the variant is checked when the config is built."""

    beta: float = 0.1
    label_smoothing: float = 0.0
    variant: str = "sigmoid"

    def __post_init__(self):
        try:
            check_dpo_variant(self.variant)
        except ValueError as e:
            raise ConfigError(f"dpo.variant: {e}") from None
        if self.beta <= 0:
            raise ConfigError(f"dpo.beta={self.beta}: must be > 0")
        if not 0.0 <= self.label_smoothing < 0.5:
            raise ConfigError(f"dpo.label_smoothing={self.label_smoothing}: must be in [0, 0.5)")
        if self.variant == "ipo" and self.label_smoothing != 0:
            raise ConfigError(f"dpo.label_smoothing={self.label_smoothing}: variant 'ipo' takes none")


def reference_logps(params, batch, *, graphdef) -> dict[str, jax.Array]:
    """The reference fields of a batch (`REFERENCE_FIELDS`) computed with `params`."""
    chosen_B, rejected_B = pair_logps(graphdef, params, batch)
    return dict(zip(REFERENCE_FIELDS, (chosen_B, rejected_B)))


def _dpo_objective(chosen_B, rejected_B, ref, mask_B, loss: DPOLoss):
    return dpo_loss(chosen_B, rejected_B, ref["ref_chosen_logps"], ref["ref_rejected_logps"],
                    beta=loss.beta, label_smoothing=loss.label_smoothing, variant=loss.variant, mask_B=mask_B)


def dpo_loss_fn(graphdef, params, batch, ref_params=None, *, loss: DPOLoss):
    """DPO loss of the policy `params` against `ref_params`, or against the batch's precomputed
    reference log-probs when `ref_params` is None."""
    chosen_B, rejected_B = pair_logps(graphdef, params, batch)
    if ref_params is None:
        ref = {k: batch[k] for k in REFERENCE_FIELDS}
    else:
        ref = reference_logps(jax.lax.stop_gradient(ref_params), batch, graphdef=graphdef)
    return _dpo_objective(chosen_B, rejected_B, ref, pair_mask(batch), loss)


def dpo_step(state: TrainState, batch, ref_params=None, *, graphdef, tx, loss: DPOLoss, num_micro: int = 1):
    """One DPO update; `ref_params` (frozen, not donated) or precomputed reference fields."""
    loss_fn = functools.partial(dpo_loss_fn, graphdef, ref_params=ref_params, loss=loss)
    grads, metrics = accumulate_gradients(loss_fn, state.params, batch, num_micro)
    return apply_gradients(state, grads, tx), dict(metrics, grad_norm=optax.tree.norm(grads))


def dpo_metrics(policy_logps, ref_logps, mask_B, *, loss: DPOLoss):
    """Held-out DPO metrics (margin, accuracy, implicit rewards, count) from the log-probs of the
    policy and of the reference (both as `reference_logps` returns them) on one batch;
    `mask_B` is `pair_mask(batch)`.

    Evaluation runs the policy through the same forward program as the reference pass
    (`reference_logps`), so it compiles nothing but this small function."""
    policy = (policy_logps["ref_chosen_logps"], policy_logps["ref_rejected_logps"])
    return _dpo_objective(*policy, ref_logps, mask_B, loss)[1]
