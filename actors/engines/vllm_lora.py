"""vLLM's own LoRA adapters for ``actors.engines.vllm.VLLMEngine`` (adapter-only weight sync).

``plan_lora_sync`` decides, before the engine starts, whether adapter syncs use vLLM's LoRA
support (``LLM(enable_lora=True, max_lora_rank=...)``, a ``LoRARequest`` on every request) or
are merged on the rollout worker onto its base weights and loaded as full weights
(``actors.rollout.RolloutWorker._load_adapter``). ``NativeAdapters`` writes each synced adapter
as a PEFT directory (``adapter_config.json`` + ``adapter_model.safetensors``) in a temp dir
(``/dev/shm`` when present), registers it with the engine under a new integer id and drops the
previous one. This module does not start engines, merge adapters or generate.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Sequence
from typing import Any

import torch

LORA_SYNC_MODES = ("auto", "native", "merge")
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # vllm.config.lora.MaxLoRARanks
NATIVE = "native vLLM adapters"
MERGED = "merged on the worker"


def vllm_lora_rank(r: int) -> int:
    """The smallest ``max_lora_rank`` vLLM accepts that holds rank ``r``; ``ValueError`` above
    vLLM's largest."""
    for rank in VLLM_LORA_RANKS:
        if rank >= r:
            return rank
    raise ValueError(f"LoRA rank {r} exceeds vLLM's largest max_lora_rank {VLLM_LORA_RANKS[-1]}")


def plan_lora_sync(mode: str, max_lora_rank: int | None, modules_to_save: Sequence[str]
                   ) -> tuple[bool, str]:
    """``(native, reason)`` for ``lora_sync`` = ``mode`` (``auto|native|merge``).

    ``max_lora_rank``: the largest adapter rank the engine will receive (None: no LoRA stage).
    vLLM's adapters hold LoRA factors only, so ``modules_to_save`` (modules trained in full)
    need the merge path. ``native`` refuses with ``ValueError`` what it cannot serve; ``auto``
    falls back to merging (the engine also falls back when vLLM refuses ``enable_lora``)."""
    if mode not in LORA_SYNC_MODES:
        raise ValueError(f"lora_sync must be one of {LORA_SYNC_MODES}, got {mode!r}")
    if mode == "merge":
        return False, "lora_sync: merge"
    if max_lora_rank is None:
        if mode == "native":
            raise ValueError("lora_sync 'native' needs max_lora_rank (the largest adapter rank)")
        return False, "no LoRA rank given (no LoRA stage)"
    if modules_to_save:
        if mode == "native":
            raise ValueError(f"lora_sync 'native': vLLM adapters cannot carry modules_to_save "
                             f"{list(modules_to_save)}; use lora_sync 'merge' or 'auto'")
        return False, f"modules_to_save {list(modules_to_save)} (trained in full)"
    vllm_lora_rank(max_lora_rank)  # raises above vLLM's limit
    return True, f"max_lora_rank {vllm_lora_rank(max_lora_rank)}"


def adapter_config(layout: dict[str, Any], base_model: str) -> dict[str, Any]:
    """``adapter_config.json`` of a synced adapter from the learner's layout
    (``learner.lora.sync_meta``): what ``peft`` and vLLM's LoRA loader read."""
    return {"peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": base_model,
            "r": int(layout["r"]), "lora_alpha": float(layout["lora_alpha"]),
            "lora_dropout": 0.0, "target_modules": layout["target_modules"], "bias": "none",
            "fan_in_fan_out": False, "modules_to_save": None, "use_rslora": False,
            "use_dora": False, "inference_mode": True}


class NativeAdapters:
    """The adapter vLLM currently serves: its ``LoRARequest`` and its PEFT directory.

    Args:
        base_model: the engine's model path (recorded in ``adapter_config.json``).
        max_rank: the ``max_lora_rank`` the engine was started with.
    """

    def __init__(self, base_model: str, max_rank: int) -> None:
        self.base_model, self.max_rank = base_model, max_rank
        self.request: Any = None  # vllm LoRARequest of the current adapter, None: base model
        self._dir: tempfile.TemporaryDirectory | None = None
        self._next_id = 1

    def load(self, llm: Any, named_tensors: Iterable[tuple[str, torch.Tensor]],
             layout: dict[str, Any]) -> str:
        """Write the adapter, register it with ``llm`` (vLLM loads and checks it now) and make
        it the one requests use; the previous adapter is removed. Returns its directory."""
        from safetensors.torch import save_file
        from vllm.lora.request import LoRARequest

        if layout.get("modules_to_save"):
            raise ValueError(f"vLLM adapters cannot carry modules_to_save "
                             f"{layout['modules_to_save']}; set rollout.lora_sync: merge")
        if int(layout["r"]) > self.max_rank:
            raise ValueError(f"adapter rank {layout['r']} exceeds the engine's max_lora_rank "
                             f"{self.max_rank}")
        root = "/dev/shm" if os.path.isdir("/dev/shm") else None
        new_dir = tempfile.TemporaryDirectory(prefix="rlsys-adapter-", dir=root)
        try:
            with open(os.path.join(new_dir.name, "adapter_config.json"), "w") as f:
                json.dump(adapter_config(layout, self.base_model), f)
            save_file({k: v.detach().to("cpu").contiguous() for k, v in named_tensors},
                      os.path.join(new_dir.name, "adapter_model.safetensors"),
                      metadata={"format": "pt"})
            request = LoRARequest(f"rlsys-{self._next_id}", self._next_id, new_dir.name)
            if not llm.llm_engine.add_lora(request):
                raise RuntimeError(f"vLLM did not load the adapter in {new_dir.name}")
        except BaseException:
            new_dir.cleanup()
            raise
        self._next_id += 1
        self.clear(llm)
        self.request, self._dir = request, new_dir
        return new_dir.name

    def clear(self, llm: Any) -> None:
        """Back to the base model: remove the current adapter from ``llm`` and its directory."""
        if self.request is not None and llm is not None:
            llm.llm_engine.remove_lora(self.request.lora_int_id)
        self.request = None
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None
