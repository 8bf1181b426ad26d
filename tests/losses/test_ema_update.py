"""ema_update: the paper's 0.001 / 0.999 mix, dtype and sharding preserved, clear errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlhf_jax.losses import ema_update


def test_mix_over_a_nested_pytree():
    ema = {"w": jnp.array([1.0, 2.0]), "layer": [jnp.array(10.0)]}
    new = {"w": jnp.array([3.0, 2.0]), "layer": [jnp.array(0.0)]}
    out = ema_update(ema, new, decay=0.999)  # 0.001 * actor + 0.999 * ref
    np.testing.assert_allclose(out["w"], [0.999 + 0.003, 2.0], rtol=1e-6)
    np.testing.assert_allclose(out["layer"][0], 9.99, rtol=1e-6)
    assert jax.tree.structure(out) == jax.tree.structure(ema)


def test_decay_one_freezes_and_zero_copies():
    ema, new = {"w": jnp.array([1.0])}, {"w": jnp.array([5.0])}
    assert float(ema_update(ema, new, decay=1.0)["w"][0]) == 1.0
    assert float(ema_update(ema, new, decay=0.0)["w"][0]) == 5.0


def test_bf16_dtype_kept_and_mix_rounded_once_from_float32():
    rng = np.random.default_rng(4)
    ema = {"w": jnp.asarray(rng.normal(size=512), jnp.bfloat16)}
    new = {"w": jnp.asarray(rng.normal(size=512), jnp.bfloat16)}
    out = ema_update(ema, new, decay=0.9)["w"]
    assert out.dtype == jnp.bfloat16
    f32 = lambda x: x.astype(jnp.float32)
    once = (0.9 * f32(ema["w"]) + 0.1 * f32(new["w"])).astype(jnp.bfloat16)
    np.testing.assert_array_equal(f32(out), f32(once))
    # Mixing in bf16 itself rounds several times and lands elsewhere on some entries.
    in_bf16 = ema["w"] * jnp.bfloat16(0.9) + new["w"] * jnp.bfloat16(0.1)
    assert np.any(np.asarray(f32(in_bf16)) != np.asarray(f32(once)))


def test_output_keeps_input_sharding():
    mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    ema = {"w": jax.device_put(jnp.arange(16.0), sharding)}
    new = {"w": jax.device_put(jnp.ones(16), sharding)}
    jitted = jax.jit(lambda e, n: ema_update(e, n, decay=0.9))(ema, new)
    eager = ema_update(ema, new, decay=0.9)
    for out in (jitted, eager):
        assert out["w"].sharding.is_equivalent_to(sharding, 1)
        np.testing.assert_allclose(out["w"], 0.9 * np.arange(16.0) + 0.1, rtol=1e-6)


def test_bad_inputs_name_the_leaf():
    with pytest.raises(ValueError, match="same tree structure"):
        ema_update({"a": jnp.zeros(2)}, {"b": jnp.zeros(2)}, decay=0.9)
    with pytest.raises(ValueError, match=r"ema_params\['a'\] has shape \(2,\).*\(3,\)"):
        ema_update({"a": jnp.zeros(2)}, {"a": jnp.zeros(3)}, decay=0.9)
    with pytest.raises(ValueError, match=r"new_params\['a'\] must be a float array"):
        ema_update({"a": jnp.zeros(2)}, {"a": jnp.zeros(2, jnp.int32)}, decay=0.9)
    with pytest.raises(ValueError, match="decay must be in"):
        ema_update({"a": jnp.zeros(2)}, {"a": jnp.zeros(2)}, decay=1.5)
