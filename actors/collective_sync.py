"""Driver side of the driver-free weight sync: form the weight group, make both sides enter it.

``CollectiveSync`` belongs to one ``actors.launch.RolloutPool``. For a sync it asks the rollout
workers to ``receive_weights`` (Ray calls that return at once) and then the learner group to
``send_weights`` (learner rank 0 broadcasts over ``actors.collective``); the driver never holds
the weights. Who receives: the rollout actor (it loads into its engine), or, ``into_engine``,
the engine's own workers (vLLM: each vLLM worker is a member and reloads as the buckets arrive,
NCCL GPU to GPU on GPU). In async mode (``staged``) the actors receive in their ``weights``
concurrency group beside a running generation (``stage_weights``) and load at the next chunk or
turn. The group is formed on first use (learner rank 0 hosts the store on a port the OS picks)
and again, with the next epoch, whenever its members change -- a restarted worker gets a
group of rank 0 and itself only, receives the current weights and version, and the next full
sync re-forms the group with every worker. Any failure drops the group so the next sync
re-forms it. ``resolve_weight_sync`` turns ``rollout.weight_sync`` into a transport.

This module does not move tensors (``actors.collective``), gather them (the learner) or restart
workers (``actors.launch``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from actors.collective import WeightSender
from actors.rollout_receive import WEIGHTS_GROUP

WEIGHT_SYNC_MODES = ("auto", "collective", "ipc", "object_store")


#: how many rollout workers share learner rank 0's GPU (``colocation``)
COLOCATION = ("none", "some", "all")


def colocation(learner_gpu: str | None, worker_gpus: Sequence[str | None]) -> str:
    """``"all"`` when every rollout worker is on learner rank 0's GPU (same UUID), ``"some"``
    when a few are, ``"none"`` otherwise (or without GPUs).

    >>> colocation("GPU-a", ["GPU-a", "GPU-b"])
    'some'
    """
    if learner_gpu is None or not worker_gpus:
        return "none"
    same = [g == learner_gpu for g in worker_gpus]
    return "all" if all(same) else "some" if any(same) else "none"


def resolve_weight_sync(mode: str, *, learner_gpus: float, rollout_gpus: float,
                        pool_can_join: bool, engine: str = "hf",
                        into_engine: bool = False, staged: bool = False,
                        colocated: str = "none") -> tuple[str, str | None]:
    """``(transport, backend)`` for ``rollout.weight_sync = mode``: ``("collective", "gloo" |
    "nccl")``, ``("ipc", None)`` or ``("object_store", None)``.

    ``auto`` picks per hardware. Every rollout worker on learner rank 0's GPU (``colocated``
    ``"all"``, from ``colocation``): ``ipc`` -- rank 0 exports CUDA-IPC handles and the workers
    copy from them (``RolloutPool.sync_ipc``) -- in synchronous RL. Otherwise the collective
    whenever the pool's workers can join one (a real Ray ``RolloutPool``): NCCL when learner
    and rollout workers hold GPUs, none of them shares rank 0's GPU (NCCL refuses two ranks on
    one device) and the receiver holds the model on its GPU -- the ``hf`` rollout actor, or
    the vLLM workers when they join the group ``into_engine`` (full weights, synchronous RL);
    gloo otherwise (a vLLM actor receiving an adapter, or staging in async mode, takes it in
    host memory; a GPU shared with rank 0). ``ipc`` asked for needs GPUs on both sides
    (refused on CPU) and synchronous RL (refused ``staged``); a worker on another GPU fails
    its first sync with an error naming both GPUs.
    """
    if mode not in WEIGHT_SYNC_MODES:
        raise ValueError(f"rollout.weight_sync must be one of {WEIGHT_SYNC_MODES}, got {mode!r}")
    if colocated not in COLOCATION:
        raise ValueError(f"colocated must be one of {COLOCATION}, got {colocated!r}")
    if mode == "ipc":
        if not (learner_gpus and rollout_gpus):
            raise ValueError("rollout.weight_sync=ipc needs the learner and rollout workers on "
                             "one GPU (learner.num_gpus_per_rank and rollout.num_gpus_per_worker "
                             "> 0) and this run is on CPU; use auto, collective or object_store")
        if staged:
            raise ValueError("rollout.weight_sync=ipc is synchronous (the worker copies while "
                             "the learner holds the buffers); async_rollout needs auto, "
                             "collective or object_store")
        return "ipc", None
    if mode == "auto" and colocated == "all" and not staged and learner_gpus and rollout_gpus:
        return "ipc", None
    if mode == "object_store" or (mode == "auto" and not pool_can_join):
        return "object_store", None
    if not pool_can_join:
        raise ValueError("rollout.weight_sync=collective needs a Ray RolloutPool whose workers "
                         "can join a weight group (this pool has no sync_collective)")
    on_gpu = bool(learner_gpus and rollout_gpus) and (engine == "hf" or into_engine) and \
        colocated == "none"
    return "collective", "nccl" if on_gpu else "gloo"


class CollectiveSync:
    """The weight group of one rollout pool and one sender (see the module docstring).

    Args:
        pool: the ``RolloutPool`` (its ``handles``, ``timeout_s`` and ``_get``, which names the
            worker and phase on failure).
        sender: the learner side (``actors.collective.WeightSender``).
        bucket_bytes: bucket size of each broadcast.
        backend: ``"gloo"`` or ``"nccl"``.
        into_engine: full-weight syncs go straight into the engines' own workers where the
            engine joins the group itself (vLLM: every vLLM worker is a member and reloads as
            the buckets arrive); the rollout actor receives otherwise, and always in async
            mode (``staged``), which must not touch a generating engine.
    """

    def __init__(self, pool: Any, sender: WeightSender, *, bucket_bytes: int,
                 backend: str, into_engine: bool = False) -> None:
        self.pool, self.sender = pool, sender
        self.bucket_bytes, self.backend = int(bucket_bytes), backend
        self.into_engine = into_engine
        self.epoch = 0
        # the handles the group was formed with, and whether the engines joined themselves
        self._members: tuple[tuple[Any, ...], bool] | None = None
        self.last_stats: dict[str, float] = {}

    def push(self, version: int, indices: Sequence[int] | None = None, *,
             staged: bool = False) -> dict[str, float]:
        """Send the learner's current weights as ``version`` to workers ``indices`` (default:
        all); returns rank 0's send statistics. ``staged`` (async mode): the workers receive in
        their ``weights`` concurrency group beside a running generation and load at its next
        boundary (``RolloutWorker.stage_weights``), else they load now (``receive_weights``)."""
        indices = list(range(len(self.pool.handles)) if indices is None else indices)
        members = (tuple(self.pool.handles[i] for i in indices), self.into_engine and not staged)
        try:
            if self._members != members:
                self._form(indices, members, staged)
            refs = [self._method(i, "stage_weights" if staged else "receive_weights",
                                 staged).remote(version) for i in indices]
            self.last_stats = self.sender.send_weights(version, self.bucket_bytes)
            for i, ref in zip(indices, refs, strict=True):
                self.pool._get(i, ref, "sync")
        except BaseException:
            self._members = None  # a half-used group is never reused
            raise
        return self.last_stats

    def _method(self, index: int, name: str, staged: bool) -> Any:
        """Worker ``index``'s remote method ``name``; in its ``weights`` thread when staged."""
        method = getattr(self.pool.handles[index], name)
        return method.options(concurrency_group=WEIGHTS_GROUP) if staged else method

    def _form(self, indices: list[int], members: tuple[tuple[Any, ...], bool],
              staged: bool) -> None:
        into_engine = members[1]
        sizes = [self.pool._get(i, self.pool.handles[i].weight_group_size.remote(True), "join")
                 for i in indices] if into_engine else [1] * len(indices)
        self.epoch += 1
        spec = self.sender.open_weight_group(1 + sum(sizes), self.epoch, self.backend,
                                             self.pool.timeout_s)
        ranks = [1 + sum(sizes[:k]) for k in range(len(indices))]
        refs = [self._method(i, "join_weight_group", staged).remote(spec, rank, into_engine)
                for rank, i in zip(ranks, indices, strict=True)]
        self.sender.join_weight_group(spec)
        for i, ref in zip(indices, refs, strict=True):
            self.pool._get(i, ref, "join")
        self._members = members
