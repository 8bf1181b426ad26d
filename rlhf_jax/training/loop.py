"""The pieces every experiment loop shares: logging, preemption, NaN stops, checkpoint/resume.

    run = RunContext(workdir, LoopConfig(...))
    state, data_state, extra = run.restore_or(state, data_state=None, extra=...)
    for step in run.steps(start):               # progress bar; stops early on SIGTERM
        state, metrics = step_fn(state, batch)  # dispatched; metrics read one step later
        run.record(step, metrics)               # checks finiteness, logs, may checkpoint
    run.finish(...)

Only process 0 writes logs. Metrics go to TensorBoard event files (`tb/`) and `metrics.jsonl`; a
resumed run first drops the JSONL records written after its checkpoint, so the file tells the
same trajectory as an uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import uuid
from typing import Any, Callable, Iterator, Literal

import jax
import numpy as np

from rlhf_jax.checkpoint import Checkpointer, abstract_target


@dataclasses.dataclass(frozen=True)
class LoopConfig:
    steps: int = 100
    log_every: int = 1
    checkpoint_every: int = 50
    keep_checkpoints: int = 2
    eval_every: int | None = None
    progress: bool = True
    wandb_project: str | None = None  # also log to Weights & Biases (needs `pip install wandb`)
    wandb_mode: Literal["online", "offline"] = "online"


class NonFiniteError(FloatingPointError):
    """A loss or metric became NaN/Inf; the message names the step and the metric."""


class MetricsLogger:
    """TensorBoard event files + a JSONL file under `workdir` (+ W&B when a project is given).

    A no-op on processes other than 0. The W&B run id is kept in `workdir/wandb_run_id`, so a
    resumed run continues the same W&B run.
    """

    def __init__(self, workdir: str, *, resume_step: int | None = None, enabled: bool | None = None,
                 wandb_project: str | None = None, wandb_mode: str = "online"):
        self.enabled = jax.process_index() == 0 if enabled is None else enabled
        self.path = os.path.join(workdir, "metrics.jsonl")
        self._tb = self._wandb = None
        if not self.enabled:
            return
        if wandb_project is not None:
            self._wandb = _start_wandb(workdir, wandb_project, wandb_mode)
        os.makedirs(workdir, exist_ok=True)
        if os.path.exists(self.path):
            keep = []
            with open(self.path) as f:
                for line in f:
                    rec = json.loads(line)
                    if resume_step is not None and rec.get("step", 0) <= resume_step:
                        keep.append(line)
            with open(self.path, "w") as f:
                f.writelines(keep)
        from tensorboardX import SummaryWriter
        self._tb = SummaryWriter(os.path.join(workdir, "tb"))
        self._jsonl = open(self.path, "a")

    def write(self, step: int, metrics: dict[str, Any], *, prefix: str = "train") -> None:
        if not self.enabled:
            return
        flat = {f"{prefix}/{k}": float(v) for k, v in metrics.items()}
        for k, v in flat.items():
            self._tb.add_scalar(k, v, step)
        if self._wandb is not None:
            self._wandb.log(flat, step=int(step))
        self._jsonl.write(json.dumps({"step": int(step), **flat}) + "\n")
        self._jsonl.flush()

    def close(self) -> None:
        if self.enabled:
            self._tb.close()
            self._jsonl.close()
            if self._wandb is not None:
                self._wandb.finish()


def _start_wandb(workdir: str, project: str, mode: str):
    try:
        import wandb
    except ImportError:
        raise ImportError("loop.wandb_project is set but wandb is not installed (pip install wandb)") from None
    id_file = os.path.join(workdir, "wandb_run_id")
    run_id = open(id_file).read().strip() if os.path.exists(id_file) else uuid.uuid4().hex[:12]
    with open(id_file, "w") as f:
        f.write(run_id)
    return wandb.init(project=project, dir=workdir, id=run_id, resume="allow", mode=mode)


def precompile(step_fn, *example_args):
    """`step_fn` compiled ahead of time for these argument shapes, after a barrier across processes.

    Returns the compiled executable (called like `step_fn`, donation included). All processes finish
    compiling before any runs the first step, so no collective waits on a host still compiling.
    """
    from rlhf_jax.distributed import barrier

    compiled = step_fn.lower(*example_args).compile()
    barrier("rlhf_jax: step compiled")
    return compiled


def pad_rows(batch: dict[str, np.ndarray], rows: int) -> dict[str, np.ndarray]:
    """Pads every array of a (last, short) batch with zero rows up to `rows`.

    Zero rows have attention and loss masks of 0, so losses and metrics ignore them, and every
    batch keeps one shape (no recompilation for the last one).
    """
    n = len(next(iter(batch.values())))
    if n > rows:
        raise ValueError(f"batch of {n} rows is larger than {rows}")
    return {k: np.concatenate([v, np.zeros((rows - n,) + v.shape[1:], v.dtype)]) for k, v in batch.items()}


def read_metrics(workdir: str) -> list[dict[str, Any]]:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def check_finite(metrics: dict[str, Any], step: int, *, last_checkpoint: int | None) -> None:
    for name, value in metrics.items():
        if not math.isfinite(float(value)):
            where = (f"the last good checkpoint (step {last_checkpoint}) is intact"
                     if last_checkpoint is not None else "no checkpoint was written yet")
            raise NonFiniteError(f"step {step}: {name} = {float(value)}; stopping ({where})")


class Preemption:
    """Turns SIGTERM (a preemptible TPU VM going away) into a flag the loop polls."""

    def __init__(self):
        self.requested = False
        self._previous = signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum, frame):
        self.requested = True

    def any_requested(self) -> bool:
        if jax.process_count() == 1:
            return self.requested
        from jax.experimental import multihost_utils
        flags = multihost_utils.process_allgather(np.asarray([self.requested]))
        return bool(np.any(flags))

    def restore(self) -> None:
        signal.signal(signal.SIGTERM, self._previous)


class RunContext:
    """Checkpointing, logging, preemption and NaN checks around one experiment's step loop."""

    def __init__(self, workdir: str, cfg: LoopConfig):
        self.workdir, self.cfg = workdir, cfg
        self.ckpt = Checkpointer(os.path.join(os.path.abspath(workdir), "checkpoints"),
                                 max_to_keep=cfg.keep_checkpoints)
        self.preemption = Preemption()
        self.last_checkpoint = self.ckpt.latest_step()
        self.logger: MetricsLogger | None = None
        self._pending: tuple[int, Any] | None = None
        self._last_step, self._save = None, None
        self.stopped_early = False

    def restore_or(self, state: Any, **meta_defaults) -> tuple[Any, dict[str, Any], int]:
        """(state, meta, start_step): the latest checkpoint if any, else the given initial values."""
        step = self.ckpt.latest_step()
        if step is None:
            self.logger = self._logger(resume_step=0)
            return state, dict(meta_defaults), 0
        restored, meta = self.ckpt.restore(step, target=abstract_target(state))
        self.logger = self._logger(resume_step=step)
        print(f"resumed from {self.ckpt.directory} at step {step}")
        return restored, {**meta_defaults, **meta}, step

    def _logger(self, *, resume_step: int) -> MetricsLogger:
        return MetricsLogger(self.workdir, resume_step=resume_step, wandb_project=self.cfg.wandb_project,
                             wandb_mode=self.cfg.wandb_mode)

    def steps(self, start: int) -> Iterator[int]:
        """Steps start+1 .. cfg.steps, with a progress bar; ends early on SIGTERM."""
        from tqdm import tqdm

        bar = tqdm(range(start + 1, self.cfg.steps + 1), initial=start, total=self.cfg.steps,
                   disable=not self.cfg.progress or jax.process_index() != 0, dynamic_ncols=True)
        self._bar = bar
        for step in bar:
            if self.preemption.any_requested():
                self.stopped_early = True
                break
            yield step

    def record(self, step: int, metrics: dict[str, Any], *, save: Callable[[], tuple[Any, dict]] | None = None):
        """Reads the previous step's metrics (the device keeps working), logs, maybe checkpoints.

        `save()` returns (state, meta) to checkpoint; it is called on checkpoint steps, on the last
        step and when preempted.
        """
        if self._pending is not None:
            self._flush(*self._pending)
        self._pending = (step, metrics)
        self._last_step, self._save = step, save
        due = step % self.cfg.checkpoint_every == 0 or step == self.cfg.steps
        if save is not None and (due or self.preemption.requested):
            self._checkpoint()

    def _checkpoint(self) -> None:
        if self._pending is not None:
            self._flush(*self._pending)
            self._pending = None
        state, meta = self._save()
        self.ckpt.save(self._last_step, state, meta=meta, force=True)
        self.last_checkpoint = self._last_step

    def _flush(self, step: int, metrics: dict[str, Any]) -> None:
        host = {k: float(v) for k, v in jax.device_get(metrics).items()}
        check_finite(host, step, last_checkpoint=self.last_checkpoint)
        if step % self.cfg.log_every == 0 or step == self.cfg.steps:
            self.logger.write(step, host)
        if hasattr(self, "_bar"):
            shown = {k: f"{v:.4g}" for k, v in list(host.items())[:4]}
            self._bar.set_postfix(shown, refresh=False)

    def log(self, step: int, metrics: dict[str, Any], *, prefix: str) -> None:
        self.logger.write(step, {k: float(v) for k, v in jax.device_get(metrics).items()}, prefix=prefix)

    def finish(self) -> None:
        """Flushes metrics; on SIGTERM, checkpoints the last completed step first."""
        if self.stopped_early and self._save is not None and self.last_checkpoint != self._last_step:
            self._checkpoint()
        if self._pending is not None:
            self._flush(*self._pending)
            self._pending = None
        self.ckpt.close()
        if self.logger is not None:
            self.logger.close()
        self.preemption.restore()
        if self.stopped_early:
            print(f"stopped by SIGTERM after a checkpoint at step {self.last_checkpoint}")
