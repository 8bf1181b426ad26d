"""The per-test child: from fork to the untrusted program, then its verdict data, then exit.

Standard library only (imported by `_runner.py` inside a `python -I` process). `run_test_child`
never returns: it confines the process (file descriptors, resource limits, a non-root uid, no new
privileges, the socket guard when there is no network namespace), runs the program on one test and
`os._exit`s. What the harness needs beyond stdout and stderr goes as one JSON object on fd 3:
  {"kind": "ok"[, "value": <returned value>]}   the program ended normally
  {"kind": "syntax", "message": ...}            the source does not compile
  {"kind": "memory"}                            MemoryError
  {"kind": "exception", "type": ..., "message": ...}
  {"kind": "unserializable", "repr": ...}       a call-based return value JSON cannot carry
  {"kind": "setup", "message": ...}             confinement failed; the program never ran
"""

from __future__ import annotations

import builtins
import errno
import io
import json
import math
import os
import resource
import signal
import sys
import threading
import traceback

import _linux

SETUP_FAILED_EXIT = 125
STATUS_FD = 3
OPEN_FILES_LIMIT = 256

# Imports the LeetCode judge makes before a `class Solution` runs (its type hints use List, Optional, ...).
# Executed in the program's globals before the program, so line numbers in tracebacks stay the user's.
CALL_PREAMBLE = (
    "from typing import *\n"
    "import collections, heapq, itertools, functools, math, bisect, string, re\n"
    "from collections import *\n"
    "from functools import lru_cache, reduce\n"
    "from heapq import heappush, heappop, heapify\n"
    "from itertools import accumulate, combinations, permutations, product\n"
    "from math import inf, gcd\n"
)


def _report(status: dict) -> None:
    data = (json.dumps(status) + "\n").encode()
    try:
        while data:
            data = data[os.write(STATUS_FD, data) :]
    except OSError:
        pass  # the program closed or replaced fd 3; the harness then judges from the exit status


def _set_limits(limits: dict, nproc: int) -> None:
    memory = int(limits["memory_mb"]) << 20
    cpu = math.ceil(float(limits["timeout_s"])) + 1
    fsize = int(limits["max_file_mb"]) << 20
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
    resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))
    resource.setrlimit(resource.RLIMIT_NOFILE, (OPEN_FILES_LIMIT, OPEN_FILES_LIMIT))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def install_socket_guard() -> None:
    """Make every Python-level way to open a socket or resolve a name raise PermissionError.

    The fallback when no network namespace is available. Best effort: code that reaches libc
    directly (ctypes) is not stopped; results say `network_isolation="socket_guard"` so users know.
    """
    import _socket
    import socket

    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, "network access is disabled in this sandbox")

    class GuardedSocket(socket.socket):
        def __init__(self, *args, **kwargs):
            refuse()

    for module in (socket, _socket):
        module.socket = module.SocketType = GuardedSocket
        for name in ("create_connection", "create_server", "socketpair", "fromfd", "getaddrinfo",
                     "gethostbyname", "gethostbyname_ex", "gethostbyaddr", "getnameinfo"):
            if hasattr(module, name):
                setattr(module, name, refuse)


def _confine(fds: tuple[int, int, int, int], limits: dict, ctx: dict) -> None:
    stdin_fd, out_w, err_w, status_w = fds
    os.dup2(stdin_fd, 0)
    os.dup2(out_w, 1)
    os.dup2(err_w, 2)
    os.dup2(status_w, STATUS_FD)
    os.closerange(STATUS_FD + 1, resource.getrlimit(resource.RLIMIT_NOFILE)[0])
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(sig, signal.SIG_DFL)
    _set_limits(limits, ctx["nproc"])
    uid = ctx["uid"]
    if uid is not None:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
        if os.getuid() != uid or os.geteuid() != uid:
            raise OSError(errno.EPERM, f"could not switch to uid {uid}")
    _linux.prctl(_linux.PR_SET_NO_NEW_PRIVS, 1)
    if not ctx["netns"]:
        install_socket_guard()
    sys.dont_write_bytecode = True
    sys.argv = ["solution.py"]
    sys.stdin = sys.__stdin__ = io.TextIOWrapper(io.BufferedReader(io.FileIO(0, "r", closefd=False)), encoding="utf-8")
    sys.stdout = sys.__stdout__ = io.TextIOWrapper(
        io.BufferedWriter(io.FileIO(1, "w", closefd=False), buffer_size=1 << 16), encoding="utf-8"
    )
    sys.stderr = sys.__stderr__ = io.TextIOWrapper(
        io.BufferedWriter(io.FileIO(2, "w", closefd=False)), encoding="utf-8", errors="backslashreplace",
        line_buffering=True,
    )


def _jsonable(value):
    if isinstance(value, (set, frozenset)):
        try:
            return sorted(_jsonable(v) for v in value)
        except TypeError:
            return [_jsonable(v) for v in value]
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k if isinstance(k, str) else json.dumps(_jsonable(k)): _jsonable(v) for k, v in value.items()}
    return value


def _call(namespace: dict, fn_name: str, args):
    solution = namespace.get("Solution")
    if isinstance(solution, type) and hasattr(solution, fn_name):
        fn = getattr(solution(), fn_name)
    elif callable(namespace.get(fn_name)):
        fn = namespace[fn_name]
    else:
        raise NameError(f"the program defines neither {fn_name}() nor class Solution with that method")
    return fn(*args) if isinstance(args, list) else fn(args)


def _finish_like_interpreter() -> None:
    """What a normal interpreter exit does that os._exit skips: join threads, run atexit, flush."""
    main = threading.main_thread()
    for thread in threading.enumerate():
        if thread is not main and not thread.daemon:
            thread.join()
    import atexit

    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.__stdout__, sys.stderr):
        stream.flush()


def _run_program(source: str, mode: str, fn_name: str | None, test_input) -> int:
    try:
        code = compile(source, "solution.py", "exec")
    except (SyntaxError, ValueError) as e:
        _report({"kind": "syntax", "message": f"{type(e).__name__}: {e}"[:1000]})
        return 1
    namespace = {"__name__": "__main__", "__builtins__": builtins, "__file__": "solution.py"}
    status: dict = {"kind": "ok"}
    exit_code = 0
    try:
        if mode == "call":
            exec(CALL_PREAMBLE, namespace)
        exec(code, namespace)
        if mode == "call":
            value = _call(namespace, fn_name, test_input)
            try:
                status["value"] = json.loads(json.dumps(_jsonable(value)))
            except (TypeError, ValueError):
                status = {"kind": "unserializable", "repr": repr(value)[:200]}
        _finish_like_interpreter()
    except SystemExit as e:
        if e.code not in (None, 0):
            exit_code = e.code if isinstance(e.code, int) else 1
            status = {"kind": "exception", "type": "SystemExit", "message": str(e.code)[:500]}
        elif mode == "call":
            exit_code = 1
            status = {"kind": "exception", "type": "SystemExit", "message": "exited before returning"}
        try:
            sys.stdout.flush()
        except BaseException:
            pass
    except MemoryError:
        status, exit_code = {"kind": "memory"}, 1
    except BaseException as e:  # noqa: BLE001 - every failure of untrusted code is a verdict
        exit_code = 1
        status = {"kind": "exception", "type": type(e).__name__, "message": str(e)[:500]}
        try:
            traceback.print_exc()
        except BaseException:
            pass
    _report(status)
    return exit_code


def run_test_child(source: str, mode: str, fn_name: str | None, test_input, fds, limits: dict, ctx: dict):
    """Confine this freshly forked process, run the program on one test, and exit (never returns)."""
    try:
        _confine(fds, limits, ctx)
    except BaseException as e:  # noqa: BLE001
        try:
            os.dup2(fds[3], STATUS_FD)
        except OSError:
            pass
        _report({"kind": "setup", "message": f"{type(e).__name__}: {e}"[:1000]})
        os._exit(SETUP_FAILED_EXIT)
    try:
        exit_code = _run_program(source, mode, fn_name, test_input)
    except BaseException:  # noqa: BLE001 - e.g. MemoryError while reporting
        exit_code = 1
    os._exit(exit_code & 0xFF)
