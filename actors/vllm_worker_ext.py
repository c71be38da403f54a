"""vLLM worker extension that lets rlsys push new weights into running vLLM workers.

vLLM mixes this class into its worker class when ``LLM(...,
worker_extension_cls="actors.vllm_worker_ext.WeightSyncWorkerExtension")`` is given; its methods
are then callable on every worker through ``LLM.collective_rpc(name, args=...)``. Inside the
methods ``self`` is the vLLM worker (``self.device``, ``self.model_runner``,
``self.reload_weights`` come from vLLM).

Three transports:

* **Packed CPU buffers** (``rlsys_load_packed``, used on CPU and as a GPU fallback): the engine
  writes each ``PackedState`` buffer to a file in ``/dev/shm`` and sends the paths + index
  through the RPC; the worker memory-maps them and hands views to vLLM's
  ``reload_weights(weights_iterator=..., is_checkpoint_format=True)``, which maps Hugging Face
  names onto vLLM's fused/repacked parameters (CPU vLLM repacks linear weights, so calling
  ``model.load_weights`` directly is wrong there).
* **CUDA IPC** (``rlsys_load_ipc``, GPU, learner colocated on the same GPU): the learner
  flattens its weights into one GPU buffer per dtype and sends IPC handles; the worker maps
  them and calls ``model_runner.model.load_weights``.
* **NCCL broadcast** (``init_weight_update_group`` + ``update_weight`` /
  ``update_weights_from_broadcast``, GPU only): the learner's
  rank 0 (``actors.weight_sync.NcclWeightBroadcaster``) and every vLLM worker join a
  ``StatelessProcessGroup`` (separate from vLLM's and the learner's own process groups) and a
  ``PyNcclCommunicator`` on it; the learner broadcasts each tensor, workers receive into a fresh
  buffer and call ``model_runner.model.load_weights`` (plain bf16/fp16 weights on GPU are not
  repacked, so the per-tensor path is valid there).

This module is imported by vLLM inside its worker processes; it must stay import-light.
"""

from __future__ import annotations

from typing import Any


class WeightSyncWorkerExtension:
    """Methods vLLM adds to each worker (see module docstring)."""

    # ------------------------------------------------------------------ CPU / any device
    def rlsys_load_packed(self, files: dict[str, Any], index: list[Any]) -> int:
        """Reload every tensor described by ``index`` from memory-mapped buffer files.

        ``files`` maps a torch dtype name to ``(path, numpy dtype)`` of one flat buffer written
        by ``actors.engines.vllm.VLLMEngine.load_weights`` (in ``/dev/shm`` when available);
        ``index`` is ``PackedState.index``. Only plain data crosses vLLM's msgpack RPC.
        Returns the number of tensors loaded.
        """
        import numpy as np

        from actors.weight_sync import PackedState, unpack_state_dict

        buffers: dict[str, np.ndarray] = {name: np.memmap(path, dtype=np_dtype, mode="r")
                                           for name, (path, np_dtype) in files.items()}
        payload = PackedState(buffers=buffers,
                              index=[(n, d, int(o), tuple(s)) for n, d, o, s in index])
        self.reload_weights(weights_iterator=unpack_state_dict(payload),  # type: ignore[attr-defined]
                            is_checkpoint_format=True)
        return len(payload)

    # ------------------------------------------------------------------ GPU / CUDA IPC
    def rlsys_load_ipc(self, handles: dict[str, bytes], index: list[Any]) -> int:
        """Colocated learner: map its flat GPU buffers through CUDA IPC and load from them.

        ``handles`` come from ``actors.weight_sync.cuda_ipc_handles``. The storage device in
        each handle is replaced by this worker's device index: learner and worker share the
        physical GPU but may number it differently (``CUDA_VISIBLE_DEVICES``). Returns the
        number of tensors loaded.
        """
        import pickle

        import torch

        from actors.weight_sync import views

        flats = {}
        for dtype_name, blob in handles.items():
            rebuild, args = pickle.loads(blob)  # produced by our own learner process
            args = list(args)
            args[6] = self.device.index  # type: ignore[attr-defined]  # storage_device
            flats[dtype_name] = rebuild(*args)
        named = list(views(flats, index))
        self.model_runner.model.load_weights(weights=named)  # type: ignore[attr-defined]
        torch.cuda.current_stream().synchronize()
        del named, flats
        return len(index)

    # ------------------------------------------------------------------ GPU / NCCL
    def init_weight_update_group(self, master_address: str, master_port: int,
                                 rank_offset: int, world_size: int) -> None:
        """Join the learner's weight-broadcast group as rank ``rank_offset + this worker's rank``.

        Blocks until all ``world_size`` ranks (learner rank 0 included) have joined.
        """
        from vllm.distributed.device_communicators.pynccl import PyNcclCommunicator
        from vllm.distributed.parallel_state import get_world_group
        from vllm.distributed.utils import StatelessProcessGroup

        rank = get_world_group().rank + rank_offset
        group = StatelessProcessGroup.create(host=master_address, port=master_port, rank=rank,
                                             world_size=world_size)
        self._rlsys_comm = PyNcclCommunicator(group, device=self.device)  # type: ignore[attr-defined]

    def update_weight(self, name: str, dtype: str, shape: list[int]) -> None:
        """Receive one broadcast tensor from rank 0 and load it under its Hugging Face name."""
        import torch

        comm = getattr(self, "_rlsys_comm", None)
        if comm is None:
            raise RuntimeError("update_weight before init_weight_update_group")
        weight = torch.empty(tuple(shape), dtype=getattr(torch, dtype),
                             device=self.device)  # type: ignore[attr-defined]
        comm.broadcast(weight, src=0, stream=torch.cuda.current_stream())
        torch.cuda.current_stream().synchronize()
        self.model_runner.model.load_weights(weights=[(name, weight)])  # type: ignore[attr-defined]
        del weight

    def update_weights_from_broadcast(self, metadata: list[Any]) -> int:
        """``update_weight`` for each ``(name, dtype, shape)`` in order; returns the count.

        One RPC for the whole model: the learner broadcasts the same list in the same order.
        """
        for name, dtype, shape in metadata:
            self.update_weight(name, dtype, list(shape))
        return len(metadata)

    def close_weight_update_group(self) -> None:
        """Drop the NCCL communicator."""
        self._rlsys_comm = None
