"""Ray pools of rollout and reward workers -- the only module that calls ``ray.remote``.

A pool owns ``num`` actors wrapping the plain ``RolloutWorker`` / ``RewardWorker`` classes. Work
is split into contiguous shards (one per worker, order preserved on reassembly) that run in
parallel. Every remote call has a deadline; a failure or timeout raises ``WorkerError`` naming
the pool, the worker (index, pid), the phase (``"generate"``, ``"score"``, ``"sync"``,
``"start"``), the cause and, in a quiet run, the worker's log file (``RUN_DIR/logs/
rollout-0.log``: each actor is named ``POOL-INDEX`` through its runtime env, see
``rlsys.worker_logs``). A worker that died (``ray.exceptions.RayActorError``) is restarted
once -- with the latest weights re-applied for rollout workers -- and its shard retried.
With a placement (``rlsys.placement``: custom resources, node labels) every spawn and restart
uses it, prints one ``[placement]`` line, and waits for the new actor at most the call
timeout (soft ``prefer_labels`` let the workers of a lost node come back on other nodes).

Async overlap: ``RolloutPool.generate_async`` and ``RewardPool.score_async`` return
``PendingShard`` objects (each holds an ``ObjectRef``); the RL controller waits for each
generation shard and sends it for scoring while the later shards still generate.

This module does not decide what to generate or how to use scores (that is the controller).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError

from actors.async_pool import AsyncRolloutMixin
from actors.collective import WeightSender
from actors.collective_sync import CollectiveSync
from actors.errors import WorkerError
from actors.reward_worker import RewardWorker
from actors.rollout import RolloutWorker
from actors.rollout_receive import WEIGHTS_GROUP
from actors.shards import PendingShard, shard_bounds
from actors.weight_sync import PackedState, pack_state_dict
from rewards import RewardItem, Score
from rlsys import worker_logs
from rlsys.placement import node_address, placement_line, placement_options
from rlsys.types import Completion


class _Pool:
    """Actors of one plain class: spawn, restart, and deadline-bounded gets with retry."""

    name = "pool"
    #: Ray concurrency groups of the actor class (threads beside the default one), if any
    concurrency_groups: dict[str, int] | None = None

    def __init__(self, cls: type, num: int, args: tuple, kwargs: dict[str, Any], *,
                 num_cpus: float, timeout_s: float, num_gpus: float = 0,
                 placement: dict[str, Any] | None = None) -> None:
        if num < 1:
            raise ValueError(f"{self.name}: num workers must be >= 1, got {num}")
        # Ray hides GPUs from an actor that reserves none, so a GPU engine must ask for one.
        extra: dict[str, Any] = \
            {"concurrency_groups": self.concurrency_groups} if self.concurrency_groups else {}
        self._remote_cls = ray.remote(num_cpus=num_cpus, num_gpus=num_gpus, max_restarts=0,
                                      **extra)(cls)
        # custom resources / node labels (rlsys.placement); a restart places the new actor
        # under the same options, bounded by timeout_s (soft labels let it move to other nodes)
        self._placement = placement
        self._options = placement_options(placement)
        self._args, self._kwargs = args, kwargs
        self.timeout_s = timeout_s
        self.log_dir = worker_logs.job_log_dir(ray.get_runtime_context().runtime_env)
        self.handles: list[Any] = [self._spawn(i) for i in range(num)]
        self.pids: list[int | None] = [None] * num
        pings = [h.ping.remote() for h in self.handles]
        try:
            for i, ref in enumerate(pings):
                self.pids[i] = self._get(i, ref, "start")["pid"]
        except WorkerError:
            self.close()  # no half-started pool is left holding CPUs
            raise
        for i in range(num):
            self._show_placement(i)

    def _spawn(self, index: int) -> Any:
        """A new actor for slot ``index``, named ``POOL-INDEX`` for its log file (quiet runs)."""
        options: dict[str, Any] = dict(self._options)
        if self.log_dir:
            options["runtime_env"] = {
                "env_vars": worker_logs.actor_log_env(f"{self.name}-{index}")}
        return self._remote_cls.options(**options).remote(*self._args, **self._kwargs)

    def log_file(self, index: int) -> str | None:
        """The log file of worker ``index`` in a quiet run (None: Ray's own worker logs)."""
        return str(worker_logs.log_file(self.log_dir, f"{self.name}-{index}")) \
            if self.log_dir else None

    def _get(self, index: int, ref: Any, phase: str, timeout: float | None = None) -> Any:
        try:
            return ray.get(ref, timeout=self.timeout_s if timeout is None else timeout)
        except (RayActorError, GetTimeoutError) as exc:
            raise WorkerError(self.name, index, self.pids[index], phase, exc,
                              self.log_file(index)) from exc
        except RayTaskError as exc:
            raise WorkerError(self.name, index, self.pids[index], phase, exc.cause or exc,
                              self.log_file(index)) from exc

    def restart(self, index: int) -> None:
        """Kill worker ``index`` (if alive) and start a fresh one in its place."""
        try:
            ray.kill(self.handles[index], no_restart=True)
        except Exception:  # noqa: BLE001 - already dead is fine
            pass
        self.pids[index] = self._start_again(index)
        self._show_placement(index)
        self._after_restart(index)

    def _start_again(self, index: int) -> int:
        """Spawn slot ``index`` until a new actor answers; returns its pid. A node that is
        dying may still take the new actor, which then dies before it runs: spawn again
        (after 1 s) until ``timeout_s`` in all has passed, then raise ``WorkerError``."""
        deadline = time.monotonic() + self.timeout_s
        while True:
            self.handles[index] = self._spawn(index)
            left = max(deadline - time.monotonic(), 1.0)
            try:
                return self._get(index, self.handles[index].ping.remote(), "start", left)["pid"]
            except WorkerError as exc:
                if not isinstance(exc.cause, RayActorError) or time.monotonic() + 1 > deadline:
                    raise
            time.sleep(1.0)

    def _show_placement(self, index: int) -> None:
        """With a placement: print where worker ``index`` runs (one ``[placement]`` line)."""
        if self._placement:
            facts = self._get(index, self.handles[index].__ray_call__.remote(node_address),
                              "start")
            print(placement_line(f"{self.name}-{index}", facts), flush=True)

    def _after_restart(self, index: int) -> None:
        """Hook: bring a fresh worker up to date (rollout pools re-apply weights)."""

    def _resolve(self, shard: PendingShard, method: str, phase: str,
                 kwargs: dict[str, Any]) -> Any:
        """Wait for ``shard``; on a dead worker restart it and resubmit the same inputs once."""
        try:
            return self._get(shard.worker, shard.ref, phase)
        except WorkerError as exc:
            if not isinstance(exc.cause, RayActorError):
                raise
        self.restart(shard.worker)
        handle = self.handles[shard.worker]
        shard.ref = getattr(handle, method).remote(*shard.inputs, **kwargs)
        return self._get(shard.worker, shard.ref, phase)

    def close(self) -> None:
        """Kill every worker of the pool."""
        for handle in self.handles:
            try:
                ray.kill(handle, no_restart=True)
            except Exception:  # noqa: BLE001 - best effort on shutdown
                pass
        self.handles = []


class RolloutPool(AsyncRolloutMixin, _Pool):
    """``num`` Ray ``RolloutWorker`` actors with sharded generation and weight sync."""

    name = "rollout"
    # async mode receives weights in a second thread while the default one generates
    concurrency_groups = {WEIGHTS_GROUP: 1}

    def __init__(self, num: int, engine: str, model_path: str, *,
                 engine_kwargs: dict[str, Any] | None = None, chat_template: bool = True,
                 system_prompt: str | None = None, num_cpus: float = 1,
                 num_gpus: float = 0, timeout_s: float = 600.0,
                 placement: dict[str, Any] | None = None) -> None:
        kwargs = {"engine_kwargs": engine_kwargs or {}, "chat_template": chat_template,
                  "system_prompt": system_prompt}
        self._weights: tuple[Any, int] | None = None  # (payload ref | None: collective, version)
        self._collective: CollectiveSync | None = None  # driver-free sync (sync_collective)
        self._ipc_sender: Any = None  # the learner of the last colocated CUDA-IPC sync
        super().__init__(RolloutWorker, num, (engine, model_path), kwargs, num_cpus=num_cpus,
                         num_gpus=num_gpus, timeout_s=timeout_s,
                         placement=placement)

    @property
    def weights_version(self) -> int:
        """Version of the latest weights pushed with ``sync_weights`` (0 = initial)."""
        return self._weights[1] if self._weights else 0

    def _after_restart(self, index: int) -> None:
        if self._weights is not None:
            ref, version = self._weights
            if ref is None and self._ipc_sender is not None:
                self.sync_ipc(self._ipc_sender, [index])  # rank 0 exports the weights again
                return
            if ref is None and self._collective is not None:  # rank 0 re-sends over a new group
                self._collective.push(version, [index])
                return
            self._get(index, self.handles[index].update_weights.remote(ref, version), "sync")

    def generate_async(self, prompts: Sequence[Any], **sampling: Any) -> list[PendingShard]:
        """Start generation: one contiguous shard of ``prompts`` per worker.

        ``sampling`` holds ``RolloutWorker.generate`` keywords; a ``seed`` becomes
        ``seed + shard start`` per shard, so a retried shard resamples the same tokens.
        """
        return self._start("generate", prompts, sampling)

    def _start(self, method: str, items: Sequence[Any], sampling: dict[str, Any]
               ) -> list[PendingShard]:
        shards = []
        for worker, (start, end) in enumerate(shard_bounds(len(items), len(self.handles))):
            kwargs = self._shard_kwargs(sampling, start)
            ref = getattr(self.handles[worker], method).remote(list(items[start:end]), **kwargs)
            shards.append(PendingShard(worker, start, [list(items[start:end])], ref))
        return shards

    @staticmethod
    def _shard_kwargs(sampling: dict[str, Any], start: int) -> dict[str, Any]:
        kwargs = dict(sampling)
        if kwargs.get("seed") is not None:
            kwargs["seed"] = kwargs["seed"] + start
        return kwargs

    def wait_shard(self, shard: PendingShard, **sampling: Any) -> list[Completion]:
        """Result of one generation shard, ``prompt_index`` made global; retries a dead worker."""
        return self._finish("generate", shard, sampling)

    def _finish(self, method: str, shard: PendingShard, sampling: dict[str, Any]
                ) -> list[Completion]:
        completions = self._resolve(shard, method, "generate",
                                    self._shard_kwargs(sampling, shard.start))
        for completion in completions:
            completion.prompt_index += shard.start
        return completions

    def episodes_async(self, records: Sequence[Any], **sampling: Any) -> list[PendingShard]:
        """Start multi-turn episodes (``RolloutWorker.run_episodes``): one contiguous shard of
        ``records`` per worker; ``sampling`` holds its keywords (``env``, ``n``, ...)."""
        return self._start("run_episodes", records, sampling)

    def wait_episodes(self, shard: PendingShard, **sampling: Any) -> list[Completion]:
        """One episode shard's trajectories, ``prompt_index`` global; retries a dead worker."""
        return self._finish("run_episodes", shard, sampling)

    def generate(self, prompts: Sequence[Any], **sampling: Any) -> list[Completion]:
        """Sharded ``generate``: ``n`` completions per prompt, grouped in prompt order."""
        shards = self.generate_async(prompts, **sampling)
        return [c for shard in shards for c in self.wait_shard(shard, **sampling)]

    def sync_weights(self, state: Mapping[str, Any] | PackedState) -> int:
        """Push new weights to every worker (``ray.put`` once); returns the new version.

        The payload ref is kept so a restarted worker gets the same weights and version.
        """
        payload = state if isinstance(state, PackedState) else pack_state_dict(state)
        version = self.weights_version + 1
        self._weights = (ray.put(payload), version)
        refs = [h.update_weights.remote(self._weights[0], version) for h in self.handles]
        for i, ref in enumerate(refs):
            shard = PendingShard(i, 0, [self._weights[0], version], ref)
            self._resolve(shard, "update_weights", "sync", {})
        return version

    def sync_collective(self, sender: WeightSender, *, bucket_bytes: int = 256 << 20,
                        backend: str = "gloo", into_engine: bool = False) -> int:
        """Driver-free sync: learner rank 0 (``sender``) broadcasts its weights to every worker
        over a weight group (``actors.collective_sync``); returns the new version. With
        ``into_engine`` (full weights only) an engine that joins itself (vLLM) receives in its
        own workers. A restarted worker re-joins (a new group epoch) and gets the same weights
        and version."""
        version = self.weights_version + 1
        self._collective_for(sender, bucket_bytes, backend, into_engine).push(version)
        self._weights, self._ipc_sender = (None, version), None
        return version

    def gpu_uuids(self) -> list[str | None]:
        """Each worker's GPU UUID (None on CPU), in worker order."""
        return [self._get(i, h.gpu_uuid.remote(), "start") for i, h in enumerate(self.handles)]

    def sync_ipc(self, sender: Any, indices: Sequence[int] | None = None) -> int:
        """Colocated GPU sync (``rollout.weight_sync: ipc``): learner rank 0 (``sender``,
        ``rlsys.controller.learners.Learners``) exports its weights as CUDA-IPC handles, every
        worker on the same GPU copies from them, then rank 0 frees its buffers. Only the
        handles (bytes) pass through the driver. Returns the new version (``indices``: re-send
        the current version to those workers only, after a restart)."""
        version = self.weights_version + (0 if indices is not None else 1)
        payload = sender.ipc_payload(version)
        try:
            for i in range(len(self.handles)) if indices is None else indices:
                self._get(i, self.handles[i].load_ipc.remote(payload, version), "sync")
        finally:
            sender.release_ipc()
        self._ipc_sender, self._weights = sender, (None, version)
        return version

    def _collective_for(self, sender: WeightSender, bucket_bytes: int, backend: str,
                        into_engine: bool = False) -> CollectiveSync:
        """The pool's weight group for ``sender`` (a new one when the sender, bucket size,
        backend or ``into_engine`` changed)."""
        current = self._collective
        if current is None or current.sender is not sender or \
                (current.bucket_bytes, current.backend, current.into_engine) != \
                (bucket_bytes, backend, into_engine):
            current = self._collective = CollectiveSync(self, sender, bucket_bytes=bucket_bytes,
                                                        backend=backend, into_engine=into_engine)
        return current


class RewardPool(_Pool):
    """``num`` Ray ``RewardWorker`` actors scoring ``RewardItem`` shards in parallel."""

    name = "reward"

    def __init__(self, num: int, reward_spec: dict[str, Any] | list[dict[str, Any]], *,
                 num_cpus: float = 1, timeout_s: float = 300.0,
                 placement: dict[str, Any] | None = None) -> None:
        self._next = 0
        super().__init__(RewardWorker, num, (reward_spec,), {}, num_cpus=num_cpus,
                         timeout_s=timeout_s, placement=placement)

    def score_async(self, items: Sequence[RewardItem], *, start: int = 0,
                    spread: bool = True) -> list[PendingShard]:
        """Start scoring: split ``items`` over all workers (``spread``) or send them to the
        next worker round-robin. ``start`` offsets the shards' positions."""
        if not spread:
            worker, self._next = self._next, (self._next + 1) % len(self.handles)
            ref = self.handles[worker].score.remote(list(items))
            return [PendingShard(worker, start, [list(items)], ref)]
        pending = []
        for worker, (lo, hi) in enumerate(shard_bounds(len(items), len(self.handles))):
            ref = self.handles[worker].score.remote(list(items[lo:hi]))
            pending.append(PendingShard(worker, start + lo, [list(items[lo:hi])], ref))
        return pending

    def wait(self, pending: Sequence[PendingShard]) -> list[Score]:
        """Scores of ``pending`` shards concatenated in order; retries a dead worker once."""
        return [s for shard in pending for s in self._resolve(shard, "score", "score", {})]

    def score(self, items: Sequence[RewardItem]) -> list[Score]:
        """Score ``items`` across the pool; one ``Score`` per item, in order."""
        return self.wait(self.score_async(items))


def launch_rollout_workers(num: int, engine: str, model_path: str,
                           engine_kwargs: dict[str, Any] | None = None, num_cpus: float = 1,
                           **kwargs: Any) -> RolloutPool:
    """Start ``num`` rollout actors (Ray must be initialised); ``kwargs`` go to ``RolloutPool``."""
    return RolloutPool(num, engine, model_path, engine_kwargs=engine_kwargs, num_cpus=num_cpus,
                       **kwargs)


def launch_reward_workers(num: int, reward_spec: dict[str, Any] | list[dict[str, Any]],
                          num_cpus: float = 1, **kwargs: Any) -> RewardPool:
    """Start ``num`` reward actors (Ray must be initialised); ``kwargs`` go to ``RewardPool``."""
    return RewardPool(num, reward_spec, num_cpus=num_cpus, **kwargs)
