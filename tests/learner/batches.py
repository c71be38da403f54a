"""Small hand-made batches for learner tests (right-padded rows, one document per row)."""

from __future__ import annotations

import torch

from rlsys.types import Experience, TokenBatch


def token_batch(rows: list[list[int]], prompt_lens: list[int] | None = None) -> TokenBatch:
    """Right-pad ``rows``; ``mask`` is True on tokens after the prompt (all but the first token
    when ``prompt_lens`` is None, i.e. CPT/SFT on every predictable token)."""
    length = max(len(r) for r in rows)
    prompt_lens = prompt_lens or [1] * len(rows)
    input_ids = torch.zeros(len(rows), length, dtype=torch.long)
    position_ids = torch.zeros_like(input_ids)
    seq_ids = torch.zeros_like(input_ids)
    mask = torch.zeros(len(rows), length, dtype=torch.bool)
    for i, (row, prompt_len) in enumerate(zip(rows, prompt_lens, strict=True)):
        input_ids[i, : len(row)] = torch.tensor(row)
        position_ids[i, : len(row)] = torch.arange(len(row))
        seq_ids[i, : len(row)] = 1
        mask[i, max(prompt_len, 1) : len(row)] = True
    return TokenBatch(input_ids, position_ids, seq_ids, mask)


def random_rows(num_rows: int, length: int, seed: int, vocab: int = 2000) -> list[list[int]]:
    """``num_rows`` random token rows of lengths ``length - i % 3`` (some padding)."""
    gen = torch.Generator().manual_seed(seed)
    return [
        torch.randint(10, vocab, (length - i % 3,), generator=gen).tolist() for i in range(num_rows)
    ]


def experience(tokens: TokenBatch, advantages: list[float]) -> Experience:
    """An Experience with per-row advantages broadcast over the response tokens."""
    rows = tokens.input_ids.shape[0]
    adv = torch.tensor(advantages, dtype=torch.float32).unsqueeze(-1).expand_as(tokens.mask)
    return Experience(
        tokens=tokens,
        rewards=torch.tensor(advantages),
        group_ids=torch.zeros(rows, dtype=torch.long),
        rollout_logprobs=torch.zeros(tokens.mask.shape),
        advantages=torch.where(tokens.mask, adv, 0.0),
    )


def with_noisy_logprobs(exp: Experience, gen: torch.Generator) -> Experience:
    """Fill ``old/ref/rollout_logprobs`` with distinct values near -2 on the response tokens
    (so ratios, KL and truncated-IS weights are all non-trivial)."""
    mask = exp.tokens.mask
    noise = 0.05 * torch.randn(mask.shape, generator=gen)
    exp.old_logprobs = torch.where(mask, -2.0 + noise, 0)
    exp.ref_logprobs = torch.where(mask, -2.1 - noise, 0)
    exp.rollout_logprobs = torch.where(mask, -2.0 + 2 * noise, 0)
    return exp
