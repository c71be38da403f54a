"""Driver side of the driver-free weight sync: form the weight group, make both sides enter it.

``CollectiveSync`` belongs to one ``actors.launch.RolloutPool``. For a sync it asks the rollout
workers to ``receive_weights`` (Ray calls that return at once) and then the learner group to
``send_weights`` (learner rank 0 broadcasts over ``actors.collective``); the driver never holds
the weights. The group is formed on first use (learner rank 0 hosts the store on a port the OS
picks) and again, with the next epoch, whenever its members change -- a restarted worker gets a
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


def resolve_weight_sync(mode: str, *, learner_gpus: float, rollout_gpus: float,
                        pool_can_join: bool, engine: str = "hf") -> tuple[str, str | None]:
    """``(transport, backend)`` for ``rollout.weight_sync = mode``: ``("collective", "gloo" |
    "nccl")`` or ``("object_store", None)``.

    ``auto`` picks the collective whenever the pool's workers can join one (a real Ray
    ``RolloutPool``): NCCL when learner and rollout workers both hold GPUs and the engine is
    ``hf`` (the rollout actor itself holds the model), gloo otherwise (a vLLM engine's GPU
    workers are separate processes: its actor receives in host memory and loads through
    vLLM). It never picks ``ipc`` (colocation on one GPU is not modelled by the recipe);
    ``ipc`` is refused: on CPU there is no CUDA IPC, and on GPU the colocated path
    (``actors.weight_sync.cuda_ipc_handles``) is not wired into the loop yet.
    """
    if mode not in WEIGHT_SYNC_MODES:
        raise ValueError(f"rollout.weight_sync must be one of {WEIGHT_SYNC_MODES}, got {mode!r}")
    if mode == "ipc":
        where = "this run is on CPU" if not (learner_gpus and rollout_gpus) else \
            "the colocated CUDA-IPC path is not wired into the RL loop yet"
        raise ValueError(f"rollout.weight_sync=ipc needs the learner and rollout workers on one "
                         f"GPU and {where}; use auto, collective or object_store")
    if mode == "object_store" or (mode == "auto" and not pool_can_join):
        return "object_store", None
    if not pool_can_join:
        raise ValueError("rollout.weight_sync=collective needs a Ray RolloutPool whose workers "
                         "can join a weight group (this pool has no sync_collective)")
    return "collective", "nccl" if learner_gpus and rollout_gpus and engine == "hf" else "gloo"


class CollectiveSync:
    """The weight group of one rollout pool and one sender (see the module docstring).

    Args:
        pool: the ``RolloutPool`` (its ``handles``, ``timeout_s`` and ``_get``, which names the
            worker and phase on failure).
        sender: the learner side (``actors.collective.WeightSender``).
        bucket_bytes: bucket size of each broadcast.
        backend: ``"gloo"`` or ``"nccl"``.
    """

    def __init__(self, pool: Any, sender: WeightSender, *, bucket_bytes: int,
                 backend: str) -> None:
        self.pool, self.sender = pool, sender
        self.bucket_bytes, self.backend = int(bucket_bytes), backend
        self.epoch = 0
        self._members: tuple[Any, ...] | None = None  # the handles the group was formed with
        self.last_stats: dict[str, float] = {}

    def push(self, version: int, indices: Sequence[int] | None = None, *,
             staged: bool = False) -> dict[str, float]:
        """Send the learner's current weights as ``version`` to workers ``indices`` (default:
        all); returns rank 0's send statistics. ``staged`` (async mode): the workers receive in
        their ``weights`` concurrency group beside a running generation and load at its next
        boundary (``RolloutWorker.stage_weights``), else they load now (``receive_weights``)."""
        indices = list(range(len(self.pool.handles)) if indices is None else indices)
        members = tuple(self.pool.handles[i] for i in indices)
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

    def _form(self, indices: list[int], members: tuple[Any, ...], staged: bool) -> None:
        self.epoch += 1
        spec = self.sender.open_weight_group(1 + len(indices), self.epoch, self.backend,
                                             self.pool.timeout_s)
        refs = [self._method(i, "join_weight_group", staged).remote(spec, rank)
                for rank, i in enumerate(indices, start=1)]
        self.sender.join_weight_group(spec)
        for i, ref in zip(indices, refs, strict=True):
            self.pool._get(i, ref, "join")
        self._members = members
