"""Fixtures for model-resolution tests: a per-test cache pre-seeded with the SmolLM2 tokenizer.

Reading the tokenizer out of the GGUF takes ~10 s, so it is built once in the user's default
cache (``rlsys.modeling.default_cache_dir``) and copied into each test's private cache.
"""

from __future__ import annotations

import shutil

import pytest

from rlsys.modeling import default_cache_dir
from rlsys.modeling.builders import build_smollm2_tokenizer
from rlsys.modeling.resolve import ensure_built


@pytest.fixture(scope="session")
def shared_tokenizer_dir() -> str:
    """The SmolLM2 tokenizer directory in the default cache (built on first use)."""
    return ensure_built(default_cache_dir(), "smollm2-tokenizer", build_smollm2_tokenizer)


@pytest.fixture
def cache_dir(tmp_path, shared_tokenizer_dir) -> str:
    """A fresh model cache that already holds the tokenizer entry."""
    cache = tmp_path / "cache"
    cache.mkdir()
    shutil.copytree(shared_tokenizer_dir, cache / "smollm2-tokenizer")
    return str(cache)
