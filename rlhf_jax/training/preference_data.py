"""Preference data for reward / cost models and DPO: pair sources, pair filters, padded batches.

- `SCORE_PAIR_SOURCES`: the data registry of `sources.PAIR_SOURCES` plus two PKU-SafeRLHF readings
  for score models: "safe_rlhf_safer" (chosen = the safer response, `safer_response_id`, with both
  safety labels: the cost model's data) and "safe_rlhf_helpful" (chosen = the more helpful,
  `better_response_id`: safe-rlhf's reward model). Cost models need the labels
  `meta["chosen_safe"]`, `meta["rejected_safe"]` on every pair, chosen being the safer
  (`COST_FORMATS`; a generic preference JSONL file may carry them in its `meta`).
- `PAIR_FILTERS`: named filters a config lists (`filters=("drop_truncated",)`), applied in order.
  The SafeRLHF dual-safe / dual-unsafe filters of the paper are data sources of their own
  (`PAIR_SOURCES["safe_rlhf_no_dual_unsafe"]`, `["safe_rlhf_no_dual"]`).
- `pair_records` / `pair_batches`: the stored form of each pair with its index in the data set
  (`example_index`) and, for cost models, its safety labels, batched in the pair layout of
  `rlhf_jax.data.batching` with those fields added. The index lets a batch find its precomputed
  reference log-probs (`dpo_reference`).
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import grain
import jax
import numpy as np

from rlhf_jax.data import PipelineConfig, PreferencePair, read_safe_rlhf
from rlhf_jax.data.batching import pad_id_of, pair_row
from rlhf_jax.data.pipeline import ordered_examples
from rlhf_jax.data.safe_rlhf import SOURCE as SAFE_RLHF_SOURCE
from rlhf_jax.data.safe_rlhf import has_safety_label_conflict
from rlhf_jax.data.schema import encode_pair, user_prompt
from rlhf_jax.data.tokenize import TokenizeConfig, tokenize_pair
from rlhf_jax.training.state import check_batching  # noqa: F401  (re-exported)
from rlhf_jax.training.loop import pad_rows
from rlhf_jax.training.preference_steps import PAIR_FIELDS, SAFETY_FIELDS
from rlhf_jax.training.sources import PAIR_SOURCES


def _safe_rlhf_by(id_field: str):
    """PKU-SafeRLHF pairs with chosen = response `row.<id_field>`, both safety labels in meta."""
    def read(path: str) -> list[PreferencePair]:
        rows = read_safe_rlhf(path)
        pairs = []
        for row in rows:
            win = getattr(row, id_field)
            meta = {"source": SAFE_RLHF_SOURCE, "where": row.where, "chosen_safe": row.is_safe(win),
                    "rejected_safe": row.is_safe(1 - win)}
            pairs.append(PreferencePair(user_prompt(row.prompt), row.response(win), row.response(1 - win), meta))
        conflicts = sum(has_safety_label_conflict(r) for r in rows)
        print(f"{path}: {len(pairs)} pairs by {id_field} ({conflicts} with a safety-label conflict)")
        return pairs
    return read


SCORE_PAIR_SOURCES: dict[str, Callable[[str], list[PreferencePair]]] = {
    **PAIR_SOURCES,
    "safe_rlhf_safer": _safe_rlhf_by("safer_response_id"),
    "safe_rlhf_helpful": _safe_rlhf_by("better_response_id"),
}

#: Formats a cost model may train on (chosen = the safer response, safety labels in meta).
COST_FORMATS = ("safe_rlhf_safer", "preference_jsonl")


# ----------------------------------------------------------------------------- pair filters

@dataclasses.dataclass(frozen=True)
class FilterContext:
    """What a pair filter may need: the tokenization the trainer will apply."""

    tokenizer: Any
    template: Any
    lengths: TokenizeConfig


def _drop_truncated(pairs, ctx: FilterContext):
    """Pairs whose prompt or either response would be cut to fit the lengths."""
    tokenize = functools.partial(tokenize_pair, ctx.tokenizer, ctx.template, ctx.lengths)
    return [p for p in pairs if not bool(tokenize(encode_pair(p))["truncated"])]


def _drop_identical(pairs, ctx: FilterContext):
    """Pairs whose chosen and rejected responses are the same text (no preference to learn)."""
    return [p for p in pairs if p.chosen.strip() != p.rejected.strip()]


#: name -> (pairs, FilterContext) -> kept pairs.
PAIR_FILTERS: dict[str, Callable[[list[PreferencePair], FilterContext], list[PreferencePair]]] = {
    "drop_truncated": _drop_truncated,
    "drop_identical": _drop_identical,
}


def check_pair_filters(names: Sequence[str], *, key: str) -> None:
    """Raises ValueError naming `key` for a filter name not in PAIR_FILTERS."""
    for name in names:
        if name not in PAIR_FILTERS:
            raise ValueError(f"{key}: unknown pair filter {name!r}; choose from {sorted(PAIR_FILTERS)}")


def apply_pair_filters(pairs: list[PreferencePair], names: Sequence[str], ctx: FilterContext
                       ) -> tuple[list[PreferencePair], dict[str, int]]:
    """`pairs` through the named filters in order; counts {"pairs", "dropped_<name>"..., "kept"}."""
    check_pair_filters(names, key="filters")
    counts = {"pairs": len(pairs)}
    for name in names:
        kept = PAIR_FILTERS[name](pairs, ctx)
        counts[f"dropped_{name}"] = len(pairs) - len(kept)
        pairs = kept
    counts["kept"] = len(pairs)
    return pairs, counts


# ----------------------------------------------------------------------------- records and batches

def check_pair_data(fmt: str, registry, eval_path: str) -> None:
    """Rejects an unknown `data.format` (listing the known ones) and a missing `data.eval_path`."""
    if fmt not in registry:
        raise ValueError(f"data.format={fmt!r}; choose from {sorted(registry)}")
    if eval_path and not os.path.exists(eval_path):
        raise FileNotFoundError(f"data.eval_path: {eval_path!r} does not exist")


def _label(pair: PreferencePair, key: str) -> int:
    value = pair.meta.get(key)
    if not isinstance(value, bool):
        where = pair.meta.get("where", "a pair")
        raise ValueError(f"{where}: a cost model needs meta[{key!r}] = true/false, got {value!r}")
    return int(value)


def pair_records(pairs: Sequence[PreferencePair], *, safety: bool = False) -> list[dict[str, Any]]:
    """Stored pairs with `example_index` (position in `pairs`) and, if `safety`, the labels."""
    records = []
    for i, pair in enumerate(pairs):
        rec = dict(encode_pair(pair), example_index=i)
        if safety:
            rec.update(chosen_is_safe=_label(pair, "chosen_safe"), rejected_is_safe=_label(pair, "rejected_safe"))
        records.append(rec)
    return records


def extra_fields(records: Sequence[dict[str, Any]]) -> tuple[str, ...]:
    """The per-pair integer fields the records carry into batches."""
    extras = ("example_index",)
    return extras + (SAFETY_FIELDS if records and SAFETY_FIELDS[0] in records[0] else ())


def _row(tokenizer, template, lengths: TokenizeConfig, pad_id: int, extras: tuple[str, ...], record):
    row = pair_row(tokenize_pair(tokenizer, template, lengths, record), lengths.max_length, pad_id)
    row.update({k: np.asarray(record[k], np.int32) for k in extras})
    return row


def pair_batches(records: Sequence[dict[str, Any]], tokenizer, template, config: PipelineConfig
                 ) -> grain.IterDataset:
    """Batches of pair rows (shuffled, repeated, sharded per process as `config` says) carrying
    `extra_fields(records)`; iterate with `rlhf_jax.data.batch_iterator` to checkpoint the position."""
    row = functools.partial(_row, tokenizer, template, config.tokenize_config(), pad_id_of(tokenizer),
                            extra_fields(records))
    ds = ordered_examples(records, config).map(row)
    return ds.to_iter_dataset().batch(config.batch_size, drop_remainder=config.drop_remainder)


def batch_fields(records: Sequence[dict[str, Any]]) -> tuple[str, ...]:
    """The batch keys a step reads for these records: the pair rows and the extra fields."""
    return PAIR_FIELDS + extra_fields(records)


def one_pass(records: Sequence[dict[str, Any]], tokenizer, template, config: PipelineConfig
             ) -> Iterator[dict[str, np.ndarray]]:
    """Every pair of this process's shard once, in order, in full batches (the last one filled
    with `pad_rows` zero rows, which `preference_steps.pair_mask` masks out)."""
    once = dataclasses.replace(config, shuffle=False, num_epochs=1, drop_remainder=False)
    keys = batch_fields(records)
    for batch in pair_batches(records, tokenizer, template, once):
        yield pad_rows({k: np.asarray(batch[k]) for k in keys}, config.batch_size)


def evaluate_pairs(eval_fn: Callable, records: Sequence[dict[str, Any]], tokenizer, template,
                   config: PipelineConfig, mesh, *, prepare: Callable = lambda batch: batch
                   ) -> dict[str, float]:
    """Held-out metrics over every pair of `records`: `eval_fn(placed batch)` per batch, merged
    exactly by count (`combine_metrics`); {} when there are no records. `prepare` may add fields
    (e.g. precomputed reference log-probs) to each host batch first."""
    from rlhf_jax.losses import combine_metrics
    from rlhf_jax.sharding import put_batch

    if not records:
        return {}
    metrics = [eval_fn(put_batch(prepare(batch), mesh))
               for batch in one_pass(records, tokenizer, template, config)]
    return {k: float(v) for k, v in jax.device_get(combine_metrics(metrics)).items()}
