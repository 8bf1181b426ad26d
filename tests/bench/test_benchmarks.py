"""The benchmark scripts run end to end at their tiny CPU presets and report sane figures (the numbers
themselves are not asserted: benchmarks print them, tests do not time anything)."""

import importlib.util
import json
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _load(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "bench", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_train_bench_tiny(tmp_path, monkeypatch):
    monkeypatch.setenv("OUT", str(tmp_path))
    res = _load("train_bench").main(["--repeats", "1", "--ppo-warmup", "1"])
    assert json.load(open(tmp_path / "train_bench_tiny.json")) == json.loads(json.dumps(res))
    assert res["peak_tflops"] > 0
    for run in ("sft", "reward", "dpo"):
        step = res["steps"][run]
        assert step["step_s"] > 0 and step["tokens_per_s"] > 0
        assert 0 < step["mfu"] <= 1, step
    ppo = res["ppo"]
    # the phases of PPORunner.iteration itself, in its order: device forwards are dispatched before
    # the host scores the responses (so an accelerator runs them while the host works)
    assert list(ppo["phases_s"]) == ["generation", "critic values", "actor log-probs", "reference log-probs",
                                     "scoring", "advantages", "actor updates", "EMA reference", "critic updates"]
    assert ppo["host_phases"] == ["scoring"]  # word_count runs on the host
    assert all(v > 0 for v in ppo["phases_s"].values())
    assert 0 < ppo["device_busy_share"] <= 1
    assert 0 < ppo["generation_new_tokens_per_s"]
    assert ppo["compilations_after_first_iteration"] == 0 and ppo["recompiled"] == {}
    assert ppo["vocab"] == 300


def test_rollout_bench_tiny(tmp_path, monkeypatch):
    monkeypatch.setenv("OUT", str(tmp_path))
    res = _load("rollout_bench").main(["--preset", "tiny"])
    assert (tmp_path / "rollout_bench_tiny.json").exists()
    assert res["new_tokens_per_s"] > 0 and res["ms_per_step"] > 0
    assert res["roofline_share"] > 0  # tiny lives in CPU caches: the share itself says little


@pytest.mark.parametrize("bad", [["--preset", "nope"], ["--skip", "everything"]])
def test_train_bench_rejects_bad_flags(bad):
    with pytest.raises(SystemExit):
        _load("train_bench").main(bad)


def _session(*parts, **env):
    import subprocess

    full_env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root"), "DRY_RUN": "1", **env}
    return subprocess.run(["bash", os.path.join(ROOT, "bench", "gpu_session.sh"), *parts], capture_output=True,
                          text=True, env=full_env, cwd=ROOT, timeout=60)


def test_gpu_scripts_are_shellcheck_clean_and_print_their_commands(tmp_path):
    import shutil
    import subprocess

    done = subprocess.run([shutil.which("shellcheck"), "-x", "bench/gpu_session.sh", "bench/gpu_prepare.sh"],
                          capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    out = _session("steps-fused", "ppo", "rollout", "anchor", PART_TIMEOUT="300", OUT=str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        "+ timeout 300 python3 bench/train_bench.py --preset tinyllama-1.1b --skip ppo --param-dtype bfloat16 "
        "--remat dots_no_batch --attention cudnn",
        "+ timeout 300 python3 bench/train_bench.py --preset tinyllama-1.1b --skip steps",
        "+ timeout 300 python3 bench/rollout_bench.py --preset tinyllama-1.1b",
        "+ timeout 300 python3 shared/bench/gpu_anchor.py jax_bench"]
    bad = _session("steps", "everything", OUT=str(tmp_path))
    assert bad.returncode == 2 and "unknown part 'everything'" in bad.stderr
    # every package the scripts carry is pinned, one per line
    pins = [ln for ln in open(os.path.join(ROOT, "bench", "gpu_wheels.txt")) if ln.strip() and not ln.startswith("#")]
    assert pins and all("==" in ln for ln in pins)
