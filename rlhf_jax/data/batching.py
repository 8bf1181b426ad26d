"""Turning tokenized examples into fixed-length rows of the batch layouts the trainers read.

Every row has a static length, so a jitted step compiles once. Layouts (int32 unless noted; a batch
stacks rows along a new leading axis B):

SFT, one example a row, right-padded to T = max_length:
    input_ids [T], attention_mask [T] (1 = real token), loss_mask [T] (1 = response token, the ones
    to predict), positions [T] (0, 1, ... within the example; 0 on padding), segment_ids [T]
    (1 on real tokens, 0 on padding), num_truncated [] (0 or 1).
SFT packed: the same keys; several examples share a row, `segment_ids` numbers them 1, 2, ...
    (0 = padding), `positions` restart at 0 for each, and `num_truncated` counts the truncated
    examples in the row. Attention must not cross segments.
Preference pairs: `chosen_{input_ids,attention_mask,loss_mask,positions,segment_ids}` and
    `rejected_{...}`, each laid out as unpacked SFT, plus num_truncated [] (0 or 1 for the pair).
Prompts for RL: prompt_ids [P] left-padded to P = max_prompt_length, prompt_mask [P]
    (1 = real token), num_truncated [].

`loss_mask[t]` marks `input_ids[t]` as a target; with the usual shift (labels = input_ids[:, 1:])
the mask of the labels is `loss_mask[:, 1:]`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np


def pad_id_of(tokenizer) -> int:
    """The id used for padding: the tokenizer's pad token, else its EOS (padding is masked anyway)."""
    if tokenizer.pad_token_id is not None:
        return int(tokenizer.pad_token_id)
    if tokenizer.eos_token_id is not None:
        return int(tokenizer.eos_token_id)
    raise ValueError(f"tokenizer {type(tokenizer).__name__} has neither pad_token_id nor eos_token_id")


def _pad_right(x: np.ndarray, length: int, value: int) -> np.ndarray:
    if len(x) > length:
        raise ValueError(f"sequence of {len(x)} tokens exceeds the row length {length}")
    return np.pad(x.astype(np.int32), (0, length - len(x)), constant_values=value)


def sequence_row(input_ids: np.ndarray, loss_mask: np.ndarray, length: int, pad_id: int
                 ) -> dict[str, np.ndarray]:
    """One unpacked sequence right-padded to `length` (the SFT row layout, without num_truncated)."""
    n = len(input_ids)
    attention = _pad_right(np.ones(n, np.int32), length, 0)
    return {"input_ids": _pad_right(input_ids, length, pad_id),
            "attention_mask": attention,
            "loss_mask": _pad_right(loss_mask, length, 0),
            "positions": _pad_right(np.arange(n, dtype=np.int32), length, 0),
            "segment_ids": attention.copy()}


def sft_row(example: Mapping[str, np.ndarray], length: int, pad_id: int) -> dict[str, np.ndarray]:
    """A tokenized SFT example as an unpacked SFT row."""
    row = sequence_row(example["input_ids"], example["loss_mask"], length, pad_id)
    row["num_truncated"] = np.asarray(example["truncated"], np.int32)
    return row


def pair_row(example: Mapping[str, np.ndarray], length: int, pad_id: int) -> dict[str, np.ndarray]:
    """A tokenized preference pair as a row with chosen_* and rejected_* sequences."""
    row = {}
    for side in ("chosen", "rejected"):
        seq = sequence_row(example[f"{side}_input_ids"], example[f"{side}_loss_mask"], length, pad_id)
        row.update({f"{side}_{key}": value for key, value in seq.items()})
    row["num_truncated"] = np.asarray(example["truncated"], np.int32)
    return row


def prompt_row(example: Mapping[str, np.ndarray], length: int, pad_id: int) -> dict[str, np.ndarray]:
    """A tokenized prompt left-padded to `length` (generation continues from the right end)."""
    ids = example["prompt_ids"]
    if len(ids) > length:
        raise ValueError(f"prompt of {len(ids)} tokens exceeds the row length {length}")
    pad = length - len(ids)
    return {"prompt_ids": np.pad(ids.astype(np.int32), (pad, 0), constant_values=pad_id),
            "prompt_mask": np.pad(np.ones(len(ids), np.int32), (pad, 0)),
            "num_truncated": np.asarray(example["truncated"], np.int32)}


PACKED_FEATURES = ("input_ids", "loss_mask")


def packed_row(packed: Mapping[str, object]) -> dict[str, np.ndarray]:
    """The output of grain's FirstFitPackIterDataset over PACKED_FEATURES as a packed SFT row.

    Expects `input_ids`, `input_ids_segment_ids`, `input_ids_positions`, `loss_mask` and `truncated`
    (the list of the packed examples' flags, packed as a non-sequence meta feature).
    """
    segment_ids = np.asarray(packed["input_ids_segment_ids"], np.int32)
    flags: Sequence[object] = packed["truncated"]  # type: ignore[assignment]
    return {"input_ids": np.asarray(packed["input_ids"], np.int32),
            "attention_mask": (segment_ids > 0).astype(np.int32),
            "loss_mask": np.asarray(packed["loss_mask"], np.int32),
            "positions": np.asarray(packed["input_ids_positions"], np.int32),
            "segment_ids": segment_ids,
            "num_truncated": np.asarray(sum(int(np.asarray(f)) for f in flags), np.int32)}
