"""Run an untrusted, model-written Python program on unit tests, contained; one verdict per test.

`evaluate_program` starts one runner subprocess per program (`python -I _runner.py`, in a new
session, fresh temporary directory, clean environment) that forks one confined child per test; see
`_runner.py` for the isolation layers and `_child.py` for the per-test confinement. The harness
feeds the test inputs, reads one raw outcome per test, judges it here (the runner never sees the
expected outputs), and kills the runner's whole process group when done. A backstop deadline per
test (the time limit plus `grace_s`) ends everything if the runner ever stops answering.

Protections by set-up (each result lists its own in `protections` and `network_isolation`):
| set-up                        | network      | leftover processes      | process cap (RLIMIT_NPROC)   | files outside the workdir                  |
| root (CI, this VM)            | netns        | pidns: kill(-1) as init | per-program uid: exact       | uid has no write access; private tmpfs     |
| root, namespaces refused      | socket_guard | uid-wide kill(-1)+walk  | per-program uid: exact       | uid has no write access (world-writable    |
|   (container w/o SYS_ADMIN)   |              |                         |                              | dirs such as /tmp stay writable)           |
| non-root, user namespaces     | netns        | pidns                   | fresh userns count           | read-only bind remounts; private tmpfs     |
| non-root, no namespaces       | socket_guard | subreaper walk of /proc | user's current tasks + cap   | the user's own permissions only            |
Verified on the development VM (Linux 6.18, Python 3.11, root, cgroup v1): the first row, and the
other three rows by tests/rewards/test_sandbox_fallbacks.py. Root's RLIMIT_NPROC is not enforced by
the kernel, hence a uid per concurrent program: 1,000,000,000 + 256 * (pid mod 2**20) + slot
(`sandbox_uid_range`).
Without a mount namespace the sandbox uid must be able to read the Python installation; the
confinement probe checks it and raises SandboxError otherwise. Linux only.

The paper (Xu et al. 2024, Sec. 6) rewards PPO with 10 when a program passes every unit test and 0
otherwise; `rlhf_jax.rewards.reward` turns a `ProgramResult` into that reward.
"""

from __future__ import annotations

import dataclasses
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence

from rlhf_jax.rewards.compare import DEFAULT_FLOAT_TOL
from rlhf_jax.rewards.judge import judge_test
from rlhf_jax.rewards.verdicts import ProgramResult, TestCase, TestResult, Verdict, overall_verdict

RUNNER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_runner.py")
UID_SLOTS = 256


class SandboxError(RuntimeError):
    """The sandbox itself could not run (not a verdict on the program): e.g. not Linux, or the
    confinement probe failed before any untrusted code ran."""


@dataclasses.dataclass(frozen=True)
class SandboxConfig:
    """Limits and switches beyond the per-call time and memory limits.

    max_processes: RLIMIT_NPROC for the program (threads count); when the harness runs as root the
      program runs under its own uid, so this caps exactly the program's processes.
    max_output_bytes: stdout cap per test; more is an OUTPUT_LIMIT verdict (stderr keeps 64 KiB).
    max_file_mb: RLIMIT_FSIZE. tmpfs_mb: size of each private tmpfs (working dir, /tmp, /dev/shm).
    namespaces: try network/PID/mount/IPC namespaces (off: socket guard and process-tree killing only).
    grace_s: how long past a test's time limit the harness waits before it gives up on the runner.
    uid_base: first uid of this process's sandbox uids (root only); default derived from the pid.
    """

    max_processes: int = 16
    max_output_bytes: int = 4 << 20
    max_file_mb: int = 16
    tmpfs_mb: int = 64
    namespaces: bool = True
    float_tol: float = DEFAULT_FLOAT_TOL
    grace_s: float = 1.0
    uid_base: int | None = None


class _UidSlots:
    """Hands each concurrent evaluation its own uid, so RLIMIT_NPROC and kill(-1) see only it."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._in_use: set[int] = set()

    def acquire(self) -> int:
        with self._cond:
            while len(self._in_use) >= UID_SLOTS:
                self._cond.wait()
            slot = min(set(range(UID_SLOTS)) - self._in_use)
            self._in_use.add(slot)
            return slot

    def release(self, slot: int) -> None:
        with self._cond:
            self._in_use.discard(slot)
            self._cond.notify()


_UID_SLOTS = _UidSlots()


def sandbox_uid_range(config: SandboxConfig = SandboxConfig()) -> range:
    """The uids this process runs programs under when it is root (one per concurrent evaluation).

    For audits: once `evaluate_program` has returned, no process should have one of these uids.
    """
    base = config.uid_base if config.uid_base is not None else 1_000_000_000 + (os.getpid() % (1 << 20)) * UID_SLOTS
    return range(base, base + UID_SLOTS)


def clean_env(home: str) -> dict[str, str]:
    """The whole environment the program sees: nothing inherited (no tokens, keys or paths)."""
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": home,
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "OPENBLAS_NUM_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }


def _validate(tests: Sequence[TestCase], fn_name: str | None, timeout_s: float, memory_mb: int) -> None:
    if not tests:
        raise ValueError("evaluate_program needs at least one test")
    if not timeout_s > 0:
        raise ValueError(f"timeout_s must be positive, got {timeout_s}")
    if memory_mb < 64:
        raise ValueError(f"memory_mb must be at least 64 (the interpreter needs it), got {memory_mb}")
    if fn_name is not None and not fn_name.isidentifier():
        raise ValueError(f"fn_name must be a Python identifier, got {fn_name!r}")
    for index, test in enumerate(tests):
        if not isinstance(test, TestCase):
            raise TypeError(f"tests[{index}]: expected a TestCase, got {type(test).__name__}")
        if fn_name is None and not (isinstance(test.input, str) and isinstance(test.output, str)):
            raise TypeError(f"tests[{index}]: standard-input tests need str input and output "
                            f"(got {type(test.input).__name__}, {type(test.output).__name__})")
        if fn_name is not None and not isinstance(test.input, list):
            raise TypeError(f"tests[{index}]: call-based test input must be the list of arguments, "
                            f"got {type(test.input).__name__}")


class _Channel:
    """Line-oriented, deadline-bounded conversation with the runner over its pipes."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self._in, self._out, self._err = proc.stdin.fileno(), proc.stdout.fileno(), proc.stderr.fileno()
        os.set_blocking(self._in, False)
        self._lines = bytearray()
        self.stderr = bytearray()
        self._open = [self._out, self._err]

    @property
    def ended(self) -> bool:
        """True once the runner's stdout reached end of file (it exited or was killed)."""
        return self._out not in self._open

    def _pump(self, fds: list[int]) -> None:
        for fd in fds:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                self._open.remove(fd)
            elif fd == self._out:
                self._lines += chunk
            elif len(self.stderr) < 1 << 16:
                self.stderr += chunk[: (1 << 16) - len(self.stderr)]

    def send(self, data: bytes, deadline: float) -> bool:
        """Write all of `data` (reading meanwhile); False if the runner is gone or the deadline passed."""
        view = memoryview(data)
        while view:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._out not in self._open:
                return False
            readable, writable, _ = select.select(self._open, [self._in], [], remaining)
            self._pump(readable)
            if writable:
                try:
                    view = view[os.write(self._in, view) :]
                except BlockingIOError:
                    continue
                except BrokenPipeError:
                    return False
        return True

    def receive(self, deadline: float) -> dict | None:
        """The next JSON event, or None at end of output or at the deadline."""
        while True:
            newline = self._lines.find(b"\n")
            if newline >= 0:
                line = bytes(self._lines[:newline])
                del self._lines[: newline + 1]
                return json.loads(line)
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._out not in self._open:
                return None
            readable, _, _ = select.select(self._open, [], [], remaining)
            self._pump(readable)


def _stop(channel: _Channel, proc: subprocess.Popen, grace_s: float) -> None:
    """Let the runner exit by itself (it then reaps the namespace's init); the group kill follows."""
    if not channel.ended:
        channel.send(b"s", time.monotonic() + grace_s)
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        pass


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()
    for pipe in (proc.stdin, proc.stdout, proc.stderr):
        pipe.close()


def evaluate_program(source: str, tests: Sequence[TestCase], *, timeout_s: float = 2.0, memory_mb: int = 256,
                     fn_name: str | None = None, fail_fast: bool = False,
                     config: SandboxConfig = SandboxConfig()) -> ProgramResult:
    """Run `source` on every test in the sandbox; a verdict per test and overall.

    Standard-input tests unless `fn_name` is given; then each test calls `Solution().fn_name(*input)`
    (LeetCode style, if the program defines `class Solution`) or the top-level `fn_name(*input)`.
    `timeout_s` is each test's wall-clock limit (CPU seconds are capped at ceil(timeout_s) + 1),
    `memory_mb` its address-space limit. `fail_fast` stops at the first test that does not pass
    (the rest are NOT_RUN): enough for the paper's all-or-nothing reward, and much faster on failing
    programs. A syntax error is reported once, on every test, without running anything else.
    Raises SandboxError only when the sandbox cannot run at all; everything a program does becomes a
    verdict.
    """
    if not sys.platform.startswith("linux"):
        raise SandboxError(f"the code sandbox needs Linux (namespaces, prctl, /proc); this is {sys.platform}")
    _validate(tests, fn_name, timeout_s, memory_mb)
    slot = _UID_SLOTS.acquire()
    try:
        with tempfile.TemporaryDirectory(prefix="rlhf_sandbox_") as workdir:
            return _evaluate(source, tests, timeout_s, memory_mb, fn_name, fail_fast, config, slot, workdir)
    finally:
        _UID_SLOTS.release(slot)


def _evaluate(source, tests, timeout_s, memory_mb, fn_name, fail_fast, config, slot, workdir) -> ProgramResult:
    uid = sandbox_uid_range(config)[slot] if os.geteuid() == 0 else None
    if uid is not None:
        os.chown(workdir, uid, uid)
    job = {
        "source": source,
        "mode": "stdio" if fn_name is None else "call",
        "fn_name": fn_name,
        "inputs": [t.input for t in tests],
        "sandbox_uid": uid,
        "namespaces": config.namespaces,
        "limits": {"timeout_s": timeout_s, "memory_mb": memory_mb, "max_processes": config.max_processes,
                   "max_output_bytes": config.max_output_bytes, "max_file_mb": config.max_file_mb,
                   "tmpfs_mb": config.tmpfs_mb},
    }
    start = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-I", RUNNER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, cwd=workdir, env=clean_env(workdir),
                            start_new_session=True, close_fds=True)
    try:
        channel = _Channel(proc)
        startup_deadline = time.monotonic() + config.grace_s + 2.0
        sent = channel.send((json.dumps(job) + "\n").encode(), startup_deadline)
        ready = channel.receive(startup_deadline) if sent else None
        if ready is None or ready.get("event") != "ready":
            reason = ready.get("message") if ready else "no answer"
            raise SandboxError(f"sandbox runner did not start: {reason}; stderr: "
                               f"{channel.stderr.decode(errors='replace')[-2000:]}")
        results: list[TestResult] = []
        while len(results) < len(tests):
            index = len(results)
            event = channel.receive(time.monotonic() + timeout_s + config.grace_s)
            if event is None:
                results += _unanswered(channel, len(tests) - index, timeout_s)
                break
            results.append(judge_test(event, tests[index], call_based=fn_name is not None,
                                      timeout_s=timeout_s, float_tol=config.float_tol))
            verdict = results[-1].verdict
            if verdict is Verdict.SYNTAX_ERROR:
                results += [results[-1]] * (len(tests) - len(results))
            elif fail_fast and verdict is not Verdict.PASSED:
                results += [TestResult(Verdict.NOT_RUN, 0.0, 0.0, "an earlier test failed")] * (len(tests) - len(results))
            elif len(results) < len(tests):
                channel.send(b"c", time.monotonic() + config.grace_s)
        _stop(channel, proc, config.grace_s)
    finally:  # normally a no-op: the runner killed everything after each test and has exited
        _kill_group(proc)
    return ProgramResult(overall_verdict([r.verdict for r in results]), tuple(results), time.monotonic() - start,
                         ready["network"], tuple(ready["protections"]))


def _unanswered(channel: _Channel, missing: int, timeout_s: float) -> list[TestResult]:
    """Verdicts for tests the runner never reported: it stopped answering (killed after this), or died."""
    if not channel.ended:
        first = TestResult(Verdict.TIMEOUT, timeout_s, 0.0, "the sandbox stopped answering; killed")
        return [first] + [TestResult(Verdict.NOT_RUN, 0.0, 0.0, "the sandbox was killed")] * (missing - 1)
    stderr = channel.stderr.decode(errors="replace")[-500:]
    return [TestResult(Verdict.RUNTIME_ERROR, 0.0, 0.0, f"the sandbox runner exited unexpectedly: {stderr}")] * missing
