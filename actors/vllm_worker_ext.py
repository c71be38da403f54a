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
* **The rlsys weight group** (``rlsys_join_weight_group`` + ``rlsys_receive_weights``; what
  the RL loop uses for full-weight syncs into vLLM, ``rollout.weight_sync`` collective): every
  vLLM worker is a member of the loop's driver-free weight group (``actors.collective``) --
  gloo on CPU, NCCL on GPU -- and receives learner rank 0's bucketed broadcast itself, so the
  weights go learner GPU -> vLLM GPU without the rollout actor or host memory in between.

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
        import torch

        from actors.weight_sync import open_ipc_handles

        named = open_ipc_handles(handles, index, self.device)  # type: ignore[attr-defined]
        self.model_runner.model.load_weights(weights=named)  # type: ignore[attr-defined]
        torch.cuda.current_stream().synchronize()
        del named
        return len(index)

    # ------------------------------------------------------------------ rlsys weight group
    def rlsys_join_weight_group(self, spec: dict[str, Any], rank_offset: int) -> int:
        """Join the driver-free weight group (``actors.collective``) as rank ``rank_offset +
        this worker's rank in vLLM's world`` (tensor-parallel workers each take a rank); an
        earlier group is dropped. Blocks until every member joined; returns the rank."""
        from vllm.distributed.parallel_state import get_world_group

        from actors.collective import GroupSpec, WeightGroup

        old = getattr(self, "_rlsys_group", None)
        if old is not None:
            old.close()
        group = WeightGroup(GroupSpec(**spec), rank_offset + get_world_group().rank)
        nccl = group.spec.backend == "nccl"
        self._rlsys_group = group.join(self.device if nccl else None)  # type: ignore[attr-defined]
        return group.rank

    def rlsys_receive_weights(self, version: int) -> int:
        """Receive full weights broadcast by learner rank 0 over the weight group, straight
        into this worker (NCCL buckets land on its GPU; gloo ones in host memory) and load them
        with ``reload_weights(..., is_checkpoint_format=True)`` as they arrive. Each bucket has
        its own buffer (vLLM's layerwise reload holds a layer's tensors until the layer is
        complete). Adapter-only payloads are refused (the rollout actor applies those). On a
        failure the rest of the stream is still received, so the sender is never left hanging.
        Returns the number of tensors loaded."""
        from actors.collective import CollectiveError, receive_state

        group = getattr(self, "_rlsys_group", None)
        if group is None:
            raise CollectiveError("rlsys_receive_weights before rlsys_join_weight_group")
        device = self.device if group.spec.backend == "nccl" else "cpu"  # type: ignore[attr-defined]
        stream = receive_state(group, device, fresh_buckets=True)
        count = 0

        def tensors() -> Any:
            nonlocal count
            for meta, bucket in stream:
                if meta is not None and int(meta.get("version", version)) != version:
                    raise CollectiveError(f"rlsys_receive_weights: expected version {version}, "
                                          f"the sender sent {meta.get('version')}")
                if meta is not None and meta.get("lora") is not None:
                    raise CollectiveError("rlsys_receive_weights: an adapter-only payload; "
                                          "the rollout actor must receive LoRA syncs")
                count += len(bucket)
                yield from bucket

        try:
            self.reload_weights(weights_iterator=tensors(),  # type: ignore[attr-defined]
                                is_checkpoint_format=True)
        finally:
            for _ in stream:  # drain: every rank finishes the broadcast
                pass
        return count
