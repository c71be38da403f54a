"""The Bradley-Terry pairwise loss for reward models, as pure tensor math.

``bradley_terry(chosen_rewards, rejected_rewards, *, margin=0.0)`` returns the per-pair losses
and detached diagnostics; the caller averages over the (global) pair count. This module does not
run models, pool hidden states or pick the scalar head.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def bradley_terry(
    chosen_rewards: torch.Tensor,  # (B,) scalar reward of each chosen response
    rejected_rewards: torch.Tensor,  # (B,) scalar reward of each rejected response
    *,
    margin: float | torch.Tensor = 0.0,  # float or (B,) per-pair margins
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Bradley-Terry negative log-likelihood of preferring ``chosen`` (Ouyang et al. 2022,
    Eq. 1): ``loss = -log sigmoid(r_c - r_r - margin)``, (B,). The margin (Llama 2, Touvron
    et al. 2023, Eq. 2) asks for a gap of at least ``margin`` before the loss flattens.

    diag (detached, means over pairs): ``accuracy`` (share with ``r_c > r_r``; ties count as
    wrong), ``margin`` (mean ``r_c - r_r``), ``chosen`` and ``rejected`` (mean rewards).
    """
    if chosen_rewards.shape != rejected_rewards.shape or chosen_rewards.dim() != 1:
        raise ValueError(f"chosen_rewards and rejected_rewards must be (B,) of one shape, got "
                         f"{tuple(chosen_rewards.shape)} and {tuple(rejected_rewards.shape)}")
    if isinstance(margin, torch.Tensor):
        if margin.shape != chosen_rewards.shape:
            raise ValueError(f"margin must be a float or (B,), got {tuple(margin.shape)}")
        margin = margin.detach()
    elif margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    gap = chosen_rewards - rejected_rewards
    losses = -F.logsigmoid(gap - margin)
    detached = gap.detach()
    diag = {
        "accuracy": (detached > 0).to(gap.dtype).mean(),
        "margin": detached.mean(),
        "chosen": chosen_rewards.detach().mean(),
        "rejected": rejected_rewards.detach().mean(),
    }
    return losses, diag
