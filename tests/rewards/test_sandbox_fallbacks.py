"""The sandbox where the strongest isolation is not available: no namespaces, and not root.

As root with `namespaces=False` (a container without CAP_SYS_ADMIN): the socket guard replaces the
network namespace, and the dedicated uid plus a subreaper walk of /proc replace the PID namespace.
As uid 65534 (a laptop): with a user namespace (namespaces, read-only mounts) and without one
(socket guard, subreaper, RLIMIT_NPROC above the user's current count). Each set-up runs in a
helper process (`_sandbox_fallback_helper.py`) that makes the Python installation readable first.
"""

import json
import os
import subprocess
import sys

import pytest

from rlhf_jax.rewards.verdicts import Verdict

HELPER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_sandbox_fallback_helper.py")
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# (source, stdin, expected stdout) and the verdict every fallback must still give.
PROGRAMS = [
    ("print(sum(map(int, input().split())))", "2 3", "5", Verdict.PASSED),
    ("import socket\ntry:\n    socket.create_connection(('127.0.0.1', 9), timeout=0.3)\n    print('connected')\n"
     "except OSError as e:\n    print('refused')", "", "refused", Verdict.PASSED),
    ("import os, time\nn = 0\nfor _ in range(40):\n    try:\n        pid = os.fork()\n    except OSError:\n"
     "        break\n    if pid == 0:\n        time.sleep(30)\n        os._exit(0)\n    n += 1\nprint(n < 40)",
     "", "True", Verdict.PASSED),
    ("import os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n        time.sleep(60)\n"
     "    os._exit(0)\nprint('ok')", "", "ok", Verdict.PASSED),
    ("import os\nprint(sorted(os.environ))", "", "x", Verdict.WRONG_ANSWER),
    (f"open({REPO!r} + '/.sandbox_fallback_canary', 'w').write('x')", "", "", Verdict.RUNTIME_ERROR),
    ("while True:\n    pass", "", "", Verdict.TIMEOUT),
]


def _run_helper(namespaces: bool, user: str) -> dict:
    programs = json.dumps([p[:3] for p in PROGRAMS])
    done = subprocess.run([sys.executable, HELPER, "1" if namespaces else "0", user, programs], capture_output=True,
                          text=True, timeout=60, env={"PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


# The sandbox mounts private tmpfs over these: a checkout below one of them (CI may clone into /tmp)
# is shadowed inside the sandbox, so the write "succeeds" into the private copy and changes nothing.
REPO_SHADOWED = any(REPO == d or REPO.startswith(d + "/") for d in ("/tmp", "/var/tmp", "/dev/shm", "/run/lock"))


def _check_common(run: dict, network: str) -> list[dict]:
    results = run["results"]
    expected = [p[3] for p in PROGRAMS]
    if REPO_SHADOWED and Verdict(results[5]["verdict"]) == Verdict.PASSED:
        expected[5] = Verdict.PASSED
    assert [Verdict(r["verdict"]) for r in results] == expected, results
    assert results[4]["stdout"].startswith("['HOME', 'LANG', 'LC_ALL'")  # the clean environment only
    assert not os.path.exists(os.path.join(REPO, ".sandbox_fallback_canary"))
    assert {r["network"] for r in results} == {network}
    for r in results:
        assert r["wall_s"] < 2.0
    assert run["leftovers"] == []
    return results


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: the dedicated-uid path without namespaces")
def test_root_without_namespaces_uses_socket_guard_and_uid_kill():
    results = _check_common(_run_helper(namespaces=False, user="root"), "socket_guard")
    protections = results[0]["protections"]
    assert "subreaper" in protections and "netns" not in protections
    assert any(p.startswith("uid ") for p in protections)
    assert REPO_SHADOWED or "Permission denied" in results[5]["detail"]


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch to uid 65534 for the test")
@pytest.mark.parametrize("namespaces, network", [(True, "netns"), (False, "socket_guard")])
def test_not_root(namespaces, network):
    results = _check_common(_run_helper(namespaces=namespaces, user="nobody"), network)
    protections = results[0]["protections"]
    assert "same uid" in protections
    if namespaces:
        assert {"userns", "pidns", "mountns"} <= set(protections)
        assert REPO_SHADOWED or "Read-only file system" in results[5]["detail"]
    else:
        assert "subreaper" in protections
        assert REPO_SHADOWED or "Permission denied" in results[5]["detail"]
