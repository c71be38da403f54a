"""Weighted sum of several rewards (e.g. ``1.0 * math + 0.1 * format``).

Each component scores the whole batch once; an item's score is ``sum(weight_i * score_i)``.
If any component fails on an item, that item becomes an error naming the component: a partial
sum is never returned. The per-component values are kept in ``Score.info``. This module does not
normalise or clip rewards.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rewards.base import Reward, RewardItem, Score

_SPEC_KEYS = {"name", "weight", "kwargs"}


def _build(spec: Any, index: int) -> tuple[Reward, float]:
    """A ``{"name", "weight", "kwargs"}`` dict or a ``(reward, weight)`` pair -> (reward, w)."""
    from rewards import get_reward  # late: rewards/__init__ registers this module lazily

    where = f"WeightedReward components[{index}]"
    if isinstance(spec, dict):
        unknown = set(spec) - _SPEC_KEYS
        if unknown or "name" not in spec:
            raise ValueError(f"{where}: expected keys {sorted(_SPEC_KEYS)} ('name' required), "
                             f"got {sorted(spec)}")
        kwargs = spec.get("kwargs") or {}
        if not isinstance(kwargs, dict):
            raise ValueError(f"{where}.kwargs: expected a dict, got {type(kwargs).__name__}")
        reward, weight = get_reward(spec["name"], **kwargs), spec.get("weight", 1.0)
    elif isinstance(spec, (tuple, list)) and len(spec) == 2:
        reward, weight = spec
    else:
        raise ValueError(f"{where}: expected a dict spec or a (reward, weight) pair, got {spec!r}")
    if not hasattr(reward, "score"):
        raise ValueError(f"{where}: {reward!r} has no score(items) method")
    if isinstance(weight, bool) or not isinstance(weight, (int, float)):
        raise ValueError(f"{where}.weight: expected a number, got {weight!r}")
    return reward, float(weight)


class WeightedReward:
    """``sum_i weight_i * reward_i``; components are dict specs or ``(reward, weight)`` pairs."""

    name = "weighted"

    def __init__(self, components: Sequence[dict[str, Any] | tuple[Reward, float]]) -> None:
        if not components:
            raise ValueError("WeightedReward: components must not be empty")
        self.components = [_build(spec, i) for i, spec in enumerate(components)]
        names = [getattr(r, "name", type(r).__name__) for r, _ in self.components]
        # Unique labels for info/errors even when one reward appears twice.
        self.labels = [n if names.count(n) == 1 else f"{n}#{i}" for i, n in enumerate(names)]
        self.version = "+".join(f"{w}*{label}:{getattr(r, 'version', '?')}"
                                for label, (r, w) in zip(self.labels, self.components,
                                                         strict=True))

    def score(self, items: Sequence[RewardItem]) -> list[Score]:
        """Score items with every component and combine; any component error fails the item."""
        per_component = [self._component_scores(label, reward, items)
                         for label, (reward, _) in zip(self.labels, self.components, strict=True)]
        out: list[Score] = []
        for i in range(len(items)):
            total, info, errors = 0.0, {}, []
            for label, (_, weight), scores in zip(self.labels, self.components, per_component,
                                                  strict=True):
                s = scores[i]
                if not s.ok:
                    errors.append(f"component {label!r}: {s.error or 'no score'}")
                    continue
                info[label] = s.value
                total += weight * float(s.value)  # type: ignore[arg-type]
            out.append(Score(None, error="; ".join(errors), info=info) if errors
                       else Score(total, info=info))
        return out

    @staticmethod
    def _component_scores(label: str, reward: Reward,
                          items: Sequence[RewardItem]) -> list[Score]:
        try:
            scores = list(reward.score(items))
        except Exception as exc:  # noqa: BLE001 - one failing component fails its items only
            return [Score(None, error=f"{type(exc).__name__}: {exc}") for _ in items]
        if len(scores) != len(items):
            msg = f"returned {len(scores)} scores for {len(items)} items"
            return [Score(None, error=msg) for _ in items]
        return scores
