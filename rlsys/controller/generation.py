"""Generation as the eval, synthetic-data and RL stages share it: chunked, seeded sampling on a
rollout pool (with an optional progress bar), and the ``RewardItem`` of each completion.

Seeds follow one rule: a chunk (or a pool shard) that starts at prompt ``i`` samples with
``seed + i``, so results depend on the recipe alone, not on how work was split. The chunk size
is the caller's (eval: a progress-bar-sized number of sequences per worker; synthetic: a fixed
number of prompts). The ``Protocol`` classes name the pool methods the controller calls, so a
stage runs with ``actors.launch`` pools on Ray or with in-process fakes in tests.

This module decides neither what to generate nor what a score means.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from rewards.base import RewardItem, Score
from rlsys.types import Completion


class RolloutPoolLike(Protocol):
    """The rollout-pool methods the controller uses (``actors.launch.RolloutPool``)."""

    @property
    def weights_version(self) -> int:
        """Version of the latest weights pushed with ``sync_weights`` (0 = initial)."""
        ...

    def generate(self, prompts: Sequence[Any], **sampling: Any) -> list[Completion]:
        """``n`` completions per prompt, grouped in prompt order."""
        ...

    def generate_async(self, prompts: Sequence[Any], **sampling: Any) -> list[Any]:
        """Start generation; one pending shard per worker."""
        ...

    def wait_shard(self, shard: Any, **sampling: Any) -> list[Completion]:
        """One shard's completions, ``prompt_index`` global."""
        ...

    def episodes_async(self, records: Sequence[Any], **sampling: Any) -> list[Any]:
        """Start multi-turn episodes (``env`` in ``sampling``); one pending shard per worker."""
        ...

    def wait_episodes(self, shard: Any, **sampling: Any) -> list[Completion]:
        """One shard's trajectories (``Completion`` with ``trajectory``), ``prompt_index``
        global."""
        ...

    def sync_weights(self, state: Any) -> int:
        """Push new weights; returns the new version."""
        ...


class RewardPoolLike(Protocol):
    """The reward-pool methods the controller uses (``actors.launch.RewardPool``)."""

    def score(self, items: Sequence[RewardItem]) -> list[Score]:
        """One ``Score`` per item, in order."""
        ...

    def score_async(self, items: Sequence[RewardItem], *, spread: bool = True) -> list[Any]:
        """Start scoring; pending shards for ``wait``."""
        ...

    def wait(self, pending: Sequence[Any]) -> list[Score]:
        """Scores of pending shards, in order."""
        ...


def reward_items(records: Sequence[Mapping[str, Any]],
                 completions: Sequence[Completion]) -> list[RewardItem]:
    """``RewardItem(prompt, response, answer)`` of each completion, from the record its
    ``prompt_index`` points at (``answer`` None when the record has none)."""
    return [RewardItem(records[c.prompt_index]["prompt"], c.text,
                       records[c.prompt_index].get("answer")) for c in completions]


def generate_in_chunks(rollout: RolloutPoolLike, prompts: Sequence[Any], *, chunk: int, n: int,
                       seed: int | None, progress: str | None = None,
                       **sampling: Any) -> list[Completion]:
    """``rollout.generate`` over ``prompts``, ``chunk`` prompts per call, ``n`` samples each.

    Chunk ``i`` is seeded ``seed + its first index`` and its ``prompt_index`` values are made
    global, so completions come back in prompt order. ``progress`` (a description) shows a
    bar of prompts done when there is more than one chunk. With ``env`` in ``sampling`` the
    prompts are records and each chunk runs multi-turn episodes (``rollout.episodes_async``).
    """
    if chunk < 1:
        raise ValueError(f"generate_in_chunks: chunk must be >= 1, got {chunk}")
    bar = None
    if progress is not None and len(prompts) > chunk:
        from tqdm import tqdm

        # stdout: in a quiet run stderr goes to RUN_DIR/logs/driver.log
        bar = tqdm(total=len(prompts), desc=progress, unit="prompt", dynamic_ncols=True,
                   file=sys.stdout)
    completions: list[Completion] = []
    try:
        for start in range(0, len(prompts), chunk):
            part = list(prompts[start:start + chunk])
            part_seed = None if seed is None else seed + start
            if "env" in sampling:
                done = [c for shard in rollout.episodes_async(part, n=n, seed=part_seed,
                                                              **sampling)
                        for c in rollout.wait_episodes(shard, n=n, seed=part_seed, **sampling)]
            else:
                done = rollout.generate(part, n=n, seed=part_seed, **sampling)
            for completion in done:
                completion.prompt_index += start
            completions += done
            if bar is not None:
                bar.update(len(part))
    finally:
        if bar is not None:
            bar.close()
    return completions
