"""DPO loss: hand-derived values, log 2 at the reference, gradients, masking, errors."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlhf_jax.losses import DPO_VARIANTS, check_dpo_variant, dpo_loss


def test_golden_value_derived_by_hand():
    # h = beta * ((pc - rc) - (pr - rr)) = 0.1 * ((-1 + 1.5) - (-2 + 1.5)) = 0.1 * 1.0 = 0.1
    # loss = -log sigmoid(0.1) = log(1 + exp(-0.1)) = 0.6443966600735709
    loss, m = dpo_loss(
        jnp.array([-1.0]), jnp.array([-2.0]), jnp.array([-1.5]), jnp.array([-1.5]), beta=0.1
    )
    np.testing.assert_allclose(loss, 0.6443966600735709, rtol=1e-6)
    np.testing.assert_allclose(m["chosen_reward"], 0.05, rtol=1e-6)
    np.testing.assert_allclose(m["rejected_reward"], -0.05, rtol=1e-6)
    np.testing.assert_allclose(m["margin"], 0.1, rtol=1e-6)
    assert float(m["accuracy"]) == 1.0 and float(m["count"]) == 1.0


@pytest.mark.parametrize("beta", [0.01, 0.1, 1.0, 7.0])
def test_policy_equal_to_reference_gives_log_2_for_every_beta(beta):
    # h = 0, so DPO = -log sigmoid(0) = log 2 and IPO = (0 - 1 / (2 beta))^2 = 1 / (4 beta^2).
    logps = jnp.array([-3.0, -7.5, -0.2])
    other = jnp.array([-1.0, -9.0, -4.0])
    loss, m = dpo_loss(logps, other, logps, other, beta=beta)
    np.testing.assert_allclose(loss, math.log(2.0), rtol=1e-6)
    assert float(m["accuracy"]) == 0.0
    ipo, _ = dpo_loss(logps, other, logps, other, beta=beta, variant="ipo")
    np.testing.assert_allclose(ipo, 1.0 / (4.0 * beta**2), rtol=1e-6)


def test_ipo_golden_value_derived_by_hand():
    # Same pair as above: h = (-1 + 1.5) - (-2 + 1.5) = 1.0. IPO with tau = beta = 0.1:
    # loss = (h - 1 / (2 * 0.1))^2 = (1 - 5)^2 = 16. Gradient wrt pc: 2 (h - 5) = -8 (raise pc).
    # At h = 1 / (2 beta) = 5 the loss and its gradient are 0: IPO stops at a finite margin.
    args = (jnp.array([-1.0]), jnp.array([-2.0]), jnp.array([-1.5]), jnp.array([-1.5]))
    (loss, m), g = jax.value_and_grad(
        lambda pc: dpo_loss(pc, *args[1:], beta=0.1, variant="ipo"), has_aux=True
    )(args[0])
    np.testing.assert_allclose(loss, 16.0, rtol=1e-6)
    np.testing.assert_allclose(g, [-8.0], rtol=1e-6)
    np.testing.assert_allclose(m["margin"], 0.1, rtol=1e-6)  # beta * h, as for DPO
    at_target, _ = dpo_loss(jnp.array([3.0]), *args[1:], beta=0.1, variant="ipo")  # h = 5
    np.testing.assert_allclose(at_target, 0.0, atol=1e-10)


def test_label_smoothing_golden_value_derived_by_hand():
    # Conservative DPO, eps = 0.1, beta h = 0.1 (same pair):
    # loss = 0.9 * softplus(-0.1) + 0.1 * softplus(0.1); softplus(x) = softplus(-x) + x, so
    # loss = softplus(-0.1) + 0.1 * 0.1 = 0.6443966600735709 + 0.01 = 0.6543966600735709.
    args = (jnp.array([-1.0]), jnp.array([-2.0]), jnp.array([-1.5]), jnp.array([-1.5]))
    loss, _ = dpo_loss(*args, beta=0.1, label_smoothing=0.1)
    np.testing.assert_allclose(loss, 0.6543966600735709, rtol=1e-6)
    # The gradient wrt the margin x = beta h is -(1 - eps) sigmoid(-x) + eps sigmoid(x): it turns
    # positive at a large margin (x = 5: -0.9 * 0.0067 + 0.1 * 0.9933 > 0), so cDPO, unlike DPO,
    # stops pushing the margin up once it is large.
    big = (jnp.array([49.0]), *args[1:])  # beta h = 0.1 * (49 + 1.5 - (-2 + 1.5)) = 5.1
    g_pc = jax.grad(lambda pc: dpo_loss(pc, *big[1:], beta=0.1, label_smoothing=0.1)[0])(big[0])
    assert float(g_pc[0]) > 0.0
    g_plain = jax.grad(lambda pc: dpo_loss(pc, *big[1:], beta=0.1)[0])(big[0])
    assert float(g_plain[0]) < 0.0


def test_variants_are_a_registry_with_a_clear_error():
    assert set(DPO_VARIANTS) == {"sigmoid", "ipo"}
    assert check_dpo_variant("ipo") == "ipo"
    x = jnp.zeros(2)
    with pytest.raises(ValueError, match="variant 'hinge'; valid variants: ipo, sigmoid"):
        dpo_loss(x, x, x, x, beta=0.1, variant="hinge")
    with pytest.raises(ValueError, match="unknown DPO variant"):
        check_dpo_variant("IPO")
    with pytest.raises(ValueError, match="variant 'ipo' takes no label_smoothing"):
        dpo_loss(x, x, x, x, beta=0.1, variant="ipo", label_smoothing=0.1)
    with pytest.raises(ValueError, match=r"label_smoothing must be in \[0, 0.5\)"):
        dpo_loss(x, x, x, x, beta=0.1, label_smoothing=0.5)


def test_batch_mean_and_closed_form():
    # Per pair: loss = log(1 + exp(-h)), h = beta * margin of log-ratios.
    pc, pr = jnp.array([-1.0, -4.0]), jnp.array([-3.0, -1.0])
    rc, rr = jnp.array([-2.0, -2.0]), jnp.array([-2.0, -2.0])
    h = 0.5 * np.array([(-1 + 2) - (-3 + 2), (-4 + 2) - (-1 + 2)])  # [1.0, -1.5]
    loss, m = dpo_loss(pc, pr, rc, rr, beta=0.5)
    np.testing.assert_allclose(loss, np.mean(np.log1p(np.exp(-h))), rtol=1e-6)
    assert float(m["accuracy"]) == 0.5


def test_gradient_flows_to_policy_only():
    # d loss / d pc = -beta * sigmoid(-h) / B, d loss / d pr = +beta * sigmoid(-h) / B.
    args = [jnp.array([-1.0, -2.0]), jnp.array([-2.0, -1.0]), jnp.array([-1.2, -1.0]),
            jnp.array([-1.7, -1.3])]
    grads = jax.grad(lambda *a: dpo_loss(*a, beta=0.1)[0], argnums=(0, 1, 2, 3))(*args)
    h = 0.1 * ((np.array(args[0]) - args[2]) - (np.array(args[1]) - args[3]))
    expect = 0.1 * jax.nn.sigmoid(-h) / 2
    np.testing.assert_allclose(grads[0], -expect, rtol=1e-5)
    np.testing.assert_allclose(grads[1], expect, rtol=1e-5)
    np.testing.assert_array_equal(grads[2], 0.0)  # the reference never moves
    np.testing.assert_array_equal(grads[3], 0.0)


def test_padding_pairs_are_ignored_even_if_nan():
    pc, pr = jnp.array([-1.0, jnp.nan]), jnp.array([-2.0, jnp.nan])
    rc, rr = jnp.array([-1.5, jnp.nan]), jnp.array([-1.5, -jnp.inf])
    mask = jnp.array([True, False])
    f = lambda pc: dpo_loss(pc, pr, rc, rr, beta=0.1, mask_B=mask)
    (loss, m), grad = jax.value_and_grad(f, has_aux=True)(pc)
    np.testing.assert_allclose(loss, 0.6443966600735709, rtol=1e-6)
    assert float(m["count"]) == 1.0
    assert np.all(np.isfinite(grad)) and float(grad[1]) == 0.0
    loss0, m0 = dpo_loss(pc, pr, rc, rr, beta=0.1, mask_B=jnp.zeros(2))
    assert float(loss0) == 0.0 and float(m0["count"]) == 0.0


def test_bad_inputs_name_the_argument():
    x = jnp.zeros(3)
    with pytest.raises(ValueError, match="policy_chosen_logps_B must have rank 1"):
        dpo_loss(jnp.zeros((3, 1)), x, x, x, beta=0.1)
    with pytest.raises(ValueError, match=r"ref_rejected_logps_B\[2\]"):
        dpo_loss(x, x, x, jnp.zeros(2), beta=0.1)
    with pytest.raises(ValueError, match="beta must be > 0"):
        dpo_loss(x, x, x, x, beta=0.0)
    with pytest.raises(ValueError, match="ref_chosen_logps_B must have a floating dtype"):
        dpo_loss(x, x, jnp.zeros(3, jnp.int32), x, beta=0.1)
    with pytest.raises(ValueError, match=r"mask_B\[4\]"):
        dpo_loss(x, x, x, x, beta=0.1, mask_B=jnp.ones(4))
