"""``Learner``: one data-parallel rank of a policy (or critic) trained with DeepSpeed ZeRO 0-3.

A plain class (Ray wraps it in ``learner.launch``). Every public method is called on every rank
with that rank's shard; each ``train_*`` call is exactly one optimizer step over its list of
micro-batches (gradient accumulation), and all ranks must pass the same number of micro-batches
(ZeRO-3 gathers parameters collectively in every forward).

Loss scaling, stated once: the ``num_tokens`` / ``num_seqs`` / ``num_pairs`` arguments are GLOBAL
normalisers (over all ranks and micro-batches of the step), so the per-micro-batch losses of all
ranks SUM to the full-batch loss. DeepSpeed would (a) divide each loss by its configured
accumulation steps and (b) AVERAGE gradients over ranks. We call ``backward(...,
scale_wrt_gas=False)`` with accumulation steps nominally 1 and mark the boundary ourselves
(no (a)), and multiply each loss by ``world_size`` (undoing (b)). Hence 2 ranks x k micro-batches
produce the same gradient as one rank holding the whole batch.

Metrics are global: sums over micro-batches all-reduced across ranks; per-micro-batch diagnostic
means are weighted by their share of tokens (or pairs). This module does not shard data, talk
to rollout engines or decide when to checkpoint.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist

from learner.critic import values_from_output
from learner.engine import (
    DTYPES,
    build_ds_config,
    create_engine,
    default_backend,
    init_distributed,
    skip_shm_comm_build,
)
from learner.loading import EngineView, load_model, maybe_tokenizer, seed_everything
from learner.lora import disabled_adapters, is_lora, wrap_lora
from learner.losses import (
    LossFn,
    dpo_loss_fn,
    micro_batch_to,
    micro_batch_tokens,
    policy_loss_fn,
    sft_loss_fn,
    trim_to_targets,
    value_loss_fn,
)
from learner.prefix import plan_shared_prompts, shared_prompt_forward, unalign
from learner.resume import CheckpointMixin
from learner.schedules import build_lr_lambda
from learner.sync import WeightSyncMixin
from rlsys.algo import sequence_logps, token_logprobs
from rlsys.data.attention import packed_forward
from rlsys.types import Experience, PolicyLossSpec, TokenBatch


class Learner(WeightSyncMixin, CheckpointMixin):
    """One rank of a DeepSpeed-trained causal LM (or, with ``value_head=True``, a critic).

    Args (all keyword-only):
        model_path: HF directory or a ``rlsys.modeling`` short name (``tiny-llama``).
        rank, world_size, master_addr, master_port: the data-parallel group (TCP rendezvous).
        zero_stage: DeepSpeed ZeRO stage 0-3. dtype: ``float32`` or ``bfloat16``.
        lr, weight_decay, betas, eps: torch AdamW (peak LR; decay skips biases and norms).
        grad_clip: global gradient-norm clip (0 disables). Accumulation steps are not an
            argument: each ``train_*`` call accumulates over the micro-batches it is given.
        schedule, schedule_kwargs, total_steps: an entry of ``learner.schedules.SCHEDULES``.
        seed: model-init seed (all ranks); rank ``r`` then runs with ``seed + r``.
        backend: ``gloo`` / ``nccl`` (default: ``nccl`` when CUDA is visible).
        value_head: build a critic (``learner.critic``) instead of a causal LM.
        gradient_checkpointing: recompute activations in backward.
        num_threads: ``torch.set_num_threads`` for this process (None leaves it).
        lora: ``{r, alpha, dropout, target_modules, modules_to_save}`` trains peft LoRA adapters
            instead of the whole model (``learner.lora``); None: full fine-tuning.
    """

    def __init__(
        self,
        *,
        model_path: str,
        rank: int = 0,
        world_size: int = 1,
        master_addr: str = "127.0.0.1",
        master_port: int = 29500,
        zero_stage: int = 0,
        dtype: str = "float32",
        lr: float = 1e-5,
        weight_decay: float = 0.0,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        grad_clip: float = 1.0,
        schedule: str = "constant",
        schedule_kwargs: dict[str, Any] | None = None,
        total_steps: int = 1,
        seed: int = 0,
        backend: str | None = None,
        value_head: bool = False,
        gradient_checkpointing: bool = False,
        num_threads: int | None = 1,
        lora: dict[str, Any] | None = None,
    ) -> None:
        from rlsys.modeling import resolve_model

        if num_threads is not None:
            torch.set_num_threads(num_threads)  # one thread per rank: see ENVIRONMENT.md
        self.rank, self.world_size, self.zero_stage = rank, world_size, zero_stage
        self.value_head, self.dtype = value_head, dtype
        self.step = 0
        ds_config = build_ds_config(zero_stage=zero_stage, dtype=dtype, grad_clip=grad_clip)
        lr_lambda = build_lr_lambda(schedule, total_steps=total_steps, **(schedule_kwargs or {}))
        skip_shm_comm_build()
        init_distributed(
            rank=rank,
            world_size=world_size,
            master_addr=master_addr,
            master_port=master_port,
            backend=backend or default_backend(),
        )
        seed_everything(seed)  # same on all ranks: identical freshly initialised heads
        self.model_dir = resolve_model(model_path)
        model = self._load_model(
            ds_config, value_head=value_head, dtype=DTYPES[dtype],
            gradient_checkpointing=gradient_checkpointing,
        )  # fmt: skip
        if lora:
            model = wrap_lora(model, lora, value_head=value_head, model_dir=self.model_dir)
        self._engine = create_engine(
            model, ds_config=ds_config, lr=lr, weight_decay=weight_decay, betas=betas, eps=eps,
            lr_lambda=lr_lambda,
        )  # fmt: skip
        self.device = self._engine.device
        self._model_view = EngineView(self._engine)
        # Shared-prompt forwards (learner.prefix) need the KV cache: not with activation
        # recomputation, ZeRO-3 (untested with two forwards per micro-batch) or flash varlen.
        attn = getattr(self._engine.module.config, "_attn_implementation", "") or ""
        self.share_prompts = not (
            value_head or gradient_checkpointing or zero_stage == 3
            or attn.startswith("flash_attention")
        )  # fmt: skip
        self._tokenizer = maybe_tokenizer(self.model_dir) if rank == 0 else None
        seed_everything(seed + rank)

    def _load_model(
        self, ds_config: dict[str, Any], *, value_head: bool, dtype: torch.dtype,
        gradient_checkpointing: bool,
    ) -> torch.nn.Module:
        """The module to train: a causal LM or critic (``learner.loading.load_model``).
        Subclasses build other heads (``learner.reward.RewardLearner``)."""
        return load_model(
            self.model_dir, ds_config, value_head=value_head, dtype=dtype,
            gradient_checkpointing=gradient_checkpointing,
        )  # fmt: skip

    def info(self) -> dict[str, Any]:
        """Plain facts about this rank (Ray callers cannot read attributes directly)."""
        return {
            "rank": self.rank,
            "world_size": self.world_size,
            "zero_stage": self.zero_stage,
            "step": self.step,
            "value_head": self.value_head,
            "dtype": self.dtype,
            "model_dir": self.model_dir,
            "num_threads": torch.get_num_threads(),
            "share_prompts": self.share_prompts,
            "lora": is_lora(self._engine.module),
        }

    # ----------------------------------------------------------------- forward (no grad)
    @torch.no_grad()
    def forward_logprobs(self, batch: TokenBatch) -> torch.Tensor:
        """(B, T) float32 CPU token log-probs under the current weights, 0 where ``mask`` is
        False (used for old and reference log-probs)."""
        self._engine.eval()
        batch = batch.to(self.device)
        width = batch.input_ids.shape[1]
        plan = plan_shared_prompts(batch) if self.share_prompts else None
        if plan is not None:
            aligned, logits = plan.aligned, shared_prompt_forward(self._model_view, plan)
            logprobs = token_logprobs(logits, aligned.input_ids)
            return unalign(torch.where(aligned.mask, logprobs, 0).float(), plan, width).cpu()
        trimmed, keep = trim_to_targets(batch)
        logits = packed_forward(self._model_view, batch, logits_to_keep=keep)
        logprobs = token_logprobs(logits, trimmed.input_ids)
        logprobs = torch.where(trimmed.mask, logprobs, 0).float()
        return torch.nn.functional.pad(logprobs, (width - logprobs.shape[1], 0)).cpu()

    @torch.no_grad()
    def forward_sequence_logps(self, batch: TokenBatch) -> torch.Tensor:
        """(B,) float32 CPU sums of the masked token log-probs (DPO reference log-probs)."""
        return sequence_logps(self.forward_logprobs(batch), batch.mask)

    @torch.no_grad()
    def forward_ref_logprobs(self, batch: TokenBatch) -> torch.Tensor:
        """``forward_logprobs`` of the LoRA reference: this model with its adapters disabled
        (the stage's starting weights; no second model copy). Needs ``lora``."""
        with disabled_adapters(self._engine.module, "forward_ref_logprobs"):
            return self.forward_logprobs(batch)

    @torch.no_grad()
    def forward_ref_sequence_logps(self, batch: TokenBatch) -> torch.Tensor:
        """(B,) ``forward_sequence_logps`` with the adapters disabled (DPO's LoRA reference)."""
        return sequence_logps(self.forward_ref_logprobs(batch), batch.mask)

    @torch.no_grad()
    def forward_values(self, batch: TokenBatch) -> torch.Tensor:
        """(B, T) float32 CPU critic values aligned with tokens (``values[:, t]`` estimates the
        state before token ``t``), 0 where ``mask`` is False. Needs ``value_head=True``."""
        self._require_critic("forward_values")
        self._engine.eval()
        batch = batch.to(self.device)
        values = self._values(batch)
        return torch.where(batch.mask, values, 0).float().cpu()

    def _values(self, batch: TokenBatch) -> torch.Tensor:
        return values_from_output(packed_forward(self._model_view, batch))

    # ----------------------------------------------------------------- training steps
    def train_sft(
        self,
        micro_batches: Sequence[TokenBatch],
        *,
        aggregation: str = "token_mean",
        num_tokens: int,
        num_seqs: int | None = None,
    ) -> dict[str, float]:
        """One step of masked NLL (SFT; CPT is the same with every non-first token masked
        True). ``num_tokens`` / ``num_seqs``: global counts of masked tokens / documents."""
        loss_fn = sft_loss_fn(aggregation=aggregation, num_tokens=num_tokens, num_seqs=num_seqs)
        return self._optimizer_step(micro_batches, loss_fn, "train_sft")

    def train_dpo(
        self,
        micro_batches: Sequence[tuple[TokenBatch, TokenBatch, torch.Tensor, torch.Tensor]],
        *,
        loss: str = "sigmoid",
        beta: float = 0.1,
        label_smoothing: float = 0.0,
        num_pairs: int,
    ) -> dict[str, float]:
        """One DPO step; each micro-batch is ``(chosen, rejected, ref_chosen_logps,
        ref_rejected_logps)`` with (B,) reference log-probs computed beforehand (e.g. by
        ``forward_sequence_logps`` before training). ``num_pairs``: global pair count."""
        loss_fn = dpo_loss_fn(
            loss=loss, beta=beta, label_smoothing=label_smoothing, num_pairs=num_pairs
        )
        return self._optimizer_step(micro_batches, loss_fn, "train_dpo")

    def train_policy(
        self,
        micro_batches: Sequence[Experience],
        *,
        spec: PolicyLossSpec | None = None,
        num_tokens: int,
        num_seqs: int,
    ) -> dict[str, float]:
        """One policy-gradient step (PPO/GRPO/RLOO/...) with the stage's loss ``spec`` (default
        ``PolicyLossSpec()``: PPO-clip, token mean, no KL): objective + ``kl_coef`` x KL-to-ref
        (as a loss) - ``entropy_coef`` x entropy, all reduced with its aggregation. Missing
        ``old_logprobs`` mean on-policy (the current log-probs, detached)."""
        loss_fn = policy_loss_fn(spec or PolicyLossSpec(), num_tokens=num_tokens,
                                 num_seqs=num_seqs)
        return self._optimizer_step(micro_batches, loss_fn, "train_policy")

    def train_value(
        self, micro_batches: Sequence[Experience], *, clip: float = 0.2, num_tokens: int
    ) -> dict[str, float]:
        """One critic step on the clipped value loss (token mean over ``num_tokens``); needs
        ``values`` (at rollout time) and ``returns`` in every Experience."""
        self._require_critic("train_value")
        loss_fn = value_loss_fn(clip=clip, num_tokens=num_tokens)
        return self._optimizer_step(micro_batches, loss_fn, "train_value")

    def _optimizer_step(
        self, micro_batches: Sequence[Any], loss_fn: LossFn, method: str
    ) -> dict[str, float]:
        """Backward on every micro-batch (see the module docstring for the scaling), one
        optimizer step, global metrics."""
        self._check_micro_batch_count(len(micro_batches), method)
        engine = self._engine
        engine.train()
        lr = float(engine.lr_scheduler.get_last_lr()[0])
        sums: dict[str, torch.Tensor] = {}
        for index, micro_batch in enumerate(micro_batches):
            engine.set_gradient_accumulation_boundary(index == len(micro_batches) - 1)
            micro_batch, logits = self._forward(micro_batch_to(micro_batch, self.device))
            loss, metrics = loss_fn(micro_batch, logits)
            engine.backward(loss * self.world_size, scale_wrt_gas=False)
            for name, value in {"loss": loss.detach(), **metrics}.items():
                sums[name] = sums.get(name, 0.0) + value.detach().double()  # stays on device
        manual_norm = self._grad_norm() if self.zero_stage == 0 else None
        engine.step()
        self.step += 1
        out = self._all_reduce_sum(sums)
        grad_norm = engine.get_global_grad_norm()
        out["grad_norm"] = float(grad_norm if grad_norm is not None else manual_norm or 0.0)
        out["lr"] = lr
        return out

    def _forward(self, micro_batch: Any) -> tuple[Any, torch.Tensor]:
        """``(micro-batch the loss should read, logits aligned with it)``: a shared-prompt
        forward when rows share prompts, else the LM head only from the first target column
        on (policy models), else the plain forward (critics)."""
        tokens = micro_batch_tokens(micro_batch)
        if self.value_head:
            return micro_batch, packed_forward(self._model_view, tokens)
        plan = plan_shared_prompts(micro_batch) if self.share_prompts else None
        if plan is not None:
            return plan.aligned, shared_prompt_forward(self._model_view, plan)
        trimmed, keep = trim_to_targets(micro_batch)
        return trimmed, packed_forward(self._model_view, tokens, logits_to_keep=keep)

    def _grad_norm(self) -> float:
        # Stage 0 with a plain torch optimizer reports no norm; grads are already reduced here.
        grads = [p.grad.float() for p in self._engine.module.parameters() if p.grad is not None]
        return (
            float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])))
            if grads
            else 0.0
        )

    def _check_micro_batch_count(self, count: int, method: str) -> None:
        if count < 1:
            raise ValueError(f"{method}: micro_batches is empty on rank {self.rank}")
        counts = torch.tensor([count, -count], dtype=torch.long, device=self.device)
        dist.all_reduce(counts, op=dist.ReduceOp.MAX)
        if counts[0].item() != count or -counts[1].item() != count:
            raise ValueError(
                f"{method}: ranks received different numbers of micro-batches (this rank "
                f"{self.rank}: {count}, max {counts[0].item()}, min {-counts[1].item()}); "
                "shard them evenly (learner.launch.shard)"
            )

    def _all_reduce_sum(self, sums: dict[str, torch.Tensor]) -> dict[str, float]:
        names = sorted(sums)
        stacked = torch.stack([torch.as_tensor(sums[n]) for n in names]).to(self.device)
        dist.all_reduce(stacked, op=dist.ReduceOp.SUM)
        return {name: float(value) for name, value in zip(names, stacked.tolist(), strict=True)}

    def _require_critic(self, method: str) -> None:
        if not self.value_head:
            raise RuntimeError(
                f"{method} needs a critic: construct the Learner with value_head=True"
            )

    # ----------------------------------------------------------------- weights and checkpoints
