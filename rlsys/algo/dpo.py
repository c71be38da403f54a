"""Pairwise preference losses (DPO family) on per-sequence log-probs.

Every entry of ``DPO_LOSSES`` is called as::

    loss, diag = fn(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, *,
                    beta=0.1, label_smoothing=0.0)

with (B,) per-sequence log-probs (``sequence_logps``) of the chosen / rejected responses under
the policy and the frozen reference. ``loss`` is (B,): average it (or weight it) at the call
site. With ``h = (chosen - ref_chosen) - (rejected - ref_rejected)`` the implicit rewards are
``beta * (logps - ref_logps)`` (Rafailov et al. 2023, Sec. 5).

diag (detached scalar means over the pairs): ``rewards/chosen``, ``rewards/rejected``,
``rewards/margin`` (chosen - rejected), ``rewards/accuracy`` (share with chosen > rejected).
This module does not run models or build preference pairs.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from rlsys.algo._checks import check_same_shape, check_token_tensors
from rlsys.registry import Registry

DPOLossFn = Callable[..., tuple[torch.Tensor, dict[str, torch.Tensor]]]
DPO_LOSSES: Registry[DPOLossFn] = Registry("DPO loss")


def sequence_logps(
    token_logprobs: torch.Tensor,  # (B, T) per-token log-probs (``token_logprobs``)
    mask: torch.Tensor,  # (B, T) bool, True on response tokens
    *,
    average: bool = False,
) -> torch.Tensor:  # (B,)
    """Sum of the masked token log-probs of each row (the mean over masked tokens when
    ``average``, as the IPO paper uses; a row with no masked token gives 0)."""
    mask = check_token_tensors(mask, token_logprobs=token_logprobs)
    total = torch.where(mask, token_logprobs, 0).sum(dim=-1)
    if average:
        total = total / mask.sum(dim=-1).clamp(min=1)
    return total


def _margin_and_diag(
    chosen_logps: torch.Tensor,
    rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Return ``h`` (B,) and the reward diagnostics."""
    if chosen_logps.dim() != 1:
        raise ValueError(f"chosen_logps must be (B,), got shape {tuple(chosen_logps.shape)}")
    check_same_shape(
        "chosen_logps",
        chosen_logps,
        rejected_logps=rejected_logps,
        ref_chosen_logps=ref_chosen_logps,
        ref_rejected_logps=ref_rejected_logps,
    )
    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    chosen_log_ratio = chosen_logps - ref_chosen_logps.detach()
    rejected_log_ratio = rejected_logps - ref_rejected_logps.detach()
    chosen_rewards = beta * chosen_log_ratio.detach()
    rejected_rewards = beta * rejected_log_ratio.detach()
    diag = {
        "rewards/chosen": chosen_rewards.mean(),
        "rewards/rejected": rejected_rewards.mean(),
        "rewards/margin": (chosen_rewards - rejected_rewards).mean(),
        "rewards/accuracy": (chosen_rewards > rejected_rewards).to(chosen_rewards.dtype).mean(),
    }
    return chosen_log_ratio - rejected_log_ratio, diag


@DPO_LOSSES.decorator("sigmoid")
def sigmoid(
    chosen_logps: torch.Tensor,  # (B,)
    rejected_logps: torch.Tensor,  # (B,)
    ref_chosen_logps: torch.Tensor,  # (B,)
    ref_rejected_logps: torch.Tensor,  # (B,)
    *,
    beta: float = 0.1,
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """DPO (Rafailov et al. 2023, Eq. 7): ``-log sigmoid(beta h)``. With ``label_smoothing``
    ``eps`` (the probability that a label is flipped) it is conservative DPO (Mitchell 2023):
    ``-(1 - eps) log sigmoid(beta h) - eps log sigmoid(-beta h)``."""
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"label_smoothing must be in [0, 0.5), got {label_smoothing}")
    h, diag = _margin_and_diag(
        chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, beta
    )
    loss = -(1.0 - label_smoothing) * F.logsigmoid(beta * h)
    if label_smoothing > 0:
        loss = loss - label_smoothing * F.logsigmoid(-beta * h)
    return loss, diag


@DPO_LOSSES.decorator("cdpo")
def cdpo(
    chosen_logps: torch.Tensor,  # (B,)
    rejected_logps: torch.Tensor,  # (B,)
    ref_chosen_logps: torch.Tensor,  # (B,)
    ref_rejected_logps: torch.Tensor,  # (B,)
    *,
    beta: float = 0.1,
    label_smoothing: float = 0.1,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Conservative DPO: the ``sigmoid`` loss with a required ``0 < label_smoothing < 0.5``
    (default 0.1), so choosing ``cdpo`` with no smoothing is an error instead of silent DPO."""
    if not 0.0 < label_smoothing < 0.5:
        raise ValueError(f"cdpo needs label_smoothing in (0, 0.5), got {label_smoothing}")
    return sigmoid(
        chosen_logps,
        rejected_logps,
        ref_chosen_logps,
        ref_rejected_logps,
        beta=beta,
        label_smoothing=label_smoothing,
    )


@DPO_LOSSES.decorator("ipo")
def ipo(
    chosen_logps: torch.Tensor,  # (B,)
    rejected_logps: torch.Tensor,  # (B,)
    ref_chosen_logps: torch.Tensor,  # (B,)
    ref_rejected_logps: torch.Tensor,  # (B,)
    *,
    beta: float = 0.1,
    label_smoothing: float = 0.0,  # unused
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """IPO (Azar et al. 2023, Eq. 17 with ``tau = beta``): ``(h - 1/(2 beta))^2``. ``h`` is built
    from whatever log-probs are passed; the paper uses per-token AVERAGE log-probs, i.e.
    ``sequence_logps(..., average=True)``; sums give a length-dependent target margin."""
    h, diag = _margin_and_diag(
        chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, beta
    )
    return (h - 1.0 / (2.0 * beta)).square(), diag
