"""Bounded-staleness asynchronous rollouts for the RL stages (``algo.async_rollout: true``).

The driver keeps up to ``algo.async_buffer`` generations (``rollout.prompts_per_step`` prompts
each, sharded over the rollout pool) in flight while the learner trains; the learner takes the
oldest one per step. New weights are *published* without waiting for the generations: with
the collective transport (``rollout.weight_sync`` auto/collective) learner rank 0 broadcasts
and every worker stages them in a second thread (``RolloutPool.publish_collective``; the
driver never holds them), else the driver posts them through the object store
(``publish_weights``). Each worker loads the newest ones before every chunk of
``algo.partial_rollout_chunk`` tokens, or, with ``env:``, before every turn of its episodes
(partial rollouts: a generation in flight continues on the new weights). Every token records
the weights version that generated it (``Completion.token_versions``; an observation token
the version of the turn before it) and its log-prob under those weights, so truncated IS
(``algo.tis_cap``) corrects each token against the policy that really sampled it.

Staleness: a sample's version is its *oldest* token's. At a training step with policy version
``v``, a group (one prompt's samples) holding a sample of version ``< v - max_staleness`` is
dropped and counted (``async/dropped_stale``); a sample older than ``max_staleness`` is never
trained on. A step whose buffered generations are all stale takes the next one (launched on
fresher weights) instead.

Resume: a checkpoint records the sampler position before the prompts of the generations still
in flight, so after a crash those prompts are drawn and generated again (their samples are
lost, never half-used); the step, model and optimizer are exact as in sync mode, the sampled
tokens are not (which weights a worker used depends on timing).

Pure parts (``RolloutBuffer``, ``sample_version``, ``fresh_groups``) need no Ray and no model;
``AsyncFeed`` drives an ``RLStage`` through its public methods and pool. This module computes no
loss (TIS lives in ``rlsys.algo.policy``) and does not score (``RLStage.finish_generation``).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar, runtime_checkable

import torch

from rlsys.controller.experience import informative_groups

if TYPE_CHECKING:
    from rlsys.controller.phases import PhaseTimer
    from rlsys.controller.rl_batch import Batch
    from rlsys.types import Completion

#: ``rlsys.controller.rl.RLStage`` (not imported: ``rl`` imports this module)
RLStage = Any

T = TypeVar("T")


@runtime_checkable
class AsyncRolloutPoolLike(Protocol):
    """The rollout-pool methods async mode needs (``actors.launch.RolloutPool``); it also
    calls ``publish_collective`` when the weights go over the collective and
    ``episodes_partial_async`` / ``wait_episodes`` with ``env:``."""

    def generate_partial_async(self, prompts: Sequence[Any], *, chunk_tokens: int,
                               **sampling: Any) -> list[Any]:
        """Start partial-rollout generation; one pending shard per worker."""
        ...

    def wait_shard(self, shard: Any, **sampling: Any) -> list[Completion]:
        """One shard's completions."""
        ...

    def publish_weights(self, state: Any) -> int:
        """Publish new weights without waiting for the workers; the new version."""
        ...

    def pull_weights(self) -> list[int]:
        """Every worker loads the newest published weights now."""
        ...


class RolloutBuffer(Generic[T]):
    """A bounded FIFO of launched generations, each with the sampler position before its
    prompts were drawn (what a checkpoint must record while it is in flight)."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"async_buffer: capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._items: deque[tuple[T, dict[str, Any] | None]] = deque()

    def __len__(self) -> int:
        return len(self._items)

    def push(self, item: T, sampler_before: dict[str, Any] | None) -> None:
        """Add a launched generation; raises when the buffer already holds ``capacity``."""
        if len(self._items) >= self.capacity:
            raise RuntimeError(f"async buffer full ({self.capacity} generations in flight)")
        self._items.append((item, sampler_before))

    def pop(self) -> T:
        """The oldest launched generation (FIFO); raises on an empty buffer."""
        if not self._items:
            raise RuntimeError("async buffer is empty: launch a generation first")
        return self._items.popleft()[0]

    def sampler_before_oldest(self) -> dict[str, Any] | None:
        """Sampler position before the oldest in-flight generation's prompts (None: empty)."""
        return self._items[0][1] if self._items else None


def sample_version(completion: Completion, launch_version: int) -> int:
    """The policy version a sample counts as: its oldest token's, else (no per-token record,
    e.g. an empty response or a retried shard) the pool version when it was launched, which is
    never newer than the weights that generated it."""
    versions = completion.token_versions
    return min(versions) if versions else launch_version


def fresh_groups(versions: Sequence[int], group_ids: Sequence[int], *, current: int,
                 max_staleness: int) -> list[bool]:
    """Keep-mask over samples: False for every sample of a group holding one of version
    ``< current - max_staleness`` (a group is trained whole or not at all).

    >>> fresh_groups([5, 5, 3, 4], [0, 0, 1, 1], current=6, max_staleness=2)
    [True, True, False, False]
    """
    if max_staleness < 1:
        raise ValueError(f"max_staleness must be >= 1, got {max_staleness}")
    if len(versions) != len(group_ids):
        raise ValueError(f"versions ({len(versions)}) and group_ids ({len(group_ids)}) differ "
                         f"in length")
    stale = {g for v, g in zip(versions, group_ids, strict=True) if v < current - max_staleness}
    return [g not in stale for g in group_ids]


class AsyncFeed:
    """The async producer of one RL stage: keeps the buffer full, hands the learner fresh
    batches (stale groups dropped, DAPO refills from the buffer), publishes new weights and
    drains at the end. ``seed_for(i)`` is the sampling seed of the ``i``-th launch."""

    def __init__(self, run: RLStage, *, seed_for: Callable[[int], int]) -> None:
        algo = run.algo
        if not isinstance(run.rollout, AsyncRolloutPoolLike):
            raise TypeError(f"async_rollout: the rollout pool {type(run.rollout).__name__} "
                            f"lacks generate_partial_async/publish_weights/pull_weights")
        self.episodes = getattr(run, "env", None) is not None  # multi-turn: turn boundaries
        self.run, self.seed_for = run, seed_for
        self.pool: Any = run.rollout  # AsyncRolloutPoolLike (+ the optional methods above)
        self.max_staleness = algo.max_staleness
        self.chunk = algo.partial_rollout_chunk or run.rc.max_new_tokens
        self.buffer: RolloutBuffer[tuple[list[Any], list[dict], int]] = RolloutBuffer(
            algo.async_buffer or algo.max_staleness)
        self.launches = run.step  # launch i samples with seed_for(i + 1): step i+1 in sync terms
        self.versions: dict[int, int] = {}  # id(completion) -> sample version, current batch
        self.dropped = 0

    def _launch(self) -> None:
        run = self.run
        before = run.sampler.state_dict()
        records = run.draw_prompts(run.rc.prompts_per_step)
        self.launches += 1
        seed = self.seed_for(self.launches)
        if self.episodes:  # weights change between turns
            shards = self.pool.episodes_partial_async(records, seed=seed, **run.sampling())
        else:
            shards = self.pool.generate_partial_async(
                [r["prompt"] for r in records], chunk_tokens=self.chunk, seed=seed,
                **run.sampling())
        self.buffer.push((shards, records, run.version), before)

    def fill(self, steps_left: int) -> None:
        """Launch generations until ``min(capacity, steps_left)`` are in flight."""
        while len(self.buffer) < min(self.buffer.capacity, steps_left):
            self._launch()

    def _take(self, timer: PhaseTimer) -> Batch:
        """The oldest generation, scored, without its stale groups (counted)."""
        if not len(self.buffer):
            self._launch()
        shards, records, launched = self.buffer.pop()
        batch = self.run.finish_generation(shards, records, launched, timer)
        versions = [sample_version(c, launched) for c in batch.completions]
        keep = fresh_groups(versions, batch.group_ids, current=self.run.version,
                            max_staleness=self.max_staleness)
        self.dropped += keep.count(False)
        for c, v, k in zip(batch.completions, versions, keep, strict=True):
            if k:
                self.versions[id(c)] = v
        return batch.keep(torch.tensor(keep, dtype=torch.bool))

    def next_batch(self, timer: PhaseTimer) -> Batch:
        """This step's batch: the oldest fresh generation (up to ``capacity + 1`` takes when
        every group is stale); with dynamic sampling all-equal groups dropped and refilled
        from the buffer. Later steps' generations are launched before it returns, and the
        stage's ``sampler_before_prefetch`` names the position before them."""
        run, algo = self.run, self.run.algo
        steps_left = run.stage.steps - run.step
        self.versions, self.dropped = {}, 0
        self.fill(steps_left)
        batch = self._take(timer)
        for _ in range(self.buffer.capacity):
            if batch.completions:
                break
            batch = self._take(timer)
        self.fill(steps_left - 1)  # the next steps generate while this one trains
        if algo.dynamic_sampling:
            batch = batch.keep(informative_groups(batch.rewards(), torch.tensor(batch.group_ids)))
            for _ in range(algo.max_refill_rounds):
                need = run.rc.prompts_per_step - len(set(batch.group_ids))
                if need <= 0:
                    break
                more = self._take(timer)
                keep = informative_groups(more.rewards(), torch.tensor(more.group_ids))
                wanted = list(dict.fromkeys(g for g, k in zip(more.group_ids, keep.tolist(),
                                                              strict=True) if k))[:need]
                batch.extend(more.keep(torch.tensor([g in wanted for g in more.group_ids],
                                                    dtype=torch.bool)))
            self.fill(steps_left - 1)
        run.sampler_before_prefetch = self.buffer.sampler_before_oldest()
        return batch

    def metrics(self, batch: Batch) -> dict[str, float]:
        """``staleness``: the largest lag (policy versions) of the samples this step took
        past the staleness filter (those trained on and those dynamic sampling dropped; never
        above ``max_staleness``); the mean lag of the samples trained on; stale samples
        dropped this step; generations in flight."""
        current = self.run.version
        lag = [current - self.versions.get(id(c), batch.version) for c in batch.completions]
        return {"staleness": float(max((current - v for v in self.versions.values()),
                                       default=0)),
                "async/staleness_mean": sum(lag) / max(len(lag), 1),
                "async/dropped_stale": float(self.dropped),
                "async/in_flight": float(len(self.buffer))}

    def sync(self, timer: PhaseTimer) -> None:
        """Publish the updated policy weights without waiting for the workers' generations:
        learner rank 0 broadcasts and the workers stage them (collective), or the driver posts
        them (object store); workers load them at their next chunk or turn boundary."""
        run = self.run
        transport, backend, _ = run.weight_transport(staged=True)
        run.transport = transport
        with timer("sync"):
            if transport == "collective":
                run.version = self.pool.publish_collective(
                    run.policy, backend=backend,
                    bucket_bytes=int(run.rc.weight_sync_bucket_mb * 2**20))
            else:
                run.version = self.pool.publish_weights(run.policy.weights_for_sync())
        run.ctx.mark_rollout_weights(f"{run.stage.name}@{run.step}")

    def close(self) -> None:
        """Wait out the generations still in flight (their samples are discarded) and have
        every worker load the newest weights, so the pool's next user sees the final policy."""
        wait = self.pool.wait_episodes if self.episodes else self.pool.wait_shard
        while len(self.buffer):
            shards, _, _ = self.buffer.pop()
            for shard in shards:
                wait(shard, **self.run.sampling())
        self.pool.pull_weights()
        self.run.sampler_before_prefetch = None
