"""Run a few programs through the sandbox in a fallback set-up and print the results as JSON.

Started as root by test_sandbox_fallbacks.py: it enters a private mount namespace in which the
Python installation is readable by other users (on this machine it lives under /root, mode 0700,
which without the sandbox's own mount namespace no sandbox uid could read), optionally drops to uid
65534, and only then imports and uses the sandbox, exactly as such a user would. It also reports the
processes left afterwards under the uids the programs ran as.
Usage: python _sandbox_nonroot_helper.py NAMESPACES(0|1) USER(root|nobody) PROGRAMS_JSON
"""

import json
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)
from rlhf_jax.rewards import _linux  # noqa: E402

_linux.unshare(_linux.CLONE_NEWNS)
_linux.mount("none", "/", None, _linux.MS_REC | _linux.MS_PRIVATE)
_linux.bind_back(_linux.open_handles([sys.base_prefix, sys.prefix]), [], for_others=True)
if sys.argv[2] == "nobody":
    os.setgroups([])
    os.setgid(65534)
    os.setuid(65534)

from rlhf_jax.rewards.pool import ProgramRequest, evaluate_programs  # noqa: E402
from rlhf_jax.rewards.sandbox import SandboxConfig, sandbox_uid_range  # noqa: E402
from rlhf_jax.rewards.verdicts import TestCase  # noqa: E402



def leftovers() -> list[int]:
    uids = {65534} if sys.argv[2] == "nobody" else set(sandbox_uid_range())
    return [pid for pid in _linux.pids_of_uids(uids) if pid != os.getpid()] + _linux.descendants(os.getpid())


programs = json.loads(sys.argv[3])
requests = [ProgramRequest(source, (TestCase(test_input, expected),)) for source, test_input, expected in programs]
results = evaluate_programs(requests, timeout_s=1.0, config=SandboxConfig(namespaces=sys.argv[1] == "1"))
print(json.dumps({"leftovers": leftovers(), "results": [
    {"verdict": r.verdict.value, "stdout": r.tests[0].stdout_head, "detail": r.tests[0].detail,
     "network": r.network_isolation, "protections": list(r.protections), "wall_s": r.wall_s}
    for r in results
]}))
