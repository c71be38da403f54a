"""Shared-prompt forward for RL micro-batches: each distinct prompt runs through the model once.

A GRPO/RLOO group holds ``n`` responses to one prompt, and the prompt is most of each row
(~75 % in the quickstart). ``plan_shared_prompts`` finds rows whose prompts are token-identical;
``shared_prompt_forward`` then runs

1. the distinct prompts, right-padded, with ``use_cache=True`` (gradients flow through the
   cached keys/values), keeping only each prompt's last-position logits;
2. every row's response on top of its prompt's cache (the cache rows are selected per row, so
   the backward pass sums each prompt's gradient over its group), with an attention mask that
   hides the prompt padding and position ids continuing after the real prompt length.

It returns logits for a *response-aligned* batch (``plan.aligned``): row ``r`` column ``j`` is
position ``p_r - 1 + j`` of the original row (``p_r`` = its prompt length), so column 0 is the
last prompt token (``mask`` False) and the targets follow. Every per-token tensor of the
``Experience`` is re-aligned the same way, so the unchanged loss closures of ``learner.losses``
apply; their results equal the plain forward's (``tests/learner/test_prefix.py``).

Used only where it is exact and safe: single-document right-padded rows whose targets are one
contiguous run right after the prompt, eager/sdpa attention, no gradient checkpointing (which
turns the cache off), and at least one prompt shared by two rows. This module does not compute
losses or choose micro-batches.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from learner.losses import map_token_columns
from rlsys.types import Experience, TokenBatch


@dataclass
class PrefixPlan:
    """How to run one micro-batch with shared prompts.

    Attributes:
        prompt_ids: (U, P) distinct prompts, right-padded with 0.
        prompt_lens: (U,) their real lengths.
        row_prompt: (B,) index into the distinct prompts of each row.
        response_ids: (B, C) each row's tokens after its prompt, right-padded with 0.
        response_lens: (B,) real response lengths.
        aligned: the micro-batch re-aligned to columns ``p_r - 1 .. p_r + C - 1`` (width C + 1).
    """

    prompt_ids: torch.Tensor
    prompt_lens: torch.Tensor
    row_prompt: torch.Tensor
    response_ids: torch.Tensor
    response_lens: torch.Tensor
    aligned: Any


def _prompt_lengths(tokens: TokenBatch) -> torch.Tensor | None:
    """Per-row prompt length ``p_r`` (first target column) if every row is one document whose
    targets run contiguously from ``p_r`` to its end; else None."""
    mask, real = tokens.mask, tokens.seq_ids > 0
    if tokens.seq_ids.max() > 1 or not mask.any(dim=1).all():
        return None
    lengths = real.sum(dim=1)
    if not torch.equal(real, torch.arange(real.shape[1]) < lengths.unsqueeze(1)):
        return None  # not right-padded
    starts = mask.int().argmax(dim=1)
    expected = (torch.arange(mask.shape[1]) >= starts.unsqueeze(1)) & real
    if not torch.equal(mask, expected) or (starts < 1).any():
        return None
    return starts


def _align(tensor: torch.Tensor, starts: torch.Tensor, width: int) -> torch.Tensor:
    """Row ``r`` of the result is ``tensor[r, starts[r] - 1 : starts[r] - 1 + width]``, zero-
    (False-) filled past the end."""
    columns = starts.unsqueeze(1) - 1 + torch.arange(width, device=tensor.device)
    inside = columns < tensor.shape[1]
    picked = torch.gather(tensor, 1, columns.clamp(max=tensor.shape[1] - 1))
    return torch.where(inside, picked, torch.zeros((), dtype=tensor.dtype, device=tensor.device))


def plan_shared_prompts(micro_batch: Any) -> PrefixPlan | None:
    """A ``PrefixPlan`` for an ``Experience`` or ``TokenBatch`` micro-batch whose rows share
    prompts, else None (DPO pairs, rows that do not fit the layout above, or no prompt shared)."""
    if isinstance(micro_batch, Experience):
        source = micro_batch.tokens
    elif isinstance(micro_batch, TokenBatch):
        source = micro_batch
    else:
        return None
    tokens = source.to("cpu")
    starts = _prompt_lengths(tokens)
    if starts is None:
        return None
    ids = tokens.input_ids
    keys = [tuple(ids[r, : int(starts[r])].tolist()) for r in range(ids.shape[0])]
    distinct = list(dict.fromkeys(keys))
    if len(distinct) == len(keys):
        return None
    index = {key: i for i, key in enumerate(distinct)}
    prompt_lens = torch.tensor([len(k) for k in distinct])
    prompt_ids = torch.zeros(len(distinct), int(prompt_lens.max()), dtype=torch.long)
    for i, key in enumerate(distinct):
        prompt_ids[i, : len(key)] = torch.tensor(key)
    lengths = (tokens.seq_ids > 0).sum(dim=1)
    response_lens = lengths - starts
    width = int(response_lens.max())
    aligned_width = width + 1
    response_ids = _align(ids, starts + 1, width)
    response_ids = torch.where(torch.arange(width) < response_lens.unsqueeze(1), response_ids, 0)
    device = source.input_ids.device
    starts_d = starts.to(device)

    aligned = map_token_columns(micro_batch, lambda t: _align(t, starts_d, aligned_width))
    return PrefixPlan(
        prompt_ids=prompt_ids.to(device),
        prompt_lens=prompt_lens.to(device),
        row_prompt=torch.tensor([index[k] for k in keys], device=device),
        response_ids=response_ids.to(device),
        response_lens=response_lens.to(device),
        aligned=aligned,
    )


def shared_prompt_forward(model: Any, plan: PrefixPlan) -> torch.Tensor:  # (B, C + 1, V)
    """Logits aligned with ``plan.aligned``: column 0 holds each row's last-prompt-position
    logits, column ``j >= 1`` the logits at response position ``j - 1``."""
    prompt_ids, prompt_lens = plan.prompt_ids, plan.prompt_lens
    width = prompt_ids.shape[1]
    columns = torch.arange(width, device=prompt_ids.device)
    prompt_attention = (columns < prompt_lens.unsqueeze(1)).long()
    last = prompt_lens - 1  # (U,)
    keep = torch.unique(last)  # logits only where some prompt ends
    out = model(
        input_ids=prompt_ids,
        attention_mask=prompt_attention,
        position_ids=columns.expand_as(prompt_ids),
        use_cache=True,
        logits_to_keep=keep,
    )
    where = torch.searchsorted(keep, last)  # (U,) column of each prompt's end within ``keep``
    prompt_last = out.logits[torch.arange(len(last), device=last.device), where]  # (U, V)
    cache = out.past_key_values
    cache.batch_select_indices(plan.row_prompt)
    response = plan.response_ids
    response_columns = torch.arange(response.shape[1], device=response.device)
    response_attention = (response_columns < plan.response_lens.unsqueeze(1)).long()
    row_lens = prompt_lens[plan.row_prompt]
    logits = model(
        input_ids=response,
        attention_mask=torch.cat([prompt_attention[plan.row_prompt], response_attention], dim=1),
        position_ids=row_lens.unsqueeze(1) + response_columns,
        past_key_values=cache,
        use_cache=True,
    ).logits  # (B, C, V)
    return torch.cat([prompt_last[plan.row_prompt].unsqueeze(1), logits], dim=1)


def unalign(values: torch.Tensor, plan: PrefixPlan, width: int) -> torch.Tensor:  # (B, width)
    """Put response-aligned ``values`` (B, C + 1) back at the original columns (zeros elsewhere):
    the inverse of the alignment in ``plan.aligned`` for a row batch ``width`` columns wide."""
    starts = plan.prompt_lens[plan.row_prompt]
    columns = starts.unsqueeze(1) - 1 + torch.arange(values.shape[1], device=values.device)
    inside = columns < width
    out = values.new_zeros(values.shape[0], width + 1)
    out.scatter_(1, torch.where(inside, columns, width), torch.where(inside, values, 0))
    return out[:, :width]
