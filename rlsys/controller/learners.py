"""The controller's view of a learner group: split rows into equal micro-batch counts per rank,
fan a call out, gather results.

Wraps ``learner.launch`` groups (Ray actors, or in-process for one rank). Unpacks recipe
sections into the plain ``Learner`` arguments. Does not do any math itself.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import torch

from rlsys.types import TokenBatch

if TYPE_CHECKING:
    from rlsys.config import Recipe, StageConfig


def split_rows(num_rows: int, micro_batch_size: int, world_size: int) -> list[list[range]]:
    """Row ranges per rank: every rank gets the same number of non-empty micro-batches.

    >>> [[(r.start, r.stop) for r in rank] for rank in split_rows(5, 2, 2)]
    [[(0, 1), (1, 2)], [(2, 3), (3, 5)]]
    """
    if num_rows < world_size:
        raise ValueError(f"{num_rows} rows cannot be shared by {world_size} learner ranks")
    per_rank = math.ceil(math.ceil(num_rows / micro_batch_size) / world_size)
    chunks = per_rank * world_size
    while chunks > num_rows:  # every chunk must hold at least one row
        per_rank -= 1
        chunks = per_rank * world_size
    bounds = [i * num_rows // chunks for i in range(chunks + 1)]
    ranges = [range(bounds[i], bounds[i + 1]) for i in range(chunks)]
    return [ranges[r * per_rank:(r + 1) * per_rank] for r in range(world_size)]


def take_rows(batch: Any, rows: range) -> Any:
    """Rows of a ``TokenBatch`` / ``Experience`` (any dataclass of row-major tensors)."""
    from rlsys.controller.experience import select

    index = torch.arange(rows.start, rows.stop)
    if isinstance(batch, TokenBatch):
        return TokenBatch(batch.input_ids[index], batch.position_ids[index],
                          batch.seq_ids[index], batch.mask[index])
    return select(batch, index)


def stage_lora(recipe: Recipe, stage: StageConfig) -> dict[str, Any] | None:
    """The plain ``Learner(lora=...)`` dict of a stage (its override, else ``model.lora``), or
    None when the stage trains the whole model."""
    lora = stage.lora_for(recipe.model)
    if lora is None:
        return None
    return {"r": lora.r, "alpha": lora.alpha, "dropout": lora.dropout,
            "target_modules": list(lora.target_modules),
            "modules_to_save": list(lora.modules_to_save)}


def check_lora(model_path: str, lora: dict[str, Any], *, value_head: bool = False) -> None:
    """Raise ``RecipeError`` (exit 2) when peft cannot put ``lora`` on the model, before any
    learner starts; the message lists the modules the model has or names the model."""
    from learner.lora import check_lora_for_model
    from rlsys.config import RecipeError

    try:
        check_lora_for_model(model_path, lora, value_head=value_head)
    except ValueError as exc:
        raise RecipeError("recipe", [("model.lora (or stages[].lora)", str(exc))]) from None


def learner_kwargs(recipe: Recipe, model_path: str, *, total_steps: int, lr: float | None = None,
                   value_head: bool = False, lora: dict[str, Any] | None = None
                   ) -> dict[str, Any]:
    """Plain ``Learner`` constructor arguments from the recipe's ``learner`` section."""
    lc = recipe.learner
    sched = lc.schedule
    schedule_kwargs = {"warmup_steps": sched.warmup_steps, **sched.kwargs}
    if sched.name != "constant":
        schedule_kwargs.setdefault("min_lr_ratio", sched.min_lr_ratio)
    if sched.name == "rewarm":  # climb again from where the previous stage's decay ended
        schedule_kwargs.setdefault("start_lr_ratio", sched.min_lr_ratio)
    if sched.name == "wsd":
        schedule_kwargs.setdefault("decay_steps", max(1, total_steps // 10))
    return dict(model_path=model_path, zero_stage=lc.zero_stage, dtype=recipe.model.dtype,
                lr=lr or lc.lr, weight_decay=lc.weight_decay, betas=tuple(lc.betas), eps=lc.eps,
                grad_clip=lc.grad_clip, schedule=sched.name, schedule_kwargs=schedule_kwargs,
                total_steps=total_steps, seed=recipe.seed, value_head=value_head,
                gradient_checkpointing=lc.gradient_checkpointing, lora=lora)


class LearnerGroupLike(Protocol):
    """The learner-group methods a stage loop calls (``Learners``, or an in-process fake)."""

    lora: dict[str, Any] | None

    def forward(self, method: str, batch: Any) -> torch.Tensor:
        """A no-grad forward over all rows, rows back in order."""
        ...

    def train(self, method: str, batch: Any, **kwargs: Any) -> dict[str, float]:
        """One optimizer step on all rows; rank 0's metrics."""
        ...

    def weights_for_sync(self) -> Any:
        """What a rollout weight sync sends."""
        ...

    def save_checkpoint(self, path: str, extra_state: dict[str, Any], *,
                        training_state: bool = True) -> str:
        """Save the model (and training state) at ``path``."""
        ...

    def load_checkpoint(self, path: str) -> dict[str, Any]:
        """Restore a checkpoint; returns its ``extra_state``."""
        ...

    def shutdown(self) -> None:
        """Stop the ranks."""
        ...


class Learners:
    """A learner group as the controller uses it (``world_size`` ranks)."""

    def __init__(self, recipe: Recipe, model_path: str, *, total_steps: int,
                 lr: float | None = None, value_head: bool = False, name: str = "policy",
                 learner_cls: type | None = None, lora: dict[str, Any] | None = None) -> None:
        from learner.launch import LearnerGroup
        from rlsys.controller.context import role_placement

        lc = recipe.learner
        self.lora = lora  # LoRA adapters (learner.lora): adapter-only syncs, disabled-adapter ref
        if lora:
            check_lora(model_path, lora, value_head=value_head)
        self.name = name
        self.micro_batch_size = lc.micro_batch_size
        self.group = LearnerGroup(
            lc.num_ranks, num_cpus_per_actor=lc.num_cpus_per_rank,
            num_gpus_per_actor=lc.num_gpus_per_rank, timeout_s=recipe.cluster.timeout_s,
            log_name=name,  # RUN_DIR/logs/policy-0.log, reference-0.log, ...
            placement=role_placement(recipe, name),  # cluster.placement (learner fallback)
            **({"learner_cls": learner_cls} if learner_cls is not None else {}),
            **learner_kwargs(recipe, model_path, total_steps=total_steps, lr=lr,
                             value_head=value_head, lora=lora))
        self.world_size = lc.num_ranks

    def _shards(self, batch: Any, micro: Callable[[Any], Any] = lambda b: b) -> list[list[Any]]:
        rows = batch.tokens.input_ids.shape[0] if hasattr(batch, "tokens") else \
            batch.input_ids.shape[0]
        plan = split_rows(rows, self.micro_batch_size, self.world_size)
        return [[micro(take_rows(batch, r)) for r in rank] for rank in plan]

    def forward(self, method: str, batch: Any) -> torch.Tensor:
        """Run a no-grad forward (``forward_logprobs`` / ``forward_values`` /
        ``forward_sequence_logps``) over all rows, split across ranks; rows back in order."""
        shards = self._shards(batch)
        per_rank = len(shards[0])
        outputs: list[list[torch.Tensor]] = [[] for _ in shards]
        for i in range(per_rank):  # all ranks at once: ZeRO-3 gathers are collective
            for rank, out in enumerate(self.group.call_sharded(method, [s[i] for s in shards])):
                outputs[rank].append(out)
        return _cat_rows([t for rank in outputs for t in rank])

    def train(self, method: str, batch: Any, **kwargs: Any) -> dict[str, float]:
        """One optimizer step of ``train_*`` on all rows (equal micro-batch count per rank)."""
        return self.group.call_sharded(method, self._shards(batch), **kwargs)[0]

    def train_micro(self, method: str, shards: list[list[Any]], **kwargs: Any) -> dict[str, float]:
        """One optimizer step on micro-batches already split per rank."""
        return self.group.call_sharded(method, shards, **kwargs)[0]

    def state_dict_for_sync(self) -> dict[str, torch.Tensor]:
        """Full weights gathered on rank 0 (ZeRO-3 aware), HF names."""
        return self.group.state_dict_for_sync()

    def weights_for_sync(self) -> Any:
        """What a rollout sync sends: the adapter alone (a ``PackedState`` marked with its
        layout) when this group trains LoRA adapters, else every weight (merged)."""
        if not self.lora:
            return self.group.state_dict_for_sync()
        from actors.weight_sync import pack_state_dict

        adapter, layout = self.group.call("adapter_for_sync")[0]
        return pack_state_dict(adapter, meta={"lora": layout})

    # the actors.collective.WeightSender side of a driver-free sync (actors.collective_sync)
    def open_weight_group(self, world_size: int, epoch: int, backend: str,
                          timeout_s: float) -> dict[str, Any]:
        """Rank 0 hosts a new weight group's store; returns its spec."""
        return self.group.open_weight_group(world_size, epoch, backend, timeout_s)

    def join_weight_group(self, spec: dict[str, Any]) -> None:
        """Rank 0 joins the group (blocks until every rollout worker has joined)."""
        self.group.join_weight_group(spec)

    def send_weights(self, version: int, bucket_bytes: int) -> dict[str, float]:
        """Every rank gathers, rank 0 broadcasts (the adapter alone with LoRA)."""
        return self.group.send_weights(version, bucket_bytes)

    # the colocated CUDA-IPC sync (rollout.weight_sync: ipc; actors.launch.RolloutPool.sync_ipc)
    def ipc_payload(self, version: int) -> dict[str, Any]:
        """Rank 0's CUDA-IPC handles to its gathered weights (the adapter alone with LoRA)."""
        return self.group.ipc_payload(version)

    def release_ipc(self) -> None:
        """Rank 0 frees the buffers behind the last ``ipc_payload``."""
        self.group.release_ipc()

    def gpu_uuid(self) -> str | None:
        """Rank 0's GPU UUID (None on CPU): where a colocated rollout worker would be."""
        return self.group.gpu_uuid()

    def save_checkpoint(self, path: str, extra_state: dict[str, Any], *,
                        training_state: bool = True) -> str:
        """Save an HF dir + training state (atomic) at ``path``; ``training_state=False``
        saves the weights only (a stage's final model)."""
        self.group.save_checkpoint(path, extra_state=extra_state, training_state=training_state)
        return path

    def load_checkpoint(self, path: str) -> dict[str, Any]:
        """Restore model/optimizer/scheduler/RNG; returns the saved ``extra_state``."""
        return self.group.load_checkpoint(path)

    def shutdown(self) -> None:
        """Stop the ranks."""
        self.group.shutdown()



def _cat_rows(parts: list[torch.Tensor]) -> torch.Tensor:
    """Concatenate per-micro-batch outputs whose second dim (T) may differ (right-pad with 0)."""
    if parts[0].dim() == 1:
        return torch.cat(parts)
    width = max(p.shape[1] for p in parts)
    return torch.cat([torch.nn.functional.pad(p, (0, width - p.shape[1])) for p in parts])
