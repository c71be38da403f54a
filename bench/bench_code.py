"""Benchmark: the code sandbox's startup cost, throughput, and verdicts on 20 problems.

Measures, on this machine (2 cores, shared with other work: the load average is printed):
* cost of one isolated execution of a trivial stdin/stdout program: one bwrap sandbox with one
  interpreter (``run_tests``), and one execution on a warm fork server (``SandboxPool``'s
  path: a fresh namespaced fork per execution), wall and CPU seconds, next to a bare
  ``python -S -I`` for reference;
* throughput of ``SandboxPool(workers=W)`` for each ``W`` of ``--workers`` (default: the
  cores and 4x the cores), with fork servers and, in the same run for comparison, with one
  bwrap per execution (``--no-bwrap`` skips those), on trivial executions and on full assert
  runs (two executions each: candidate + judge) of the HumanEval-like problems;
* canonical pass rate and broken fail rate on ``bench/humaneval_like.py`` (both must be 100 %).
Writes ``bench/code_results.md``.
Usage: ``.venv/bin/python bench/bench_code.py [--repeats N] [--workers 2,8] [--no-bwrap]``.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from humaneval_like import PROBLEMS, tests_for  # noqa: E402

from rewards.code import SandboxPool, run_tests  # noqa: E402
from rewards.code.sandbox import PYTHON, PYTHON_FLAGS, Limits, launch  # noqa: E402
from rewards.code.session import _proc_tree  # noqa: E402

RESULTS = ROOT / "bench" / "code_results.md"
TRIVIAL = {"program": "print(input())", "tests": "", "stdin_cases": [("hi", "hi")]}


def _host_cpu() -> float:
    """CPU of this process (launcher threads) plus its reaped children (the outer bwraps).

    The interpreters inside the sandboxes are not our reaped children (bwrap's pid 1 is
    re-parented to init), so their CPU is measured separately by ``sandbox_cpu``."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


def sandbox_cpu(n: int) -> float:
    """Mean CPU seconds the sandboxed interpreter itself reports (startup + a trivial body)."""
    code = ("import resource\nr = resource.getrusage(resource.RUSAGE_SELF)\n"
            "print(r.ru_utime + r.ru_stime)")
    total = 0.0
    for _ in range(n):
        read_fd, write_fd = os.pipe()
        proc = launch(["-c", code], Limits(), stdin=subprocess.DEVNULL, stdout=write_fd,
                      stderr=subprocess.DEVNULL)
        os.close(write_fd)
        with os.fdopen(read_fd) as pipe:
            total += float(pipe.read())
        proc.wait()
    return total / n


def startup_cost(n: int) -> dict[str, float]:
    """Median wall and mean CPU seconds of a bare interpreter and of one sandboxed run."""
    out: dict[str, float] = {}
    walls, cpu0 = [], _host_cpu()
    for _ in range(n):
        t0 = time.perf_counter()
        subprocess.run([PYTHON, *PYTHON_FLAGS, "-c", "print(input())"], input="hi",
                       capture_output=True, text=True, check=True)
        walls.append(time.perf_counter() - t0)
    out["bare_wall"], out["bare_cpu"] = statistics.median(walls), (_host_cpu() - cpu0) / n
    walls, cpu0 = [], _host_cpu()
    for _ in range(n):
        result = run_tests(**TRIVIAL)  # type: ignore[arg-type]
        assert result.passed, result.detail
        walls.append(result.wall_s)
    out["sandbox_wall"] = statistics.median(walls)
    out["host_cpu"] = (_host_cpu() - cpu0) / n
    out["inner_cpu"] = sandbox_cpu(n)
    out["sandbox_cpu"] = out["host_cpu"] + out["inner_cpu"]
    return out


def servers_cpu(pool: SandboxPool) -> float:
    """CPU seconds of the pool's fork-server sandboxes so far: every live process of each,
    with its reaped children (each execution's pid 1 and, through it, the program)."""
    total = 0
    for servers in pool._servers:
        for server in (servers.candidate, servers.judge):
            for root in server.pids():
                for pid in (root, *_proc_tree(root)):
                    try:
                        with open(f"/proc/{pid}/stat") as fh:
                            stat = fh.read()
                    except OSError:
                        continue
                    total += sum(int(v) for v in stat[stat.rindex(")") + 2:].split()[11:15])
    return total / os.sysconf("SC_CLK_TCK")


def fork_server_cost(n: int) -> dict[str, float]:
    """Median wall and mean CPU (host + server) of one trivial execution on a warm server."""
    with SandboxPool(1, fork_server=True) as pool:
        assert pool.submit(**TRIVIAL).result().passed  # type: ignore[arg-type]
        walls, cpu0, inner0 = [], _host_cpu(), servers_cpu(pool)
        for _ in range(n):
            result = pool.submit(**TRIVIAL).result()  # type: ignore[arg-type]
            assert result.passed, result.detail
            walls.append(result.wall_s)
        host, inner = (_host_cpu() - cpu0) / n, (servers_cpu(pool) - inner0) / n
    return {"wall": statistics.median(walls), "host_cpu": host, "inner_cpu": inner}


def throughput(jobs: list[dict], workers: int,
               fork_server: bool) -> tuple[float, float, list]:
    """(runs/s, CPU s per run, results) for ``jobs`` through one pool. CPU: host side, plus
    the fork servers' with ``fork_server`` (without, the sandboxed interpreters' CPU is not
    ours to read and is added from ``sandbox_cpu`` by the caller)."""
    cpu0, t0 = _host_cpu(), time.perf_counter()
    with SandboxPool(workers, fork_server=fork_server) as pool:
        results = pool.map(jobs)
        wall = time.perf_counter() - t0
        inner = servers_cpu(pool)
    return len(jobs) / wall, (_host_cpu() - cpu0 + inner) / len(jobs), results


def pool_rows(jobs: list[dict], trivial_n: int, workers: int, fork_server: bool,
              inner_cpu: float) -> tuple[list[tuple[str, str]], list]:
    """Table rows for one pool size and path, and the assert-run results."""
    cores = os.cpu_count() or 1
    path = "fork server" if fork_server else "bwrap per execution"
    extra = 0.0 if fork_server else inner_cpu  # per sandboxed interpreter, see sandbox_cpu
    trivial_rate, trivial_cpu, trivial = throughput([TRIVIAL] * trivial_n, workers, fork_server)
    assert all(r.passed for r in trivial)
    assert_rate, assert_cpu, results = throughput(jobs, workers, fork_server)
    return [
        (f"{path}, {workers} workers: trivial executions/s",
         f"**{trivial_rate:.1f} /s** (CPU {1e3 * (trivial_cpu + extra):.1f} ms each: "
         f"CPU-bound capacity {cores / (trivial_cpu + extra):.0f} /s)"),
        (f"{path}, {workers} workers: assert runs/s (2 executions each)",
         f"{assert_rate:.1f} /s = **{2 * assert_rate:.1f} executions/s** (CPU "
         f"{1e3 * (assert_cpu + 2 * extra):.1f} ms a run: CPU-bound capacity "
         f"{cores / (assert_cpu + 2 * extra):.0f} runs/s)")], results


def main() -> None:
    """Run every measurement, print the table and write ``bench/code_results.md``."""
    parser = argparse.ArgumentParser(description=(__doc__ or "bench_code").splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="passes over the problem set")
    parser.add_argument("--trivial", type=int, default=100, help="trivial runs for throughput")
    cores = os.cpu_count() or 1
    parser.add_argument("--workers", default=f"{cores},{4 * cores}",
                        help="comma-separated pool sizes to measure")
    parser.add_argument("--no-bwrap", action="store_true",
                        help="skip the one-bwrap-per-execution comparison rows")
    args = parser.parse_args()
    pool_sizes = [int(w) for w in args.workers.split(",")]
    load_before = os.getloadavg()
    start = startup_cost(20)
    warm = fork_server_cost(50)
    jobs = [{"program": p.canonical, "tests": tests_for(p)} for p in PROBLEMS]
    jobs += [{"program": p.broken, "tests": tests_for(p)} for p in PROBLEMS]
    rows_by_pool, verdicts = [], {}
    for workers in pool_sizes:
        for fork_server in (True, False)[:1 if args.no_bwrap else 2]:
            rows, results = pool_rows(jobs * args.repeats, args.trivial, workers, fork_server,
                                      start["inner_cpu"])
            rows_by_pool += rows
            verdicts[fork_server] = [(r.status, r.tests_run) for r in results]
    if len(verdicts) == 2 and verdicts[True] != verdicts[False]:
        sys.exit("the fork-server and bwrap paths gave different verdicts")
    n = len(PROBLEMS)
    statuses_all = verdicts[True]
    canonical = [s for i, s in enumerate(statuses_all) if i % (2 * n) < n]
    broken = [s for i, s in enumerate(statuses_all) if i % (2 * n) >= n]
    pass_rate = sum(status == "passed" for status, _ in canonical) / len(canonical)
    fail_rate = sum(status != "passed" for status, _ in broken) / len(broken)
    statuses = sorted({status for status, _ in broken})
    load_after = os.getloadavg()
    rows = [
        ("bare `python -S -I` startup (wall / CPU)",
         f"{start['bare_wall'] * 1e3:.1f} ms / {start['bare_cpu'] * 1e3:.1f} ms"),
        ("one execution, one bwrap sandbox, trivial program (wall / CPU)",
         f"{start['sandbox_wall'] * 1e3:.1f} ms / {start['sandbox_cpu'] * 1e3:.1f} ms "
         f"(host side {start['host_cpu'] * 1e3:.1f} + interpreter {start['inner_cpu'] * 1e3:.1f})"),
        ("one execution on a warm fork server, trivial program (wall / CPU)",
         f"{warm['wall'] * 1e3:.1f} ms / {(warm['host_cpu'] + warm['inner_cpu']) * 1e3:.1f} ms "
         f"(host side {warm['host_cpu'] * 1e3:.1f} + server {warm['inner_cpu'] * 1e3:.1f})"),
        *rows_by_pool,
        (f"canonical pass rate ({len(canonical)} runs)", f"{pass_rate:.0%}"),
        (f"broken fail rate ({len(broken)} runs)", f"{fail_rate:.0%} (statuses {statuses})"),
        ("load average (1 / 5 / 15 min) before",
         " / ".join(f"{v:.1f}" for v in load_before)),
        ("load average (1 / 5 / 15 min) after", " / ".join(f"{v:.1f}" for v in load_after)),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    lines = ["# Code sandbox benchmark", "",
             f"`bench/bench_code.py --repeats {args.repeats} --trivial {args.trivial} "
             f"--workers {args.workers}{' --no-bwrap' if args.no_bwrap else ''}`, "
             f"{len(PROBLEMS)} HumanEval-like problems, {cores} CPU cores (the load average "
             "shows how much other work shared them; the CPU-bound capacity is cores / CPU "
             "seconds per execution). An execution is one sandboxed program run: one stdin "
             "case, or one side (candidate or judge) of an assert run. `fork server` is "
             "`SandboxPool`'s default path (one warm sandbox per worker, a fresh namespaced "
             "fork per execution); `bwrap per execution` is `run_tests`'s, measured in the "
             "same run. The verdict rates are from the fork-server runs (the two paths' "
             "verdicts are checked equal).", "",
             "| measure | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in rows]
    RESULTS.write_text("\n".join(lines) + "\n")
    print(f"wrote {RESULTS.relative_to(ROOT)}")
    if pass_rate < 1 or fail_rate < 1:
        sys.exit("canonical pass rate and broken fail rate must both be 100 %")


if __name__ == "__main__":
    main()
