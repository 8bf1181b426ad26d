"""Training across two real processes (jax.distributed + gloo on 127.0.0.1) matches one process."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import portpicker

from rlhf_jax.training.loop import read_metrics
from tests.core.multihost_common import wait_for_all
from tests.training.multihost_steps import run_steps

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _env():
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["PYTHONPATH"] = ROOT
    return env


@pytest.mark.usefixtures("exclusive_processes")
def test_sft_and_dpo_steps_on_a_two_process_mesh_match_one_process(tmp_path):
    port, out = portpicker.pick_unused_port(), tmp_path / "result.json"
    worker = os.path.join(ROOT, "tests", "training", "multihost_steps.py")
    procs = [subprocess.Popen([sys.executable, worker, str(i), "2", str(port), str(out)], env=_env(),
                              cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for i in range(2)]
    logs = wait_for_all(procs, timeout=300)
    assert all(p.returncode == 0 for p in procs), "\n".join(logs)
    two = json.loads(out.read_text())
    one = run_steps(0, 1)  # this process: 8 devices, the whole batch
    for algo in ("sft", "dpo"):
        assert two[algo]["step"] == one[algo]["step"] == 2
        np.testing.assert_allclose(two[algo]["losses"], one[algo]["losses"], rtol=1e-5)
        np.testing.assert_allclose(two[algo]["checksum"], one[algo]["checksum"], rtol=1e-5)
        assert one[algo]["losses"][1] < one[algo]["losses"][0]
    np.testing.assert_allclose(one["dpo"]["losses"][0], np.log(2), rtol=1e-6)  # policy == reference
    # the frozen reference is bitwise untouched while the policy moved
    assert two["reference_checksum"] == two["initial_checksum"] != two["dpo"]["checksum"]


@pytest.mark.usefixtures("exclusive_processes")
def test_sft_experiment_runs_as_two_processes_through_the_launch_script(toy_dir, tmp_path):
    flags = [f"--config.tokenizer_path={toy_dir / 'tokenizer'}", f"--config.data.path={toy_dir / 'alpaca.json'}",
             "--config.data.max_length=48", "--config.data.max_prompt_length=24", "--config.batch_size=8",
             "--config.loop.steps=3", "--config.loop.checkpoint_every=2", "--config.loop.progress=false",
             f"--config.workdir={tmp_path / 'run'}", "--config.mesh.data=4", "--config.mesh.tensor=2"]
    env = dict(_env(), NUM_PROCESSES="2", DEVICES_PER_PROCESS="4", LOG_DIR=str(tmp_path))
    done = subprocess.run(["bash", "tpu_scripts/launch_local.sh", "experiments.sft", *flags], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=400)
    logs = "\n".join((tmp_path / f"process_{i}.log").read_text()[-2000:] for i in range(2))
    assert done.returncode == 0, logs
    records = read_metrics(str(tmp_path / "run"))
    assert [r["step"] for r in records] == [1, 2, 3]  # process 0 alone writes the metrics
    assert all(np.isfinite(r["train/loss"]) for r in records)
    assert sorted(os.listdir(tmp_path / "run" / "checkpoints")) == ["2", "3"]
    assert os.path.exists(tmp_path / "run" / "hf_model" / "model.safetensors")
    assert "config:" in (tmp_path / "process_0.log").read_text()
    assert "config:" not in (tmp_path / "process_1.log").read_text()
