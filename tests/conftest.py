"""Test set-up shared by the whole suite.

XLA_FLAGS must be set before anything imports jax, so that every test sees 8 virtual CPU devices
and sharded code is exercised for real. pytest imports this file before any test module.
"""

import os

# Tiny programs: LLVM's optimization passes cost more compile time than they save at run time
# (about 12% of a cold-cache run of the suite); the flags are inherited by the subprocesses tests start.
# XLA:CPU aborts the process when a collective's participants (one thread per virtual device) do not
# all arrive within its termination timeout; with two xdist workers and their subprocesses on two
# cores, a test worker was once aborted that way in a metrics reduction. The tests wait longer, and
# say so after 60 s.
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
    " --xla_backend_optimization_level=0"
    " --xla_cpu_collective_call_terminate_timeout_seconds=600"
    " --xla_cpu_collective_call_warn_stuck_timeout_seconds=60"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("WANDB_MODE", "offline")  # tests never reach the W&B servers
# A persistent compilation cache shared by the test processes and the subprocesses they start
# (experiment CLIs, multi-host workers): the same tiny programs compile once per machine.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(
    os.environ.get("TMPDIR", "/tmp"), "rlhf_jax_test_jax_cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

import jax  # noqa: E402  (must come after XLA_FLAGS)

jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_default_matmul_precision", "highest")

import pytest  # noqa: E402


@pytest.fixture
def exclusive_processes():
    """Runs a test that starts several jax.distributed processes on 127.0.0.1 (coordinator port, gloo
    connections) while no other such test runs, across pytest-xdist workers: a file lock. (Once in a
    full `-n 2` run, with two of these tests overlapping, a two-process run hung in its collectives
    until its 300 s timeout; the cause was not pinned down, and overlapping them is not what they test.
    pytest-xdist's `--dist loadgroup` would be the usual tool, but with pytest 9 it does not group.)"""
    import fcntl

    path = os.path.join(os.environ.get("TMPDIR", "/tmp"), "rlhf_jax_multiprocess_tests.lock")
    with open(path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield
