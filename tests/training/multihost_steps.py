"""Training steps on a mesh that spans processes; run as a worker or imported by the test.

    python tests/training/multihost_steps.py PROCESS_ID NUM_PROCESSES PORT OUT_JSON

Each worker process has 4 virtual CPU devices; the (2, 2, 2) mesh spans 8 over both. The same
global batch is split by rows between the processes (`put_batch`); two jitted SFT steps run, and
process 0 writes the metrics and a parameter checksum.
"""

import json
import os
import sys

if __name__ == "__main__":
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
    os.environ["JAX_PLATFORMS"] = "cpu"

import jax  # noqa: E402
import numpy as np  # noqa: E402

from rlhf_jax.models import LlamaConfig, LlamaForCausalLM, create_model  # noqa: E402
from rlhf_jax.sharding import MeshConfig, make_mesh, put_batch  # noqa: E402
from rlhf_jax.training.state import OptimConfig, init_train_state, make_optimizer, split_model  # noqa: E402
from rlhf_jax.training.loop import precompile  # noqa: E402
from rlhf_jax.training.steps import jit_step, sft_step  # noqa: E402

CFG = LlamaConfig(vocab_size=96, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4,
                  num_kv_heads=2, max_position_embeddings=64)


def sft_batch(B=8, T=16):
    rng = np.random.default_rng(0)
    ids = rng.integers(3, CFG.vocab_size, (B, T)).astype(np.int32)
    lengths = rng.integers(8, T + 1, B)
    attn = (np.arange(T)[None] < lengths[:, None]).astype(np.int32)
    loss = attn.copy()
    loss[:, :4] = 0  # the "prompt"
    return {"input_ids": ids * attn, "attention_mask": attn, "loss_mask": loss,
            "positions": np.arange(T)[None].repeat(B, 0).astype(np.int32) * attn, "segment_ids": attn}


def run_sft_steps(process_id: int, num_processes: int, steps: int = 2) -> dict:
    mesh = make_mesh(MeshConfig(2, 2, 2))
    graphdef, params = split_model(create_model(LlamaForCausalLM, CFG, mesh=mesh, seed=0))
    tx = make_optimizer(OptimConfig(lr=1e-2))
    state = init_train_state(params, tx)
    step = jit_step(sft_step, state=state, graphdef=graphdef, tx=tx, num_micro=2)
    batch = sft_batch()
    rows = len(batch["input_ids"]) // num_processes
    local = {k: v[process_id * rows:(process_id + 1) * rows] for k, v in batch.items()}
    batch = put_batch(local, mesh)
    step = precompile(step, state, batch)  # every process compiles, then a barrier, then collectives
    losses = []
    for _ in range(steps):
        state, metrics = step(state, batch)
        losses.append(float(metrics["loss"]))
    checksum = float(sum(jax.numpy.sum(jax.numpy.abs(p)) for p in jax.tree.leaves(state.params)))
    return {"losses": losses, "checksum": checksum, "step": int(state.step)}


if __name__ == "__main__":
    pid, nproc, port, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=nproc, process_id=pid)
    result = run_sft_steps(pid, nproc)
    if pid == 0:
        with open(out, "w") as f:
            json.dump(result, f)
    jax.distributed.shutdown()
