"""KL-shaped PPO rewards and masked GAE against plain-Python references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlhf_jax.losses import gae_advantages as _gae_advantages
from rlhf_jax.losses import kl_penalized_rewards as _kl_penalized_rewards
from rlhf_jax.losses import last_token_mask

# One compiled program per shape and setting instead of op-by-op dispatch.
gae_advantages = jax.jit(_gae_advantages, static_argnames=("gamma", "lam"))
kl_penalized_rewards = jax.jit(_kl_penalized_rewards, static_argnames=("kl_coef", "reward_clip"))

# Right padding, left padding, a gap in the middle, a single token, an empty row.
MASK_BxT = np.array(
    [
        [1, 1, 1, 1, 0, 0],
        [0, 0, 1, 1, 1, 1],
        [1, 1, 0, 1, 0, 1],
        [0, 0, 0, 1, 0, 0],
        [0, 0, 0, 0, 0, 0],
    ],
    np.float32,
)
RNG = np.random.default_rng(2)
REWARDS_BxT = RNG.normal(size=MASK_BxT.shape).astype(np.float32)
VALUES_BxT = RNG.normal(size=MASK_BxT.shape).astype(np.float32)


def reference_gae(rewards, values, mask, gamma, lam):
    """Schulman et al. 2016 eq. 16 over each row's valid positions, V after the last one = 0."""
    adv = np.zeros_like(rewards, np.float64)
    for b in range(rewards.shape[0]):
        idx = np.flatnonzero(mask[b])
        next_value, next_adv = 0.0, 0.0
        for t in idx[::-1]:
            delta = rewards[b, t] + gamma * next_value - values[b, t]
            next_adv = delta + gamma * lam * next_adv
            next_value = values[b, t]
            adv[b, t] = next_adv
    return adv, (adv + values) * mask


@pytest.mark.parametrize("gamma,lam", [(1.0, 1.0), (0.9, 0.95), (0.5, 0.0)])
def test_gae_matches_reference_on_padded_and_gapped_rows(gamma, lam):
    adv, ret = gae_advantages(REWARDS_BxT, VALUES_BxT, MASK_BxT, gamma=gamma, lam=lam)
    ref_adv, ref_ret = reference_gae(REWARDS_BxT, VALUES_BxT, MASK_BxT, gamma, lam)
    np.testing.assert_allclose(adv, ref_adv, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ret, ref_ret, rtol=1e-5, atol=1e-6)
    assert np.all(np.asarray(adv)[MASK_BxT == 0] == 0.0)


def test_two_step_gae_by_hand_and_padding_never_leaks():
    # r = (1, 2), V = (0.5, 1.0), gamma = 0.9, lam = 0.8, V after the last token = 0:
    #   delta_1 = 2 + 0.9 * 0 - 1.0 = 1.0                 A_1 = 1.0
    #   delta_0 = 1 + 0.9 * 1.0 - 0.5 = 1.4               A_0 = 1.4 + 0.9 * 0.8 * 1.0 = 2.12
    #   returns R = A + V = (2.62, 2.0)
    # Row 1 is the same episode left-padded and followed by padding holding NaN / inf: nothing of
    # it may reach the valid positions, and padding outputs are exactly 0.
    nan, inf = np.nan, np.inf
    r = np.array([[1.0, 2.0, 0.0], [nan, 1.0, 2.0]], np.float32)
    v = np.array([[0.5, 1.0, 0.0], [inf, 0.5, 1.0]], np.float32)
    mask = np.array([[1, 1, 0], [0, 1, 1]], np.float32)
    r[0, 2], v[0, 2] = inf, nan
    adv, ret = gae_advantages(r, v, mask, gamma=0.9, lam=0.8)
    np.testing.assert_allclose(adv, [[2.12, 1.0, 0.0], [0.0, 2.12, 1.0]], rtol=1e-6)
    np.testing.assert_allclose(ret, [[2.62, 2.0, 0.0], [0.0, 2.62, 2.0]], rtol=1e-6)


def test_gamma_lambda_one_is_reward_to_go_minus_value():
    # The paper's setting: A_t = sum_{s >= t} r_s - V_t (row 0: 4 valid tokens).
    r = np.array([[0.0, -0.1, -0.2, 5.0, 9.0, 9.0]], np.float32)
    v = np.array([[1.0, 2.0, 3.0, 4.0, 7.0, 7.0]], np.float32)
    adv, ret = gae_advantages(r, v, MASK_BxT[:1], gamma=1.0, lam=1.0)
    np.testing.assert_allclose(adv[0, :4], [4.7 - 1.0, 4.7 - 2.0, 4.8 - 3.0, 5.0 - 4.0], rtol=1e-6)
    np.testing.assert_allclose(ret[0, :4], [4.7, 4.7, 4.8, 5.0], rtol=1e-6)


def test_last_token_mask_handles_left_padding_gaps_and_empty_rows():
    last = np.asarray(last_token_mask(MASK_BxT))
    assert [list(np.flatnonzero(row)) for row in last] == [[3], [5], [5], [3], []]


def test_kl_penalized_rewards_by_hand():
    old = np.log(np.array([[0.5, 0.5, 0.2], [0.9, 0.1, 0.4]], np.float32))
    ref = np.log(np.array([[0.25, 0.5, 0.4], [0.9, 0.9, 0.9]], np.float32))
    mask = np.array([[1, 1, 1], [1, 1, 0]], np.float32)
    rewards = kl_penalized_rewards(
        np.array([30.0, -3.0], np.float32), old, ref, mask, kl_coef=0.1, reward_clip=20.0
    )
    kl = np.log(np.array([[0.5 / 0.25, 1.0, 0.5], [1.0, 0.1 / 0.9, 1.0]]))  # [1, 2] is padding
    expected = -0.1 * kl * mask
    expected[0, 2] += 20.0  # score 30 clipped to 20, on the last valid token
    expected[1, 1] += -3.0
    np.testing.assert_allclose(rewards, expected, rtol=1e-5, atol=1e-6)


def test_kl_rewards_ignore_padding_values_and_empty_rows_get_nothing():
    old = np.full((2, 3), np.nan, np.float32)
    old[0, 0] = -1.0
    ref = np.full((2, 3), -np.inf, np.float32)
    ref[0, 0] = -1.5
    mask = np.array([[1, 0, 0], [0, 0, 0]], np.float32)
    rewards = kl_penalized_rewards(
        np.array([1.0, 7.0], np.float32), old, ref, mask, kl_coef=0.2, reward_clip=None
    )
    np.testing.assert_allclose(rewards, [[1.0 - 0.2 * 0.5, 0, 0], [0, 0, 0]], rtol=1e-6)


def test_bad_inputs_name_the_argument():
    with pytest.raises(ValueError, match=r"rewards_BxT\[5, 6\].*values_BxT\[5, 5\]"):
        gae_advantages(REWARDS_BxT, VALUES_BxT[:, :5], MASK_BxT, gamma=1.0, lam=1.0)
    with pytest.raises(ValueError, match="gamma must be in"):
        gae_advantages(REWARDS_BxT, VALUES_BxT, MASK_BxT, gamma=1.5, lam=1.0)
    with pytest.raises(ValueError, match="lam must be in"):
        gae_advantages(REWARDS_BxT, VALUES_BxT, MASK_BxT, gamma=1.0, lam=-0.1)
    with pytest.raises(ValueError, match=r"scores_B\[4\] and mask_BxT\[5, 6\]"):
        kl_penalized_rewards(
            jnp.zeros(4), VALUES_BxT, VALUES_BxT, MASK_BxT, kl_coef=0.1, reward_clip=None
        )
    with pytest.raises(ValueError, match="kl_coef must be >= 0"):
        kl_penalized_rewards(
            jnp.zeros(5), VALUES_BxT, VALUES_BxT, MASK_BxT, kl_coef=-1.0, reward_clip=None
        )
    with pytest.raises(ValueError, match="reward_clip must be > 0"):
        kl_penalized_rewards(
            jnp.zeros(5), VALUES_BxT, VALUES_BxT, MASK_BxT, kl_coef=0.1, reward_clip=0.0
        )
