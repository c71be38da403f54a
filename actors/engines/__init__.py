"""Rollout engines: the ``RolloutEngine`` protocol (``base.py``), the registry of engine
constructors, and the HF / vLLM adapters.

The registry lives here, not in ``base.py``, so the adapters import ``base`` and nothing imports
back. Importing this package imports neither vLLM nor transformers; adapters load lazily.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from actors.engines.base import LOGPROBS_MODES, RolloutEngine
from rlsys.registry import Registry

__all__ = ["ENGINES", "LOGPROBS_MODES", "RolloutEngine", "build_engine"]

#: engine name -> constructor(model_path, **engine_kwargs) -> RolloutEngine
ENGINES: Registry[Callable[..., Any]] = Registry("rollout engine")


def _hf(model_path: str, **kwargs: Any) -> RolloutEngine:
    from actors.engines.hf import HFEngine

    return HFEngine(model_path, **kwargs)


def _vllm(model_path: str, **kwargs: Any) -> RolloutEngine:
    from actors.engines.vllm import VLLMEngine

    return VLLMEngine(model_path, **kwargs)


ENGINES.register("hf", _hf)
ENGINES.register("vllm", _vllm)


def build_engine(name: str, model_path: str, **engine_kwargs: Any) -> RolloutEngine:
    """Construct the engine registered as ``name`` (``hf``, ``vllm``) for ``model_path``."""
    return ENGINES.get(name)(model_path, **engine_kwargs)
