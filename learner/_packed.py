"""TEMPORARY stand-in for ``rlsys.data.attention.packed_forward`` until that module lands.

Builds the (B, 1, T, T) additive block-causal mask from ``seq_ids`` (a token attends to earlier
tokens of its own document; padding attends only to itself so no row is all -inf) and calls the
model with ``position_ids``. To be deleted once ``rlsys.data.attention`` exists.
"""

from __future__ import annotations

from typing import Any

import torch

from rlsys.types import TokenBatch


def packed_forward(model: Any, batch: TokenBatch) -> torch.Tensor:
    """Run ``model`` on a packed/padded ``batch`` and return its logits (B, T, V)."""
    seq_ids = batch.seq_ids
    length = seq_ids.shape[1]
    causal = torch.ones(length, length, dtype=torch.bool, device=seq_ids.device).tril()
    same_doc = (seq_ids.unsqueeze(-1) == seq_ids.unsqueeze(-2)) & (seq_ids > 0).unsqueeze(-1)
    eye = torch.eye(length, dtype=torch.bool, device=seq_ids.device)
    allowed = (same_doc & causal) | eye
    dtype = next(iter(model.parameters())).dtype
    mask = torch.zeros(allowed.shape, dtype=dtype, device=seq_ids.device)
    mask = mask.masked_fill(~allowed, torch.finfo(dtype).min).unsqueeze(1)
    out = model(
        input_ids=batch.input_ids,
        attention_mask=mask,
        position_ids=batch.position_ids,
        use_cache=False,
    )
    return out.logits
