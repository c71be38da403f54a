"""LoRA for the learner, on ``peft``: check and wrap a model, gather the adapter (ZeRO-3 aware),
write adapter directories, and the adapter-disabled reference forward.

``lora`` arguments here are plain dicts ``{r, alpha, dropout, target_modules, modules_to_save}``
(the controller unpacks ``model.lora`` / ``stages[i].lora`` into them). A critic (``value_head``)
always trains its value head in full (``modules_to_save`` gets ``value_head``).

The reference policy of KL and DPO under LoRA is the same model with its adapters disabled
(``disabled_adapters``): no second copy of the weights. This module does not train, sync or
decide when to save; state-dict naming and merging live in ``rlsys.modeling.lora``.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch

from learner.engine import gathered
from rlsys.modeling.lora import adapter_from_module_state, base_from_module_state, merge_adapter

if TYPE_CHECKING:
    from peft import PeftModel

ADAPTER_DIR = "adapter"  # a LoRA stage's final dir: merged model at the top, adapter here
ALL_LINEAR = "all-linear"


def linear_module_names(model: torch.nn.Module) -> list[str]:
    """Sorted distinct last name parts of the model's ``nn.Linear`` layers (what
    ``target_modules`` may name)."""
    return sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules()
                   if isinstance(module, torch.nn.Linear) and name})


def _model_label(model: torch.nn.Module, model_dir: str) -> str:
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None) or "unknown"
    return f"{type(model).__name__} (model_type {model_type!r}) at {model_dir}"


def check_targets(model: torch.nn.Module, lora: dict[str, Any], model_dir: str) -> None:
    """Raise ``ValueError`` when ``target_modules`` / ``modules_to_save`` name a module the
    model lacks; the message lists the linear modules it has."""
    targets = list(lora["target_modules"])
    names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules() if name}
    missing = [t for t in targets if t != ALL_LINEAR and t not in names]
    missing += [m for m in lora.get("modules_to_save") or [] if m not in names]
    if missing:
        raise ValueError(
            f"lora.target_modules/modules_to_save: {missing} not found in "
            f"{_model_label(model, model_dir)}; its linear modules are "
            f"{linear_module_names(model)}")


def peft_config(lora: dict[str, Any], *, value_head: bool, classifier_head: str | None = None
                ) -> Any:
    """The ``peft.LoraConfig`` for a plain lora dict (a critic also saves its value head; a
    sequence classifier, ``classifier_head`` given, is a ``SEQ_CLS`` task that saves its
    head)."""
    from peft import LoraConfig

    targets = list(lora["target_modules"])
    to_save = list(lora.get("modules_to_save") or []) + (["value_head"] if value_head else [])
    if classifier_head is not None and classifier_head not in to_save:
        to_save.append(classifier_head)
    task_type = "SEQ_CLS" if classifier_head is not None else "CAUSAL_LM"
    return LoraConfig(
        r=int(lora["r"]),
        lora_alpha=float(lora["alpha"]),  # pyright: ignore[reportArgumentType]  # peft annotates int; it only computes alpha / r, and config.alpha is a float
        lora_dropout=float(lora["dropout"]),
        target_modules=ALL_LINEAR if targets == [ALL_LINEAR] else targets,
        modules_to_save=to_save or None, bias="none",
        task_type=None if value_head else task_type)


def classifier_head_name(model: torch.nn.Module, model_dir: str) -> str:
    """The attribute name of a sequence classifier's head (``score`` for Llama-like models,
    ``classifier`` for BERT-like ones); ``ValueError`` naming the model when it has neither."""
    for name in ("score", "classifier"):
        if isinstance(getattr(model, name, None), torch.nn.Module):
            return name
    raise ValueError(f"{_model_label(model, model_dir)} has no 'score' or 'classifier' head "
                     "to train beside the LoRA adapters")


def wrap_lora(model: torch.nn.Module, lora: dict[str, Any], *, value_head: bool,
              model_dir: str, classifier: bool = False) -> torch.nn.Module:
    """``peft.get_peft_model`` with a clear error: unknown target names list the modules the
    model has; a model or layer type peft cannot wrap names the model. Only adapter (and
    ``modules_to_save``) parameters keep ``requires_grad``. ``classifier``: the model is an
    ``AutoModelForSequenceClassification``; its head trains in full (``modules_to_save``)."""
    from peft import get_peft_model

    check_targets(model, lora, model_dir)
    head = classifier_head_name(model, model_dir) if classifier else None
    try:
        wrapped = get_peft_model(model, peft_config(lora, value_head=value_head,
                                                    classifier_head=head))
    except (ValueError, TypeError, NotImplementedError, KeyError) as exc:
        raise ValueError(f"peft cannot add LoRA adapters to {_model_label(model, model_dir)} "
                         f"with target_modules {list(lora['target_modules'])}: {exc}") from exc
    wrapped.peft_config["default"].base_model_name_or_path = model_dir  # the adapter's base
    return wrapped


def check_lora_for_model(model_dir: str, lora: dict[str, Any], *, value_head: bool = False
                         ) -> None:
    """Build the model from its config on the meta device (no weights read) and try the wrap,
    so a bad ``target_modules`` fails before any learner starts. Raises ``ValueError``."""
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(model_dir)
    with torch.device("meta"):
        factory = AutoModel if value_head else AutoModelForCausalLM
        model = factory.from_config(config)
    wrap_lora(model, lora, value_head=False, model_dir=model_dir)


def _active_config(module: torch.nn.Module) -> Any:
    """The active (``default``) adapter's ``peft.LoraConfig`` of a peft-wrapped module."""
    # cast: nn.Module types attributes it does not declare (peft's ``peft_config``, a dict by
    # adapter name) as Tensor | Module.
    return cast("dict[str, Any]", module.peft_config)["default"]


def is_lora(module: torch.nn.Module) -> bool:
    """True for a peft-wrapped module."""
    return hasattr(module, "peft_config") and hasattr(module, "disable_adapter")


def require_lora(module: torch.nn.Module, method: str) -> None:
    """Raise ``RuntimeError`` naming ``method`` when ``module`` has no LoRA adapters."""
    if not is_lora(module):
        raise RuntimeError(f"{method} needs LoRA adapters: construct the Learner with lora")


@contextlib.contextmanager
def disabled_adapters(module: torch.nn.Module, method: str) -> Iterator[None]:
    """Inside: forwards run the base model (adapters and ``modules_to_save`` copies off);
    the reference policy of a LoRA stage. ``RuntimeError`` naming ``method`` without LoRA."""
    require_lora(module, method)
    # cast: require_lora checked that peft wrapped it (nn.Module does not declare the method)
    with cast("PeftModel", module).disable_adapter():
        yield


def lora_scaling(module: torch.nn.Module) -> float:
    """``alpha / r`` of the active adapter."""
    config = _active_config(module)
    return float(config.lora_alpha) / float(config.r)


def merged_state(module: torch.nn.Module, state: dict[str, torch.Tensor]
                 ) -> dict[str, torch.Tensor]:
    """Hugging Face-named weights with the adapter merged, from a peft-wrapped module's full
    (gathered) state dict: what a plain model or a full weight sync takes."""
    return merge_adapter(base_from_module_state(state), adapter_from_module_state(state),
                         scaling=lora_scaling(module))


def sync_meta(module: torch.nn.Module) -> dict[str, Any]:
    """What a rollout engine needs to rebuild the adapter's layout: plain, picklable values."""
    config = _active_config(module)
    targets = config.target_modules
    return {"r": int(config.r), "lora_alpha": float(config.lora_alpha),
            "target_modules": targets if isinstance(targets, str) else sorted(targets),
            "modules_to_save": sorted(config.modules_to_save or []) or None}


def gathered_adapter(module: torch.nn.Module, *, zero_stage: int, rank: int,
                     dtype: torch.dtype | None = None) -> dict[str, torch.Tensor] | None:
    """Adapter-file-named CPU copies of the trainable tensors (LoRA factors, ``modules_to_save``)
    on rank 0, None elsewhere. Call on ALL ranks (ZeRO-3 gathers one tensor at a time)."""
    state: dict[str, torch.Tensor] = {}
    for name, param in module.named_parameters():
        if not param.requires_grad:
            continue
        with gathered([param], zero_stage):
            if rank == 0:
                tensor = param.data.detach()
                tensor = tensor.to(dtype) if dtype is not None else tensor
                state[name] = tensor.to("cpu", copy=True)
    return adapter_from_module_state(state) if rank == 0 else None


def save_adapter_dir(module: torch.nn.Module, adapter: dict[str, torch.Tensor], path: Path,
                     tokenizer: Any = None) -> None:
    """Write ``adapter_model.safetensors`` + ``adapter_config.json`` (+ the tokenizer) to
    ``path``: what ``PeftModel.from_pretrained(base, path)`` and vLLM's LoRA loader read."""
    from safetensors.torch import save_file

    path.mkdir(parents=True, exist_ok=True)
    config = _active_config(module)
    config.save_pretrained(str(path))
    save_file({k: v.contiguous() for k, v in adapter.items()},
              str(path / "adapter_model.safetensors"), metadata={"format": "pt"})
    if tokenizer is not None:
        tokenizer.save_pretrained(str(path))


def read_adapter_dir(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``(adapter tensors, adapter_config.json)`` of an adapter directory."""
    from safetensors.torch import load_file

    path = Path(path)
    config = json.loads((path / "adapter_config.json").read_text())
    return load_file(str(path / "adapter_model.safetensors")), config
