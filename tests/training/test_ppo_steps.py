"""PPO pieces without a rollout: advantages by hand (plain, normalized, Lagrangian), exact micro-batch
accumulation of the actor step, and the EMA reference formula for one step."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlhf_jax.losses import value_normalizer as vn
from rlhf_jax.sharding import make_mesh, put_batch
from rlhf_jax.training.ppo_config import LagrangianConfig, PPOSettings
from rlhf_jax.training.ppo_rollout import Stream, compute_advantages, response_logps
from rlhf_jax.training.ppo_steps import actor_step, ema_step, minibatch_indices
from rlhf_jax.training.sources import ModelSource, build_model
from rlhf_jax.training.state import OptimConfig, init_train_state, make_optimizer, split_model

MASK = np.array([[1, 1, 1], [1, 1, 0]], bool)
OLD = np.array([[-1.0, -2.0, -1.0], [-0.5, -1.0, 0.0]], np.float32)
REF = np.array([[-1.5, -2.0, -0.5], [-0.5, -2.0, 0.0]], np.float32)
VALUES = np.array([[0.5, 0.2, 0.1], [0.0, 1.0, 0.0]], np.float32)
PLAIN = PPOSettings(kl_coef=0.1, reward_clip=20.0, gamma=1.0, lam=1.0, advantage_norm=False, value_norm=False)


def _stream(scores, values=VALUES):
    return Stream(jnp.asarray(scores, jnp.float32), jnp.asarray(values), vn.init())


def test_advantages_by_hand():
    exp = compute_advantages(_stream([2.0, -30.0]), OLD, REF, MASK, ppo=PLAIN)
    # log pi_old - log pi_ref: row 0 [0.5, 0, -0.5], row 1 [0, 1]; KL penalty -0.1 * that.
    # row 0 rewards [-0.05, 0, -0.05*-1 + 2] = [-0.05, 0, 2.05] -> returns (gamma = lam = 1)
    #   [2.0, 2.05, 2.05], advantages = returns - V = [1.5, 1.85, 1.95]
    # row 1 score -30 clipped to -20: rewards [0, -0.1 - 20] -> returns [-20.1, -20.1],
    #   advantages [-20.1, -21.1]
    adv = np.array([[1.5, 1.85, 1.95], [-20.1, -21.1, 0.0]])
    returns = np.array([[2.0, 2.05, 2.05], [-20.1, -20.1, 0.0]])
    np.testing.assert_allclose(exp.actor["advantages"], adv, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(np.where(MASK, exp.critic["targets"], 0), returns, rtol=1e-6)
    np.testing.assert_array_equal(exp.critic["old_values"], VALUES)
    np.testing.assert_array_equal(exp.actor["old_logps"], OLD)
    m = {k: float(v) for k, v in exp.metrics.items()}
    assert m["kl"] == pytest.approx(0.2) and m["kl_sequence"] == pytest.approx(0.5)
    assert m["reward"] == pytest.approx(-14.0) and m["response_length"] == pytest.approx(2.5)
    assert m["advantage"] == pytest.approx(adv[MASK].mean(), rel=1e-6)

    # advantage and value normalization on: whitened over the 5 tokens of the whole batch; the
    # critic regresses returns normalized with stats that now include this batch
    normed = compute_advantages(_stream([2.0, -30.0], np.zeros((2, 3), np.float32)), OLD, REF, MASK,
                                ppo=PPOSettings(kl_coef=0.1, reward_clip=20.0))
    a = np.asarray(normed.actor["advantages"])[MASK]
    assert a.mean() == pytest.approx(0.0, abs=1e-6) and a.std() == pytest.approx(1.0, rel=1e-4)
    t = np.asarray(normed.critic["targets"])[MASK]
    np.testing.assert_allclose(t, (returns[MASK] - returns[MASK].mean()) / np.sqrt(returns[MASK].var() + 1e-5),
                               rtol=1e-5)
    assert float(normed.value_norm.count) == 5.0


@pytest.mark.parametrize("cost_limit, direction", [(1.0, 1.0), (3.0, -1.0)])
def test_lagrangian_moves_lambda_against_the_violation(cost_limit, direction):
    lag = LagrangianConfig(cost_limit=cost_limit, lambda_init=1.0, lambda_lr=0.1)
    zeros = np.zeros((2, 3), np.float32)
    exp = compute_advantages(_stream([2.0, -30.0]), OLD, REF, MASK, ppo=PLAIN, cost=_stream([1.0, 3.0], zeros),
                             log_lambda=jnp.zeros((), jnp.float32), lagrangian=lag)
    # mean cost 2: log_lambda = 0 + 0.1 * (2 - limit) * exp(0) = +-0.1
    assert float(exp.log_lambda) == pytest.approx(0.1 * direction)
    lam = np.exp(0.1 * direction)
    # cost stream: +0.1 * (log pi_old - log pi_ref) + cost at the last token, zero cost values:
    # row 0 [0.05, 0, -0.05 + 1] -> A_c [1.0, 0.95, 0.95]; row 1 [0, 0.1 + 3] -> A_c [3.1, 3.1]
    adv_r = np.array([[1.5, 1.85, 1.95], [-20.1, -21.1, 0.0]])
    adv_c = np.array([[1.0, 0.95, 0.95], [3.1, 3.1, 0.0]])
    np.testing.assert_allclose(exp.actor["advantages"], np.where(MASK, (adv_r - lam * adv_c) / (1 + lam), 0),
                               rtol=1e-5, atol=1e-6)
    assert float(exp.metrics["lambda"]) == pytest.approx(lam) and float(exp.metrics["cost"]) == 2.0
    np.testing.assert_allclose(np.where(MASK, exp.cost_critic["targets"], 0), adv_c, rtol=1e-6)


def _actor_batch(graphdef, params, mesh, *, rows=16, prompt=6, new=6, seed=0):
    """Random sequences laid out as a rollout (left-padded prompts, right-padded responses)."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(3, 256, size=(rows, prompt + new)).astype(np.int32)
    prompt_len = rng.integers(1, prompt + 1, size=rows)
    resp_len = rng.integers(1, new + 1, size=rows)
    cols = np.arange(prompt + new)
    attn = ((cols >= prompt - prompt_len[:, None]) & (cols < prompt + resp_len[:, None]))
    seq = put_batch({"input_ids": ids, "attention_mask": attn, "response_mask": attn[:, prompt:]}, mesh)
    logps = jax.jit(functools.partial(response_logps, graphdef=graphdef, prompt_length=prompt))(
        params, seq["input_ids"], seq["attention_mask"])
    # old log-probs a little off the current policy, so some ratios are clipped
    old = np.asarray(logps) + rng.normal(0, 0.3, size=(rows, new)).astype(np.float32)
    adv = rng.normal(size=(rows, new)).astype(np.float32)
    return seq, put_batch({"old_logps": old, "advantages": adv}, mesh)


def test_actor_accumulation_equals_full_batch_and_ema_follows_its_formula():
    mesh = make_mesh()
    graphdef, params = split_model(build_model(ModelSource(seed=5), mesh=mesh))
    # Adam's first step is lr * g / (|g| + eps): with the default eps = 1e-8 an entry whose gradient
    # is itself ~1e-8 turns float32 rounding differences of the two gradients into visible parameter
    # differences; eps = 1e-4 keeps the comparison about the gradients the two paths compute
    tx = make_optimizer(OptimConfig(lr=1e-2, eps=1e-4))
    with jax.set_mesh(mesh):
        seq, batch = _actor_batch(graphdef, params, mesh)
        idx = minibatch_indices(16, 2, seed=0, iteration=1, epoch=0)[0]
        results = []
        for micro in (1, 4):
            step = jax.jit(functools.partial(actor_step, graphdef=graphdef, tx=tx, prompt_length=6,
                                             clip_eps=0.2, num_micro=micro), donate_argnums=(0,))
            results.append(step(init_train_state(jax.tree.map(jnp.copy, params), tx), seq, batch, idx))
        (full, m_full), (acc, m_acc) = results
        assert 0 < float(m_full["clip_fraction"]) < 1 and float(m_full["count"]) == float(m_acc["count"])
        np.testing.assert_allclose(float(m_full["loss"]), float(m_acc["loss"]), rtol=1e-5)
        for a, b in zip(jax.tree.leaves(full.params), jax.tree.leaves(acc.params)):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-5, atol=2e-6)

        # the reference after one actor step: (1 - eta) ref + eta actor', eta = 0.25
        ema = jax.jit(functools.partial(ema_step, eta=0.25), donate_argnums=(0,))
        ref = ema(jax.tree.map(jnp.copy, params), full.params)
    for r0, a1, r1 in zip(jax.tree.leaves(params), jax.tree.leaves(full.params), jax.tree.leaves(ref)):
        r0, a1, r1 = (np.asarray(x) for x in (r0, a1, r1))
        assert not np.array_equal(a1, r0)  # the actor moved
        np.testing.assert_allclose(r1, np.float32(0.75) * r0 + np.float32(0.25) * a1, rtol=1e-6, atol=1e-9)


def test_minibatches_partition_the_batch_and_replay():
    parts = minibatch_indices(16, 4, seed=1, iteration=3, epoch=1)
    assert [len(p) for p in parts] == [4] * 4
    assert sorted(np.concatenate(parts).tolist()) == list(range(16))
    again = minibatch_indices(16, 4, seed=1, iteration=3, epoch=1)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again))
    other = minibatch_indices(16, 4, seed=1, iteration=4, epoch=1)
    assert not all(np.array_equal(a, b) for a, b in zip(parts, other))


def test_chunked_rollout_forwards_keep_row_order():
    """Old log-probs and values computed in chunks (num_chunks = mini_batches x micro_batches) line up
    with their rows: a chunked forward equals the one-chunk forward row by row, so an actor step with
    learning rate 0 sees importance ratio 1 on every token."""
    from rlhf_jax.training.ppo_rollout import in_chunks, response_values

    np.testing.assert_array_equal(in_chunks(lambda x: x * 2, 4, jnp.arange(8.0)), jnp.arange(8.0) * 2)
    mesh = make_mesh()
    actor = build_model(ModelSource(preset="tiny"), mesh=mesh)
    critic = build_model(ModelSource(preset="tiny"), mesh=mesh, head="score")
    ids = jax.random.randint(jax.random.key(0), (8, 12), 4, 256)
    mask = jnp.ones_like(ids).at[1, :3].set(0)
    for head, fn in ((actor, response_logps), (critic, response_values)):
        graphdef, params = split_model(head)
        one = fn(params, ids, mask, graphdef=graphdef, prompt_length=5)
        four = fn(params, ids, mask, graphdef=graphdef, prompt_length=5, num_chunks=4)
        np.testing.assert_allclose(four, one, rtol=1e-5, atol=1e-6)
        assert np.abs(np.asarray(one[1:]) - np.asarray(one[:-1])).max() > 1e-3  # rows differ: order matters


def test_chunked_reward_scores_keep_row_order():
    """A reward model scores a rollout batch in row chunks (PPO: mini_batches x micro_batches, so the
    forward holds B / chunks rows of activations); every chunking gives the one-chunk scores row by row,
    and a chunk count that does not divide the batch falls back to the largest common divisor."""
    from rlhf_jax.training.ppo_rewards import ModelReward, sequence_scores

    mesh = make_mesh()
    scorer = build_model(ModelSource(preset="tiny"), mesh=mesh, head="score")
    graphdef, params = split_model(scorer)
    ids = jax.random.randint(jax.random.key(1), (8, 12), 4, 256)
    mask = jnp.ones_like(ids).at[2, :4].set(0).at[5, 9:].set(0)
    one = sequence_scores(params, ids, mask, graphdef=graphdef)
    assert np.abs(np.diff(np.asarray(one))).min() > 1e-6  # every row differs: order matters
    for chunks in (2, 8, 3, 6):  # 3 -> 1 chunk, 6 -> 2 chunks of the 8 rows
        np.testing.assert_allclose(sequence_scores(params, ids, mask, graphdef=graphdef, num_chunks=chunks),
                                   one, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="reward: num_chunks must be a positive int"):
        ModelReward(scorer, traces=__import__("collections").Counter(), name="reward", num_chunks=0)
