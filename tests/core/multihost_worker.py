"""One process of a 2-process CPU 'cluster' (jax.distributed + gloo on 127.0.0.1).

Usage: python multihost_worker.py PROCESS_ID NUM_PROCESSES PORT HF_DIR OUT_DIR
Each process owns 4 virtual CPU devices; the (2, 2, 2) mesh spans all 8. It loads the HF checkpoint
into the global mesh (each process reading only its shards), feeds its own half of the batch,
computes the loss and gradient norm, and saves + restores an Orbax checkpoint collectively.
"""

import json
import os
import sys

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
os.environ["JAX_PLATFORMS"] = "cpu"

import jax  # noqa: E402

jax.config.update("jax_cpu_collectives_implementation", "gloo")
jax.config.update("jax_default_matmul_precision", "highest")


def main():
    pid, nproc, port, hf_dir, out_dir = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
    jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=nproc, process_id=pid,
                               local_device_ids=list(range(4)))
    import numpy as np
    from flax import nnx

    from rlhf_jax.checkpoint import Checkpointer, abstract_target
    from rlhf_jax.models.hf_io import load_pretrained
    from rlhf_jax.sharding import MeshConfig, make_mesh, put_batch
    from tests.core.multihost_common import global_batch, loss_and_grad_norm

    assert jax.process_count() == nproc and len(jax.devices()) == 8
    mesh = make_mesh(MeshConfig(2, 2, 2))
    model = load_pretrained(hf_dir, mesh=mesh)
    ids, mask = global_batch()
    rows = ids.shape[0] // nproc
    local = (ids[pid * rows:(pid + 1) * rows], mask[pid * rows:(pid + 1) * rows])
    g_ids, g_mask = put_batch(local, mesh)
    loss, gnorm = loss_and_grad_norm(model, g_ids, g_mask)

    params = nnx.state(model, nnx.Param)
    with Checkpointer(os.path.join(out_dir, "ckpt")) as ckpt:
        ckpt.save(1, {"params": params}, meta={"pid_count": nproc})
        ckpt.wait()
        restored, meta = ckpt.restore(target=abstract_target({"params": params}))
    same = all(bool(jax.numpy.array_equal(a, b)) for a, b in
               zip(jax.tree.leaves(params), jax.tree.leaves(restored["params"])))
    if pid == 0:
        with open(os.path.join(out_dir, "result.json"), "w") as f:
            json.dump({"loss": float(loss), "grad_norm": float(gnorm), "restored_equal": same,
                       "meta": meta, "devices": len(jax.devices()),
                       "local_devices": len(jax.local_devices())}, f)
    jax.distributed.shutdown()
    np.asarray(0)


if __name__ == "__main__":
    main()
