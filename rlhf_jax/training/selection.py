"""Best-checkpoint selection: keep the model with the best validation metric as an HF folder.

The paper selects "the checkpoint with the best validation reward or pass@k". Computing the metric
is the experiment's job; this component only compares, records and exports:

    selection = BestCheckpoint(workdir, SelectionConfig(metric="reward", mode="max"))
    state, meta, start = run.restore_or(state, data_state=None, selection=None)
    selection.restore(meta["selection"])                  # the record survives a resume
    ...
    selection.update(step, eval_metrics, lambda: nnx.merge(graphdef, state.params), tokenizer=tok)
    run.record(step, metrics, save=lambda: (state, {..., "selection": selection.state_dict()}))

Each improvement is written as `workdir/best` (a `save_pretrained` folder) holding `selection.json`
({metric, mode, step, value}), swapped in atomically: the model is written to `best.tmp`, then the
old folder is renamed away and `best.tmp` renamed to `best`. A crash between the two renames is
repaired when the next BestCheckpoint opens the workdir (the old folder is put back). The full
(step, value) history and the best so far are `state_dict()`, which the experiment puts in its
checkpoint meta: after a resume, the record restored from the checkpoint is the authority. (A
`best` folder written after that checkpoint by the interrupted run stays until the resumed run,
which retraces the same steps, improves on the restored record.)

Ties keep the earlier step; non-finite values are recorded (as None) but never selected.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
from collections.abc import Callable, Mapping
from typing import Any, Literal

import jax

from rlhf_jax.models import save_pretrained

RECORD_FILE = "selection.json"


@dataclasses.dataclass(frozen=True)
class SelectionConfig:
    """Which validation metric selects the best model (None: no selection), and its direction."""

    metric: str | None = None
    mode: Literal["max", "min"] = "max"


def read_record(path: str) -> dict[str, Any] | None:
    """The `selection.json` of an exported best folder, or None when there is none."""
    record = os.path.join(path, RECORD_FILE)
    if not os.path.exists(record):
        return None
    with open(record) as f:
        return json.load(f)


class BestCheckpoint:
    """Records (step, value) of one validation metric and keeps the best model in `workdir/best`.

    Args:
      workdir: the run's folder; the model goes to `workdir/<dirname>`.
      cfg: metric name (a key of the metrics dicts given to `update`) and mode "max" or "min".
      key: the config key errors name.
    """

    def __init__(self, workdir: str, cfg: SelectionConfig, *, dirname: str = "best",
                 key: str = "selection"):
        if cfg.metric is None:
            raise ValueError(f"{key}.metric is not set; there is nothing to select by")
        if cfg.mode not in ("max", "min"):
            raise ValueError(f"{key}.mode={cfg.mode!r}; choose 'max' or 'min'")
        self.cfg, self.key = cfg, key
        self.path = os.path.join(workdir, dirname)
        self._tmp, self._old = self.path + ".tmp", self.path + ".old"
        self.history: list[tuple[int, float | None]] = []
        self.best: tuple[int, float] | None = None
        if jax.process_index() == 0:
            self._repair()

    def _repair(self) -> None:
        if os.path.isdir(self._old) and not os.path.isdir(self.path):
            os.rename(self._old, self.path)  # the crash came between the two renames
        for leftover in (self._tmp, self._old):
            shutil.rmtree(leftover, ignore_errors=True)

    # ------------------------------------------------------------------ record
    def state_dict(self) -> dict[str, Any]:
        """JSON-ready record for the checkpoint meta."""
        return {"metric": self.cfg.metric, "mode": self.cfg.mode,
                "history": [[s, v] for s, v in self.history],
                "best": None if self.best is None else list(self.best)}

    def restore(self, state: Mapping[str, Any] | None) -> None:
        """Takes back a `state_dict()` from a checkpoint meta (None: a fresh run, nothing to do)."""
        if state is None:
            return
        for field in ("metric", "mode"):
            if state[field] != getattr(self.cfg, field):
                raise ValueError(f"{self.key}.{field}={getattr(self.cfg, field)!r}, but the run being "
                                 f"resumed selected by {field} {state[field]!r}; keep it or use a new workdir")
        self.history = [(int(s), None if v is None else float(v)) for s, v in state["history"]]
        self.best = None if state["best"] is None else (int(state["best"][0]), float(state["best"][1]))
        if jax.process_index() != 0:
            return
        on_disk = read_record(self.path)
        if self.best is not None and (on_disk is None or on_disk["step"] != self.best[0]):
            found = "nothing" if on_disk is None else f"step {on_disk['step']}"
            print(f"{self.path} holds {found}, the restored record says step {self.best[0]}; "
                  "the folder is rewritten at the next improvement")

    def is_better(self, value: float) -> bool:
        """Whether `value` beats the best so far (strictly; non-finite never does)."""
        if not math.isfinite(value):
            return False
        if self.best is None:
            return True
        return value > self.best[1] if self.cfg.mode == "max" else value < self.best[1]

    # ------------------------------------------------------------------ update
    def update(self, step: int, metrics: Mapping[str, Any], model: Callable[[], Any], *,
               tokenizer=None) -> bool:
        """Records `metrics[cfg.metric]` at `step`; on an improvement exports `model()` (called only
        then, on every process: saving gathers the weights) and returns True."""
        if self.cfg.metric not in metrics:
            raise ValueError(f"{self.key}.metric={self.cfg.metric!r} is not among the validation "
                             f"metrics {sorted(metrics)}")
        if self.history and step <= self.history[-1][0]:
            raise ValueError(f"selection steps must increase: step {step} after {self.history[-1][0]}")
        value = float(metrics[self.cfg.metric])
        self.history.append((int(step), value if math.isfinite(value) else None))
        if not self.is_better(value):
            return False
        self.best = (int(step), value)
        self._export(model(), tokenizer)
        return True

    def _export(self, model, tokenizer) -> None:
        writer = jax.process_index() == 0
        if writer:
            shutil.rmtree(self._tmp, ignore_errors=True)
        save_pretrained(model, self._tmp, tokenizer=tokenizer)
        if not writer:
            return
        step, value = self.best
        with open(os.path.join(self._tmp, RECORD_FILE), "w") as f:
            json.dump({"metric": self.cfg.metric, "mode": self.cfg.mode, "step": step, "value": value}, f)
        if os.path.isdir(self.path):
            os.rename(self.path, self._old)
        os.rename(self._tmp, self.path)
        shutil.rmtree(self._old, ignore_errors=True)
