"""Advantage estimators: one registry, one signature.

Every entry of ``ADVANTAGES`` is called as::

    advantages, returns = fn(token_rewards, mask, *, group_ids=None, values=None,
                             gamma=1.0, lam=1.0, norm_std=True, eps=1e-6)

* ``token_rewards`` (B, T) float: per-token rewards aligned with the tokens (the outcome reward
  sits on the last response token; a KL penalty may be spread over response tokens). Rewards at
  positions where ``mask`` is False are ignored.
* ``mask`` (B, T) bool: True on response tokens. ``group_ids`` (B,) long: samples of the same
  prompt share an id. ``values`` (B, T): critic values (``gae`` only).
* Both outputs are (B, T), detached, exactly 0 where ``mask`` is False.
* ``returns`` are the returns the advantages were built from, before any baseline or
  normalisation: GAE's ``A + V`` (the critic target), the discounted reward-to-go for
  REINFORCE++, and the sequence score broadcast to response tokens for GRPO / RLOO.

Discounting and GAE walk only over masked positions: ``V_{t+1}`` / ``r_{t+1}`` mean "at the next
response token of the row" (tool outputs masked out inside a response are skipped), and the
value after the last response token is 0.

Sharding caveat: group statistics need every sample of a group, and the global whitening of
``reinforce_pp*``/``gae_whitened`` takes its mean/std over all masked tokens of the batch it is
given. Call these on the controller on the full batch, before it is sharded over ranks.

This module computes advantages only; it does not compute rewards, KL penalties or losses.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from rlsys.algo._checks import check_rows, check_token_tensors
from rlsys.registry import Registry

AdvantageFn = Callable[..., tuple[torch.Tensor, torch.Tensor]]
ADVANTAGES: Registry[AdvantageFn] = Registry("advantage estimator")


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` (B, T) over True entries of ``mask`` (B, T); 0 when nothing is masked."""
    return torch.where(mask, x, 0).sum() / mask.sum().clamp(min=1)


def masked_whiten(
    x: torch.Tensor,  # (B, T)
    mask: torch.Tensor,  # (B, T) bool
    *,
    norm_std: bool = True,
    eps: float = 1e-6,
) -> torch.Tensor:  # (B, T)
    """Whiten ``x`` over all masked entries: ``(x - mean) / (std + eps)`` (``x - mean`` when
    ``norm_std`` is False); 0 where ``mask`` is False. ``std`` is Bessel-corrected."""
    count = mask.sum()
    mean = masked_mean(x, mask)
    centered = torch.where(mask, x - mean, 0)
    if norm_std:
        var = centered.square().sum() / (count - 1).clamp(min=1)
        centered = centered / (var.sqrt() + eps)
    return centered


def sequence_scores(
    token_rewards: torch.Tensor,  # (B, T)
    mask: torch.Tensor,  # (B, T) bool
) -> torch.Tensor:  # (B,)
    """Per-sample score ``s_i = sum_t token_rewards[i, t]`` over masked tokens."""
    return torch.where(mask, token_rewards, 0).sum(dim=-1)


def group_statistics(
    scores: torch.Tensor,  # (B,)
    group_ids: torch.Tensor,  # (B,) long
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # 3 x (B,)
    """Per-row group ``(mean, std, size)`` of ``scores`` over rows sharing a ``group_id``.

    ``std`` is Bessel-corrected (as ``torch.std``); a group of one sample has std 0.
    """
    unique, inverse = torch.unique(group_ids, return_inverse=True)
    num_groups = unique.numel()
    zeros = scores.new_zeros(num_groups)
    size = zeros.index_add(0, inverse, torch.ones_like(scores))
    mean = zeros.index_add(0, inverse, scores) / size
    sq_dev = zeros.index_add(0, inverse, (scores - mean[inverse]).square())
    std = (sq_dev / (size - 1).clamp(min=1)).sqrt()
    return mean[inverse], std[inverse], size[inverse]


def discounted_returns(
    token_rewards: torch.Tensor,  # (B, T)
    mask: torch.Tensor,  # (B, T) bool
    *,
    gamma: float = 1.0,
) -> torch.Tensor:  # (B, T)
    """Reward-to-go ``G_t = r_t + gamma * G_{t'}`` (``t'`` the next masked position), 0 unmasked."""
    rewards = torch.where(mask, token_rewards, 0)
    if gamma == 1.0:  # reverse cumulative sum; skipping unmasked positions is free here
        return torch.where(mask, rewards.flip(-1).cumsum(-1).flip(-1), 0)
    running = rewards.new_zeros(rewards.shape[0])
    out = torch.zeros_like(rewards)
    for t in reversed(range(rewards.shape[1])):
        running = torch.where(mask[:, t], rewards[:, t] + gamma * running, running)
        out[:, t] = torch.where(mask[:, t], running, 0)
    return out


def _broadcast(per_row: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B,) -> (B, T): the row value on masked tokens, 0 elsewhere."""
    return torch.where(mask, per_row.unsqueeze(-1), 0)


@ADVANTAGES.decorator("gae")
@torch.no_grad()
def gae(
    token_rewards: torch.Tensor,  # (B, T)
    mask: torch.Tensor,  # (B, T) bool
    *,
    group_ids: torch.Tensor | None = None,  # (B,) unused
    values: torch.Tensor | None = None,  # (B, T) critic values, required
    gamma: float = 1.0,
    lam: float = 1.0,
    norm_std: bool = True,  # unused: see ``gae_whitened``
    eps: float = 1e-6,  # unused
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalized Advantage Estimation (Schulman et al. 2016, "High-Dimensional Continuous
    Control Using GAE", Eq. 16): ``delta_t = r_t + gamma V_{t+1} - V_t`` and
    ``A_t = sum_l (gamma lam)^l delta_{t+l}``, computed backwards as
    ``A_t = delta_t + gamma lam A_{t+1}``. ``returns = A + V`` (the critic's target).

    Closed forms: ``lam=1`` gives ``A_t = G_t - V_t`` (discounted return minus value);
    ``lam=0`` gives the TD error ``delta_t``. No whitening (``norm_std`` is ignored).
    """
    mask = check_token_tensors(mask, token_rewards=token_rewards, values=values)
    if values is None:
        raise ValueError("values is required for the 'gae' advantage estimator but was None")
    rewards = torch.where(mask, token_rewards, 0)
    values = torch.where(mask, values.to(rewards.dtype), 0)
    next_value = rewards.new_zeros(rewards.shape[0])
    next_adv = rewards.new_zeros(rewards.shape[0])
    advantages = torch.zeros_like(rewards)
    for t in reversed(range(rewards.shape[1])):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        adv = delta + gamma * lam * next_adv
        m = mask[:, t]
        next_adv = torch.where(m, adv, next_adv)
        next_value = torch.where(m, values[:, t], next_value)
        advantages[:, t] = torch.where(m, adv, 0)
    returns = torch.where(mask, advantages + values, 0)
    return advantages, returns


@ADVANTAGES.decorator("gae_whitened")
@torch.no_grad()
def gae_whitened(
    token_rewards: torch.Tensor,  # (B, T)
    mask: torch.Tensor,  # (B, T) bool
    *,
    group_ids: torch.Tensor | None = None,  # (B,) unused
    values: torch.Tensor | None = None,  # (B, T) critic values, required
    gamma: float = 1.0,
    lam: float = 1.0,
    norm_std: bool = True,
    eps: float = 1e-6,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``gae`` followed by global whitening of the advantages over all masked tokens of the
    batch (the usual PPO practice); ``returns`` are the un-whitened ``A + V``."""
    advantages, returns = gae(token_rewards, mask, values=values, gamma=gamma, lam=lam)
    return masked_whiten(advantages, mask.bool(), norm_std=norm_std, eps=eps), returns


@ADVANTAGES.decorator("grpo")
@torch.no_grad()
def grpo(
    token_rewards: torch.Tensor,  # (B, T)
    mask: torch.Tensor,  # (B, T) bool
    *,
    group_ids: torch.Tensor | None = None,  # (B,) long, required
    values: torch.Tensor | None = None,  # unused
    gamma: float = 1.0,  # unused
    lam: float = 1.0,  # unused
    norm_std: bool = True,
    eps: float = 1e-6,
) -> tuple[torch.Tensor, torch.Tensor]:
    """GRPO outcome advantages (Shao et al. 2024, DeepSeekMath, Sec. 4.1.2):
    ``A_i = (s_i - mean_g(s)) / (std_g(s) + eps)`` broadcast to every response token, with
    ``s_i`` the sum of the row's token rewards and ``g`` its group. ``norm_std=False`` drops the
    division (Dr.GRPO, Liu et al. 2025, "Understanding R1-Zero-Like Training", Sec. 3.1).
    ``returns`` = ``s_i`` on response tokens.
    """
    mask = check_token_tensors(mask, token_rewards=token_rewards)
    group_ids = check_rows("group_ids", group_ids, mask.shape[0])
    scores = sequence_scores(token_rewards, mask)
    mean, std, _ = group_statistics(scores, group_ids)
    advantages = scores - mean
    if norm_std:
        advantages = advantages / (std + eps)
    return _broadcast(advantages, mask), _broadcast(scores, mask)


@ADVANTAGES.decorator("dr_grpo")
def dr_grpo(
    token_rewards: torch.Tensor,  # (B, T)
    mask: torch.Tensor,  # (B, T) bool
    *,
    group_ids: torch.Tensor | None = None,  # (B,) long, required
    values: torch.Tensor | None = None,  # unused
    gamma: float = 1.0,  # unused
    lam: float = 1.0,  # unused
    norm_std: bool = False,  # ignored: Dr.GRPO never divides by the std
    eps: float = 1e-6,  # unused
) -> tuple[torch.Tensor, torch.Tensor]:
    """Dr.GRPO advantages (Liu et al. 2025, Sec. 3.1): ``A_i = s_i - mean_g(s)``, i.e. ``grpo``
    with ``norm_std=False`` whatever ``norm_std`` is passed. Pair it with the
    ``seq_mean_token_sum_norm`` aggregation to remove the length bias too."""
    return grpo(token_rewards, mask, group_ids=group_ids, norm_std=False)


@ADVANTAGES.decorator("rloo")
@torch.no_grad()
def rloo(
    token_rewards: torch.Tensor,  # (B, T)
    mask: torch.Tensor,  # (B, T) bool
    *,
    group_ids: torch.Tensor | None = None,  # (B,) long, required
    values: torch.Tensor | None = None,  # unused
    gamma: float = 1.0,  # unused
    lam: float = 1.0,  # unused
    norm_std: bool = True,  # unused: RLOO has no std normalisation
    eps: float = 1e-6,  # unused
) -> tuple[torch.Tensor, torch.Tensor]:
    """REINFORCE Leave-One-Out (Ahmadian et al. 2024, "Back to Basics", Eq. 6; Kool et al.
    2019): ``A_i = s_i - 1/(n-1) sum_{j != i} s_j`` over the ``n`` samples of the group, which
    equals ``n/(n-1) (s_i - mean_g(s))``. A group of one sample has no baseline: ``A = 0``.
    ``returns`` = ``s_i`` on response tokens.
    """
    mask = check_token_tensors(mask, token_rewards=token_rewards)
    group_ids = check_rows("group_ids", group_ids, mask.shape[0])
    scores = sequence_scores(token_rewards, mask)
    mean, _, size = group_statistics(scores, group_ids)
    loo_scale = torch.where(size > 1, size / (size - 1).clamp(min=1), 0)
    advantages = loo_scale * (scores - mean)
    return _broadcast(advantages, mask), _broadcast(scores, mask)


@ADVANTAGES.decorator("reinforce_pp")
@torch.no_grad()
def reinforce_pp(
    token_rewards: torch.Tensor,  # (B, T)
    mask: torch.Tensor,  # (B, T) bool
    *,
    group_ids: torch.Tensor | None = None,  # unused
    values: torch.Tensor | None = None,  # unused
    gamma: float = 1.0,
    lam: float = 1.0,  # unused
    norm_std: bool = True,
    eps: float = 1e-6,
) -> tuple[torch.Tensor, torch.Tensor]:
    """REINFORCE++ (Hu 2025, "REINFORCE++", Sec. 3: token-level return
    ``G_t = sum_{s>=t} gamma^{s-t} r_s``, then global advantage normalisation
    ``A = (G - mean_batch) / std_batch``) over all masked tokens of the batch. ``norm_std=False``
    only centres. ``returns`` = ``G`` (before whitening). See the module's sharding caveat.
    """
    mask = check_token_tensors(mask, token_rewards=token_rewards)
    returns = discounted_returns(token_rewards, mask, gamma=gamma)
    return masked_whiten(returns, mask, norm_std=norm_std, eps=eps), returns


@ADVANTAGES.decorator("reinforce_pp_baseline")
@torch.no_grad()
def reinforce_pp_baseline(
    token_rewards: torch.Tensor,  # (B, T)
    mask: torch.Tensor,  # (B, T) bool
    *,
    group_ids: torch.Tensor | None = None,  # (B,) long, required
    values: torch.Tensor | None = None,  # unused
    gamma: float = 1.0,
    lam: float = 1.0,  # unused
    norm_std: bool = True,
    eps: float = 1e-6,
) -> tuple[torch.Tensor, torch.Tensor]:
    """REINFORCE++-baseline (Hu 2025, Sec. 3, group baseline variant):
    ``A_t = G_t - mean_g(s)`` (the group mean of the sequence scores ``s``), then global
    whitening over all masked tokens. With an outcome-only reward and ``gamma=1`` every token of
    row ``i`` gets ``s_i - mean_g(s)`` before whitening. ``returns`` = ``G`` (no baseline).
    """
    mask = check_token_tensors(mask, token_rewards=token_rewards)
    group_ids = check_rows("group_ids", group_ids, mask.shape[0])
    returns = discounted_returns(token_rewards, mask, gamma=gamma)
    group_mean, _, _ = group_statistics(sequence_scores(token_rewards, mask), group_ids)
    centered = torch.where(mask, returns - group_mean.unsqueeze(-1), 0)
    return masked_whiten(centered, mask, norm_std=norm_std, eps=eps), returns
