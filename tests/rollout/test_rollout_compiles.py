"""Compilation and memory: one program per prompt bucket however the lengths and sampling knobs
vary; new params and new temperatures reuse it; nothing stays allocated between calls; bad
inputs fail with errors naming the argument."""

import jax
import numpy as np
import pytest
from flax import nnx

from rlhf_jax.rollout import JaxSampler, PromptBatch, RolloutConfig
from tests.rollout.rollout_fixtures import TINY, tiny_model

B, N = 2, 6


@pytest.fixture(scope="module")
def model():
    return tiny_model(seed=4)


def prompts_of_length(rng, n):
    return PromptBatch.from_lists([rng.integers(3, 90, size=n).tolist(),
                                   rng.integers(3, 90, size=1).tolist()])


def test_compilations_stay_at_the_bucket_count_and_nothing_grows(model):
    sampler = JaxSampler(model, prompt_buckets=(4, 8))
    rng = np.random.default_rng(0)
    key = jax.random.key(0)
    lengths = [1, 7, 3, 8, 4, 5, 2, 6, 8, 1]
    live = None
    for i, n in enumerate(lengths):
        # temperature, top_p, EOS and pad ids are traced knobs: they change freely
        config = RolloutConfig(max_new_tokens=N, temperature=0.5 + 0.1 * i, top_p=0.9 - 0.05 * i,
                               top_k=5, eos_token_id=int(rng.integers(3, 90)), pad_token_id=i)
        out = sampler.generate(None, prompts_of_length(rng, n), config, key=jax.random.fold_in(key, i))
        assert out.prompt_ids_BxP.shape == (B, 4 if n <= 4 else 8)
        assert out.response_ids_BxN.shape == (B, N)
        jax.block_until_ready(out)
        del out
        if i == 3:  # both buckets compiled: from here on no call may leave arrays alive
            live = {id(a) for a in jax.live_arrays()}
    grown = [a.shape for a in jax.live_arrays() if id(a) not in live]
    assert grown == [], f"arrays left alive by generate: {grown}"
    assert sampler.num_compilations == 2
    # new weights of the same shapes: outputs change, nothing recompiles
    fixed = prompts_of_length(rng, 3)
    before = sampler.generate(None, fixed, config, key=key)
    sampler.update_params(nnx.state(tiny_model(seed=4, head_scale=20.0)))
    after = sampler.generate(None, fixed, config, key=key)
    assert not np.array_equal(np.asarray(before.logps_BxN), np.asarray(after.logps_BxN))
    assert sampler.num_compilations == 2
    # params passed to generate are used for that call only
    again = sampler.generate(nnx.state(model), fixed, config, key=key)
    assert sampler.num_compilations == 2
    np.testing.assert_array_equal(np.asarray(again.logps_BxN), np.asarray(before.logps_BxN))
    held = sampler.generate(None, fixed, config, key=key)
    np.testing.assert_array_equal(np.asarray(held.logps_BxN), np.asarray(after.logps_BxN))


def test_bad_inputs_are_named(model):
    sampler = JaxSampler(model, prompt_buckets=(4,))
    ok = RolloutConfig(max_new_tokens=2, greedy=True)
    one = PromptBatch.from_lists([[1]])
    ones = np.ones((2, 3), np.int32)
    cases = [
        (PromptBatch.from_lists([[1, 2, 3, 4, 5]]), ok,
         "prompt of 5 tokens is longer than the largest of prompt_buckets"),
        (PromptBatch(ones, np.array([[1, 1, 1], [0, 0, 0]])), ok, "every row needs at least one token"),
        (PromptBatch.from_lists([[1, 200]]), ok, r"prompts.ids_BxP: token ids must be in \[0, 97\)"),
        (PromptBatch(ones, np.ones((2, 4), np.int32)), ok, "must be the same"),
        (one, RolloutConfig(max_new_tokens=2, eos_token_id=97, greedy=True),
         r"RolloutConfig.eos_token_id=97 is outside the vocabulary"),
        (one, RolloutConfig(max_new_tokens=2), "key: a PRNG key is required"),
        (one, RolloutConfig(max_new_tokens=TINY.max_position_embeddings, greedy=True),
         "exceeds the model's max_position_embeddings"),
    ]
    for prompts, config, match in cases:
        with pytest.raises(ValueError, match=match):
            sampler.generate(None, prompts, config)
    with pytest.raises(ValueError, match=r"params\['lm_head'\].*expected"):
        sampler.update_params(nnx.state(tiny_model(seed=0, cfg=TINY.replace(vocab_size=98))))
    with pytest.raises(ValueError, match="prompt_buckets must be strictly increasing"):
        JaxSampler(model, prompt_buckets=(8, 4))
    for kwargs, match in [(dict(max_new_tokens=0), "RolloutConfig.max_new_tokens must be an int >= 1"),
                          (dict(temperature=0.0), "RolloutConfig.temperature must be"),
                          (dict(top_p=0.0), "RolloutConfig.top_p must be"),
                          (dict(top_k=-2), "RolloutConfig.top_k must be"),
                          (dict(stop_token_ids=[3]), "RolloutConfig.stop_token_ids must be a tuple"),
                          (dict(pad_token_id=-1), "RolloutConfig.pad_token_id must be a token id")]:
        with pytest.raises(ValueError, match=match):
            RolloutConfig(**kwargs)
