"""Masked sums, means, variance and whitening; the all-zero-mask convention; metric merging."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlhf_jax.losses import (
    combine_metrics,
    masked_count,
    masked_mean,
    masked_sum,
    masked_var,
    masked_whiten,
    safe_divide,
)

RNG = np.random.default_rng(0)
X_BxT = RNG.normal(size=(4, 6)).astype(np.float32)
MASK_BxT = np.array(
    [[1, 1, 1, 0, 0, 0], [0, 0, 1, 1, 1, 1], [1, 0, 1, 0, 1, 0], [0, 0, 0, 0, 0, 0]], np.float32
)


def test_sum_count_mean_match_numpy_on_valid_entries():
    valid = X_BxT[MASK_BxT == 1]
    np.testing.assert_allclose(masked_sum(X_BxT, MASK_BxT), valid.sum(), rtol=1e-6)
    assert float(masked_count(MASK_BxT)) == valid.size == 10
    np.testing.assert_allclose(masked_mean(X_BxT, MASK_BxT), valid.mean(), rtol=1e-6)
    np.testing.assert_allclose(masked_var(X_BxT, MASK_BxT), valid.var(), rtol=1e-5)


def test_row_reductions_and_empty_row_is_zero():
    rows = masked_mean(X_BxT, MASK_BxT, axis=-1)
    for b in range(3):
        np.testing.assert_allclose(rows[b], X_BxT[b][MASK_BxT[b] == 1].mean(), rtol=1e-6)
    assert float(rows[3]) == 0.0
    np.testing.assert_array_equal(masked_count(MASK_BxT, axis=-1), [3, 4, 3, 0])
    var_rows = masked_var(X_BxT, MASK_BxT, axis=-1)
    np.testing.assert_allclose(var_rows[1], X_BxT[1][MASK_BxT[1] == 1].var(), rtol=1e-5)
    assert float(var_rows[3]) == 0.0


def test_masked_positions_never_leak_even_nan_and_inf():
    x = np.where(MASK_BxT == 1, X_BxT, np.nan).astype(np.float32)
    x[0, 4] = -np.inf
    assert np.isfinite(float(masked_mean(x, MASK_BxT)))
    np.testing.assert_allclose(masked_mean(x, MASK_BxT), masked_mean(X_BxT, MASK_BxT), rtol=1e-6)
    grad = jax.grad(lambda v: masked_mean(v, MASK_BxT))(jnp.asarray(x))
    np.testing.assert_allclose(grad, MASK_BxT / 10.0, rtol=1e-6)


def test_bool_and_float_masks_agree():
    np.testing.assert_allclose(
        masked_mean(X_BxT, MASK_BxT.astype(bool)), masked_mean(X_BxT, MASK_BxT), rtol=0
    )


def test_all_zero_mask_gives_zero_not_nan_with_finite_gradient():
    zeros = np.zeros_like(MASK_BxT)
    assert float(masked_count(zeros)) == 0.0
    assert float(masked_mean(X_BxT, zeros)) == 0.0
    assert float(masked_var(X_BxT, zeros)) == 0.0
    np.testing.assert_array_equal(masked_whiten(X_BxT, zeros), np.zeros_like(X_BxT))
    grad = jax.grad(lambda v: masked_mean(v, zeros))(jnp.asarray(X_BxT))
    np.testing.assert_array_equal(grad, np.zeros_like(X_BxT))
    assert float(safe_divide(jnp.float32(3.0), jnp.float32(0.0))) == 0.0


def test_whiten_is_global_zero_mean_unit_variance_on_valid_entries():
    w = masked_whiten(X_BxT, MASK_BxT)
    valid = np.asarray(w)[MASK_BxT == 1]
    np.testing.assert_allclose(valid.mean(), 0.0, atol=1e-6)
    np.testing.assert_allclose(valid.var(), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(np.asarray(w)[MASK_BxT == 0], 0.0)
    ref = (X_BxT - X_BxT[MASK_BxT == 1].mean()) / np.sqrt(X_BxT[MASK_BxT == 1].var() + 1e-8)
    np.testing.assert_allclose(valid, ref[MASK_BxT == 1], rtol=1e-5)


def test_whiten_without_mean_shift_keeps_the_mean():
    x = X_BxT + 5.0
    w = np.asarray(masked_whiten(x, MASK_BxT, shift_mean=False))[MASK_BxT == 1]
    np.testing.assert_allclose(w.mean(), x[MASK_BxT == 1].mean(), rtol=1e-5)
    np.testing.assert_allclose(w.std(), 1.0, rtol=1e-5)


def test_bf16_input_is_accumulated_in_float32():
    x = jnp.full((4096,), 1.0 + 2.0**-7, jnp.bfloat16)  # exact in bf16; 4096 * x is not
    total = masked_sum(x, jnp.ones((4096,), bool))
    assert total.dtype == jnp.float32
    assert float(total) == 4096 * (1.0 + 2.0**-7)


def test_shape_mismatch_names_the_arguments():
    with pytest.raises(ValueError, match=r"x\[4, 6\].*mask\[4, 5\]"):
        masked_mean(X_BxT, MASK_BxT[:, :5])
    with pytest.raises(ValueError, match="mask must be a bool or 0/1 numeric"):
        masked_sum(X_BxT, np.full(X_BxT.shape, 1j))


def test_combine_metrics_is_count_weighted_and_exact():
    parts = [
        {"loss": jnp.float32(1.0), "count": jnp.float32(1.0)},
        {"loss": jnp.float32(4.0), "count": jnp.float32(3.0)},
        {"loss": jnp.float32(0.0), "count": jnp.float32(0.0)},  # empty micro-batch adds nothing
    ]
    merged = combine_metrics(parts)
    # (1 * 1 + 4 * 3 + 0 * 0) / (1 + 3 + 0) = 13 / 4; a mean of means would give 5 / 3.
    assert float(merged["loss"]) == 3.25
    assert float(merged["count"]) == 4.0
    empty = combine_metrics([{"loss": jnp.float32(2.0), "count": jnp.float32(0.0)}])
    assert float(empty["loss"]) == 0.0


def test_combine_metrics_rejects_bad_input():
    with pytest.raises(ValueError, match="non-empty"):
        combine_metrics([])
    with pytest.raises(ValueError, match=r"metrics\[0\] has no 'count'"):
        combine_metrics([{"loss": 1.0}])
    with pytest.raises(ValueError, match=r"metrics\[1\] keys"):
        combine_metrics([{"loss": 1.0, "count": 1.0}, {"acc": 1.0, "count": 1.0}])
