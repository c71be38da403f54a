"""``RewardWorker``: builds a reward from a spec and scores batches of ``RewardItem``.

A plain class (no Ray; ``actors.launch`` wraps it). Spec forms:

* ``{"name": "math", "kwargs": {...}}`` -- one reward from ``rewards.get_reward``;
* ``[{"name": "math", "weight": 1.0}, {"name": "format", "weight": 0.1}, ...]`` -- a weighted
  sum through the ``weighted`` reward.

It does not normalise rewards or compute advantages.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from rewards import RewardItem, Score, get_reward

_SPEC_KEYS = {"name", "kwargs"}


def build_reward(reward_spec: dict[str, Any] | list[dict[str, Any]]) -> Any:
    """Turn a spec (see module docstring) into a ``Reward``; bad specs raise ``ValueError``."""
    if isinstance(reward_spec, list):
        return get_reward("weighted", components=reward_spec)
    if not isinstance(reward_spec, dict) or "name" not in reward_spec:
        raise ValueError(f"reward_spec: expected {{'name': ..., 'kwargs': {{...}}}} or a list of "
                         f"weighted components, got {reward_spec!r}")
    unknown = set(reward_spec) - _SPEC_KEYS
    if unknown:
        raise ValueError(f"reward_spec: unknown keys {sorted(unknown)}; "
                         f"allowed {sorted(_SPEC_KEYS)}")
    return get_reward(reward_spec["name"], **(reward_spec.get("kwargs") or {}))


class RewardWorker:
    """Scores ``RewardItem`` batches with one reward built from ``reward_spec``."""

    def __init__(self, reward_spec: dict[str, Any] | list[dict[str, Any]]) -> None:
        self.reward_spec = reward_spec
        self.reward = build_reward(reward_spec)

    def score(self, items: Sequence[RewardItem]) -> list[Score]:
        """One ``Score`` per item, in order (errors are per item, never silent zeros)."""
        scores = self.reward.score(list(items))
        if len(scores) != len(items):
            raise RuntimeError(f"reward {self.reward.name!r} returned {len(scores)} scores for "
                               f"{len(items)} items")
        return scores

    def ping(self) -> dict[str, Any]:
        """Liveness and identity: pid and reward name/version."""
        return {"pid": os.getpid(), "reward": self.reward.name,
                "version": getattr(self.reward, "version", "?")}
