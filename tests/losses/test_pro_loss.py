"""PRO loss against a sorted transcription of Song et al. (2023), with and without temperature."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlhf_jax.losses import pro_loss as _pro_loss

# One compiled program per shape and setting instead of op-by-op dispatch.
pro_loss = jax.jit(_pro_loss, static_argnames=("sft_weight", "reward_temperature"))

RNG = np.random.default_rng(6)
B, K = 3, 4
SUMS = -RNG.uniform(1.0, 20.0, size=(B, K)).astype(np.float32)
COUNTS = RNG.integers(1, 10, size=(B, K)).astype(np.float32)
REWARDS = RNG.normal(size=(B, K)).astype(np.float32)  # distinct with probability 1


def reference_pro(sums, counts, rewards, sft_weight, temperature):
    """The paper's formula: sort by reward, steps k = 1 .. n-1 over the suffix y^k .. y^n."""
    losses = []
    for s, c, r in zip(sums, counts, rewards):
        order = np.argsort(-r)
        p, R = (s / c)[order].astype(np.float64), r[order].astype(np.float64)
        total = 0.0
        for k in range(len(p) - 1):
            inv_t = R[k] - R[k + 1:] if temperature else np.ones(len(p) - k - 1)
            self_inv_t = inv_t.max()
            logits = np.concatenate([[p[k] * self_inv_t], p[k + 1:] * inv_t])
            total += -(logits[0] - np.log(np.sum(np.exp(logits))))
        losses.append(total + sft_weight * (-(s / c)[order[0]]))
    return float(np.mean(losses))


@pytest.mark.parametrize("temperature", [True, False])
def test_matches_sorted_reference(temperature):
    loss, m = pro_loss(SUMS, COUNTS, REWARDS, sft_weight=0.3, reward_temperature=temperature)
    np.testing.assert_allclose(
        loss, reference_pro(SUMS, COUNTS, REWARDS, 0.3, temperature), rtol=1e-5
    )
    assert float(m["count"]) == B


def test_two_candidates_without_temperature_is_dpo_like_softmax():
    # K = 2, T = 1: -log(e^{p1} / (e^{p1} + e^{p2})) = log(1 + e^{p2 - p1}). p = (-1, -3).
    loss, m = pro_loss(np.array([[-2.0, -3.0]], np.float32), np.array([[2.0, 1.0]], np.float32),
                       np.array([[1.0, 0.0]], np.float32), sft_weight=0.0,
                       reward_temperature=False)
    np.testing.assert_allclose(loss, math.log1p(math.exp(-2.0)), rtol=1e-6)
    assert float(m["pair_accuracy"]) == 1.0


def test_ties_are_not_ranked_and_order_among_ties_does_not_matter():
    # Rewards (2, 1, 1): only the step of y1 exists, against both tied candidates:
    #   -log(e^{p1} / (e^{p1} + e^{p2} + e^{p3})) without temperature; sft = -p1 (counts 1).
    p = np.array([[-1.0, -2.0, -0.5]], np.float32)
    ones = np.ones_like(p)
    rewards = np.array([[2.0, 1.0, 1.0]], np.float32)
    loss, _ = pro_loss(p, ones, rewards, sft_weight=0.1, reward_temperature=False)
    expected = -(-1.0 - math.log(math.exp(-1.0) + math.exp(-2.0) + math.exp(-0.5))) + 0.1 * 1.0
    np.testing.assert_allclose(loss, expected, rtol=1e-6)
    swapped, _ = pro_loss(p[:, [0, 2, 1]], ones, rewards, sft_weight=0.1, reward_temperature=False)
    np.testing.assert_allclose(swapped, loss, rtol=1e-6)
    all_tied, m = pro_loss(p, ones, np.zeros_like(p), sft_weight=0.0)
    assert float(all_tied) == 0.0 and float(m["ranking_loss"]) == 0.0


def test_permutation_invariance_and_padding():
    perm = RNG.permutation(K)
    a, _ = pro_loss(SUMS, COUNTS, REWARDS, sft_weight=0.2)
    b, _ = pro_loss(SUMS[:, perm], COUNTS[:, perm], REWARDS[:, perm], sft_weight=0.2)
    np.testing.assert_allclose(a, b, rtol=1e-6)
    sums = SUMS.copy()
    sums[0] = np.nan
    (loss, m), g = jax.value_and_grad(
        lambda s: pro_loss(s, COUNTS, REWARDS, sft_weight=0.2, mask_B=np.array([0, 1, 1])),
        has_aux=True,
    )(jnp.asarray(sums))
    np.testing.assert_allclose(
        loss, reference_pro(SUMS[1:], COUNTS[1:], REWARDS[1:], 0.2, True), rtol=1e-5
    )
    assert float(m["count"]) == 2.0 and np.all(np.isfinite(g)) and np.all(np.asarray(g)[0] == 0)


def test_bad_inputs_name_the_argument():
    with pytest.raises(ValueError, match="sft_weight must be >= 0"):
        pro_loss(SUMS, COUNTS, REWARDS, sft_weight=-0.1)
    with pytest.raises(ValueError, match=r"rewards_BxK\[3, 2\]"):
        pro_loss(SUMS, COUNTS, REWARDS[:, :2], sft_weight=0.1)
    with pytest.raises(ValueError, match="logp_sums_BxK must have a floating dtype"):
        pro_loss(SUMS.astype(np.int32), COUNTS, REWARDS, sft_weight=0.1)
