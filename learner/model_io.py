"""The model part of a learner's saves and syncs: gather the weights (ZeRO-3 aware) and write
a Hugging Face directory, a critic directory, or LoRA adapter directories.

LoRA layout (``learner.lora``): a checkpoint (``merged=False``) is an adapter directory, which
``PeftModel.from_pretrained`` and vLLM's LoRA loader read as it is; a final save (``merged``)
is the merged Hugging Face model with the adapter beside it in ``adapter/``. This module does
not write training state (``learner.checkpoint``, DeepSpeed) or decide when to save.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch

from learner.critic import CriticModel, save_critic
from learner.engine import gathered_state_dict
from learner.lora import (
    ADAPTER_DIR,
    gathered_adapter,
    is_lora,
    merged_state,
    require_lora,
    save_adapter_dir,
    sync_meta,
)

if TYPE_CHECKING:
    from peft import PeftModel
    from transformers import PreTrainedModel


def full_state(module: torch.nn.Module, *, zero_stage: int, rank: int,
               dtype: torch.dtype | None = None) -> dict[str, torch.Tensor] | None:
    """Every weight on rank 0 (None elsewhere), named as the plain model names it: a LoRA
    model's adapters are merged. Call on ALL ranks."""
    state = gathered_state_dict(module, zero_stage=zero_stage, rank=rank, dtype=dtype)
    return merged_state(module, state) if state is not None and is_lora(module) else state


def adapter_payload(module: torch.nn.Module, *, zero_stage: int, rank: int,
                    dtype: torch.dtype | None = None
                    ) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
    """``(adapter tensors named as in adapter_model.safetensors, layout for the engine)`` on
    rank 0 (None elsewhere): an adapter-only weight sync. Call on ALL ranks; needs LoRA."""
    require_lora(module, "adapter_for_sync")
    adapter = gathered_adapter(module, zero_stage=zero_stage, rank=rank, dtype=dtype)
    return (adapter, sync_meta(module)) if adapter is not None else None


def save_model_dir(module: torch.nn.Module, path: Path, *, zero_stage: int, rank: int,
                   tokenizer: Any, merged: bool) -> None:
    """Write the model (and tokenizer) into ``path`` on rank 0; call on ALL ranks. A LoRA model
    writes an adapter directory, plus the merged model when ``merged`` (see the module doc)."""
    if is_lora(module):
        adapter = gathered_adapter(module, zero_stage=zero_stage, rank=rank)
        if rank == 0:
            if adapter is None:
                raise RuntimeError("gathered_adapter returned no adapter on rank 0")
            save_adapter_dir(module, adapter, path / ADAPTER_DIR if merged else path, tokenizer)
        if not merged:
            return
    state = full_state(module, zero_stage=zero_stage, rank=rank)
    if rank != 0:
        return
    if state is None:
        raise RuntimeError("full_state returned no state on rank 0")
    # cast: is_lora checked that peft wrapped it (nn.Module does not declare get_base_model)
    base = cast("PeftModel", module).get_base_model() if is_lora(module) else module
    if isinstance(base, CriticModel):
        save_critic(base, state, str(path))
    else:
        # cast: every other model a learner builds is a transformers PreTrainedModel
        cast("PreTrainedModel", base).save_pretrained(str(path), state_dict=state)
    if tokenizer is not None:
        tokenizer.save_pretrained(str(path))
