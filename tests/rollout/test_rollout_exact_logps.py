"""The sampler's log-probs are the trainer's: a full training forward on the produced sequences
gives the same per-token log-probs (fp32, 1e-5). End to end, sampled tokens stay inside the
top-k / top-p set at every step and first-token frequencies match the renormalized distribution."""

import jax
import numpy as np
import pytest

from rlhf_jax.rollout import JaxSampler, PromptBatch, RolloutConfig
from tests.rollout.rollout_fixtures import (
    chi2_critical, forward_logprobs, one_device_mesh, reference_filter, sharpened, tiny_model)

PROMPTS = [[5, 6, 7], [8, 9, 10, 11, 12, 13], [3] * 10, [40, 41]]


@pytest.fixture(scope="module")
def model():
    return sharpened(tiny_model(seed=1), 30.0)  # peaked distributions: the filters cut real mass


def response_logprobs(model, out):
    """[B, N, V] float64 log-softmax predicting each response slot, from a full forward."""
    tokens, mask = out.sequences()
    P = out.prompt_ids_BxP.shape[1]
    return forward_logprobs(model, tokens, mask)[:, P - 1:]


def test_logps_equal_training_forward(model):
    sampler = JaxSampler(model, prompt_buckets=(16,))
    config = RolloutConfig(max_new_tokens=10, temperature=0.8, top_k=20, top_p=0.9, eos_token_id=4)
    out = sampler.generate(None, PromptBatch.from_lists(PROMPTS), config, key=jax.random.key(1))
    ids, mask = np.asarray(out.response_ids_BxN), np.asarray(out.response_mask_BxN)
    logp_all = response_logprobs(model, out)
    expected = np.take_along_axis(logp_all, ids[..., None], axis=-1)[..., 0]
    np.testing.assert_allclose(np.asarray(out.logps_BxN)[mask], expected[mask], atol=1e-5)
    # the sampling distribution: the same logits filtered and renormalized
    keep, q = reference_filter(logp_all[mask], 0.8, 20, 0.9)
    rows = np.arange(mask.sum())
    assert keep[rows, ids[mask]].all()
    np.testing.assert_allclose(np.asarray(out.sampling_logps_BxN)[mask], np.log(q[rows, ids[mask]]), atol=1e-4)
    # slots after the end are padding with zero log-probs
    assert (ids[~mask] == 0).all()
    assert (np.asarray(out.logps_BxN)[~mask] == 0).all() and (np.asarray(out.sampling_logps_BxN)[~mask] == 0).all()
    # the sampler's own scoring forward agrees with the reference forward, prompt included
    tokens, seq_mask = out.sequences()
    scored = np.asarray(sampler.logps(None, tokens, seq_mask))
    P = out.prompt_ids_BxP.shape[1]
    np.testing.assert_allclose(scored[:, P:], np.asarray(out.logps_BxN), atol=1e-5)
    ref_all = forward_logprobs(model, tokens, seq_mask)
    ref = np.take_along_axis(ref_all, np.asarray(tokens)[:, 1:, None], axis=-1)[..., 0]
    label_mask = np.asarray(seq_mask)[:, 1:] & (np.cumsum(np.asarray(seq_mask), axis=1)[:, :-1] > 0)
    np.testing.assert_allclose(scored[:, 1:], np.where(label_mask, ref, 0.0), atol=1e-5)
    assert (scored[:, 0] == 0).all()


def test_sampled_tokens_stay_in_the_allowed_set_and_match_frequencies(model):
    temperature, top_k, top_p = 1.3, 8, 0.8
    B, N = 2048, 3
    sampler = JaxSampler(model, prompt_buckets=(8,))
    prompts = PromptBatch.from_lists([[17, 18, 19, 20]] * B)
    out = sampler.generate(None, prompts, RolloutConfig(
        max_new_tokens=N, temperature=temperature, top_k=top_k, top_p=top_p), key=jax.random.key(5))
    ids = np.asarray(out.response_ids_BxN)
    keep, q = reference_filter(response_logprobs(model, out).reshape(B * N, -1), temperature, top_k, top_p)
    drawn_ok = keep[np.arange(B * N), ids.reshape(-1)]
    assert drawn_ok.all(), f"{(~drawn_ok).sum()} tokens outside the top-k/top-p set"
    # every row shares the first-step distribution: its empirical frequencies match it
    keep0, q0 = keep[0], q[0]
    assert 2 < keep0.sum() < top_k  # top-p cut below top-k: both filters are exercised
    counts = np.bincount(ids[:, 0], minlength=q0.shape[0])[keep0]
    expected = B * q0[keep0]
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert chi2 < chi2_critical(int(keep0.sum()) - 1), (counts, expected.round(1))
