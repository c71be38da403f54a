"""Moving learner weights into rollout engines.

CPU path (``pack_state_dict`` / ``unpack_state_dict`` / ``sync_weights``): the learner's rank 0
turns its Hugging Face-named state dict into a ``PackedState`` -- one flat contiguous numpy
buffer per dtype plus an index of ``(name, dtype, offset, shape)``. The controller ``ray.put``s
it once; every rollout worker ``ray.get``s it. Ray stores numpy buffers out-of-band, so a worker
on the same node maps the object-store memory read-only instead of unpickling a copy; unpacking
returns views into that buffer, and the only copy is the final one into the model's parameters.
bfloat16 has no numpy dtype, so its buffer travels as int16 and is re-viewed on unpack.

GPU path between GPUs: the RL loop's driver-free weight group (``actors.collective``; NCCL on
GPU), which vLLM workers join themselves (``actors.vllm_worker_ext``).

Colocated GPU path (``cuda_ipc_handles``): a learner on the same GPU as vLLM (NCCL refuses two
ranks on one device) flattens its weights into one GPU buffer per dtype and sends CUDA-IPC
handles; the workers map the buffers and copy from them (no host round trip).

Not done here: sharded/bucketed transfer for models whose flat buffer does not fit next to the
model on the GPU (the weight group sends buckets, so it is not affected).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

# dtypes numpy cannot represent travel as a same-width integer view.
_NUMPY_CARRIER = {torch.bfloat16: torch.int16}


@dataclass
class PackedState:
    """A state dict as one flat buffer per dtype.

    Attributes:
        buffers: dtype name (e.g. ``"float32"``) -> 1-D numpy array holding every tensor of
            that dtype back to back.
        index: ``(name, dtype name, offset in elements, shape)`` per tensor, in state-dict order.
        meta: plain facts about the payload; ``{"lora": {r, lora_alpha, target_modules,
            modules_to_save}}`` marks an adapter-only sync (tensors named as in
            ``adapter_model.safetensors``), else every weight by Hugging Face name.
    """

    buffers: dict[str, np.ndarray]
    index: list[tuple[str, str, int, tuple[int, ...]]]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def lora(self) -> dict[str, Any] | None:
        """The adapter layout of an adapter-only payload, None for full weights."""
        return self.meta.get("lora")

    @property
    def nbytes(self) -> int:
        """Total payload size in bytes."""
        return sum(int(b.nbytes) for b in self.buffers.values())

    def __len__(self) -> int:
        return len(self.index)


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def flatten_state(state: Mapping[str, torch.Tensor], device: torch.device | str = "cpu"
                  ) -> tuple[dict[str, torch.Tensor], list[tuple[str, str, int, tuple[int, ...]]]]:
    """Copy ``state`` into one flat tensor per dtype on ``device``; return them and the index.

    Tensors that alias each other exactly (same data pointer, dtype, shape and strides, e.g.
    tied input/output embeddings) are stored once and indexed under every name. Raises
    ``TypeError`` on a non-tensor value.
    """
    offsets: dict[torch.dtype, int] = {}
    index: list[tuple[str, str, int, tuple[int, ...]]] = []
    seen: dict[tuple, int] = {}  # alias key -> offset, so tied weights are stored once
    to_copy: list[tuple[torch.Tensor, int]] = []
    for name, tensor in state.items():  # first pass: the index, in state-dict order
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"pack_state_dict: {name!r} is {type(tensor).__name__}, not a Tensor")
        key = (tensor.device, tensor.data_ptr(), tensor.dtype, tuple(tensor.shape),
               tensor.stride())
        if key not in seen or tensor.numel() == 0:
            seen[key] = offsets.get(tensor.dtype, 0)
            offsets[tensor.dtype] = seen[key] + tensor.numel()
            to_copy.append((tensor, seen[key]))
        index.append((name, _dtype_name(tensor.dtype), seen[key], tuple(tensor.shape)))
    flats = {dtype: torch.empty(total, dtype=dtype, device=device)
             for dtype, total in offsets.items()}
    for tensor, offset in to_copy:
        flats[tensor.dtype][offset : offset + tensor.numel()].copy_(tensor.detach().reshape(-1))
    return {_dtype_name(dtype): flat for dtype, flat in flats.items()}, index


def pack_state_dict(state: Mapping[str, torch.Tensor], meta: dict[str, Any] | None = None
                    ) -> PackedState:
    """Copy ``state`` (any devices) into one contiguous CPU numpy buffer per dtype; ``meta``
    travels with it (see ``PackedState``).

    See ``flatten_state`` for aliasing and errors.
    """
    flats, index = flatten_state(state, "cpu")
    buffers: dict[str, np.ndarray] = {}
    for dtype_name, flat in flats.items():
        carrier = _NUMPY_CARRIER.get(flat.dtype)
        buffers[dtype_name] = (flat.view(carrier) if carrier else flat).numpy()
    return PackedState(buffers=buffers, index=index, meta=dict(meta or {}))


def views(flats: Mapping[str, torch.Tensor], index: Iterable[tuple[str, str, int, Any]]
          ) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield ``(name, view into flats[dtype])`` for each index entry (no copies)."""
    for name, dtype_name, offset, shape in index:
        shape = tuple(shape)
        numel = int(np.prod(shape)) if shape else 1
        yield name, flats[dtype_name][int(offset) : int(offset) + numel].view(shape)


def unpack_state_dict(payload: PackedState) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield ``(name, tensor)`` views into ``payload``'s buffers (no copies).

    The views may be read-only (Ray object-store memory): copy them into the model, do not
    write to them.
    """
    flats: dict[str, torch.Tensor] = {}
    for dtype_name, array in payload.buffers.items():
        dtype = getattr(torch, dtype_name)
        with warnings.catch_warnings():
            # Object-store arrays are read-only; the tensors are only ever read.
            warnings.simplefilter("ignore", UserWarning)
            flat = torch.from_numpy(array)
        flats[dtype_name] = flat.view(dtype) if dtype in _NUMPY_CARRIER else flat
    return views(flats, payload.index)


def sync_weights(
    state_dict: Mapping[str, torch.Tensor] | PackedState,
    rollout_handles: Sequence[Any],
    timeout: float = 300.0,
) -> tuple[list[int], Any]:
    """Push weights to Ray rollout actors: pack, ``ray.put`` once, ``update_weights`` on each.

    Returns ``(weights versions reported by each worker, the payload ObjectRef)``; keep the ref
    to re-apply the weights to a restarted worker. Raises ``ray.exceptions.GetTimeoutError``
    past ``timeout`` seconds. ``actors.launch.RolloutPool.sync_weights`` adds per-worker error
    reporting and restarts on top of this.
    """
    import ray

    payload = state_dict if isinstance(state_dict, PackedState) else pack_state_dict(state_dict)
    ref = ray.put(payload)
    versions = ray.get([h.update_weights.remote(ref) for h in rollout_handles], timeout=timeout)
    return list(versions), ref


def cuda_ipc_handles(state: Mapping[str, torch.Tensor], device: torch.device | str
                     ) -> tuple[dict[str, bytes], list[Any], dict[str, torch.Tensor]]:
    """Colocated GPU path: flatten ``state`` on ``device`` and export CUDA-IPC handles.

    Returns ``(handles, index, flats)``: ``handles`` maps a dtype name to the pickled
    ``torch.multiprocessing.reductions.reduce_tensor`` of that dtype's flat buffer (bytes, so
    vLLM's msgpack RPC carries it; only our own worker unpickles it), ``index`` is the
    ``PackedState``-style index, and ``flats`` are the buffers -- the caller must keep them
    alive until every receiver has copied the weights (``WeightSyncWorkerExtension
    .rlsys_load_ipc``). One IPC handle per dtype instead of per tensor keeps the RPC small.
    """
    import pickle

    from torch.multiprocessing.reductions import reduce_tensor

    flats, index = flatten_state(state, device)
    handles = {name: pickle.dumps(reduce_tensor(flat)) for name, flat in flats.items()}
    return handles, [[n, d, o, list(shape)] for n, d, o, shape in index], flats


def gpu_uuid(device: torch.device | str | int) -> str:
    """The physical GPU's UUID (the same from every process, whatever its device numbering)."""
    return str(torch.cuda.get_device_properties(torch.device(device)).uuid)


def open_ipc_handles(handles: Mapping[str, bytes], index: Iterable[Any],
                     device: torch.device | str | int) -> list[tuple[str, torch.Tensor]]:
    """Receiver side of ``cuda_ipc_handles``: map the sender's flat GPU buffers into this
    process and return ``(name, view)`` per index entry (no copies; copy them into the model
    before the sender frees its buffers). Each handle's storage device is replaced by
    ``device``'s index: sender and receiver share the physical GPU but may number it
    differently (``CUDA_VISIBLE_DEVICES``)."""
    import pickle

    flats = {}
    for dtype_name, blob in handles.items():
        rebuild, args = pickle.loads(blob)  # produced by our own learner process
        args = list(args)
        args[6] = torch.device(device).index or 0  # storage_device
        flats[dtype_name] = rebuild(*args)
    return list(views(flats, index))
