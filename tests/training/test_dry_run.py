"""Dry runs compile full steps from abstract shapes and report per-device memory that adds up."""

import math

import jax
import numpy as np
import pytest

from experiments import dry_run
from rlhf_jax.config import apply_overrides
from rlhf_jax.models import LlamaForCausalLM, preset
from rlhf_jax.sharding import MeshConfig, make_mesh
from rlhf_jax.training import dry_run as dr


def test_parameter_bytes_per_device_follow_the_shardings():
    cfg = preset("tiny")
    mesh = make_mesh(MeshConfig(1, 8, 1))
    _, params = dr.abstract_params(LlamaForCausalLM, cfg, mesh)
    leaves = jax.tree.leaves(params)
    assert all(isinstance(x, jax.ShapeDtypeStruct) for x in leaves)  # nothing allocated
    total = sum(math.prod(x.shape) * 4 for x in leaves)
    replicated = sum(math.prod(x.shape) * 4 for x in leaves if x.sharding.spec == jax.P(*([None] * x.ndim)))
    assert dr.per_device_bytes(params) == replicated + (total - replicated) // 8


@pytest.mark.parametrize("run", ["sft", "reward", "dpo"])
def test_dry_run_compiles_each_step_and_reports(run):
    cfg = apply_overrides(dry_run.get_config(), [
        ("run", run), ("model", "tiny"), ("batch_size", "16"), ("micro_batches", "2"), ("seq_len", "32")])
    out = dry_run.main(cfg)
    rows = out["rows"]
    assert rows["optimizer state"] == pytest.approx(2 * rows["parameters"], rel=0.01)  # Adam: mu and nu
    assert out["memory"]["temporaries"] > 0 and out["fits"]
    assert out["memory"]["arguments"] >= rows["parameters"] + rows["optimizer state"]
    if run == "dpo":
        # fp32 master parameters, the frozen reference in the bf16 compute dtype: half the bytes
        assert 2 * rows["reference model (frozen)"] == rows["parameters"]


def test_a_mesh_that_does_not_divide_the_micro_batch_is_rejected():
    cfg = apply_overrides(dry_run.get_config(), [("model", "tiny"), ("batch_size", "16"),
                                                 ("micro_batches", "4")])
    with pytest.raises(ValueError, match="batch size 4 is not divisible by data\\*fsdp"):
        dry_run.main(cfg)


def test_adam_moments_are_created_in_the_parameters_shardings():


    from rlhf_jax.models import create_model
    from rlhf_jax.training.state import OptimConfig, init_train_state, make_optimizer, split_model

    mesh = make_mesh(MeshConfig(1, 4, 2))
    _, params = split_model(create_model(LlamaForCausalLM, preset("tiny"), mesh=mesh))
    state = init_train_state(params, make_optimizer(OptimConfig()))
    adam = state.opt_state[1][0]  # (clip, adamw) chain; adamw's ScaleByAdamState
    for moments in (adam.mu, adam.nu):
        for p, m in zip(jax.tree.leaves(params), jax.tree.leaves(moments)):
            assert m.sharding == p.sharding
    assert adam.count.sharding.mesh == mesh
    assert dr.per_device_bytes(state.opt_state) == pytest.approx(2 * dr.per_device_bytes(params), rel=0.01)

