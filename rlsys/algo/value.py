"""Critic loss for PPO: the clipped value loss.

Pure function on (B, T) tensors; it does not compute returns (see ``advantages.gae``) or
aggregate (see ``aggregation.AGGREGATIONS``).
"""

from __future__ import annotations

import torch

from rlsys.algo._checks import check_token_tensors


def clipped_value_loss(
    values: torch.Tensor,  # (B, T) current critic values, carries gradient
    old_values: torch.Tensor,  # (B, T) critic values at rollout time
    returns: torch.Tensor,  # (B, T) targets, e.g. GAE's A + V
    mask: torch.Tensor,  # (B, T) bool
    *,
    clip: float = 0.2,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO clipped value loss (as in OpenAI baselines' PPO2 and the PPO-for-RLHF literature):
    ``0.5 * max((V - R)^2, (clip(V, V_old - clip, V_old + clip) - R)^2)``, 0 where ``mask`` is
    False. ``old_values`` and ``returns`` are detached.

    diag: ``vf_clip_frac`` (share of masked tokens where the clipped term is the larger one),
    ``values_mean``, ``returns_mean`` (over masked tokens, detached).
    """
    mask = check_token_tensors(mask, values=values, old_values=old_values, returns=returns)
    if clip < 0:
        raise ValueError(f"clip must be >= 0, got {clip}")
    old_values = old_values.detach()
    returns = returns.detach()
    values = torch.where(mask, values, old_values)  # garbage off the mask gets no gradient
    clipped_values = old_values + (values - old_values).clamp(-clip, clip)
    unclipped_loss = (values - returns).square()
    clipped_loss = (clipped_values - returns).square()
    loss = torch.where(mask, 0.5 * torch.maximum(unclipped_loss, clipped_loss), 0)
    count = mask.sum().clamp(min=1)
    diag = {
        "vf_clip_frac": ((clipped_loss > unclipped_loss) & mask).sum().detach() / count,
        "values_mean": torch.where(mask, values, 0).sum().detach() / count,
        "returns_mean": torch.where(mask, returns, 0).sum() / count,
    }
    return loss, diag
