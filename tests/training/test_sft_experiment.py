"""SFT: a pulse run, exact resume after SIGKILL, SIGTERM, accumulation == full batch, NaN stops."""

import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import sft
from rlhf_jax.config import apply_overrides
from rlhf_jax.models import load_pretrained
from rlhf_jax.training.loop import LoopConfig, NonFiniteError, RunContext, read_metrics

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _flags(toy_dir, workdir, steps, **extra):
    flags = {
        "tokenizer_path": toy_dir / "tokenizer", "data.path": toy_dir / "alpaca.json",
        "data.max_length": 48, "data.max_prompt_length": 24, "batch_size": 8, "loop.steps": steps,
        "loop.checkpoint_every": 2, "loop.progress": "false", "optim.lr": 3e-3, "optim.warmup_steps": 0,
        "workdir": workdir, "model.preset": "tiny", **extra}
    return {k: str(v) for k, v in flags.items()}


def _config(flags):
    return apply_overrides(sft.get_config(), list(flags.items()))


def test_sft_pulse_learns_and_exports(toy_dir, tmp_path):
    out = sft.main(_config(_flags(toy_dir, tmp_path, 6, **{"data.eval_examples": 8})))
    records = read_metrics(str(tmp_path))
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5, 6]
    assert records[-1]["train/loss"] < records[0]["train/loss"]
    assert out["eval"]["tokens"] > 0
    assert os.path.isdir(tmp_path / "tb")
    model = load_pretrained(out["hf_model"])
    assert model.cfg.vocab_size >= 300


def _run_cli(flags, **kw):
    args = [sys.executable, "-m", "experiments.sft"] + [f"--config.{k}={v}" for k, v in flags.items()]
    return subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env=dict(os.environ, PYTHONPATH=ROOT), **kw)


def _error_of(output: str) -> str:
    """The traceback of a failed run (JAX errors can end in pages of pytree dumps)."""
    start = max(output.find("Traceback"), 0)
    tail = output[start:]
    return tail if len(tail) < 5000 else tail[:2500] + "\n...\n" + tail[-2500:]


def _wait_for_step(workdir, step, proc, timeout=180):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if os.path.exists(os.path.join(workdir, "metrics.jsonl")) and any(
                r["step"] >= step for r in read_metrics(str(workdir))):
            return
        if proc.poll() is not None:
            raise AssertionError(_error_of(proc.stdout.read().decode()))
        time.sleep(0.2)
    raise TimeoutError(f"step {step} not reached")


def test_resume_after_sigkill_matches_uninterrupted_run(toy_dir, tmp_path):
    # 48 examples / batch 8 = 6 steps an epoch: 9 steps cross an epoch boundary.
    full = _run_cli(_flags(toy_dir, tmp_path / "full", 9))
    killed = _run_cli(_flags(toy_dir, tmp_path / "killed", 9))
    _wait_for_step(tmp_path / "killed", 5, killed)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert full.wait(timeout=300) == 0, _error_of(full.stdout.read().decode())
    resumed = _run_cli(_flags(toy_dir, tmp_path / "killed", 9))
    out = resumed.communicate(timeout=300)[0].decode()
    assert resumed.returncode == 0, _error_of(out)
    assert "resumed from" in out
    a, b = read_metrics(str(tmp_path / "full")), read_metrics(str(tmp_path / "killed"))
    assert [r["step"] for r in b] == list(range(1, 10))
    assert a == b  # bitwise: every metric of every step


def test_sigterm_checkpoints_and_exits_cleanly(toy_dir, tmp_path):
    proc = _run_cli(_flags(toy_dir, tmp_path, 500, **{"loop.checkpoint_every": 1000}))
    _wait_for_step(tmp_path, 2, proc)
    proc.send_signal(signal.SIGTERM)
    out = proc.communicate(timeout=120)[0].decode()
    assert proc.returncode == 0, _error_of(out)
    assert "stopped by SIGTERM after a checkpoint at step" in out
    steps = sorted(int(d) for d in os.listdir(tmp_path / "checkpoints") if d.isdigit())
    assert steps and steps[-1] == read_metrics(str(tmp_path))[-1]["step"]


def test_micro_batch_accumulation_equals_full_batch(toy_dir, tmp_path):
    results = []
    for micro in (1, 4):
        flags = _flags(toy_dir, tmp_path / f"m{micro}", 2, micro_batches=micro)
        results.append(sft.main(_config(flags))["state"].params)
    for a, b in zip(jax.tree.leaves(results[0]), jax.tree.leaves(results[1])):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-5, atol=2e-6)


def test_nan_stops_the_run_naming_the_step(tmp_path):
    run = RunContext(str(tmp_path), LoopConfig(steps=5, checkpoint_every=2, progress=False))
    run.restore_or({"x": jnp.zeros(2)})
    state = {"x": jnp.ones(2)}
    run.record(1, {"loss": jnp.float32(1.0)}, save=lambda: (state, {}))
    run.record(2, {"loss": jnp.float32(0.5)}, save=lambda: (state, {}))
    run.record(3, {"loss": jnp.float32(np.nan)}, save=lambda: (state, {}))
    with pytest.raises(NonFiniteError, match=r"step 3: loss = nan; stopping \(the last good checkpoint \(step 2\) is intact\)"):
        run.record(4, {"loss": jnp.float32(0.1)}, save=lambda: (state, {}))
    run.ckpt.wait()
    assert run.ckpt.all_steps() == [2]


def test_bad_config_is_rejected_before_training(toy_dir, tmp_path):
    with pytest.raises(ValueError, match="batch_size=8 is not divisible by micro_batches=3"):
        sft.main(_config(_flags(toy_dir, tmp_path, 2, micro_batches=3)))
    with pytest.raises(ValueError, match=r"data.format='alpacca'; choose from"):
        sft.main(_config(_flags(toy_dir, tmp_path, 2, **{"data.format": "alpacca"})))
    with pytest.raises(FileNotFoundError, match="data path .*nope.json' does not exist"):
        sft.main(_config(_flags(toy_dir, tmp_path, 2, **{"data.path": tmp_path / "nope.json"})))


def test_metrics_also_go_to_wandb_when_a_project_is_set(tmp_path):
    import glob

    cfg = LoopConfig(steps=2, checkpoint_every=10, progress=False, wandb_project="rlhf_jax_tests",
                     wandb_mode="offline")
    run = RunContext(str(tmp_path), cfg)
    run.restore_or({"x": jnp.zeros(2)})
    for step in (1, 2):
        run.record(step, {"loss": jnp.float32(1.0 / step)})
    run.finish()
    run_id = (tmp_path / "wandb_run_id").read_text().strip()
    files = glob.glob(str(tmp_path / "wandb" / f"offline-run-*-{run_id}" / f"run-{run_id}.wandb"))
    assert files and os.path.getsize(files[0]) > 0
    assert [r["train/loss"] for r in read_metrics(str(tmp_path))] == [1.0, 0.5]
