"""Tokenizing stored examples into unpadded token arrays, with truncation flagged per example.

Works with any Hugging Face tokenizer. Text is encoded without the tokenizer's own special tokens;
BOS (when the tokenizer has one) starts every sequence and EOS ends every complete response, so the
layout does not depend on each tokenizer's `add_special_tokens` habits. Prompt and response are
encoded separately and concatenated, so the prompt tokens are exactly those a policy is conditioned
on when it generates.

Truncation: a prompt longer than `max_prompt_length` keeps its last tokens (the most recent turns)
behind a fresh BOS; the response is then cut on the right to fit `max_length` (losing its EOS).
`max_prompt_length < max_length`, so every non-empty response keeps at least one token. Each encoded
example carries `truncated` (True when either cut happened), which the pipelines put in the batch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np

from rlhf_jax.data.schema import Conversation, decode_pair, decode_prompt, decode_sft
from rlhf_jax.data.templates import PromptTemplate


@dataclasses.dataclass(frozen=True)
class TokenizeConfig:
    """Lengths in tokens, BOS and EOS included."""

    max_length: int
    max_prompt_length: int

    def __post_init__(self):
        if not 0 < self.max_prompt_length < self.max_length:
            raise ValueError("need 0 < max_prompt_length < max_length, got "
                             f"max_prompt_length={self.max_prompt_length}, max_length={self.max_length}")


def _encode(tokenizer, text: str) -> list[int]:
    return list(tokenizer.encode(text, add_special_tokens=False)) if text else []


def _bos(tokenizer) -> list[int]:
    return [] if tokenizer.bos_token_id is None else [tokenizer.bos_token_id]


def _eos(tokenizer) -> list[int]:
    if tokenizer.eos_token_id is None:
        raise ValueError(f"tokenizer {type(tokenizer).__name__} has no eos_token_id")
    return [tokenizer.eos_token_id]


def encode_prompt(tokenizer, template: PromptTemplate, prompt: Conversation, max_prompt_length: int
                  ) -> tuple[np.ndarray, bool]:
    """(prompt token ids [<= max_prompt_length] int32, truncated?) for a conversation."""
    text = template.render_prompt(prompt, eos_token=tokenizer.eos_token)
    bos, body = _bos(tokenizer), _encode(tokenizer, text)
    truncated = len(bos) + len(body) > max_prompt_length
    if truncated:
        keep = max_prompt_length - len(bos)
        if keep <= 0:
            raise ValueError(f"max_prompt_length={max_prompt_length} leaves no room after BOS")
        body = body[-keep:]
    return np.asarray(bos + body, np.int32), truncated


def encode_response(tokenizer, template: PromptTemplate, response: str) -> np.ndarray:
    """Response token ids followed by EOS, int32."""
    return np.asarray(_encode(tokenizer, template.render_response(response)) + _eos(tokenizer),
                      np.int32)


def join(prompt_ids: np.ndarray, response_ids: np.ndarray, max_length: int
         ) -> tuple[np.ndarray, np.ndarray, bool]:
    """(input_ids, loss_mask, truncated): prompt + response cut to `max_length`; loss on the response."""
    room = max_length - len(prompt_ids)
    if room <= 0:
        raise ValueError(f"prompt of {len(prompt_ids)} tokens leaves no room in max_length={max_length}")
    truncated = len(response_ids) > room
    response_ids = response_ids[:room]
    input_ids = np.concatenate([prompt_ids, response_ids]).astype(np.int32)
    loss_mask = np.concatenate([np.zeros(len(prompt_ids), np.int32), np.ones(len(response_ids), np.int32)])
    return input_ids, loss_mask, truncated


def tokenize_sft(tokenizer, template: PromptTemplate, config: TokenizeConfig,
                 record: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """A stored SFT example -> {input_ids, loss_mask, truncated} (unpadded)."""
    example = decode_sft(record)
    prompt_ids, cut_prompt = encode_prompt(tokenizer, template, example.prompt, config.max_prompt_length)
    response_ids = encode_response(tokenizer, template, example.response)
    input_ids, loss_mask, cut_response = join(prompt_ids, response_ids, config.max_length)
    return {"input_ids": input_ids, "loss_mask": loss_mask,
            "truncated": np.asarray(cut_prompt or cut_response)}


def tokenize_pair(tokenizer, template: PromptTemplate, config: TokenizeConfig,
                  record: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """A stored preference pair -> {chosen_input_ids, chosen_loss_mask, rejected_..., truncated}.

    Both sequences share the same (possibly truncated) prompt tokens.
    """
    pair = decode_pair(record)
    prompt_ids, truncated = encode_prompt(tokenizer, template, pair.prompt, config.max_prompt_length)
    out: dict[str, np.ndarray] = {}
    for side, response in (("chosen", pair.chosen), ("rejected", pair.rejected)):
        input_ids, loss_mask, cut = join(prompt_ids, encode_response(tokenizer, template, response),
                                         config.max_length)
        out[f"{side}_input_ids"], out[f"{side}_loss_mask"] = input_ids, loss_mask
        truncated = truncated or cut
    out["truncated"] = np.asarray(truncated)
    return out


def tokenize_prompt(tokenizer, template: PromptTemplate, config: TokenizeConfig,
                    record: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """A stored example of any kind -> {prompt_ids, truncated} (its prompt only, unpadded)."""
    prompt_ids, truncated = encode_prompt(tokenizer, template, decode_prompt(record),
                                          config.max_prompt_length)
    return {"prompt_ids": prompt_ids, "truncated": np.asarray(truncated)}
