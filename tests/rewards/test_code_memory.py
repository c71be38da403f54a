"""One sandbox's memory, measured on the host during an attack, stays within ``memory_mb``.

Issue #16 item 3: ``/dev`` and ``/dev/shm`` were uncapped tmpfs and RLIMIT_AS was per process
(64 allowed), so forked children and files in memory-backed mounts took many times the limit.
The footprint is measured from outside: the proportional set size (PSS) of every process under
the sandbox uids, plus the used blocks of every tmpfs in the sandbox's mount namespace, plus
memfds held open, sampled while the attack holds what it got.
"""

from __future__ import annotations

import os
import struct
import threading

import pytest

from rewards.code import run_tests, seccomp
from rewards.code import sandbox as sandbox_mod

MEMORY_MB = 256
ATTACK = '''
import os, time
def hog(mb):
    held = []
    try:
        for _ in range(mb // 8):
            held.append(b"\\x01" * (8 << 20))  # touched, so resident
    except MemoryError:
        pass
    return held
def fill(path, mb):
    try:
        with open(path, "wb") as f:
            for _ in range(mb):
                f.write(b"\\x02" * (1 << 20))
                f.flush()
    except OSError:
        pass
for _ in range(8):
    try:
        if os.fork() == 0:
            kept = hog(200)
            time.sleep(60)
            os._exit(0)
    except OSError:
        break
for path in ("/dev/shm/a", "/tmp/a", "/a", "/dev/a"):
    fill(path, 200)
memfds = []
for _ in range(16):
    try:
        fd = os.memfd_create("m")
        os.write(fd, b"\\x03" * (16 << 20))
        memfds.append(fd)
    except OSError:
        break
kept = hog(200)
time.sleep(60)
'''


def _sandbox_pids() -> list[str]:
    low, span = sandbox_mod._UID_BASE, sandbox_mod._UID_SPAN
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if low <= os.stat(f"/proc/{pid}").st_uid < low + span:
                pids.append(pid)
        except OSError:
            continue
    return pids


def _pss_bytes(pid: str) -> int:
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                return int(line.split()[1]) << 10
    return 0


def _tmpfs_bytes(pid: str) -> dict[str, int]:
    """Used bytes of each tmpfs mounted in ``pid``'s mount namespace (host tmpfs excluded)."""
    with open(f"/proc/{pid}/mounts") as f:
        mounts = [line.split() for line in f]
    if not any(m[1] == "/" and m[2] == "tmpfs" for m in mounts):
        return {}  # not inside a sandbox (the outer bwrap sees the host's mounts)
    used = {}
    for _, point, fstype, *_ in mounts:
        if fstype == "tmpfs":
            st = os.statvfs(f"/proc/{pid}/root{point}")
            used[point] = (st.f_blocks - st.f_bfree) * st.f_frsize
    return used


def _memfd_bytes(pid: str) -> dict[str, int]:
    found = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        path = f"/proc/{pid}/fd/{fd}"
        if os.readlink(path).startswith("/memfd:"):
            st = os.stat(path)
            found[f"{st.st_dev}:{st.st_ino}"] = st.st_blocks * 512
    return found


def footprint_bytes() -> int:
    """Host memory held by all sandboxes of this process right now (PSS + tmpfs + memfd)."""
    total, shared = 0, {}
    for pid in _sandbox_pids():
        try:
            total += _pss_bytes(pid)
            ns = os.readlink(f"/proc/{pid}/ns/mnt")
            shared.update({f"{ns}{k}": v for k, v in _tmpfs_bytes(pid).items()})
            shared.update(_memfd_bytes(pid))
        except OSError:  # the process ended while we looked
            continue
    return total + sum(shared.values())


def test_forks_tmpfs_and_memfds_stay_within_memory_mb() -> None:
    peak, stop = [0], threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], footprint_bytes())
            stop.wait(0.02)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        result = run_tests(ATTACK, "", timeout_s=8, memory_mb=MEMORY_MB,
                           stdin_cases=[("", "")])
    finally:
        stop.set()
        sampler.join()
    peak_mb = peak[0] / (1 << 20)
    # It holds its memory until killed: at the deadline, or by the OOM killer of its cgroup
    # where the host delegates one (``rewards.code.cgroup``).
    assert result.status in ("timeout", "memory"), result.detail
    assert peak_mb <= MEMORY_MB, f"sandbox held {peak_mb:.0f} MB at memory_mb={MEMORY_MB}"
    # The attack did fill its budget, so the measurement above is not vacuous.
    assert peak_mb >= MEMORY_MB / 2, f"only {peak_mb:.0f} MB measured"


@pytest.mark.parametrize("memory_mb", [64, 100, 128, 256, 512, 1024, 4096, 65536])
def test_budget_never_exceeds_memory_mb(memory_mb: int) -> None:
    plan = sandbox_mod.budget(sandbox_mod.Limits(memory_mb=memory_mb))
    processes = plan.nproc - 2  # the two bwrap supervisors count against RLIMIT_NPROC
    total = processes * plan.process_mb + plan.tmp_mb + plan.shm_mb + sandbox_mod.SUPERVISOR_MB
    assert total <= memory_mb
    assert processes >= 1 and plan.process_mb >= min(memory_mb // 2, sandbox_mod.MIN_PROCESS_MB)
    assert plan.tmp_mb >= 8 and plan.shm_mb >= 4


PROBE = '''
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
def try_(name, fn):
    try:
        ok = fn() >= 0
    except OSError:
        ok = False
    print(name, "open" if ok else "refused")
try_("memfd", lambda: os.memfd_create("m"))
try_("shmget", lambda: libc.shmget(0, 1 << 20, 0o600))
try_("msgget", lambda: libc.msgget(0, 0o600))
try_("userns", lambda: libc.unshare(0x10000000))
for path in ("/a", "/dev/a", "/dev/shm/a", "/tmp/a"):
    written = 0
    try:
        with open(path, "wb") as f:
            for _ in range(64):
                f.write(b"x" * (1 << 20))
                f.flush()
                written += 1
    except OSError:
        pass
    print(path, written)
'''


def test_memory_outside_the_caps_is_refused() -> None:
    # memory_mb=128: /tmp is capped at 16 MB and /dev/shm at 8 MB; / and /dev are read-only.
    expected = ("memfd refused\nshmget refused\nmsgget refused\nuserns refused\n"
                "/a 0\n/dev/a 0\n/dev/shm/a 8\n/tmp/a 16\n")
    result = run_tests(PROBE, "", timeout_s=10, memory_mb=128, stdin_cases=[("", expected)])
    assert result.passed, result.detail


def test_seccomp_filter_layout() -> None:
    bpf = seccomp.build(0xC000003E, {n: 100 + i for i, n in enumerate(seccomp.DENIED)}, True)
    insns = [struct.unpack("=HBBI", bpf[i:i + 8]) for i in range(0, len(bpf), 8)]
    n = len(seccomp.DENIED)
    assert len(insns) == 4 + n + 3
    enosys, eperm, allow = len(insns) - 1, len(insns) - 2, len(insns) - 3
    for index, (code, jt, jf, k) in enumerate(insns):
        if code == 0x15 and index == 1:  # arch check: mismatch -> ENOSYS
            assert index + 1 + jf == enosys
        elif code == 0x35:  # x32 bit -> ENOSYS
            assert index + 1 + jt == enosys
        elif code == 0x15:  # each denied syscall -> EPERM
            assert index + 1 + jt == eperm and 100 <= k < 100 + n
    assert insns[allow][3] == 0x7FFF0000 and insns[eperm][3] == 0x00050001
    assert seccomp.program() is not None  # the sandbox runs filtered on this machine
