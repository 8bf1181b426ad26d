"""Linux system calls the sandbox runner needs and the standard library lacks (via ctypes).

Standard library only: `_runner.py` imports this file by path inside a `python -I` process.
Every function raises OSError with the errno on failure, so the caller can fall back and record
which protection was not in force.
"""

from __future__ import annotations

import ctypes
import errno
import os

CLONE_NEWNS = 0x00020000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
MS_RDONLY = 0x1

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38

# Directories every user may write to on common distributions. Inside the sandbox's own mount
# namespace each one that exists is covered by a fresh, size-capped tmpfs, so writes land there
# and vanish with the namespace.
WORLD_WRITABLE_DIRS = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock", "/dev/mqueue")

_libc = None


def _c() -> ctypes.CDLL:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def unshare(flags: int) -> None:
    """unshare(2): move the calling process into new namespaces (os.unshare exists from 3.12)."""
    if hasattr(os, "unshare"):
        os.unshare(flags)
        return
    _check(_c().unshare(ctypes.c_int(flags)), "unshare")


def mount(source: str, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    """mount(2)."""
    fs = fstype.encode() if fstype is not None else None
    opts = data.encode() if data is not None else None
    _check(
        _c().mount(source.encode(), target.encode(), fs, ctypes.c_ulong(flags), opts),
        f"mount {target}",
    )


def prctl(option: int, arg: int) -> None:
    """prctl(2) with one argument (the rest zero)."""
    _check(
        _c().prctl(ctypes.c_int(option), ctypes.c_ulong(arg), ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0)),
        f"prctl {option}",
    )


def map_current_user_to_root(uid: int, gid: int) -> None:
    """After unshare(CLONE_NEWUSER) as an unprivileged user: become root of the new user namespace."""
    with open("/proc/self/setgroups", "w") as f:
        f.write("deny")
    with open("/proc/self/uid_map", "w") as f:
        f.write(f"0 {uid} 1")
    with open("/proc/self/gid_map", "w") as f:
        f.write(f"0 {gid} 1")


def private_tmpfs_over_shared_dirs(size_mb: int) -> list[str]:
    """In a fresh mount namespace: stop mount propagation, then cover each world-writable directory.

    Returns the directories covered. `MS_REC | MS_PRIVATE` on "/" first, so that nothing mounted
    here is seen outside. Only per-namespace mounts are added; no existing mount is changed.
    """
    mount("none", "/", None, MS_REC | MS_PRIVATE)
    covered = []
    for path in WORLD_WRITABLE_DIRS:
        if os.path.isdir(path) and not os.path.islink(path):
            mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV, f"size={size_mb}m,mode=1777")
            covered.append(path)
    return covered


def open_handles(paths: list[str]) -> dict[str, tuple[int, tuple[int, int]]]:
    """O_PATH handles (and device, inode) of existing directories, taken before anything covers them."""
    handles = {}
    for path in sorted({os.path.realpath(p) for p in paths}, key=len):
        if os.path.isdir(path):
            fd = os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
            st = os.fstat(fd)
            handles[path] = (fd, (st.st_dev, st.st_ino))
    return handles


def _reachable(path: str, ident: tuple[int, int], for_others: bool) -> bool:
    try:
        st = os.stat(path)
    except OSError:
        return False
    if (st.st_dev, st.st_ino) != ident:
        return False
    if for_others:
        parts = path.split("/")
        for end in range(1, len(parts) + 1):
            if not os.stat("/".join(parts[:end]) or "/").st_mode & 0o001:
                return False
    return True


def bind_back(handles: dict[str, tuple[int, tuple[int, int]]], covered: list[str], for_others: bool) -> list[str]:
    """Inside a private mount namespace: make each handled directory reachable again at its path.

    A directory is unreachable when a tmpfs of ours now covers it (say a virtualenv under /tmp) or,
    with `for_others`, when an ancestor is closed to other users (say Python under /root, mode 0700,
    while the program runs under a sandbox uid). Then a small tmpfs covers the closed ancestor (hiding
    its other contents), the path is recreated inside, and the original directory bind-mounted onto
    it. Returns the directories bound back.
    """
    ours, bound = set(covered), []
    for path, (fd, ident) in handles.items():
        if _reachable(path, ident, for_others):
            continue
        parts = path.split("/")
        top = None
        for end in range(2, len(parts)):
            prefix = "/".join(parts[:end])
            if prefix in ours:
                top = end
                break
            if for_others and not os.stat(prefix).st_mode & 0o001:
                mount("tmpfs", prefix, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=755")
                ours.add(prefix)
                top = end
                break
        if top is None:
            raise OSError(errno.ENOENT, f"cannot make {path} reachable")
        for end in range(top + 1, len(parts) + 1):  # the skeleton inside our tmpfs, open to all
            prefix = "/".join(parts[:end])
            if not os.path.isdir(prefix):
                os.mkdir(prefix)
            os.chmod(prefix, 0o755)
        mount(f"/proc/self/fd/{fd}", path, None, MS_BIND | MS_REC)
        bound.append(path)
    for fd, _ in handles.values():
        os.close(fd)
    return bound


def read_only_bind_remounts() -> int:
    """Make every mount point of this (private) mount namespace read-only; returns how many.

    Uses MS_BIND | MS_REMOUNT | MS_RDONLY, which changes only this namespace's view of a mount, never
    the file system itself. Called only inside a user namespace, where the kernel forbids any wider
    change anyway; mounts it may not change (locked ones) are skipped.
    """
    count = 0
    with open("/proc/self/mountinfo") as f:
        targets = [line.split()[4] for line in f]
    for target in targets:
        if target.startswith(("/proc", "/sys", "/dev")) or target in WORLD_WRITABLE_DIRS:
            continue
        try:
            mount("none", target, None, MS_BIND | MS_REMOUNT | MS_RDONLY)
            count += 1
        except OSError as e:
            if e.errno not in (errno.EPERM, errno.EINVAL, errno.EACCES, errno.ENOENT):
                raise
    return count


def tasks_of_uid(uid: int) -> int:
    """How many tasks (threads count, as RLIMIT_NPROC counts them) the real uid `uid` has now."""
    total = 0
    for pid in pids_of_uids({uid}):
        try:
            total += len(os.listdir(f"/proc/{pid}/task"))
        except OSError:
            continue
    return total


def pids_of_uids(uids) -> list[int]:
    """Pids of all processes whose real uid is in `uids` (for audits: leftovers of a sandbox uid)."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/status") as f:
                uid = int(next(line for line in f if line.startswith("Uid:")).split()[1])
        except (OSError, StopIteration):
            continue
        if uid in uids:
            found.append(int(name))
    return found


def descendants(root_pid: int) -> list[int]:
    """Pids of all live descendants of `root_pid`, found through the parent links in /proc/*/stat."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # Field 4 (ppid) follows the command name, which is in parentheses and may hold spaces.
        ppid = int(stat[stat.rindex(b")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(name))
    found, stack = [], [root_pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found
