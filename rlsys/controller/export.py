"""``rlsys export --merge SRC OUT``: a LoRA adapter merged into its base model, written as a plain
Hugging Face directory (model + tokenizer) that ``transformers`` and vLLM load as it is.

``SRC`` may be an adapter directory (a LoRA stage's ``ckpt/.../step_N``, or ``final/adapter``),
a LoRA stage's ``final`` directory (its ``adapter/`` is used), or a stage directory
``RUN_DIR/stages/NAME`` (its ``final/adapter``, else its newest checkpoint). The base model is
the adapter's ``base_model_name_or_path`` (the directory the stage started from). The merge is
``W + alpha/r * B @ A`` in float32 (``rlsys.modeling.lora.merge_adapter``). This module does not
train or export critics.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from rlsys.errors import UserError

ADAPTER_CONFIG = "adapter_config.json"


def find_adapter_dir(src: str | os.PathLike[str]) -> Path:
    """The adapter directory ``src`` names (see the module doc); ``UserError`` when none."""
    src = Path(src)
    if not src.is_dir():
        raise UserError(f"{src} is not a directory")
    candidates = [src, src / "adapter", src / "final" / "adapter"]
    for path in candidates:
        if (path / ADAPTER_CONFIG).is_file():
            return path
    steps = sorted((p.parent for p in src.glob(f"ckpt/**/{ADAPTER_CONFIG}")),
                   key=lambda p: p.name)
    if steps:
        return steps[-1]
    raise UserError(f"no LoRA adapter ({ADAPTER_CONFIG}) in {src}, {src}/adapter, "
                    f"{src}/final/adapter or {src}/ckpt; only a LoRA stage writes one")


def _adapter_config(adapter_dir: Path) -> dict:
    config = json.loads((adapter_dir / ADAPTER_CONFIG).read_text())
    if config.get("peft_type") != "LORA":
        raise UserError(f"{adapter_dir} holds a {config.get('peft_type')} adapter; "
                        "only LoRA is merged")
    unsupported = [k for k in ("use_rslora", "use_dora") if config.get(k)]
    if unsupported:
        raise UserError(f"{adapter_dir} uses {unsupported}; only plain LoRA is merged")
    return config


def merge_export(src: str | os.PathLike[str], out: str | os.PathLike[str]) -> Path:
    """Merge the adapter found at ``src`` into its base model and write ``out`` (must not exist
    or be empty). Returns ``out``."""
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from rlsys.modeling.load import load_tokenizer
    from rlsys.modeling.lora import merge_adapter

    adapter_dir = find_adapter_dir(src)
    config = _adapter_config(adapter_dir)
    base = config.get("base_model_name_or_path")
    if not base or not Path(base).is_dir():
        raise UserError(f"the base model of {adapter_dir} ({ADAPTER_CONFIG} "
                        f"base_model_name_or_path: {base!r}) is not a directory here")
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out} exists and is not empty")
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    adapter = load_file(str(adapter_dir / "adapter_model.safetensors"))
    scaling = float(config["lora_alpha"]) / float(config["r"])
    merged = merge_adapter(model.state_dict(), adapter, scaling=scaling)
    model.load_state_dict(merged)
    base_config = json.loads((Path(base) / "config.json").read_text())
    base_dtype = base_config.get("dtype") or base_config.get("torch_dtype")
    if base_dtype in ("bfloat16", "float16"):  # merged in float32, stored like the base
        model = model.to(getattr(torch, base_dtype))
    model.save_pretrained(str(out))
    tokenizer_src = adapter_dir if (adapter_dir / "tokenizer_config.json").is_file() else base
    load_tokenizer(str(tokenizer_src)).save_pretrained(str(out))
    return out
