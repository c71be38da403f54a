"""Per-token log-probabilities and entropies from causal-LM logits.

Both functions return a (B, T) tensor aligned with ``input_ids`` (see ``rlsys.types``): position
``t`` holds the quantity for token ``t`` predicted from ``logits[:, t - 1]``; position 0 has no
prediction and is 0. In a packed row the first token of each later document gets a value
computed from the previous document's last logits; its ``mask`` is False, so it never counts.

Memory: the (B, T, V) logits are processed ``chunk_rows`` rows at a time, so only one chunk is
ever up-cast to float32 (bf16/fp16 logits lose too much precision in a log-softmax). This
module does not run the model, apply temperature, or mask anything.
"""

from __future__ import annotations

import torch


def _check_logits(logits: torch.Tensor) -> None:
    if logits.dim() != 3:
        raise ValueError(f"logits must be (B, T, V), got shape {tuple(logits.shape)}")


def _compute_dtype(logits: torch.Tensor) -> torch.dtype:
    # float64 stays float64 (gradcheck); everything else is computed in float32.
    return torch.float64 if logits.dtype == torch.float64 else torch.float32


def token_logprobs(
    logits: torch.Tensor,  # (B, T, V) causal-LM logits
    input_ids: torch.Tensor,  # (B, T) long token ids
    *,
    chunk_rows: int = 4,
) -> torch.Tensor:  # (B, T)
    """Log-prob of each token under the distribution that predicted it.

    ``result[:, t] = log softmax(logits[:, t - 1])[input_ids[:, t]]`` for ``t >= 1`` and
    ``result[:, 0] = 0``. Computed as ``gathered logit - logsumexp`` on ``chunk_rows`` rows at a
    time (float32, or float64 for float64 logits). Differentiable w.r.t. ``logits``.
    """
    _check_logits(logits)
    if input_ids.shape != logits.shape[:2]:
        raise ValueError(
            f"input_ids shape {tuple(input_ids.shape)} must equal logits (B, T) "
            f"{tuple(logits.shape[:2])}"
        )
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
    dtype = _compute_dtype(logits)
    targets = input_ids[:, 1:].unsqueeze(-1)  # (B, T-1, 1)
    chunks = []
    for start in range(0, logits.shape[0], chunk_rows):
        rows = slice(start, start + chunk_rows)
        chunk = logits[rows, :-1].to(dtype)  # (b, T-1, V)
        picked = torch.gather(chunk, -1, targets[rows]).squeeze(-1)
        chunks.append(picked - torch.logsumexp(chunk, dim=-1))
    if not chunks:  # empty batch
        return logits.new_zeros(logits.shape[:2], dtype=dtype)
    shifted = torch.cat(chunks, dim=0)
    first = torch.zeros(logits.shape[0], 1, dtype=dtype, device=logits.device)
    return torch.cat([first, shifted], dim=1)


def entropy_from_logits(
    logits: torch.Tensor,  # (B, T, V) causal-LM logits
    *,
    chunk_rows: int = 4,
) -> torch.Tensor:  # (B, T)
    """Entropy of the distribution that predicted each token, aligned like ``token_logprobs``.

    ``result[:, t] = H(softmax(logits[:, t - 1]))`` for ``t >= 1``, ``result[:, 0] = 0``, with
    ``H(p) = logsumexp(z) - sum_v p_v z_v``. Differentiable (usable as an entropy bonus).
    """
    _check_logits(logits)
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
    dtype = _compute_dtype(logits)
    chunks = []
    for start in range(0, logits.shape[0], chunk_rows):
        chunk = logits[start : start + chunk_rows, :-1].to(dtype)  # (b, T-1, V)
        probs = torch.softmax(chunk, dim=-1)
        chunks.append(torch.logsumexp(chunk, dim=-1) - (probs * chunk).sum(dim=-1))
    if not chunks:  # empty batch
        return logits.new_zeros(logits.shape[:2], dtype=dtype)
    shifted = torch.cat(chunks, dim=0)
    first = torch.zeros(logits.shape[0], 1, dtype=dtype, device=logits.device)
    return torch.cat([first, shifted], dim=1)
