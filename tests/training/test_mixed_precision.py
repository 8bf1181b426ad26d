"""bf16 parameters with float32 master copies (OptimConfig.fp32_master)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlhf_jax.models import LlamaForCausalLM, create_model, preset
from rlhf_jax.sharding import MeshConfig, make_mesh, put_batch
from rlhf_jax.training.state import MasterState, OptimConfig, init_train_state, make_optimizer, split_model
from rlhf_jax.training.steps import jit_step, sft_step


def _batch(mesh, B=8, T=16):
    ids = np.random.default_rng(0).integers(3, 256, size=(B, T)).astype(np.int32)
    ones = np.ones_like(ids)
    return put_batch({"input_ids": ids, "attention_mask": ones, "loss_mask": ones,
                      "positions": np.broadcast_to(np.arange(T, dtype=np.int32), (B, T)).copy(),
                      "segment_ids": ones}, mesh)


LR, STEPS = 1e-5, 3


@functools.lru_cache(maxsize=None)
def _train(param_dtype: str, fp32_master: bool):
    """STEPS SFT steps at LR from the same bf16-representable initial weights, float32 compute."""
    mesh = make_mesh(MeshConfig(1, 1, 1), devices=jax.devices()[:1])
    model = create_model(LlamaForCausalLM, preset("tiny", param_dtype="bfloat16"), mesh=mesh)
    graphdef, params = split_model(model)
    if param_dtype == "float32":
        graphdef, _ = split_model(create_model(LlamaForCausalLM, preset("tiny"), mesh=mesh))
        params = jax.tree.map(lambda p: p.astype(jnp.float32), params)
    start = _leaves(params)  # (the state is donated to the step)
    tx = make_optimizer(OptimConfig(lr=LR, fp32_master=fp32_master))
    state = init_train_state(params, tx)
    step = jit_step(sft_step, state=state, graphdef=graphdef, tx=tx)
    batch, losses = _batch(mesh), []
    with jax.set_mesh(mesh):
        for _ in range(STEPS):
            state, metrics = step(state, batch)
            losses.append(float(metrics["loss"]))
    return state, losses, start


def _leaves(tree):
    return [np.asarray(x, np.float32) for x in jax.tree.leaves(tree)]


def test_masters_follow_the_float32_run_while_params_stay_bf16():
    fp32, fp32_losses, init = _train("float32", False)
    mixed, mixed_losses, _ = _train("bfloat16", True)
    assert isinstance(mixed.opt_state, MasterState)
    for p, m in zip(jax.tree.leaves(mixed.params), jax.tree.leaves(mixed.opt_state.master)):
        assert p.dtype == jnp.bfloat16 and m.dtype == jnp.float32 and m.sharding == p.sharding
        # the params are the masters rounded to bf16 (p + (m - p) in float32, Sterbenz-exact)
        np.testing.assert_array_equal(np.asarray(p, np.float32), np.asarray(m.astype(jnp.bfloat16), np.float32))
    # every weight moved by about STEPS * LR = 3e-5 in the float32 run; the masters follow it to
    # within a fifth of one step for 98% of the weights (only the bf16-rounded forward of steps 2 and 3 differs)
    for m, ref, start in zip(_leaves(mixed.opt_state.master), _leaves(fp32.params), init):
        moved = ref != start  # (embedding rows of tokens not in the batch get no gradient)
        assert np.mean(moved) > 0.3 and np.median(np.abs(ref - start)[moved]) == pytest.approx(STEPS * LR, rel=0.1)
        assert np.max(np.abs(m - ref)) <= 2 * STEPS * LR
    gap = np.concatenate([np.abs(m - ref).ravel() for m, ref in zip(_leaves(mixed.opt_state.master),
                                                                     _leaves(fp32.params))])
    assert np.mean(gap < 0.2 * LR) > 0.99
    # the same weights at step 1; later the bf16 forward sees the masters rounded (3e-5 moves are
    # mostly below bf16's spacing), so the losses part by about the float32 run's progress
    assert mixed_losses[0] == pytest.approx(fp32_losses[0], rel=1e-6)


def test_small_updates_reach_the_masters_but_round_away_in_plain_bf16():
    # Adam moves every weight by about LR = 1e-5 per step; a bf16 weight of size ~0.02 has a
    # spacing of 2^-13 ~ 1.2e-4, so without masters almost every update rounds away.
    plain, _, init = _train("bfloat16", False)
    mixed, _, _ = _train("bfloat16", True)
    for p, m, start in zip(_leaves(plain.params), _leaves(mixed.opt_state.master), init):
        if p.size > 1000:  # the matrices (norm weights of 1.0 have a coarser spacing still)
            assert np.mean(p == start) > 0.75  # measured 0.85: only the smallest weights move
            moved = m != start
            assert np.mean(moved) > 0.3 and np.median(np.abs(m - start)[moved]) == pytest.approx(STEPS * LR, rel=0.1)


def test_fp32_master_over_float32_params_is_rejected():
    mesh = make_mesh(MeshConfig(1, 1, 1), devices=jax.devices()[:1])
    _, params = split_model(create_model(LlamaForCausalLM, preset("tiny"), mesh=mesh))
    with pytest.raises(ValueError, match="fp32_master=true, but the parameters are already float32"):
        init_train_state(params, make_optimizer(OptimConfig(fp32_master=True)))


@pytest.mark.parametrize("total, warmup", [(1, 0), (1, 1), (2, 0), (5, 10)])
def test_cosine_schedule_accepts_runs_shorter_than_its_warmup(total, warmup):
    """A one-step (or warmup-only) run with the cosine schedule builds and updates finitely."""
    tx = make_optimizer(OptimConfig(lr=1e-2, schedule="cosine", warmup_steps=warmup, total_steps=total))
    params = {"w": jnp.ones(3)}
    updates, _ = tx.update({"w": jnp.ones(3)}, tx.init(params), params)
    assert np.isfinite(np.asarray(updates["w"])).all()
