"""Host offloading between phases: exact round trips, freed sources, unchanged shardings (no recompiles)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlhf_jax.sharding import MeshConfig, make_mesh
from rlhf_jax.training import offload
from rlhf_jax.training.state import OptimConfig, init_train_state, make_optimizer, split_model
from rlhf_jax.training.sources import ModelSource, build_model


def test_optimizer_state_round_trip_is_exact_and_frees_the_source():
    assert offload.host_memory_available()
    mesh = make_mesh(MeshConfig(data=2, fsdp=4, tensor=1))
    _, params = split_model(build_model(ModelSource(preset="tiny"), mesh=mesh))
    state = init_train_state(params, make_optimizer(OptimConfig(lr=1e-3)))
    opt = jax.tree.map(lambda x: x + 1, state.opt_state)  # nonzero moments
    values = [np.asarray(x) for x in jax.tree.leaves(opt)]
    shardings = [x.sharding for x in jax.tree.leaves(opt)]
    step = jax.jit(lambda tree: jax.tree.map(lambda x: x * 2, tree))
    step(opt)
    compiled = step._cache_size()

    host, where = offload.to_host(opt)
    assert offload.memory_kinds(host) == {offload.HOST}
    assert all(x.is_deleted() for x in jax.tree.leaves(opt))  # like donation: the device copy is gone
    back = offload.to_device(host, where)
    assert all(x.is_deleted() for x in jax.tree.leaves(host))
    assert [x.sharding for x in jax.tree.leaves(back)] == shardings  # the very shardings it left with
    for a, b in zip(values, jax.tree.leaves(back)):
        np.testing.assert_array_equal(a, np.asarray(b))
    step(back)
    assert step._cache_size() == compiled  # same input types: no recompilation


def test_unknown_memory_kind_is_refused():
    assert not offload.host_memory_available("no_such_memory")
    with pytest.raises(ValueError):
        offload.to_host({"x": jnp.ones(3)}, kind="no_such_memory")
