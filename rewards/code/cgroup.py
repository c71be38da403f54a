"""cgroup v2 memory bound for one sandbox, where the host delegates a cgroup v2 subtree.

With a delegated subtree, each sandbox gets its own child cgroup with ``memory.max`` =
``memory_mb`` (and no swap, ``memory.oom.group``, ``pids.max``): the kernel then counts every
page the sandbox holds (all processes, tmpfs, kernel buffers) and the per-process split of
``sandbox.budget`` is not needed. Where is a subtree delegated? ``delegated_parent`` looks at
this process's own cgroup and its parent (the systemd ``Delegate=yes`` layout, where the
service moves itself into a leaf) and takes the first that has ``memory`` in
``cgroup.subtree_control`` and lets us create a child. Elsewhere (cgroup v1 or hybrid hosts,
no delegation, as on the machine this was written on) it returns None and the sandbox falls
back to the rlimit budget.

This module creates, joins and removes cgroups; it does not decide limits or verdicts.
"""

from __future__ import annotations

import functools
import itertools
import os
import time

_counter = itertools.count()


def parse_own_dir(proc_cgroup: str, mountinfo: str) -> str | None:
    """The directory of this process's cgroup v2, from /proc/self/cgroup and mountinfo text."""
    path = next((line[3:] for line in proc_cgroup.splitlines() if line.startswith("0::")), None)
    if path is None:
        return None
    for line in mountinfo.splitlines():
        fields = line.split()
        sep = fields.index("-") if "-" in fields else -1
        if sep < 0 or fields[sep + 1] != "cgroup2":
            continue
        root, mount_point = fields[3], fields[4]
        rel = os.path.relpath(path, root) if root != "/" else path.lstrip("/")
        if rel.startswith(".."):
            continue
        return os.path.normpath(os.path.join(mount_point, rel))
    return None


def _has_memory(directory: str) -> bool:
    try:
        with open(os.path.join(directory, "cgroup.subtree_control")) as f:
            return "memory" in f.read().split()
    except OSError:
        return False


@functools.cache
def delegated_parent() -> str | None:
    """A cgroup v2 directory whose children get a memory controller and that we may write."""
    try:
        with open("/proc/self/cgroup") as f, open("/proc/self/mountinfo") as g:
            own = parse_own_dir(f.read(), g.read())
    except OSError:
        return None
    if own is None:
        return None
    for directory in (own, os.path.dirname(own)):
        if not _has_memory(directory):
            continue
        probe = os.path.join(directory, f"rlsys-probe-{os.getpid()}")
        try:
            os.mkdir(probe)
            os.rmdir(probe)
        except OSError:
            continue
        return directory
    return None


def _write(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def create(parent: str, memory_mb: int, pids: int) -> str:
    """A fresh child cgroup of ``parent`` holding at most ``memory_mb`` and ``pids`` tasks."""
    path = os.path.join(parent, f"rlsys-sandbox-{os.getpid()}-{next(_counter)}")
    os.mkdir(path)
    try:
        _write(os.path.join(path, "memory.max"), str(memory_mb << 20))
        for name, value in (("memory.swap.max", "0"), ("memory.oom.group", "1"),
                            ("pids.max", str(pids))):
            if os.path.exists(os.path.join(path, name)):
                _write(os.path.join(path, name), value)
    except BaseException:
        os.rmdir(path)
        raise
    return path


def oom_killed(path: str) -> bool:
    """Whether the kernel killed a process of the cgroup for exceeding ``memory.max``."""
    try:
        with open(os.path.join(path, "memory.events")) as f:
            events = dict(line.split() for line in f if line.strip())
    except OSError:
        return False
    return int(events.get("oom_kill", "0")) > 0


def remove(path: str, wait_s: float = 2.0) -> bool:
    """Kill whatever is left in the cgroup and remove it; False if it is still busy."""
    try:
        _write(os.path.join(path, "cgroup.kill"), "1")
    except OSError:
        pass  # before Linux 5.14; the pid namespace dies with bwrap anyway
    deadline = time.monotonic() + wait_s
    while True:
        try:
            os.rmdir(path)
            return True
        except FileNotFoundError:
            return True
        except OSError:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
