"""``ForkServer``: many sandboxed executions from one warm sandbox, each in a fresh process.

One ``ForkServer`` is one bwrap sandbox (``sandbox.launch``: fresh host uid, no network,
seccomp, read-only ``/``) running ``_zygote.py``, an interpreter that has already started and
compiled the agent, judge and stdin-runner programs. Each ``launch`` asks it for one
execution: a fork that becomes pid 1 of new pid, mount, IPC and network namespaces, gets its
own size-capped ``/tmp`` and ``/dev/shm`` tmpfs and its own ``/proc``, the rlimits of its
``Limits`` (RLIMIT_NPROC counted above the server's own tasks, RLIMIT_AS from ``budget`` with
the server's memory counted as a supervisor), no capability, no_new_privs and a seccomp filter
stacked on the sandbox's (keyrings too, see ``seccomp.SHARED_UID_DENIED``), then runs the
program in a child. This saves bwrap's namespace setup and the interpreter's start per
execution (see BENCHMARKS.md, "code").

Isolation between executions of one server. Executions run one at a time; ``Execution.end``
returns only after the execution's pid 1 has exited, and the kernel has then killed and reaped
every process of its pid namespace (so no daemon or fork bomb outlives it, and RLIMIT_NPROC
counts are back). Its files lived in its own tmpfs, gone with its mount namespace; globals
lived in its own process; abstract sockets and SysV IPC in its own namespaces. The server
never reads an execution's program, arguments or tests (they travel in descriptors it only
passes on), so a later fork finds nothing of an earlier one in its memory.
Not shared with the bwrap-per-execution path: the host uid (one per server, not per run) and
the user namespace; what those would share (keyrings) is refused by the filter.
Not for a delegated cgroup v2 (``cgroup``): there each execution needs its own cgroup, so
``SandboxPool`` keeps one bwrap per execution. This module does not decide verdicts.
"""

from __future__ import annotations

import json
import os
import resource
import select
import signal
import socket
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

from rewards.code import seccomp
from rewards.code.sandbox import SUPERVISOR_MB, Limits, budget, kill, launch, memfd, rlimits

STARTUP_TIMEOUT_S = 60.0  # a server's interpreter start and probe on a loaded machine
REPLY_TIMEOUT_S = 30.0  # the server answers a start or kill within this, or is ended
MAX_EXECUTIONS = 2000  # a server is replaced after this many executions (CPU time, hygiene)
#: Memory of the server's own processes beside the two bwraps: the server, its supervisor and
#: each execution's pid 1, forks sharing their pages (PSS measured ~9 MB in all; margin kept).
SERVER_MB = 24
#: in the sandbox's user namespace only: namespaces and mounts, dropping the bounding set,
#: bringing an execution's loopback up
SERVER_CAPS = ("CAP_SYS_ADMIN", "CAP_SETPCAP", "CAP_NET_ADMIN")
#: The server's own limits: it is trusted and long-lived; every execution lowers them itself.
SERVER_RLIMITS = [(resource.RLIMIT_AS, resource.RLIM_INFINITY),
                  (resource.RLIMIT_CPU, resource.RLIM_INFINITY),
                  (resource.RLIMIT_FSIZE, resource.RLIM_INFINITY),
                  (resource.RLIMIT_NOFILE, 4096), (resource.RLIMIT_NPROC, 256),
                  (resource.RLIMIT_CORE, 0), (resource.RLIMIT_MSGQUEUE, 0)]
SERVER_LIMITS = Limits(memory_mb=256, tmpfs_mb=1, shm_mb=1)  # its own /tmp stays empty


class ForkServerError(RuntimeError):
    """The fork server could not start or could not set an execution up."""


class Execution:
    """One execution of a ``ForkServer``; quacks like the ``subprocess.Popen`` the runner uses
    (``poll``, ``wait``, ``returncode``) plus ``end`` (kill everything, wait, like ``kill``)."""

    cgroup = None
    oom_killed = False

    def __init__(self, server: ForkServer) -> None:
        self.server = server
        self.pid: int | None = None  # pid of its pid 1 in the server's namespace, once started
        self.returncode: int | None = None

    def poll(self) -> int | None:
        """The exit status if the execution has ended, else None."""
        if self.returncode is None:
            self.server.wait_exit(self, 0.0)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the execution's end; ``subprocess.TimeoutExpired`` after ``timeout`` s."""
        limit = REPLY_TIMEOUT_S * 1e6 if timeout is None else timeout
        if self.returncode is None and not self.server.wait_exit(self, limit):
            raise subprocess.TimeoutExpired("fork-server execution", limit)
        assert self.returncode is not None
        return self.returncode

    def end(self) -> None:
        """SIGKILL the execution's pid namespace and wait until nothing of it is left."""
        if self.returncode is None:
            self.server.kill_execution(self)


class ForkServer:
    """A warm sandbox that starts one fresh, isolated execution at a time (see module doc).

    Not thread-safe: one thread drives one server (``SandboxPool`` keeps one per worker).
    """

    def __init__(self, programs: Mapping[str, str], modules: Mapping[str, str] | None = None,
                 max_executions: int = MAX_EXECUTIONS) -> None:
        """``programs``: name -> source the server compiles once (``launch`` runs one by
        name); ``modules``: name -> source of helper modules installed before them."""
        self.max_executions = max_executions
        self._spec = {"programs": dict(programs), "modules": dict(modules or {}),
                      "seccomp": (seccomp.program(seccomp.SHARED_UID_DENIED) or b"").hex()}
        self._proc = None
        self._sock: socket.socket | None = None
        self._base_tasks = -1  # until the server says it is ready
        self._served = 0
        self._current: Execution | None = None

    # -- lifecycle -----------------------------------------------------------------------
    def prepare(self) -> None:
        """Start the server's sandbox without waiting for it (a later ``launch`` waits), so
        that two servers can start at once; nothing if it runs or is starting already."""
        if not self._usable():
            self.close()  # first use, worn out, or its sandbox died (killed from outside)
            self._spawn()

    def _usable(self) -> bool:
        return (self._sock is not None and self._served < self.max_executions
                and self._proc is not None and self._proc.poll() is None)

    def _spawn(self) -> None:
        host, inside = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        sources = memfd(json.dumps(self._spec))
        try:
            self._proc = launch(["-c", _zygote_source(), str(inside.fileno()), str(sources)],
                                SERVER_LIMITS, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                pass_fds=(inside.fileno(), sources), keep_caps=SERVER_CAPS,
                                rlimit_values=SERVER_RLIMITS)
        except BaseException:
            host.close()
            raise
        finally:
            inside.close()
            os.close(sources)
        self._sock, self._served, self._base_tasks = host, 0, -1

    def _await_ready(self) -> None:
        ready = self._recv(time.monotonic() + STARTUP_TIMEOUT_S)
        if not isinstance(ready, dict) or ready.get("ready") is not True:
            self.close()
            raise ForkServerError(f"fork server: did not start (got {ready!r})")
        self._base_tasks = int(ready["base_tasks"])

    def close(self) -> None:
        """End the server's sandbox (every execution in it) and forget it."""
        if self._current is not None:
            self._current.returncode = -signal.SIGKILL
            self._current = None
        if self._proc is not None:
            kill(self._proc)
            self._proc = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def pids(self) -> list[int]:
        """Host pid of the server's outer bwrap (empty when not running)."""
        return [] if self._proc is None else [self._proc.pid]

    # -- executions ----------------------------------------------------------------------
    def launch(self, prog: str, args: list[str], limits: Limits, *, stdin: int, stdout: int,
               stderr: int, pass_fds: tuple[int, ...] = ()) -> Execution:
        """Start program ``prog`` (named in the constructor) with ``sys.argv = [prog, *args]``,
        fds 0-2 and ``pass_fds`` at the caller's numbers; one execution at a time.
        Returns once the request is sent (the caller may start another server meanwhile);
        the server's confirmation is read with the first ``poll``/``wait``/``end``, and a
        setup failure raises ``ForkServerError`` there (the program never ran)."""
        if self._current is not None:
            raise ForkServerError("fork server: the previous execution was not ended")
        self.prepare()
        if self._base_tasks < 0:
            self._await_ready()
        assert self._sock is not None
        plan = budget(limits, supervisor_mb=SUPERVISOR_MB + SERVER_MB)
        args_fd = memfd(json.dumps([prog, *args]))
        null = os.open(os.devnull, os.O_RDWR) if subprocess.DEVNULL in (stdin, stdout,
                                                                       stderr) else -1
        io = [null if fd == subprocess.DEVNULL else fd for fd in (stdin, stdout, stderr)]
        request = {"prog": prog, "targets": [0, 1, 2, *pass_fds, args_fd], "args_fd": args_fd,
                   "tmp": plan.tmp_mb << 20, "shm": plan.shm_mb << 20,
                   "rlimits": rlimits(limits, plan,
                                      nproc=self._base_tasks + 1 + plan.processes)}
        try:
            socket.send_fds(self._sock, [json.dumps(request).encode()],
                            [*io, *pass_fds, args_fd])
        except OSError as exc:
            self.close()
            raise ForkServerError(f"fork server: lost while starting an execution: {exc}") \
                from exc
        finally:
            os.close(args_fd)
            if null >= 0:
                os.close(null)
        self._served += 1
        self._current = Execution(self)
        return self._current

    def wait_exit(self, execution: Execution, timeout: float) -> bool:
        """Wait up to ``timeout`` s for ``execution``'s exit report; True once it has one.
        ForkServerError if the server reports that it could not set the execution up."""
        deadline = time.monotonic() + timeout
        while execution.returncode is None:
            message = self._recv(deadline)
            if message == "timeout":
                return False
            if isinstance(message, dict) and "started" in message and execution.pid is None:
                execution.pid = int(message["started"])
                continue
            if isinstance(message, dict) and "exit" in message and execution.pid is not None:
                execution.returncode = int(message["exit"])
                self._current = None
                return True
            self.close()  # a setup failure, a dead server or nonsense: end it all
            execution.returncode = -signal.SIGKILL
            if isinstance(message, dict) and "error" in message:
                raise ForkServerError(f"fork server: execution not started: {message['error']}")
        return True

    def kill_execution(self, execution: Execution) -> None:
        """SIGKILL ``execution``'s pid namespace and wait for its exit report."""
        assert self._sock is not None
        try:
            self._sock.send(b'{"kill": true}')
        except OSError:
            self.close()
            execution.returncode = -signal.SIGKILL
            return
        if not self.wait_exit(execution, REPLY_TIMEOUT_S):
            self.close()  # the whole sandbox goes: nothing of the execution survives it
            execution.returncode = -signal.SIGKILL
            self._current = None

    def _recv(self, deadline: float) -> dict | str:
        """The server's next message (parsed), "timeout", or "eof" when it is gone."""
        assert self._sock is not None
        remaining = max(0.0, deadline - time.monotonic())
        readable, _, _ = select.select([self._sock], [], [], remaining)
        if not readable:
            return "timeout"
        data = self._sock.recv(1 << 16)
        if not data:
            return "eof"
        try:
            return json.loads(data)
        except ValueError:
            return "garbled"


def end(proc: object) -> None:
    """End a sandbox process of either kind: an ``Execution`` or a bwrap ``SandboxProcess``."""
    if isinstance(proc, Execution):
        proc.end()
    else:
        kill(proc)  # type: ignore[arg-type]


def _zygote_source() -> str:
    return (Path(__file__).parent / "_zygote.py").read_text()
