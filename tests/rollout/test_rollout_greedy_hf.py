"""Greedy decoding equals transformers' PyTorch greedy `generate` on the same random weights; a
prompt gives the same greedy tokens alone and inside a padded batch of longer prompts; and the
batch gives the same tokens on a (2, 2, 2) mesh of the 8 CPU devices as on one device."""

import numpy as np
import pytest
import torch
from jax.sharding import NamedSharding, PartitionSpec as P

from rlhf_jax.models.hf_io import load_pretrained
from rlhf_jax.rollout import FinishReason, JaxSampler, PromptBatch, RolloutConfig
from rlhf_jax.sharding import MeshConfig, make_mesh
from tests.models.hf_fixtures import make_hf_model
from tests.rollout.rollout_fixtures import one_device_mesh

PROMPTS = [[1, 45, 12, 88, 7], [1, 3, 9], [1, 60, 61, 62, 63, 64, 65, 66, 67, 68, 69, 70], [1, 23]]
N = 12
EOS = 80  # a token these weights produce mid-response in some rows: rows stop at different steps


CONFIG = RolloutConfig(max_new_tokens=N, greedy=True, eos_token_id=EOS)


@pytest.fixture(scope="module")
def hf_path(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("hf_gqa"))
    return path, make_hf_model("gqa", path, seed=3)


@pytest.fixture(scope="module")
def models(hf_path):
    path, hf = hf_path
    return hf, JaxSampler(load_pretrained(path, mesh=one_device_mesh()), prompt_buckets=(8, 16))


def hf_greedy(hf, prompt):
    with torch.no_grad():
        out = hf.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                          max_new_tokens=N, do_sample=False, eos_token_id=EOS, pad_token_id=0)
    return out[0, len(prompt):].tolist()


def test_greedy_matches_transformers_generate(models):
    hf, sampler = models
    out = sampler.generate(None, PromptBatch.from_lists(PROMPTS), CONFIG)
    ids, mask, lengths = map(np.asarray, (out.response_ids_BxN, out.response_mask_BxN, out.lengths_B))
    reasons = np.asarray(out.finish_reason_B)
    for r, prompt in enumerate(PROMPTS):
        expected = hf_greedy(hf, prompt)  # HF stops the row at EOS (kept), batch of one: no padding
        assert ids[r, :lengths[r]].tolist() == expected, f"row {r}"
        assert mask[r].sum() == lengths[r] == len(expected)
        assert reasons[r] == (FinishReason.EOS if expected[-1] == EOS else FinishReason.LENGTH)
    # the case is a real test: some rows stopped at EOS at different steps, some ran to the end
    assert {FinishReason.EOS, FinishReason.LENGTH} <= set(reasons.tolist())
    assert len(set(lengths[reasons == FinishReason.EOS].tolist())) >= 2


def test_prompt_alone_equals_prompt_in_padded_batch(models):
    _, sampler = models
    config = CONFIG
    alone = sampler.generate(None, PromptBatch.from_lists(PROMPTS[1:2]), config)  # bucket 8, B=1
    # the same prompt, right-padded inside a batch whose longest prompt picks bucket 16
    ids = np.zeros((4, 14), np.int32)
    mask = np.zeros((4, 14), np.int32)
    for r, p in enumerate(PROMPTS):
        ids[r, :len(p)], mask[r, :len(p)] = p, 1
    batched = sampler.generate(None, PromptBatch(ids, mask), config)
    assert alone.prompt_ids_BxP.shape[1] == 8 and batched.prompt_ids_BxP.shape[1] == 16
    np.testing.assert_array_equal(np.asarray(alone.response_ids_BxN)[0],
                                  np.asarray(batched.response_ids_BxN)[1])
    np.testing.assert_allclose(np.asarray(alone.logps_BxN)[0], np.asarray(batched.logps_BxN)[1], atol=1e-5)
    # re-padding put each prompt flush right, tokens in order
    assert np.asarray(batched.prompt_ids_BxP)[1, -3:].tolist() == PROMPTS[1]
    assert np.asarray(batched.prompt_mask_BxP)[1].sum() == 3


def test_sharded_equals_single_device(hf_path, models):
    _, sampler = models
    mesh = make_mesh(MeshConfig(2, 2, 2))
    sharded = JaxSampler(load_pretrained(hf_path[0], mesh=mesh), prompt_buckets=(8, 16))
    wq = sharded.params["model"]["layers"]["wq"].get_value()
    assert wq.sharding.spec == P(None, None, "tensor", None)  # heads over tensor (SAMPLING_RULES)
    prompts = PromptBatch.from_lists(PROMPTS)
    out = sharded.generate(None, prompts, CONFIG)
    ref = sampler.generate(None, prompts, CONFIG)
    rows = NamedSharding(mesh, P(("data", "fsdp"), None))  # rows over data * fsdp
    assert out.response_ids_BxN.sharding.is_equivalent_to(rows, 2)
    np.testing.assert_array_equal(np.asarray(out.response_ids_BxN), np.asarray(ref.response_ids_BxN))
    np.testing.assert_array_equal(np.asarray(out.lengths_B), np.asarray(ref.lengths_B))
    np.testing.assert_allclose(np.asarray(out.logps_BxN), np.asarray(ref.logps_BxN), atol=1e-5)
    with pytest.raises(ValueError, match="prompts: batch size 3 is not divisible by data\\*fsdp"):
        sharded.generate(None, PromptBatch.from_lists(PROMPTS[:3]), CONFIG)
