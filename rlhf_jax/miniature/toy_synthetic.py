"""Xu et al. 2024, Section 4.2: DPO and a learned reward model put mass on responses outside the data.

n prompts x n responses; the gold reward r*(i, j) = -((j - i) mod n) makes response i the best for
prompt i. Policies and the reward model are MLPs (one hidden ReLU layer) over one-hot prompts, so
what they learn for one prompt spills over to the others. Preference pairs cover only `covered`
responses per prompt, C_i = {i} plus random others (fixed seed); every pair of C_i is labelled by
r*; the other responses are out of distribution (OOD) for prompt i. Four models, all with the
project's losses:
- reference: an MLP fitted (exact cross-entropy, i.e. SFT on unlimited data) to a behaviour
  distribution, (1 - ref_uniform_mix) spread evenly over C_i plus ref_uniform_mix over all n;
- DPO: the reference MLP trained with `dpo_loss` on the pairs (the reference frozen);
- reward model: an MLP trained with `reward_loss` (Bradley-Terry) on the same pairs;
- PPO: the reference MLP trained on the learned reward with the per-response KL penalty
  (`kl_penalized_rewards`, coefficient beta) and the clipped surrogate (`ppo_policy_loss`). The
  expectation over the n responses is exact instead of sampled: with advantages pi_old(y) A(y) the
  per-response surrogate sums to E_{y ~ pi_old}[min(rho A, clip(rho) A)]. Its target is the closed
  form pi* = pi_ref exp(r / beta) / Z per prompt (`toy_ood.kl_regularized_optimum`), reported as a
  check, and the same closed form for other KL coefficients shows how much the KL term holds.
Everything is float32 with fixed seeds and takes seconds on a CPU.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from rlhf_jax.losses import dpo_loss, kl_penalized_rewards, ppo_policy_loss, reward_loss
from rlhf_jax.miniature.toy_ood import check_positive, kl_regularized_objective, kl_regularized_optimum


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
    """Section 4.2: sizes, data coverage, the reference's behaviour mix, and optimization."""

    num_prompts: int = 8  # also the number of responses; response i is the best for prompt i
    covered: int = 3  # responses per prompt that appear in preference pairs (response i and others)
    hidden: int = 64  # MLP width (one hidden ReLU layer) of the policies and the reward model
    ref_uniform_mix: float = 0.5  # share of the behaviour distribution spread over all responses
    beta: float = 0.1  # DPO's beta and PPO's KL coefficient (the paper's default for both)
    lr: float = 1e-2  # Adam, every fit
    ref_steps: int = 500
    dpo_steps: int = 500
    reward_steps: int = 500
    ppo_rounds: int = 500  # rollouts (pi_old refreshed); each followed by ppo_epochs updates
    ppo_epochs: int = 4
    clip_eps: float = 0.2
    kl_sweep: tuple[float, ...] = (0.1, 0.3, 1.0, 3.0)  # KL coefficients of the closed-form PPO sweep
    seed: int = 0  # the covered responses, the initializations

    def __post_init__(self):
        check_positive(**{f"synthetic.{k}": getattr(self, k) for k in (
            "hidden", "beta", "lr", "ref_steps", "dpo_steps", "reward_steps", "ppo_rounds", "ppo_epochs",
            "clip_eps")})
        if self.num_prompts < 3:
            raise ValueError(f"synthetic.num_prompts must be >= 3, got {self.num_prompts}")
        if not 2 <= self.covered < self.num_prompts:
            raise ValueError(f"synthetic.covered must be in [2, num_prompts - 1] = [2, {self.num_prompts - 1}] "
                             f"(at least one pair and one OOD response per prompt), got {self.covered}")
        if not 0.0 <= self.ref_uniform_mix <= 1.0:
            raise ValueError(f"synthetic.ref_uniform_mix must be in [0, 1], got {self.ref_uniform_mix}")
        if not self.kl_sweep or not all(isinstance(b, (int, float)) and b > 0 for b in self.kl_sweep):
            raise ValueError(f"synthetic.kl_sweep must be positive numbers, got {self.kl_sweep!r}")


def gold_reward(num_prompts: int) -> np.ndarray:
    """[n, n] r*(i, j) = -((j - i) mod n): response i is the best for prompt i, then i+1, ..."""
    return -((np.arange(num_prompts)[None, :] - np.arange(num_prompts)[:, None]) % num_prompts).astype(np.float64)


def synthetic_data(num_prompts: int, covered: int, seed: int) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
    """The covered responses and the preference pairs.

    C_i = {i} plus `covered - 1` other responses drawn at random (numpy, `seed`); every unordered
    pair of C_i is one preference, labelled by `gold_reward`. Returns ([n, n] bool covered mask,
    (prompt, chosen, rejected) int32 arrays).
    """
    rng = np.random.default_rng(seed)
    gold = gold_reward(num_prompts)
    mask = np.zeros((num_prompts, num_prompts), bool)
    rows = []
    for i in range(num_prompts):
        others = rng.choice([j for j in range(num_prompts) if j != i], covered - 1, replace=False)
        responses = [i, *sorted(int(j) for j in others)]
        mask[i, responses] = True
        for a, b in itertools.combinations(responses, 2):
            rows.append((i, a, b) if gold[i, a] > gold[i, b] else (i, b, a))
    return mask, tuple(np.asarray(col, np.int32) for col in zip(*rows))


def behaviour_distribution(covered_NxN: np.ndarray, uniform_mix: float) -> np.ndarray:
    """[n, n] rows: (1 - uniform_mix) spread evenly over C_i plus uniform_mix over all responses."""
    n = covered_NxN.shape[0]
    per_row = covered_NxN.sum(axis=1, keepdims=True)
    return ((1 - uniform_mix) * covered_NxN / per_row + uniform_mix / n).astype(np.float32)


def init_mlp(key: jax.Array, n_in: int, hidden: int, n_out: int) -> dict:
    """A one-hidden-layer MLP, LeCun-normal weights and zero biases."""
    k1, k2 = jax.random.split(key)
    return {"w1": jax.random.normal(k1, (n_in, hidden)) / math.sqrt(n_in), "b1": jnp.zeros((1, hidden)),
            "w2": jax.random.normal(k2, (hidden, n_out)) / math.sqrt(hidden), "b2": jnp.zeros((1, n_out))}


def mlp_outputs(params: dict) -> jax.Array:
    """[n, n_out] outputs for every one-hot prompt (row i = prompt i)."""
    x = jnp.eye(params["w1"].shape[0])
    return jax.nn.relu(x @ params["w1"] + params["b1"]) @ params["w2"] + params["b2"]


def _adam(loss_fn: Callable, params, lr: float, steps: int):
    """Full-batch Adam for `steps` steps; returns the final params and the loss before each step."""
    tx = optax.adam(lr)

    def step(carry, _):
        p, s = carry
        loss, grads = jax.value_and_grad(loss_fn)(p)
        updates, s = tx.update(grads, s, p)
        return (optax.apply_updates(p, updates), s), loss

    run = jax.jit(lambda p: jax.lax.scan(step, (p, tx.init(p)), None, length=steps))
    (params, _), losses = run(params)
    return params, losses


Pairs = tuple  # (prompt, chosen, rejected) int32 arrays, as returned by `synthetic_data`


def _pair_values(table_NxN: jax.Array, pairs: Pairs) -> tuple[jax.Array, jax.Array]:
    prompt, chosen, rejected = pairs
    return table_NxN[prompt, chosen], table_NxN[prompt, rejected]


def fit_reference(cfg: SyntheticConfig, behaviour_NxN: np.ndarray, key: jax.Array) -> tuple[dict, jax.Array]:
    """The reference MLP: minimizes the cross-entropy to the behaviour distribution (exact SFT)."""
    target = jnp.asarray(behaviour_NxN, jnp.float32)

    def loss_fn(p):
        return -jnp.mean(jnp.sum(target * jax.nn.log_softmax(mlp_outputs(p)), axis=1))

    return _adam(loss_fn, init_mlp(key, cfg.num_prompts, cfg.hidden, cfg.num_prompts), cfg.lr, cfg.ref_steps)


def train_dpo(cfg: SyntheticConfig, ref_params: dict, pairs: Pairs) -> tuple[dict, jax.Array]:
    """DPO from the reference on the pairs; the reference log-probs are frozen."""
    ref_c, ref_r = _pair_values(jax.nn.log_softmax(mlp_outputs(ref_params)), pairs)

    def loss_fn(p):
        pc, pr = _pair_values(jax.nn.log_softmax(mlp_outputs(p)), pairs)
        return dpo_loss(pc, pr, ref_c, ref_r, beta=cfg.beta)[0]

    return _adam(loss_fn, ref_params, cfg.lr, cfg.dpo_steps)


def train_reward_model(cfg: SyntheticConfig, pairs: Pairs, key: jax.Array) -> tuple[dict, jax.Array]:
    """A Bradley-Terry reward MLP (`reward_loss`): output j of prompt i is r(i, j)."""
    def loss_fn(p):
        return reward_loss(*_pair_values(mlp_outputs(p), pairs))[0]

    return _adam(loss_fn, init_mlp(key, cfg.num_prompts, cfg.hidden, cfg.num_prompts), cfg.lr, cfg.reward_steps)


def train_ppo(cfg: SyntheticConfig, ref_params: dict, rewards_NxN: jax.Array) -> tuple[dict, jax.Array]:
    """PPO from the reference on a fixed reward table, exact expectations over responses.

    Each round: pi_old <- pi; per response, r' = r - beta (log pi_old - log pi_ref)
    (`kl_penalized_rewards`, one token per response); A = r' - sum_y pi_old(y) r'(y); then
    `ppo_epochs` Adam steps on `ppo_policy_loss` with advantages pi_old * A (see the module
    docstring). Returns the final params and the KL-regularized objective after each round.
    """
    n = cfg.num_prompts
    ref_logp = jax.nn.log_softmax(mlp_outputs(ref_params)).reshape(n * n, 1)
    mask = jnp.ones((n * n, 1), jnp.float32)
    scores = rewards_NxN.reshape(n * n)
    tx = optax.adam(cfg.lr)

    def objective(p):
        logp = jax.nn.log_softmax(mlp_outputs(p))
        return jnp.mean(jnp.sum(jnp.exp(logp) * (rewards_NxN - cfg.beta * (logp - ref_logp.reshape(n, n))), 1))

    def rollout(carry, _):
        p, s = carry
        old_logp = jax.lax.stop_gradient(jax.nn.log_softmax(mlp_outputs(p)))
        shaped = kl_penalized_rewards(scores, old_logp.reshape(n * n, 1), ref_logp, mask,
                                      kl_coef=cfg.beta, reward_clip=None).reshape(n, n)
        pi_old = jnp.exp(old_logp)
        adv = pi_old * (shaped - jnp.sum(pi_old * shaped, axis=1, keepdims=True))

        def loss_fn(q):
            logp = jax.nn.log_softmax(mlp_outputs(q)).reshape(n * n, 1)
            return ppo_policy_loss(logp, old_logp.reshape(n * n, 1), adv.reshape(n * n, 1), mask,
                                   clip_eps=cfg.clip_eps)[0]

        def epoch(c, _):
            q, st = c
            updates, st = tx.update(jax.grad(loss_fn)(q), st, q)
            return (optax.apply_updates(q, updates), st), None

        (p, s), _ = jax.lax.scan(epoch, (p, s), None, length=cfg.ppo_epochs)
        return (p, s), objective(p)

    run = jax.jit(lambda p: jax.lax.scan(rollout, (p, tx.init(p)), None, length=cfg.ppo_rounds))
    (params, _), objectives = run(ref_params)
    return params, objectives


def ood_summary(probs_NxN: np.ndarray, ref_NxN: np.ndarray, covered_NxN: np.ndarray) -> dict:
    """OOD statistics of one method's [n, n] probabilities against the reference's.

    mean_ood / max_ood: over OOD cells; ood_mass: mean over prompts of the total OOD probability;
    raised_above_reference: OOD cells with a higher probability than the reference; largest_rise:
    the OOD cell with the biggest increase, (prompt, response, reference, method); best_response:
    mean probability of response i for prompt i.
    """
    ood = ~covered_NxN
    rise = np.where(ood, probs_NxN - ref_NxN, -np.inf)
    i, j = np.unravel_index(int(np.argmax(rise)), rise.shape)
    return {"mean_ood": float(probs_NxN[ood].mean()), "max_ood": float(probs_NxN[ood].max()),
            "ood_mass": float(np.where(ood, probs_NxN, 0.0).sum(axis=1).mean()),
            "raised_above_reference": int(np.sum(ood & (probs_NxN > ref_NxN))),
            "largest_rise": {"prompt": int(i), "response": int(j), "reference": float(ref_NxN[i, j]),
                             "method": float(probs_NxN[i, j])},
            "best_response": float(np.mean(np.diag(probs_NxN)))}


def run_synthetic(cfg: SyntheticConfig = SyntheticConfig()) -> dict:
    """Fits the reference, DPO, the reward model and PPO; returns their [n, n] tables and OOD stats.

    "probs" holds the reference, DPO and PPO policies and, for the reward model, softmax(r(i, .))
    (the Bradley-Terry / Plackett-Luce probability that each response is the best); "logps" the
    policies' log-probabilities (exact where probabilities underflow); "rewards" the
    raw reward table; "ppo_closed_form" the KL-regularized optimum on that reward, which PPO should
    reach ("ppo_objective_gap": how far PPO's objective, averaged over prompts, is below it; the
    probabilities themselves can differ more where two responses score almost the same); "kl_sweep" the OOD statistics of that closed form for other KL coefficients.
    """
    covered, pairs = synthetic_data(cfg.num_prompts, cfg.covered, cfg.seed)
    behaviour = behaviour_distribution(covered, cfg.ref_uniform_mix)
    k_ref, k_rm = jax.random.split(jax.random.key(cfg.seed))
    ref_params, ref_losses = fit_reference(cfg, behaviour, k_ref)
    dpo_params, dpo_losses = train_dpo(cfg, ref_params, pairs)
    rm_params, rm_losses = train_reward_model(cfg, pairs, k_rm)
    rewards = mlp_outputs(rm_params)
    ppo_params, ppo_objectives = train_ppo(cfg, ref_params, rewards)

    logps = {name: np.asarray(jax.nn.log_softmax(mlp_outputs(p)), np.float64)
             for name, p in (("reference", ref_params), ("dpo", dpo_params), ("ppo", ppo_params))}

    def probs(p):
        return np.asarray(jax.nn.softmax(mlp_outputs(p)), np.float64)

    ref = probs(ref_params)
    rewards = np.asarray(rewards, np.float64)
    tables = {"reference": ref, "dpo": probs(dpo_params),
              "reward_model": np.asarray(jax.nn.softmax(jnp.asarray(rewards)), np.float64),
              "ppo": probs(ppo_params)}

    def closed_form(beta):
        return np.stack([kl_regularized_optimum(rewards[i], beta=beta, reference=ref[i] / ref[i].sum())
                         for i in range(cfg.num_prompts)])

    def objective(table):  # mean over prompts of E_pi[r] - beta KL(pi || pi_ref)
        return float(np.mean([kl_regularized_objective(table[i] / table[i].sum(), rewards[i], beta=cfg.beta,
                                                       reference=ref[i] / ref[i].sum())
                              for i in range(cfg.num_prompts)]))

    ppo_target = closed_form(cfg.beta)
    return {
        "covered": covered, "pairs": np.stack(pairs, axis=1), "behaviour": behaviour.astype(np.float64),
        "probs": tables, "logps": logps, "rewards": rewards, "ppo_closed_form": ppo_target,
        "ood": {name: ood_summary(t, ref, covered) for name, t in tables.items()},
        "reward_ood_above_best": int(np.sum(~covered & (rewards > np.diag(rewards)[:, None]))),
        "ppo_max_gap_to_closed_form": float(np.abs(tables["ppo"] - ppo_target).max()),
        "ppo_objective_gap": objective(ppo_target) - objective(tables["ppo"]),
        "kl_sweep": {float(b): ood_summary(closed_form(b), ref, covered) for b in cfg.kl_sweep},
        "losses": {"reference": [float(ref_losses[0]), float(ref_losses[-1])],
                   "dpo": [float(dpo_losses[0]), float(dpo_losses[-1])],
                   "reward_model": [float(rm_losses[0]), float(rm_losses[-1])],
                   "ppo_objective": [float(ppo_objectives[0]), float(ppo_objectives[-1])]},
    }
