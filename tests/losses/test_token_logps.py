"""token_logps / sequence_logps against a direct log_softmax, for every chunking of T."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlhf_jax.losses import sequence_logps, token_logps

# Compiled once per shape and setting instead of op-by-op dispatch (the error tests and the jaxpr
# test call the plain functions).
token_logps_jit = jax.jit(token_logps, static_argnames=("chunk_size",))
sequence_logps_jit = jax.jit(sequence_logps, static_argnames=("length_normalized", "chunk_size"))

B, T, V = 2, 7, 11
RNG = np.random.default_rng(1)
LOGITS_BxTxV = jnp.asarray(3.0 * RNG.normal(size=(B, T, V)), jnp.float32)
LABELS_BxT = jnp.asarray(RNG.integers(0, V, size=(B, T)), jnp.int32)
MASK_BxT = jnp.asarray([[0, 0, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 1, 1]], jnp.float32)


def reference_logps(logits, labels):
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    return jnp.take_along_axis(logp, labels[..., None], axis=-1)[..., 0]


@pytest.mark.parametrize("chunk_size", [1, 3, 7, 128])  # one chunk per token, tail, exact, > T
def test_matches_log_softmax_for_every_chunking(chunk_size):
    out = token_logps_jit(LOGITS_BxTxV, LABELS_BxT, MASK_BxT, chunk_size=chunk_size)
    ref = reference_logps(LOGITS_BxTxV, LABELS_BxT) * MASK_BxT
    assert out.shape == (B, T) and out.dtype == jnp.float32
    np.testing.assert_allclose(out, ref, rtol=1e-6, atol=1e-6)
    assert np.all(np.asarray(out)[np.asarray(MASK_BxT) == 0] == 0.0)


def test_gradient_matches_reference():
    weights = jnp.asarray(RNG.normal(size=(B, T)), jnp.float32)
    f = lambda lg: jnp.sum(weights * token_logps_jit(lg, LABELS_BxT, MASK_BxT, chunk_size=3))
    g = lambda lg: jnp.sum(weights * MASK_BxT * reference_logps(lg, LABELS_BxT))
    np.testing.assert_allclose(
        jax.jit(jax.grad(f))(LOGITS_BxTxV), jax.jit(jax.grad(g))(LOGITS_BxTxV), atol=1e-6
    )


def test_bf16_logits_are_upcast_and_masked_labels_may_be_out_of_range():
    labels = jnp.where(MASK_BxT == 1, LABELS_BxT, -100)  # -100 on padding, as HF collators do
    lg16 = LOGITS_BxTxV.astype(jnp.bfloat16)
    out = token_logps_jit(lg16, labels, MASK_BxT, chunk_size=4)
    assert out.dtype == jnp.float32
    ref = reference_logps(lg16, LABELS_BxT) * MASK_BxT  # bf16 values, fp32 math
    np.testing.assert_allclose(out, ref, rtol=1e-6, atol=1e-6)


def test_no_full_float32_copy_of_the_logits_outside_the_chunk_loop():
    lg16 = jnp.zeros((B, 8, V), jnp.bfloat16)
    jaxpr = jax.make_jaxpr(lambda lg: token_logps(lg, LABELS_BxT[:, :1].repeat(8, 1),
                                                  jnp.ones((B, 8)), chunk_size=2))(lg16)
    top_level = [v.aval for eqn in jaxpr.eqns for v in eqn.outvars]
    assert not any(a.shape == (B, 8, V) and a.dtype == jnp.float32 for a in top_level)
    assert any(eqn.primitive.name == "scan" for eqn in jaxpr.eqns)  # the chunk loop is there


def test_sequence_logps_sum_and_length_normalized():
    ref_BxT = reference_logps(LOGITS_BxTxV, LABELS_BxT) * MASK_BxT
    total = sequence_logps_jit(LOGITS_BxTxV, LABELS_BxT, MASK_BxT, chunk_size=3)
    np.testing.assert_allclose(total, ref_BxT.sum(-1), rtol=1e-6)
    mean = sequence_logps_jit(LOGITS_BxTxV, LABELS_BxT, MASK_BxT, length_normalized=True)
    np.testing.assert_allclose(mean, ref_BxT.sum(-1) / np.array([4.0, 7.0]), rtol=1e-6)


def test_empty_sequence_has_zero_logp_in_both_modes():
    mask = MASK_BxT.at[0].set(0.0)
    for normalized in (False, True):
        out = sequence_logps_jit(LOGITS_BxTxV, LABELS_BxT, mask, length_normalized=normalized)
        assert float(out[0]) == 0.0 and np.isfinite(float(out[1]))


def test_bad_inputs_name_the_argument():
    with pytest.raises(ValueError, match="logits_BxTxV must have rank 3"):
        token_logps(LOGITS_BxTxV[0], LABELS_BxT, MASK_BxT)
    with pytest.raises(ValueError, match=r"logits_BxTxV\[2, 7, 11\] and labels_BxT\[2, 6\]"):
        token_logps(LOGITS_BxTxV, LABELS_BxT[:, :6], MASK_BxT[:, :6])
    with pytest.raises(ValueError, match=r"labels_BxT\[2, 7\].*mask_BxT\[2, 6\]"):
        token_logps(LOGITS_BxTxV, LABELS_BxT, MASK_BxT[:, :6])
    with pytest.raises(ValueError, match="labels_BxT must be integer"):
        token_logps(LOGITS_BxTxV, LABELS_BxT.astype(jnp.float32), MASK_BxT)
    with pytest.raises(ValueError, match="logits_BxTxV must have a floating dtype"):
        token_logps(LABELS_BxT[..., None], LABELS_BxT, MASK_BxT)
    with pytest.raises(ValueError, match="chunk_size must be a positive int"):
        token_logps(LOGITS_BxTxV, LABELS_BxT, MASK_BxT, chunk_size=0)
