"""PPO-Lagrangian multiplier step and the combined advantage (safe-rlhf parameterization)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from rlhf_jax.losses import lagrange_loss, lagrange_update, lagrangian_advantages


def test_update_by_hand():
    # log_lambda = log 2, J_c = 1.5, d = 0.5: new = log 2 + 0.1 * (1.5 - 0.5) * 2 = log 2 + 0.2
    new = lagrange_update(jnp.float32(math.log(2.0)), jnp.float32(1.5), cost_limit=0.5, lr=0.1)
    np.testing.assert_allclose(new, math.log(2.0) + 0.2, rtol=1e-6)


def test_lambda_grows_when_violated_and_shrinks_when_satisfied():
    ll = jnp.float32(0.0)
    up = lagrange_update(ll, jnp.float32(1.0), cost_limit=0.0, lr=0.5)
    down = lagrange_update(ll, jnp.float32(-1.0), cost_limit=0.0, lr=0.5)
    assert float(up) > 0.0 > float(down)
    capped = lagrange_update(ll, jnp.float32(100.0), cost_limit=0.0, lr=1.0, max_lambda=3.0)
    np.testing.assert_allclose(capped, math.log(3.0), rtol=1e-6)


def test_update_is_one_sgd_step_on_lagrange_loss():
    ll, cost = jnp.float32(-0.3), jnp.float32(0.8)
    grad = jax.grad(lagrange_loss)(ll, cost, cost_limit=0.2)
    np.testing.assert_allclose(grad, -(0.8 - 0.2) * math.exp(-0.3), rtol=1e-6)
    opt = optax.sgd(0.05)
    updates, _ = opt.update(grad, opt.init(ll))
    np.testing.assert_allclose(
        lagrange_update(ll, cost, cost_limit=0.2, lr=0.05), optax.apply_updates(ll, updates),
        rtol=1e-6,
    )
    assert float(jax.grad(lambda c: lagrange_loss(ll, c, cost_limit=0.2))(cost)) == 0.0


def test_lagrangian_advantages():
    a_r = jnp.array([[1.0, -2.0]])
    a_c = jnp.array([[3.0, 0.5]])
    out = lagrangian_advantages(a_r, a_c, jnp.float32(0.5))
    np.testing.assert_allclose(out, [[(1.0 - 1.5) / 1.5, (-2.0 - 0.25) / 1.5]], rtol=1e-6)
    np.testing.assert_allclose(lagrangian_advantages(a_r, a_c, 0.0), a_r, rtol=0)


def test_bad_inputs_name_the_argument():
    with pytest.raises(ValueError, match="lr must be > 0"):
        lagrange_update(jnp.float32(0.0), jnp.float32(1.0), cost_limit=0.0, lr=0.0)
    with pytest.raises(ValueError, match="mean_episode_cost must have rank 0"):
        lagrange_update(jnp.float32(0.0), jnp.ones(3), cost_limit=0.0, lr=0.1)
    with pytest.raises(ValueError, match="max_lambda must be > 0"):
        lagrange_update(jnp.float32(0.0), jnp.float32(1.0), cost_limit=0.0, lr=0.1, max_lambda=0)
    with pytest.raises(ValueError, match=r"reward_advantages_BxT\[1, 2\].*cost_adv\w+\[2\]"):
        lagrangian_advantages(jnp.zeros((1, 2)), jnp.zeros(2), 1.0)
    with pytest.raises(ValueError, match="lam must be >= 0"):
        lagrangian_advantages(jnp.zeros(2), jnp.zeros(2), -1.0)
