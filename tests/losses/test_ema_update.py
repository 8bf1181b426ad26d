"""ema_update: ref <- (1 - eta) ref + eta policy (the paper's 0.999 / 0.001 mix), dtype and
sharding preserved, clear errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlhf_jax.losses import ema_update


def test_mix_over_a_nested_pytree():
    ref = {"w": jnp.array([1.0, 2.0]), "layer": [jnp.array(10.0)]}
    policy = {"w": jnp.array([3.0, 2.0]), "layer": [jnp.array(0.0)]}
    out = ema_update(ref, policy, eta=0.001)  # 0.999 * ref + 0.001 * actor
    np.testing.assert_allclose(out["w"], [0.999 + 0.003, 2.0], rtol=1e-6)
    np.testing.assert_allclose(out["layer"][0], 9.99, rtol=1e-6)
    assert jax.tree.structure(out) == jax.tree.structure(ref)


def test_eta_zero_freezes_and_one_copies():
    ref, policy = {"w": jnp.array([1.0])}, {"w": jnp.array([5.0])}
    assert float(ema_update(ref, policy, eta=0.0)["w"][0]) == 1.0
    assert float(ema_update(ref, policy, eta=1.0)["w"][0]) == 5.0
    # eta = 0.25: 0.75 * 1 + 0.25 * 5 = 2 (the weight is on the policy, not on the reference).
    assert float(ema_update(ref, policy, eta=0.25)["w"][0]) == 2.0


def test_bf16_dtype_kept_and_mix_rounded_once_from_float32():
    rng = np.random.default_rng(4)
    ema = {"w": jnp.asarray(rng.normal(size=512), jnp.bfloat16)}
    new = {"w": jnp.asarray(rng.normal(size=512), jnp.bfloat16)}
    out = ema_update(ema, new, eta=0.1)["w"]
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
    jitted = jax.jit(lambda e, n: ema_update(e, n, eta=0.1))(ema, new)
    eager = ema_update(ema, new, eta=0.1)
    for out in (jitted, eager):
        assert out["w"].sharding.is_equivalent_to(sharding, 1)
        np.testing.assert_allclose(out["w"], 0.9 * np.arange(16.0) + 0.1, rtol=1e-6)


def test_bad_inputs_name_the_leaf():
    with pytest.raises(ValueError, match="same tree structure"):
        ema_update({"a": jnp.zeros(2)}, {"b": jnp.zeros(2)}, eta=0.1)
    with pytest.raises(ValueError, match=r"ref_params\['a'\] has shape \(2,\).*\(3,\)"):
        ema_update({"a": jnp.zeros(2)}, {"a": jnp.zeros(3)}, eta=0.1)
    with pytest.raises(ValueError, match=r"policy_params\['a'\] must be a float array"):
        ema_update({"a": jnp.zeros(2)}, {"a": jnp.zeros(2, jnp.int32)}, eta=0.1)
    with pytest.raises(ValueError, match="eta must be in"):
        ema_update({"a": jnp.zeros(2)}, {"a": jnp.zeros(2)}, eta=1.5)
