"""RRHF loss against a direct transcription of Yuan et al. (2023), ties, padding, errors."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlhf_jax.losses import rrhf_loss as _rrhf_loss

# One compiled program per shape and setting instead of op-by-op dispatch.
rrhf_loss = jax.jit(_rrhf_loss, static_argnames=("rank_weight",))

RNG = np.random.default_rng(5)
B, K = 3, 4
SUMS = -RNG.uniform(1.0, 20.0, size=(B, K)).astype(np.float32)
COUNTS = RNG.integers(1, 10, size=(B, K)).astype(np.float32)
REWARDS = RNG.normal(size=(B, K)).astype(np.float32)


def reference_rrhf(sums, counts, rewards, rank_weight=1.0):
    losses = []
    for s, c, r in zip(sums, counts, rewards):
        p = s / c
        rank = sum(max(0.0, p[i] - p[j]) for i, j in itertools.permutations(range(len(p)), 2)
                   if r[i] < r[j])
        best = int(np.argmax(r))
        losses.append(rank_weight * rank - s[best] / c[best])
    return float(np.mean(losses))


def test_matches_reference_transcription():
    for w in (1.0, 0.5):
        loss, m = rrhf_loss(SUMS, COUNTS, REWARDS, rank_weight=w)
        np.testing.assert_allclose(loss, reference_rrhf(SUMS, COUNTS, REWARDS, w), rtol=1e-5)
    assert float(m["count"]) == B


def test_hand_example_with_a_tie():
    # p = (-1, -2, -3); rewards (0, 1, 1): y2 and y3 tie and are best. Pairs with r_i < r_j:
    # (y1 < y2): max(0, -1 - -2) = 1, (y1 < y3): max(0, -1 - -3) = 2; the tie y2 = y3 is no pair.
    # Best = first of the tied best = y2: L_ft = -(-4) / 2 = 2. Total 3 + 2 = 5.
    sums = np.array([[-1.0, -4.0, -3.0]], np.float32)
    counts = np.array([[1.0, 2.0, 1.0]], np.float32)
    loss, m = rrhf_loss(sums, counts, np.array([[0.0, 1.0, 1.0]], np.float32))
    np.testing.assert_allclose(loss, 5.0, rtol=1e-6)
    np.testing.assert_allclose(m["rank_loss"], 3.0, rtol=1e-6)
    np.testing.assert_allclose(m["sft_loss"], 2.0, rtol=1e-6)
    assert float(m["pair_accuracy"]) == 0.0


def test_correctly_ranked_candidates_have_no_rank_loss_and_are_permutation_invariant():
    p = np.sort(RNG.normal(size=(1, K)).astype(np.float32))
    rewards = np.arange(K, dtype=np.float32)[None]  # higher reward = higher score already
    _, m = rrhf_loss(p, np.ones_like(p), rewards)
    assert float(m["rank_loss"]) == 0.0 and float(m["pair_accuracy"]) == 1.0
    perm = RNG.permutation(K)
    a, _ = rrhf_loss(SUMS, COUNTS, REWARDS)
    b, _ = rrhf_loss(SUMS[:, perm], COUNTS[:, perm], REWARDS[:, perm])
    np.testing.assert_allclose(a, b, rtol=1e-6)


def test_padding_prompts_are_ignored_and_gradient_is_finite():
    sums = SUMS.copy()
    sums[2] = np.nan
    mask = np.array([1, 1, 0])
    (loss, m), g = jax.value_and_grad(
        lambda s: rrhf_loss(s, COUNTS, REWARDS, mask_B=mask), has_aux=True
    )(jnp.asarray(sums))
    np.testing.assert_allclose(loss, reference_rrhf(SUMS[:2], COUNTS[:2], REWARDS[:2]), rtol=1e-5)
    assert float(m["count"]) == 2.0
    assert np.all(np.isfinite(g)) and np.all(np.asarray(g)[2] == 0.0)


def test_bad_inputs_name_the_argument():
    with pytest.raises(ValueError, match=r"token_counts_BxK\[3, 3\]"):
        rrhf_loss(SUMS, COUNTS[:, :3], REWARDS)
    with pytest.raises(ValueError, match="rewards_BxK must have rank 2"):
        rrhf_loss(SUMS, COUNTS, REWARDS[0])
    with pytest.raises(ValueError, match=r"mask_B\[2\] and logp_sums_BxK\[3, 4\]"):
        rrhf_loss(SUMS, COUNTS, REWARDS, mask_B=np.ones(2))
    with pytest.raises(ValueError, match="rank_weight must be >= 0"):
        rrhf_loss(SUMS, COUNTS, REWARDS, rank_weight=-1.0)
