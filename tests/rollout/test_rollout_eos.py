"""End tokens: each row stops on its own at its first EOS or stop token (kept, mask 1), is frozen
afterwards (pad ids, mask 0, zero log-probs), and gets the right length and finish reason."""

import numpy as np
import pytest

from rlhf_jax.rollout import FinishReason, JaxSampler, PromptBatch, RolloutConfig
from tests.rollout.rollout_fixtures import tiny_model

PROMPTS = [[5, 6, 7], [8, 9, 10, 11], [30, 31], [50, 51, 52, 53, 54], [70], [71, 72, 73]]
N = 10
PAD = 1
NEVER = 0  # a token these weights never produce for PROMPTS (the `free` fixture checks it)


@pytest.fixture(scope="module")
def sampler():
    return JaxSampler(tiny_model(seed=2), prompt_buckets=(8,))


@pytest.fixture(scope="module")
def free(sampler):
    """Greedy responses with end tokens these rows never produce: every row runs N steps. (End
    token ids are traced, so this is the same compiled program as the tests' own.)"""
    out = sampler.generate(None, PromptBatch.from_lists(PROMPTS), RolloutConfig(
        max_new_tokens=N, greedy=True, eos_token_id=NEVER, stop_token_ids=(NEVER,), pad_token_id=PAD))
    assert (np.asarray(out.lengths_B) == N).all()
    return out


def test_rows_stop_independently(sampler, free):
    prompts = PromptBatch.from_lists(PROMPTS)
    free_ids = np.asarray(free.response_ids_BxN)
    # End tokens chosen from what the rows produce anyway, so stops happen at different steps:
    # EOS = row 0's 3rd token; a stop token = the first token of row 1 not seen in row 0.
    eos = int(free_ids[0, 2])
    stop = next(int(t) for t in free_ids[1] if t not in free_ids[0])
    expected_len, expected_reason = [], []
    for row in free_ids:
        hits = [j for j, t in enumerate(row) if t in (eos, stop)]
        expected_len.append(hits[0] + 1 if hits else N)
        expected_reason.append(FinishReason.LENGTH if not hits else
                               FinishReason.EOS if row[hits[0]] == eos else FinishReason.STOP)
    assert {FinishReason.EOS, FinishReason.STOP, FinishReason.LENGTH} <= set(expected_reason)
    assert len(set(expected_len)) >= 3

    out = sampler.generate(None, prompts, RolloutConfig(
        max_new_tokens=N, greedy=True, eos_token_id=eos, stop_token_ids=(stop,), pad_token_id=PAD))
    ids, mask = np.asarray(out.response_ids_BxN), np.asarray(out.response_mask_BxN)
    lengths, reasons = np.asarray(out.lengths_B), np.asarray(out.finish_reason_B)
    np.testing.assert_array_equal(lengths, expected_len)
    np.testing.assert_array_equal(reasons, expected_reason)
    np.testing.assert_array_equal(mask, np.arange(N)[None, :] < lengths[:, None])
    # before its end a row is unaffected by the others stopping; after it, pure padding
    np.testing.assert_array_equal(np.where(mask, ids, PAD), np.where(mask, free_ids, PAD))
    assert (ids[~mask] == PAD).all()
    logps = np.asarray(out.logps_BxN)
    assert (logps[~mask] == 0).all() and (logps[mask] < 0).all()
    np.testing.assert_allclose(logps[mask], np.asarray(free.logps_BxN)[mask], atol=1e-6)


def test_eos_on_the_first_step_and_a_single_step(sampler, free):
    prompts = PromptBatch.from_lists(PROMPTS)
    first = np.asarray(free.response_ids_BxN)[:, 0]
    unused = next(t for t in range(90) if t not in np.asarray(free.response_ids_BxN))
    # EOS = row 0's first token: the rows that start with it stop at once (length 1)
    out = sampler.generate(None, prompts, RolloutConfig(
        max_new_tokens=N, greedy=True, eos_token_id=int(first[0]), stop_token_ids=(unused,)))
    starts = first == first[0]
    assert (~starts).any()
    np.testing.assert_array_equal(np.asarray(out.lengths_B)[starts], 1)
    assert (np.asarray(out.lengths_B)[~starts] > 1).all()
    np.testing.assert_array_equal(np.asarray(out.finish_reason_B)[starts], FinishReason.EOS)
    # max_new_tokens=1: the decode loop body never runs; every row ends after its first token
    one = sampler.generate(None, prompts, RolloutConfig(max_new_tokens=1, greedy=True,
                                                        eos_token_id=int(first[1])))
    np.testing.assert_array_equal(np.asarray(one.response_ids_BxN)[:, 0], first)
    np.testing.assert_array_equal(one.lengths_B, np.ones(len(PROMPTS)))
    np.testing.assert_array_equal(one.finish_reason_B, np.where(first == first[1], FinishReason.EOS,
                                                                FinishReason.LENGTH))
    np.testing.assert_allclose(np.asarray(one.logps_BxN)[:, 0], np.asarray(free.logps_BxN)[:, 0], atol=1e-6)
