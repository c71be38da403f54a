"""Building a learner's model: HF loading (ZeRO-3-partitioned when asked), tokenizer, the
engine view used by ``packed_forward``, and seeding.

This module does not create the DeepSpeed engine (see ``learner.engine``) or train.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import torch

from learner.critic import CriticModel, load_critic

if TYPE_CHECKING:
    from transformers import PreTrainedModel

_Model = TypeVar("_Model", bound=torch.nn.Module)


class EngineView:
    """What ``packed_forward`` needs from a model: the HF ``config`` (attention implementation),
    the compute ``dtype`` (mask values), and a call that goes through the DeepSpeed engine so its
    ZeRO-3 gathering hooks run. The engine itself has a DeepSpeed ``config`` attribute, and a
    ``CriticModel`` no ``dtype``, hence this view."""

    def __init__(self, engine: Any) -> None:
        self._engine = engine
        self.config = engine.module.config

    @property
    def dtype(self) -> torch.dtype:
        """Dtype of the (possibly bf16-cast) module parameters."""
        return next(self._engine.module.parameters()).dtype

    def __call__(self, **kwargs: Any) -> Any:
        """Forward through the engine."""
        return self._engine(**kwargs)


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def maybe_tokenizer(model_dir: str) -> Any:
    """The tokenizer saved beside the model, or None when the directory has none."""
    from rlsys.modeling import load_tokenizer

    if not any(Path(model_dir, f).is_file() for f in ("tokenizer.json", "tokenizer_config.json")):
        return None
    return load_tokenizer(model_dir)


def load_model(
    model_dir: str,
    ds_config: dict[str, Any],
    *,
    value_head: bool,
    dtype: torch.dtype,
    gradient_checkpointing: bool = False,
) -> torch.nn.Module:
    """Load the causal LM (or critic). Under ZeRO-3 parameters are partitioned while loading
    (``HfDeepSpeedConfig`` makes ``from_pretrained`` use ``deepspeed.zero.Init``). The model
    is returned in train mode, with non-reentrant gradient checkpointing when asked."""
    from rlsys.modeling import load_causal_lm

    def load() -> PreTrainedModel | CriticModel:
        if value_head:
            return load_critic(model_dir, dtype)
        return load_causal_lm(model_dir, dtype=str(dtype).removeprefix("torch."))

    if ds_config["zero_optimization"]["stage"] != 3:
        model = load()
    else:
        model = _with_zero3_init(model_dir, ds_config, load)
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model.train()


def _with_zero3_init(
    model_dir: str, ds_config: dict[str, Any], load: Callable[[], _Model]
) -> _Model:
    import torch._dynamo  # noqa: F401  (must precede zero.Init, see ENVIRONMENT.md)
    from transformers import AutoConfig
    from transformers.integrations.deepspeed import HfDeepSpeedConfig, unset_hf_deepspeed_config
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING, MODEL_MAPPING

    # zero.Init patches module classes as it enters; importing the model classes first avoids
    # DeepSpeed's "Signature mismatch" TypeError.
    config = AutoConfig.from_pretrained(model_dir)
    _ = MODEL_FOR_CAUSAL_LM_MAPPING[type(config)], MODEL_MAPPING[type(config)]
    hf_ds_config = HfDeepSpeedConfig(ds_config)  # global weak ref: must stay alive while loading
    try:
        return load()
    finally:
        del hf_ds_config
        unset_hf_deepspeed_config()  # later learners in this process may use other stages
