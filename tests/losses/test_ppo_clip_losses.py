"""PPO clipped actor and critic losses: hand values, which tokens get gradient, padding, errors."""

import jax
import numpy as np
import pytest

from rlhf_jax.losses import ppo_policy_loss as _ppo_policy_loss
from rlhf_jax.losses import ppo_value_loss as _ppo_value_loss

# One compiled program per shape and setting instead of op-by-op dispatch.
ppo_policy_loss = jax.jit(_ppo_policy_loss, static_argnames=("clip_eps", "dual_clip"))
ppo_value_loss = jax.jit(_ppo_value_loss, static_argnames=("clip_eps",))

# Four valid tokens and one padding token (NaN on purpose), eps = 0.2:
#   t0: A = +1, ratio 1.5 -> clipped at 1.2: loss -1.2 (clipped, no gradient)
#   t1: A = -2, ratio 0.5 -> max(-(-2) * 0.5, -(-2) * 0.8) = 1.6 (clipped, no gradient)
#   t2: A = +1, ratio 0.5 -> max(-0.5, -0.8) = -0.5 (unclipped: pessimistic side)
#   t3: A = -1, ratio 1.0 -> 1.0
# mean = (-1.2 + 1.6 - 0.5 + 1.0) / 4 = 0.225
OLD = np.zeros((1, 5), np.float32)
LOGPS = np.log(np.array([[1.5, 0.5, 0.5, 1.0, 1.0]], np.float32))
ADV = np.array([[1.0, -2.0, 1.0, -1.0, np.nan]], np.float32)
MASK = np.array([[1, 1, 1, 1, 0]], np.float32)


def test_policy_loss_by_hand():
    loss, m = ppo_policy_loss(LOGPS, OLD, ADV, MASK, clip_eps=0.2)
    np.testing.assert_allclose(loss, 0.225, rtol=1e-5)
    assert float(m["clip_fraction"]) == 0.5
    assert float(m["count"]) == 4.0
    np.testing.assert_allclose(m["importance_ratio"], (1.5 + 0.5 + 0.5 + 1.0) / 4, rtol=1e-6)
    logr = np.log([1.5, 0.5, 0.5, 1.0])
    np.testing.assert_allclose(m["approx_kl"], np.mean(0.5 * logr**2), rtol=1e-5)


def test_policy_gradient_only_on_unclipped_tokens():
    grad = jax.grad(lambda lp: ppo_policy_loss(lp, OLD, ADV, MASK, clip_eps=0.2)[0])(LOGPS)
    # d/dlogp of -A * ratio = -A * ratio, / 4 valid tokens; clipped and padding tokens get 0.
    np.testing.assert_allclose(grad, [[0.0, 0.0, -0.5 / 4, 1.0 / 4, 0.0]], atol=1e-7)


def test_policy_loss_at_ratio_one_is_minus_mean_advantage():
    adv = np.array([[0.3, -1.1], [2.0, 0.0]], np.float32)
    loss, m = ppo_policy_loss(np.zeros((2, 2)), np.zeros((2, 2)), adv, np.ones((2, 2)),
                              clip_eps=0.2)
    np.testing.assert_allclose(loss, -adv.mean(), rtol=1e-6)
    assert float(m["clip_fraction"]) == 0.0 and float(m["approx_kl"]) == 0.0


def test_dual_clip_by_hand():
    # eps = 0.2, c = 3. t0: A = -2, ratio 5: max(10, 2.4) = 10 > -c A = 6 -> 6 (dual, no gradient)
    #                   t1: A = -1, ratio 2: max(2, 1.2) = 2 < 3 -> 2 (gradient -A * ratio = 2)
    #                   t2: A = +1, ratio 5: max(-5, -1.2) = -1.2 (ordinary clip; A > 0 untouched)
    # mean = (6 + 2 - 1.2) / 3; without the dual clip (10 + 2 - 1.2) / 3 = 3.6.
    logps = np.log(np.array([[5.0, 2.0, 5.0]], np.float32))
    old, adv, mask = np.zeros((1, 3), np.float32), np.array([[-2.0, -1.0, 1.0]], np.float32), \
        np.ones((1, 3), np.float32)
    f = lambda lp, c: ppo_policy_loss(lp, old, adv, mask, clip_eps=0.2, dual_clip=c)
    (loss, m), grad = jax.value_and_grad(lambda lp: f(lp, 3.0), has_aux=True)(logps)
    np.testing.assert_allclose(loss, 6.8 / 3, rtol=1e-5)
    np.testing.assert_allclose(m["dual_clip_fraction"], 1 / 3, rtol=1e-6)
    np.testing.assert_allclose(grad, [[0.0, 2.0 / 3, 0.0]], rtol=1e-5, atol=1e-7)
    plain, pm = f(logps, None)
    np.testing.assert_allclose(plain, 3.6, rtol=1e-5)
    assert float(pm["dual_clip_fraction"]) == 0.0
    with pytest.raises(ValueError, match="dual_clip must be > 1"):
        f(logps, 1.0)


def test_value_loss_by_hand():
    # eps = 0.5. t0: v=2, old=0, R=3: err 1, clipped v 0.5 -> err 6.25; 0.5 * max = 3.125 (clipped)
    #            t1: v=1, old=1, R=0: err 1, same clipped -> 0.5
    #            t2: v=-1, old=0, R=-1: err 0, clipped v -0.5 -> 0.25 -> 0.125 (clipped)
    v = np.array([[2.0, 1.0, -1.0, 9.0]], np.float32)
    old = np.array([[0.0, 1.0, 0.0, np.nan]], np.float32)
    ret = np.array([[3.0, 0.0, -1.0, np.nan]], np.float32)
    mask = np.array([[1, 1, 1, 0]], np.float32)
    (loss, m), grad = jax.value_and_grad(
        lambda v: ppo_value_loss(v, old, ret, mask, clip_eps=0.5), has_aux=True
    )(v)
    np.testing.assert_allclose(loss, (3.125 + 0.5 + 0.125) / 3, rtol=1e-6)
    np.testing.assert_allclose(m["clip_fraction"], 2 / 3, rtol=1e-6)
    np.testing.assert_allclose(m["squared_error"], 2 / 3, rtol=1e-6)
    # Gradient only through unclipped errors: t1: (v - R) / 3; t0, t2 clipped; t3 padding.
    np.testing.assert_allclose(grad, [[0.0, 1.0 / 3, 0.0, 0.0]], atol=1e-7)
    unclipped, _ = ppo_value_loss(v, old, ret, mask, clip_eps=None)
    np.testing.assert_allclose(unclipped, 0.5 * (1 + 1 + 0) / 3, rtol=1e-6)


def test_all_padding_gives_zero_loss_and_finite_gradient():
    f = lambda lp: ppo_policy_loss(lp, OLD, ADV, np.zeros_like(MASK), clip_eps=0.2)[0]
    loss, grad = jax.value_and_grad(f)(LOGPS)
    assert float(loss) == 0.0 and np.all(np.asarray(grad) == 0.0)


def test_bad_inputs_name_the_argument():
    with pytest.raises(ValueError, match=r"advantages_BxT\[1, 4\]"):
        ppo_policy_loss(LOGPS, OLD, ADV[:, :4], MASK, clip_eps=0.2)
    with pytest.raises(ValueError, match="clip_eps must be > 0"):
        ppo_policy_loss(LOGPS, OLD, ADV, MASK, clip_eps=0.0)
    with pytest.raises(ValueError, match="logps_BxT must have rank 2"):
        ppo_policy_loss(LOGPS[0], OLD[0], ADV[0], MASK[0], clip_eps=0.2)
    with pytest.raises(ValueError, match="clip_eps must be > 0"):
        ppo_value_loss(LOGPS, OLD, OLD, MASK, clip_eps=-1.0)
    with pytest.raises(ValueError, match="returns_BxT must have a floating dtype"):
        ppo_value_loss(LOGPS, OLD, np.zeros((1, 5), np.int32), MASK, clip_eps=0.2)
