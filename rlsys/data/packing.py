"""Pack tokenized documents into rows and collate them into ``TokenBatch`` tensors.

``pack`` assigns documents to bins of at most ``max_tokens`` tokens with best-fit decreasing
(longest first, each into the fullest bin it still fits; ties broken by index, so the result is
deterministic). ``collate_packed`` lays each bin out as one row: ``seq_ids`` 1..k per document,
``position_ids`` restarting at 0 per document, ``mask`` False at each document's first token
(it has no prediction inside its own document), padding with ``seq_ids == 0``.
``collate_padded`` puts one document per row, right-padded.

Both collates pad rows to the longest row in the batch (not to ``max_tokens``). This module
does not tokenize or truncate: a document longer than ``max_tokens`` is an error (``encode``
truncates first).
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

import torch

from rlsys.data.encode import Encoded
from rlsys.types import TokenBatch


def _check_lengths(encoded: Sequence[Encoded], max_tokens: int) -> None:
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
    for i, doc in enumerate(encoded):
        if len(doc) == 0:
            raise ValueError(f"document {i} is empty")
        if len(doc) > max_tokens:
            raise ValueError(
                f"document {i} has {len(doc)} tokens, more than max_tokens={max_tokens}; "
                f"encode with max_len <= {max_tokens} to truncate it"
            )


def pack(encoded: Sequence[Encoded], max_tokens: int) -> list[list[int]]:
    """Best-fit-decreasing bins of document indices; each bin's total length <= ``max_tokens``.

    Every document appears in exactly one bin; bins are listed in creation order and hold
    indices in placement order (longest first).
    """
    _check_lengths(encoded, max_tokens)
    order = sorted(range(len(encoded)), key=lambda i: (-len(encoded[i]), i))
    bins: list[list[int]] = []
    open_bins: list[tuple[int, int]] = []  # sorted (free tokens, bin index)
    for index in order:
        length = len(encoded[index])
        slot = bisect.bisect_left(open_bins, (length, -1))  # fullest bin that still fits
        if slot == len(open_bins):
            bins.append([index])
            free, bin_id = max_tokens - length, len(bins) - 1
        else:
            free, bin_id = open_bins.pop(slot)
            bins[bin_id].append(index)
            free -= length
        if free > 0:
            bisect.insort(open_bins, (free, bin_id))
    return bins


def _empty_batch(rows: int, width: int, pad_id: int) -> TokenBatch:
    return TokenBatch(
        input_ids=torch.full((rows, width), pad_id, dtype=torch.long),
        position_ids=torch.zeros((rows, width), dtype=torch.long),
        seq_ids=torch.zeros((rows, width), dtype=torch.long),
        mask=torch.zeros((rows, width), dtype=torch.bool),
    )


def _place(batch: TokenBatch, row: int, start: int, doc: Encoded, seq_id: int) -> int:
    end = start + len(doc)
    batch.input_ids[row, start:end] = torch.tensor(doc.input_ids, dtype=torch.long)
    batch.position_ids[row, start:end] = torch.arange(len(doc), dtype=torch.long)
    batch.seq_ids[row, start:end] = seq_id
    mask = torch.tensor(doc.mask, dtype=torch.bool)
    mask[0] = False  # first token of a document is never a target
    batch.mask[row, start:end] = mask
    return end


def collate_packed(
    encoded: Sequence[Encoded], bins: Sequence[Sequence[int]], max_tokens: int, pad_id: int
) -> TokenBatch:
    """One row per bin (documents in bin order), right-padded to the longest row."""
    _check_lengths(encoded, max_tokens)
    seen = [i for b in bins for i in b]
    if len(seen) != len(set(seen)):
        raise ValueError("a document index appears in more than one bin")
    lengths = [sum(len(encoded[i]) for i in b) for b in bins]
    for row, total in enumerate(lengths):
        if total > max_tokens:
            raise ValueError(f"bin {row} holds {total} tokens, more than max_tokens={max_tokens}")
    batch = _empty_batch(len(bins), max(lengths, default=0), pad_id)
    for row, doc_indices in enumerate(bins):
        start = 0
        for seq_id, index in enumerate(doc_indices, start=1):
            start = _place(batch, row, start, encoded[index], seq_id)
    return batch


def collate_padded(encoded: Sequence[Encoded], pad_id: int) -> TokenBatch:
    """One document per row (``seq_ids`` 1 on its tokens), right-padded to the longest."""
    for i, doc in enumerate(encoded):
        if len(doc) == 0:
            raise ValueError(f"document {i} is empty")
    batch = _empty_batch(len(encoded), max((len(d) for d in encoded), default=0), pad_id)
    for row, doc in enumerate(encoded):
        _place(batch, row, 0, doc, 1)
    return batch
