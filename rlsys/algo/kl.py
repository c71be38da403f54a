"""Per-token KL estimators and the KL-in-reward penalty.

Every entry of ``KL_ESTIMATORS`` is called as ``kl = fn(logprobs, ref_logprobs, mask)`` and
returns a (B, T) per-token sample estimate of ``KL(pi || pi_ref)`` from tokens sampled by
``pi``, 0 where ``mask`` is False (J. Schulman, "Approximating KL Divergence", 2020). With
``log_ratio = logprobs - ref_logprobs = log(pi / pi_ref)``:

* ``k1 = log_ratio``: unbiased, high variance, can be negative.
* ``k2 = log_ratio**2 / 2``: biased, low variance, >= 0; its gradient is the KL gradient.
* ``k3 = exp(-log_ratio) - 1 + log_ratio``: unbiased, low variance, >= 0 (GRPO's KL term,
  Shao et al. 2024, Eq. 4).

Gradient flows through both inputs as given; detach ``ref_logprobs`` at the call site if it was
not computed under ``no_grad``. This module does not aggregate the estimates.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from rlsys.algo._checks import check_token_tensors
from rlsys.registry import Registry

KLEstimatorFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
KL_ESTIMATORS: Registry[KLEstimatorFn] = Registry("KL estimator")


def _log_ratio(
    logprobs: torch.Tensor, ref_logprobs: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    mask = check_token_tensors(mask, logprobs=logprobs, ref_logprobs=ref_logprobs)
    # Zero off the mask before any exp, so garbage there cannot make inf/NaN (or gradients).
    return torch.where(mask, logprobs - ref_logprobs, 0), mask


@KL_ESTIMATORS.decorator("k1")
def k1(
    logprobs: torch.Tensor,  # (B, T) log pi(token)
    ref_logprobs: torch.Tensor,  # (B, T) log pi_ref(token)
    mask: torch.Tensor,  # (B, T) bool
) -> torch.Tensor:  # (B, T)
    """``k1 = log(pi / pi_ref)``; unbiased estimate of KL(pi || pi_ref)."""
    log_ratio, _ = _log_ratio(logprobs, ref_logprobs, mask)
    return log_ratio


@KL_ESTIMATORS.decorator("k2")
def k2(
    logprobs: torch.Tensor,  # (B, T)
    ref_logprobs: torch.Tensor,  # (B, T)
    mask: torch.Tensor,  # (B, T) bool
) -> torch.Tensor:  # (B, T)
    """``k2 = 0.5 * log(pi / pi_ref)**2``; biased, non-negative."""
    log_ratio, _ = _log_ratio(logprobs, ref_logprobs, mask)
    return 0.5 * log_ratio.square()


@KL_ESTIMATORS.decorator("k3")
def k3(
    logprobs: torch.Tensor,  # (B, T)
    ref_logprobs: torch.Tensor,  # (B, T)
    mask: torch.Tensor,  # (B, T) bool
) -> torch.Tensor:  # (B, T)
    """``k3 = pi_ref/pi - 1 - log(pi_ref/pi)``; unbiased and non-negative (``x - 1 >= log x``)."""
    log_ratio, _ = _log_ratio(logprobs, ref_logprobs, mask)
    return torch.expm1(-log_ratio) + log_ratio


def kl_penalty_rewards(
    token_rewards: torch.Tensor,  # (B, T)
    logprobs: torch.Tensor,  # (B, T) behaviour-policy log-probs of the sampled tokens
    ref_logprobs: torch.Tensor,  # (B, T)
    mask: torch.Tensor,  # (B, T) bool
    *,
    kl_coef: float,
    estimator: str = "k1",
) -> torch.Tensor:  # (B, T)
    """KL-in-reward mode (Ziegler et al. 2019; InstructGPT Eq. 2):
    ``token_rewards - kl_coef * kl`` with ``kl`` the detached per-token estimate from
    ``KL_ESTIMATORS[estimator]``. Unmasked positions keep their ``token_rewards``."""
    check_token_tensors(mask, token_rewards=token_rewards)
    kl = KL_ESTIMATORS.get(estimator)(logprobs.detach(), ref_logprobs.detach(), mask)
    return token_rewards - kl_coef * kl.to(token_rewards.dtype)
