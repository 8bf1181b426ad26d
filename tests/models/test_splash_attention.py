"""attention='splash' (the TPU Pallas kernel), run here in Pallas' interpret mode, against XLA's attention:
the same logits at every real token and the same gradients, on left-padded, packed and sliding-window
rows, on one device and sharded over a (data, fsdp, tensor) mesh."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from rlhf_jax.models import LlamaConfig, LlamaForCausalLM, create_model, layers
from rlhf_jax.sharding import MeshConfig, make_mesh

CFG = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_layers=2, num_heads=4,
                  num_kv_heads=2, max_position_embeddings=256)
T = 128  # the kernel's smallest tile


@pytest.fixture(autouse=True)
def _splash_on_this_backend(monkeypatch):
    monkeypatch.setitem(layers.FUSED_ATTENTION, "splash", (jax.default_backend(), "splash"))


def _inputs(B=4):
    rng = np.random.default_rng(0)
    ids = jnp.asarray(rng.integers(0, CFG.vocab_size, (B, T)), jnp.int32)
    mask = np.ones((B, T), np.int32)
    mask[0, :10] = 0  # left padding
    mask[1, 100:] = 0  # right padding
    seg = np.ones((B, T), np.int32)
    seg[2, 50:] = 2  # two packed sequences
    seg[2, 120:] = 0  # and padding
    pos = np.where(np.arange(T)[None] < 50, np.arange(T)[None], np.arange(T)[None] - 50).repeat(B, 0)
    return ids, jnp.asarray(mask), jnp.asarray(seg), jnp.asarray(pos, jnp.int32)


def _models(mesh, **overrides):
    cfg = CFG.replace(**overrides)
    xla = create_model(LlamaForCausalLM, cfg, mesh=mesh, seed=3)
    splash = create_model(LlamaForCausalLM, cfg.replace(attention="splash"), mesh=mesh, seed=3)
    return xla, splash


def _loss_and_grads(model, ids, weights, **kw):
    graphdef, state = nnx.split(model)

    def loss(s):
        logits = nnx.merge(graphdef, s)(ids, **kw)
        return jnp.sum(jax.nn.log_softmax(logits) * weights[..., None] / weights.sum())
    return jax.jit(jax.value_and_grad(loss))(state)


@pytest.mark.parametrize("window", [None, 40])
def test_splash_matches_xla_on_padded_and_packed_rows(window):
    ids, mask, seg, pos = _inputs()
    mesh = make_mesh(MeshConfig(1, 1, 1), devices=jax.devices()[:1])
    xla, splash = _models(mesh, sliding_window=window)
    for kw, valid in ((dict(attention_mask=mask), mask), (dict(positions=pos, segment_ids=seg), seg > 0)):
        a, b = xla(ids, **kw), splash(ids, **kw)
        keep = np.asarray(valid, bool)
        np.testing.assert_allclose(np.asarray(b)[keep], np.asarray(a)[keep], rtol=2e-5, atol=2e-5)
        (la, ga), (lb, gb) = (_loss_and_grads(m, ids, jnp.asarray(valid, jnp.float32), **kw) for m in (xla, splash))
        np.testing.assert_allclose(float(lb), float(la), rtol=1e-5)
        for x, y in zip(jax.tree.leaves(ga), jax.tree.leaves(gb)):
            np.testing.assert_allclose(np.asarray(y), np.asarray(x), rtol=2e-4, atol=2e-6)


def test_splash_sharded_equals_one_device():
    ids, mask, _, _ = _inputs()
    one = make_mesh(MeshConfig(1, 1, 1), devices=jax.devices()[:1])
    _, splash_one = _models(one)
    expected = np.asarray(splash_one(ids, mask))
    mesh = make_mesh(MeshConfig(2, 2, 2))  # rows over data x fsdp, kv heads over tensor (shard_map)
    _, splash = _models(mesh)
    graphdef, state = nnx.split(splash)
    with jax.set_mesh(mesh):
        got = jax.jit(lambda s, i, m: nnx.merge(graphdef, s)(i, m))(state, ids, mask)
    keep = np.asarray(mask, bool)
    np.testing.assert_allclose(np.asarray(got)[keep], expected[keep], rtol=2e-5, atol=2e-5)


def test_splash_needs_whole_tiles_and_its_backend(monkeypatch):
    mesh = make_mesh(MeshConfig(1, 1, 1), devices=jax.devices()[:1])
    _, splash = _models(mesh)
    with pytest.raises(ValueError, match="attention='splash' needs a sequence length that is a multiple of 128"):
        splash(jnp.ones((1, 100), jnp.int32))
    monkeypatch.setitem(layers.FUSED_ATTENTION, "splash", ("tpu", "splash"))
    with pytest.raises(ValueError, match="attention='splash' runs on a tpu backend only"):
        splash(jnp.ones((1, T), jnp.int32))
