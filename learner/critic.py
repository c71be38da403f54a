"""The critic model for PPO: a transformer backbone plus a scalar value head.

``CriticModel`` wraps ``AutoModel`` (the decoder without its LM head) and a
``nn.Linear(hidden_size, 1)`` applied to the last hidden states. Its forward takes the same
keyword arguments as a causal LM and returns an object whose ``logits`` are the values, shaped
(B, T, 1), so the packed-forward path used for log-probs (4D block-causal mask + position_ids)
serves the critic unchanged; ``values = logits[..., 0]``.

On disk a critic is the backbone's ``save_pretrained`` directory plus ``value_head.safetensors``.
Loading a plain causal-LM directory starts the head at zero (every value 0 before training).
This module does not compute losses or know about DeepSpeed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:
    from transformers import PreTrainedModel

VALUE_HEAD_FILE = "value_head.safetensors"


@dataclass
class CriticOutput:
    """Forward result: ``logits`` holds the values, (B, T, 1)."""

    logits: torch.Tensor


class CriticModel(nn.Module):
    """Backbone + value head; ``forward(**causal_lm_kwargs).logits`` is (B, T, 1) values."""

    def __init__(self, backbone: PreTrainedModel) -> None:
        super().__init__()
        self.backbone = backbone
        self.config = backbone.config
        hidden = backbone.config.hidden_size
        dtype = next(backbone.parameters()).dtype
        self.value_head = nn.Linear(hidden, 1, dtype=dtype)
        nn.init.zeros_(self.value_head.weight)
        nn.init.zeros_(self.value_head.bias)

    @property
    def dtype(self) -> torch.dtype:
        """Parameter dtype (``packed_forward`` builds its mask in it)."""
        return self.value_head.weight.dtype

    def forward(self, input_ids: torch.Tensor, **kwargs: Any) -> CriticOutput:
        """Run the backbone and project every position's last hidden state to a value."""
        kwargs.pop("use_cache", None)
        hidden = self.backbone(input_ids=input_ids, use_cache=False, **kwargs).last_hidden_state
        return CriticOutput(logits=self.value_head(hidden.to(self.value_head.weight.dtype)))

    def gradient_checkpointing_enable(self, **kwargs: Any) -> None:
        """Delegate to the backbone (HF API)."""
        self.backbone.gradient_checkpointing_enable(**kwargs)


def values_from_output(logits: torch.Tensor) -> torch.Tensor:  # (B, T)
    """(B, T, 1) head outputs -> (B, T) float32 values aligned with tokens like log-probs:
    ``values[:, t]`` is read from the hidden state of token ``t - 1`` (the state before token
    ``t`` is generated); ``values[:, 0] = 0``."""
    head = logits[..., 0].float()
    return torch.cat([torch.zeros_like(head[:, :1]), head[:, :-1]], dim=1)


def load_critic(path: str, dtype: torch.dtype) -> CriticModel:
    """Build a critic from ``path`` (a causal-LM or critic directory); the head is loaded from
    ``value_head.safetensors`` when present, else zero-initialised."""
    from safetensors.torch import load_file
    from transformers import AutoModel

    backbone = AutoModel.from_pretrained(path, dtype=dtype, attn_implementation="sdpa")
    critic = CriticModel(backbone)
    head_file = os.path.join(path, VALUE_HEAD_FILE)
    if os.path.isfile(head_file):
        critic.value_head.load_state_dict(load_file(head_file))
    return critic


def split_critic_state(
    state: dict[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Split a gathered ``CriticModel`` state dict into (backbone, value head) dicts with the
    ``backbone.`` / ``value_head.`` prefixes removed."""
    backbone, head = {}, {}
    for name, tensor in state.items():
        prefix, _, rest = name.partition(".")
        if prefix == "backbone":
            backbone[rest] = tensor
        elif prefix == "value_head":
            head[rest] = tensor
        else:
            raise KeyError(f"unexpected critic parameter {name!r}")
    return backbone, head


def save_critic(critic: CriticModel, state: dict[str, torch.Tensor], path: str) -> None:
    """Write the backbone with ``save_pretrained`` and the head as ``value_head.safetensors``."""
    from safetensors.torch import save_file

    backbone_state, head_state = split_critic_state(state)
    critic.backbone.save_pretrained(path, state_dict=backbone_state)
    save_file(
        {k: v.contiguous() for k, v in head_state.items()}, os.path.join(path, VALUE_HEAD_FILE)
    )
