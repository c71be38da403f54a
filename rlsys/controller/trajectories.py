"""Multi-turn trajectories on the driver: their scores, metrics and inspection rows.

A multi-turn ``Completion`` (``actors.episodes``) carries its episode in ``trajectory``: the
environment's reward is the sample's reward (no reward worker is involved), ``correct`` when the
environment reports it. This module turns those into ``Score`` objects, the per-step metrics
(``turns/mean``, ``tool_calls/mean``, ``tool_errors``, ``truncated``) and the ``samples.jsonl``
rows (every turn, tool call, observation and reward). It runs no environment and no model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rewards.base import Score
from rlsys.types import Completion


def episode_score(c: Completion) -> Score:
    """The environment's reward of a trajectory as a ``Score`` (``correct`` kept in info)."""
    tr = c.trajectory
    if tr is None:
        raise ValueError("episode_score: the completion has no trajectory (not multi-turn)")
    info: dict[str, Any] = {"turns": tr["num_turns"], "end": tr["end"]}
    if "correct" in tr:
        info["correct"] = bool(tr["correct"])
    return Score(float(tr["reward"]), info=info)


def trajectory_metrics(completions: Sequence[Completion]) -> dict[str, float]:
    """Mean turns and tool calls per trajectory, total tool errors, share truncated (by
    ``max_turns`` or ``max_total_tokens``); empty when no completion is multi-turn."""
    trs = [c.trajectory for c in completions if c.trajectory is not None]
    if not trs:
        return {}
    count = len(trs)
    return {"turns/mean": sum(t["num_turns"] for t in trs) / count,
            "tool_calls/mean": sum(t["tool_calls"] for t in trs) / count,
            "tool_errors": float(sum(t["tool_errors"] for t in trs)),
            "truncated": sum(bool(t["truncated"]) for t in trs) / count}


def trajectory_row(c: Completion, record: Mapping[str, Any]) -> dict[str, Any]:
    """A ``samples.jsonl`` row of one trajectory: prompt, answer, messages and turns."""
    tr = c.trajectory or {}
    return {"prompt": record.get("prompt"), "answer": record.get("answer"),
            "reward": tr.get("reward"), "correct": tr.get("correct"), "end": tr.get("end"),
            "truncated": tr.get("truncated"), "turns": tr.get("turns"),
            "messages": tr.get("messages"), "finish_reason": c.finish_reason}
