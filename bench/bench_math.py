"""Benchmark: rlsys's math checker vs Hugging Face ``math-verify`` (accuracy and pairs/s).

Runs both checkers in the same run over the same pairs:
* ``tests/data/math_equiv_cases.jsonl`` (rows with ``task == "math"``): accuracy and
  false positives per ``source``, for all rows and for rows without the
  ``convention_dependent`` / ``non_default_config`` tags;
* ``math_silver_qwen_cot100.jsonl``: agreement with ``equal_silver`` (answers extracted from
  ``pred``; ``gold`` is already an answer);
* throughput (pairs/s) of both on 2 worker processes, ours with a cold and a warm cache.

``math-verify`` lives in its own virtualenv (``bench/.venv-mathverify``, created on first run,
git-ignored) and runs as a subprocess; it is never installed into the project's venv.
Writes the table to ``bench/math_results.md``. Usage: ``.venv/bin/python bench/bench_math.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rewards.math import cache_clear  # noqa: E402
from rewards.math.reward import grade_batch  # noqa: E402

DATA = ROOT / "tests" / "data"  # the labelled sets ship with the tests
VENV = ROOT / "bench" / ".venv-mathverify"
RESULTS = ROOT / "bench" / "math_results.md"
EXCLUDED_TAGS = {"convention_dependent", "non_default_config"}
LOAD_AT_START = os.getloadavg()[0]  # recorded in the results: was the machine idle?

# Runs inside the math-verify venv: reads [[gold, pred], ...] on stdin, prints verdicts+time.
MV_SCRIPT = r"""
import json, sys, time
from multiprocessing import Pool
from math_verify import parse, verify

def parse_any(text):
    # Bare LaTeX (no $ or \boxed) needs math delimiters for math-verify's LaTeX extractor.
    parsed = parse(text)
    return parsed if parsed else parse("$" + text + "$")

def one(pair):
    gold, pred = pair
    try:
        return bool(verify(parse_any(gold), parse_any(pred)))
    except Exception:
        return False

if __name__ == "__main__":
    pairs = json.load(sys.stdin)
    workers = int(sys.argv[1])
    with Pool(workers) as pool:
        pool.map(one, pairs[:4])  # warm the workers (imports) before timing
        start = time.perf_counter()
        verdicts = pool.map(one, pairs, chunksize=8)
        elapsed = time.perf_counter() - start
    json.dump({"verdicts": verdicts, "seconds": elapsed}, sys.stdout)
"""


def ensure_mathverify_venv() -> Path:
    """Create ``bench/.venv-mathverify`` with math-verify once; return its python."""
    python = VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    probe = subprocess.run([str(python), "-c", "import math_verify"], capture_output=True)
    if probe.returncode != 0:
        subprocess.run([str(python), "-m", "pip", "install", "-q", "math-verify"], check=True)
    return python


def run_mathverify(python: Path, pairs: list[tuple[str, str]], workers: int) -> dict:
    """Verdicts of math-verify for (gold, pred) pairs and the seconds it took."""
    proc = subprocess.run([str(python), "-c", MV_SCRIPT, str(workers)],
                          input=json.dumps(pairs), capture_output=True, text=True, check=True)
    return json.loads(proc.stdout)


def run_ours(pairs: list[tuple[str, str]], workers: int, use_cache: bool) -> dict:
    """Our verdicts for (gold, pred) pairs and the seconds it took."""
    golds = [g for g, _ in pairs]
    preds = [p for _, p in pairs]
    grade_batch(preds[:4], golds[:4], workers=workers, use_cache=False)  # start the workers
    start = time.perf_counter()
    graded = grade_batch(preds, golds, workers=workers, use_cache=use_cache)
    return {"verdicts": [g.correct for g in graded], "seconds": time.perf_counter() - start}


def score(rows: list[dict], verdicts: list[bool], label: str) -> dict:
    """Accuracy and false positives (said equal, labelled unequal) by source."""
    by_source: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])  # n, ok, fp, neg
    for row, verdict in zip(rows, verdicts, strict=True):
        src = row["source"].split("@")[0].split(":")[0]
        for key in (src, "ALL"):
            stats = by_source[key]
            stats[0] += 1
            stats[1] += verdict == row[label]
            stats[2] += verdict and not row[label]
            stats[3] += not row[label]
    return dict(by_source)


def table(title: str, ours: dict, theirs: dict) -> list[str]:
    """Markdown rows comparing the two scorers' per-source stats."""
    lines = [f"### {title}", "", "| source | n | ours acc | math-verify acc | ours FP | "
             "math-verify FP | negatives |", "|---|---:|---:|---:|---:|---:|---:|"]
    for src in sorted(ours, key=lambda s: (s == "ALL", s)):
        n, ok, fp, neg = ours[src]
        _, ok_mv, fp_mv, _ = theirs[src]
        lines.append(f"| {src} | {n} | {ok / n:.1%} | {ok_mv / n:.1%} | {fp} | {fp_mv} | {neg} |")
    return lines + [""]


def main() -> None:
    """Run every comparison, print the tables and write ``bench/math_results.md``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    python = ensure_mathverify_venv()

    cases = [json.loads(line) for line in open(DATA / "math_equiv_cases.jsonl")]
    cases = [r for r in cases if r["task"] == "math"]
    strict = [r for r in cases if not EXCLUDED_TAGS & set(r["tags"])]
    silver = [json.loads(line) for line in open(DATA / "math_silver_qwen_cot100.jsonl")]
    case_pairs = [(r["gold"], r["pred"]) for r in cases]
    silver_pairs = [(r["gold"], r["pred"]) for r in silver]
    all_pairs = case_pairs + silver_pairs

    cache_clear()
    ours_cold = run_ours(all_pairs, args.workers, use_cache=False)
    run_ours(all_pairs, args.workers, use_cache=True)  # fills the cache
    ours_warm = run_ours(all_pairs, args.workers, use_cache=True)
    theirs = run_mathverify(python, all_pairs, args.workers)

    n_cases = len(case_pairs)
    ours_v, theirs_v = ours_cold["verdicts"], theirs["verdicts"]
    strict_idx = [i for i, r in enumerate(cases) if r in strict]
    lines = ["## Math checker vs math-verify", "",
             f"Pairs: {n_cases} `math` rows of math_equiv_cases.jsonl + {len(silver)} silver rows;"
             f" {args.workers} worker processes on this machine.", ""]
    lines += table("math_equiv_cases.jsonl, all `math` rows",
                   score(cases, ours_v[:n_cases], "equal"),
                   score(cases, theirs_v[:n_cases], "equal"))
    lines += table("math_equiv_cases.jsonl, without convention_dependent/non_default_config",
                   score(strict, [ours_v[i] for i in strict_idx], "equal"),
                   score(strict, [theirs_v[i] for i in strict_idx], "equal"))
    lines += table("math_silver_qwen_cot100.jsonl, agreement with equal_silver",
                   score(silver, ours_v[n_cases:], "equal_silver"),
                   score(silver, theirs_v[n_cases:], "equal_silver"))
    n = len(all_pairs)
    lines += ["### Throughput (all pairs, extraction included)", "",
              "| checker | seconds | pairs/s |", "|---|---:|---:|",
              f"| ours, cold cache | {ours_cold['seconds']:.2f} | {n / ours_cold['seconds']:.0f} |",
              f"| ours, warm cache | {ours_warm['seconds']:.2f} | {n / ours_warm['seconds']:.0f} |",
              f"| math-verify | {theirs['seconds']:.2f} | {n / theirs['seconds']:.0f} |", "",
              f"Cold-cache speed-up over math-verify: "
              f"{theirs['seconds'] / ours_cold['seconds']:.1f}x. math-verify runs in its own venv "
              "with its default 5 s parse/verify timeouts, bare LaTeX wrapped in `$..$` when its "
              "parser finds nothing; timings are wall-clock on a 2-core machine whose 1-minute "
              f"load average was {LOAD_AT_START:.2f} at the start (about 0 = idle).",
              ""]
    text = "\n".join(lines)
    print(text)
    RESULTS.write_text(text)


if __name__ == "__main__":
    main()
