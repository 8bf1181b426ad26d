"""Multi-process start-up: `jax.distributed` from the environment, before any device is touched.

Every experiment calls `initialize_from_env()` first (through `rlhf_jax.config.run`):

- `JAX_COORDINATOR_ADDRESS` (host:port), `JAX_NUM_PROCESSES`, `JAX_PROCESS_ID` set (multi-node GPU,
  `tpu_scripts/launch_gpu.sh`, or `tpu_scripts/launch_local.sh` on one machine): initialize with them;
  `JAX_LOCAL_DEVICE_IDS` (comma-separated) optionally restricts this process's devices.
- A multi-host TPU slice (`TPU_WORKER_HOSTNAMES` lists several hosts) or a SLURM job with several
  tasks: `jax.distributed.initialize()` discovers the cluster itself.
- Otherwise: one process, nothing to do.

On CPU the collectives go through gloo, so two local processes form a real cluster for tests.
"""

from __future__ import annotations

import os

import jax


def _several(value: str | None) -> bool:
    return value is not None and len([h for h in value.split(",") if h.strip()]) > 1


def cluster_from_env(env: dict[str, str] | None = None) -> dict | None:
    """The `jax.distributed.initialize` arguments the environment asks for (None: one process)."""
    env = dict(os.environ) if env is None else env
    address = env.get("JAX_COORDINATOR_ADDRESS")
    if address:
        try:
            num, pid = int(env["JAX_NUM_PROCESSES"]), int(env["JAX_PROCESS_ID"])
        except KeyError as e:
            raise ValueError(f"JAX_COORDINATOR_ADDRESS is set but {e.args[0]} is not") from None
        except ValueError:
            raise ValueError("JAX_NUM_PROCESSES and JAX_PROCESS_ID must be integers") from None
        if not 0 <= pid < num:
            raise ValueError(f"JAX_PROCESS_ID={pid} is outside [0, JAX_NUM_PROCESSES={num})")
        args = {"coordinator_address": address, "num_processes": num, "process_id": pid}
        if env.get("JAX_LOCAL_DEVICE_IDS"):
            args["local_device_ids"] = [int(i) for i in env["JAX_LOCAL_DEVICE_IDS"].split(",")]
        return args
    if _several(env.get("TPU_WORKER_HOSTNAMES")) or int(env.get("SLURM_NTASKS", "1")) > 1:
        return {}  # jax discovers the cluster itself
    return None


_initialized = False


def initialize_from_env() -> bool:
    """Starts jax.distributed when the environment describes several processes; True if it did."""
    global _initialized
    if _initialized:
        return True
    args = cluster_from_env()
    if args is None:
        return False
    if os.environ.get("JAX_PLATFORMS", "").startswith("cpu"):
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(**args)
    _initialized = True
    return True


def barrier(name: str, *, timeout_s: int = 1800) -> None:
    """Waits until every process reaches `name` (through the coordination service, not a collective).

    Used between ahead-of-time compilation and the first multi-process step: compilation time
    differs between hosts, and a collective whose peers are still compiling can time out (gloo's
    connect timeout on CPU clusters). A no-op in a single process.
    """
    if jax.process_count() == 1:
        return
    from jax._src import distributed as jax_distributed  # the public API has no barrier

    jax_distributed.global_state.client.wait_at_barrier(name, timeout_in_ms=timeout_s * 1000)
