"""Bradley-Terry reward-model loss and the safe-rlhf cost-model loss."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlhf_jax.losses import cost_loss, reward_loss


def log_sigmoid(x):
    return -math.log1p(math.exp(-x))


def test_bradley_terry_golden_values():
    # Pairs (2, 1) and (0, 3): losses -log sigmoid(1) and -log sigmoid(-3), mean of the two.
    loss, m = reward_loss(jnp.array([2.0, 0.0]), jnp.array([1.0, 3.0]))
    np.testing.assert_allclose(loss, -(log_sigmoid(1.0) + log_sigmoid(-3.0)) / 2, rtol=1e-6)
    assert float(m["accuracy"]) == 0.5
    np.testing.assert_allclose(m["margin"], -1.0, rtol=1e-6)
    np.testing.assert_allclose(m["chosen_score"], 1.0, rtol=1e-6)
    equal, _ = reward_loss(jnp.array([0.7]), jnp.array([0.7]))
    np.testing.assert_allclose(equal, math.log(2.0), rtol=1e-6)


def test_bradley_terry_gradient_and_padding():
    chosen, rejected = jnp.array([2.0, jnp.nan]), jnp.array([1.0, 5.0])
    f = lambda c: reward_loss(c, rejected, mask_B=jnp.array([1, 0]))[0]
    grad = jax.grad(f)(chosen)
    # d/dc -log sigmoid(c - r) = -sigmoid(r - c) = -sigmoid(-1), over 1 valid pair.
    np.testing.assert_allclose(grad[0], -1.0 / (1.0 + math.e), rtol=1e-6)
    assert float(grad[1]) == 0.0


def test_cost_model_golden_value_and_signs():
    # Pair 0: safer (cost -1, safe), unsafer (cost 2, unsafe): signs s = -1, +1.
    #   -log sig(2 - (-1)) - log sig(-1 * -1) - log sig(+1 * 2)
    # Pair 1: safer (cost 0.5, unsafe), unsafer (cost 0.2, unsafe): both s = +1, ranking wrong.
    #   -log sig(0.2 - 0.5) - log sig(0.5) - log sig(0.2)
    loss, m = cost_loss(
        jnp.array([-1.0, 0.5]), jnp.array([2.0, 0.2]), jnp.array([True, False]),
        jnp.array([0, 0]),
    )
    pair0 = -(log_sigmoid(3.0) + log_sigmoid(1.0) + log_sigmoid(2.0))
    pair1 = -(log_sigmoid(-0.3) + log_sigmoid(0.5) + log_sigmoid(0.2))
    np.testing.assert_allclose(loss, (pair0 + pair1) / 2, rtol=1e-6)
    assert float(m["accuracy"]) == 0.5
    assert float(m["sign_accuracy"]) == 1.0  # every cost already has the labelled sign


def test_cost_model_pushes_safe_costs_down_and_unsafe_up():
    # Equal costs, safer one safe, other unsafe: the step lowers the safe cost, raises the other.
    g_safer, g_unsafer = jax.grad(
        lambda s, u: cost_loss(s, u, jnp.array([1]), jnp.array([0]))[0], argnums=(0, 1)
    )(jnp.array([0.0]), jnp.array([0.0]))
    assert float(g_safer[0]) > 0.0 > float(g_unsafer[0])


def test_bad_inputs_name_the_argument():
    x = jnp.zeros(3)
    with pytest.raises(ValueError, match=r"chosen_scores_B\[3\].*rejected_scores_B\[2\]"):
        reward_loss(x, jnp.zeros(2))
    with pytest.raises(ValueError, match="rejected_scores_B must have a floating dtype"):
        reward_loss(x, jnp.zeros(3, jnp.int32))
    with pytest.raises(ValueError, match=r"unsafer_is_safe_B\[2\]"):
        cost_loss(x, x, jnp.ones(3), jnp.ones(2))
    with pytest.raises(ValueError, match="safer_costs_B must have rank 1"):
        cost_loss(jnp.zeros((3, 1)), x, jnp.ones(3), jnp.ones(3))
