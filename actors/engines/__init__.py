"""Rollout engines: the ``RolloutEngine`` protocol, its registry, and the HF / vLLM adapters.

Importing this package imports neither vLLM nor transformers; adapters load lazily.
"""

from actors.engines.base import ENGINES, LOGPROBS_MODES, RolloutEngine, build_engine

__all__ = ["ENGINES", "LOGPROBS_MODES", "RolloutEngine", "build_engine"]
