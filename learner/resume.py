"""The learner's checkpoint methods (a mixin of ``learner.learner.Learner``): write an atomic
Hugging Face directory plus DeepSpeed optimizer/scheduler state and per-rank RNG, and restore
them exactly. The directory layout and the atomic commit live in ``learner.checkpoint``; this
module adds the DeepSpeed engine and the ranks' barriers. It does not decide when to save.
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from learner import checkpoint as ckpt
from learner.model_io import save_model_dir

DEEPSPEED_DIR = "deepspeed"
DEEPSPEED_TAG = "state"


class CheckpointMixin:
    """Checkpoint methods of ``Learner``; needs its ``_engine``, ``_tokenizer``, ``rank``,
    ``world_size``, ``zero_stage`` and ``step``."""

    _engine: Any
    _tokenizer: Any
    rank: int
    world_size: int
    zero_stage: int
    step: int

    def save_checkpoint(
        self,
        path: str | Path,
        *,
        extra_state: dict[str, Any] | None = None,
        training_state: bool = True,
    ) -> Path:
        """Atomically write an HF directory plus training state (see ``learner.checkpoint``) to
        ``path``; the previous content of ``path`` survives any failure. Call on ALL ranks.

        ``training_state=False`` writes the model and ``trainer_state.json`` only, no optimizer,
        scheduler or RNG (a stage's final model: 1/3 of the bytes for AdamW in fp32); such a
        directory cannot be resumed from (``load_checkpoint`` says so)."""
        path = Path(path)
        token = self._broadcast_token()
        tmp = ckpt.tmp_dir_for(path, token)
        try:
            if self.rank == 0:
                (tmp / ckpt.TRAINING_STATE).mkdir(parents=True)
            dist.barrier()
            save_model_dir(self._engine.module, tmp, zero_stage=self.zero_stage, rank=self.rank,
                           tokenizer=self._tokenizer, merged=not training_state)
            if training_state:
                self._engine.save_checkpoint(
                    str(tmp / ckpt.TRAINING_STATE / DEEPSPEED_DIR),
                    tag=DEEPSPEED_TAG,
                    save_latest=False,
                )
                torch.save(ckpt.capture_rng_state(), ckpt.rng_file(tmp, self.rank))
            dist.barrier()
            if self.rank == 0:
                state = {
                    "step": self.step,
                    "world_size": self.world_size,
                    "zero_stage": self.zero_stage,
                    "extra_state": extra_state or {},
                    "training_state": training_state,
                }
                ckpt.write_trainer_state(tmp, state)
                ckpt.commit_dir(tmp, path)
            dist.barrier()
        except BaseException:
            if self.rank == 0:
                shutil.rmtree(tmp, ignore_errors=True)
            raise
        return path

    def load_checkpoint(self, path: str | Path) -> dict[str, Any]:
        """Restore weights, optimizer, LR scheduler, RNG and step from ``path``; returns the
        ``extra_state`` given at save time. Call on ALL ranks, with the same world size and
        ZeRO stage as at save time."""
        path = Path(path)
        state = ckpt.read_trainer_state(path)
        if not state.get("training_state", True):
            raise ValueError(
                f"checkpoint {path} holds the model weights only (a stage's final save, no "
                "optimizer/scheduler/RNG state); resume from a ckpt/step_N directory, or load "
                "the weights as a new model"
            )
        saved = (state["world_size"], state["zero_stage"])
        if saved != (self.world_size, self.zero_stage):
            raise ValueError(
                f"checkpoint {path} was saved with world_size={saved[0]}, zero_stage={saved[1]}; "
                f"this learner has world_size={self.world_size}, zero_stage={self.zero_stage}"
            )
        load_path, _ = self._engine.load_checkpoint(
            str(path / ckpt.TRAINING_STATE / DEEPSPEED_DIR),
            tag=DEEPSPEED_TAG,
            load_optimizer_states=True,
            load_lr_scheduler_states=True,
        )
        if load_path is None:
            raise FileNotFoundError(f"DeepSpeed found no engine state under {path}")
        ckpt.restore_rng_state(torch.load(ckpt.rng_file(path, self.rank), weights_only=False))
        self.step = int(state["step"])
        return dict(state["extra_state"])

    def _broadcast_token(self) -> str:
        token = [uuid.uuid4().hex if self.rank == 0 else None]
        dist.broadcast_object_list(token, src=0)
        return str(token[0])
