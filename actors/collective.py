"""Driver-free weight sync: learner rank 0 broadcasts bucketed weights to the rollout workers.

The group is learner rank 0 (rank 0, the sender) plus every rollout worker (ranks 1..N). It is a
standalone process group -- its own ``TCPStore`` (hosted by rank 0 on a port the OS picks) and
its own ``ProcessGroupGloo`` (CPU) or ``ProcessGroupNCCL`` (GPU) object -- so it never touches
the learner's DeepSpeed world or ``torch.distributed``'s default group (the same shape as the
``StatelessProcessGroup`` vLLM uses for its own groups). Each formation has an
``epoch``; a restarted rollout worker makes the pool form a new group (new port, epoch + 1).

Wire format, per bucket, three broadcasts from rank 0: an int64 header ``[meta bytes, data
bytes]``, the JSON metadata as uint8, and the flat uint8 data. The metadata lists pieces
``[name, dtype, shape, byte offset in the tensor, bytes, offset in the bucket]``, whether this
bucket is the last, and (first bucket) the payload's ``meta`` (the LoRA layout of an
adapter-only sync, the weights version). A tensor larger than the bucket travels in pieces and
is reassembled by the receiver; whole tensors start 16-byte aligned and arrive as views into the
received bucket. The sender's extra memory is one bucket; every collective waits at most
``timeout_s`` and a failure raises ``CollectiveError`` naming the rank, epoch and phase.

This module does not decide who joins or when (``actors.launch.RolloutPool``), does not gather
ZeRO-3 shards (``learner.learner.Learner.send_weights``) and does not load weights into engines
(``actors.rollout.RolloutWorker.receive_weights``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import Any, Protocol

import torch

BACKENDS = ("gloo", "nccl")
_ALIGN = 16  # bytes; whole tensors start aligned so any dtype can be viewed in place


class CollectiveError(RuntimeError):
    """A weight-group collective failed or timed out (message names rank, epoch, phase)."""


@dataclass(frozen=True)
class GroupSpec:
    """Where and how to form one weight group (plain data: it crosses Ray calls as a dict)."""

    address: str
    port: int
    world_size: int
    epoch: int
    backend: str = "gloo"
    timeout_s: float = 300.0

    def as_dict(self) -> dict[str, Any]:
        """Plain-dict form for remote calls."""
        return asdict(self)


class WeightSender(Protocol):
    """The learner side as the pool drives it (``rlsys.controller.learners.Learners``)."""

    def open_weight_group(self, world_size: int, epoch: int, backend: str,
                          timeout_s: float) -> dict[str, Any]:
        """Rank 0 hosts the group's store; returns the ``GroupSpec`` dict for the workers."""
        ...

    def join_weight_group(self, spec: dict[str, Any]) -> None:
        """Rank 0 joins (blocks until every worker has joined)."""
        ...

    def send_weights(self, version: int, bucket_bytes: int) -> dict[str, float]:
        """Gather (all learner ranks) and broadcast the weights; returns send statistics."""
        ...


class WeightGroup:
    """One member's handle on a formed weight group.

    Rank 0 calls ``host`` (non-blocking: binds the store) then ``join``; ranks 1..N call only
    ``join``. ``join`` blocks until all ``world_size`` members are connected or ``timeout_s``.
    """

    def __init__(self, spec: GroupSpec, rank: int, store: Any = None) -> None:
        if spec.backend not in BACKENDS:
            raise ValueError(f"weight group backend must be one of {BACKENDS}, "
                             f"got {spec.backend!r}")
        if not 0 <= rank < spec.world_size:
            raise ValueError(f"weight group rank {rank} outside world_size {spec.world_size}")
        self.spec, self.rank, self._store = spec, rank, store
        self._pg: Any = None  # ProcessGroupGloo / ProcessGroupNCCL
        # one bucket buffer per device, kept across syncs: fresh pages cost more than the copy
        self._buffers: dict[str, torch.Tensor] = {}

    def scratch(self, nbytes: int, device: torch.device | str) -> torch.Tensor:
        """A uint8 buffer of ``nbytes`` on ``device``, reused across buckets and syncs (grown
        when a larger one is asked for)."""
        key = str(device)
        buf = self._buffers.get(key)
        if buf is None or buf.numel() < nbytes:
            self._buffers.pop(key, None)
            buf = self._buffers[key] = torch.empty(nbytes, dtype=torch.uint8, device=device)
        return buf[:nbytes]

    @classmethod
    def host(cls, address: str, world_size: int, epoch: int, backend: str,
             timeout_s: float) -> WeightGroup:
        """Rank 0: start the group's ``TCPStore`` on ``address`` and an OS-chosen port."""
        from torch._C._distributed_c10d import TCPStore  # torch.distributed re-exports it

        store = TCPStore(address, 0, world_size, True, timedelta(seconds=timeout_s),
                              wait_for_workers=False)
        spec = GroupSpec(address, int(store.port), world_size, epoch, backend, timeout_s)
        return cls(spec, 0, store)

    def join(self, device: torch.device | None = None) -> WeightGroup:
        """Connect to every other member (blocks up to ``timeout_s``); returns self."""
        import torch.distributed as dist
        from torch._C._distributed_c10d import PrefixStore, TCPStore

        timeout = timedelta(seconds=self.spec.timeout_s)
        try:
            if self._store is None:
                self._store = TCPStore(self.spec.address, self.spec.port,
                                            self.spec.world_size, False, timeout)
            store = PrefixStore(f"rlsys-weights-{self.spec.epoch}", self._store)
            if self.spec.backend == "gloo":
                self._pg = dist.ProcessGroupGloo(store, self.rank, self.spec.world_size, timeout)
            else:
                opts = dist.ProcessGroupNCCL.Options()
                opts._timeout = timeout
                self._pg = dist.ProcessGroupNCCL(store, self.rank, self.spec.world_size, opts)
                # NCCL connects lazily: a first small broadcast makes join really wait for all
                self.broadcast(torch.zeros(1, device=device), "join")
        except CollectiveError:
            raise
        except Exception as exc:  # noqa: BLE001 - re-raised with who/where
            raise self._error("join", exc) from exc
        return self

    def broadcast(self, tensor: torch.Tensor, phase: str) -> torch.Tensor:
        """Broadcast ``tensor`` from rank 0 in place (waits at most ``timeout_s``)."""
        import torch.distributed as dist

        if self._pg is None:
            raise CollectiveError(f"weight group rank {self.rank} (epoch {self.spec.epoch}): "
                                  f"{phase} before join")
        try:
            opts = dist.BroadcastOptions()
            opts.rootRank, opts.rootTensor = 0, 0
            work = self._pg.broadcast([tensor], opts)
            work.wait(timedelta(seconds=self.spec.timeout_s))
        except Exception as exc:  # noqa: BLE001 - re-raised with who/where
            raise self._error(phase, exc) from exc
        return tensor

    def _error(self, phase: str, exc: BaseException) -> CollectiveError:
        return CollectiveError(
            f"weight group rank {self.rank}/{self.spec.world_size} (epoch {self.spec.epoch}, "
            f"{self.spec.backend} at {self.spec.address}:{self.spec.port}) failed in {phase} "
            f"within {self.spec.timeout_s} s: {type(exc).__name__}: {exc}")

    def close(self) -> None:
        """Drop the process group, the store connection and the bucket buffers."""
        self._pg, self._store, self._buffers = None, None, {}


def _pieces(named: Iterable[tuple[str, torch.Tensor]], bucket_bytes: int
            ) -> Iterator[tuple[list[tuple[list[Any], torch.Tensor]], bool]]:
    """Group tensors into buckets: yields ``([(entry, uint8 source bytes), ...], last)``."""
    bucket: list[tuple[list[Any], torch.Tensor]] = []
    used = 0
    for name, tensor in named:
        flat = tensor.detach().contiguous().reshape(-1).view(torch.uint8)
        meta = [name, str(tensor.dtype).removeprefix("torch."), list(tensor.shape)]
        done, total = 0, flat.numel()
        while True:
            start = math.ceil(used / _ALIGN) * _ALIGN
            fits_next = done == 0 and total <= bucket_bytes < start + total
            if bucket and (start >= bucket_bytes or fits_next):  # flush: full, or the tensor
                # fits whole into the next bucket (split only what exceeds a bucket)
                yield bucket, False
                bucket, used, start = [], 0, 0
            size = min(total - done, bucket_bytes - start)
            bucket.append(([*meta, done, size, start], flat[done : done + size]))
            used, done = start + size, done + size
            if done >= total:
                break
    yield bucket, True


def send_state(group: WeightGroup, named: Iterable[tuple[str, torch.Tensor]], *,
               bucket_bytes: int, meta: dict[str, Any] | None = None,
               device: torch.device | str = "cpu") -> dict[str, float]:
    """Rank 0: broadcast ``named`` tensors in buckets of at most ``bucket_bytes`` bytes.

    ``meta`` (JSON-serialisable) reaches every receiver with the first bucket. Returns
    ``{"bytes": payload bytes, "buckets": count, "tensors": count}``. The one bucket buffer
    (``WeightGroup.scratch``) is reused, so extra memory is ``bucket_bytes`` on ``device``.
    """
    if bucket_bytes < 1:
        raise ValueError(f"bucket_bytes must be >= 1, got {bucket_bytes}")
    buffer = group.scratch(bucket_bytes, device)
    stats = {"bytes": 0.0, "buckets": 0.0, "tensors": 0.0}
    first = True
    for bucket, last in _pieces(named, bucket_bytes):
        entries = [entry for entry, _ in bucket]
        data_len = max((e[5] + e[4] for e in entries), default=0)
        for entry, src in bucket:
            buffer[entry[5] : entry[5] + entry[4]].copy_(src)
        text = json.dumps({"entries": entries, "last": last,
                           "meta": (meta or {}) if first else None}).encode()
        header = torch.tensor([len(text), data_len], dtype=torch.int64, device=device)
        group.broadcast(header, "send header")
        group.broadcast(torch.frombuffer(bytearray(text), dtype=torch.uint8).to(device),
                        "send metadata")
        if data_len:
            group.broadcast(buffer[:data_len], "send bucket")
        stats["bytes"] += sum(e[4] for e in entries)
        stats["buckets"] += 1
        stats["tensors"] += sum(1 for e in entries if e[3] + e[4] == _nbytes(e))
        first = False
    return stats


def _nbytes(entry: list[Any]) -> int:
    dtype = getattr(torch, entry[1])
    return math.prod(entry[2]) * torch.empty(0, dtype=dtype).element_size()


def receive_state(group: WeightGroup, device: torch.device | str = "cpu", *,
                  fresh_buckets: bool = False
                  ) -> Iterator[tuple[dict[str, Any] | None, list[tuple[str, torch.Tensor]]]]:
    """Ranks 1..N: yield ``(meta or None, complete tensors)`` per received bucket.

    ``meta`` is the sender's ``meta`` with the first bucket, None after. Whole tensors are views
    into the group's one receive buffer (``WeightGroup.scratch``): they are valid until the
    next bucket arrives, so copy them (into the model, or ``clone``) before asking for it.
    ``fresh_buckets``: every bucket gets its own buffer instead, so the views stay valid as
    long as they are referenced (for a loader that holds weights until a layer is complete,
    like vLLM's layerwise reload). A tensor split over buckets is yielded (its own memory)
    with the bucket that completes it.
    """
    partial: dict[str, torch.Tensor] = {}
    while True:
        header = group.broadcast(torch.zeros(2, dtype=torch.int64, device=device),
                                 "receive header").tolist()
        text = group.broadcast(torch.empty(header[0], dtype=torch.uint8, device=device),
                               "receive metadata")
        info = json.loads(text.cpu().numpy().tobytes().decode())
        data = torch.empty(header[1], dtype=torch.uint8, device=device) if fresh_buckets \
            else group.scratch(header[1], device)
        if header[1]:
            group.broadcast(data, "receive bucket")
        done: list[tuple[str, torch.Tensor]] = []
        for name, dtype_name, shape, offset, size, start in info["entries"]:
            dtype, total = getattr(torch, dtype_name), _nbytes([name, dtype_name, shape])
            if offset == 0 and size == total:  # whole tensor: a view into the bucket
                done.append((name, data[start : start + size].view(dtype).view(shape)))
                continue
            buf = partial.setdefault(name, torch.empty(total, dtype=torch.uint8, device=device))
            buf[offset : offset + size].copy_(data[start : start + size])
            if offset + size == total:
                done.append((name, partial.pop(name).view(dtype).view(shape)))
        yield info["meta"], done
        if info["last"]:
            if partial:
                raise CollectiveError(f"weight group rank {group.rank}: stream ended with "
                                      f"incomplete tensors {sorted(partial)[:5]}")
            return
