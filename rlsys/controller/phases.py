"""``PhaseTimer``: wall time per phase of a step (generate, reward, logprobs, train, sync), with
"other" = the rest of the step (orchestration). Pure Python; no I/O."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

PHASES = ("generate", "reward", "logprobs", "train", "sync")


class PhaseTimer:
    """Accumulates seconds per named phase."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        """Time the enclosed block under ``phase`` (re-entering a phase adds up)."""
        t0 = time.monotonic()
        try:
            yield
        finally:
            self.seconds[phase] = self.seconds.get(phase, 0.0) + time.monotonic() - t0

    def metrics(self, step_s: float) -> dict[str, float]:
        """``time/<phase>`` for every phase plus ``time/other`` and its share of the step."""
        out = {f"time/{p}": self.seconds.get(p, 0.0) for p in PHASES}
        out.update({f"time/{p}": s for p, s in self.seconds.items()})
        other = max(step_s - sum(self.seconds.values()), 0.0)
        out["time/other"] = other
        out["time/other_frac"] = other / step_s if step_s > 0 else 0.0
        return out
