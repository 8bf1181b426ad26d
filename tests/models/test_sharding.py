"""The same model on several meshes of 8 virtual CPU devices gives the single-device result."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from rlhf_jax.models import LlamaConfig, LlamaForCausalLM, create_model
from rlhf_jax.sharding import MeshConfig, make_mesh, put_batch, state_shardings, validate_mesh

CFG = LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=96, num_layers=2, num_heads=8,
                  num_kv_heads=4, max_position_embeddings=64)
B, T = 8, 12

EXPECTED_SPECS = {  # every parameter's PartitionSpec under the default logical rules
    "lm_head": P("fsdp", "tensor"),
    "model/embed": P("tensor", "fsdp"),
    "model/norm": P(None),
    "model/layers/attn_norm": P(None, None),
    "model/layers/mlp_norm": P(None, None),
    "model/layers/wq": P(None, "fsdp", "tensor", None),
    "model/layers/wk": P(None, "fsdp", "tensor", None),
    "model/layers/wv": P(None, "fsdp", "tensor", None),
    "model/layers/wo": P(None, "tensor", None, "fsdp"),
    "model/layers/w_gate": P(None, "fsdp", "tensor"),
    "model/layers/w_up": P(None, "fsdp", "tensor"),
    "model/layers/w_down": P(None, "tensor", "fsdp"),
}


def _batch():
    rng = np.random.default_rng(0)
    ids = rng.integers(0, CFG.vocab_size, (B, T)).astype(np.int32)
    mask = np.ones((B, T), np.int32)
    mask[::2, :3] = 0  # some left padding
    return ids, mask


def _loss_and_grad(model, ids, mask):
    def loss_fn(model):
        logits = model(ids[:, :-1], mask[:, :-1]).astype(jnp.float32)
        logp = jax.nn.log_softmax(logits)
        tok = jnp.take_along_axis(logp, ids[:, 1:, None], axis=-1)[..., 0]
        m = mask[:, 1:].astype(jnp.float32)
        return -(tok * m).sum() / m.sum(), logits

    (loss, logits), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
    return loss, logits, grads


_step = nnx.jit(_loss_and_grad)


@pytest.fixture(scope="module")
def reference():
    mesh = make_mesh(MeshConfig(1, 1, 1), devices=jax.devices()[:1])
    model = create_model(LlamaForCausalLM, CFG, mesh=mesh, seed=3)
    ids, mask = _batch()
    loss, logits, grads = _step(model, jnp.asarray(ids), jnp.asarray(mask))
    return loss, np.asarray(logits), jax.tree.map(np.asarray, grads)


@pytest.mark.parametrize("shape", [(1, 1, 1), (8, 1, 1), (2, 2, 2), (1, 2, 4)])
def test_forward_and_grad_match_single_device(shape, reference):
    devices = jax.devices()[:1] if shape == (1, 1, 1) else jax.devices()
    mesh = make_mesh(MeshConfig(*shape), devices=devices)
    model = create_model(LlamaForCausalLM, CFG, mesh=mesh, seed=3)
    state = nnx.state(model)
    for path, var in jax.tree_util.tree_leaves_with_path(state, is_leaf=lambda x: isinstance(x, nnx.Variable)):
        name = "/".join(str(p.key) for p in path)
        assert var[...].sharding.spec == EXPECTED_SPECS[name], name
        assert var[...].sharding.mesh.shape == dict(zip(("data", "fsdp", "tensor"), shape))
    ids, mask = put_batch(_batch(), mesh)
    assert ids.sharding.spec == P(("data", "fsdp"), None)
    loss, logits, grads = _step(model, ids, mask)
    ref_loss, ref_logits, ref_grads = reference
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(logits), ref_logits, rtol=1e-4, atol=1e-5)
    for g, r in zip(jax.tree.leaves(grads), jax.tree.leaves(ref_grads)):
        np.testing.assert_allclose(np.asarray(g), r, rtol=1e-4, atol=1e-6)


def test_mesh_that_does_not_divide_is_rejected():
    mesh = make_mesh(MeshConfig(2, 1, 4))
    with pytest.raises(ValueError, match="batch size 5 is not divisible by data\\*fsdp"):
        validate_mesh(mesh, batch_size=5)
    with pytest.raises(ValueError, match="num_kv_heads=2 is not divisible by the tensor axis size 4"):
        create_model(LlamaForCausalLM, CFG.replace(num_kv_heads=2), mesh=mesh)
    with pytest.raises(ValueError, match="needs 12 devices, but 8 are available"):
        make_mesh(MeshConfig(3, 2, 2))
    with pytest.raises(ValueError, match="at most one axis may be -1"):
        make_mesh(MeshConfig(-1, -1, 1))



def test_dimension_the_mesh_does_not_divide_is_replicated_with_a_warning(caplog):
    mesh = make_mesh(MeshConfig(2, 1, 4))
    abstract = nnx.eval_shape(lambda: LlamaForCausalLM(CFG.replace(vocab_size=130), rngs=nnx.Rngs(0)))
    with caplog.at_level("WARNING"):
        shardings = state_shardings(nnx.state(abstract), mesh)
    assert shardings["lm_head"].get_value().spec == P("fsdp", None)
    assert shardings["model"]["embed"].get_value().spec == P(None, "fsdp")
    assert shardings["model"]["layers"]["wq"].get_value().spec == P(None, "fsdp", "tensor", None)
    assert "lm_head: dimension 1 of size 130 is not divisible" in caplog.text
