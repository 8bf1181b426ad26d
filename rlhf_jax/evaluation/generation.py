"""The paper's evaluation protocol end to end: generate answers with the rollout engine, then score.

    sampler = JaxSampler(policy, mesh=mesh)
    responses = generate_responses(sampler, None, tokenizer, template, conversations,
                                   RolloutConfig(max_new_tokens=256, greedy=True, ...), batch_size=32)
    metrics = evaluate_safety(reward, reward_tok, cost, cost_tok, prompt_texts, responses, ...)

`evaluate_policy_safety` does both and returns the Help / Harm / Safety-rate metrics with the
responses (Table 2 / 6 protocol; Help is relative to a baseline's responses when given).
Prompts are tokenized exactly as in training (`rlhf_jax.data.tokenize.encode_prompt`: BOS, the
template's text, left-truncated to `max_prompt_length`), so the policy sees what it was trained on.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import numpy as np

from rlhf_jax.data.schema import Conversation
from rlhf_jax.data.templates import PromptTemplate
from rlhf_jax.data.tokenize import encode_prompt
from rlhf_jax.evaluation.scoring import evaluate_safety
from rlhf_jax.rollout import PromptBatch, Rollout, RolloutConfig


def response_texts(tokenizer, response_ids_BxN, response_mask_BxN, *, eos_token_id: int | None) -> list[str]:
    """Decoded responses: the masked-in tokens, without a final EOS."""
    ids, mask = np.asarray(response_ids_BxN), np.asarray(response_mask_BxN).astype(bool)
    out = []
    for row, m in zip(ids, mask):
        tokens = row[m].tolist()
        if tokens and eos_token_id is not None and tokens[-1] == eos_token_id:
            tokens = tokens[:-1]
        out.append(tokenizer.decode(tokens, skip_special_tokens=True))
    return out


def generate_responses(sampler: Rollout, params, tokenizer, template: PromptTemplate,
                       conversations: Sequence[Conversation], config: RolloutConfig, *, batch_size: int,
                       max_prompt_length: int = 512, key: jax.Array | None = None) -> list[str]:
    """One response per conversation from `sampler` (params None: the sampler's own).

    Batches have a fixed `batch_size` (the last one is filled with copies of its first prompt and
    those answers dropped), so the sampler compiles once per prompt bucket. `key` is required
    unless `config.greedy`; each batch uses its own fold of it.
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if not config.greedy and key is None:
        raise ValueError("generate_responses: sampling (greedy=False) needs a PRNG key")
    prompts = [encode_prompt(tokenizer, template, c, max_prompt_length)[0].tolist() for c in conversations]
    responses: list[str] = []
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start:start + batch_size]
        real = len(chunk)
        chunk = chunk + [chunk[0]] * (batch_size - real)
        batch = PromptBatch.from_lists(chunk, pad_token_id=config.pad_token_id)
        batch_key = None if key is None else jax.random.fold_in(key, start)
        out = sampler.generate(params, batch, config, key=batch_key)
        texts = response_texts(tokenizer, out.response_ids_BxN, out.response_mask_BxN,
                               eos_token_id=config.eos_token_id)
        responses.extend(texts[:real])
    return responses


def evaluate_policy_safety(sampler: Rollout, params, tokenizer, template: PromptTemplate,
                           conversations: Sequence[Conversation], config: RolloutConfig, *,
                           reward_model, reward_tokenizer, cost_model, cost_tokenizer,
                           judge_template: PromptTemplate | None = None,
                           baseline_responses: Sequence[str] | None = None, batch_size: int,
                           max_prompt_length: int = 512, key: jax.Array | None = None
                           ) -> tuple[dict[str, float], list[str]]:
    """(Help / Harm / Safety-rate metrics, responses) of the policy on `conversations`.

    The judges read `judge_template`'s rendering of each prompt (default: the policy's template;
    safe-rlhf's reward and cost models use "safe_rlhf").
    """
    responses = generate_responses(sampler, params, tokenizer, template, conversations, config,
                                   batch_size=batch_size, max_prompt_length=max_prompt_length, key=key)
    judge = judge_template or template
    prompt_texts = [judge.render_prompt(c, eos_token=reward_tokenizer.eos_token) for c in conversations]
    metrics = evaluate_safety(reward_model, reward_tokenizer, cost_model, cost_tokenizer, prompt_texts,
                              responses, baseline_responses=baseline_responses, batch_size=batch_size)
    return metrics, responses
