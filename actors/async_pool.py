"""Async-mode methods of ``actors.launch.RolloutPool`` (a mixin): publish weights without
waiting for the workers, and start generations that load the newest weights at every chunk
(single-turn) or turn (multi-turn episodes) boundary.

Two ways to publish (``rlsys.controller.async_rollout.AsyncFeed.sync`` picks the one
``rollout.weight_sync`` resolves to):

* ``publish_collective``: learner rank 0 broadcasts over the pool's weight group; every worker
  receives in its ``weights`` concurrency group, beside the generation it is running, into
  host memory (``RolloutWorker.stage_weights``). The driver never holds the weights.
* ``publish_weights``: the driver ``ray.put``s the weights once and posts the ref on the
  pool's ``WeightsBoard``; workers fetch them through a ``BoardSource`` (the fallback).

Either way the generating thread loads what is newest at its next boundary
(``RolloutWorker.pull_weights``) and tags each generated token with that version. This module
does not decide when to publish or what is stale (``rlsys.controller.async_rollout``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import ray

from actors.shards import PendingShard, shard_bounds
from actors.weight_sync import PackedState, pack_state_dict


class AsyncRolloutMixin:
    """Async methods of ``RolloutPool``; needs its ``handles``, ``timeout_s``, ``_weights``,
    ``weights_version``, ``_resolve``, ``_shard_kwargs`` and ``_collective_for``."""

    handles: list[Any]
    timeout_s: float
    _weights: tuple[Any, int] | None
    _ipc_sender: Any
    weights_version: int

    if TYPE_CHECKING:  # provided by RolloutPool / _Pool
        def _resolve(self, shard: PendingShard, method: str, phase: str,
                     kwargs: dict[str, Any]) -> Any: ...

        @staticmethod
        def _shard_kwargs(sampling: dict[str, Any], start: int) -> dict[str, Any]: ...

        def _collective_for(self, sender: Any, bucket_bytes: int, backend: str) -> Any: ...

    def publish_weights(self, state: Mapping[str, Any] | PackedState) -> int:
        """Make ``state`` the pool's newest weights without waiting for the workers
        (``ray.put`` once, posted on the pool's ``WeightsBoard``); a worker loads them at its
        next boundary (or ``pull_weights``). Returns the new version; a restarted worker gets
        these weights like after ``sync_weights``."""
        payload = state if isinstance(state, PackedState) else pack_state_dict(state)
        version = self.weights_version + 1
        self._weights = (ray.put(payload), version)
        ray.get(self._board().post.remote(version, [self._weights[0]]), timeout=self.timeout_s)
        return version

    def publish_collective(self, sender: Any, *, bucket_bytes: int = 256 << 20,
                           backend: str = "gloo") -> int:
        """Learner rank 0 (``sender``) broadcasts its weights over the pool's weight group;
        every worker stages them beside its running generation and loads them at its next
        boundary. Returns the new version once every worker holds it (staged or loaded); a
        restarted worker re-joins and gets the same weights and version."""
        version = self.weights_version + 1
        self._collective_for(sender, bucket_bytes, backend).push(version, staged=True)
        self._weights, self._ipc_sender = (None, version), None
        return version

    def generate_partial_async(self, prompts: Sequence[Any], *, chunk_tokens: int,
                               **sampling: Any) -> list[PendingShard]:
        """Start partial-rollout generation (``RolloutWorker.generate_partial``): one shard of
        ``prompts`` per worker, ``chunk_tokens`` per chunk, newer weights loaded between
        chunks. Wait with ``wait_shard``; a dead worker's retry there runs plain ``generate``
        on the restarted worker's (newest) weights, without ``token_versions``."""
        return self._start_partial("generate_partial", prompts,
                                   dict(sampling, chunk_tokens=chunk_tokens))

    def episodes_partial_async(self, records: Sequence[Any], **sampling: Any
                               ) -> list[PendingShard]:
        """Start multi-turn episodes that load newer weights before every turn
        (``RolloutWorker.run_episodes_partial``): one shard of ``records`` per worker. Wait
        with ``wait_episodes``; a retry there runs plain ``run_episodes``."""
        return self._start_partial("run_episodes_partial", records, sampling)

    def _start_partial(self, method: str, items: Sequence[Any], sampling: dict[str, Any]
                       ) -> list[PendingShard]:
        source, shards = self._board_source(), []
        for worker, (start, end) in enumerate(shard_bounds(len(items), len(self.handles))):
            kwargs = self._shard_kwargs(sampling, start)
            ref = getattr(self.handles[worker], method).remote(
                list(items[start:end]), weights_source=source, **kwargs)
            shards.append(PendingShard(worker, start, [list(items[start:end])], ref))
        return shards

    def pull_weights(self) -> list[int]:
        """Every worker loads the newest weights now, staged or published (end of an async
        stage, so the next use of the pool sees them); returns each worker's version."""
        source = self._board_source()
        refs = [h.pull_weights.remote(source) for h in self.handles]
        return [self._resolve(PendingShard(i, 0, [source], ref), "pull_weights", "sync", {})
                for i, ref in enumerate(refs)]

    def _board(self) -> Any:
        """The pool's ``WeightsBoard`` actor (started on first use; no CPUs reserved)."""
        if getattr(self, "_board_handle", None) is None:
            self._board_handle = ray.remote(num_cpus=0)(WeightsBoard).remote()
            if self._weights is not None and self._weights[0] is not None:
                # weights synced through the object store before async mode started
                ray.get(self._board_handle.post.remote(self._weights[1], [self._weights[0]]),
                        timeout=self.timeout_s)
        return self._board_handle

    def _board_source(self) -> BoardSource:
        return BoardSource(self._board(), self.timeout_s)


class WeightsBoard:
    """The newest published weights of a rollout pool: ``(version, [payload ref])``. The ref
    sits in a list so Ray passes it on as a ref, not as the (large) payload."""

    def __init__(self) -> None:
        self.version, self.refs = 0, []

    def post(self, version: int, refs: list[Any]) -> None:
        """Publish ``version`` (its payload ref in ``refs``); an older version is ignored."""
        if version > self.version:
            self.version, self.refs = version, refs

    def latest(self) -> tuple[int, list[Any]]:
        """The newest ``(version, [payload ref])``; ``(0, [])`` before any post."""
        return self.version, self.refs


class BoardSource:
    """A rollout worker's ``WeightsSource`` reading a ``WeightsBoard`` (picklable: an actor
    handle and a deadline): newer weights as ``(version, payload)``, else None."""

    def __init__(self, board: Any, timeout_s: float) -> None:
        self.board, self.timeout_s = board, timeout_s

    def __call__(self, known: int) -> tuple[int, Any] | None:
        version, refs = ray.get(self.board.latest.remote(), timeout=self.timeout_s)
        if version <= known or not refs:
            return None
        return version, ray.get(refs[0], timeout=self.timeout_s)
