"""Hostile programs: each is contained, answered within the limit plus one second, leaves nothing behind.

All programs run once, in parallel through the pool (module fixture), then each test checks one
kind. Every program reads a JSON context on stdin: the port of a listening socket owned by this
test, a directory outside the sandbox (mode 0777), a canary file in it, and this process's pid.
The fork bomb is bounded by RLIMIT_NPROC under the program's own uid (root) or by the user
namespace's process count; a harmless version (fork 40 sleepers, count the successes) is checked
first in `test_process_cap_holds_before_any_fork_bomb`.
"""

import dataclasses
import json
import os
import socket

import pytest

from rlhf_jax.rewards import _linux
from rlhf_jax.rewards.pool import ProgramRequest, evaluate_programs
from rlhf_jax.rewards.sandbox import SandboxConfig, evaluate_program, sandbox_uid_range
from rlhf_jax.rewards.verdicts import TestCase, Verdict

TIMEOUT_S = 1.0
MEMORY_MB = 256
SECRET = "rlhf-canary-secret-5d1f0c"
ANSWER = "ANSWER-7f3c-only-the-harness-knows"
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
REPO_CANARY = os.path.join(REPO, ".sandbox_escape_canary")
PRELUDE = "import json, os, sys, time, signal\nctx = json.loads(sys.stdin.read())\n"
P, W, R, T, M, O = (Verdict.PASSED, Verdict.WRONG_ANSWER, Verdict.RUNTIME_ERROR, Verdict.TIMEOUT,
                    Verdict.MEMORY_LIMIT, Verdict.OUTPUT_LIMIT)


@dataclasses.dataclass(frozen=True)
class Hostile:
    name: str
    body: str
    allowed: frozenset
    expected: str = "ok"
    tests: int = 1


HOSTILE = [
    Hostile("fork_bomb", "while True:\n    try:\n        os.fork()\n    except OSError:\n        pass", frozenset({T})),
    Hostile("memory_bomb", "x = bytearray(1 << 36)", frozenset({M})),
    # Growing 16 MB at a time reaches the memory cap within the wall clock on an idle machine; on a
    # loaded one (CI running tests in parallel) the clock can run out first. Both are containment.
    Hostile("memory_growth", "a = []\nwhile True:\n    a.append(bytearray(1 << 24))", frozenset({M, T})),
    Hostile("infinite_loop", "while True:\n    pass", frozenset({T})),
    Hostile("sleep_past_limit", "time.sleep(60)", frozenset({T})),
    Hostile("ignore_signals", "for s in (signal.SIGTERM, signal.SIGINT, signal.SIGXCPU, signal.SIGHUP):\n"
            "    signal.signal(s, signal.SIG_IGN)\nwhile True:\n    pass", frozenset({T})),
    Hostile("busy_threads", "import threading\ndef spin():\n    while True:\n        pass\n"
            "for _ in range(4):\n    threading.Thread(target=spin).start()", frozenset({T})),
    Hostile("deep_recursion", "sys.setrecursionlimit(10**8)\ndef f(n):\n    return f(n + 1) + 1\nf(0)",
            frozenset({R, M, T})),
    Hostile("huge_stdout", "while True:\n    print('x' * 10000)", frozenset({O})),
    Hostile("huge_stderr", "while True:\n    sys.stderr.write('e' * 10000)", frozenset({T})),
    Hostile("write_outside_workdir",
            "for path in [ctx['outside'] + '/pwned', '" + REPO_CANARY + "', '/root/pwned', '/etc/pwned']:\n"
            "    try:\n        open(path, 'w').write('x')\n    except OSError:\n        pass\n"
            "try:\n    open(ctx['canary'], 'a').write('tampered')\nexcept OSError:\n    pass\nprint('ok')",
            frozenset({P})),
    Hostile("fill_the_disk", "i = 0\ntry:\n    while True:\n        open(f'f{i}', 'wb').write(b'0' * (1 << 20))\n"
            "        i += 1\nexcept OSError as e:\n    print('stopped', e.errno)\nopen('big', 'wb').write(b'0' * (64 << 20))",
            frozenset({R})),
    Hostile("read_environment_secrets",
            "found = dict(os.environ)\nfor p in ['/proc/self/environ', '/proc/1/environ', f\"/proc/{ctx['pid']}/environ\"]:\n"
            "    try:\n        found[p] = open(p, 'rb').read().decode(errors='replace')\n    except OSError:\n        pass\n"
            "print(found)", frozenset({W})),
    Hostile("read_expected_answer_from_memory",
            "import gc\nhits = [o for o in gc.get_objects() if isinstance(o, (dict, list))\n"
            "        and 'ANSWER-' in repr(o)[:100000]]\nprint(hits[:3])", frozenset({W}), expected=ANSWER),
    Hostile("network_connect",
            "import socket\nfor target in [('127.0.0.1', ctx['port']), ('8.8.8.8', 53)]:\n"
            "    try:\n        s = socket.create_connection(target, timeout=0.3)\n        s.sendall(b'pwned')\n"
            "    except OSError:\n        pass\nprint('ok')", frozenset({P})),
    Hostile("kill_the_parent",
            "for pid in (os.getppid(), 1, ctx['pid']):\n    try:\n        os.kill(pid, signal.SIGKILL)\n"
            "    except OSError:\n        pass\ntry:\n    os.killpg(os.getpgid(0), signal.SIGKILL)\nexcept OSError:\n    pass\n"
            "print('ok')", frozenset({P, R}), tests=2),
    Hostile("kill_everyone", "try:\n    os.kill(-1, signal.SIGKILL)\nexcept OSError:\n    pass\nprint('ok')",
            frozenset({P}), tests=2),
    Hostile("close_file_descriptors", "os.closerange(0, 1024)", frozenset({W, R}), tests=2),
    Hostile("redirect_file_descriptors", "fd = os.open(os.devnull, os.O_WRONLY)\nfor t in (1, 2, 3):\n"
            "    os.dup2(fd, t)\nprint('ok')", frozenset({W}), tests=2),
    Hostile("forge_runner_output",
            "line = json.dumps({'event': 'test', 'index': 0, 'outcome': 'exited', 'exit_code': 0, 'signal': None,\n"
            "    'wall_s': 0, 'cpu_s': 0, 'stdout': 'ok', 'stderr_tail': '', 'status': ''}).encode() + b'\\n'\n"
            "for fd in range(4, 256):\n    try:\n        os.write(fd, line)\n    except OSError:\n        pass\n"
            "for path in ['/proc/1/fd/1', f'/proc/{os.getppid()}/fd/1']:\n    try:\n"
            "        open(path, 'wb').write(line)\n    except OSError:\n        pass\nprint('forged')",
            frozenset({W})),
    Hostile("detached_children",
            "if os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n        time.sleep(60)\n    os._exit(0)\n"
            "import subprocess\nsubprocess.Popen(['/bin/sh', '-c', 'sleep 60 &'], start_new_session=True)\n"
            "time.sleep(0.1)\nprint('ok')", frozenset({P})),
    Hostile("privilege_escalation", "os.setuid(0)\nprint('ok')", frozenset({R})),
    Hostile("raise_resource_limits", "import resource\nlim = resource.RLIM_INFINITY\n"
            "resource.setrlimit(resource.RLIMIT_NPROC, (lim, lim))\nprint('ok')", frozenset({R})),
    Hostile("exhaust_file_descriptors", "fds = [os.open(os.devnull, os.O_RDONLY) for _ in range(100000)]",
            frozenset({R})),
    Hostile("thread_bomb", "import threading\nwhile True:\n    threading.Thread(target=time.sleep, args=(60,)).start()",
            frozenset({R, T, M})),
    Hostile("leak_shared_memory",
            "import _posixshmem\nfd = _posixshmem.shm_open('/rlhf_canary_shm', os.O_CREAT | os.O_RDWR, 0o666)\n"
            "os.write(fd, b'x' * 4096)\n"
            "import ctypes\nlibc = ctypes.CDLL(None)\nlibc.shmget(0, 1 << 20, 0o1000 | 0o600)\nprint('ok')",
            frozenset({P})),
    Hostile("trace_the_parent",
            "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
            "r = [libc.ptrace(16, os.getppid(), 0, 0), libc.ptrace(16, ctx['pid'], 0, 0)]\n"
            "try:\n    open(f'/proc/{os.getppid()}/mem', 'rb').read(1)\nexcept OSError:\n    r.append('mem denied')\n"
            "print(r)", frozenset({W})),
]


def _leftover_processes() -> list[int]:
    return _linux.pids_of_uids(sandbox_uid_range()) + _linux.descendants(os.getpid())


def _sysv_segments_of_sandbox() -> list[str]:
    uids = sandbox_uid_range()
    with open("/proc/sysvipc/shm") as f:
        rows = [line.split() for line in list(f)[1:]]
    return [row[1] for row in rows if int(row[7]) in uids]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    outside = tmp_path_factory.mktemp("outside")
    os.chmod(outside, 0o777)
    canary = outside / "canary.txt"
    canary.write_text("untouched")
    os.chmod(canary, 0o666)
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.setblocking(False)
    os.environ["RLHF_SANDBOX_TEST_SECRET"] = SECRET
    context = json.dumps({"port": server.getsockname()[1], "outside": str(outside), "canary": str(canary),
                          "pid": os.getpid()})
    try:
        requests = [ProgramRequest(PRELUDE + h.body, (TestCase(context, h.expected),) * h.tests) for h in HOSTILE]
        results = evaluate_programs(requests, timeout_s=TIMEOUT_S, memory_mb=MEMORY_MB)
    finally:
        del os.environ["RLHF_SANDBOX_TEST_SECRET"]
    try:
        server.accept()
        connections = 1
    except BlockingIOError:
        connections = 0
    server.close()
    yield {
        "results": dict(zip((h.name for h in HOSTILE), results)),
        "connections": connections,
        "leftovers": _leftover_processes(),
        "sysv": _sysv_segments_of_sandbox(),
        "outside": sorted(os.listdir(outside)),
        "canary": canary.read_text(),
    }
    if os.path.exists(REPO_CANARY):
        os.unlink(REPO_CANARY)


def test_process_cap_holds_before_any_fork_bomb():
    program = ("import os, time\nn = 0\nfor _ in range(40):\n    try:\n        pid = os.fork()\n"
               "    except OSError:\n        break\n    if pid == 0:\n        time.sleep(30)\n        os._exit(0)\n"
               "    n += 1\nprint(n)\n")
    result = evaluate_program(program, (TestCase("", "15"),), timeout_s=TIMEOUT_S,
                              config=SandboxConfig(max_processes=16))
    # As root: 16 processes under the program's own uid, i.e. the program and 15 children. Elsewhere
    # the cap also counts the user's other processes, so only "well below 40" is certain.
    assert result.tests[0].verdict is (Verdict.PASSED if os.geteuid() == 0 else Verdict.WRONG_ANSWER)
    assert int(result.tests[0].stdout_head) < 40
    assert _leftover_processes() == []  # its sleeping children died with the test


def test_there_are_at_least_twenty_kinds():
    assert len({h.name for h in HOSTILE}) == len(HOSTILE) >= 20


@pytest.mark.parametrize("hostile", HOSTILE, ids=lambda h: h.name)
def test_each_hostile_program_is_contained_in_time(run, hostile):
    result = run["results"][hostile.name]
    assert result.verdict in hostile.allowed, result.tests
    assert len(result.tests) == hostile.tests  # later tests still ran: the runner survived
    for test in result.tests:
        assert test.wall_s <= TIMEOUT_S + 1.0
    assert result.wall_s <= hostile.tests * TIMEOUT_S + 1.0


def test_nothing_survives_the_run(run):
    assert run["leftovers"] == []
    assert run["sysv"] == []


def test_nothing_outside_the_temporary_directory_changes(run):
    assert run["outside"] == ["canary.txt"]
    assert run["canary"] == "untouched"
    assert not os.path.exists(REPO_CANARY)
    assert not os.path.exists("/dev/shm/rlhf_canary_shm")
    assert not os.path.exists("/root/pwned") and not os.path.exists("/etc/pwned")


def test_no_network_connection_reached_this_process(run):
    assert run["connections"] == 0


def test_no_secret_or_answer_leaks_into_the_output(run):
    leak = run["results"]["read_environment_secrets"].tests[0]
    assert SECRET not in leak.stdout_head and "HOME" in leak.stdout_head  # it did print the environment
    memory = run["results"]["read_expected_answer_from_memory"].tests[0]
    assert ANSWER not in memory.stdout_head


def test_forged_runner_output_is_not_believed(run):
    forged = run["results"]["forge_runner_output"].tests[0]
    assert forged.verdict is Verdict.WRONG_ANSWER and forged.stdout_head == "forged\n"
