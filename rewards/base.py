"""The reward contract: items in, one score (or a per-item error) out.

A reward is any object with ``name``, ``version`` and ``score(items) -> list[Score]``; a plain
function ``f(prompt, response, reference) -> float`` is adapted by ``FunctionReward``.
This module defines the contract only; it imports neither torch nor Ray.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True)
class RewardItem:
    """One thing to score: the prompt, the model's response and an optional reference."""

    prompt: str
    response: str
    reference: Any = None


@dataclass
class Score:
    """A score for one item, or ``error`` (then ``value`` is None): never a silent zero."""

    value: float | None
    error: str | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when the item was scored."""
        return self.error is None and self.value is not None

    @property
    def correct(self) -> bool:
        """Whether the item counts as solved: the reward's own ``info["correct"]`` when it
        reports one (a verifier), else a scored ``value >= 1.0``. The one rule of RL accuracy
        and of the held-out eval."""
        info = self.info or {}
        if "correct" in info:
            return bool(info["correct"])
        return self.ok and self.value is not None and self.value >= 1.0


@runtime_checkable
class Reward(Protocol):
    """What the trainer, the reward workers and the REST service call."""

    name: str
    version: str

    def score(self, items: Sequence[RewardItem]) -> list[Score]:
        """Score a batch; one ``Score`` per item, in order."""
        ...


class FunctionReward:
    """Adapts ``fn(prompt, response, reference) -> float`` to the ``Reward`` protocol.

    An exception raised for one item becomes that item's error; the rest are still scored.
    """

    def __init__(self, fn: Callable[[str, str, Any], float], name: str | None = None,
                 version: str = "1") -> None:
        self.fn = fn
        self.name = name or getattr(fn, "__name__", "function")
        self.version = version

    def score(self, items: Sequence[RewardItem]) -> list[Score]:
        """Call the function on each item, catching per-item failures."""
        out: list[Score] = []
        for item in items:
            try:
                out.append(Score(float(self.fn(item.prompt, item.response, item.reference))))
            except Exception as exc:  # noqa: BLE001 - a bad item must not fail the batch
                out.append(Score(None, error=f"{type(exc).__name__}: {exc}"))
        return out
