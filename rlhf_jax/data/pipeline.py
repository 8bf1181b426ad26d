"""grain pipelines from stored examples to batches for the trainers.

Source: any random-access sequence of stored examples (`schema.py`): what `tfds.data_source(...)`
or `builder.as_data_source()` returns per split, or a plain list of `encode_*` dicts.

Order of operations, each deterministic given `seed`:
1. shard per process: process i of n reads indices i, i + n, i + 2n, ... of the first
   n * (len // n) examples, so every process sees the same number of examples (the remainder,
   fewer than n, is left out and logged);
2. shuffle with `seed` (a new permutation each epoch) and repeat `num_epochs` times (None: forever);
3. tokenize with the template (truncation flagged per example, see `tokenize.py`);
4. pad to the fixed row length, or for SFT with `pack=True`, pack first-fit into rows;
5. batch `batch_size` rows (the per-process batch; the global batch is batch_size * n).

The result is a `grain.IterDataset`; `iter(dataset)` gives an iterator whose `get_state()` /
`set_state(state)` save and restore the position, so a resumed run continues with exactly the next
example. Batches are dicts of numpy arrays in the layouts of `batching.py`; `num_truncated` in each
batch counts its truncated examples, and `count_truncated` counts them over a whole source.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Sequence
from typing import Any

import grain

from rlhf_jax.data import batching, tokenize
from rlhf_jax.data.templates import PromptTemplate

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    """Batching, length and order settings of one pipeline (lengths in tokens)."""

    batch_size: int
    max_length: int
    max_prompt_length: int
    seed: int = 0
    shuffle: bool = True
    num_epochs: int | None = 1
    drop_remainder: bool = True
    pack: bool = False
    packing_bins: int = 16

    def __post_init__(self):
        if self.batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {self.batch_size}")
        if self.num_epochs is not None and self.num_epochs <= 0:
            raise ValueError(f"num_epochs must be positive or None, got {self.num_epochs}")
        if self.packing_bins <= 0:
            raise ValueError(f"packing_bins must be positive, got {self.packing_bins}")
        self.tokenize_config()  # validates the lengths

    def tokenize_config(self) -> tokenize.TokenizeConfig:
        """The lengths as a TokenizeConfig."""
        return tokenize.TokenizeConfig(self.max_length, self.max_prompt_length)


def _process_shard(shard_index: int | None, shard_count: int | None) -> tuple[int, int]:
    if (shard_index is None) != (shard_count is None):
        raise ValueError("give both shard_index and shard_count, or neither")
    if shard_index is None:
        import jax

        return jax.process_index(), jax.process_count()
    if not 0 <= shard_index < shard_count:
        raise ValueError(f"need 0 <= shard_index < shard_count, got {shard_index}, {shard_count}")
    return shard_index, shard_count


def ordered_examples(source: Sequence[Any], config: PipelineConfig, *, shard_index: int | None = None,
                     shard_count: int | None = None) -> grain.MapDataset:
    """Steps 1-2: this process's shard of `source`, shuffled and repeated (stored examples)."""
    index, count = _process_shard(shard_index, shard_count)
    size = len(source)
    per_shard = size // count
    if per_shard == 0:
        raise ValueError(f"{size} examples cannot be split over {count} processes")
    if size % count:
        log.info("sharding %d examples over %d processes leaves out the last %d", size, count,
                 size % count)
    ds = grain.MapDataset.source(source)[index:per_shard * count:count]
    if config.shuffle:
        ds = ds.shuffle(seed=config.seed)
    return ds.repeat(config.num_epochs)


def _tokenized(kind: str, source, tokenizer, template, config, shard_index, shard_count):
    fn = {"sft": tokenize.tokenize_sft, "pair": tokenize.tokenize_pair,
          "prompt": tokenize.tokenize_prompt}[kind]
    ds = ordered_examples(source, config, shard_index=shard_index, shard_count=shard_count)
    return ds.map(functools.partial(fn, tokenizer, template, config.tokenize_config()))


def _padded(kind: str, row_fn, length: int, source, tokenizer, template, config: PipelineConfig,
            shard_index, shard_count) -> grain.IterDataset:
    if config.pack and kind != "sft":
        raise ValueError(f"packing is for SFT only; {kind} rows are padded")
    row = functools.partial(row_fn, length=length, pad_id=batching.pad_id_of(tokenizer))
    ds = _tokenized(kind, source, tokenizer, template, config, shard_index, shard_count)
    return ds.map(row).to_iter_dataset().batch(config.batch_size, drop_remainder=config.drop_remainder)


def sft_dataset(source: Sequence[Any], tokenizer, template: PromptTemplate, config: PipelineConfig, *,
                shard_index: int | None = None, shard_count: int | None = None) -> grain.IterDataset:
    """Batches of SFT rows (padded, or packed when `config.pack`) from stored SFT examples."""
    if not config.pack:
        return _padded("sft", batching.sft_row, config.max_length, source, tokenizer, template, config,
                       shard_index, shard_count)
    pad_id = batching.pad_id_of(tokenizer)
    ds = _tokenized("sft", source, tokenizer, template, config, shard_index, shard_count)
    packed = grain.experimental.FirstFitPackIterDataset(
        ds.to_iter_dataset(), length_struct={key: config.max_length for key in batching.PACKED_FEATURES},
        num_packing_bins=config.packing_bins, seed=config.seed, shuffle_bins=config.shuffle,
        meta_features=("truncated",), padding_struct={"input_ids": pad_id, "loss_mask": 0})
    return packed.map(batching.packed_row).batch(config.batch_size, drop_remainder=config.drop_remainder)


def preference_dataset(source: Sequence[Any], tokenizer, template: PromptTemplate,
                       config: PipelineConfig, *, shard_index: int | None = None,
                       shard_count: int | None = None) -> grain.IterDataset:
    """Batches of chosen_*/rejected_* rows from stored preference pairs."""
    return _padded("pair", batching.pair_row, config.max_length, source, tokenizer, template, config,
                   shard_index, shard_count)


def prompt_dataset(source: Sequence[Any], tokenizer, template: PromptTemplate, config: PipelineConfig,
                   *, shard_index: int | None = None, shard_count: int | None = None
                   ) -> grain.IterDataset:
    """Batches of left-padded prompts (the RL prompt stream) from stored examples of any kind."""
    return _padded("prompt", batching.prompt_row, config.max_prompt_length, source, tokenizer,
                   template, config, shard_index, shard_count)


def count_truncated(source: Sequence[Any], tokenizer, template: PromptTemplate, config: PipelineConfig,
                    kind: str) -> tuple[int, int]:
    """(truncated, total) over one pass of `source` for `kind` in "sft", "pair", "prompt".

    Tokenizes everything once in order, unsharded; meant for a report before training.
    """
    if kind not in ("sft", "pair", "prompt"):
        raise ValueError(f"kind must be 'sft', 'pair' or 'prompt', got {kind!r}")
    one_pass = dataclasses.replace(config, shuffle=False, num_epochs=1)
    ds = _tokenized(kind, source, tokenizer, template, one_pass, 0, 1)
    truncated = sum(int(example["truncated"]) for example in ds)
    log.info("%s: %d of %d examples truncated", kind, truncated, len(ds))
    return truncated, len(ds)


def batch_iterator(dataset: grain.IterDataset, state: dict[str, Any] | None = None):
    """`iter(dataset)`, restored to `state` (from an earlier iterator's `get_state()`) when given."""
    iterator = iter(dataset)
    if state is not None:
        iterator.set_state(state)
    return iterator

