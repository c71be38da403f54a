"""``CodeReward``: the registry's ``code`` built-in (1.0 if the program passes, else 0.0).

The program is the last fenced ```python (or ```py) block of the response, else the whole
response. The reference is a tests string, or a dict with ``tests`` (and optionally
``entry_point``: then ``check(entry_point)`` is appended, HumanEval style) and/or
``stdin_cases`` ([[stdin, stdout], ...]). A missing or malformed reference is a per-item error.
Items are scored concurrently through one ``SandboxPool``. Does not retry or cache.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from concurrent.futures import Future
from typing import Any

from rewards.base import RewardItem, Score
from rewards.code.runner import SandboxPool, SandboxResult

_FENCE = re.compile(r"```[ \t]*(?:python3?|py)[ \t]*\n(.*?)```", re.DOTALL | re.IGNORECASE)


def extract_program(response: str) -> str:
    """The last ```python fenced block of ``response``, else the whole response."""
    blocks = _FENCE.findall(response)
    return blocks[-1] if blocks else response


def parse_reference(reference: Any) -> dict[str, Any]:
    """``run_tests`` keyword arguments (tests, stdin_cases) from an item's reference."""
    if isinstance(reference, str):
        return {"tests": reference}
    if not isinstance(reference, dict):
        raise ValueError(f"reference: expected a tests string or a dict, got "
                         f"{type(reference).__name__}")
    unknown = set(reference) - {"tests", "entry_point", "stdin_cases"}
    if unknown:
        raise ValueError(f"reference: unknown keys {sorted(unknown)}")
    tests = reference.get("tests", "")
    if not isinstance(tests, str):
        raise ValueError("reference.tests: expected a string")
    if reference.get("entry_point"):
        tests += f"\n\ncheck({reference['entry_point']})\n"
    cases = reference.get("stdin_cases")
    if cases is not None:
        if not isinstance(cases, list | tuple):
            raise ValueError("reference.stdin_cases: expected a list of [stdin, stdout]")
        cases = [tuple(case) for case in cases]
    if not tests.strip() and not cases:
        raise ValueError("reference: neither tests nor stdin_cases given")
    return {"tests": tests, "stdin_cases": cases}


class CodeReward:
    """Executes each response's program against its reference tests in the sandbox."""

    name = "code"
    version = "1"

    def __init__(self, timeout_s: float = 10.0, memory_mb: int = 1024,
                 workers: int | None = None) -> None:
        self.timeout_s = timeout_s
        self.memory_mb = memory_mb
        self.workers = workers

    def score(self, items: Sequence[RewardItem]) -> list[Score]:
        """One score per item, in order; a bad reference is that item's error."""
        with SandboxPool(self.workers) as pool:
            jobs: list[Future[SandboxResult] | Score] = []
            for item in items:
                try:
                    kwargs = parse_reference(item.reference)
                except ValueError as exc:
                    jobs.append(Score(None, error=f"ValueError: {exc}"))
                    continue
                jobs.append(pool.submit(extract_program(item.response), timeout_s=self.timeout_s,
                                        memory_mb=self.memory_mb, **kwargs))
            return [job if isinstance(job, Score) else _to_score(job) for job in jobs]


def _to_score(future: Future[SandboxResult]) -> Score:
    try:
        result = future.result()
    except (TypeError, ValueError) as exc:  # e.g. tests that are not valid Python
        return Score(None, error=f"{type(exc).__name__}: {exc}")
    info = {"status": result.status, "tests_run": result.tests_run,
            "tests_total": result.tests_total, "detail": result.detail,
            "wall_s": round(result.wall_s, 4)}
    return Score(1.0 if result.passed else 0.0, info=info)
