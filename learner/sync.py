"""The learner's weight-sync methods (a mixin of ``learner.learner.Learner``): gather the
full state or the LoRA adapter on rank 0, and broadcast it over a driver-free weight group
(``actors.collective``) to the rollout workers, streaming the full state tensor by tensor, or
(``rollout.weight_sync: ipc``, a rollout worker on the same GPU) export it as CUDA-IPC handles.
Every method is called on ALL ranks (the ZeRO-3 gather is collective). It does not decide
when to sync or which transport a stage uses (``rlsys.controller.rl``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from learner.engine import DTYPES, iter_gathered_state
from learner.lora import is_lora
from learner.model_io import adapter_payload, full_state


class WeightSyncMixin:
    """Weight-sync methods of ``Learner``; needs its ``_engine``, ``rank``, ``zero_stage`` and
    ``device``."""

    _engine: Any
    rank: int
    zero_stage: int
    device: Any

    def state_dict_for_sync(self, dtype: str | None = None) -> dict[str, torch.Tensor] | None:
        """Full HF-named CPU tensors on rank 0 (None on other ranks), in ``dtype`` (default: the
        training dtype). Call on ALL ranks: under ZeRO-3 every rank takes part in the gather.
        With LoRA: the Hugging Face names of the base model, adapters merged."""
        return full_state(self._engine.module, zero_stage=self.zero_stage, rank=self.rank,
                          dtype=DTYPES[dtype] if dtype is not None else None)

    def adapter_for_sync(
        self, dtype: str | None = None
    ) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
        """``(adapter tensors named as in adapter_model.safetensors, layout for the engine)`` on
        rank 0, None elsewhere: an adapter-only weight sync. Call on ALL ranks; needs LoRA."""
        return adapter_payload(self._engine.module, zero_stage=self.zero_stage, rank=self.rank,
                               dtype=DTYPES[dtype] if dtype is not None else None)

    def open_weight_group(self, address: str, world_size: int, epoch: int, backend: str,
                          timeout_s: float) -> dict[str, Any] | None:
        """Rank 0: host the store of a new driver-free weight group (``actors.collective``) on
        ``address`` and return its spec (None on other ranks); an earlier group is dropped."""
        if self.rank != 0:
            return None
        from actors.collective import WeightGroup

        old = getattr(self, "_weight_group", None)
        if old is not None:
            old.close()
        self._weight_group = WeightGroup.host(address, world_size, epoch, backend, timeout_s)
        return self._weight_group.spec.as_dict()

    def join_weight_group(self, spec: dict[str, Any]) -> None:
        """Rank 0: connect the group opened by ``open_weight_group`` (blocks until every rollout
        worker joined, at most its timeout). A no-op on other ranks."""
        if self.rank != 0:
            return
        group = getattr(self, "_weight_group", None)
        if group is None or group.spec.as_dict() != spec:
            raise RuntimeError(f"join_weight_group: rank 0 holds no opened group matching {spec}")
        group.join(self.device)

    def send_weights(self, version: int, bucket_bytes: int, *, adapter_only: bool | None = None,
                     dtype: str | None = None) -> dict[str, float] | None:
        """Gather the weights and broadcast them from rank 0 over the weight group in buckets
        of ``bucket_bytes``, tagged with ``version``. Call on ALL ranks (the ZeRO-3 gather is
        collective); returns rank 0's send statistics, None elsewhere.

        The full model is streamed (``iter_gathered_state``): gathered one tensor at a time and
        broadcast as its bucket fills, so rank 0's extra memory is about one bucket, not one
        model. A LoRA model sends its adapter (``adapter_for_sync``; by default, or when
        ``adapter_only``); its merged full state (``adapter_only=False``) is built whole, since
        merging needs each base weight beside its adapter.
        """
        from actors.collective import send_state

        meta: dict[str, Any] = {"version": int(version)}
        module = self._engine.module
        torch_dtype = DTYPES[dtype] if dtype is not None else None
        lora = is_lora(module)
        named: Iterable[tuple[str, torch.Tensor]] | None
        if adapter_only if adapter_only is not None else lora:
            payload = self.adapter_for_sync(dtype)
            named = payload[0].items() if payload is not None else None
            if payload is not None:
                meta["lora"] = payload[1]
        elif lora:
            state = self.state_dict_for_sync(dtype)
            named = state.items() if state is not None else None
        else:
            named = iter_gathered_state(module, zero_stage=self.zero_stage, rank=self.rank,
                                        dtype=torch_dtype)
        group = getattr(self, "_weight_group", None)
        try:
            if self.rank != 0:
                return None
            if group is None or named is None:
                raise RuntimeError("send_weights: rank 0 has no joined weight group or no state")
            device = self.device if group.spec.backend == "nccl" else "cpu"
            return send_state(group, named, bucket_bytes=bucket_bytes, meta=meta, device=device)
        finally:
            # every rank finishes the stream, also after a failed send, so no rank is left
            # waiting in a ZeRO-3 gather the others never join
            for _ in named or ():
                pass

    def ipc_payload(self, version: int, dtype: str | None = None) -> dict[str, Any] | None:
        """Colocated GPU sync: gather the weights (LoRA: the adapter) on rank 0 into one flat
        GPU buffer per dtype and return the CUDA-IPC handles to them (``actors.weight_sync
        .cuda_ipc_handles``), the index, this GPU's UUID and the payload meta (None on other
        ranks). The buffers stay alive until ``release_ipc``. Call on ALL ranks."""
        from actors.weight_sync import cuda_ipc_handles, gpu_uuid

        meta: dict[str, Any] = {"version": int(version)}
        if is_lora(self._engine.module):
            payload = self.adapter_for_sync(dtype)
            state = payload[0] if payload is not None else None
            if payload is not None:
                meta["lora"] = payload[1]
        else:
            state = self.state_dict_for_sync(dtype)
        if self.rank != 0 or state is None:
            return None
        if torch.device(self.device).type != "cuda":
            raise RuntimeError(f"weight_sync=ipc: learner rank 0 is on {self.device}, not a GPU")
        self.release_ipc()
        handles, index, self._ipc_flats = cuda_ipc_handles(state, self.device)
        torch.cuda.synchronize(self.device)  # the copies land before a receiver reads them
        return {"handles": handles, "index": index, "gpu": gpu_uuid(self.device), "meta": meta}

    def release_ipc(self) -> None:
        """Free the flat GPU buffers of the last ``ipc_payload`` (every receiver has copied
        them). A no-op when there are none."""
        self._ipc_flats = None

    def gpu_uuid(self) -> str | None:
        """This rank's GPU UUID (None on CPU): ``auto`` weight sync compares rank 0's with the
        rollout workers' to find a learner colocated with them."""
        from actors.weight_sync import gpu_uuid

        return gpu_uuid(self.device) if torch.device(self.device).type == "cuda" else None
