"""Contracts every public loss keeps: jax.grad works under jit, gradients are finite and point the
right way on tiny cases, an all-zero mask gives the defined value 0 (not NaN), and mismatched
shapes raise a ValueError at trace time.

Each case is a tiny hand-checkable problem; `sign` is the expected sign of d loss / d x0 (x0 is
the first argument), derived in the comment of the case. Padding entries hold NaN on purpose.
"""

import dataclasses
import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlhf_jax import losses as L

NAN = np.nan


@dataclasses.dataclass(frozen=True)
class Case:
    f: Callable  # (x0, mask) -> (loss, metrics) or loss
    x0: np.ndarray
    mask: np.ndarray | None  # None: the loss has no mask
    sign: np.ndarray  # expected sign of d loss / d x0 (0 on padding)
    bad: Callable  # () -> raises ValueError (mismatched shapes)


F = lambda *v: np.array(v, np.float32)
B2 = F(1, 1, 0)  # two valid pairs / prompts and one padding entry
TOK = np.array([[1, 1, 0]], np.float32)

CASES = {
    # -mean(logp): raising any valid log-prob lowers the loss.
    "sft_loss": Case(
        lambda x, m: L.sft_loss(x, m), F([-1.0, -2.0, NAN]), TOK, F([-1, -1, 0]),
        lambda: L.sft_loss(jnp.zeros((1, 3)), jnp.ones((1, 2))),
    ),
    # -log sigmoid(c - r): raise the chosen score.
    "reward_loss": Case(
        lambda x, m: L.reward_loss(x, F(0.5, 0.0, NAN), mask_B=m), F(0.0, 1.0, NAN), B2,
        F(-1, -1, 0), lambda: L.reward_loss(jnp.zeros(3), jnp.zeros(2)),
    ),
    # The safer response is labelled safe: its cost is pushed down (positive gradient).
    "cost_loss": Case(
        lambda x, m: L.cost_loss(x, F(0.5, 1.0, NAN), F(1, 1, 1), F(0, 0, 0), mask_B=m),
        F(0.0, 0.2, NAN), B2, F(1, 1, 0),
        lambda: L.cost_loss(jnp.zeros(3), jnp.zeros(3), jnp.ones(2), jnp.ones(3)),
    ),
    # DPO at h = 0: d/dpc softplus(-beta h) = -beta / 2 per pair.
    "dpo_loss[sigmoid]": Case(
        lambda x, m: L.dpo_loss(x, F(-2, -2, NAN), F(-1, -1, NAN), F(-2, -2, NAN), beta=0.1,
                                mask_B=m),
        F(-1.0, -1.0, NAN), B2, F(-1, -1, 0),
        lambda: L.dpo_loss(jnp.zeros(3), jnp.zeros(3), jnp.zeros(3), jnp.zeros(2), beta=0.1),
    ),
    # cDPO at h = 0: -(1 - eps) beta / 2 + eps beta / 2 = -0.4 beta < 0.
    "dpo_loss[sigmoid, label_smoothing]": Case(
        lambda x, m: L.dpo_loss(x, F(-2, -2, NAN), F(-1, -1, NAN), F(-2, -2, NAN), beta=0.1,
                                label_smoothing=0.1, mask_B=m),
        F(-1.0, -1.0, NAN), B2, F(-1, -1, 0),
        lambda: L.dpo_loss(jnp.zeros(2), jnp.zeros(3), jnp.zeros(3), jnp.zeros(3), beta=0.1,
                           label_smoothing=0.1),
    ),
    # IPO at h = 0: 2 (h - 1 / (2 beta)) = -10 < 0.
    "dpo_loss[ipo]": Case(
        lambda x, m: L.dpo_loss(x, F(-2, -2, NAN), F(-1, -1, NAN), F(-2, -2, NAN), beta=0.1,
                                variant="ipo", mask_B=m),
        F(-1.0, -1.0, NAN), B2, F(-1, -1, 0),
        lambda: L.dpo_loss(jnp.zeros(3), jnp.zeros(2), jnp.zeros(3), jnp.zeros(3), beta=0.1,
                           variant="ipo"),
    ),
    # Candidate 0 is best (reward 1) but scores lower (-2 vs -1): rank and SFT terms raise it,
    # the rank term lowers candidate 1. Padding prompt (row 2) gets no gradient.
    "rrhf_loss": Case(
        lambda x, m: L.rrhf_loss(x, np.ones((3, 2), np.float32), F([1, 0], [1, 0], [1, 0]),
                                 mask_B=m),
        F([-2, -1], [-2, -1], [NAN, NAN]), B2, F([-1, 1], [-1, 1], [0, 0]),
        lambda: L.rrhf_loss(jnp.zeros((3, 2)), jnp.ones((3, 1)), jnp.zeros((3, 2))),
    ),
    # Same candidates: -log softmax of the best raises it and lowers the other.
    "pro_loss": Case(
        lambda x, m: L.pro_loss(x, np.ones((3, 2), np.float32), F([1, 0], [1, 0], [1, 0]),
                                sft_weight=0.1, mask_B=m),
        F([-2, -1], [-2, -1], [NAN, NAN]), B2, F([-1, 1], [-1, 1], [0, 0]),
        lambda: L.pro_loss(jnp.zeros((3, 2)), jnp.ones((2, 2)), jnp.zeros((3, 2)), sft_weight=0.1),
    ),
    # Ratio 1 (unclipped): d/dlogp -A * ratio = -A: sign opposite to the advantage.
    "ppo_policy_loss": Case(
        lambda x, m: L.ppo_policy_loss(x, F([0, 0, 0]), F([1.0, -2.0, NAN]), m, clip_eps=0.2,
                                       dual_clip=3.0),
        F([0.0, 0.0, NAN]), TOK, F([-1, 1, 0]),
        lambda: L.ppo_policy_loss(jnp.zeros((1, 3)), jnp.zeros((1, 3)), jnp.zeros((1, 2)),
                                  jnp.ones((1, 3)), clip_eps=0.2),
    ),
    # 0.5 (v - R)^2 inside the clip range: gradient v - R.
    "ppo_value_loss": Case(
        lambda x, m: L.ppo_value_loss(x, F([1.0, 0.0, 0.0]), F([0.9, 0.1, NAN]), m, clip_eps=0.2),
        F([1.0, 0.0, NAN]), TOK, F([1, -1, 0]),
        lambda: L.ppo_value_loss(jnp.zeros((1, 3)), jnp.zeros((2, 3)), jnp.zeros((1, 3)),
                                 jnp.ones((1, 3)), clip_eps=0.2),
    ),
    # -(J_c - d) exp(log_lambda) with J_c > d: descending raises lambda.
    "lagrange_loss": Case(
        lambda x, m: L.lagrange_loss(x, jnp.float32(1.0), cost_limit=0.0),
        np.float32(0.0), None, np.float32(-1.0),
        lambda: L.lagrange_loss(jnp.zeros(()), jnp.zeros(2), cost_limit=0.0),
    ),
}


def loss_and_metrics(case, x0, mask):
    out = case.f(x0, mask)
    return out if isinstance(out, tuple) else (out, {})


@pytest.mark.parametrize("name", sorted(CASES))
def test_grad_under_jit_is_finite_with_the_right_sign_and_zero_mask_is_zero(name):
    case = CASES[name]
    step = jax.jit(jax.value_and_grad(functools.partial(loss_and_metrics, case), has_aux=True))
    (loss, _), grad = step(case.x0, case.mask)
    assert np.isfinite(float(loss)), name
    assert np.all(np.isfinite(grad)), (name, grad)
    np.testing.assert_array_equal(np.sign(grad), case.sign, err_msg=name)
    if case.mask is not None:
        # All-zero mask: the defined value 0 with a zero (finite) gradient, from the same program.
        (loss0, metrics), grad0 = step(case.x0, np.zeros_like(case.mask))
        assert float(loss0) == 0.0, name
        np.testing.assert_array_equal(grad0, np.zeros_like(grad0), err_msg=name)
        assert float(metrics["count"]) == 0.0
        assert all(np.isfinite(float(v)) for v in metrics.values()), metrics


@pytest.mark.parametrize("name", sorted(CASES))
def test_mismatched_shapes_raise_a_clear_error(name):
    with pytest.raises(ValueError, match=r"shape|rank|batch size"):
        CASES[name].bad()


def test_every_public_loss_has_a_case():
    public_losses = {n for n in L.__all__ if n.endswith("_loss")}
    covered = {n.split("[")[0] for n in CASES}
    assert public_losses == covered, public_losses ^ covered
