"""The sampler's log-probs are the trainer's: a full training forward on the produced sequences
gives the same per-token log-probs (fp32, 1e-5). Sampled tokens stay inside the top-k / top-p set
at every step, and first-token frequencies match the renormalized distribution.

One rollout serves both tests: 2040 rows of one prompt (they share the first-step distribution,
for the frequency test) and 8 rows of other lengths (padding), with EOS on."""

import jax
import numpy as np
import pytest

from rlhf_jax.rollout import FinishReason, JaxSampler, PromptBatch, RolloutConfig
from tests.rollout.rollout_fixtures import (
    chi2_critical, forward_logprobs, reference_filter, tiny_model)

SAME, OTHERS = [17, 18, 19, 20], [[5, 6, 7], [8, 9, 10, 11, 12, 13], [3] * 8, [40], [41, 42], [7] * 5,
                                  [60, 61, 62, 63, 64, 65, 66], [9, 1]]
B_SAME = 2040
CONFIG = RolloutConfig(max_new_tokens=6, temperature=1.3, top_k=8, top_p=0.8, eos_token_id=4)


@pytest.fixture(scope="module")
def rollout():
    model = tiny_model(seed=1, head_scale=30.0)  # peaked distributions: the filters cut real mass
    sampler = JaxSampler(model, prompt_buckets=(8,))
    out = sampler.generate(None, PromptBatch.from_lists([SAME] * B_SAME + OTHERS), CONFIG,
                           key=jax.random.key(5))
    tokens, mask = out.sequences()
    P = out.prompt_ids_BxP.shape[1]
    logp_all = forward_logprobs(model, tokens, mask)  # [B, T-1, V] from the training forward
    return sampler, out, logp_all, logp_all[:, P - 1:]


def test_logps_equal_training_forward(rollout):
    sampler, out, logp_all, response_logp_all = rollout
    ids, mask = np.asarray(out.response_ids_BxN), np.asarray(out.response_mask_BxN)
    reasons = np.asarray(out.finish_reason_B)
    assert {FinishReason.EOS, FinishReason.LENGTH} <= set(reasons.tolist())  # rows ended both ways
    expected = np.take_along_axis(response_logp_all, ids[..., None], axis=-1)[..., 0]
    np.testing.assert_allclose(np.asarray(out.logps_BxN)[mask], expected[mask], atol=1e-5)
    # the sampling distribution: the same logits, filtered and renormalized
    _, q = reference_filter(response_logp_all[mask], CONFIG.temperature, CONFIG.top_k, CONFIG.top_p)
    np.testing.assert_allclose(np.asarray(out.sampling_logps_BxN)[mask],
                               np.log(q[np.arange(mask.sum()), ids[mask]]), atol=1e-4)
    # slots after the end are padding with zero log-probs
    assert (ids[~mask] == CONFIG.pad_token_id).all()
    assert (np.asarray(out.logps_BxN)[~mask] == 0).all()
    assert (np.asarray(out.sampling_logps_BxN)[~mask] == 0).all()
    # the sampler's own scoring forward (Rollout.logps) agrees everywhere, prompt included
    tokens, seq_mask = map(np.asarray, out.sequences())
    scored = np.asarray(sampler.logps(None, tokens, seq_mask))
    ref = np.take_along_axis(logp_all, tokens[:, 1:, None], axis=-1)[..., 0]
    has_label = seq_mask[:, 1:] & (np.cumsum(seq_mask, axis=1)[:, :-1] > 0)
    np.testing.assert_allclose(scored[:, 1:], np.where(has_label, ref, 0.0), atol=1e-5)
    assert (scored[:, 0] == 0).all()
    P = out.prompt_ids_BxP.shape[1]
    np.testing.assert_allclose(scored[:, P:], np.asarray(out.logps_BxN), atol=1e-5)


def test_sampled_tokens_stay_in_the_allowed_set_and_match_frequencies(rollout):
    _, out, _, response_logp_all = rollout
    ids, mask = np.asarray(out.response_ids_BxN), np.asarray(out.response_mask_BxN)
    keep, q = reference_filter(response_logp_all[mask], CONFIG.temperature, CONFIG.top_k, CONFIG.top_p)
    drawn_ok = keep[np.arange(mask.sum()), ids[mask]]
    assert drawn_ok.all(), f"{(~drawn_ok).sum()} tokens outside the top-k/top-p set"
    # rows of the same prompt share the first-step distribution: frequencies match it
    keep0, q0 = keep[0], q[0]
    assert 2 < keep0.sum() < CONFIG.top_k  # top-p cut below top-k: both filters are exercised
    counts = np.bincount(ids[:B_SAME, 0], minlength=q0.shape[0])[keep0]
    expected = B_SAME * q0[keep0]
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert chi2 < chi2_critical(int(keep0.sum()) - 1), (counts, expected.round(1))
