"""Fixtures for data-layer tests: the real SmolLM2 tokenizer and a tiny random Llama.

Both come from the default model cache (``rlsys.modeling.resolve_model``), built on first use
(~10 s for the tokenizer, ~1 s for the model) and reused across runs.
"""

from __future__ import annotations

import pytest

from rlsys.modeling import load_causal_lm, load_tokenizer


@pytest.fixture(scope="session")
def tokenizer(tiny_model_dir):
    """The SmolLM2 tokenizer (ChatML chat template, pad = eos)."""
    return load_tokenizer(tiny_model_dir)


@pytest.fixture(scope="session")
def tiny_model(tiny_model_dir):
    """The tiny random Llama in float32 with sdpa attention, eval mode."""
    return load_causal_lm(tiny_model_dir, dtype="float32")
