"""Reference log-probs computed once over a pair data set and cached on disk, for DPO.

DPO's reference model only ever contributes log pi_ref(chosen) and log pi_ref(rejected) of each
pair. `reference_tables` computes them in one pass (no gradient) and stores them as an .npz file
named by a hash of everything they depend on:
- the reference parameters (`params_fingerprint`: per tensor the sum, the sum of squares and a
  position-weighted sum, computed on device where the weights live; a retrained or different
  checkpoint changes them),
- the pairs (`records_fingerprint`: prompts and responses in order, indices included),
- the tokenization (tokenizer files, template, lengths) and the compute dtype.
A later run (a resume, another run on the same data) finds the file and reads it instead of running
the reference model (it is still loaded once, to be fingerprinted, and then dropped). Training looks
up each batch's rows by `example_index` (`with_reference`), so the reference model is not resident
while the policy trains.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Callable, Iterable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rlhf_jax.training.preference_steps import REFERENCE_FIELDS


@jax.jit
def _leaf_stats(params):
    def stats(x):
        x = x.astype(jnp.float32)  # no reshape: a sharded tensor stays where it is
        phase = jnp.zeros(x.shape, jnp.float32)
        for d in range(x.ndim):
            phase = phase + jax.lax.broadcasted_iota(jnp.float32, x.shape, d) * (7919.0 * d + 1.0)
        return jnp.stack([jnp.sum(x), jnp.sum(x * x), jnp.sum(x * jnp.sin(phase))])
    return jax.tree.map(stats, params)


def params_fingerprint(params) -> str:
    """A hex digest of the parameter values (shapes, dtypes and three reductions per tensor)."""
    h = hashlib.sha256()
    stats = jax.device_get(_leaf_stats(params))
    for (path, x), s in zip(jax.tree_util.tree_leaves_with_path(params), jax.tree.leaves(stats)):
        h.update(f"{jax.tree_util.keystr(path)}:{x.shape}:{x.dtype}:".encode())
        h.update(np.asarray(s, np.float32).tobytes())
    return h.hexdigest()


def records_fingerprint(records: Iterable[dict[str, Any]]) -> str:
    """A hex digest of stored examples (their JSON in order, without `meta`: it names where a pair
    came from, which does not change its log-probs)."""
    h = hashlib.sha256()
    for rec in records:
        h.update(json.dumps({k: v for k, v in rec.items() if k != "meta"}, sort_keys=True, default=str).encode())
    return h.hexdigest()


def folder_fingerprint(path: str) -> str:
    """A hex digest of the files of a (tokenizer) folder: names and contents."""
    h = hashlib.sha256()
    for name in sorted(os.listdir(path)):
        full = os.path.join(path, name)
        if os.path.isfile(full):
            h.update(name.encode())
            with open(full, "rb") as f:
                h.update(hashlib.sha256(f.read()).digest())
    return h.hexdigest()


def cache_key(**parts: Any) -> str:
    """A short hex key of JSON-able parts (fingerprints, lengths, names)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:24]


@dataclasses.dataclass(frozen=True)
class ReferenceTable:
    """log pi_ref of the chosen and rejected response of pair i at index i (float32 [N]);
    NaN for pairs no process computed (the remainder the per-process sharding leaves out)."""

    chosen: np.ndarray
    rejected: np.ndarray

    def save(self, path: str, key: str) -> None:
        tmp = f"{path}.tmp-{os.getpid()}.npz"
        np.savez(tmp, chosen=self.chosen, rejected=self.rejected, key=np.asarray(key))
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str, key: str) -> "ReferenceTable":
        with np.load(path) as f:
            if str(f["key"]) != key:
                raise ValueError(f"{path}: holds key {str(f['key'])!r}, expected {key!r}")
            return cls(f["chosen"], f["rejected"])


def compute_table(logps_fn: Callable, params, batches: Iterable[dict[str, np.ndarray]], size: int,
                  put: Callable) -> ReferenceTable:
    """Runs `logps_fn(params, put(batch))` (returning REFERENCE_FIELDS) over padded batches that
    carry `example_index`, and gathers the results across processes."""
    table = np.full((2, size), np.nan, np.float32)
    for batch in batches:
        out = jax.device_get(logps_fn(params, put(batch)))
        real = np.asarray(batch["chosen_attention_mask"]).any(axis=-1)
        index = np.asarray(batch["example_index"])[real]
        for row, field in enumerate(REFERENCE_FIELDS):
            table[row, index] = np.asarray(out[field])[real]
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        table = np.fmax.reduce(np.asarray(multihost_utils.process_allgather(table)), axis=0)
    return ReferenceTable(table[0], table[1])


def cached_table(cache_dir: str, key: str, compute: Callable[[], ReferenceTable]
                 ) -> tuple[ReferenceTable, str, bool]:
    """(table, path, computed): the cached table for `key`, or `compute()` saved there first."""
    path = os.path.join(cache_dir, f"reference_logps-{key}.npz")
    if os.path.exists(path):
        print(f"reference log-probs: reusing {path}")
        return ReferenceTable.load(path, key), path, False
    table = compute()
    if jax.process_index() == 0:
        os.makedirs(cache_dir, exist_ok=True)
        table.save(path, key)
        print(f"reference log-probs: computed and cached in {path}")
    return table, path, True


def with_reference(batch: dict[str, np.ndarray], table: ReferenceTable) -> dict[str, np.ndarray]:
    """`batch` plus its rows' reference log-probs (looked up by `example_index`)."""
    index = np.asarray(batch["example_index"])
    real = np.asarray(batch["chosen_attention_mask"]).any(axis=-1)
    out = dict(batch)
    for field, values in zip(REFERENCE_FIELDS, (table.chosen, table.rejected)):
        looked_up = np.where(real, values[index], 0.0).astype(np.float32)
        if np.isnan(looked_up).any():
            raise ValueError(f"reference table has no {field} for pairs {index[np.isnan(looked_up)].tolist()}")
        out[field] = looked_up
    return out


def reference_tables(logps_fn: Callable, params, datasets: dict[str, list[dict[str, Any]]], *, cache_dir: str,
                     tokenization: dict[str, Any], batches: Callable, put: Callable
                     ) -> tuple[dict[str, ReferenceTable], dict[str, dict[str, Any]]]:
    """Reference tables of several pair data sets (name -> records), each cached on its own.

    `tokenization` holds everything besides the parameters and the records that the log-probs
    depend on (tokenizer fingerprint, template, lengths, compute dtype); `logps_fn(params, batch)`
    is the jitted `preference_steps.reference_logps`; `batches(records)` yields padded host batches
    in order and `put` places one on the mesh. Returns the tables and, per name, {"path", "computed"}.
    """
    params_fp = params_fingerprint(params)
    tables, info = {}, {}
    for name, records in datasets.items():
        if not records:
            continue
        key = cache_key(params=params_fp, records=records_fingerprint(records), **tokenization)

        def compute(records=records):
            return compute_table(logps_fn, params, batches(records), len(records), put)

        tables[name], path, computed = cached_table(cache_dir, key, compute)
        info[name] = {"path": path, "computed": computed}
    return tables, info
