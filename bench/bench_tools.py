"""Benchmark: latency of tool calls in a persistent sandboxed Python session.

Measures, on this machine (2 cores, shared with other work: the load average is recorded):
* p50 / p95 / max wall latency of ``--calls`` trivial calls (``x += 1``) in one warm
  ``rewards.code.session.PythonSession`` (target: p50 <= 20 ms on 2 cores);
* the same for a call that prints one line and for a calculator call (in-process, sympy);
* the session's start (bwrap + interpreter, once per trajectory), ``--starts`` times.
Writes ``bench/tools_results.md``. Not a test: nothing is asserted.
Usage: ``.venv/bin/python bench/bench_tools.py [--calls 200] [--starts 5]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rewards.code.session import PythonSession  # noqa: E402
from rlsys.envs.tools import CalculatorTool  # noqa: E402

RESULTS = ROOT / "bench" / "tools_results.md"


def _stats(samples: list[float]) -> str:
    ms = sorted(s * 1000 for s in samples)
    p95 = ms[min(len(ms) - 1, int(0.95 * len(ms)))]
    return f"{statistics.median(ms):.2f} / {p95:.2f} / {ms[-1]:.2f} ms"


def _timed(fn, n: int) -> list[float]:
    out = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def main(argv: list[str] | None = None) -> int:
    """Run the measurements, print the table and write ``bench/tools_results.md``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200, help="calls per measured kind")
    parser.add_argument("--starts", type=int, default=5, help="session starts measured")
    args = parser.parse_args(argv)
    load_before = os.getloadavg()[0]
    with PythonSession() as session:
        first = session.run("x = 0")
        assert first.status == "ok", first
        trivial = _timed(lambda: session.run("x += 1"), args.calls)
        assert session.run("x").output == f"{args.calls}\n"
        printing = _timed(lambda: session.run("print(x)"), args.calls)
    calc = CalculatorTool()
    calc({"expression": "1+1"})  # imports sympy once
    calculator = _timed(lambda: calc({"expression": "4821*937"}), args.calls)

    def start_and_close() -> None:
        with PythonSession() as s:
            s.run("0")

    starts = _timed(start_and_close, args.starts)
    load_after = os.getloadavg()[0]
    rows = [(f"trivial python call `x += 1` ({args.calls}), p50 / p95 / max", _stats(trivial)),
            (f"python call printing one line ({args.calls}), p50 / p95 / max",
             _stats(printing)),
            (f"calculator `4821*937` ({args.calls}), p50 / p95 / max", _stats(calculator)),
            (f"session start + first call + close ({args.starts}), p50 / p95 / max",
             _stats(starts)),
            ("load average (1 min) before / after", f"{load_before:.1f} / {load_after:.1f}"),
            ("CPU cores", str(os.cpu_count()))]
    command = f"`.venv/bin/python bench/bench_tools.py --calls {args.calls} --starts " \
              f"{args.starts}`"
    lines = ["# Tool-call latency benchmark", "",
             f"{command}; target: p50 of a trivial call in a warm session <= 20 ms on 2 cores. "
             "The machine was shared with other work (see the load average).", "",
             "| measure | value |", "|---|---|", *[f"| {k} | {v} |" for k, v in rows], ""]
    text = "\n".join(lines)
    print(text)
    RESULTS.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
