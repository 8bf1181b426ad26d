"""Two real processes (jax.distributed, gloo, 127.0.0.1) on one mesh match one process."""

import json
import os
import subprocess
import sys

import numpy as np
import portpicker
import pytest

from rlhf_jax.models.hf_io import load_pretrained
from rlhf_jax.sharding import MeshConfig, make_mesh, put_batch
from tests.core.multihost_common import global_batch, loss_and_grad_norm, wait_for_all
from tests.models.hf_fixtures import make_hf_model

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.usefixtures("exclusive_processes")
def test_two_processes_match_one(tmp_path):
    hf_dir = str(tmp_path / "hf")
    make_hf_model("gqa", hf_dir)
    port = portpicker.pick_unused_port()
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["PYTHONPATH"] = ROOT
    worker = os.path.join(ROOT, "tests", "core", "multihost_worker.py")
    procs = [subprocess.Popen([sys.executable, worker, str(i), "2", str(port), hf_dir, str(tmp_path)],
                              env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
             for i in range(2)]
    outputs = wait_for_all(procs, timeout=240)
    assert all(p.returncode == 0 for p in procs), "\n".join(outputs)
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["devices"] == 8 and result["local_devices"] == 4
    assert result["restored_equal"] is True and result["meta"] == {"pid_count": 2}

    # The same computation in this single process, on its own 8 devices.
    mesh = make_mesh(MeshConfig(2, 2, 2))
    model = load_pretrained(hf_dir, mesh=mesh)
    ids, mask = put_batch(global_batch(), mesh)
    loss, gnorm = loss_and_grad_norm(model, ids, mask)
    np.testing.assert_allclose(result["loss"], float(loss), rtol=1e-5)
    np.testing.assert_allclose(result["grad_norm"], float(gnorm), rtol=1e-5)
