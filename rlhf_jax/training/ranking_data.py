"""Ranked candidates: their stored form, tokenization and the [B, K, T] batches PRO and RRHF read.

A ranking example is one prompt with K candidate responses and one reward per candidate (higher is
better; ties allowed). Stored form (a dict, also one line of the candidate cache JSONL):
    prompt_roles, prompt_texts   the conversation (as `rlhf_jax.data.schema`)
    responses                    list of K strings
    rewards                      list of K floats
    origins                      list of K strings naming where each candidate came from
    meta                         JSON text, carried along

Batch layout (int32 unless noted; every candidate row is an unpacked SFT row of `batching.py`):
    input_ids, attention_mask, loss_mask, positions, segment_ids   [B, K, T]
    rewards                                                         [B, K] float32
    num_truncated                                                   [B] (0 or 1 per example)
All K candidates of a prompt share the same (possibly truncated) prompt tokens. A step flattens
the candidate rows to [B * K, T] for the model and reads per-candidate sums back as [B, K].
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Mapping, Sequence
from typing import Any

import grain
import numpy as np

from rlhf_jax.data import batching
from rlhf_jax.data.pipeline import PipelineConfig, ordered_examples
from rlhf_jax.data.schema import Conversation, decode_meta, decode_prompt
from rlhf_jax.data.templates import PromptTemplate
from rlhf_jax.data.tokenize import TokenizeConfig, encode_prompt, encode_response, join

SEQUENCE_FIELDS = ("input_ids", "attention_mask", "loss_mask", "positions", "segment_ids")
RANKING_FIELDS = SEQUENCE_FIELDS + ("rewards",)


@dataclasses.dataclass(frozen=True)
class RankingExample:
    """A prompt, its K candidate responses, one reward per candidate and each one's origin."""

    prompt: Conversation
    responses: tuple[str, ...]
    rewards: tuple[float, ...]
    origins: tuple[str, ...]
    meta: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        k = len(self.responses)
        if k < 2 or len(self.rewards) != k or len(self.origins) != k:
            raise ValueError(f"a ranking example needs K >= 2 responses with one reward and one origin "
                             f"each; got {k} responses, {len(self.rewards)} rewards, "
                             f"{len(self.origins)} origins")


def encode_ranking(example: RankingExample) -> dict[str, Any]:
    """The stored form of a ranking example (see the module docstring)."""
    return {"prompt_roles": [t.role for t in example.prompt],
            "prompt_texts": [t.text for t in example.prompt],
            "responses": list(example.responses), "rewards": [float(r) for r in example.rewards],
            "origins": list(example.origins), "meta": json.dumps(dict(example.meta), sort_keys=True)}


def decode_ranking(record: Mapping[str, Any]) -> RankingExample:
    """Inverse of `encode_ranking`."""
    return RankingExample(decode_prompt(record), tuple(record["responses"]),
                          tuple(float(r) for r in record["rewards"]), tuple(record["origins"]),
                          decode_meta(record))


def num_candidates(records: Sequence[Mapping[str, Any]], *, what: str) -> int:
    """The K shared by every stored example; a batch needs one static K."""
    ks = {len(r["responses"]) for r in records}
    if len(ks) != 1:
        raise ValueError(f"{what}: every prompt needs the same number of candidates, got {sorted(ks)}")
    return ks.pop()


def tokenize_ranking(tokenizer, template: PromptTemplate, config: TokenizeConfig,
                     record: Mapping[str, Any]) -> dict[str, Any]:
    """A stored ranking example -> per-candidate (input_ids, loss_mask), rewards, truncated."""
    example = decode_ranking(record)
    prompt_ids, truncated = encode_prompt(tokenizer, template, example.prompt, config.max_prompt_length)
    sequences = []
    for response in example.responses:
        input_ids, loss_mask, cut = join(prompt_ids, encode_response(tokenizer, template, response),
                                         config.max_length)
        sequences.append((input_ids, loss_mask))
        truncated = truncated or cut
    return {"sequences": sequences, "rewards": np.asarray(example.rewards, np.float32),
            "truncated": np.asarray(truncated)}


def ranking_row(example: Mapping[str, Any], length: int, pad_id: int) -> dict[str, np.ndarray]:
    """A tokenized ranking example as [K, T] candidate rows plus rewards [K] (the batch layout)."""
    rows = [batching.sequence_row(ids, mask, length, pad_id) for ids, mask in example["sequences"]]
    out = {key: np.stack([row[key] for row in rows]) for key in SEQUENCE_FIELDS}
    out["rewards"] = example["rewards"]
    out["num_truncated"] = np.asarray(example["truncated"], np.int32)
    return out


def ranking_dataset(source: Sequence[Mapping[str, Any]], tokenizer, template: PromptTemplate,
                    config: PipelineConfig, *, shard_index: int | None = None,
                    shard_count: int | None = None) -> grain.IterDataset:
    """Batches of ranking rows from stored ranking examples (sharded, shuffled, checkpointable
    exactly as `rlhf_jax.data.pipeline`)."""
    if config.pack:
        raise ValueError("packing is for SFT only; ranking rows are padded")
    num_candidates(source, what="ranking_dataset")
    ds = ordered_examples(source, config, shard_index=shard_index, shard_count=shard_count)
    ds = ds.map(functools.partial(tokenize_ranking, tokenizer, template, config.tokenize_config()))
    ds = ds.map(functools.partial(ranking_row, length=config.max_length,
                                  pad_id=batching.pad_id_of(tokenizer)))
    return ds.to_iter_dataset().batch(config.batch_size, drop_remainder=config.drop_remainder)
