"""The data layer: sources, chat templates, label masking, packing, attention masks, mixtures.

Floor 1: imports torch, numpy, transformers tokenizers (passed in), pyarrow and ``datasets``
lazily where needed; never ray, deepspeed or vllm. Submodules: ``sources``, ``templates``,
``encode``, ``packing``, ``attention``, ``mixture``, ``dataset``.
"""

from rlsys.data.encode import (
    MASK_MODES,
    Encoded,
    encode_pair,
    encode_prompt,
    encode_sft,
    encode_text,
)
from rlsys.data.mixture import Curriculum, MixtureSampler, batches
from rlsys.data.sources import DataError, LoadedSource, load_records
from rlsys.data.templates import render_chat

__all__ = [
    "MASK_MODES",
    "Curriculum",
    "DataError",
    "Encoded",
    "LoadedSource",
    "MixtureSampler",
    "batches",
    "encode_pair",
    "encode_prompt",
    "encode_sft",
    "encode_text",
    "load_records",
    "render_chat",
]
