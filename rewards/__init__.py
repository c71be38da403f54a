"""Rewards: verifiable checkers, reward models, remote plugins, and their registry.

``get_reward(name, **kwargs)`` builds a reward by name. Built-ins are resolved lazily (the math
checker does not import the sandbox, neither imports torch); third-party packages register
factories through the ``rlsys.rewards`` entry-point group or ``register_reward``.
This package never imports torch, Ray, ``actors`` or ``learner`` at import time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rewards.base import FunctionReward, Reward, RewardItem, Score
from rlsys.registry import Registry, lazy_factory

__all__ = ["FunctionReward", "Reward", "RewardItem", "Score", "get_reward", "register_reward",
           "reward_names", "REWARDS"]

#: name -> factory(**kwargs) -> Reward
REWARDS: Registry[Callable[..., Reward]] = Registry("reward")

_BUILTINS = {
    "math": "rewards.math.reward:MathReward",
    "code": "rewards.code.reward:CodeReward",
    "format": "rewards.format:FormatReward",
    "model": "rewards.model:ModelReward",
    "remote": "rewards.remote:RemoteReward",
    "weighted": "rewards.compose:WeightedReward",
    "judge": "rewards.judge.reward:JudgeReward",
}
for _name, _path in _BUILTINS.items():
    REWARDS.register(_name, lazy_factory(_path))


def _load_entry_points() -> None:
    REWARDS.load_entry_points("rlsys.rewards", _adapt)


def _adapt(obj: Any, name: str) -> Callable[..., Reward]:
    """A class/factory returning a Reward is used as is; a plain scoring function is wrapped."""
    if isinstance(obj, type) or getattr(obj, "_rlsys_factory", False):
        return obj
    return lambda **_: FunctionReward(obj, name=name)


def register_reward(name: str, obj: Any) -> None:
    """Register a reward factory (class) or a plain ``fn(prompt, response, reference)``."""
    REWARDS.register(name, _adapt(obj, name))


def reward_names() -> list[str]:
    """Every known reward name, built-ins and entry points."""
    _load_entry_points()
    return REWARDS.names()


def get_reward(name: str, **kwargs: Any) -> Reward:
    """Build the reward registered as ``name`` with ``kwargs``; unknown names list the known."""
    _load_entry_points()
    return REWARDS.get(name)(**kwargs)
