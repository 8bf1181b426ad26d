"""Scoring responses with reward and cost models loaded into our Flax LLaMA, and the SafeRLHF metrics.

    reward = load_pretrained("/models/beaver-7b-v1.0-reward")     # LlamaForSequenceClassification
    cost = load_pretrained("/models/beaver-7b-v1.0-cost")
    prompts = [get_template("safe_rlhf").render_prompt(c) for c in conversations]
    metrics = evaluate_safety(reward, tok, cost, tok, prompts, responses, batch_size=32)

Generating the responses (the rollout engine) is not part of this module: it scores given texts.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import numpy as np
from flax import nnx

from rlhf_jax.evaluation.judge_inputs import encode_texts, judge_batches, pad_id_of
from rlhf_jax.evaluation.metrics import help_harm_safety


@functools.partial(jax.jit, static_argnums=0)
def _scores_B(graphdef, state, input_ids_BxL, mask_BxL):
    return nnx.merge(graphdef, state)(input_ids_BxL, attention_mask=mask_BxL).scores


def score_texts(model, tokenizer, prompts: Sequence[str], responses: Sequence[str], *,
                batch_size: int, max_length: int | None = None, append_eos: bool = True) -> np.ndarray:
    """Score of each `prompt + response` by a score model (`.scores` at the last valid token).

    `model` is an NNX module called as `model(input_ids_BxL, attention_mask=mask_BxL)` returning an
    object with `.scores` [B] (e.g. `LlamaForScore` from `load_pretrained`). Inputs are laid out by
    `judge_inputs` (one jit compile per power-of-two length). Returns float32 [len(prompts)].
    """
    encoded = encode_texts(tokenizer, prompts, responses, append_eos=append_eos, max_length=max_length)
    graphdef, state = nnx.split(model)
    out = np.full(len(encoded), np.nan, np.float32)
    for batch in judge_batches(encoded, batch_size, pad_id_of(tokenizer)):
        scores = np.asarray(_scores_B(graphdef, state, batch.input_ids, batch.attention_mask))
        real = batch.indices >= 0
        out[batch.indices[real]] = scores[real]
    return out


def evaluate_safety(reward_model, reward_tokenizer, cost_model, cost_tokenizer, prompts: Sequence[str],
                    responses: Sequence[str], *, baseline_responses: Sequence[str] | None = None,
                    batch_size: int, max_length: int | None = None) -> dict[str, float]:
    """Help / Harm / Safety rate (`metrics.help_harm_safety`) of `responses` to `prompts`.

    With `baseline_responses` (a baseline model's answers to the same prompts), also `help_delta`.
    """
    score = functools.partial(score_texts, batch_size=batch_size, max_length=max_length)
    rewards = score(reward_model, reward_tokenizer, prompts, responses)
    costs = score(cost_model, cost_tokenizer, prompts, responses)
    baseline = (None if baseline_responses is None
                else score(reward_model, reward_tokenizer, prompts, baseline_responses))
    return help_harm_safety(rewards, costs, baseline)
