"""Model properties: depth-independent compile, remat, dtypes, causality, clear loading errors."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from rlhf_jax.models import LlamaConfig, LlamaForCausalLM, create_model
from rlhf_jax.models.hf_io import check_vocab, load_pretrained, load_tokenizer, save_pretrained
from rlhf_jax.sharding import MeshConfig, make_mesh
from tests.models.hf_fixtures import make_hf_model

CFG = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_layers=2, num_heads=4,
                  num_kv_heads=2, max_position_embeddings=64)
ONE = make_mesh(MeshConfig(1, 1, 1), devices=jax.devices()[:1])


def _ids(B=2, T=9, seed=0):
    return jnp.asarray(np.random.default_rng(seed).integers(0, CFG.vocab_size, (B, T)), jnp.int32)


def test_program_size_does_not_grow_with_depth():
    def hlo_size(layers):
        model = create_model(LlamaForCausalLM, CFG.replace(num_layers=layers), mesh=ONE)
        graphdef, state = nnx.split(model)
        fwd = jax.jit(lambda s, ids: nnx.merge(graphdef, s)(ids))
        return len(fwd.lower(state, _ids()).as_text())

    small, deep = hlo_size(2), hlo_size(16)
    assert abs(deep - small) < 0.02 * small, (small, deep)  # one scanned layer body either way


def test_remat_policies_give_the_same_gradients():
    ids = _ids()

    def grads(remat):
        model = LlamaForCausalLM(CFG.replace(remat=remat), rngs=nnx.Rngs(4))
        loss = lambda m: jnp.mean(jax.nn.log_softmax(m(ids))[..., 0])  # noqa: E731
        return jax.tree.leaves(nnx.jit(nnx.grad(loss))(model))

    ref = grads("none")
    for policy in ("full", "dots_no_batch"):
        for g, r in zip(grads(policy), ref):
            np.testing.assert_allclose(np.asarray(g), np.asarray(r), rtol=1e-5, atol=1e-7)


def test_bf16_compute_with_fp32_params_tracks_fp32():
    ref = LlamaForCausalLM(CFG, rngs=nnx.Rngs(2))
    low = LlamaForCausalLM(CFG.replace(dtype="bfloat16"), rngs=nnx.Rngs(2))
    assert low.model.layers.wq[...].dtype == jnp.float32
    out = low(_ids())
    assert out.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(out, np.float32), np.asarray(ref(_ids())), atol=5e-2)
    half = nnx.eval_shape(lambda: LlamaForCausalLM(CFG.replace(dtype="bfloat16", param_dtype="bfloat16"),
                                                   rngs=nnx.Rngs(0)))
    assert half.model.embed.get_value().dtype == jnp.bfloat16


def test_causality_later_tokens_never_change_earlier_logits():
    model = LlamaForCausalLM(CFG, rngs=nnx.Rngs(5))
    ids = _ids(T=10)
    changed = ids.at[:, 6:].set((ids[:, 6:] + 1) % CFG.vocab_size)
    a, b = np.asarray(model(ids)), np.asarray(model(changed))
    np.testing.assert_array_equal(a[:, :6], b[:, :6])
    assert np.abs(a[:, 6:] - b[:, 6:]).max() > 1e-4


def test_input_shape_errors_name_the_argument():
    model = nnx.eval_shape(lambda: LlamaForCausalLM(CFG, rngs=nnx.Rngs(0)))
    with pytest.raises(ValueError, match=r"attention_mask shape \(2, 3\) does not match input_ids shape \(2, 9\)"):
        model(_ids(), jnp.ones((2, 3)))
    with pytest.raises(ValueError, match="input_ids must be \\[B, T\\]"):
        model(jnp.ones((9,), jnp.int32))


@pytest.fixture
def hf_dir(tmp_path):
    make_hf_model("gqa", str(tmp_path))
    return tmp_path


def test_unknown_architecture_is_rejected(hf_dir):
    cfg = json.loads((hf_dir / "config.json").read_text())
    cfg["model_type"], cfg["architectures"] = "gpt_neox", ["GPTNeoXForCausalLM"]
    (hf_dir / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="model_type='gpt_neox' is not a LLaMA-family architecture"):
        load_pretrained(str(hf_dir))


def test_missing_and_misshapen_tensors_are_named(hf_dir, tmp_path_factory):
    from safetensors.numpy import load_file, save_file

    tensors = load_file(str(hf_dir / "model.safetensors"))
    del tensors["model.layers.1.mlp.up_proj.weight"]
    save_file(tensors, str(hf_dir / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(KeyError, match="missing tensor 'model.layers.1.mlp.up_proj.weight'"):
        load_pretrained(str(hf_dir))
    tensors["model.layers.1.mlp.up_proj.weight"] = np.zeros((3, 3), np.float32)
    save_file(tensors, str(hf_dir / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"tensor 'model.layers.1.mlp.up_proj.weight' has shape \(3, 3\), expected \(64, 32\)"):
        load_pretrained(str(hf_dir))


def test_no_weights_and_bad_config_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_pretrained(str(tmp_path))
    (tmp_path / "config.json").write_text('{"model_type": "llama",\n "vocab_size": }')
    with pytest.raises(ValueError, match="config.json: invalid JSON at line 2"):
        load_pretrained(str(tmp_path))


def test_tokenizer_trained_here_loads_and_vocab_mismatch_is_reported(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", "<s>", "</s>", "<pad>"])
    tok.train_from_iterator(["the quick brown fox jumps over the lazy dog"] * 50, trainer)
    PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                            unk_token="<unk>").save_pretrained(str(tmp_path / "tok"))
    n = len(load_tokenizer(str(tmp_path / "tok")))
    assert load_tokenizer(str(tmp_path / "tok"), model_config=CFG.replace(vocab_size=n)).encode("the fox")
    with pytest.raises(ValueError, match=f"tokenizer has {n} tokens but the model's vocab_size is {n - 1}"):
        load_tokenizer(str(tmp_path / "tok"), model_config=CFG.replace(vocab_size=n - 1))
    model = create_model(LlamaForCausalLM, CFG.replace(vocab_size=n), mesh=ONE)
    save_pretrained(model, str(tmp_path / "m"), tokenizer=load_tokenizer(str(tmp_path / "tok")))
    check_vocab(load_tokenizer(str(tmp_path / "m")), load_pretrained(str(tmp_path / "m")).cfg)
    assert os.path.exists(tmp_path / "m" / "tokenizer.json")


def test_packed_row_equals_its_sequences_run_alone():
    model = LlamaForCausalLM(CFG, rngs=nnx.Rngs(6))
    a, b = _ids(B=1, T=5, seed=7), _ids(B=1, T=4, seed=8)
    packed = jnp.concatenate([a, b, jnp.zeros((1, 3), jnp.int32)], axis=1)
    segments = jnp.asarray([[1] * 5 + [2] * 4 + [0] * 3])
    positions = jnp.asarray([list(range(5)) + list(range(4)) + [0] * 3])
    out = np.asarray(model(packed, segments > 0, positions, segment_ids=segments))
    np.testing.assert_allclose(out[0, :5], np.asarray(model(a))[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out[0, 5:9], np.asarray(model(b))[0], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="segment_ids .* need explicit positions"):
        model(packed, segment_ids=segments)


def test_fused_attention_path_composes_causal_and_mask_like_xla(monkeypatch):
    """attention='cudnn' passes is_causal plus the padding / segment / window mask to the fused kernel.
    With the kernel swapped for XLA's (no GPU here), that composition gives bitwise XLA's logits on
    left-padded, packed and sliding-window inputs; decoding with a KV cache keeps XLA's attention."""
    from rlhf_jax.models import layers

    cfg = CFG.replace(dtype="bfloat16", sliding_window=5)
    ids = _ids(B=3, T=12, seed=4)
    mask = jnp.ones_like(ids).at[0, :4].set(0)
    segments = jnp.asarray([[1] * 12, [1] * 5 + [2] * 7, [1] * 12])
    positions = jnp.asarray([list(range(12)), list(range(5)) + list(range(7)), list(range(12))])
    xla = create_model(LlamaForCausalLM, cfg, mesh=ONE, seed=1)
    fused = create_model(LlamaForCausalLM, cfg.replace(attention="cudnn"), mesh=ONE, seed=1)
    with pytest.raises(ValueError, match="attention='cudnn' runs on a gpu backend only"):
        fused(ids, mask)
    monkeypatch.setitem(layers.FUSED_ATTENTION, "cudnn", (jax.default_backend(), "xla"))
    np.testing.assert_array_equal(fused(ids, mask), xla(ids, mask))
    np.testing.assert_array_equal(fused(ids, positions=positions, segment_ids=segments),
                                  xla(ids, positions=positions, segment_ids=segments))
    cache = fused.init_cache(3, 16)
    logits, _ = fused.forward_with_cache(ids[:, :1], cache)  # T=1 query against 16 slots: XLA's kernel
    assert logits.shape == (3, 1, cfg.vocab_size)


def test_fused_attention_config_errors_are_named():
    with pytest.raises(ValueError, match="attention='cudnn' needs dtype bfloat16 or float16"):
        CFG.replace(attention="cudnn")
    with pytest.raises(ValueError, match="LlamaConfig.attention='flash'; choose 'xla', 'cudnn' or 'splash'"):
        CFG.replace(attention="flash")


def test_rounding_weights_to_the_compute_dtype_changes_no_output():
    """Every weight is cast to the compute dtype before use, so float32 weights computing in bf16 give
    bitwise the outputs of the same weights rounded to bf16: why JaxSampler keeps a bf16 copy
    (`sampling_dtype`) of a float32 policy that computes in bf16, at half the memory."""
    from rlhf_jax.rollout import JaxSampler, PromptBatch, RolloutConfig
    from rlhf_jax.rollout.jax_sampler import sampling_dtype

    cfg = CFG.replace(dtype="bfloat16")
    ids, mask = _ids(B=2, T=9, seed=7), jnp.ones((2, 9), jnp.int32).at[1, :3].set(0)
    # (the causal LM only: LlamaForScore's scalar head computes in float32 on purpose)
    f32 = create_model(LlamaForCausalLM, cfg, mesh=ONE, seed=2)
    graphdef, state = nnx.split(f32)
    rounded = nnx.merge(graphdef, jax.tree.map(lambda x: x.astype(jnp.bfloat16), state))
    np.testing.assert_array_equal(np.asarray(f32(ids, mask)), np.asarray(rounded(ids, mask)))
    assert sampling_dtype(cfg) == jnp.bfloat16 and sampling_dtype(CFG) == jnp.float32
    assert sampling_dtype(cfg.replace(param_dtype="bfloat16", dtype="float32")) == jnp.bfloat16
    policy = create_model(LlamaForCausalLM, cfg, mesh=ONE, seed=2)
    sampler = JaxSampler(policy, prompt_buckets=(16,))
    assert {x.dtype for x in jax.tree.leaves(sampler.params)} == {jnp.dtype(jnp.bfloat16)}
    graphdef, state = nnx.split(policy)
    bf16_policy = create_model(LlamaForCausalLM, cfg.replace(param_dtype="bfloat16"), mesh=ONE, seed=2)
    nnx.update(bf16_policy, jax.tree.map(lambda x: x.astype(jnp.bfloat16), state))
    prompts, greedy = PromptBatch(np.asarray(ids), np.asarray(mask)), RolloutConfig(max_new_tokens=4, greedy=True)
    a = sampler.generate(None, prompts, greedy)
    b = JaxSampler(bf16_policy, prompt_buckets=(16,)).generate(None, prompts, greedy)
    np.testing.assert_array_equal(np.asarray(a.response_ids_BxN), np.asarray(b.response_ids_BxN))
    np.testing.assert_array_equal(np.asarray(a.logps_BxN), np.asarray(b.logps_BxN))


def test_fused_attention_sources_are_checked_before_building(monkeypatch):
    """An experiment's model source with a fused kernel off its backend (or cuDNN without bf16) fails before
    any weight is made, naming the config key."""
    from rlhf_jax.models import layers
    from rlhf_jax.training.sources import ModelSource, build_model

    for kind, backend in (("cudnn", "gpu"), ("splash", "tpu")):
        with pytest.raises(ValueError, match=rf"actor.attention='{kind}' runs on a {backend} backend only, "
                                             r"this is 'cpu'; set actor.attention=xla"):
            build_model(ModelSource(attention=kind, dtype="bfloat16"), mesh=ONE, key="actor")
    monkeypatch.setitem(layers.FUSED_ATTENTION, "cudnn", (jax.default_backend(), "xla"))
    with pytest.raises(ValueError, match=r"critic.attention='cudnn' needs critic.dtype=bfloat16"):
        build_model(ModelSource(attention="cudnn"), mesh=ONE, key="critic")
    assert build_model(ModelSource(attention="cudnn", dtype="bfloat16"), mesh=ONE).cfg.attention == "cudnn"
