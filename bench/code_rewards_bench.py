"""Benchmark: programs evaluated per second by the code sandbox, for a mix of outcomes.

    python bench/code_rewards_bench.py [--programs 60] [--tests 10] [--timeout 1.0] [--workers N]
                                       [--mix 4:4:1] [--all-tests] [--json]

Each program answers an "add two numbers" problem with `--tests` stdin/stdout tests; the mix is
passing : failing (wrong answer on the first test) : timing out (an infinite loop), in that ratio.
Programs run through `evaluate_programs` (one sandbox subprocess each, `--workers` at a time,
default one per core), with `fail_fast` as in the PPO reward unless `--all-tests`. Prints the
machine, the isolation in force, programs/s overall and the mean wall time per program by kind.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from rlhf_jax.rewards.pool import ProgramRequest, default_workers, evaluate_programs  # noqa: E402
from rlhf_jax.rewards.verdicts import TestCase, Verdict  # noqa: E402

PROGRAMS = {
    "passing": ("a, b = map(int, input().split())\nprint(a + b)\n", Verdict.PASSED),
    "failing": ("a, b = map(int, input().split())\nprint(a - b)\n", Verdict.WRONG_ANSWER),
    "timeout": ("a, b = map(int, input().split())\nwhile True:\n    pass\n", Verdict.TIMEOUT),
}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--programs", type=int, default=60)
    parser.add_argument("--tests", type=int, default=10, help="tests per program")
    parser.add_argument("--timeout", type=float, default=1.0, help="per-test time limit, seconds")
    parser.add_argument("--workers", type=int, default=None, help="parallel sandboxes (default: CPU cores)")
    parser.add_argument("--mix", default="4:4:1", help="passing:failing:timeout ratio")
    parser.add_argument("--all-tests", action="store_true", help="run every test (no fail_fast)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON too")
    args = parser.parse_args(argv)
    weights = [int(w) for w in args.mix.split(":")]
    if len(weights) != 3 or min(weights) < 0 or sum(weights) == 0:
        parser.error(f"--mix must be three non-negative integers like 4:4:1, got {args.mix!r}")
    cycle = [kind for kind, w in zip(PROGRAMS, weights) for _ in range(w)]
    kinds = [cycle[i % len(cycle)] for i in range(args.programs)]
    tests = tuple(TestCase(f"{i} {2 * i}\n", f"{3 * i}\n") for i in range(1, args.tests + 1))
    requests = [ProgramRequest(PROGRAMS[kind][0], tests) for kind in kinds]
    workers = args.workers or default_workers()

    start = time.monotonic()
    results = evaluate_programs(requests, timeout_s=args.timeout, fail_fast=not args.all_tests, max_workers=workers)
    elapsed = time.monotonic() - start

    wrong = [(k, r.verdict.value) for k, r in zip(kinds, results) if r.verdict is not PROGRAMS[k][1]]
    if wrong:
        raise SystemExit(f"unexpected verdicts (kind, verdict): {wrong[:5]}")
    per_kind = {}
    for kind in PROGRAMS:
        walls = [r.wall_s for k, r in zip(kinds, results) if k == kind]
        if walls:
            per_kind[kind] = {"programs": len(walls), "mean_wall_s": sum(walls) / len(walls)}
    summary = {
        "machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "isolation": f"{results[0].network_isolation}; {', '.join(results[0].protections)}",
        "programs": args.programs, "tests_per_program": args.tests, "timeout_s": args.timeout,
        "workers": workers, "mix": args.mix, "fail_fast": not args.all_tests,
        "elapsed_s": elapsed, "programs_per_s": args.programs / elapsed, "per_kind": per_kind,
    }
    print(f"machine: {summary['machine']}")
    print(f"isolation: {summary['isolation']}")
    print(f"{args.programs} programs ({args.mix} passing:failing:timeout), {args.tests} tests each, "
          f"timeout {args.timeout:g} s, {workers} workers, fail_fast={not args.all_tests}")
    print(f"elapsed {elapsed:.2f} s -> {summary['programs_per_s']:.2f} programs/s")
    for kind, row in per_kind.items():
        print(f"  {kind:8s} {row['programs']:4d} programs, mean wall {row['mean_wall_s'] * 1000:.0f} ms per program")
    if args.json:
        print(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()
