"""value_normalizer: exact running moments across batches, round trips, pytree behaviour."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlhf_jax.losses import value_normalizer as vn

RNG = np.random.default_rng(3)
BATCHES = [
    (3.0 + 2.0 * RNG.normal(size=(4, 5)).astype(np.float32), RNG.integers(0, 2, (4, 5)))
    for _ in range(3)
]


def test_init_is_identity_with_zero_count():
    s = vn.init()
    assert float(s.count) == 0.0
    x = jnp.array([1.5, -2.0])
    np.testing.assert_allclose(vn.normalize(s, x, eps=1e-12), x, rtol=1e-6)


def test_sequential_updates_equal_moments_of_all_valid_values():
    s = vn.init()
    for x, m in BATCHES:
        s = vn.update(s, x, m)
    seen = np.concatenate([x[m == 1] for x, m in BATCHES]).astype(np.float64)
    assert float(s.count) == seen.size
    np.testing.assert_allclose(s.mean, seen.mean(), rtol=1e-6)
    np.testing.assert_allclose(s.var, seen.var(), rtol=1e-5)


def test_order_and_split_do_not_matter():
    # A then B equals B then A equals one update on the concatenation.
    (xa, ma), (xb, mb) = BATCHES[0], BATCHES[1]
    ab = vn.update(vn.update(vn.init(), xa, ma), xb, mb)
    ba = vn.update(vn.update(vn.init(), xb, mb), xa, ma)
    joint = vn.update(vn.init(), np.concatenate([xa, xb]), np.concatenate([ma, mb]))
    for s in (ba, joint):
        np.testing.assert_allclose(s.mean, ab.mean, rtol=1e-6)
        np.testing.assert_allclose(s.var, ab.var, rtol=1e-5)
        assert float(s.count) == float(ab.count)


def test_empty_batch_leaves_state_unchanged():
    x, m = BATCHES[0]
    s = vn.update(vn.init(), x, m)
    same = vn.update(s, x, np.zeros_like(m))
    for a, b in zip(s, same):
        assert float(a) == float(b)


def test_normalize_denormalize_round_trip():
    x, m = BATCHES[0]
    s = vn.update(vn.init(), x, m)
    normed = vn.normalize(s, x)
    valid = np.asarray(normed)[m == 1]
    np.testing.assert_allclose(valid.mean(), 0.0, atol=1e-5)
    np.testing.assert_allclose(valid.var(), 1.0, rtol=1e-4)
    np.testing.assert_allclose(vn.denormalize(s, normed), x, rtol=1e-5, atol=1e-5)


def test_state_is_a_pytree_usable_under_jit():
    x, m = BATCHES[0]
    update = jax.jit(vn.update)
    s = update(vn.init(), x, m)
    assert isinstance(s, vn.ValueNormalizerState)
    assert len(jax.tree.leaves(s)) == 3
    np.testing.assert_allclose(s.mean, x[m == 1].mean(), rtol=1e-6)


def test_bad_inputs_name_the_argument():
    with pytest.raises(ValueError, match=r"x\[4, 5\].*mask\[4, 4\]"):
        vn.update(vn.init(), BATCHES[0][0], BATCHES[0][1][:, :4])
    with pytest.raises(ValueError, match="eps must be > 0"):
        vn.normalize(vn.init(), jnp.zeros(2), eps=0.0)
