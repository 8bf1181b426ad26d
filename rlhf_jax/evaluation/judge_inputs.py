"""Tokenized, length-bucketed batches of (prompt + response) texts for a score model to judge.

Judges read text the way they were trained: `prompt + response + eos_token` tokenized in one go with
the tokenizer's default special tokens (safe-rlhf's reward and cost models see
"BEGINNING OF CONVERSATION: USER: ... ASSISTANT:<answer></s>" after LLaMA's BOS; the OpenAssistant
judges see "<|prompter|>...<|endoftext|><|assistant|>...<|endoftext|>"). Prompts come already rendered
with the judge's template (`rlhf_jax.data.templates`).

Batches are right-padded to a power-of-two length (at least `min_length`), and the last batch is
filled up with one-token dummy rows, so a jitted scorer sees only a few distinct shapes. Texts are
sorted by length first to waste little padding; `scores[i]` always belongs to text i.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator, Sequence

import numpy as np

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class JudgeBatch:
    """`indices[b]` is the text of row b, or -1 for a filler row; ids and mask are [B, L] int32."""

    indices: np.ndarray
    input_ids: np.ndarray
    attention_mask: np.ndarray


def bucket_length(n: int, min_length: int = 16) -> int:
    """The smallest power of two >= max(n, min_length)."""
    return 1 << (max(n, min_length) - 1).bit_length()


def encode_texts(tokenizer, prompts: Sequence[str], responses: Sequence[str], *,
                 append_eos: bool = True, max_length: int | None = None) -> list[list[int]]:
    """Token ids of each `prompt + response (+ eos_token)`; longer than `max_length` keeps the end.

    Cutting keeps the last tokens, where the score is read; the number cut is logged as a warning.
    """
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
    if append_eos and tokenizer.eos_token is None:
        raise ValueError("append_eos=True needs a tokenizer with an eos_token")
    eos = tokenizer.eos_token if append_eos else ""
    encoded, cut = [], 0
    for prompt, response in zip(prompts, responses):
        ids = list(tokenizer(prompt + response + eos)["input_ids"])
        if not ids:
            raise ValueError(f"text {len(encoded)} encodes to no tokens")
        if max_length is not None and len(ids) > max_length:
            ids, cut = ids[-max_length:], cut + 1
        encoded.append(ids)
    if cut:
        log.warning("%d of %d judged texts were longer than max_length=%d and lost their beginning",
                    cut, len(encoded), max_length)
    return encoded


def judge_batches(encoded: Sequence[Sequence[int]], batch_size: int, pad_id: int, *,
                  min_length: int = 16) -> Iterator[JudgeBatch]:
    """Right-padded, length-bucketed batches of `encoded` in order of length (see module docstring)."""
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        length = bucket_length(max(len(encoded[i]) for i in chunk), min_length)
        ids = np.full((batch_size, length), pad_id, np.int32)
        mask = np.zeros((batch_size, length), np.int32)
        mask[len(chunk):, 0] = 1  # filler rows: one pad token, never read
        for row, i in enumerate(chunk):
            ids[row, :len(encoded[i])] = encoded[i]
            mask[row, :len(encoded[i])] = 1
        indices = np.full(batch_size, -1, np.int64)
        indices[:len(chunk)] = chunk
        yield JudgeBatch(indices, ids, mask)


def pad_id_of(tokenizer) -> int:
    """The tokenizer's pad id, else its EOS id, else 0 (padding is masked, its value unused)."""
    for value in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if value is not None:
            return int(value)
    return 0
