"""Model resolution and loading: short names -> cached HF directories -> tokenizer / model.

Public API: ``resolve_model``, ``MODELS``, ``load_tokenizer``, ``load_causal_lm``,
``random_llama_dir`` (custom-shaped random Llama), ``tokenizer_dir``. Importing this
package is cheap (transformers and torch load inside the functions); it never imports ray,
deepspeed or vllm.
"""

from rlsys.modeling.load import load_causal_lm, load_tokenizer
from rlsys.modeling.resolve import (
    MODELS,
    ModelSpec,
    default_cache_dir,
    random_llama_dir,
    resolve_model,
    tokenizer_dir,
)

__all__ = [
    "MODELS",
    "ModelSpec",
    "default_cache_dir",
    "load_causal_lm",
    "load_tokenizer",
    "random_llama_dir",
    "resolve_model",
    "tokenizer_dir",
]
