"""experiments.dpo on a tiny model: learning on held-out pairs with a bitwise-frozen reference,
precomputed == resident reference and cache reuse, a run resumed after SIGKILL (bitwise),
micro-batch accumulation == full batch, config errors."""

import math
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from experiments import dpo
from rlhf_jax.config import ConfigError, apply_overrides
from rlhf_jax.data import PipelineConfig, PreferencePair, get_template, read_preference_jsonl
from rlhf_jax.data.tokenize import TokenizeConfig
from rlhf_jax.models import load_pretrained
from rlhf_jax.sharding import make_mesh, put_batch
from rlhf_jax.training import dpo_reference
from rlhf_jax.training.loop import read_metrics
from rlhf_jax.training.preference_data import FilterContext, apply_pair_filters, one_pass, pair_records
from rlhf_jax.training.preference_steps import DPOLoss, cached_jit, dpo_step, optimizer
from rlhf_jax.training.sources import ModelSource, build_model, build_tokenizer
from rlhf_jax.training.state import OptimConfig, cast_copy, init_train_state, split_model
from tests.training.test_sft_experiment import ROOT, _error_of


def _flags(toy_dir, workdir, steps, **extra):
    flags = {
        "tokenizer_path": toy_dir / "tokenizer", "data.format": "preference_jsonl",
        "data.path": toy_dir / "prefs_train.jsonl", "data.max_length": 32, "data.max_prompt_length": 24,
        "batch_size": 8, "loop.steps": steps, "loop.checkpoint_every": 100, "loop.progress": "false",
        "optim.lr": 1e-2, "optim.warmup_steps": 0, "workdir": workdir, **extra}
    return {k: str(v) for k, v in flags.items()}


def _run(flags):
    return dpo.main(apply_overrides(dpo.get_config(), list(flags.items())))


def _train_records(workdir):
    return [r for r in read_metrics(str(workdir)) if "train/loss" in r]


def _initial_model(toy_dir):
    vocab = len(build_tokenizer(str(toy_dir / "tokenizer")))
    return build_model(ModelSource(), mesh=make_mesh(), vocab_size=vocab)


def test_dpo_raises_held_out_margin_with_bitwise_frozen_reference(toy_dir, tmp_path):
    # the reference params are resident (not precomputed): a frozen, non-donated step argument
    out = _run(_flags(toy_dir, tmp_path, 24, **{"data.eval_path": toy_dir / "prefs_test.jsonl"}))
    records = _train_records(tmp_path)
    assert [r["step"] for r in records] == list(range(1, 25))
    # policy == reference at step 1: every pair has margin 0 and loss log 2
    assert records[0]["train/loss"] == pytest.approx(math.log(2), abs=1e-6)
    # held-out pairs: the implicit-reward margin starts at exactly 0 (policy == reference) and rises
    assert out["eval"]["count"] == 16
    assert out["eval"]["margin"] > 0.2 and out["eval"]["accuracy"] >= 0.75, out["eval"]
    # the reference (a copy of the initial policy) is bitwise the initial model; the policy moved
    initial = split_model(_initial_model(toy_dir))[1]
    for ref, init, pol in zip(*(jax.tree.leaves(t) for t in (out["reference_params"], initial, out["state"].params))):
        np.testing.assert_array_equal(np.asarray(ref), np.asarray(init))
        assert not np.array_equal(np.asarray(pol), np.asarray(init))
    assert load_pretrained(out["hf_model"]).cfg.vocab_size == initial["model"]["embed"].shape[0]


def test_precomputed_reference_equals_resident_and_cache_is_reused(toy_dir, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    resident = _run(_flags(toy_dir, tmp_path / "resident", 3))
    cached = _run(_flags(toy_dir, tmp_path / "a", 3, precompute_reference="true", reference_cache_dir=cache))
    assert resident["reference_params"] is not None and cached["reference_params"] is None
    assert cached["reference_cache"]["train"]["computed"]
    # the same trajectory up to float rounding
    for a, b in zip(_train_records(tmp_path / "resident"), _train_records(tmp_path / "a")):
        assert a.keys() == b.keys()
        np.testing.assert_allclose([a[k] for k in a], [b[k] for k in a], rtol=1e-4, atol=1e-6)
    # another run on the same data and reference reads the file; computing again would fail here
    path = cached["reference_cache"]["train"]["path"]
    mtime = os.stat(path).st_mtime_ns

    def fail(*args, **kwargs):
        raise AssertionError("reference log-probs recomputed")

    monkeypatch.setattr(dpo_reference, "compute_table", fail)
    again = _run(_flags(toy_dir, tmp_path / "b", 3, precompute_reference="true", reference_cache_dir=cache))
    assert again["reference_cache"]["train"] == {"path": path, "computed": False}
    assert os.stat(path).st_mtime_ns == mtime
    assert _train_records(tmp_path / "b") == _train_records(tmp_path / "a")  # bitwise


def test_bfloat16_reference_is_the_initial_policy_rounded(toy_dir, tmp_path):
    """`reference_dtype=bfloat16`: a resident reference at half the memory, equal to the initial policy
    rounded to bf16; the first loss is log 2 up to that rounding, and training follows the float32 run."""
    bf16 = _run(_flags(toy_dir, tmp_path / "bf16", 3, reference_dtype="bfloat16"))
    _run(_flags(toy_dir, tmp_path / "f32", 3))
    initial = split_model(_initial_model(toy_dir))[1]
    for ref, init in zip(jax.tree.leaves(bf16["reference_params"]), jax.tree.leaves(initial)):
        assert ref.dtype == jax.numpy.bfloat16
        np.testing.assert_array_equal(np.asarray(ref), np.asarray(init.astype(jax.numpy.bfloat16)))
    a, b = _train_records(tmp_path / "bf16"), _train_records(tmp_path / "f32")
    assert a[0]["train/loss"] != b[0]["train/loss"] == pytest.approx(math.log(2), abs=1e-6)
    np.testing.assert_allclose([r["train/loss"] for r in a], [r["train/loss"] for r in b], rtol=0.05)


def _run_cli(flags):
    args = [sys.executable, "-m", "experiments.dpo"] + [f"--config.{k}={v}" for k, v in flags.items()]
    return subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env=dict(os.environ, PYTHONPATH=ROOT))


def _wait_for_checkpoint(workdir, step, proc, timeout=180):
    deadline = time.time() + timeout
    while not os.path.isdir(os.path.join(workdir, "checkpoints", str(step))):
        if proc.poll() is not None:
            raise AssertionError(_error_of(proc.stdout.read().decode()))
        if time.time() > deadline:
            raise TimeoutError(f"checkpoint {step} not written")
        time.sleep(0.05)


def test_resume_after_sigkill_matches_uninterrupted_run(toy_dir, tmp_path, capsys):
    # 48 pairs / batch 8 = 6 steps an epoch: 9 steps cross an epoch boundary. The reference
    # log-probs are precomputed; the resumed run finds them in the killed run's cache.
    def flags(workdir):
        return _flags(toy_dir, workdir, 9, precompute_reference="true", **{"loop.checkpoint_every": 5})

    _run(flags(tmp_path / "full"))
    killed = _run_cli(flags(tmp_path / "killed"))  # after the full run: its programs are in the cache
    _wait_for_checkpoint(tmp_path / "killed", 5, killed)  # written asynchronously: wait till complete
    killed.send_signal(signal.SIGKILL)
    assert killed.wait() == -signal.SIGKILL  # killed part-way, not finished
    assert [d for d in os.listdir(tmp_path / "killed" / "checkpoints") if d.isdigit()] == ["5"]
    capsys.readouterr()
    resumed = _run(flags(tmp_path / "killed"))
    assert "resumed from" in capsys.readouterr().out
    assert not resumed["reference_cache"]["train"]["computed"]
    a, b = read_metrics(str(tmp_path / "full")), read_metrics(str(tmp_path / "killed"))
    assert [r["step"] for r in b] == list(range(1, 10))
    assert a == b  # bitwise: every metric of every step


def test_micro_batch_accumulation_equals_full_batch(toy_dir):
    graphdef, params = split_model(_initial_model(toy_dir))
    tokenizer = build_tokenizer(str(toy_dir / "tokenizer"))
    pipe = PipelineConfig(batch_size=8, max_length=32, max_prompt_length=24)
    records = pair_records(read_preference_jsonl(str(toy_dir / "prefs_train.jsonl")))
    batch = put_batch(next(one_pass(records, tokenizer, get_template("safe_rlhf"), pipe)), make_mesh())
    tx = optimizer(OptimConfig(lr=1e-2, warmup_steps=0))  # as the runs above: their step program
    ref = cast_copy(params)
    results = []
    for micro in (1, 4):
        state = init_train_state(cast_copy(params), tx)
        step = cached_jit(dpo_step, state=state, graphdef=graphdef, tx=tx, loss=DPOLoss(), num_micro=micro)
        results.append(step(state, batch, ref))
    (full, full_m), (acc, acc_m) = results
    # the metrics, the norm of the raw gradient included (Adam would hide a mis-scaled gradient) ...
    assert float(full_m["grad_norm"]) > 0.01
    np.testing.assert_allclose([full_m[k] for k in full_m], [acc_m[k] for k in full_m], rtol=1e-5, atol=1e-7)
    # ... and the (clipped) gradient itself, as Adam's first moment holds it after one step:
    # mu = (1 - b1) g. (The new params are no fine check: Adam's first update is ~lr * sign(g), so
    # rounding in a near-zero gradient can flip it.)
    for a, b in zip(jax.tree.leaves(full.opt_state), jax.tree.leaves(acc.opt_state)):
        a, b = np.asarray(a), np.asarray(b)
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * np.abs(a).max())


def test_pair_filters_drop_and_count(toy_dir):
    tokenizer = build_tokenizer(str(toy_dir / "tokenizer"))
    pairs = read_preference_jsonl(str(toy_dir / "prefs_train.jsonl"))[:4]
    same = PreferencePair(pairs[0].prompt, "The cat is red.", "The cat is red. ")
    long = PreferencePair(pairs[1].prompt, "The cat is red. " * 12, "The dog is red.")
    ctx = FilterContext(tokenizer, get_template("safe_rlhf"), TokenizeConfig(96, 64))  # prompts fit
    kept, counts = apply_pair_filters(pairs + [same, long], ("drop_identical", "drop_truncated"), ctx)
    assert kept == pairs
    assert counts == {"pairs": 6, "dropped_drop_identical": 1, "dropped_drop_truncated": 1, "kept": 4}


def test_bad_config_is_rejected_before_training(toy_dir, tmp_path):
    with pytest.raises(ConfigError, match=r"dpo.variant: unknown DPO variant 'simgoid'; valid variants: ipo, sigmoid"):
        _run(_flags(toy_dir, tmp_path, 2, **{"dpo.variant": "simgoid"}))
    with pytest.raises(ConfigError, match=r"dpo.label_smoothing=0.1: variant 'ipo' takes none"):
        _run(_flags(toy_dir, tmp_path, 2, **{"dpo.variant": "ipo", "dpo.label_smoothing": 0.1}))
    with pytest.raises(ValueError, match=r"data.filters: unknown pair filter 'short'; choose from"):
        _run(_flags(toy_dir, tmp_path, 2, **{"data.filters": "drop_identical,short"}))
    with pytest.raises(ValueError, match=r"reference_dtype='fp16'; choose '' \(the policy's param dtype\)"):
        _run(_flags(toy_dir, tmp_path, 2, reference_dtype="fp16"))
    with pytest.raises(FileNotFoundError, match=r"data.eval_path: .*nope.jsonl' does not exist"):
        _run(_flags(toy_dir, tmp_path, 2, **{"data.eval_path": tmp_path / "nope.jsonl"}))
    with pytest.raises(ValueError, match=r"data.path=.*: no pair is left after the filters \('drop_truncated',\)"):
        _run(_flags(toy_dir, tmp_path, 2, **{"data.filters": "drop_truncated", "data.max_length": 12,
                                             "data.max_prompt_length": 8}))
