"""The environment contract of agentic RL: ``reset(record)`` then ``step(assistant_text)``.

An environment is one episode (one trajectory) at a time: ``reset`` takes a data record and
returns the opening chat messages; each ``step`` takes the assistant's full text of one turn
and returns the observation messages the model sees next (tool results, test failures), the
reward so far, and whether the episode is over. ``close`` frees what the episode holds (a
sandboxed session). Token limits and turn caps are the rollout's business, not the
environment's (``rlsys.config.env.EnvConfig``). Many environments are stepped concurrently by
``step_many`` (threads: the work is in sandboxes and subprocesses). No Ray, no torch here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

#: a chat message: {"role": "system" | "user" | "assistant" | "tool", "content": str, ...}
Message = dict[str, str]


@dataclass(frozen=True)
class StepResult:
    """What one ``step`` returns: observation messages (empty when ``done``), the reward of
    the episode as it stands (final when ``done``), and diagnostics in ``info``."""

    observation: list[Message]
    reward: float
    done: bool
    info: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Environment(Protocol):
    """One episode at a time; ``step`` after ``done`` raises ``RuntimeError``."""

    def reset(self, record: Mapping[str, Any]) -> list[Message]:
        """Start an episode for ``record``; returns the opening messages."""
        ...

    def step(self, assistant_text: str) -> StepResult:
        """Consume the assistant's text of one turn."""
        ...

    def close(self) -> None:
        """Free the episode's resources (idempotent)."""
        ...


def step_many(envs: Sequence[Environment], texts: Sequence[str],
              workers: int | None = None) -> list[StepResult]:
    """Step ``envs[i]`` with ``texts[i]`` concurrently; results in order. An exception of one
    environment is raised after all steps finished."""
    if len(envs) != len(texts):
        raise ValueError(f"step_many: {len(envs)} environments but {len(texts)} texts")
    if not envs:
        return []
    with ThreadPoolExecutor(max_workers=workers or min(len(envs), 32),
                            thread_name_prefix="rlsys-env") as pool:
        futures = [pool.submit(env.step, text) for env, text in zip(envs, texts, strict=True)]
        return [future.result() for future in futures]
