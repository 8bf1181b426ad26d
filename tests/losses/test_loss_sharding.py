"""Sharded == single device: batch-sharded inputs on a mesh of the 8 CPU devices, jitted losses.

Whitening, token means and per-sequence means must be global-batch statistics: a per-device
statistic would differ here because the rows have very different lengths and scales.
"""

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from rlhf_jax.losses import (
    dpo_loss,
    gae_advantages,
    kl_penalized_rewards,
    masked_whiten,
    ppo_policy_loss,
    ppo_value_loss,
    reward_loss,
    sft_loss,
    token_logps,
)

B, T, V = 8, 6, 5
RNG = np.random.default_rng(8)
LENGTHS = np.array([1, 6, 2, 5, 3, 6, 0, 4])
MASK = jnp.asarray(np.arange(T)[None] < LENGTHS[:, None], jnp.float32)
SCALE = jnp.asarray(10.0 ** np.arange(B)[:, None] / 1e4, jnp.float32)  # very different row scales
X = jnp.asarray(RNG.normal(size=(B, T)), jnp.float32)


def batch_sharding():
    mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    return NamedSharding(mesh, P("data"))


def one_ppo_step(logits, labels, mask, old_logps, ref_logps, scores, values, old_values):
    """Everything a PPO step computes from log-probs, in one jitted function (compiled once)."""
    logps = token_logps(logits, labels, mask, chunk_size=4)
    rewards = kl_penalized_rewards(
        scores, old_logps, ref_logps, mask, kl_coef=0.1, reward_clip=20.0
    )
    adv, returns = gae_advantages(rewards, values, mask, gamma=1.0, lam=1.0)
    adv = masked_whiten(adv, mask)
    pl, pm = ppo_policy_loss(logps, old_logps, adv, mask, clip_eps=0.2)
    vl, vm = ppo_value_loss(values, old_values, returns, mask, clip_eps=0.2)
    seq = jnp.sum(logps, axis=-1)
    dl, dm = dpo_loss(seq[::2], seq[1::2], seq[1::2], seq[::2], beta=0.1)
    il, im = dpo_loss(seq[::2], seq[1::2], seq[1::2], seq[::2], beta=0.1, variant="ipo")
    sl, sm = sft_loss(logps, mask)
    rl, rm = reward_loss(scores[::2], scores[1::2])
    return dict(logps=logps, adv=adv, returns=returns, policy_loss=pl, policy=pm, value_loss=vl,
                value=vm, dpo_loss=dl, dpo=dm, ipo_loss=il, ipo=im, sft_loss=sl, sft=sm,
                reward_loss=rl, reward=rm, whitened_x=masked_whiten(X * SCALE, mask))


def test_sharded_equals_single_device():
    args = (
        jnp.asarray(RNG.normal(size=(B, T, V)), jnp.float32),
        jnp.asarray(RNG.integers(0, V, size=(B, T)), jnp.int32),
        MASK,
        jnp.asarray(-RNG.uniform(0.5, 2, size=(B, T)), jnp.float32),
        jnp.asarray(-RNG.uniform(0.5, 2, size=(B, T)), jnp.float32),
        jnp.asarray(RNG.normal(size=B) * 30, jnp.float32),
        jnp.asarray(RNG.normal(size=(B, T)) * SCALE, jnp.float32),
        jnp.asarray(RNG.normal(size=(B, T)) * SCALE, jnp.float32),
    )
    step = jax.jit(one_ppo_step)
    single = step(*args)

    sharded_args = [jax.device_put(a, batch_sharding()) for a in args]
    assert len(sharded_args[0].sharding.device_set) == 8
    sharded = jax.jit(one_ppo_step)(*sharded_args)
    assert len(sharded["logps"].sharding.device_set) == 8  # really computed across the mesh
    for path, a in jax.tree_util.tree_flatten_with_path(sharded)[0]:
        b = single
        for k in path:
            b = b[k.key]
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-6, err_msg=jax.tree_util.keystr(path))

    # Per-device whitening would give each row (one per device) mean 0; the global one does not.
    w = np.asarray(sharded["whitened_x"])
    assert abs(w[7][: LENGTHS[7]].mean()) > 0.5
