"""Launch one Python process inside bubblewrap, with rlimits, a fresh uid and a memory total.

Isolation of one process (``launch``):
* ``bwrap --unshare-all`` (user, pid, net, ipc, uts, cgroup namespaces: no network at all),
  ``--disable-userns`` (no nested user namespace, so no tmpfs of the program's own; bwrap
  >= 0.8.0, older ones run without it and a program could then mount an uncapped tmpfs),
  ``--die-with-parent``, ``--new-session``, ``--uid/--gid 65534``, ``--cap-drop ALL``,
  ``--clearenv`` plus an explicit minimal environment (the host environment never enters),
  and the ``seccomp`` filter (no memfd, System V shm/msg, POSIX mqueue or io_uring).
* Only ``/usr`` (and the ``/lib*``, ``/bin`` links) and the interpreter's own prefix are
  mounted, read-only; ``/tmp`` (the working directory) and ``/dev/shm`` are private
  size-capped tmpfs; ``/dev`` and ``/proc`` are the sandbox's own; the root and ``/dev``
  tmpfs are remounted read-only. ``/etc``, ``/root``, the repository and ``/work`` do not
  exist inside.
* Memory total (``budget``): ``Limits.memory_mb`` bounds the whole sandbox, all processes
  and both tmpfs together. RLIMIT_AS is per process, so it is ``memory_mb`` minus the tmpfs
  caps and the bwrap supervisors, divided by the number of processes RLIMIT_NPROC allows
  (``Limits.processes``, default 4, fewer when that would leave one under 32 MB; threads
  count as processes there). Measured on the host by ``tests/rewards/test_code_memory.py``.
  Where the host delegates a cgroup v2 subtree with the memory controller (``cgroup``), each
  sandbox gets its own cgroup with ``memory.max = memory_mb`` instead, one process may use it
  all, and a kill by the cgroup's OOM killer is reported as ``memory``.
  Not counted: kernel buffers of pipes and sockets (bounded by fs.pipe-user-pages-soft per
  uid and the socket buffer sysctls) and page tables.
* bwrap runs under a fresh non-root host uid per launch (``preexec_fn``: private mount
  namespace, the interpreter prefix bind-mounted on a world-readable directory because ``/root``
  is 0700, then setgroups/setresgid/setresuid). Why: when the caller is root, uid 65534 in the
  sandbox maps to host root, which (measured here) keeps root's file-owner permissions and makes
  the kernel skip ``RLIMIT_NPROC``. Under a non-root uid ``RLIMIT_NPROC`` is enforced (a fork
  loop fails with EAGAIN after the limit). Per-uid process counts are released lazily by the
  kernel after a sandbox exits, so a uid is never reused soon (``_next_uid``).
* rlimits (``preexec_fn``, after the uid change, inherited by everything inside): AS (memory),
  CPU, FSIZE, NOFILE, NPROC, CORE=0, MSGQUEUE=0. Hard = soft, so they cannot be raised again.
* Kill: the outer bwrap leads its own process group; killing it makes the sandbox's pid 1 die
  (``--die-with-parent``), and the kernel kills every process left in the pid namespace.
  Measured: bwrap's in-namespace pid 1 is re-parented to the host's init when the outer bwrap
  exits, and stays a zombie (no code running) until init reaps it, ~1-2 s on a loaded machine;
  zombies still count against RLIMIT_NPROC of their uid, one more reason for fresh uids.
* Threads: ``preexec_fn`` runs between fork and exec while other launcher threads may hold
  locks; it only calls pre-bound C functions (no imports), which is safe in practice.

This module does not decide verdicts; ``runner`` does.
"""

from __future__ import annotations

import ctypes
import functools
import itertools
import os
import resource
import selectors
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

from rewards.code import cgroup, seccomp

BWRAP = shutil.which("bwrap") or "/usr/bin/bwrap"
PYTHON = os.path.realpath(sys.executable)
PYTHON_HOME = os.path.realpath(sys.base_prefix)
# Python flags: -S no site, -I isolated (no env vars, no user site, no cwd on sys.path), -B no
# .pyc writes. Never -O: the judge refuses to run with stripped asserts anyway.
PYTHON_FLAGS = ["-S", "-I", "-B", "-X", "frozen_modules=on"]
SANDBOX_ENV = {"PATH": "/usr/bin:/bin", "HOME": "/tmp", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}
_STAGE = next((d for d in ("/mnt", "/opt", "/srv", "/media") if os.path.isdir(d)), "/mnt")
_UID_BASE = 1_500_000_000 + (os.getpid() % 1000) * 100_000
_UID_SPAN = 100_000
_uid_counter = itertools.count()
_uid_lock = threading.Lock()

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                        ctypes.c_void_p]
_CLONE_NEWNS, _MS_BIND, _MS_REC, _MS_PRIVATE = 0x20000, 4096, 16384, 1 << 18


@dataclass(frozen=True)
class Limits:
    """Resource limits of one sandbox; ``memory_mb`` bounds all its processes and tmpfs."""

    memory_mb: int = 1024
    cpu_s: int = 11
    file_mb: int = 16
    tmpfs_mb: int = 32  # /tmp, at most memory_mb / 8
    shm_mb: int = 16  # /dev/shm, at most memory_mb / 16
    nofile: int = 256
    processes: int = 4  # tasks (processes or threads) the program may run at once


@dataclass(frozen=True)
class Budget:
    """How ``Limits.memory_mb`` is split: tmpfs sizes, per-process RLIMIT_AS, RLIMIT_NPROC."""

    tmp_mb: int
    shm_mb: int
    process_mb: int
    nproc: int

    @property
    def processes(self) -> int:
        """Tasks the program itself may run (``nproc`` less the two bwrap supervisors)."""
        return self.nproc - 2


SUPERVISOR_MB = 8  # the two bwrap processes (outer, and init of the pid namespace): ~2 MB each
MIN_PROCESS_MB = 32  # an interpreter with a few stdlib modules; fewer processes below this
CGROUP_TASKS = 64  # tasks of one sandbox when a cgroup bounds its memory in total


def budget(limits: Limits, in_cgroup: bool = False,
           supervisor_mb: int = SUPERVISOR_MB) -> Budget:
    """Split ``memory_mb`` so that processes * RLIMIT_AS + both tmpfs + bwrap <= memory_mb.

    RLIMIT_AS is per process and RLIMIT_NPROC counts the uid's tasks (the two bwrap
    supervisors included), so the number of processes times their address-space limit is the
    most they can hold together; the tmpfs caps are counted on top. ``in_cgroup``: the
    cgroup's ``memory.max`` bounds the total, so one process may use all of it.
    ``supervisor_mb``: memory of the sandbox's own trusted processes (more under a fork server).
    """
    tmp = min(limits.tmpfs_mb, limits.memory_mb // 8)
    shm = min(limits.shm_mb, limits.memory_mb // 16)
    if in_cgroup:
        return Budget(tmp, shm, limits.memory_mb, CGROUP_TASKS + 2)
    left = limits.memory_mb - tmp - shm - supervisor_mb
    processes = max(1, min(limits.processes, left // MIN_PROCESS_MB))
    return Budget(tmp, shm, left // processes, processes + 2)


def _next_uid() -> int:
    with _uid_lock:
        return _UID_BASE + next(_uid_counter) % _UID_SPAN


def rlimits(limits: Limits, plan: Budget, nproc: int | None = None) -> list[tuple[int, int]]:
    """The (resource, value) pairs a sandboxed program runs under (hard = soft = value)."""
    return [(resource.RLIMIT_AS, plan.process_mb << 20), (resource.RLIMIT_CPU, limits.cpu_s),
            (resource.RLIMIT_FSIZE, limits.file_mb << 20),
            (resource.RLIMIT_NOFILE, limits.nofile),
            (resource.RLIMIT_NPROC, plan.nproc if nproc is None else nproc),
            (resource.RLIMIT_CORE, 0), (resource.RLIMIT_MSGQUEUE, 0)]


def _preexec(uid: int, limits: Limits, cgroup_procs_fd: int | None,
             override: list[tuple[int, int]] | None = None):
    values = override or rlimits(limits, budget(limits, cgroup_procs_fd is not None))
    home, stage = PYTHON_HOME.encode(), _STAGE.encode()

    def child() -> None:  # runs between fork and exec: no imports, no allocation-heavy work
        if cgroup_procs_fd is not None:  # join the sandbox's cgroup while still privileged
            os.write(cgroup_procs_fd, b"0")
        if _libc.unshare(_CLONE_NEWNS) != 0:
            raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNS)")
        if _libc.mount(b"none", b"/", None, _MS_REC | _MS_PRIVATE, None) != 0:
            raise OSError(ctypes.get_errno(), "mount --make-rprivate /")
        if _libc.mount(home, stage, None, _MS_BIND, None) != 0:
            raise OSError(ctypes.get_errno(), "bind the interpreter prefix")
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
        for which, value in values:
            resource.setrlimit(which, (value, value))

    return child


def _system_binds() -> list[str]:
    args = ["--ro-bind", "/usr", "/usr"]
    for path in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
    return args


@functools.cache
def _disable_userns() -> list[str]:
    """``--disable-userns`` where bwrap has it (>= 0.8.0; older ones would refuse to start)."""
    try:
        text = subprocess.run([BWRAP, "--help"], capture_output=True, text=True, timeout=30,
                              check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    return ["--disable-userns"] if "--disable-userns" in text else []


def bwrap_argv(python_args: list[str], limits: Limits, seccomp_fd: int | None = None,
               keep_caps: tuple[str, ...] = ()) -> list[str]:
    """The full bwrap command line running ``python <flags> <python_args>`` in a sandbox.
    ``keep_caps``: capabilities kept inside the sandbox's user namespace (the fork server's)."""
    plan = budget(limits)
    env: list[str] = []
    for key, value in SANDBOX_ENV.items():
        env += ["--setenv", key, value]
    seccomp_args = [] if seccomp_fd is None else ["--seccomp", str(seccomp_fd)]
    # Writable memory-backed mounts are only the two size-capped tmpfs; the root and /dev
    # tmpfs bwrap creates are remounted read-only once set up. No nested user namespace: it
    # would let the program mount a tmpfs of its own, outside every cap.
    return [BWRAP, "--unshare-all", "--unshare-user", *_disable_userns(), "--die-with-parent",
            "--new-session", "--uid", "65534", "--gid", "65534", "--cap-drop", "ALL",
            *(arg for cap in keep_caps for arg in ("--cap-add", cap)),
            "--clearenv", *env, *_system_binds(), "--ro-bind", _STAGE, PYTHON_HOME,
            "--dev", "/dev", "--size", str(plan.shm_mb << 20), "--tmpfs", "/dev/shm",
            "--proc", "/proc", "--size", str(plan.tmp_mb << 20), "--tmpfs", "/tmp",
            "--remount-ro", "/dev", "--remount-ro", "/", *seccomp_args, "--chdir", "/tmp",
            PYTHON, *PYTHON_FLAGS, *python_args]


def memfd(data: str | bytes, name: str = "rlsys") -> int:
    """A rewound in-memory file holding ``data`` (how code and stdin enter the sandbox)."""
    fd = os.memfd_create(name, os.MFD_CLOEXEC)
    payload = data.encode() if isinstance(data, str) else data
    view = memoryview(payload)
    while view:
        view = view[os.write(fd, view):]
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


class SandboxProcess(subprocess.Popen):
    """The outer bwrap of one sandbox; ``cgroup`` is its cgroup directory, if it has one."""

    cgroup: str | None = None
    oom_killed: bool = False  # set by ``kill``: the cgroup's memory.max was hit


def launch(python_args: list[str], limits: Limits, *, stdin: int, stdout: int, stderr: int,
           pass_fds: tuple[int, ...] = (), keep_caps: tuple[str, ...] = (),
           rlimit_values: list[tuple[int, int]] | None = None) -> SandboxProcess:
    """Start a sandboxed interpreter; the caller owns the returned process (see ``kill``).
    ``keep_caps`` and ``rlimit_values`` (instead of those ``limits`` give) are for the fork
    server, a trusted process that applies each execution's own limits itself."""
    bpf = seccomp.program()
    parent = cgroup.delegated_parent()
    group = None if parent is None else cgroup.create(parent, limits.memory_mb, CGROUP_TASKS)
    procs_fd = seccomp_fd = None
    try:
        if group is not None:  # used by preexec_fn only; close_fds shuts it before exec
            procs_fd = os.open(os.path.join(group, "cgroup.procs"), os.O_WRONLY | os.O_CLOEXEC)
        if bpf is not None:
            seccomp_fd = memfd(bpf, "rlsys-seccomp")
            pass_fds = (*pass_fds, seccomp_fd)
        proc = SandboxProcess(bwrap_argv(python_args, limits, seccomp_fd, keep_caps), stdin=stdin,
                              stdout=stdout, stderr=stderr, pass_fds=pass_fds, cwd="/",
                              env={"PATH": "/usr/bin"}, start_new_session=True,
                              preexec_fn=_preexec(_next_uid(), limits, procs_fd,
                                                  rlimit_values))
    except BaseException:
        if group is not None:
            cgroup.remove(group)
        raise
    finally:
        for fd in (procs_fd, seccomp_fd):
            if fd is not None:
                os.close(fd)
    proc.cgroup = group
    return proc


def kill(proc: subprocess.Popen) -> None:
    """SIGKILL the sandbox's process group (its pid namespace dies with it), reap it, and
    remove its cgroup (noting whether the kernel killed a process there for memory)."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()
    group = getattr(proc, "cgroup", None)
    if group is not None:
        proc.oom_killed = cgroup.oom_killed(group)  # type: ignore[attr-defined]
        cgroup.remove(group)
        proc.cgroup = None  # type: ignore[attr-defined]


@dataclass
class Capture:
    """Bytes read from one pipe, at most ``cap``; ``overflow`` when the writer wanted more."""

    cap: int
    data: bytearray = field(default_factory=bytearray)
    overflow: bool = False
    eof: bool = False


def collect(pipes: dict[int, Capture], deadline: float, stop_on: set[int],
            overflow_stops: set[int]) -> str:
    """Read pipes until every fd in ``stop_on`` hit EOF ("done"), the deadline ("timeout"),
    or a pipe in ``overflow_stops`` exceeded its cap ("output"); other pipes keep being
    drained past their cap (the excess is dropped) so no writer blocks. Closes every fd."""
    selector = selectors.DefaultSelector()
    for fd in pipes:
        os.set_blocking(fd, False)
        selector.register(fd, selectors.EVENT_READ)
    outcome = "done"
    try:
        while not all(pipes[fd].eof for fd in stop_on):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                outcome = "timeout"
                break
            for key, _ in selector.select(remaining):
                capture = pipes[key.fd]
                chunk = os.read(key.fd, 1 << 16)
                if not chunk:
                    capture.eof = True
                    selector.unregister(key.fd)
                    continue
                room = capture.cap - len(capture.data)
                capture.data += chunk[:max(room, 0)]
                if len(chunk) > room:
                    capture.overflow = True
                    if key.fd in overflow_stops:
                        return "output"
    finally:
        selector.close()
        for fd in pipes:
            os.close(fd)
    return outcome
