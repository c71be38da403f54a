"""The rollout worker's side of the driver-free weight group (a mixin of
``actors.rollout.RolloutWorker``): join the group, and take a broadcast from learner rank 0 in
one of two ways.

* ``receive_weights`` (synchronous RL): receive and load into the engine now. The HF engine
  loads full weights bucket by bucket; other engines (vLLM) and adapter-only payloads get them
  whole.
* ``stage_weights`` (async RL): receive into host memory *beside* a generation that is running.
  ``actors.launch.RolloutPool`` calls it in the actor's own ``weights`` concurrency group (a
  second thread), so the learner's broadcast never waits for a generation to finish; the
  generating thread loads the staged weights at its next chunk or turn boundary
  (``take_staged``, called by ``RolloutWorker.pull_weights``). Only the newest staged version
  is kept; the engine is only ever touched by the generating thread.

``load_ipc`` is the colocated GPU path (``rollout.weight_sync: ipc``): the learner's rank 0 on
the same GPU exports CUDA-IPC handles and this worker copies from its buffers.

This module does not form the group or decide when to sync (``actors.collective_sync``), and
does not move tensors on the wire (``actors.collective``).
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import torch

#: the Ray concurrency group (one thread) that ``join_weight_group`` / ``stage_weights`` run in
#: while the default group generates (``actors.launch.RolloutPool``)
WEIGHTS_GROUP = "weights"


class WeightReceiverMixin:
    """Weight-group methods of ``RolloutWorker``; needs its ``engine``, ``engine_name``,
    ``weights_version``, ``last_load_s``, ``_full``, ``_load_adapter`` and
    ``_engine_applies_adapters``."""

    engine: Any
    engine_name: str
    weights_version: int
    last_load_s: float | None
    _full: Any
    _staged: tuple[int, dict[str, Any], dict[str, torch.Tensor]] | None
    _staged_guard: threading.Lock
    _into_engine: bool  # the engine's workers are the group members (join_weight_group)
    _full_in_engine: bool  # the last full weights went straight into the engine's workers

    if TYPE_CHECKING:  # provided by RolloutWorker
        def _load_adapter(self, adapter: dict[str, torch.Tensor],
                          lora: dict[str, Any]) -> None: ...

        def _engine_applies_adapters(self) -> bool: ...

    def weight_group_size(self, into_engine: bool = False) -> int:
        """Members this worker adds to a weight group: its engine's workers when they join
        themselves (``into_engine`` and an engine that ``joins_weight_group``: vLLM), else 1."""
        if into_engine and getattr(self.engine, "joins_weight_group", False):
            return int(self.engine.weight_group_ranks)
        return 1

    def join_weight_group(self, spec: dict[str, Any], rank: int,
                          into_engine: bool = False) -> int:
        """Join the driver-free weight group (``actors.collective``) as ``rank``, dropping any
        earlier group; blocks until every member joined. With ``into_engine`` and an engine
        that joins itself (vLLM), its workers join instead, as ranks ``rank ..``
        (``weight_group_size``) and receive straight into the model. Returns the epoch."""
        from actors.collective import GroupSpec, WeightGroup

        old = getattr(self, "_weight_group", None)
        if old is not None:
            old.close()
            self._weight_group = None
        spec_ = GroupSpec(**spec)
        self._into_engine = into_engine and bool(getattr(self.engine, "joins_weight_group",
                                                          False))
        if self._into_engine:
            self.engine.join_weight_group(spec, rank)
            return spec_.epoch
        group = WeightGroup(spec_, rank)
        device = getattr(self.engine, "device", None) if group.spec.backend == "nccl" else None
        self._weight_group = group.join(device)
        return spec_.epoch

    def _stream(self, version: int) -> tuple[dict[str, Any], Iterator[list[tuple[str, Any]]]]:
        """The broadcast's meta (version checked) and its buckets of complete tensors."""
        from actors.collective import CollectiveError, receive_state

        group = getattr(self, "_weight_group", None)
        if group is None:
            raise CollectiveError("receive_weights before join_weight_group")
        # gloo buckets arrive in CPU memory (the engine copies them to its device); NCCL ones
        # on the engine's GPU
        device = self.engine.device if group.spec.backend == "nccl" else "cpu"
        stream = receive_state(group, device)
        meta, first = next(stream)
        meta = meta or {}
        if int(meta.get("version", version)) != version:
            raise CollectiveError(f"receive_weights: expected version {version}, the sender "
                                  f"sent {meta.get('version')}")
        return meta, itertools.chain([first], (bucket for _, bucket in stream))

    def receive_weights(self, version: int) -> int:
        """Receive weights broadcast by learner rank 0 over the weight group and load them;
        returns ``version``. Joined ``into_engine``: the engine's workers receive and load
        full weights themselves. Otherwise full weights go into the HF engine bucket by
        bucket; other engines (vLLM) get them whole; an adapter-only payload (``meta["lora"]``)
        goes through ``_load_adapter`` as in ``update_weights``."""
        start = time.perf_counter()
        if self._into_engine:
            self.engine.receive_weights(version)
            self._full = None  # only the engine holds them (base_weights refuses to guess)
            self._full_in_engine = True
        else:
            meta, buckets = self._stream(version)
            # only the HF engine loads a partial state in place; vLLM reloads (and repacks)
            if meta.get("lora") is None and self.engine_name == "hf":
                for tensors in buckets:
                    self.engine.load_weights(tensors)
            else:  # kept past their bucket: copy out of it
                self._apply_whole(meta, {n: t.clone() for b in buckets for n, t in b})
        self.last_load_s = time.perf_counter() - start
        self.weights_version = int(version)
        return self.weights_version

    def _apply_whole(self, meta: dict[str, Any], whole: dict[str, torch.Tensor]) -> None:
        if meta.get("lora") is not None:
            self._load_adapter(whole, meta["lora"])
            return
        if not self._engine_applies_adapters():  # what later adapter syncs merge onto
            self._full, self._full_in_engine = whole, False
        self.engine.load_weights(whole.items())

    def stage_weights(self, version: int) -> int:
        """Async mode, in the ``weights`` concurrency group: receive the broadcast of
        ``version`` into host memory (a copy of every tensor) without touching the engine;
        the generating thread loads it at its next boundary (``take_staged``). A newer staged
        version replaces an older one not loaded yet. Returns ``version``."""
        if self._into_engine:
            raise RuntimeError("stage_weights: this worker's engine joined the weight group "
                               "itself (into_engine); async mode needs the actor to receive")
        meta, buckets = self._stream(version)
        whole = {n: t.to("cpu", copy=True) for b in buckets for n, t in b}
        with self._staged_guard:
            staged = self._staged
            if staged is None or staged[0] < version:
                self._staged = (int(version), meta, whole)
        return int(version)

    def take_staged(self) -> int:
        """Load the staged weights if they are newer than the engine's (the generating thread
        calls this between chunks or turns); returns the weights version now loaded."""
        with self._staged_guard:
            staged, self._staged = self._staged, None
        if staged is not None and staged[0] > self.weights_version:
            start = time.perf_counter()
            self._apply_whole(staged[1], staged[2])
            self.last_load_s = time.perf_counter() - start
            self.weights_version = staged[0]
        return self.weights_version

    def _cuda_device(self) -> torch.device | None:
        """The GPU this worker's engine runs on: the HF engine's device, else (vLLM, whose
        workers share the actor's GPU) the actor's current CUDA device; None without one."""
        device = getattr(self.engine, "device", None)
        if device is not None and torch.device(device).type == "cuda":
            return torch.device(device)
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        return None

    def gpu_uuid(self) -> str | None:
        """The UUID of this worker's GPU (None on CPU); ``auto`` weight sync compares it with
        learner rank 0's."""
        from actors.weight_sync import gpu_uuid

        device = self._cuda_device()
        return gpu_uuid(device) if device is not None else None

    def load_ipc(self, payload: dict[str, Any], version: int) -> int:
        """``rollout.weight_sync: ipc``: load the weights learner rank 0 exported as CUDA-IPC
        handles (``Learner.ipc_payload``) on this worker's GPU, which must be the learner's
        (same UUID; else a clear error). The HF engine copies from the mapped buffers into its
        model; vLLM's workers map them themselves (``rlsys_load_ipc``); an adapter goes
        through ``_load_adapter``. Returns ``version``."""
        from actors.weight_sync import gpu_uuid, open_ipc_handles

        start = time.perf_counter()
        device = self._cuda_device()
        if device is None:
            raise RuntimeError("weight_sync=ipc: this rollout worker sees no GPU")
        if gpu_uuid(device) != payload["gpu"]:
            raise RuntimeError(f"weight_sync=ipc: this rollout worker is on GPU "
                               f"{gpu_uuid(device)}, learner rank 0 on {payload['gpu']}; CUDA "
                               f"IPC needs both on one GPU (fractional num_gpus so Ray packs "
                               f"them together) -- use weight_sync: collective otherwise")
        meta = payload["meta"]
        if meta.get("lora") is None and self.engine_name == "vllm":
            self.engine.load_ipc_handles(payload["handles"], payload["index"])
            self._full, self._full_in_engine = None, True  # only the engine holds them
        else:
            named = open_ipc_handles(payload["handles"], payload["index"], device)
            if meta.get("lora") is not None:
                self._load_adapter({n: t.clone() for n, t in named}, meta["lora"])
            else:
                self.engine.load_weights(named)
            torch.cuda.synchronize(device)  # copied before the learner frees its buffers
            del named
        self.last_load_s = time.perf_counter() - start
        self.weights_version = int(version)
        return self.weights_version
