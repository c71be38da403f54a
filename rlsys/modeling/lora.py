"""LoRA state dicts without peft: split a peft-wrapped model's state into base weights and
adapter, and merge an adapter into base weights (``W + alpha/r * B @ A``).

Three name spaces meet here:

* Hugging Face names of the plain model: ``model.layers.0.self_attn.q_proj.weight``.
* A peft-wrapped module's own names (what ``named_parameters`` of a ``PeftModel`` gives):
  ``base_model.model.model.layers.0.self_attn.q_proj.base_layer.weight``,
  ``...q_proj.lora_A.default.weight``, ``...lm_head.modules_to_save.default.weight``.
* The adapter file names (``adapter_model.safetensors``, what ``PeftModel.from_pretrained`` and
  vLLM's LoRA loader read): ``base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight``;
  a module trained in full (``modules_to_save``) appears as ``base_model.model.lm_head.weight``.

Only adapters on linear layers (``nn.Linear`` weights, ``(out, in)``) are merged; plain LoRA
scaling ``alpha / r`` (no rsLoRA/DoRA). This module does not load models or import peft.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

PEFT_PREFIX = "base_model.model."
ADAPTER = "default"


def _strip_prefix(name: str) -> str:
    return name.removeprefix(PEFT_PREFIX)


def is_lora_name(name: str) -> bool:
    """True for a LoRA factor (``lora_A`` / ``lora_B``) in module or adapter-file naming."""
    return ".lora_A." in name or ".lora_B." in name


def adapter_from_module_state(state: Mapping[str, torch.Tensor], adapter: str = ADAPTER
                              ) -> dict[str, torch.Tensor]:
    """Adapter-file-named tensors (LoRA factors and ``modules_to_save`` copies) out of a
    peft-wrapped module's state; base weights and other adapters are left out."""
    out: dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        if f".lora_A.{adapter}." in name or f".lora_B.{adapter}." in name:
            out[name.replace(f".{adapter}.", ".", 1)] = tensor
        elif f".modules_to_save.{adapter}." in name:
            out[name.replace(f".modules_to_save.{adapter}.", ".", 1)] = tensor
    return out


def base_from_module_state(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Hugging Face-named base weights of a peft-wrapped module's state: ``base_layer`` and
    ``original_module`` unwrapped, LoRA factors and trained copies dropped."""
    out: dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        if is_lora_name(name) or ".modules_to_save." in name:
            continue
        name = name.replace(".base_layer.", ".").replace(".original_module.", ".")
        out[_strip_prefix(name)] = tensor
    return out


def merge_adapter(base: Mapping[str, torch.Tensor], adapter: Mapping[str, torch.Tensor], *,
                  scaling: float) -> dict[str, torch.Tensor]:
    """Hugging Face-named weights of ``base`` with ``adapter`` (adapter-file naming) merged:
    ``W + scaling * B @ A`` for every LoRA pair (computed in float32, stored in ``W``'s dtype),
    ``modules_to_save`` tensors replace the base tensor. ``base`` is not modified.

    Raises ``KeyError`` naming a tensor when the adapter targets a weight ``base`` lacks or
    a LoRA pair is incomplete, ``ValueError`` on shape mismatches."""
    merged = dict(base)
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for name, tensor in adapter.items():
        short = _strip_prefix(name)
        for factor in ("lora_A", "lora_B"):
            if f".{factor}." in short:
                pairs.setdefault(short.split(f".{factor}.")[0], {})[factor] = tensor
                break
        else:
            if short not in merged:
                raise KeyError(f"adapter tensor {name!r}: the base model has no {short!r}")
            merged[short] = tensor.to(merged[short].dtype)
    for module, factors in pairs.items():
        weight_name = f"{module}.weight"
        if set(factors) != {"lora_A", "lora_B"}:
            raise KeyError(f"adapter for {module!r} lacks {({'lora_A', 'lora_B'} - set(factors))}")
        if weight_name not in merged:
            raise KeyError(f"adapter targets {weight_name!r}, which the base model lacks")
        weight = merged[weight_name]
        delta = factors["lora_B"].float() @ factors["lora_A"].float()  # (out, r) @ (r, in)
        if delta.shape != weight.shape:
            raise ValueError(f"adapter for {module!r} has shape {tuple(delta.shape)}, "
                             f"weight is {tuple(weight.shape)}")
        merged[weight_name] = (weight.float() + scaling * delta.to(weight.device)).to(weight.dtype)
    return merged
