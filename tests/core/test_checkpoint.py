"""Orbax checkpoints: everything a resume needs, into other meshes, keep-N, crash safety."""

import os
import signal
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from rlhf_jax.checkpoint import Checkpointer, abstract_target
from rlhf_jax.models import LlamaConfig, LlamaForCausalLM, create_model
from rlhf_jax.sharding import MeshConfig, make_mesh

CFG = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4,
                  num_kv_heads=2)


def _train_state(mesh):
    model = create_model(LlamaForCausalLM, CFG, mesh=mesh, seed=1)
    params = nnx.state(model, nnx.Param)
    opt = optax.adamw(1e-3)
    opt_state = opt.init(params)
    # one real update so the optimizer moments are non-zero
    grads = jax.tree.map(lambda p: jnp.ones_like(p) * 0.5, params)
    updates, opt_state = opt.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    return {"params": params, "opt_state": opt_state, "step": jnp.asarray(7, jnp.int32),
            "rng": jax.random.key(42), "ema_ref": jax.tree.map(lambda p: p * 0.5, params)}


def _assert_tree_equal(a, b):
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(la) == len(lb)
    for x, y in zip(la, lb):
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            x, y = jax.random.key_data(x), jax.random.key_data(y)
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_restore_everything_into_a_different_mesh(tmp_path):
    state = _train_state(make_mesh(MeshConfig(2, 2, 2)))
    meta = {"data_iterator": {"epoch": 1, "index": 17}, "dpo_round": 2, "lagrange": 0.25}
    with Checkpointer(str(tmp_path)) as ckpt:
        assert ckpt.save(7, state, meta=meta)
        ckpt.wait()
    # Restore onto a (1, 8, 1) mesh: the target carries the new shardings.
    mesh2 = make_mesh(MeshConfig(1, 8, 1))
    state2 = _train_state(mesh2)
    target = abstract_target(state2)
    with Checkpointer(str(tmp_path)) as ckpt:
        restored, restored_meta = ckpt.restore(target=target)
    assert restored_meta == meta
    _assert_tree_equal(restored, state)
    wq = restored["params"]["model"]["layers"]["wq"][...]
    assert wq.sharding.mesh.shape["fsdp"] == 8
    assert wq.sharding.spec == target["params"]["model"]["layers"]["wq"].get_value().sharding.spec
    # the restored RNG draws what the saved one draws
    assert jax.random.uniform(restored["rng"]) == jax.random.uniform(state["rng"])


def test_keeps_last_n_and_restores_a_chosen_step(tmp_path):
    mesh = make_mesh(MeshConfig(8, 1, 1))
    x = jax.device_put(jnp.zeros((8, 4)), jax.sharding.NamedSharding(mesh, jax.P("data")))
    with Checkpointer(str(tmp_path), max_to_keep=2) as ckpt:
        for step in range(1, 5):
            ckpt.save(step, {"x": x + step}, meta={"step": step})
        ckpt.wait()
        assert ckpt.all_steps() == [3, 4]
        restored, meta = ckpt.restore(3, target={"x": x})
        assert meta == {"step": 3}
        np.testing.assert_array_equal(np.asarray(restored["x"]), 3.0)
        with pytest.raises(FileNotFoundError, match="step 1 not in"):
            ckpt.restore(1, target={"x": x})


def test_restore_from_empty_directory_is_a_clear_error(tmp_path):
    with Checkpointer(str(tmp_path)) as ckpt:
        with pytest.raises(FileNotFoundError, match="no complete checkpoint"):
            ckpt.restore(target={"x": jnp.zeros(2)})


CRASHING_SAVER = textwrap.dedent("""
    import os, signal, sys
    import jax, jax.numpy as jnp
    from rlhf_jax.checkpoint import Checkpointer
    ckpt = Checkpointer(sys.argv[1], async_save=True)
    ckpt.save(1, {"x": jnp.full((1024, 1024), 1.0)}, meta={"ok": 1})
    ckpt.wait()
    big = jnp.full((6 * 1024, 4 * 1024), 2.0)  # ~100 MB: the write takes a while
    ckpt.save(2, {"x": big[:1024, :1024], "big": big}, meta={"ok": 2})
    os.kill(os.getpid(), signal.SIGKILL)  # die while the asynchronous write is in flight
""")


def test_crash_during_save_never_yields_a_half_written_checkpoint(tmp_path):
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    proc = subprocess.run([sys.executable, "-c", CRASHING_SAVER, str(tmp_path)], env=env,
                          capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    with Checkpointer(str(tmp_path)) as ckpt:
        latest = ckpt.latest_step()
        assert latest in (1, 2)
        target = {"x": jnp.zeros((1024, 1024))}
        if latest == 2:
            target["big"] = jnp.zeros((6 * 1024, 4 * 1024))
        restored, meta = ckpt.restore(target=target)
        assert meta == {"ok": latest}
        np.testing.assert_array_equal(np.asarray(restored["x"]), float(latest))
        if latest == 1:  # the interrupted step left at most a temporary folder, never step 2
            assert 2 not in ckpt.all_steps()
            assert not os.path.exists(tmp_path / "2")


def test_scalars_restore_onto_the_target_mesh(tmp_path):
    mesh = make_mesh(MeshConfig(2, 2, 2))
    rep = jax.sharding.NamedSharding(mesh, jax.P())
    state = {"step": jax.device_put(jnp.int32(5), rep), "w": jax.device_put(jnp.ones((8, 2)), rep)}
    with Checkpointer(str(tmp_path)) as ckpt:
        ckpt.save(5, state)
        ckpt.wait()
        restored, _ = ckpt.restore(target=abstract_target(state))
    assert restored["step"].sharding == rep and int(restored["step"]) == 5
