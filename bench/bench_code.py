"""Benchmark: the code sandbox's startup cost, throughput, and verdicts on 20 problems.

Measures, on this machine (2 cores, shared with other work: the load average is printed):
* startup cost of one isolated execution (a trivial stdin/stdout program = one bwrap sandbox
  with one interpreter), wall and CPU seconds, next to a bare ``python -S -I`` for reference;
* throughput of ``SandboxPool(workers=W)`` for each ``W`` of ``--workers`` (default: the
  cores and 4x the cores; a sandbox spends most of its wall time waiting on the kernel, not on
  a CPU) on trivial executions and on full assert runs (two sandboxes each: candidate + judge)
  of the HumanEval-like problems;
* canonical pass rate and broken fail rate on ``bench/humaneval_like.py`` (both must be 100 %).
Writes ``bench/code_results.md``.
Usage: ``.venv/bin/python bench/bench_code.py [--repeats N] [--workers 2,8]``.
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


def throughput(jobs: list[dict], workers: int) -> tuple[float, float, list]:
    """(runs/s, host-side CPU s per run, results) for ``jobs`` through one pool."""
    cpu0, t0 = _host_cpu(), time.perf_counter()
    with SandboxPool(workers) as pool:
        results = pool.map(jobs)
    wall = time.perf_counter() - t0
    return len(jobs) / wall, (_host_cpu() - cpu0) / len(jobs), results


def main() -> None:
    """Run every measurement, print the table and write ``bench/code_results.md``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="passes over the problem set")
    parser.add_argument("--trivial", type=int, default=100, help="trivial runs for throughput")
    cores = os.cpu_count() or 1
    parser.add_argument("--workers", default=f"{cores},{4 * cores}",
                        help="comma-separated pool sizes to measure")
    args = parser.parse_args()
    pool_sizes = [int(w) for w in args.workers.split(",")]
    load_before = os.getloadavg()[0]
    start = startup_cost(20)
    jobs = [{"program": p.canonical, "tests": tests_for(p)} for p in PROBLEMS]
    jobs += [{"program": p.broken, "tests": tests_for(p)} for p in PROBLEMS]
    pool_rows = []
    for workers in pool_sizes:
        trivial_rate, trivial_cpu, trivial = throughput([TRIVIAL] * args.trivial, workers)
        assert all(r.passed for r in trivial)
        assert_rate, assert_cpu, results = throughput(jobs * args.repeats, workers)
        pool_rows += [
            (f"pool ({workers} workers): trivial executions/s",
             f"{trivial_rate:.1f} /s (CPU-bound capacity "
             f"{cores / (trivial_cpu + start['inner_cpu']):.0f} /s)"),
            (f"pool ({workers} workers): assert runs/s (2 sandboxes each)",
             f"{assert_rate:.1f} /s = {2 * assert_rate:.1f} sandboxes/s (CPU-bound capacity "
             f"{cores / (assert_cpu + 2 * start['inner_cpu']):.0f} runs/s)")]
    n = len(PROBLEMS)
    canonical = [r for i, r in enumerate(results) if i % (2 * n) < n]
    broken = [r for i, r in enumerate(results) if i % (2 * n) >= n]
    pass_rate = sum(r.passed for r in canonical) / len(canonical)
    fail_rate = sum(not r.passed for r in broken) / len(broken)
    statuses = sorted({r.status for r in broken})
    load_after = os.getloadavg()[0]
    rows = [
        ("bare `python -S -I` startup (wall / CPU)",
         f"{start['bare_wall'] * 1e3:.1f} ms / {start['bare_cpu'] * 1e3:.1f} ms"),
        ("one sandboxed execution, trivial program (wall / CPU)",
         f"{start['sandbox_wall'] * 1e3:.1f} ms / {start['sandbox_cpu'] * 1e3:.1f} ms "
         f"(host side {start['host_cpu'] * 1e3:.1f} + interpreter {start['inner_cpu'] * 1e3:.1f})"),
        *pool_rows,
        (f"canonical pass rate ({len(canonical)} runs)", f"{pass_rate:.0%}"),
        (f"broken fail rate ({len(broken)} runs)", f"{fail_rate:.0%} (statuses {statuses})"),
        ("load average (1 min) before / after", f"{load_before:.1f} / {load_after:.1f}"),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    lines = ["# Code sandbox benchmark", "",
             f"`bench/bench_code.py --repeats {args.repeats} --trivial {args.trivial} "
             f"--workers {args.workers}`, {len(PROBLEMS)} HumanEval-like problems, {cores} CPU "
             "cores (the load average shows whether other work shared them; the CPU-bound "
             "capacity is cores / CPU seconds per execution). The verdict rates are from the "
             "last pool size.", "",
             "| measure | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in rows]
    RESULTS.write_text("\n".join(lines) + "\n")
    print(f"wrote {RESULTS.relative_to(ROOT)}")
    if pass_rate < 1 or fail_rate < 1:
        sys.exit("canonical pass rate and broken fail rate must both be 100 %")


if __name__ == "__main__":
    main()
