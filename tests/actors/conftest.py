"""Fixtures for actor tests: tiny random Llama directories and one shared Ray cluster.

The tiny models use 2 heads of dimension 32 (vLLM's CPU attention needs head_dim >= 32) and the
SmolLM2 tokenizer with its chat template. Two seeds give two different models with identical
names and shapes, which is what a weight sync needs.
"""

from __future__ import annotations

import pytest

from rlsys.modeling import default_cache_dir
from rlsys.modeling.builders import build_smollm2_tokenizer, build_tiny_llama
from rlsys.modeling.resolve import ensure_built

# head_dim = 64 / 2 = 32: the smallest head size vLLM's CPU attention backend accepts.
TINY_OVERRIDES = {"num_attention_heads": 2, "num_key_value_heads": 1}



@pytest.fixture(scope="session")
def tokenizer_dir() -> str:
    """The SmolLM2 tokenizer directory in the default model cache (built on first use)."""
    return ensure_built(default_cache_dir(), "smollm2-tokenizer", build_smollm2_tokenizer)


def _tiny(tmp_path_factory, tokenizer_dir: str, seed: int) -> str:
    out = tmp_path_factory.mktemp(f"tiny-llama-{seed}")
    build_tiny_llama(str(out), str(seed), tokenizer_dir=tokenizer_dir, **TINY_OVERRIDES)
    return str(out)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, tokenizer_dir) -> str:
    """A random tiny Llama directory (seed 0)."""
    return _tiny(tmp_path_factory, tokenizer_dir, 0)


@pytest.fixture(scope="session")
def tiny_model_b(tmp_path_factory, tokenizer_dir) -> str:
    """A second tiny Llama with the same architecture and different weights (seed 1)."""
    return _tiny(tmp_path_factory, tokenizer_dir, 1)
