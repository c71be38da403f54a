"""Policy-gradient objectives: one registry, one signature, plus the TIS correction.

Every entry of ``POLICY_OBJECTIVES`` is called as::

    per_token_loss, diag = fn(logprobs, old_logprobs, advantages, mask, *,
                              clip_low=0.2, clip_high=0.2, clip_c=None, is_weights=None)

with (B, T) tensors aligned with the tokens. ``per_token_loss`` is (B, T), exactly 0 (with zero
gradient) where ``mask`` is False, and is reduced to a scalar by an entry of
``rlsys.algo.aggregation.AGGREGATIONS``. ``diag`` holds detached scalar tensors averaged over
the masked tokens of the tensors passed (local statistics, not reduced across ranks).

Only ``logprobs`` carries gradient: ``old_logprobs``, ``advantages`` and ``is_weights`` are
detached. This module does not aggregate, add KL or entropy terms, or compute advantages.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from rlsys.algo._checks import check_token_tensors
from rlsys.registry import Registry

PolicyObjectiveFn = Callable[..., tuple[torch.Tensor, dict[str, torch.Tensor]]]
POLICY_OBJECTIVES: Registry[PolicyObjectiveFn] = Registry("policy objective")


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return torch.where(mask, x, 0).sum() / mask.sum().clamp(min=1)


def _ratio_diag(log_ratio: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """Detached ratio statistics over masked tokens; ``log_ratio`` is 0 off the mask."""
    log_ratio = log_ratio.detach()
    ratio = log_ratio.exp()
    # k3 estimate of KL(pi_old || pi) from tokens sampled by pi_old: (r - 1) - log r >= 0.
    approx_kl = _masked_mean(ratio - 1 - log_ratio, mask)
    return {
        "approx_kl": approx_kl,
        "ratio_mean": _masked_mean(ratio, mask),
        "ratio_max": torch.where(mask, ratio, 0).max() if ratio.numel() else ratio.sum(),
    }


def _checked_inputs(
    logprobs: torch.Tensor,  # (B, T)
    old_logprobs: torch.Tensor,  # (B, T)
    advantages: torch.Tensor,  # (B, T)
    mask: torch.Tensor,  # (B, T)
    is_weights: torch.Tensor | None,  # (B, T)
    *,
    clip_low: float,
    clip_high: float,
    clip_c: float | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Shapes and clip range checked (``ppo_clip``, ``gspo``); returns the bool mask and the
    detached advantages."""
    mask = check_token_tensors(mask, logprobs=logprobs, old_logprobs=old_logprobs,
                               advantages=advantages, is_weights=is_weights)
    _check_clip(clip_low, clip_high, clip_c)
    return mask, advantages.detach()


def _clipped_surrogate(
    ratio: torch.Tensor,  # (B, T) carries the gradient
    advantages: torch.Tensor,  # (B, T) detached
    mask: torch.Tensor,  # (B, T) bool
    *,
    clip_low: float,
    clip_high: float,
    clip_c: float | None,
    is_weights: torch.Tensor | None,  # (B, T)
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``-min(r A, clip(r, 1 - clip_low, 1 + clip_high) A)`` per token, the dual clip
    ``min(loss, -clip_c A)`` on ``A < 0`` when ``clip_c`` is set, times ``is_weights``
    (detached), zero off the mask; diag ``clip_frac`` and ``dual_clip_frac``. Shared by
    ``ppo_clip`` (token ratios) and ``gspo`` (sequence ratios)."""
    unclipped = -ratio * advantages
    clipped = -ratio.clamp(1.0 - clip_low, 1.0 + clip_high) * advantages
    loss = torch.maximum(unclipped, clipped)
    clip_active = clipped > unclipped
    dual_active = torch.zeros_like(clip_active)
    if clip_c is not None:
        dual_bound = -clip_c * advantages
        dual_active = (advantages < 0) & (loss > dual_bound)
        loss = torch.where(dual_active, dual_bound, loss)
    if is_weights is not None:
        loss = loss * is_weights.detach()
    loss = torch.where(mask, loss, 0)
    return loss, {
        "clip_frac": _masked_mean(clip_active.to(ratio.dtype), mask).detach(),
        "dual_clip_frac": _masked_mean(dual_active.to(ratio.dtype), mask).detach(),
    }


def _check_clip(clip_low: float, clip_high: float, clip_c: float | None) -> None:
    if not 0.0 <= clip_low < 1.0:
        raise ValueError(f"clip_low must be in [0, 1), got {clip_low}")
    if clip_high < 0.0:
        raise ValueError(f"clip_high must be >= 0, got {clip_high}")
    if clip_c is not None and clip_c <= 1.0:
        raise ValueError(f"clip_c (dual-clip bound) must be > 1 or None, got {clip_c}")


@POLICY_OBJECTIVES.decorator("ppo_clip")
def ppo_clip(
    logprobs: torch.Tensor,  # (B, T) current policy, carries gradient
    old_logprobs: torch.Tensor,  # (B, T) behaviour policy at rollout time
    advantages: torch.Tensor,  # (B, T)
    mask: torch.Tensor,  # (B, T) bool
    *,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    clip_c: float | None = None,
    is_weights: torch.Tensor | None = None,  # (B, T) e.g. ``truncated_is_weights``
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO clipped surrogate (Schulman et al. 2017, Eq. 7), negated to a loss:
    ``loss = -min(r A, clip(r, 1 - clip_low, 1 + clip_high) A)`` with ``r = exp(logprobs -
    old_logprobs)``. ``clip_high > clip_low`` is DAPO's clip-higher (Yu et al. 2025, Eq. 10).

    Dual clip (Ye et al. 2020, "Mastering Complex Control in MOBA Games", Eq. 5): with
    ``clip_c > 1``, tokens with ``A < 0`` get ``loss = min(loss, -clip_c A)`` so a huge ratio
    cannot blow up the loss. ``is_weights`` (detached) multiply the per-token loss.

    diag: ``clip_frac`` (share of masked tokens whose clipped term is active, i.e. gets no
    gradient), ``dual_clip_frac``, ``approx_kl`` (k3 of KL(old || new)), ``ratio_mean``,
    ``ratio_max``.
    """
    mask, advantages = _checked_inputs(logprobs, old_logprobs, advantages, mask, is_weights,
                                       clip_low=clip_low, clip_high=clip_high, clip_c=clip_c)
    # Zero the log-ratio off the mask first, so garbage there cannot produce inf/NaN gradients.
    log_ratio = torch.where(mask, logprobs - old_logprobs.detach(), 0)
    loss, diag = _clipped_surrogate(log_ratio.exp(), advantages, mask, clip_low=clip_low,
                                    clip_high=clip_high, clip_c=clip_c, is_weights=is_weights)
    return loss, {**diag, **_ratio_diag(log_ratio, mask)}


@POLICY_OBJECTIVES.decorator("vanilla_pg")
def vanilla_pg(
    logprobs: torch.Tensor,  # (B, T) current policy, carries gradient
    old_logprobs: torch.Tensor,  # (B, T) used for diagnostics only
    advantages: torch.Tensor,  # (B, T)
    mask: torch.Tensor,  # (B, T) bool
    *,
    clip_low: float = 0.2,  # unused
    clip_high: float = 0.2,  # unused
    clip_c: float | None = None,  # unused
    is_weights: torch.Tensor | None = None,  # (B, T)
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """REINFORCE / vanilla policy gradient (Williams 1992): ``loss = -logprobs * A`` (times the
    detached ``is_weights`` when given). Its gradient equals ``ppo_clip``'s at ``r = 1``.
    diag: ``approx_kl``, ``ratio_mean``, ``ratio_max`` against ``old_logprobs``."""
    mask = check_token_tensors(
        mask,
        logprobs=logprobs,
        old_logprobs=old_logprobs,
        advantages=advantages,
        is_weights=is_weights,
    )
    loss = -torch.where(mask, logprobs, 0) * advantages.detach()
    if is_weights is not None:
        loss = loss * is_weights.detach()
    loss = torch.where(mask, loss, 0)
    log_ratio = torch.where(mask, logprobs.detach() - old_logprobs.detach(), 0)
    return loss, _ratio_diag(log_ratio, mask)


@POLICY_OBJECTIVES.decorator("gspo")
def gspo(
    logprobs: torch.Tensor,  # (B, T) current policy, carries gradient; one sequence per row
    old_logprobs: torch.Tensor,  # (B, T) behaviour policy at rollout time
    advantages: torch.Tensor,  # (B, T) (constant over a row for outcome rewards)
    mask: torch.Tensor,  # (B, T) bool
    *,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    clip_c: float | None = None,
    is_weights: torch.Tensor | None = None,  # (B, T)
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """GSPO, Group Sequence Policy Optimization (Zheng et al. 2025), in its GSPO-token form
    (Eq. 13-14), negated to a loss. Each row is one sequence ``i`` with ``n_i`` masked tokens:

    * sequence ratio, length-normalised (Eq. 7):
      ``s_i = (pi(y_i|x) / pi_old(y_i|x))^(1/n_i) = exp(mean_t(logprobs - old_logprobs))``;
    * token ratio ``s_it = sg[s_i] * pi(y_it) / sg[pi(y_it)]``: numerically equal to ``s_i``,
      with gradient ``s_i * grad log pi(y_it)`` (``sg`` = stop-gradient);
    * ``loss_it = -min(s_it A_it, clip(s_it, 1 - clip_low, 1 + clip_high) A_it)``, so the
      clip decision is made per sequence (every token of a row is clipped or none is, when
      ``A`` is constant over the row). ``clip_c`` adds the dual clip of ``ppo_clip`` on the
      sequence ratio; ``is_weights`` (detached) multiply the per-token loss.

    Aggregation: the GSPO objective is the mean over sequences of the per-token mean,
    i.e. ``seq_mean_token_mean``; then with a constant ``A_i`` per row the loss is
    ``mean_i -min(s_i A_i, clip(s_i) A_i)`` and its gradient
    ``mean_i -s_i A_i mean_t grad log pi(y_it)`` on unclipped rows (Eq. 10). Other
    aggregations re-weight sequences by length. The paper's clip range is small (e.g.
    ``clip_low = 3e-4``, ``clip_high = 4e-4``) since ``s_i`` is a geometric mean.

    diag: ``clip_frac`` (share of masked tokens whose clipped term is active),
    ``dual_clip_frac``, ``seq_ratio_mean`` (mean ``s_i`` over rows with a masked token), and
    ``approx_kl`` / ``ratio_mean`` / ``ratio_max`` of the per-token ratios
    ``pi(y_it) / pi_old(y_it)`` as in ``ppo_clip``.
    """
    mask, advantages = _checked_inputs(logprobs, old_logprobs, advantages, mask, is_weights,
                                       clip_low=clip_low, clip_high=clip_high, clip_c=clip_c)
    # Zero off the mask first, so garbage there cannot produce inf/NaN values or gradients.
    logprobs = torch.where(mask, logprobs, 0)
    log_ratio = torch.where(mask, logprobs - old_logprobs.detach(), 0)
    lengths = mask.sum(-1, keepdim=True)  # (B, 1)
    seq_log_ratio = log_ratio.sum(-1, keepdim=True) / lengths.clamp(min=1)  # (B, 1)
    token_log_ratio = torch.where(mask, seq_log_ratio.detach() + logprobs - logprobs.detach(), 0)
    loss, diag = _clipped_surrogate(token_log_ratio.exp(), advantages, mask, clip_low=clip_low,
                                    clip_high=clip_high, clip_c=clip_c, is_weights=is_weights)
    rows = lengths[:, 0] > 0
    seq_ratio = seq_log_ratio[:, 0].detach().exp()
    return loss, {**diag, "seq_ratio_mean": _masked_mean(seq_ratio, rows).detach(),
                  **_ratio_diag(log_ratio, mask)}


def truncated_is_weights(
    old_logprobs: torch.Tensor,  # (B, T) learner log-probs of the behaviour policy
    rollout_logprobs: torch.Tensor,  # (B, T) log-probs reported by the rollout engine
    mask: torch.Tensor,  # (B, T) bool
    *,
    cap: float = 2.0,
) -> torch.Tensor:  # (B, T)
    """Truncated importance-sampling weights ``min(exp(old_logprobs - rollout_logprobs), cap)``
    correcting the mismatch between the rollout engine (e.g. vLLM) and the learner's view of the
    same behaviour policy (TIS; Yao et al. 2025, "Your Efficient RL Framework Secretly Brings
    You Off-Policy RL Training"). Detached; 0 where ``mask`` is False."""
    mask = check_token_tensors(
        mask, old_logprobs=old_logprobs, rollout_logprobs=rollout_logprobs
    )
    if cap <= 0:
        raise ValueError(f"cap must be > 0, got {cap}")
    log_ratio = torch.where(mask, old_logprobs.detach() - rollout_logprobs.detach(), 0)
    return torch.where(mask, log_ratio.exp().clamp(max=cap), 0)
