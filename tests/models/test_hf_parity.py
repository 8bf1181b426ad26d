"""Our Flax LLaMA against transformers' PyTorch LLaMA on the same random tiny weights."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from rlhf_jax.models import LlamaForCausalLM, LlamaForScore
from rlhf_jax.models.hf_io import load_pretrained, save_pretrained
from tests.models.hf_fixtures import CONFIGS, make_hf_model

B, T = 3, 11


def _ids(vocab, seed=0):
    return np.random.default_rng(seed).integers(3, vocab, size=(B, T))


def _close(ours, ref, rtol=1e-4):
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    scale = np.abs(ref).max()
    np.testing.assert_allclose(ours, ref, rtol=rtol, atol=rtol * scale)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_causal_lm_logits_match_transformers(name, tmp_path):
    hf = make_hf_model(name, str(tmp_path))
    model = load_pretrained(str(tmp_path))
    assert isinstance(model, LlamaForCausalLM)
    ids = _ids(CONFIGS[name]["vocab_size"])
    with torch.no_grad():
        ref = hf(torch.tensor(ids)).logits.numpy()
    _close(model(jnp.asarray(ids)), ref)


def test_left_padded_rows_match_each_row_alone_and_transformers(tmp_path):
    hf = make_hf_model("gqa", str(tmp_path))
    model = load_pretrained(str(tmp_path))
    ids = _ids(97, seed=1)
    lengths = [T, 7, 4]
    mask = np.zeros((B, T), np.int32)
    for b, n in enumerate(lengths):
        mask[b, T - n:] = 1
    ids = np.where(mask == 1, ids, 0)
    batched = np.asarray(model(jnp.asarray(ids), jnp.asarray(mask)))
    positions = np.maximum(np.cumsum(mask, 1) - 1, 0)
    with torch.no_grad():
        ref = hf(torch.tensor(ids), attention_mask=torch.tensor(mask),
                 position_ids=torch.tensor(positions)).logits.numpy()
    for b, n in enumerate(lengths):
        alone = np.asarray(model(jnp.asarray(ids[b:b + 1, T - n:])))[0]
        _close(batched[b, T - n:], alone, rtol=1e-5)
        _close(batched[b, T - n:], ref[b, T - n:])
        assert np.isfinite(batched[b]).all()


def test_mistral_sliding_window_matches_transformers(tmp_path):
    hf = make_hf_model("gqa", str(tmp_path), mistral_window=4)
    model = load_pretrained(str(tmp_path))
    assert model.cfg.sliding_window == 4
    ids = _ids(97, seed=2)
    with torch.no_grad():
        ref = hf(torch.tensor(ids)).logits.numpy()
    _close(model(jnp.asarray(ids)), ref)
    # The window must matter here: the same weights with full attention give other logits.
    full = load_pretrained(str(tmp_path))
    full.cfg = full.cfg.replace(sliding_window=None)
    full.model.cfg = full.model.layers.cfg = full.cfg
    assert np.abs(np.asarray(full(jnp.asarray(ids))) - ref).max() > 1e-3


def test_score_model_matches_sequence_classification(tmp_path):
    hf = make_hf_model("gqa", str(tmp_path), score=True)
    model = load_pretrained(str(tmp_path))
    assert isinstance(model, LlamaForScore)
    ids = _ids(97, seed=3)
    mask = np.ones((B, T), np.int32)
    mask[1, 8:] = 0  # right padding: HF scores the last non-pad token
    ids = np.where(mask == 1, ids, 0)  # pad_token_id = 0
    with torch.no_grad():
        ref = hf(torch.tensor(ids), attention_mask=torch.tensor(mask)).logits.numpy()[:, 0]
    out = model(jnp.asarray(ids), jnp.asarray(mask))
    assert out.values.shape == (B, T) and out.scores.shape == (B,)
    _close(out.scores, ref)


@pytest.mark.parametrize("name", ["gqa", "tied"])
def test_round_trip_ours_to_hf_to_ours_is_exact(name, tmp_path):
    make_hf_model(name, str(tmp_path / "orig"))
    ours = load_pretrained(str(tmp_path / "orig"))
    save_pretrained(ours, str(tmp_path / "saved"))
    back = load_pretrained(str(tmp_path / "saved"))
    a = jax.tree.leaves(jax.tree.map(np.asarray, nnx.state(ours)))
    b = jax.tree.leaves(jax.tree.map(np.asarray, nnx.state(back)))
    assert len(a) == len(b)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    # and PyTorch loads what we wrote, giving our logits
    import transformers
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "saved")).float().eval()
    ids = _ids(CONFIGS[name]["vocab_size"], seed=4)
    with torch.no_grad():
        ref = hf(torch.tensor(ids)).logits.numpy()
    _close(ours(jnp.asarray(ids)), ref)


def test_sharded_save_writes_index_and_loads(tmp_path):
    make_hf_model("mha", str(tmp_path / "orig"))
    ours = load_pretrained(str(tmp_path / "orig"))
    save_pretrained(ours, str(tmp_path / "saved"), max_shard_bytes=20_000, dtype="bfloat16")
    files = os.listdir(tmp_path / "saved")
    assert "model.safetensors.index.json" in files
    assert sum(f.endswith(".safetensors") for f in files) > 1
    back = load_pretrained(str(tmp_path / "saved"))
    ids = jnp.asarray(_ids(97, seed=5))
    _close(back(ids), ours(ids), rtol=5e-2)  # bf16 storage


def test_score_head_initialized_from_causal_lm(tmp_path):
    make_hf_model("mha", str(tmp_path))
    scorer = load_pretrained(str(tmp_path), head="score")
    lm = load_pretrained(str(tmp_path))
    assert isinstance(scorer, LlamaForScore)
    np.testing.assert_array_equal(np.asarray(scorer.model.embed[...]), np.asarray(lm.model.embed[...]))
    assert np.abs(np.asarray(scorer.score[...])).sum() > 0
