"""Cross-document attention masking for packed rows, and a forward pass that applies it.

``block_causal_mask`` turns ``seq_ids`` (B, T) into an additive (B, 1, T, T) float mask: 0 where
query ``i`` may attend to key ``j`` (``j <= i`` and same document), the dtype's most negative
value elsewhere. A padding query (``seq_ids == 0``) attends only to itself so its softmax is
finite (its outputs are garbage but never counted: ``mask`` is False there).

``packed_forward`` runs a Hugging Face causal LM on a ``TokenBatch``:

* ``eager`` / ``sdpa`` attention (CPU and GPU): ``input_ids`` + ``position_ids`` + the 4D mask.
  transformers (< 5.20) passes a ready 4D mask through unchanged to both implementations;
  ``tests/data/test_attention.py`` checks that a packed row equals its documents run alone.
  Memory is O(B * T^2) for the mask, fine for T of a few thousand.
* ``flash_attention_2`` / ``flash_attention_3`` (GPU only, not exercised by the CPU tests): the
  non-padding tokens of all rows are concatenated into one (1, N) row, and the variable-length
  kernel is driven by ``cu_seq_lens_q/k`` and ``max_length_q/k`` computed from ``seq_ids``
  (transformers' ``FlashAttentionKwargs``); no T x T mask is built. Logits are scattered back
  into (B, T, V) with zeros at padding.

This module does not compute losses or log-probs (see ``rlsys.algo``).
"""

from __future__ import annotations

from typing import Any

import torch

from rlsys.types import TokenBatch


def block_causal_mask(
    seq_ids: torch.Tensor,  # (B, T) long, 1-based document ids, 0 = padding
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:  # (B, 1, T, T)
    """Additive block-causal mask: 0 = may attend, ``finfo(dtype).min`` = may not."""
    if seq_ids.dim() != 2:
        raise ValueError(f"seq_ids must be (B, T), got shape {tuple(seq_ids.shape)}")
    length = seq_ids.shape[1]
    causal = torch.ones(length, length, dtype=torch.bool, device=seq_ids.device).tril()
    same_doc = seq_ids.unsqueeze(2) == seq_ids.unsqueeze(1)  # (B, T, T) query i, key j
    allowed = same_doc & causal & (seq_ids > 0).unsqueeze(2)
    eye = torch.eye(length, dtype=torch.bool, device=seq_ids.device)
    allowed = allowed | (eye & (seq_ids == 0).unsqueeze(2))  # padding attends to itself
    mask = torch.zeros(allowed.shape, dtype=dtype, device=seq_ids.device)
    mask.masked_fill_(~allowed, torch.finfo(dtype).min)
    return mask.unsqueeze(1)


def _uses_flash(model: Any) -> bool:
    impl = getattr(model.config, "_attn_implementation", None) or ""
    return impl.startswith("flash_attention")


def _flash_forward(model: Any, batch: TokenBatch) -> torch.Tensor:  # (B, T, V)
    # Padding-free: one (1, N) row of real tokens; document boundaries go in cu_seq_lens.
    real = batch.seq_ids > 0  # (B, T)
    input_ids = batch.input_ids[real].unsqueeze(0)  # (1, N)
    position_ids = batch.position_ids[real].unsqueeze(0)  # (1, N)
    flat_seq = (batch.seq_ids + batch.seq_ids.shape[1] * torch.arange(
        batch.seq_ids.shape[0], device=batch.seq_ids.device).unsqueeze(1))[real]  # (N,)
    starts = torch.ones_like(flat_seq, dtype=torch.bool)
    starts[1:] = flat_seq[1:] != flat_seq[:-1]
    cu_seq_lens = torch.cat([
        starts.nonzero().view(-1),
        torch.tensor([flat_seq.numel()], device=flat_seq.device),
    ]).to(torch.int32)
    max_length = int(cu_seq_lens.diff().max())
    logits = model(
        input_ids=input_ids,
        position_ids=position_ids,
        cu_seq_lens_q=cu_seq_lens,
        cu_seq_lens_k=cu_seq_lens,
        max_length_q=max_length,
        max_length_k=max_length,
        use_cache=False,
    ).logits  # (1, N, V)
    out = logits.new_zeros(*batch.input_ids.shape, logits.shape[-1])
    out[real] = logits[0]
    return out


def packed_forward(
    model: Any, batch: TokenBatch, *, logits_to_keep: int = 0
) -> torch.Tensor:  # (B, K, V), K = logits_to_keep or T
    """Logits of ``model`` on ``batch`` with attention confined to each document.

    ``logits_to_keep=K > 0`` returns only the last ``K`` positions' logits (the whole sequence
    still runs through the transformer; only the LM head is skipped elsewhere). The learner uses
    it to skip prompt positions, whose logits no loss reads. ``0`` keeps every position.
    """
    if logits_to_keep < 0:
        raise ValueError(f"logits_to_keep must be >= 0, got {logits_to_keep}")
    if _uses_flash(model):
        logits = _flash_forward(model, batch)
        return logits[:, -logits_to_keep:] if logits_to_keep else logits
    attention_mask = block_causal_mask(batch.seq_ids, dtype=model.dtype)
    kwargs = {"logits_to_keep": logits_to_keep} if logits_to_keep else {}
    return model(
        input_ids=batch.input_ids,
        position_ids=batch.position_ids,
        attention_mask=attention_mask,
        use_cache=False,
        **kwargs,
    ).logits
