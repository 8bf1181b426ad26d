"""Gradient accumulation invariance: 8 micro-batches of 1 == 1 batch of 8, via sums and counts."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlhf_jax.losses import (
    combine_metrics,
    dpo_loss,
    masked_mean,
    ppo_policy_loss,
    ppo_value_loss,
    rrhf_loss,
    sft_loss,
)

B, T = 8, 6
RNG = np.random.default_rng(7)
LENGTHS = np.array([1, 6, 2, 5, 3, 6, 0, 4])  # ragged, one empty row
MASK_BxT = (np.arange(T)[None] < LENGTHS[:, None]).astype(np.float32)
LOGPS = jnp.asarray(-RNG.uniform(0.1, 3.0, size=(B, T)), jnp.float32)
OLD = LOGPS + jnp.asarray(0.3 * RNG.normal(size=(B, T)), jnp.float32)
ADV = jnp.asarray(RNG.normal(size=(B, T)) + 0.5 * np.arange(B)[:, None], jnp.float32)

VALUES = jnp.asarray(RNG.normal(size=(B, T)), jnp.float32)
RETURNS = VALUES + jnp.asarray(0.5 * RNG.normal(size=(B, T)), jnp.float32)

# Every token-mean loss as f(x, mask, *row_constants): x is the differentiated [B, T] input, the
# row constants are [B, T] arrays sliced with the micro-batch. One compiled program per shape.
TOKEN_MEAN_LOSSES = {
    "ppo_policy_loss": (
        lambda lp, m, old, adv: ppo_policy_loss(lp, old, adv, m, clip_eps=0.2),
        LOGPS, (OLD, ADV),
    ),
    "ppo_value_loss": (  # values moved off the old values so that some tokens clip
        lambda v, m, old, ret: ppo_value_loss(v, old, ret, m, clip_eps=0.2),
        VALUES + 0.3 * ADV, (VALUES, RETURNS),
    ),
    "sft_loss": (lambda lp, m: sft_loss(lp, m), LOGPS, ()),
}


def micro_batches(*arrays):
    return [tuple(a[i : i + 1] for a in arrays) for i in range(B)]


@pytest.mark.parametrize("name", sorted(TOKEN_MEAN_LOSSES))
def test_token_mean_losses_1x8_equal_8x1(name):
    fn, x, consts = TOKEN_MEAN_LOSSES[name]
    f = jax.jit(fn)
    full_loss, full_metrics = f(x, MASK_BxT, *consts)
    parts = [f(*mb)[1] for mb in micro_batches(x, MASK_BxT, *consts)]
    merged = combine_metrics(parts)
    for key in full_metrics:
        np.testing.assert_allclose(merged[key], full_metrics[key], rtol=1e-5, atol=1e-7)
    assert float(merged["count"]) == LENGTHS.sum()
    # The bug this guards against: a mean of per-micro-batch means is a different number.
    mean_of_means = np.mean([float(m["loss"]) for m, n in zip(parts, LENGTHS) if n])
    assert abs(mean_of_means - float(full_loss)) > 1e-2

    # Gradient accumulation: sum the gradients of (loss * count), divide once by the total count.
    summed = jax.jit(jax.grad(lambda *a: (lambda l, mt: l * mt["count"])(*fn(*a))))
    full_grad = jax.jit(jax.grad(lambda *a: fn(*a)[0]))(x, MASK_BxT, *consts)
    accumulated = jnp.concatenate(
        [summed(*mb) for mb in micro_batches(x, MASK_BxT, *consts)], axis=0
    ) / LENGTHS.sum()
    np.testing.assert_allclose(accumulated, full_grad, rtol=1e-5, atol=1e-8)


def test_masked_mean_of_rows_1x8_equals_8x1_with_sum_and_count():
    full = masked_mean(ADV, MASK_BxT)
    total = sum(float(masked_mean(a, m) * m.sum()) for a, m in micro_batches(ADV, MASK_BxT))
    np.testing.assert_allclose(total / LENGTHS.sum(), full, rtol=1e-5)


def test_sequence_level_losses_1x8_equals_8x1_with_padding_pairs():
    pc, pr, rc, rr = (jnp.asarray(-RNG.uniform(1, 9, size=B), jnp.float32) for _ in range(4))
    valid = (LENGTHS > 0).astype(np.float32)  # row 6 is a padding pair
    dpo = jax.jit(functools.partial(dpo_loss, beta=0.1))
    _, full = dpo(pc, pr, rc, rr, mask_B=valid)
    merged = combine_metrics(
        [dpo(*mb[:4], mask_B=mb[4])[1] for mb in micro_batches(pc, pr, rc, rr, valid)]
    )
    for key in full:
        np.testing.assert_allclose(merged[key], full[key], rtol=1e-5, atol=1e-7)
    assert float(merged["count"]) == 7.0

    sums = jnp.asarray(-RNG.uniform(1, 9, size=(B, 3)), jnp.float32)
    counts = jnp.asarray(RNG.integers(1, 5, size=(B, 3)), jnp.float32)
    rewards = jnp.asarray(RNG.normal(size=(B, 3)), jnp.float32)
    rrhf = jax.jit(rrhf_loss)
    _, full = rrhf(sums, counts, rewards, mask_B=valid)
    merged = combine_metrics(
        [rrhf(s, c, r, mask_B=v)[1] for s, c, r, v in micro_batches(sums, counts, rewards, valid)]
    )
    for key in full:
        np.testing.assert_allclose(merged[key], full[key], rtol=1e-5, atol=1e-7)
