"""The trusted side of the sandbox: isolate, then run one program's tests, one forked child each.

Executed as `python -I _runner.py` by `sandbox.evaluate_program` (standard library only). Protocol:
  stdin:  one JSON line (the job: source, mode, fn_name, test inputs, limits, sandbox uid), then one
          control byte after each reported test: b"c" run the next test, anything else stop.
  stdout: JSON lines: {"event": "ready", "protections": [...], "network": ...} once, then
          {"event": "test", "index": i, ...raw outcome...} per test, or {"event": "fatal", ...}.
The runner never sees expected outputs (the harness compares), so nothing the program can read from
its inherited memory tells it the answers. Isolation, as far as the OS allows (the harness starts
this as root or not, and `namespaces` may be off):
  * new network, PID, mount and IPC namespaces (as root; otherwise inside a new user namespace);
    the forked "zygote" is PID 1 of the PID namespace, so `kill(-1)` ends every process the program
    made, detached or not, and the kernel ends them all if the zygote dies;
  * world-writable directories covered by a private size-capped tmpfs; the working directory is a
    fresh one inside it;
  * as root, each test child switches to a dedicated non-root uid, so RLIMIT_NPROC holds and the
    program cannot signal, trace or write into the runner;
  * without a PID namespace the zygote is a child subreaper and kills descendants found in /proc.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _child  # noqa: E402
import _linux  # noqa: E402

del sys.path[0]
sys.dont_write_bytecode = True

STDOUT_PREVIEW_TAIL = 2000


def _emit(event: dict) -> None:
    data = (json.dumps(event) + "\n").encode()
    while data:
        data = data[os.write(1, data) :]


def _isolate(job: dict) -> dict:
    """Enter namespaces (before forking the zygote); returns what is in force."""
    ctx = {"netns": False, "pidns": False, "mountns": False, "userns": False, "protections": []}
    if not job["namespaces"]:
        return ctx
    flags = _linux.CLONE_NEWNS | _linux.CLONE_NEWNET | _linux.CLONE_NEWPID | _linux.CLONE_NEWIPC
    uid, gid = os.getuid(), os.getgid()
    try:
        if uid == 0:
            _linux.unshare(flags)
        else:
            _linux.unshare(flags | _linux.CLONE_NEWUSER)
            _linux.map_current_user_to_root(uid, gid)
            ctx["userns"] = True
    except OSError as e:
        ctx["protections"].append(f"no namespaces ({e.strerror})")
        return ctx
    ctx.update(netns=True, pidns=True, mountns=True)
    ctx["protections"] += ["netns", "pidns", "ipcns", "mountns"] + (["userns"] if ctx["userns"] else [])
    python_dirs = _linux.open_handles([p for p in sys.path if p])
    covered = _linux.private_tmpfs_over_shared_dirs(int(job["limits"]["tmpfs_mb"]))
    ctx["protections"].append("private tmpfs on " + ",".join(covered))
    # The program must still import the standard library and site-packages: under the sandbox uid a
    # Python installed below /root (0700) would be unreadable, and a virtualenv in /tmp now covered.
    bound = _linux.bind_back(python_dirs, covered, for_others=uid == 0 and job["sandbox_uid"] is not None)
    if bound:
        ctx["protections"].append("python dirs bound in: " + ",".join(bound))
    if ctx["userns"]:
        ctx["protections"].append(f"read-only mounts ({_linux.read_only_bind_remounts()})")
    return ctx


def _prepare_zygote(job: dict, ctx: dict) -> str:
    """In the zygote: own /proc, working directory, process limits. Returns the working directory."""
    _linux.prctl(_linux.PR_SET_DUMPABLE, 0)
    _linux.prctl(_linux.PR_SET_PDEATHSIG, signal.SIGKILL)
    if ctx["pidns"]:
        try:
            _linux.mount("proc", "/proc", "proc", _linux.MS_NOSUID | _linux.MS_NODEV | _linux.MS_NOEXEC)
            ctx["protections"].append("private /proc")
        except OSError:
            pass
    else:
        _linux.prctl(_linux.PR_SET_CHILD_SUBREAPER, 1)
        ctx["protections"].append("subreaper")
    uid = job["sandbox_uid"] if os.geteuid() == 0 else None
    ctx["uid"] = uid
    max_procs = int(job["limits"]["max_processes"])
    if uid is not None or ctx["userns"]:
        ctx["nproc"] = max_procs
    else:  # RLIMIT_NPROC counts all tasks of the real uid: leave room for those already running
        ctx["nproc"] = _linux.tasks_of_uid(os.getuid()) + max_procs
    ctx["protections"] += [f"uid {uid}" if uid is not None else "same uid", f"nproc {ctx['nproc']}",
                           "rlimits", "no_new_privs", "clean env"]
    workdir = os.getcwd()
    if ctx["mountns"]:
        workdir = "/tmp/sandbox"
        os.mkdir(workdir, 0o700)
    if uid is not None:
        os.chown(workdir, uid, uid)
    os.chdir(workdir)
    return workdir


def _kill_leftovers(ctx: dict) -> None:
    """SIGKILL every process the test left behind and reap them all."""
    if ctx["pidns"]:
        try:
            os.kill(-1, signal.SIGKILL)  # as PID 1 of the namespace: everyone else in it
        except ProcessLookupError:
            pass
    else:
        if ctx["uid"] is not None:
            helper = os.fork()
            if helper == 0:  # kill(-1) as the sandbox uid reaches exactly that uid's processes
                try:
                    os.setuid(ctx["uid"])
                    os.kill(-1, signal.SIGKILL)
                except OSError:
                    pass
                os._exit(0)
            os.waitpid(helper, 0)
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            found = _linux.descendants(os.getpid())
            if not found:
                break
            for pid in found:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            _reap()
    _reap(block=True)


def _reap(block: bool = False) -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, 0 if block else os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _clear_dir(path: str) -> None:
    for name in os.listdir(path):
        full = os.path.join(path, name)
        if os.path.isdir(full) and not os.path.islink(full):
            shutil.rmtree(full, ignore_errors=True)
        else:
            try:
                os.unlink(full)
            except OSError:
                pass


def _input_fd(data: bytes) -> int:
    fd = os.memfd_create("stdin")
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def _run_one(job: dict, ctx: dict, test_input) -> dict:
    """Fork one confined child for one test, watch it, and return its raw outcome."""
    limits = job["limits"]
    stdin_data = test_input.encode() if job["mode"] == "stdio" else b""
    stdin_fd = _input_fd(stdin_data)
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    st_r, st_w = os.pipe()
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:
        os.close(out_r), os.close(err_r), os.close(st_r)
        _child.run_test_child(job["source"], job["mode"], job["fn_name"], test_input,
                              (stdin_fd, out_w, err_w, st_w), limits, ctx)
    for fd in (stdin_fd, out_w, err_w, st_w):
        os.close(fd)
    caps = {out_r: int(limits["max_output_bytes"]), err_r: 1 << 16, st_r: int(limits["max_output_bytes"]) + 4096}
    bufs = {out_r: bytearray(), err_r: bytearray(), st_r: bytearray()}
    pidfd = os.pidfd_open(pid)
    deadline = start + float(limits["timeout_s"])
    open_fds, outcome = [out_r, err_r, st_r], None
    while outcome is None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            outcome = "timeout"
            break
        ready, _, _ = select.select(open_fds + [pidfd], [], [], remaining)
        for fd in ready:
            if fd == pidfd:
                outcome = "exited"
                continue
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                open_fds.remove(fd)
            elif len(bufs[fd]) + len(chunk) > caps[fd]:
                bufs[fd] += chunk[: caps[fd] - len(bufs[fd])]
                if fd == err_r:  # stderr is only a diagnostic: keep the head, drop the rest
                    continue
                outcome = "output_limit"
            else:
                bufs[fd] += chunk
    wall = time.monotonic() - start
    if outcome != "exited":
        os.kill(pid, signal.SIGKILL)
    _, status, usage = os.wait4(pid, 0)
    _kill_leftovers(ctx)
    os.close(pidfd)
    for fd in (out_r, err_r, st_r):  # everything is dead now: drain what is left, up to the caps
        os.set_blocking(fd, False)
        while outcome == "exited":
            try:
                chunk = os.read(fd, 1 << 16)
            except BlockingIOError:
                break
            if not chunk:
                break
            if len(bufs[fd]) + len(chunk) > caps[fd] and fd != err_r:
                outcome = "output_limit"
            bufs[fd] += chunk[: max(0, caps[fd] - len(bufs[fd]))]
        os.close(fd)
    return {
        "outcome": outcome,
        "exit_code": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
        "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
        "wall_s": wall,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "stdout": bufs[out_r].decode("utf-8", errors="replace"),
        "stderr_tail": bufs[err_r][-STDOUT_PREVIEW_TAIL:].decode("utf-8", errors="replace"),
        "status": bufs[st_r].decode("utf-8", errors="replace"),
    }


def _zygote(job: dict, ctx: dict) -> int:
    workdir = _prepare_zygote(job, ctx)
    # A confined child that imports a module nothing has loaded yet: proves that confinement works
    # and that the sandbox uid can still read the standard library, before any untrusted code runs.
    probe = _run_one(dict(job, source="import colorsys", mode="stdio"), ctx, "")
    if probe["outcome"] != "exited" or probe["exit_code"] != 0:
        hint = ""
        if "ModuleNotFoundError" in probe["status"] and ctx["uid"] is not None:
            hint = (f" (uid {ctx['uid']} cannot read the Python installation at {sys.prefix}: without a mount"
                    " namespace it must be readable by all users, or run the harness as a non-root user)")
        _emit({"event": "fatal", "message": f"confinement probe failed: {probe['status'] or probe}{hint}"})
        return 1
    _emit({"event": "ready", "protections": ctx["protections"], "network": "netns" if ctx["netns"] else "socket_guard"})
    control = sys.stdin.buffer
    for index, test_input in enumerate(job["inputs"]):
        result = _run_one(job, ctx, test_input)
        _emit(dict(result, event="test", index=index))
        _clear_dir(workdir)
        if index + 1 < len(job["inputs"]) and control.read(1) != b"c":
            break
    return 0


def main() -> int:
    job = json.loads(sys.stdin.buffer.readline())
    _linux.prctl(_linux.PR_SET_PDEATHSIG, signal.SIGKILL)
    ctx = _isolate(job)
    if not ctx["pidns"]:
        return _zygote(job, ctx)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            code = _zygote(job, ctx)
        except BaseException as e:  # noqa: BLE001 - report, then let the namespace die
            _emit({"event": "fatal", "message": f"runner error: {type(e).__name__}: {e}"})
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) & 0xFF


if __name__ == "__main__":
    sys.exit(main())
