"""``PythonSession``: a persistent, sandboxed Python process for one agent trajectory.

One session is one ``sandbox.launch`` (bubblewrap, no network, a fresh uid, rlimits, a memory
total, seccomp; see ``rewards.code.sandbox``) running ``_session_agent.py``, a small REPL.
Globals persist across ``run`` calls; the session ends with ``close`` (the whole pid namespace
is killed). Per call: a wall-clock limit, output capped at ``output_limit`` characters shown
(the rest is drained and dropped up to ``HARD_OUTPUT_LIMIT`` bytes, then the call is killed).
Memory is the sandbox's total (``memory_mb``); CPU seconds are counted for the whole session
(``cpu_s``, RLIMIT_CPU of the process).

What the host checks, from outside the sandbox, after every call: the reply carries the call's
random token and nothing else was written on the reply pipe (no stale or forged replies), and
the sandbox's pid namespace holds exactly bwrap's init and one single-threaded agent process
(its own ``/proc``, read from the host through the agent's ``root`` link, one listing):
a thread, child, daemon or zombie that outlives the call gets the session killed.
Any such failure, a timeout, a crash or too much output ends the session's process; the next
call starts a fresh one (state lost), and the result says so (``restarted``).
Code that sends a forged reply (it can read its own call's token) and keeps running is caught
too: after a reply the agent must be blocked in read(2) on its call pipe
(``/proc/<pid>/syscall``) within the call's time limit (at least ``IDLE_GRACE_S``); on a machine
other than x86_64/aarch64 this check is skipped (then ``close`` ends such code, and ``cpu_s``
bounds it meanwhile).
This module does not parse tool calls or decide rewards.
"""

from __future__ import annotations

import functools
import json
import os
import platform
import secrets
import selectors
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from rewards.code.sandbox import Limits, SandboxProcess, kill, launch

HARD_OUTPUT_LIMIT = 1 << 20  # bytes one call may write before it is killed
MAX_CODE_CHARS = 1 << 15  # one call's code; the call pipe buffer (64 KiB) then never blocks
STARTUP_TIMEOUT_S = 60.0  # interpreter start on a loaded machine; not part of a call's limit
_XCPU = 24  # SIGXCPU: the session's cpu_s is spent
#: read(2)'s number per machine: ``/proc/<pid>/syscall`` shows the agent blocked on its call fd
_READ_SYSCALL = {"x86_64": 0, "amd64": 0, "aarch64": 63, "arm64": 63}.get(platform.machine())
IDLE_GRACE_S = 1.0  # at least this long for the agent to be back in read() after its reply


@dataclass(frozen=True)
class CallResult:
    """One call: ``status`` is ok, error (an exception, shown in ``error``), timeout, memory,
    output, crashed or process (something outlived the call); ``restarted``: the session's
    process was ended by this call, its state is lost."""

    status: str
    output: str
    error: str | None
    truncated: bool
    restarted: bool
    wall_s: float


@functools.cache
def _agent_source() -> str:
    return (Path(__file__).parent / "_session_agent.py").read_text()


def _proc_tree(root: int) -> dict[int, int]:
    """pid -> ppid of every live descendant of ``root`` (one pass over ``/proc``)."""
    parents: dict[int, int] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        parents[int(name)] = int(stat[stat.rindex(b")") + 2:].split()[1])
    found: dict[int, int] = {}
    frontier = [root]
    while frontier:
        pid = frontier.pop()
        for child, parent in parents.items():
            if parent == pid and child not in found:
                found[child] = parent
                frontier.append(child)
    return found


class PythonSession:
    """A persistent sandboxed interpreter; ``run(code)`` -> ``CallResult``; ``close()`` ends it.

    Not thread-safe: one trajectory drives one session. Started lazily by the first ``run``.
    """

    def __init__(self, *, timeout_s: float = 5.0, memory_mb: int = 512, cpu_s: int = 60,
                 output_limit: int = 4096, processes: int = 4) -> None:
        if not 0 < timeout_s <= 600:
            raise ValueError(f"timeout_s: must be in (0, 600], got {timeout_s}")
        if not 64 <= memory_mb <= 65536:
            raise ValueError(f"memory_mb: must be in [64, 65536], got {memory_mb}")
        if not 1 <= output_limit <= HARD_OUTPUT_LIMIT:
            raise ValueError(f"output_limit: must be in [1, {HARD_OUTPUT_LIMIT}], "
                             f"got {output_limit}")
        self.timeout_s, self.output_limit = timeout_s, output_limit
        self.limits = Limits(memory_mb=memory_mb, cpu_s=cpu_s, processes=processes)
        self._proc: SandboxProcess | None = None
        self._fds: tuple[int, int, int] | None = None  # call_w, reply_r, out_r
        self._pending = b""
        self._agent = 0
        self._call_fd = -1  # the call pipe's fd number inside the sandbox
        self.closed = False

    # -- lifecycle -----------------------------------------------------------------------
    def _start(self) -> None:
        (call_r, call_w), (reply_r, reply_w), (out_r, out_w) = os.pipe(), os.pipe(), os.pipe()
        try:
            self._proc = launch(["-c", _agent_source(), str(call_r), str(reply_w)], self.limits,
                                stdin=subprocess.DEVNULL, stdout=out_w, stderr=out_w,
                                pass_fds=(call_r, reply_w))
        except BaseException:
            for fd in (call_w, reply_r, out_r):
                os.close(fd)
            raise
        finally:
            for fd in (call_r, reply_w, out_w):
                os.close(fd)
        self._fds, self._pending, self._call_fd = (call_w, reply_r, out_r), b"", call_r
        os.set_blocking(reply_r, False)
        os.set_blocking(out_r, False)
        line = self._read_reply(time.monotonic() + STARTUP_TIMEOUT_S, bytearray())
        if line != {"ready": True}:
            self._stop()
            raise RuntimeError("python session: the sandboxed interpreter did not start")
        try:
            self._agent = self._find_agent()
        except RuntimeError:
            self._stop()
            raise

    def _stop(self) -> None:
        if self._proc is not None:
            kill(self._proc)
        if self._fds is not None:
            for fd in self._fds:
                os.close(fd)
        self._proc, self._fds = None, None

    def close(self) -> None:
        """End the session: kill its sandbox (every process in it) and close its pipes."""
        self._stop()
        self.closed = True

    def __enter__(self) -> PythonSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def pids(self) -> list[int]:
        """Host pids of the session's processes (outer bwrap first); empty when not running."""
        if self._proc is None:
            return []
        return [self._proc.pid, *_proc_tree(self._proc.pid)]

    # -- calls ---------------------------------------------------------------------------
    def run(self, code: str) -> CallResult:
        """Run ``code`` in the session; never raises for anything the code does."""
        if self.closed:
            raise RuntimeError("python session: closed")
        start = time.monotonic()
        if len(code) > MAX_CODE_CHARS:
            return CallResult("error", "", f"code longer than {MAX_CODE_CHARS} characters",
                              False, False, 0.0)
        if self._proc is None:
            self._start()
        assert self._fds is not None
        token = secrets.token_hex(8)
        body = json.dumps({"token": token, "code": code}).encode()
        try:
            os.write(self._fds[0], len(body).to_bytes(8, "big") + body)
        except BrokenPipeError:
            return self._fail("crashed", b"", "the python process had exited", start)
        output = bytearray()
        reply = self._read_reply(start + self.timeout_s, output)
        return self._verdict(reply, token, output, start)

    def _verdict(self, reply: dict | str, token: str, output: bytearray,
                 start: float) -> CallResult:
        if reply == "timeout":
            return self._fail("timeout", output, f"no reply within {self.timeout_s:g} s", start)
        if reply == "output":
            return self._fail("output", output, f"more than {HARD_OUTPUT_LIMIT} bytes of output",
                              start)
        if reply == "eof":
            return self._crash(output, start)
        if not isinstance(reply, dict) or reply.get("token") != token or self._pending:
            return self._fail("process", output, "unexpected data on the reply pipe", start)
        self._drain(output)
        if not self._idle(max(start + self.timeout_s, time.monotonic() + IDLE_GRACE_S)):
            return self._fail("process", output, "code kept running after the reply", start)
        extra = self._leftovers()
        if extra:
            return self._fail("process", output, f"{extra} outlived the call (killed)", start)
        error = reply.get("error")
        if error is not None and not isinstance(error, str):
            return self._fail("process", output, "malformed reply", start)
        status = "ok" if error is None else (
            "memory" if error.rstrip().rsplit("\n", 1)[-1].startswith("MemoryError") else "error")
        text, truncated = self._shown(output)
        return CallResult(status, text, error, truncated, False, time.monotonic() - start)

    def _crash(self, output: bytearray, start: float) -> CallResult:
        assert self._proc is not None
        try:
            rc = self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            rc = None
        kill(self._proc)
        if self._proc.oom_killed:
            return self._fail("memory", output, "the sandbox ran out of memory", start)
        if rc in (128 + _XCPU, -_XCPU):
            return self._fail("timeout", output, f"the session's {self.limits.cpu_s} CPU "
                                                 "seconds are spent", start)
        return self._fail("crashed", output, f"the python process exited (status {rc})", start)

    def _fail(self, status: str, output: bytes | bytearray, why: str,
              start: float) -> CallResult:
        self._stop()
        text, truncated = self._shown(bytearray(output))
        return CallResult(status, text, f"{why}; the session was restarted, its state is lost",
                          truncated, True, time.monotonic() - start)

    def _shown(self, output: bytearray) -> tuple[str, bool]:
        text = bytes(output).decode("utf-8", "replace")
        if len(text) <= self.output_limit:
            return text, False
        return text[:self.output_limit] + f"\n[... {len(text) - self.output_limit} more " \
                                          "characters truncated]", True

    def _read_reply(self, deadline: float, output: bytearray) -> dict | str:
        """The next reply line (parsed), or "timeout" / "output" / "eof"."""
        assert self._fds is not None
        _, reply_r, out_r = self._fds
        with selectors.DefaultSelector() as selector:
            selector.register(reply_r, selectors.EVENT_READ)
            selector.register(out_r, selectors.EVENT_READ)
            while b"\n" not in self._pending:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return "timeout"
                for key, _ in selector.select(remaining):
                    chunk = os.read(key.fd, 1 << 16)
                    if key.fd == out_r:
                        output += chunk
                        if len(output) > HARD_OUTPUT_LIMIT:
                            return "output"
                        if not chunk:
                            selector.unregister(out_r)
                    elif chunk:
                        self._pending += chunk
                    else:
                        return "eof"
        line, _, self._pending = self._pending.partition(b"\n")
        try:
            return json.loads(line)
        except ValueError:
            return {}

    def _drain(self, output: bytearray) -> None:
        """Output already in the pipe (the agent flushed before replying)."""
        assert self._fds is not None
        while len(output) <= HARD_OUTPUT_LIMIT:
            try:
                chunk = os.read(self._fds[2], 1 << 16)
            except BlockingIOError:
                return
            if not chunk:
                return
            output += chunk

    def _leftovers(self) -> str | None:
        """What runs in the sandbox beside its supervisors and one single-threaded agent."""
        assert self._proc is not None
        try:  # the sandbox's own /proc lists its pid namespace: one listdir, not a host scan
            names = os.listdir(os.path.join(f"/proc/{self._agent}", "root", "proc"))
            inside = sum(name.isdigit() for name in names)
            threads = len(os.listdir(f"/proc/{self._agent}/task"))
        except OSError:
            return "no agent process"
        if inside > 2:  # bwrap's init (pid 1) and the agent
            return f"{inside - 2} process(es)"
        return f"{threads - 1} thread(s)" if threads > 1 else None

    def _idle(self, deadline: float) -> bool:
        """Whether the agent is blocked reading its next call (not running code) by
        ``deadline``; True where ``/proc/<pid>/syscall`` cannot tell (unknown machine)."""
        if _READ_SYSCALL is None:
            return True
        waiting = f"{_READ_SYSCALL} {hex(self._call_fd)} "
        pause = 0.0002
        while True:
            try:
                with open(f"/proc/{self._agent}/syscall") as fh:
                    if fh.read().startswith(waiting):
                        return True
            except OSError:
                return False
            if time.monotonic() >= deadline:
                return False
            time.sleep(pause)
            pause = min(pause * 2, 0.005)

    def _find_agent(self) -> int:
        """Host pid of the agent: the one descendant of the outer bwrap that bwrap's init
        started (the pid namespace's own /proc is read through it afterwards)."""
        assert self._proc is not None
        agents = [pid for pid, parent in _proc_tree(self._proc.pid).items()
                  if parent != self._proc.pid]
        if len(agents) != 1:
            raise RuntimeError(f"python session: expected one agent process, found {agents}")
        return agents[0]
