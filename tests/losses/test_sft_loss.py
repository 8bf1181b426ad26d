"""sft_loss and segment_logps: hand values, packed rows == unpacked rows, errors.

Packing (rlhf_jax.data.batching): several examples share a row, numbered by segment_ids 1, 2, ...,
with positions restarting per example and attention kept inside each segment. For the loss math,
"packed == unpacked" means: with per-token log-probs from a segment-respecting model and a label
mask that drops each segment's first token, the token-mean SFT loss and each example's sequence
log-prob are the same whether the examples sit in their own rows or share one.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlhf_jax.losses import segment_logps, sequence_logps, sft_loss, token_logps


def test_golden_value_and_empty_mask():
    # Valid log-probs -1, -2 (row 0) and -3 (row 1); the NaN is padding.
    # loss = -(-1 - 2 - 3) / 3 = 2 (a mean of row means would give (1.5 + 3) / 2 = 2.25).
    logps = jnp.array([[-1.0, -2.0, jnp.nan], [-3.0, -9.0, -9.0]])
    mask = jnp.array([[1, 1, 0], [1, 0, 0]])
    (loss, m), g = jax.value_and_grad(lambda lp: sft_loss(lp, mask), has_aux=True)(logps)
    assert float(loss) == 2.0 and float(m["loss"]) == 2.0 and float(m["count"]) == 3.0
    # d loss / d logp = -1 / 3 on valid tokens (raising a token's log-prob lowers the loss), else 0.
    np.testing.assert_allclose(g, -mask / 3.0, rtol=1e-6)
    loss0, m0 = sft_loss(logps, jnp.zeros((2, 3)))
    assert float(loss0) == 0.0 and float(m0["count"]) == 0.0


V, D = 7, 4
RNG = np.random.default_rng(11)
EMB = jnp.asarray(RNG.normal(size=(V, D)), jnp.float32)
POS = jnp.asarray(RNG.normal(size=(16, D)), jnp.float32)
OUT = jnp.asarray(RNG.normal(size=(D, V)), jnp.float32)


def toy_logits(ids_BxL, positions_BxL, segment_ids_BxL):
    """A causal 'model' whose position t sees tokens s <= t of its own segment only."""
    seg = segment_ids_BxL
    t = jnp.arange(ids_BxL.shape[1])
    see_BxLxL = (seg[:, :, None] == seg[:, None, :]) & (t[None, :, None] >= t[None, None, :])
    h = jnp.einsum("bts,bsd->btd", see_BxLxL.astype(jnp.float32), EMB[ids_BxL]) + POS[positions_BxL]
    return h @ OUT


def shifted(ids, loss_mask, positions, seg):
    """Logits/labels/label mask with the usual shift; a label must share its predictor's segment."""
    logits = toy_logits(ids, positions, seg)[:, :-1]
    labels = ids[:, 1:]
    mask = loss_mask[:, 1:] * (seg[:, 1:] == seg[:, :-1]) * (seg[:, 1:] > 0)
    return logits, labels, mask, seg[:, 1:]


# Example A: 6 tokens (2 prompt + 4 response); example B: 4 tokens, all marked as targets, so its
# first token would be "predicted" from example A's last token if the mask ignored segments.
A_IDS, A_LOSS = np.array([1, 2, 3, 4, 5, 6]), np.array([0, 0, 1, 1, 1, 1])
B_IDS, B_LOSS = np.array([6, 0, 2, 3]), np.array([1, 1, 1, 1])
L = 10


def unpacked_rows():
    def row(ids, loss):
        n = len(ids)
        pad = lambda x: np.pad(x, (0, L - n))
        return pad(ids), pad(loss), pad(np.arange(n)), pad(np.ones(n, np.int32))
    return [jnp.asarray(np.stack(x)) for x in zip(row(A_IDS, A_LOSS), row(B_IDS, B_LOSS))]


def packed_row():
    ids = np.concatenate([A_IDS, B_IDS])
    loss = np.concatenate([A_LOSS, B_LOSS])
    pos = np.concatenate([np.arange(len(A_IDS)), np.arange(len(B_IDS))])
    seg = np.concatenate([np.full(len(A_IDS), 1), np.full(len(B_IDS), 2)])
    return [jnp.asarray(x[None]) for x in (ids, loss, pos, seg)]


@jax.jit
def unpacked_and_packed(unpacked, packed):
    """Everything the comparison needs, in one compiled program."""
    lg_u, lab_u, m_u, _ = shifted(*unpacked)
    lg_p, lab_p, m_p, seg_p = shifted(*packed)
    logps_u, logps_p = token_logps(lg_u, lab_u, m_u), token_logps(lg_p, lab_p, m_p)
    out = {"m_u": m_u, "logps_u": logps_u, "sft_u": sft_loss(logps_u, m_u),
           "sft_p": sft_loss(logps_p, m_p)}
    for normalized in (False, True):
        out[f"seq_u{normalized}"] = sequence_logps(lg_u, lab_u, m_u, length_normalized=normalized)
        out[f"seg_p{normalized}"] = segment_logps(logps_p, m_p, seg_p, num_segments=3,
                                                  length_normalized=normalized)
    # The same packed row with a segment-blind label mask (B's first token kept as a target).
    ids, loss_mask, pos, seg = packed
    blind = loss_mask[:, 1:]
    out["sft_p_blind"] = sft_loss(token_logps(lg_p, ids[:, 1:], blind), blind)
    return out


def test_packed_row_equals_unpacked_rows():
    out = unpacked_and_packed(unpacked_rows(), packed_row())
    (loss_u, met_u), (loss_p, met_p) = out["sft_u"], out["sft_p"]
    assert float(met_u["count"]) == float(met_p["count"]) == 4 + 3
    np.testing.assert_allclose(loss_p, loss_u, rtol=1e-6)
    # Rows of different lengths: a mean of per-row means would not survive packing.
    row_means = -np.sum(out["logps_u"], axis=1) / np.sum(out["m_u"], axis=1)
    assert abs(float(np.mean(row_means)) - float(loss_u)) > 1e-3

    for normalized in (False, True):
        per_seq, per_seg = out[f"seq_u{normalized}"], out[f"seg_p{normalized}"]
        assert per_seg.shape == (1, 3)
        np.testing.assert_allclose(per_seg[0, :2], per_seq, rtol=1e-6)
        assert float(per_seg[0, 2]) == 0.0  # no third segment in the row


def test_segment_blind_label_mask_would_differ():
    # The check above can fail: keep example B's first token as a target in the packed row and
    # the packed loss gains a cross-segment token the unpacked rows never see.
    out = unpacked_and_packed(unpacked_rows(), packed_row())
    (blind_loss, blind), (loss_u, _) = out["sft_p_blind"], out["sft_u"]
    assert float(blind["count"]) == 8.0
    assert abs(float(blind_loss) - float(loss_u)) > 1e-3


def test_bad_inputs_name_the_argument():
    x = jnp.zeros((2, 3))
    with pytest.raises(ValueError, match=r"logps_BxT\[2, 3\].*mask_BxT\[2, 4\]"):
        sft_loss(x, jnp.ones((2, 4)))
    with pytest.raises(ValueError, match="logps_BxT must have rank 2"):
        sft_loss(x[0], jnp.ones(3))
    with pytest.raises(ValueError, match="logps_BxT must have a floating dtype"):
        sft_loss(jnp.zeros((2, 3), jnp.int32), jnp.ones((2, 3)))
    with pytest.raises(ValueError, match=r"segment_ids_BxT\[2, 2\]"):
        segment_logps(x, jnp.ones((2, 3)), jnp.ones((2, 2), jnp.int32), num_segments=2)
    with pytest.raises(ValueError, match="segment_ids_BxT must be integer"):
        segment_logps(x, jnp.ones((2, 3)), jnp.ones((2, 3)), num_segments=2)
    with pytest.raises(ValueError, match="num_segments must be a positive int"):
        segment_logps(x, jnp.ones((2, 3)), jnp.ones((2, 3), jnp.int32), num_segments=0)
