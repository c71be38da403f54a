"""Loss aggregation: how a (B, T) per-token loss becomes one scalar.

Every entry of ``AGGREGATIONS`` is called as::

    loss = fn(per_token_loss, mask, *, num_tokens=None, num_seqs=None, norm_len=None,
              seq_ids=None)

``num_tokens`` / ``num_seqs`` are the GLOBAL normalisers: total masked tokens / total sequences
over every rank and micro-batch of one optimizer step (pass ints or 0-dim tensors). Every entry
is a sum over tokens (or sequences) divided by a global constant, so for any split of a batch
into shards ``sum_k fn(shard_k, num_tokens=N, num_seqs=S) == fn(full_batch)`` and the same holds
for gradients: with data parallelism, SUM the shard gradients (DeepSpeed averages over ranks, so
multiply by the world size, or pass normalisers divided by it). When left None they default to
the local counts (correct for a single shard holding the whole batch).

A "sequence" is a row, or with ``seq_ids`` (B, T) (packed rows, ids >= 1 per document, 0 for
padding) a document. Rows/documents with no masked token contribute 0, never NaN.
This module does not compute per-token losses or all-reduce the normalisers.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from rlsys.algo._checks import check_token_tensors
from rlsys.registry import Registry

AggregationFn = Callable[..., torch.Tensor]
AGGREGATIONS: Registry[AggregationFn] = Registry("loss aggregation")

Count = int | float | torch.Tensor


def _at_least_one(value: Count) -> Count:
    """Clamp a normaliser to >= 1: an all-zero numerator then yields 0 instead of NaN."""
    if isinstance(value, torch.Tensor):
        return value.clamp(min=1)
    if value < 0:
        raise ValueError(f"normalisers must be >= 0, got {value}")
    return max(value, 1)


def _local_num_seqs(mask: torch.Tensor, seq_ids: torch.Tensor | None) -> Count:
    """Rows, or with ``seq_ids`` the non-padding documents, of this shard."""
    if seq_ids is None:
        return torch.tensor(mask.shape[0], device=mask.device)
    return _document_keys(seq_ids).unique().numel() - int((seq_ids == 0).any())


def _document_keys(seq_ids: torch.Tensor) -> torch.Tensor:
    """(B, T) unique id per (row, document); 0 stays 0 for padding."""
    rows = torch.arange(seq_ids.shape[0], device=seq_ids.device).unsqueeze(-1)
    stride = seq_ids.max().clamp(min=0) + 1
    return torch.where(seq_ids > 0, rows * stride + seq_ids, 0)


def _masked_sum(per_token_loss: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return torch.where(mask, per_token_loss, 0).sum()


@AGGREGATIONS.decorator("token_mean")
def token_mean(
    per_token_loss: torch.Tensor,  # (B, T)
    mask: torch.Tensor,  # (B, T) bool
    *,
    num_tokens: Count | None = None,
    num_seqs: Count | None = None,  # unused
    norm_len: Count | None = None,  # unused
    seq_ids: torch.Tensor | None = None,  # unused
) -> torch.Tensor:
    """``sum(l * m) / num_tokens``: every token weighs the same (DAPO's token-level loss,
    Yu et al. 2025, Eq. 12); long answers dominate."""
    mask = check_token_tensors(mask, per_token_loss=per_token_loss)
    if num_tokens is None:
        num_tokens = mask.sum()
    return _masked_sum(per_token_loss, mask) / _at_least_one(num_tokens)


@AGGREGATIONS.decorator("seq_mean_token_mean")
def seq_mean_token_mean(
    per_token_loss: torch.Tensor,  # (B, T)
    mask: torch.Tensor,  # (B, T) bool
    *,
    num_tokens: Count | None = None,  # unused
    num_seqs: Count | None = None,
    norm_len: Count | None = None,  # unused
    seq_ids: torch.Tensor | None = None,  # (B, T) long, packed rows only
) -> torch.Tensor:
    """``sum_i (sum_t l_it m_it / n_i) / num_seqs`` with ``n_i`` the masked tokens of sequence
    ``i``: every sequence weighs the same (the original GRPO objective, Shao et al. 2024,
    Eq. 3)."""
    mask = check_token_tensors(mask, per_token_loss=per_token_loss, seq_ids=seq_ids)
    if num_seqs is None:
        num_seqs = _local_num_seqs(mask, seq_ids)
    masked_loss = torch.where(mask, per_token_loss, 0)
    if seq_ids is None:
        per_seq = masked_loss.sum(-1) / mask.sum(-1).clamp(min=1)
    else:
        keys, doc = torch.unique(_document_keys(seq_ids), return_inverse=True)
        doc = doc.flatten()  # unmasked tokens add 0 to their bucket's sum and count
        buckets = masked_loss.new_zeros(keys.numel())
        sums = buckets.index_add(0, doc, masked_loss.flatten())
        counts = buckets.index_add(0, doc, mask.flatten().to(masked_loss.dtype))
        per_seq = sums / counts.clamp(min=1)
    return per_seq.sum() / _at_least_one(num_seqs)


@AGGREGATIONS.decorator("seq_mean_token_sum")
def seq_mean_token_sum(
    per_token_loss: torch.Tensor,  # (B, T)
    mask: torch.Tensor,  # (B, T) bool
    *,
    num_tokens: Count | None = None,  # unused
    num_seqs: Count | None = None,
    norm_len: Count | None = None,  # unused
    seq_ids: torch.Tensor | None = None,  # (B, T) long, only for the default num_seqs
) -> torch.Tensor:
    """``sum(l * m) / num_seqs``: the summed per-sequence loss, averaged over sequences."""
    mask = check_token_tensors(mask, per_token_loss=per_token_loss, seq_ids=seq_ids)
    if num_seqs is None:
        num_seqs = _local_num_seqs(mask, seq_ids)
    return _masked_sum(per_token_loss, mask) / _at_least_one(num_seqs)


@AGGREGATIONS.decorator("seq_mean_token_sum_norm")
def seq_mean_token_sum_norm(
    per_token_loss: torch.Tensor,  # (B, T)
    mask: torch.Tensor,  # (B, T) bool
    *,
    num_tokens: Count | None = None,  # unused
    num_seqs: Count | None = None,
    norm_len: Count | None = None,  # required
    seq_ids: torch.Tensor | None = None,  # (B, T) long, only for the default num_seqs
) -> torch.Tensor:
    """``sum(l * m) / (num_seqs * norm_len)`` with a constant ``norm_len`` (e.g. the maximum
    response length): Dr.GRPO's unbiased aggregation (Liu et al. 2025, Eq. 4 / Sec. 3.1)."""
    mask = check_token_tensors(mask, per_token_loss=per_token_loss, seq_ids=seq_ids)
    if norm_len is None:
        raise ValueError("norm_len is required for 'seq_mean_token_sum_norm' (e.g. max length)")
    if num_seqs is None:
        num_seqs = _local_num_seqs(mask, seq_ids)
    return _masked_sum(per_token_loss, mask) / _at_least_one(num_seqs) / _at_least_one(norm_len)
