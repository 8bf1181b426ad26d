"""Training steps on a mesh that spans processes; run as a worker or imported by the test.

    python tests/training/multihost_steps.py PROCESS_ID NUM_PROCESSES PORT OUT_JSON

Each worker process has 4 virtual CPU devices; the (2, 2, 2) mesh spans 8 over both. The same
global batch is split by rows between the processes (`put_batch`); two jitted SFT steps and two
DPO steps (against a frozen reference, not donated) run, and process 0 writes the metrics and
parameter checksums.
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


def sft_batch(B=8, T=16, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(3, CFG.vocab_size, (B, T)).astype(np.int32)
    lengths = rng.integers(8, T + 1, B)
    attn = (np.arange(T)[None] < lengths[:, None]).astype(np.int32)
    loss = attn.copy()
    loss[:, :4] = 0  # the "prompt"
    return {"input_ids": ids * attn, "attention_mask": attn, "loss_mask": loss,
            "positions": np.arange(T)[None].repeat(B, 0).astype(np.int32) * attn, "segment_ids": attn}


def pair_batch(B=8, T=16):
    chosen, rejected = sft_batch(B, T, seed=1), sft_batch(B, T, seed=2)
    return {**{f"chosen_{k}": v for k, v in chosen.items()}, **{f"rejected_{k}": v for k, v in rejected.items()}}


def _local_rows(batch, process_id, num_processes):
    rows = len(next(iter(batch.values()))) // num_processes
    return {k: v[process_id * rows:(process_id + 1) * rows] for k, v in batch.items()}


def _checksum(tree) -> float:
    return float(sum(jax.numpy.sum(jax.numpy.abs(p)) for p in jax.tree.leaves(tree)))


def run_steps(process_id: int, num_processes: int, steps: int = 2) -> dict:
    """Two SFT steps, then two DPO steps from the same start; losses and parameter checksums."""
    from rlhf_jax.training.preference_steps import DPOLoss, dpo_step

    mesh = make_mesh(MeshConfig(2, 2, 2))
    graphdef, params = split_model(create_model(LlamaForCausalLM, CFG, mesh=mesh, seed=0))
    reference = jax.tree.map(lambda x: x.copy(), params)
    tx = make_optimizer(OptimConfig(lr=1e-2))
    out = {}
    for name, step_fn, batch, extra in (
            ("sft", sft_step, sft_batch(), {}),
            ("dpo", dpo_step, pair_batch(), {"loss": DPOLoss(beta=0.1)})):
        state = init_train_state(jax.tree.map(lambda x: x.copy(), params), tx)
        step = jit_step(step_fn, state=state, graphdef=graphdef, tx=tx, num_micro=2, **extra)
        batch = put_batch(_local_rows(batch, process_id, num_processes), mesh)
        frozen = (reference,) if name == "dpo" else ()
        step = precompile(step, state, batch, *frozen)  # all compile, then a barrier, then collectives
        losses = []
        for _ in range(steps):
            state, metrics = step(state, batch, *frozen)
            losses.append(float(metrics["loss"]))
        out[name] = {"losses": losses, "checksum": _checksum(state.params), "step": int(state.step)}
    out["reference_checksum"] = _checksum(reference)
    out["initial_checksum"] = _checksum(params)
    return out


if __name__ == "__main__":
    pid, nproc, port, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=nproc, process_id=pid)
    result = run_steps(pid, nproc)
    if pid == 0:
        with open(out, "w") as f:
            json.dump(result, f)
    jax.distributed.shutdown()
