"""Xu et al. 2024, Theorem 4.1 / Table 1: a DPO optimum that PPO's KL-regularized objective forbids.

One prompt, three responses, reference pi_ref = (0.5, 0.5, 0), one preference y1 > y2.
For pi = (a, b, c) the DPO loss is log(1 + (b/a)^beta): it ignores c, so (0.1, 0, 0.9) reaches the
infimum 0 just like (1, 0, 0). PPO's per-token KL penalty -kl * (log pi - log pi_ref) is -inf on y3
(pi_ref(y3) = 0), so any policy with c > 0 has objective -inf and PPO must pick c = 0.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np

from rlhf_jax.losses import dpo_loss, kl_penalized_rewards

BETA = 0.1
LOG_REF = math.log(0.5)


def dpo_on_table1(a, log_b):
    """DPO loss of pi = (a, b, .) on the single pair y1 > y2 (log b passed to reach b -> 0)."""
    loss, _ = dpo_loss(
        jnp.array([math.log(a)]), jnp.array([log_b]), jnp.array([LOG_REF]), jnp.array([LOG_REF]),
        beta=BETA,
    )
    return float(loss)


def test_dpo_loss_is_log1p_of_probability_ratio_power_beta():
    for a, b in [(0.3, 0.2), (0.1, 0.5), (0.6, 0.01)]:
        np.testing.assert_allclose(
            dpo_on_table1(a, math.log(b)), math.log1p((b / a) ** BETA), rtol=1e-5
        )


def test_dpo_gives_no_signal_about_the_unseen_response():
    # Policy pi = softmax(z) over (y1, y2, y3). log pi(y1) - log pi(y2) = z1 - z2 does not involve
    # z3, so d loss / d z3 = 0 exactly: DPO leaves any mass on y3 (e.g. 0.9) where it is.
    def loss_of_logits(z):
        logp = jax.nn.log_softmax(z)
        ref = jnp.array([LOG_REF])
        return dpo_loss(logp[:1], logp[1:2], ref, ref, beta=BETA)[0]

    z = jnp.log(jnp.array([0.1, 0.05, 0.85]))
    grad = jax.grad(loss_of_logits)(z)
    assert float(grad[0]) < 0.0 < float(grad[1])
    assert float(grad[2]) == 0.0
    same = loss_of_logits(jnp.log(jnp.array([0.1, 0.05, 0.85])))
    np.testing.assert_allclose(same, loss_of_logits(jnp.log(jnp.array([0.6, 0.3, 0.1]))), rtol=1e-6)


def test_both_table1_policies_reach_the_infimum_zero():
    # b -> 0: (b / a)^beta = exp(beta * (log b - log a)) -> 0 for a = 0.1 (c = 0.9) and a = 1 - eps.
    losses = [dpo_on_table1(0.1, lb) for lb in (-10.0, -100.0, -1000.0)]
    assert losses[0] > losses[1] > losses[2] >= 0.0
    assert losses[2] < 1e-30
    np.testing.assert_allclose(dpo_on_table1(0.1, -1000.0), dpo_on_table1(1 - 1e-6, -1000.0),
                               atol=1e-30)
    assert dpo_on_table1(0.1, -math.inf) == 0.0 == dpo_on_table1(1.0, -math.inf)


def test_ppo_kl_penalty_rules_out_mass_on_y3():
    # Sampled response y3 (one token), old policy 0.9, reference 0: reward -kl * (log 0.9 - log 0).
    rewards = kl_penalized_rewards(
        jnp.array([0.0, 0.0]),
        jnp.log(jnp.array([[0.9], [0.1]])),
        jnp.log(jnp.array([[0.0], [0.5]])),  # y3 has no reference mass, y1 has 0.5
        jnp.ones((2, 1)),
        kl_coef=0.1,
        reward_clip=None,
    )
    assert float(rewards[0, 0]) == -math.inf  # E_pi[reward] = -inf whenever pi(y3) > 0
    np.testing.assert_allclose(rewards[1, 0], -0.1 * math.log(0.1 / 0.5), rtol=1e-6)
