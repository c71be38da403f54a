"""``run_tests``: judge a candidate program from outside its process; ``SandboxPool`` for many.

Assert-style tests run as two sandboxes joined by two pipes (see ``rewards.code`` for the
threat model): the *candidate* sandbox loads the program and answers calls; the *judge* sandbox
runs the trusted, rewritten tests and sends its report over a pipe only the host holds.
stdin/stdout cases run the program once per case; the expected output never enters the sandbox
and the comparison happens here. Statuses: passed, failed, timeout, memory, output, error.
This module does not build bwrap command lines (``sandbox``) or parse tests (``rewrite``).
"""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rewards.code import cgroup
from rewards.code.forkserver import ForkServer, end
from rewards.code.rewrite import PreparedTests, prepare_tests
from rewards.code.sandbox import Capture, Limits, collect, launch, memfd

STATUSES = ("passed", "failed", "timeout", "memory", "output", "error")
OUTPUT_LIMIT = 1 << 20  # bytes of stdout+stderr a candidate may write before it is killed
_XCPU_RC = 128 + signal.SIGXCPU  # bwrap reports a child killed by signal N as 128+N
STDIN_RUNNER = ("import os, sys\n"
                 "fd = int(sys.argv[1]); chunks = []\n"
                 "while chunk := os.read(fd, 1 << 20): chunks.append(chunk)\n"
                 "os.close(fd); sys.argv = ['solution.py']\n"
                 "exec(compile(b''.join(chunks), 'solution.py', 'exec'),"
                 " {'__name__': '__main__', '__builtins__': __builtins__})\n")


@dataclass(frozen=True)
class SandboxResult:
    """The verdict on one program. ``passed`` is True only when every test completed."""

    passed: bool
    status: str
    tests_run: int
    tests_total: int
    detail: str
    wall_s: float


@functools.cache
def _source(name: str) -> str:
    """A ``python -c`` program installing ``_codec`` as a module, then running ``name``."""
    here = Path(__file__).parent
    codec, main = (here / "_codec.py").read_text(), (here / name).read_text()
    return ("import sys\n_codec = type(sys)('_codec')\n"
            f"exec(compile({codec!r}, '_codec.py', 'exec'), _codec.__dict__)\n"
            "sys.modules['_codec'] = _codec\n"
            f"exec(compile({main!r}, {name!r}, 'exec'), {{'__name__': '__main__'}})\n")


#: ``start(prog, args, limits, stdin=, stdout=, stderr=, pass_fds=)`` -> a process to ``end``;
#: prog is "agent", "judge" or "stdin". One bwrap per call, or a ``ForkServer``'s execution.
Starter = Callable[..., Any]


def _bwrap_start(prog: str, args: list[str], limits: Limits, **io: Any) -> Any:
    source = STDIN_RUNNER if prog == "stdin" else _source(f"_{prog}.py")
    return launch(["-c", source, *args], limits, **io)


@functools.lru_cache(maxsize=512)
def _prepare(tests: str) -> PreparedTests:
    """``prepare_tests``, once per distinct tests text (a group of candidates shares its tests;
    parsing and unparsing them costs milliseconds of the host's CPU). Never mutated."""
    return prepare_tests(tests)


def _tail(data: bytes | bytearray, n: int = 300) -> str:
    return bytes(data[-n:]).decode("utf-8", "replace").strip()


def _validate(program: object, tests: object, timeout_s: float, memory_mb: int,
              stdin_cases: object) -> list[tuple[str, str]] | None:
    if not isinstance(program, str):
        raise TypeError(f"program: expected str, got {type(program).__name__}")
    if not isinstance(tests, str):
        raise TypeError(f"tests: expected str, got {type(tests).__name__}")
    if not 0 < timeout_s <= 600:
        raise ValueError(f"timeout_s: must be in (0, 600], got {timeout_s}")
    if not 64 <= memory_mb <= 65536:
        raise ValueError(f"memory_mb: must be in [64, 65536], got {memory_mb}")
    if stdin_cases is None:
        if not tests.strip():
            raise ValueError("tests: empty and no stdin_cases given, nothing to check")
        return None
    cases = [tuple(case) for case in stdin_cases]  # type: ignore[union-attr]
    for i, case in enumerate(cases):
        if len(case) != 2 or not all(isinstance(part, str) for part in case):
            raise ValueError(f"stdin_cases[{i}]: expected (stdin: str, stdout: str)")
    if not cases and not tests.strip():
        raise ValueError("stdin_cases: empty and no tests given, nothing to check")
    return cases  # type: ignore[return-value]


def run_tests(program: str, tests: str, timeout_s: float = 10.0, memory_mb: int = 1024,
              stdin_cases: Sequence[tuple[str, str]] | None = None) -> SandboxResult:
    """Run ``program`` against assert-style ``tests`` and/or stdin/stdout ``stdin_cases``.

    ``timeout_s`` bounds the whole assert run, and each stdin case separately; ``memory_mb``
    bounds the candidate's sandbox in total (all its processes and tmpfs; one process gets a
    share, see ``sandbox.budget``). Bad arguments raise TypeError/ValueError. Each sandbox is
    one bwrap, gone when this returns; ``SandboxPool`` is the fast path for many programs.
    """
    return _run_tests(program, tests, timeout_s, memory_mb, stdin_cases, _bwrap_start)


def _run_tests(program: str, tests: str, timeout_s: float, memory_mb: int,
               stdin_cases: Sequence[tuple[str, str]] | None, starter: Starter) -> SandboxResult:
    cases = _validate(program, tests, timeout_s, memory_mb, stdin_cases)
    start = time.monotonic()
    limits = Limits(memory_mb=memory_mb, cpu_s=int(timeout_s) + 1)
    run, total, status, detail = 0, 0, "passed", ""
    if tests.strip():
        prepared = _prepare(tests)
        status, run, detail = _run_asserts(program, prepared, start + timeout_s, limits, starter)
        total = prepared.n_asserts
    if cases:
        total += len(cases)
        if status == "passed":
            status, case_run, detail = _run_stdin_cases(program, cases, timeout_s, limits,
                                                        starter)
            run += case_run
    return SandboxResult(status == "passed", status, run, total, detail,
                         time.monotonic() - start)


def _run_asserts(program: str, prepared: PreparedTests, deadline: float,
                 limits: Limits, start: Starter) -> tuple[str, int, str]:
    spec = {"statements": prepared.statements, "stdlib": prepared.stdlib,
            "names": prepared.candidate_names}
    prog_fd, spec_fd = memfd(program), memfd(json.dumps(spec))
    (call_r, call_w), (reply_r, reply_w) = os.pipe(), os.pipe()
    (report_r, report_w), (out_r, out_w), (log_r, log_w) = os.pipe(), os.pipe(), os.pipe()
    procs: list[Any] = []
    try:
        procs.append(start("agent", [str(prog_fd), str(call_r), str(reply_w),
                                     json.dumps(prepared.candidate_names)], limits,
                           stdin=subprocess.DEVNULL, stdout=out_w, stderr=out_w,
                           pass_fds=(prog_fd, call_r, reply_w)))
        procs.append(start("judge", [str(spec_fd), str(report_w), str(call_w), str(reply_r)],
                           _judge_limits(limits), stdin=subprocess.DEVNULL, stdout=log_w,
                           stderr=log_w, pass_fds=(spec_fd, report_w, call_w, reply_r)))
    except BaseException:
        for proc in procs:
            end(proc)
        for fd in (report_r, out_r, log_r):
            os.close(fd)
        raise
    finally:
        for fd in (prog_fd, spec_fd, call_r, call_w, reply_r, reply_w, report_w, out_w, log_w):
            os.close(fd)
    pipes = {report_r: Capture(1 << 20), out_r: Capture(OUTPUT_LIMIT), log_r: Capture(1 << 14)}
    try:
        outcome = collect(pipes, deadline, stop_on={report_r}, overflow_stops={out_r})
        if outcome == "done":  # report closed: the judge is exiting; give it a moment
            try:
                procs[1].wait(timeout=max(0.05, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                outcome = "timeout"
    finally:
        for proc in procs:
            end(proc)
    return _assert_verdict(outcome, pipes[report_r].data, pipes[out_r].data,
                           procs[0].returncode, len(prepared.statements),
                           procs[0].oom_killed)


def _judge_limits(limits: Limits) -> Limits:
    """The judge runs trusted code in one process: its whole budget goes to that process."""
    return Limits(cpu_s=limits.cpu_s, processes=1)


def _assert_verdict(outcome: str, report_bytes: bytearray, output: bytearray,
                    candidate_rc: int, n_statements: int,
                    oom: bool = False) -> tuple[str, int, str]:
    if outcome == "timeout":
        return "timeout", 0, "wall-clock limit reached"
    if outcome == "output":
        return "output", 0, f"candidate wrote more than {OUTPUT_LIMIT} bytes"
    try:
        report = json.loads(bytes(report_bytes).splitlines()[0])
    except (IndexError, ValueError):
        return "error", 0, "judge ended without a report"
    if "load_error" in report:
        name, message = report["load_error"]
        return _crash_status(name, output, candidate_rc, oom), 0, f"loading: {name}: {message}"
    if "internal" in report:
        return "error", 0, str(report["internal"])
    tests_run = len(report["passed_asserts"])
    failures = report["failures"]
    if (report.get("done") is True and not failures and tests_run >= 1
            and report["completed"] == n_statements):
        return "passed", tests_run, f"{tests_run} assert(s) held"
    if not failures:
        return "failed", tests_run, "no assert was executed"
    first = failures[0]
    detail = f"statement {first['stmt'] + 1}: {first.get('type', first['kind'])}: {first['msg']}"
    if first["kind"] == "output":
        return "output", tests_run, detail
    if first["kind"] == "gone":
        return _crash_status("CandidateGone", output, candidate_rc, oom), tests_run, detail
    if first.get("type") == "MemoryError":
        return "memory", tests_run, detail
    return "failed", tests_run, detail


def _crash_status(name: str, output: bytearray, rc: int | None, oom: bool = False) -> str:
    if oom or name == "MemoryError" or b"MemoryError" in output:
        return "memory"
    if rc == _XCPU_RC or rc == -signal.SIGXCPU:
        return "timeout"
    return "error"


def _run_stdin_cases(program: str, cases: list[tuple[str, str]], timeout_s: float,
                     limits: Limits, start: Starter) -> tuple[str, int, str]:
    for i, (stdin, expected) in enumerate(cases):
        status, detail = _run_stdin_case(program, stdin, expected, timeout_s, limits, start)
        if status != "passed":
            return status, i, f"case {i + 1}: {detail}"
    return "passed", len(cases), f"{len(cases)} case(s) matched"


def _normalize(text: str) -> list[str]:
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    return lines


def _run_stdin_case(program: str, stdin: str, expected: str, timeout_s: float,
                    limits: Limits, start: Starter) -> tuple[str, str]:
    prog_fd, in_fd = memfd(program), memfd(stdin)
    (out_r, out_w), (err_r, err_w) = os.pipe(), os.pipe()
    try:
        proc = start("stdin", [str(prog_fd)], limits, stdin=in_fd, stdout=out_w, stderr=err_w,
                     pass_fds=(prog_fd,))
    except BaseException:
        os.close(out_r)
        os.close(err_r)
        raise
    finally:
        for fd in (prog_fd, in_fd, out_w, err_w):
            os.close(fd)
    pipes = {out_r: Capture(OUTPUT_LIMIT), err_r: Capture(OUTPUT_LIMIT)}
    deadline = time.monotonic() + timeout_s
    try:
        outcome = collect(pipes, deadline, stop_on={out_r, err_r}, overflow_stops={out_r, err_r})
        if outcome == "done":
            try:
                proc.wait(timeout=max(0.05, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                outcome = "timeout"
    finally:
        end(proc)
    if outcome != "done":
        return outcome, "wall-clock limit reached" if outcome == "timeout" else "too much output"
    stderr = pipes[err_r].data
    if proc.returncode != 0:
        status = _crash_status("", stderr, proc.returncode, proc.oom_killed)
        return status, f"exit {proc.returncode}: {_tail(stderr)}"
    actual = bytes(pipes[out_r].data).decode("utf-8", "replace")
    if _normalize(actual) != _normalize(expected):
        return "failed", f"stdout differs: got {_tail(actual.encode(), 80)!r}"
    return "passed", "matched"


class _Servers:
    """One worker thread's fork servers: one for candidates, one for judges (separate
    sandboxes and uids, as the two sandboxes of ``run_tests``)."""

    def __init__(self) -> None:
        here = Path(__file__).parent
        programs = {"agent": (here / "_agent.py").read_text(),
                    "judge": (here / "_judge.py").read_text(), "stdin": STDIN_RUNNER}
        modules = {"_codec": (here / "_codec.py").read_text()}
        self.candidate = ForkServer(programs, modules)
        self.judge = ForkServer(programs, modules)

    def start(self, prog: str, args: list[str], limits: Limits, **io: Any) -> Any:
        if prog == "agent":  # its judge follows at once: both servers start side by side
            self.judge.prepare()
        server = self.judge if prog == "judge" else self.candidate
        return server.launch(prog, args, limits, **io)

    def close(self) -> None:
        self.candidate.close()
        self.judge.close()


class SandboxPool:
    """Runs many ``run_tests`` calls concurrently (threads; the work is in subprocesses).

    ``fork_server`` (default: unless a cgroup v2 memory subtree is delegated, see
    ``forkserver``): each worker keeps a warm ``ForkServer`` sandbox and every execution is a
    fresh, namespaced fork of it, instead of one bwrap and interpreter start per execution.
    Verdicts are the same; the servers end with ``close``.
    """

    def __init__(self, workers: int | None = None, fork_server: bool | None = None) -> None:
        self.workers = workers or os.cpu_count() or 1
        if self.workers < 1:
            raise ValueError(f"workers: must be >= 1, got {workers}")
        self.fork_server = (cgroup.delegated_parent() is None if fork_server is None
                            else fork_server)
        self._executor = ThreadPoolExecutor(self.workers, thread_name_prefix="rlsys-sandbox")
        self._local = threading.local()
        self._servers: list[_Servers] = []
        self._lock = threading.Lock()

    def _run(self, program: str, tests: str = "", timeout_s: float = 10.0,
             memory_mb: int = 1024,
             stdin_cases: Sequence[tuple[str, str]] | None = None) -> SandboxResult:
        if not self.fork_server:
            return run_tests(program, tests, timeout_s, memory_mb, stdin_cases)
        servers = getattr(self._local, "servers", None)
        if servers is None:
            servers = self._local.servers = _Servers()
            with self._lock:
                self._servers.append(servers)
        return _run_tests(program, tests, timeout_s, memory_mb, stdin_cases, servers.start)

    def submit(self, program: str, tests: str = "", **kwargs: object) -> Future[SandboxResult]:
        """Schedule one ``run_tests(program, tests, **kwargs)``."""
        return self._executor.submit(self._run, program, tests, **kwargs)  # type: ignore[arg-type]

    def map(self, jobs: Iterable[Mapping[str, object]]) -> list[SandboxResult]:
        """Run ``run_tests(**job)`` for every job; results in job order."""
        futures = [self._executor.submit(self._run, **job) for job in jobs]  # type: ignore[arg-type]
        return [future.result() for future in futures]

    def close(self) -> None:
        """Wait for running jobs, stop the worker threads and end the fork servers."""
        self._executor.shutdown(wait=True)
        with self._lock:
            for servers in self._servers:
                servers.close()
            self._servers.clear()

    def __enter__(self) -> SandboxPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
