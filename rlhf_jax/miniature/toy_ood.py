"""Xu et al. 2024, Theorem 4.1 / Table 1: a DPO optimum that the KL-regularized reward objective forbids.

One prompt, three responses, reference pi_ref = (0.5, 0.5, 0), one preference y1 > y2, solved
exactly with the project's own losses (`dpo_loss`, `reward_loss`):
- For pi = (a, b, c) the DPO loss is log(1 + (b/a)^beta): it never looks at c, so (0.1, 0, 0.9)
  has loss exactly 0, the same as (1, 0, 0); along (0.1, eps, 0.9 - eps) it falls to that infimum.
- With a softmax-logit policy the DPO gradient on y3's logit is exactly 0, so gradient descent keeps
  whatever y3 logit it starts with. (y3's *share* still falls as y1's logit grows without bound:
  the loss allows mass on y3 but never asks for it, and starting from pi_ref it stays at 0.)
- PPO's objective, E_pi[r] - beta KL(pi || pi_ref) with a Bradley-Terry reward r learned from the
  same pair, has the closed-form optimum pi* = pi_ref exp(r / beta) / Z: y3 gets exactly 0 because
  pi_ref(y3) = 0, whatever r(y3) is; at (0.1, 0, 0.9) the objective is -inf.
The Section 4.2 synthetic study (MLPs over one-hot prompts) is in `toy_synthetic`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from rlhf_jax.losses import dpo_loss, reward_loss

TABLE1_REFERENCE = (0.5, 0.5, 0.0)
#: Named policies of Table 1: the reference, PPO's optimum, and the DPO optimum of the paper.
TABLE1_POLICIES = {"reference": TABLE1_REFERENCE, "ppo_optimum": (1.0, 0.0, 0.0),
                   "dpo_counterexample": (0.1, 0.0, 0.9)}


def _log(p: Sequence[float]) -> np.ndarray:
    """Elementwise log in float32 with log 0 = -inf (no warning)."""
    p = np.asarray(p, np.float32)
    with np.errstate(divide="ignore"):
        return np.log(p)


def _check_policy(name: str, policy: Sequence[float], size: int) -> np.ndarray:
    p = np.asarray(policy, np.float64)
    if p.shape != (size,) or np.any(p < 0) or not math.isclose(float(p.sum()), 1.0, abs_tol=1e-6):
        raise ValueError(f"{name} must be {size} non-negative probabilities summing to 1, got {policy!r}")
    return p


def check_positive(**values: float) -> None:
    """Raises ValueError naming the first keyword whose value is not a number > 0."""
    for name, v in values.items():
        if isinstance(v, bool) or not (isinstance(v, (int, float)) and v > 0):
            raise ValueError(f"{name} must be > 0, got {v!r}")


@dataclasses.dataclass(frozen=True)
class Table1Config:
    """Table 1: beta of DPO and of the KL term; plain gradient descent for the two tabular fits."""

    beta: float = 0.1
    dpo_steps: int = 200  # gradient-descent steps on the softmax logits
    dpo_lr: float = 1.0
    y3_starts: tuple[float, ...] = (0.0, 0.5, 0.9)  # initial pi(y3) of each DPO run; y1, y2 split the rest
    reward_steps: int = 200  # gradient-descent steps of the tabular Bradley-Terry reward
    reward_lr: float = 1.0

    def __post_init__(self):
        check_positive(**{"table1.beta": self.beta, "table1.dpo_steps": self.dpo_steps,
                           "table1.dpo_lr": self.dpo_lr, "table1.reward_steps": self.reward_steps,
                           "table1.reward_lr": self.reward_lr})
        if not self.y3_starts or not all(0.0 <= m < 1.0 for m in self.y3_starts):
            raise ValueError(f"table1.y3_starts must be values in [0, 1), got {self.y3_starts!r}")


def table1_dpo_loss(policy: Sequence[float], *, beta: float,
                    reference: Sequence[float] = TABLE1_REFERENCE) -> float:
    """`dpo_loss` of a 3-response policy on the single pair y1 > y2 (exactly 0 when pi(y2) = 0)."""
    pi, ref = _log(_check_policy("policy", policy, 3)), _log(_check_policy("reference", reference, 3))
    loss, _ = dpo_loss(pi[:1], pi[1:2], ref[:1], ref[1:2], beta=beta)
    return float(loss)


def kl_regularized_objective(policy: Sequence[float], reward: Sequence[float], *, beta: float,
                             reference: Sequence[float]) -> float:
    """E_pi[r] - beta KL(pi || pi_ref), in float64; -inf when pi puts mass where pi_ref has none."""
    pi = _check_policy("policy", policy, len(reference))
    ref = _check_policy("reference", reference, len(reference))
    r = np.asarray(reward, np.float64)
    if r.shape != pi.shape:
        raise ValueError(f"reward must have {len(pi)} values, got {reward!r}")
    if np.any((pi > 0) & (ref == 0)):
        return -math.inf
    on = pi > 0  # 0 log 0 = 0
    kl = float(np.sum(pi[on] * np.log(pi[on] / ref[on])))
    return float(np.dot(pi, r)) - beta * kl


def kl_regularized_optimum(reward: Sequence[float], *, beta: float, reference: Sequence[float]) -> np.ndarray:
    """argmax_pi E_pi[r] - beta KL(pi || pi_ref) = pi_ref exp(r / beta) / Z (float64).

    Responses with pi_ref = 0 get exactly 0, whatever their reward.
    """
    ref = _check_policy("reference", reference, len(reference))
    r = np.asarray(reward, np.float64)
    if r.shape != ref.shape:
        raise ValueError(f"reward must have {len(ref)} values, got {reward!r}")
    check_positive(beta=beta)
    on = ref > 0
    logits = np.full(ref.shape, -np.inf)
    logits[on] = np.log(ref[on]) + r[on] / beta
    w = np.where(on, np.exp(logits - logits[on].max()), 0.0)
    return w / w.sum()


def gradient_descent(loss_fn: Callable, params: jax.Array, lr: float, steps: int) -> tuple[jax.Array, jax.Array]:
    """Plain full-batch gradient descent (traceable: vmap it over starts); returns the final params
    and the loss before each step."""
    def step(p, _):
        loss, grad = jax.value_and_grad(loss_fn)(p)
        return p - lr * grad, loss
    return jax.lax.scan(step, params, None, length=steps)


def table1_dpo_runs(cfg: Table1Config) -> list[dict]:
    """DPO by gradient descent on softmax logits z, one run per m in `cfg.y3_starts`, each from
    pi0 = ((1-m)/2, (1-m)/2, m) (m = 0 is the reference itself).

    dpo_loss only sees z1 - z2, so the y3 logit's gradient is exactly 0 and z3 never changes.
    """
    ref = _log(TABLE1_REFERENCE)

    def loss_fn(z):
        logp = jax.nn.log_softmax(z)
        return dpo_loss(logp[:1], logp[1:2], ref[:1], ref[1:2], beta=cfg.beta)[0]

    def run(z0):
        z, losses = gradient_descent(loss_fn, z0, cfg.dpo_lr, cfg.dpo_steps)
        return z, losses[0], loss_fn(z), jax.grad(loss_fn)(z)

    starts = np.asarray([[(1 - m) / 2, (1 - m) / 2, m] for m in cfg.y3_starts], np.float64)
    z0 = _log(starts)
    z, loss0, loss1, grad = (np.asarray(x) for x in jax.jit(jax.vmap(run))(jnp.asarray(z0)))
    final = np.asarray(jax.nn.softmax(jnp.asarray(z), axis=-1), np.float64)
    return [{"y3_start": m, "start": starts[k].tolist(), "final": final[k].tolist(),
             "loss_start": float(loss0[k]), "loss_final": float(loss1[k]),
             "y3_logit_unchanged": bool(z[k, 2] == z0[k, 2]), "y3_logit_grad": float(grad[k, 2])}
            for k, m in enumerate(cfg.y3_starts)]


def table1_reward(cfg: Table1Config) -> np.ndarray:
    """A tabular Bradley-Terry reward r = (r1, r2, r3) from 0, fitted to y1 > y2 with `reward_loss`.

    r3 has no data, so it stays exactly 0.
    """
    def loss_fn(r):
        return reward_loss(r[:1], r[1:2])[0]

    run = jax.jit(lambda r0: gradient_descent(loss_fn, r0, cfg.reward_lr, cfg.reward_steps)[0])
    r = run(jnp.zeros(3, jnp.float32))
    return np.asarray(r, np.float64)


def run_table1(cfg: Table1Config = Table1Config()) -> dict:
    """Every Table 1 number: DPO losses and KL-regularized objectives of the named policies, the
    DPO loss along (0.1, eps, 0.9 - eps) as eps -> 0 (closed form alongside), the DPO runs, the
    learned reward and its KL-regularized optimum."""
    reward = table1_reward(cfg)
    optimum = kl_regularized_optimum(reward, beta=cfg.beta, reference=TABLE1_REFERENCE)
    policies = {}
    for name, pi in {**TABLE1_POLICIES, "kl_optimum": tuple(optimum)}.items():
        policies[name] = {
            "policy": [float(x) for x in pi],
            "dpo_loss": table1_dpo_loss(pi, beta=cfg.beta),
            "kl_objective": kl_regularized_objective(pi, reward, beta=cfg.beta, reference=TABLE1_REFERENCE),
        }
    path = [{"eps": eps, "dpo_loss": table1_dpo_loss((0.1, eps, 0.9 - eps), beta=cfg.beta),
             "closed_form": math.log1p((eps / 0.1) ** cfg.beta)} for eps in (0.1, 1e-2, 1e-4, 1e-8, 1e-16)]
    return {"beta": cfg.beta, "reward": reward.tolist(), "policies": policies, "dpo_path": path,
            "dpo_runs": table1_dpo_runs(cfg)}


