"""Thin loaders for Hugging Face tokenizers and causal LMs from a local directory.

``load_tokenizer`` guarantees a pad token: when the tokenizer has none, the EOS token is used
as pad (rlsys never lets padding enter a loss, since ``mask`` is False on padding, so sharing
the id with EOS is harmless). ``load_causal_lm`` picks the dtype and attention implementation.
This module does not resolve short model names (see ``rlsys.modeling.resolve``) and does not
download anything.
"""

from __future__ import annotations

import os
from typing import Any

_DTYPES = ("float32", "bfloat16", "float16")


def _check_dir(path: str) -> None:
    if not os.path.isdir(path):
        raise FileNotFoundError(f"model directory {path!r} does not exist")


def load_tokenizer(path: str) -> Any:
    """Load the tokenizer saved in ``path``; sets ``pad_token = eos_token`` when pad is missing."""
    from transformers import AutoTokenizer

    _check_dir(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ValueError(f"tokenizer in {path!r} has neither a pad nor an eos token")
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_causal_lm(
    path: str, dtype: str = "float32", attn_implementation: str | None = "sdpa"
) -> Any:
    """Load ``AutoModelForCausalLM`` from ``path`` in ``dtype`` (float32, bfloat16, float16).

    ``attn_implementation`` defaults to ``"sdpa"``, which honours the additive 4D block-causal
    masks built by ``rlsys.data.attention`` (so does ``"eager"``); pass
    ``"flash_attention_2"`` on GPU to use variable-length kernels driven by ``position_ids``.
    The model is returned in eval mode; call ``.train()`` to fine-tune.
    """
    import torch
    from transformers import AutoModelForCausalLM

    _check_dir(path)
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {_DTYPES}, got {dtype!r}")
    kwargs: dict[str, Any] = {"dtype": getattr(torch, dtype)}
    if attn_implementation is not None:
        kwargs["attn_implementation"] = attn_implementation
    model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    model.eval()
    return model
