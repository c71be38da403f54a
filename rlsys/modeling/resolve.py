"""Resolve a model name to a local Hugging Face directory, building short names once.

``resolve_model("path/to/dir")`` returns the directory unchanged (it must hold ``config.json``).
A short name from ``MODELS`` (``smollm2-135m-instruct`` alias ``smollm2``, ``tiny-llama`` or
``tiny-llama:<seed>``) is built on first use into the cache directory (``cache_dir`` argument,
else ``$RLSYS_CACHE``, else ``~/.cache/rlsys/models``) and reused afterwards.

Concurrency: a build holds an exclusive ``fcntl.flock`` on ``<cache>/.locks/<key>.lock``, writes
into a private temporary directory and publishes it with one atomic ``os.rename``; a finished
entry is therefore either absent or complete, and concurrent callers (processes or Ray actors on
one machine) build it once. ``check_model`` checks a name without building it (for
``rlsys validate``); its errors are ``UserError``s. This module does not download anything and
does not load models.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from rlsys.errors import UserError
from rlsys.modeling import builders
from rlsys.registry import Registry

Builder = Callable[[str, "str | None", str], None]  # (out_dir, arg, cache_dir)


@dataclass(frozen=True)
class ModelSpec:
    """A buildable short model name.

    Attributes:
        key: cache sub-directory stem (aliases share it, so they share one build).
        build: writes the HF directory: ``build(out_dir, arg, cache_dir)``; ``arg`` is the text
            after ``:`` in the name (e.g. a seed) or None.
        description: one line shown in error messages and docs.
    """

    key: str
    build: Builder
    description: str


MODELS: Registry[ModelSpec] = Registry("model")


def default_cache_dir() -> str:
    """``$RLSYS_CACHE`` if set, else ``~/.cache/rlsys/models``."""
    return os.environ.get("RLSYS_CACHE") or os.path.expanduser("~/.cache/rlsys/models")


@contextmanager
def _locked(cache_dir: str, key: str) -> Iterator[None]:
    lock_dir = os.path.join(cache_dir, ".locks")
    os.makedirs(lock_dir, exist_ok=True)
    with open(os.path.join(lock_dir, f"{key}.lock"), "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_built(cache_dir: str, key: str, build: Callable[[str], None]) -> str:
    """Return ``<cache_dir>/<key>``, running ``build(tmp_dir)`` once if it does not exist yet.

    The build writes into a temporary sibling directory that is renamed into place only after
    ``build`` returns; a failed build leaves no entry behind.
    """
    final = os.path.join(cache_dir, key)
    if os.path.isdir(final):
        return final
    os.makedirs(cache_dir, exist_ok=True)
    with _locked(cache_dir, key):
        if os.path.isdir(final):  # another process finished while we waited for the lock
            return final
        tmp = tempfile.mkdtemp(prefix=f".{key}.tmp-", dir=cache_dir)
        try:
            build(tmp)
            os.rename(tmp, final)
        finally:
            if os.path.isdir(tmp):
                shutil.rmtree(tmp, ignore_errors=True)
    return final


def tokenizer_dir(cache_dir: str | None = None) -> str:
    """The cached SmolLM2 tokenizer directory (read from the GGUF once, ~10 s)."""
    cache = os.path.expanduser(cache_dir) if cache_dir else default_cache_dir()
    return ensure_built(cache, "smollm2-tokenizer", builders.build_smollm2_tokenizer)


def random_llama_dir(
    key: str, *, seed: int = 0, cache_dir: str | None = None, **overrides: object
) -> str:
    """A cached random Llama with the SmolLM2 tokenizer and custom shape, e.g.
    ``random_llama_dir("llama-256x4", hidden_size=256, num_hidden_layers=4)``.

    ``key`` names the cache entry: use a different key for a different shape or seed.
    """
    cache = os.path.expanduser(cache_dir) if cache_dir else default_cache_dir()
    tok_dir = tokenizer_dir(cache)
    return ensure_built(cache, key, lambda out: builders.build_tiny_llama(
        out, str(seed), tokenizer_dir=tok_dir, **overrides))


def _build_smollm2(out_dir: str, arg: str | None, cache_dir: str) -> None:
    builders.build_smollm2(out_dir, arg)


def _build_tiny_llama(out_dir: str, arg: str | None, cache_dir: str) -> None:
    builders.build_tiny_llama(out_dir, arg, tokenizer_dir=tokenizer_dir(cache_dir))


_SMOLLM2 = ModelSpec(
    "smollm2-135m-instruct", _build_smollm2, "SmolLM2-135M-Instruct (fp32, from the shipped GGUF)"
)
MODELS.register("smollm2-135m-instruct", _SMOLLM2)
MODELS.register("smollm2", _SMOLLM2)
MODELS.register(
    "tiny-llama",
    ModelSpec(
        "tiny-llama",
        _build_tiny_llama,
        "random 2-layer 64-hidden Llama with the SmolLM2 tokenizer; 'tiny-llama:<seed>'",
    ),
)


class ModelError(UserError, ValueError):
    """A model name that is neither an existing HF directory nor a known short name."""


class ModelPathError(ModelError, FileNotFoundError):
    """A model path that does not exist or is not an HF directory (no ``config.json``)."""


def _looks_like_path(name: str) -> bool:
    return os.sep in name or name.startswith((".", "~")) or os.path.exists(name)


def check_model(name_or_path: str) -> tuple[ModelSpec | None, str]:
    """Check a model name without building anything: ``(spec, arg)`` for a short name,
    ``(None, directory)`` for a path.

    Raises ``ModelPathError`` naming the path when a directory lacks ``config.json`` or a path
    does not exist, and ``ModelError`` listing the known short names for an unknown name.
    """
    if not isinstance(name_or_path, str) or not name_or_path:
        raise ModelError(f"model must be a non-empty string, got {name_or_path!r}")
    if _looks_like_path(name_or_path):
        path = os.path.expanduser(name_or_path)
        if not os.path.isdir(path):
            raise ModelPathError(f"model path {path!r} does not exist or is not a directory")
        if not os.path.isfile(os.path.join(path, "config.json")):
            raise ModelPathError(f"model directory {path!r} has no config.json")
        return None, path
    short, _, arg = name_or_path.partition(":")
    if short not in MODELS:
        raise ModelError(
            f"unknown model {name_or_path!r}: not an existing directory and not a short name; "
            f"known short names: {', '.join(MODELS.names())}"
        )
    spec = MODELS.get(short)
    key = spec.key if not arg else f"{spec.key}-{arg}"
    if os.sep in key or key.startswith("."):
        raise ModelError(f"invalid model argument in {name_or_path!r}")
    return spec, arg


def resolve_model(name_or_path: str, cache_dir: str | None = None) -> str:
    """Return a local HF model directory for a path or a short name from ``MODELS``.

    Errors are those of ``check_model`` (user errors naming the path or listing known names).
    """
    spec, arg = check_model(name_or_path)
    if spec is None:
        return arg
    cache = os.path.expanduser(cache_dir) if cache_dir else default_cache_dir()
    key = spec.key if not arg else f"{spec.key}-{arg}"
    return ensure_built(cache, key, lambda out: spec.build(out, arg or None, cache))
