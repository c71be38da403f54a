"""Regression floors on the labelled math sets shipped in ``tests/data`` (measured 2026-11-27,
see bench/bench_math.py; provenance in ``tests/data/README.md``).

Measured: math rows 369/399 (92.5 %) with 6 false positives (all convention cases: Math-Verify's
newline-in-$ quirk x2, order-sensitive lists x2, "10cm", interval vs inequality); multiple
choice rows 15/15; rows without convention_dependent/non_default_config 355/374 (94.9 %) with
3 false positives; silver Qwen labels 799/800 agreement. Floors are one point below.
"""

import json
from pathlib import Path

import pytest

from rewards.math.reward import grade_batch

DATA = Path(__file__).resolve().parent.parent / "data"
CONVENTION_TAGS = {"convention_dependent", "non_default_config"}


def _load(name: str) -> list[dict]:
    path = DATA / name
    if not path.exists():
        pytest.fail(f"labelled math data missing from the repository: {path}")
    return [json.loads(line) for line in path.open()]


@pytest.fixture(scope="module")
def graded_cases():
    rows = _load("math_equiv_cases.jsonl")
    graded = grade_batch([r["pred"] for r in rows], [r["gold"] for r in rows], timeout=5.0)
    return [(r, g.correct) for r, g in zip(rows, graded, strict=True)]


def _stats(pairs):
    correct = sum(verdict == row["equal"] for row, verdict in pairs)
    false_pos = sum(verdict and not row["equal"] for row, verdict in pairs)
    return correct / len(pairs), false_pos


def test_math_rows_accuracy_floor(graded_cases):
    accuracy, false_pos = _stats([p for p in graded_cases if p[0]["task"] == "math"])
    assert accuracy >= 0.915
    assert false_pos <= 6


def test_rows_without_convention_tags(graded_cases):
    pairs = [p for p in graded_cases if p[0]["task"] == "math" and
             not CONVENTION_TAGS & set(p[0]["tags"])]
    accuracy, false_pos = _stats(pairs)
    assert accuracy >= 0.939
    assert false_pos <= 3


def test_multiple_choice_rows(graded_cases):
    accuracy, false_pos = _stats([p for p in graded_cases if p[0]["task"] == "mcq_letter"])
    assert accuracy >= 0.93 and false_pos == 0


def test_issue_rows_are_all_right(graded_cases):
    """The Math-Verify issue rows (1/2004! vs 1/2006!, equations, ...) are all decided right."""
    issues = [(row, verdict) for row, verdict in graded_cases if "from_issue" in row["tags"]]
    assert issues and all(verdict == row["equal"] for row, verdict in issues)


def test_silver_agreement_floor():
    rows = _load("math_silver_qwen_cot100.jsonl")
    graded = grade_batch([r["pred"] for r in rows], [r["gold"] for r in rows], timeout=5.0)
    agree = sum(g.correct == r["equal_silver"] for g, r in zip(graded, rows, strict=True))
    assert agree / len(rows) >= 0.988
