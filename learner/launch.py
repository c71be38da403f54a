"""Learner groups: ``world_size`` ranks of ``Learner`` driven as one.

* ``LearnerGroup`` wraps ``Learner`` with ``ray.remote`` (the only place that happens), one actor
  per rank. The driver picks ``MASTER_ADDR`` (its node IP) and a free ``MASTER_PORT``; rank 0 is
  pinned to the driver's node so that address is really its own (that node needs room for
  it). With a ``placement`` (``rlsys.placement``: custom resources, node labels) every rank
  is spawned under it, and rank 0 is pinned to the node a probe task under the same
  placement landed on (its IP and a port free there become the master address). On CPU
  each actor runs ``floor(num_cpus_per_actor)`` torch threads (at least 1).
  Checkpoint directories must be on a file system every rank sees.
* ``InProcessLearnerGroup``: the same interface for ``world_size == 1`` without Ray (tests,
  debugging under a debugger).

Every fan-out waits with a timeout. A rank whose Python code raised gives ``LearnerCallError``
(method, rank, its exception); a rank whose process died, or that did not answer in time, gives
``LearnerLostError`` (``learner.errors``) naming the rank, its pid, the method and the rank's
worker log file (read from the actor's own stdout/stderr at start, so it is right wherever Ray
or the run routes worker output). ``shard`` splits micro-batches evenly across ranks.
This module does not build batches or decide what to train.
"""

from __future__ import annotations

import os
import re
import socket
import time
from collections.abc import Sequence
from typing import Any, TypeVar

from learner.errors import LearnerCallError, LearnerLostError
from learner.learner import Learner
from rlsys.placement import describe, node_address, placement_line, placement_options, probe_node

#: seconds a rank's collective error waits for Ray to report a dead peer (``_wait``)
_PEER_GRACE_S = 5.0

__all__ = ["InProcessLearnerGroup", "LearnerCallError", "LearnerGroup", "LearnerLostError",
           "shard"]

T = TypeVar("T")


def shard(items: Sequence[T], world_size: int) -> list[list[T]]:
    """Split ``items`` into ``world_size`` contiguous lists of equal length (rank r gets the
    r-th). Every rank must take part in every step (ZeRO collectives), so the length must be a
    multiple of ``world_size``."""
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    if len(items) == 0 or len(items) % world_size:
        raise ValueError(
            f"cannot shard {len(items)} micro-batches evenly over {world_size} ranks; "
            "pass a positive multiple of the world size"
        )
    size = len(items) // world_size
    return [list(items[r * size : (r + 1) * size]) for r in range(world_size)]


def free_port(host: str = "") -> int:
    """A TCP port that was free on this machine a moment ago (for MASTER_PORT)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class _GroupMixin:
    """Conveniences shared by both groups, on top of ``call`` / ``call_sharded``."""

    world_size: int

    def call(self, method: str, *args: Any, **kwargs: Any) -> list[Any]:  # pragma: no cover
        """Run ``method(*args, **kwargs)`` on every rank; results in rank order."""
        raise NotImplementedError

    def call_sharded(self, method: str, shards: Sequence[Any], **kwargs: Any) -> list[Any]:
        """Run ``method(shards[r], **kwargs)`` on rank ``r``; results in rank order."""
        raise NotImplementedError  # pragma: no cover

    def train(self, method: str, micro_batches: Sequence[Any], **kwargs: Any) -> dict[str, float]:
        """Shard ``micro_batches`` over the ranks, run ``method`` (``train_sft``, ``train_dpo``,
        ``train_policy``, ``train_value``) everywhere, return the (global) metrics of rank 0."""
        return self.call_sharded(method, shard(micro_batches, self.world_size), **kwargs)[0]

    def state_dict_for_sync(self, dtype: str | None = None) -> dict[str, Any]:
        """Full weights gathered on rank 0 (every rank takes part)."""
        return self.call("state_dict_for_sync", dtype)[0]

    # the actors.collective.WeightSender side of a driver-free weight sync
    def open_weight_group(self, world_size: int, epoch: int, backend: str,
                          timeout_s: float) -> dict[str, Any]:
        """Rank 0 hosts a new weight group's store and returns its spec, at rank 0's own node
        address (``LearnerGroup.workers``: with a ``placement`` rank 0 need not be on the
        driver's node; else the driver's)."""
        import ray

        workers = getattr(self, "workers", None)
        address = workers[0]["ip"] if workers and "ip" in workers[0] else \
            ray.util.get_node_ip_address() if ray.is_initialized() else "127.0.0.1"
        return self.call("open_weight_group", address, world_size, epoch, backend, timeout_s)[0]

    def join_weight_group(self, spec: dict[str, Any]) -> None:
        """Rank 0 joins the group (blocks until every rollout worker has joined)."""
        self.call("join_weight_group", spec)

    def send_weights(self, version: int, bucket_bytes: int) -> dict[str, float]:
        """Every rank gathers, rank 0 broadcasts in buckets (a LoRA learner: the adapter only);
        rank 0's send statistics."""
        return self.call("send_weights", version, bucket_bytes)[0]

    def ipc_payload(self, version: int) -> dict[str, Any]:
        """Every rank gathers; rank 0 exports its weights (LoRA: the adapter) as CUDA-IPC
        handles to GPU buffers it keeps until ``release_ipc`` (colocated rollout workers)."""
        return self.call("ipc_payload", version)[0]

    def release_ipc(self) -> None:
        """Rank 0 frees the buffers of the last ``ipc_payload``."""
        self.call("release_ipc")

    def gpu_uuid(self) -> str | None:
        """Rank 0's GPU UUID (None on CPU)."""
        return self.call("gpu_uuid")[0]

    def save_checkpoint(
        self, path: str, *, extra_state: dict[str, Any] | None = None, training_state: bool = True
    ) -> None:
        """Atomic checkpoint written by all ranks together (``training_state=False``: weights
        only, see ``Learner.save_checkpoint``)."""
        self.call("save_checkpoint", path, extra_state=extra_state, training_state=training_state)

    def load_checkpoint(self, path: str) -> dict[str, Any]:
        """Restore every rank; returns the saved ``extra_state``."""
        return self.call("load_checkpoint", path)[0]


class InProcessLearnerGroup(_GroupMixin):
    """A single ``Learner`` in this process behind the ``LearnerGroup`` interface."""

    def __init__(self, *, master_port: int | None = None, learner_cls: type = Learner,
                 **learner_kwargs: Any) -> None:
        self.world_size = 1
        self.learner = learner_cls(
            rank=0,
            world_size=1,
            master_addr="127.0.0.1",
            master_port=master_port or free_port("127.0.0.1"),
            **learner_kwargs,
        )

    def call(
        self, method: str, *args: Any, timeout_s: float | None = None, **kwargs: Any
    ) -> list[Any]:
        """Run ``method`` on the one rank; errors are re-raised as ``LearnerCallError``.
        ``timeout_s`` is accepted for interface parity and ignored (the call is synchronous)."""
        try:
            return [getattr(self.learner, method)(*args, **kwargs)]
        except Exception as err:
            raise LearnerCallError(f"learner rank 0 failed in {method}: {err!r}") from err

    def call_sharded(
        self, method: str, shards: Sequence[Any], *, timeout_s: float | None = None, **kwargs: Any
    ) -> list[Any]:
        """Run ``method(shards[0], **kwargs)`` (``timeout_s`` ignored, see ``call``)."""
        if len(shards) != 1:
            raise ValueError(f"{method}: expected 1 shard for world_size 1, got {len(shards)}")
        return self.call(method, shards[0], **kwargs)

    def shutdown(self) -> None:
        """Drop the learner (the process group stays for later in-process learners)."""
        self.learner = None  # type: ignore[assignment]


def cpu_threads(num_cpus: float) -> int:
    """Torch threads for an actor holding ``num_cpus`` Ray CPUs: ``floor``, at least 1."""
    return max(1, int(num_cpus))


class LearnerGroup(_GroupMixin):
    """``world_size`` Ray actors running ``learner_cls`` (default ``Learner``; a subclass such
    as ``learner.reward.RewardLearner``), one per rank; ``log_name`` names their log files
    (``LOG_NAME-RANK.log`` under the run's log dir when the run routes worker output)."""

    def __init__(
        self,
        world_size: int,
        *,
        num_cpus_per_actor: float = 1,
        num_gpus_per_actor: float = 0,
        timeout_s: float = 600.0,
        init_timeout_s: float = 600.0,
        learner_cls: type = Learner,
        log_name: str = "learner",
        placement: dict[str, Any] | None = None,
        **learner_kwargs: Any,
    ) -> None:
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        from rlsys.worker_logs import actor_log_env

        if not ray.is_initialized():
            raise RuntimeError("LearnerGroup needs a running Ray: call ray.init() first")
        self.world_size, self.timeout_s = world_size, timeout_s
        placed = placement_options(placement)
        master_addr, master_port = ray.util.get_node_ip_address(), free_port()
        rank0_node = ray.get_runtime_context().get_node_id()
        if placed:  # rank 0 (MASTER_ADDR) goes where the placement allows: ask that node
            where = probe_node(placed, init_timeout_s)
            if where is None:
                raise LearnerLostError(
                    f"no Ray node could take learner rank 0 of {log_name!r} within "
                    f"{init_timeout_s} s (placement: {describe(placement)})",
                    ranks=[0], method="__init__", logs=[])
            master_addr, master_port, rank0_node = where["ip"], where["port"], where["node_id"]
        env_vars = {"LOCAL_RANK": "0"}  # Ray gives each GPU actor its own visible device 0
        if not num_gpus_per_actor:  # CPU: one torch thread per reserved CPU
            threads = cpu_threads(num_cpus_per_actor)
            env_vars["OMP_NUM_THREADS"] = str(threads)
            learner_kwargs.setdefault("num_threads", threads)
        remote_learner = ray.remote(learner_cls)
        self.actors = []
        _LIVE.add(self)  # until shutdown: a stage restart stops the groups a dead stage left
        for rank in range(world_size):
            options: dict[str, Any] = {
                **placed,
                "num_cpus": num_cpus_per_actor,
                "num_gpus": num_gpus_per_actor,
                # NAME-RANK names the rank's log file in a quiet run (rlsys.worker_logs)
                "runtime_env": {"env_vars": {**env_vars, **actor_log_env(f"{log_name}-{rank}")}},
            }
            if rank == 0:
                options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(
                    node_id=rank0_node, soft=False
                )
            self.actors.append(
                remote_learner.options(**options).remote(
                    rank=rank,
                    world_size=world_size,
                    master_addr=master_addr,
                    master_port=master_port,
                    **learner_kwargs,
                )
            )
        self.workers: list[dict[str, Any]] = [{} for _ in self.actors]
        self._wait("__init__", [a.__ray_ready__.remote() for a in self.actors], init_timeout_s)
        self.workers = self._wait("__init__", [a.__ray_call__.remote(worker_facts)
                                               for a in self.actors], init_timeout_s)
        if placement:
            for rank, facts in enumerate(self.workers):
                print(placement_line(f"{log_name}-{rank}", facts), flush=True)

    def call(
        self, method: str, *args: Any, timeout_s: float | None = None, **kwargs: Any
    ) -> list[Any]:
        """Run ``method(*args, **kwargs)`` on every rank; results in rank order."""
        refs = [getattr(a, method).remote(*args, **kwargs) for a in self.actors]
        return self._wait(method, refs, timeout_s or self.timeout_s)

    def call_sharded(
        self, method: str, shards: Sequence[Any], *, timeout_s: float | None = None, **kwargs: Any
    ) -> list[Any]:
        """Run ``method(shards[r], **kwargs)`` on rank ``r``; results in rank order."""
        if len(shards) != self.world_size:
            raise ValueError(f"{method}: expected {self.world_size} shards, got {len(shards)}")
        refs = [
            getattr(actor, method).remote(part, **kwargs)
            for actor, part in zip(self.actors, shards, strict=True)
        ]
        return self._wait(method, refs, timeout_s or self.timeout_s)

    def _wait(self, method: str, refs: list[Any], timeout_s: float) -> list[Any]:
        """Collect results in rank order; the first failing rank is reported at once (the others
        are usually stuck in a collective waiting for it) -- except that a rank's own error
        waits up to ``_PEER_GRACE_S`` for Ray to report a dead peer, whose death it usually is
        (a collective's "connection reset"): then the dead rank is reported."""
        import ray
        from ray.exceptions import RayActorError

        rank_of = {ref: rank for rank, ref in enumerate(refs)}
        results: dict[int, Any] = {}
        pending, deadline = list(refs), time.monotonic() + timeout_s
        while pending:
            remaining = deadline - time.monotonic()
            done, pending = ray.wait(pending, num_returns=1, timeout=max(remaining, 0))
            if not done:
                late = sorted(rank_of[ref] for ref in pending)
                raise LearnerLostError(
                    f"learner rank(s) {late} did not finish {method} within {timeout_s} s; "
                    f"{self._logs_text(late)}", ranks=late, method=method,
                    logs=self._logs(late))
            for ref in done:
                rank = rank_of[ref]
                try:
                    results[rank] = ray.get(ref)
                except RayActorError as err:  # the process died / is gone
                    raise self._lost(rank, method, err) from err
                except Exception as err:
                    # a peer's death often surfaces first as this rank's collective error
                    # (connection reset): give Ray a moment to report a dead rank instead
                    lost = self._dead_peer(method, pending, rank_of,
                                           min(_PEER_GRACE_S, max(deadline - time.monotonic(), 0)))
                    if lost is not None:
                        raise lost from err
                    cause = getattr(err, "cause", None) or err  # the rank's own exception
                    raise LearnerCallError(
                        f"learner rank {rank} failed in {method}: "
                        f"{type(cause).__name__}: {cause}"
                    ) from err
        return [results[rank] for rank in range(len(refs))]

    def _lost(self, rank: int, method: str, err: BaseException) -> LearnerLostError:
        pid = self.workers[rank].get("pid") or _pid_in(str(err))
        return LearnerLostError(
            f"learner rank {rank} (pid {pid or '?'}) died in {method}: "
            f"{_death_reason(err)}; {self._logs_text([rank])}",
            ranks=[rank], method=method, logs=self._logs([rank]))

    def _dead_peer(self, method: str, pending: list[Any], rank_of: dict[Any, int],
                   grace_s: float) -> LearnerLostError | None:
        """Within ``grace_s``, the ``LearnerLostError`` of a pending rank that died, if any."""
        import ray
        from ray.exceptions import RayActorError

        if not pending:
            return None
        done, _ = ray.wait(pending, num_returns=len(pending), timeout=grace_s)
        for ref in done:
            try:
                ray.get(ref)
            except RayActorError as err:
                return self._lost(rank_of[ref], method, err)
            except Exception:  # noqa: BLE001 - another rank's own error: not a death
                continue
        return None

    def _logs(self, ranks: list[int]) -> list[str]:
        return [log for rank in ranks for log in self.workers[rank].get("logs", [])]

    def _logs_text(self, ranks: list[int]) -> str:
        logs = self._logs(ranks)
        if logs:
            return "its log: " + ", ".join(logs) if len(ranks) == 1 else "logs: " + ", ".join(logs)
        return "logs: the Ray session's logs/ directory (worker-*.out/.err)"

    def shutdown(self) -> None:
        """Kill every actor (their process group dies with them)."""
        import ray

        for actor in self.actors:
            try:
                ray.kill(actor)
            except Exception:  # noqa: BLE001 - an actor of a lost node may be gone already
                pass
        self.actors = []
        _LIVE.discard(self)


#: groups started and not yet shut down (``shutdown_live_groups``)
_LIVE: set[LearnerGroup] = set()


def shutdown_live_groups() -> int:
    """Shut down every ``LearnerGroup`` of this process not yet shut down (the surviving ranks
    of a stage that lost one, before the stage is restarted); returns how many."""
    groups = list(_LIVE)
    for group in groups:
        group.shutdown()
    return len(groups)


def worker_facts(_instance: Any = None) -> dict[str, Any]:
    """Runs inside a rank's actor (``__ray_call__``): its pid, node (``node_address``) and
    the files its stdout and stderr go to (``/proc/self/fd``; Ray points them at the worker's
    ``.out``/``.err`` log). Ray's state API would need the dashboard, which a local run does
    not start."""
    logs: list[str] = []
    for fd in (1, 2):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # not Linux, or closed
            continue
        if target.startswith("/") and target not in logs:  # a file, not a pipe or a tty
            logs.append(target)
    return {**node_address(), "pid": os.getpid(), "logs": logs}


def _death_reason(err: BaseException) -> str:
    """One line from Ray's (multi-line) actor-death message."""
    text = str(err)
    found = re.search(r"Worker exit detail: ([^.\n]*)", text) or \
        re.search(r"The actor is dead because ([^.\n]*)", text)
    if found:
        return found.group(1).strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__


def _pid_in(text: str) -> int | None:
    found = re.search(r"\bpid: (\d+)", text)
    return int(found.group(1)) if found else None
