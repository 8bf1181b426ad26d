"""Evaluate many programs in parallel: a thread pool driving one sandbox subprocess each.

The threads only wait on pipes, so the parallelism is in the subprocesses; the pool is bounded by
the CPU cores (`os.cpu_count()`) so that time limits stay meaningful under load.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os
from collections.abc import Sequence

from rlhf_jax.rewards.sandbox import SandboxConfig, evaluate_program
from rlhf_jax.rewards.verdicts import ProgramResult, TestCase


@dataclasses.dataclass(frozen=True)
class ProgramRequest:
    """One program and the tests to run it on (`fn_name` for call-based tests).

    `timeout_s` overrides the pool-wide per-test limit (CodeContests gives each problem its own).
    """

    source: str
    tests: tuple[TestCase, ...]
    fn_name: str | None = None
    timeout_s: float | None = None


def default_workers() -> int:
    """The pool size used when none is given: one per CPU core."""
    return max(1, os.cpu_count() or 1)


def evaluate_programs(requests: Sequence[ProgramRequest], *, timeout_s: float = 2.0, memory_mb: int = 256,
                      fail_fast: bool = False, max_workers: int | None = None,
                      config: SandboxConfig = SandboxConfig()) -> list[ProgramResult]:
    """`evaluate_program` on every request, in parallel; results in the order of `requests`.

    At most `max_workers` (default: the number of CPU cores) programs run at once.
    """
    workers = max_workers if max_workers is not None else default_workers()
    if workers < 1:
        raise ValueError(f"max_workers must be at least 1, got {workers}")
    if not requests:
        return []
    with concurrent.futures.ThreadPoolExecutor(min(workers, len(requests)), thread_name_prefix="sandbox") as pool:
        futures = [
            pool.submit(evaluate_program, r.source, r.tests, fn_name=r.fn_name, memory_mb=memory_mb,
                        timeout_s=r.timeout_s if r.timeout_s is not None else timeout_s,
                        fail_fast=fail_fast, config=config)
            for r in requests
        ]
        return [f.result() for f in futures]
