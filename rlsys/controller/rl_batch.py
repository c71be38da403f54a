"""One RL step's samples and the numbers read off them: ``Batch`` (completions, scores, group
ids; kept/extended by dynamic sampling), ``batch_metrics`` (reward, accuracy, lengths,
trajectories), the stage's policy-loss spec and the per-step sampling seed. Pure bookkeeping
on plain objects; it starts no worker and computes no loss (``rlsys.controller.rl`` drives the
loop, ``rlsys.algo`` holds the math).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from rlsys.controller.trajectories import trajectory_metrics
from rlsys.types import PolicyLossSpec

if TYPE_CHECKING:
    from rewards.base import Score
    from rlsys.config import AlgoConfig
    from rlsys.types import Completion, Experience


class Batch:
    """One step's samples: completions, their scores and group ids (one group per prompt)."""

    def __init__(self, completions: list[Completion], scores: list[Score], records: list[dict],
                 version: int) -> None:
        self.completions, self.scores, self.records = completions, scores, records
        self.version = version  # policy version that generated it
        self.group_ids = [c.prompt_index for c in completions]
        # every score drawn for this step, also those that dynamic sampling dropped
        self.drawn_scores = list(scores)

    def rewards(self) -> torch.Tensor:
        """(B,) scalar rewards; an item the reward could not score counts 0 (and is logged)."""
        return torch.tensor([s.value if s.ok else 0.0 for s in self.scores])

    def keep(self, mask: torch.Tensor) -> Batch:
        """Only the samples where ``mask`` is True."""
        idx = [i for i, k in enumerate(mask.tolist()) if k]
        out = Batch([self.completions[i] for i in idx], [self.scores[i] for i in idx],
                    self.records, self.version)
        out.group_ids = [self.group_ids[i] for i in idx]
        out.drawn_scores = self.drawn_scores
        return out

    def extend(self, other: Batch) -> None:
        """Append another batch's samples: its prompts go after ours (``prompt_index`` and
        group ids renumbered), so every completion still points at its own record."""
        offset = max(self.group_ids, default=-1) + 1
        for c in other.completions:
            c.prompt_index += len(self.records)
        self.records = self.records + other.records
        self.completions += other.completions
        self.scores += other.scores
        self.group_ids += [g + offset for g in other.group_ids]
        self.drawn_scores = self.drawn_scores + other.drawn_scores



def policy_loss_spec(algo: AlgoConfig, *, norm_len: int) -> PolicyLossSpec:
    """The stage's policy-loss spec from its ``algo`` section, built once: the KL term enters
    the loss only with ``kl_mode: loss`` (``reward`` puts it in the rewards instead)."""
    return PolicyLossSpec(
        objective=algo.objective, aggregation=algo.aggregation, clip_low=algo.clip_low,
        clip_high=algo.clip_high, clip_c=algo.clip_c, tis_cap=algo.tis_cap,
        kl_coef=algo.kl_coef if algo.kl_mode == "loss" else 0.0,
        kl_estimator=algo.kl_estimator, entropy_coef=algo.entropy_coef, norm_len=norm_len)


def _accuracy(scores: list[Score]) -> float:
    """Share of scores that are correct (``Score.correct``: ``info["correct"]``, else a
    reward >= 1)."""
    return sum(s.correct for s in scores) / max(len(scores), 1)


def batch_metrics(batch: Batch, exp: Experience) -> dict[str, float]:
    """Reward, accuracy, length and truncation statistics of a batch.

    ``accuracy`` is over the samples trained on; ``accuracy/drawn`` over every sample drawn
    this step (with dynamic sampling it includes the dropped all-equal groups, so it is the
    policy's accuracy on the step's prompts; without, the two are equal).
    """
    rewards = batch.rewards()
    lengths = exp.tokens.mask.sum(dim=1).float()
    return {
        "reward/mean": float(rewards.mean()), "reward/std": float(rewards.std())
        if len(rewards) > 1 else 0.0,
        "reward/errors": float(sum(not s.ok for s in batch.scores)),
        "accuracy": _accuracy(batch.scores),
        "accuracy/drawn": _accuracy(batch.drawn_scores),
        "samples/drawn": float(len(batch.drawn_scores)),
        "response_length/mean": float(lengths.mean()),
        "response_length/truncated": sum(c.finish_reason == "length" for c in batch.completions)
        / max(len(batch.completions), 1),
        "groups": float(len(set(batch.group_ids))), "samples": float(len(batch.completions)),
        "staleness": 0.0, **trajectory_metrics(batch.completions),
    }


def step_seed(seed: int, step: int) -> int:
    """The sampling seed of RL step ``step`` (1-based) of a recipe with ``seed``."""
    return seed * 100_003 + step * 1_009
