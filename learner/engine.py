"""DeepSpeed plumbing for one learner rank: process group, config dict, optimizer, gathering.

* ``init_distributed`` joins (or reuses) the torch.distributed group and DeepSpeed's comm layer.
* ``build_ds_config`` turns plain arguments into the DeepSpeed config dict (ZeRO 0-3, bf16,
  clipping, one micro-batch per ``backward``; accumulation is driven by the learner).
* ``create_engine`` builds torch ``AdamW`` (decoupled weight decay on matrices only, not on
  biases/norms/embeddings' 1-D params), a ``LambdaLR`` from an ``learner.schedules`` lambda, and
  calls ``deepspeed.initialize``.
* ``iter_gathered_state`` streams full tensors to rank 0 one at a time (ZeRO-3-aware);
  ``gathered_state_dict`` collects them into a dict.

This module does not compute losses, load models or write checkpoints.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.distributed as dist

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def skip_shm_comm_build() -> None:
    """Stop DeepSpeed from compiling its shared-memory CPU comm op (55-100 s per fresh machine,
    see ENVIRONMENT.md); gloo collectives are used instead. Harmless on GPU (never built)."""
    import deepspeed.comm.torch  # noqa: F401  (registers the module we patch)

    # Any: a module's functions are not declared assignable; sys.modules because the package
    # attribute ``deepspeed.comm.torch`` may name the torch package, not this submodule.
    module: Any = sys.modules["deepspeed.comm.torch"]
    module.build_shm_op = lambda: None


def default_backend() -> str:
    """``nccl`` when a CUDA device is visible, else ``gloo``."""
    return "nccl" if torch.cuda.is_available() else "gloo"


def init_distributed(
    *, rank: int, world_size: int, master_addr: str, master_port: int, backend: str
) -> None:
    """Join the process group (TCP rendezvous) unless this process already belongs to one of the
    same size, then initialise DeepSpeed's comm layer on top of it."""
    import deepspeed

    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
    if dist.is_initialized():
        if dist.get_world_size() != world_size or dist.get_rank() != rank:
            raise RuntimeError(
                f"torch.distributed already initialised as rank {dist.get_rank()} of "
                f"{dist.get_world_size()}, but this learner is rank {rank} of {world_size}"
            )
    else:
        dist.init_process_group(
            backend=backend,
            init_method=f"tcp://{master_addr}:{master_port}",
            rank=rank,
            world_size=world_size,
        )
    # DeepSpeed's engine reads LOCAL_RANK from the environment and refuses to start without
    # it; launchers (torchrun, LearnerGroup's runtime_env) set it, in-process use needs it too.
    local_rank = os.environ.setdefault("LOCAL_RANK", "0")
    if torch.cuda.is_available():
        torch.cuda.set_device(int(local_rank))
    deepspeed.init_distributed(dist_backend=backend, auto_mpi_discovery=False)


def build_ds_config(*, zero_stage: int, dtype: str, grad_clip: float) -> dict[str, Any]:
    """DeepSpeed config dict. ``train_micro_batch_size_per_gpu`` / ``gradient_accumulation_steps``
    are nominal (1/1): the learner marks the accumulation boundary itself (see ``Learner``)."""
    if zero_stage not in (0, 1, 2, 3):
        raise ValueError(f"zero_stage must be 0, 1, 2 or 3, got {zero_stage}")
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    if grad_clip < 0:
        raise ValueError(f"grad_clip must be >= 0 (0 disables clipping), got {grad_clip}")
    zero: dict[str, Any] = {"stage": zero_stage}
    if zero_stage == 3:
        # Gather whole small models at once and keep nothing persistent beyond tiny params.
        zero.update({"stage3_gather_16bit_weights_on_model_save": False})
    return {
        "train_micro_batch_size_per_gpu": 1,
        "gradient_accumulation_steps": 1,
        "gradient_clipping": float(grad_clip),
        "zero_optimization": zero,
        "bf16": {"enabled": dtype == "bfloat16"},
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }


def _full_shape(param: torch.nn.Parameter) -> torch.Size:
    # Under ZeRO-3 a partitioned parameter's .shape is empty; ds_shape keeps the real one.
    return getattr(param, "ds_shape", param.shape)


def optimizer_param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Two AdamW groups: decay on >= 2-D weights, none on biases and norm scales (1-D). An
    empty group is left out (LoRA trains matrices only; DeepSpeed drops empty groups, which
    would leave the LR scheduler one lambda too many)."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        is_matrix = len(_full_shape(param)) >= 2 and not name.endswith(".bias")
        (decay if is_matrix else no_decay).append(param)
    groups = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return [group for group in groups if group["params"]]


def create_engine(
    model: torch.nn.Module,
    *,
    ds_config: dict[str, Any],
    lr: float,
    weight_decay: float,
    betas: tuple[float, float],
    eps: float,
    lr_lambda: Callable[[int], float],
) -> Any:
    """``deepspeed.initialize`` with torch AdamW and a LambdaLR; returns the engine."""
    import deepspeed

    optimizer = torch.optim.AdamW(
        optimizer_param_groups(model, weight_decay), lr=lr, betas=betas, eps=eps
    )
    # LambdaLR sets each group's lr to lr * lr_lambda(0) now and steps with DeepSpeed's step().
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda)
    engine, _, _, _ = deepspeed.initialize(
        model=model, optimizer=optimizer,
        lr_scheduler=scheduler,  # pyright: ignore[reportArgumentType]  # annotated _LRScheduler; LambdaLR's LRScheduler base is what DeepSpeed steps
        config=ds_config,
    )
    return engine


@contextmanager
def gathered(params: list[torch.nn.Parameter], zero_stage: int) -> Iterator[None]:
    """Materialise full ZeRO-3 parameters on every rank for the duration (read-only); a no-op
    for stages 0-2, whose module parameters are always whole. Call on ALL ranks."""
    if zero_stage == 3:
        import deepspeed

        with deepspeed.zero.GatheredParameters(params, modifier_rank=None):
            yield
    else:
        yield


def iter_gathered_state(
    module: torch.nn.Module, *, zero_stage: int, rank: int, dtype: torch.dtype | None = None
) -> Iterator[tuple[str, torch.Tensor]]:
    """Full CPU copies of every parameter and persistent buffer, one at a time, named as in
    ``module``: a stream, so a consumer that sends and drops each tensor (a bucketed weight
    sync) holds one tensor's copy, not the whole model.

    Every rank must exhaust it (ZeRO-3 all-gathers each parameter on all ranks); only rank 0
    gets items. Tied parameters appear once, under their first name. ``dtype`` casts floating
    tensors (None keeps the module's). Items are yielded outside the gather, so whatever the
    consumer does between items (a broadcast) never runs inside a ZeRO-3 collective.
    """

    def copy(tensor: torch.Tensor) -> torch.Tensor:
        tensor = tensor.detach()
        if dtype is not None and tensor.is_floating_point():
            tensor = tensor.to(dtype)
        return tensor.to("cpu", copy=True)

    for name, param in module.named_parameters():
        with gathered([param], zero_stage):
            item = copy(param.data) if rank == 0 else None
        if item is not None:
            yield name, item
    param_names = {name for name, _ in module.named_parameters()}
    for name, buffer in module.state_dict(keep_vars=True).items():
        if rank == 0 and name not in param_names and not isinstance(buffer, torch.nn.Parameter):
            yield name, copy(buffer)


def gathered_state_dict(
    module: torch.nn.Module, *, zero_stage: int, rank: int, dtype: torch.dtype | None = None
) -> dict[str, torch.Tensor] | None:
    """``iter_gathered_state`` collected into a dict on rank 0 (None elsewhere). Must be
    called on ALL ranks; peak extra memory is the whole model on rank 0 (use the iterator to
    stream instead)."""
    state = dict(iter_gathered_state(module, zero_stage=zero_stage, rank=rank, dtype=dtype))
    return state if rank == 0 else None
