"""Turn sampled completions and their scores into an ``Experience`` batch, and the per-step RL
batch math the controller does before the update: token rewards (outcome reward on the last
response token, DAPO overlong shaping, optional KL penalty), dynamic-sampling group filtering,
and advantages through the ``ADVANTAGES`` registry.

Pure torch on the driver; no Ray, no model. The math itself lives in ``rlsys.algo``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from rlsys.algo import ADVANTAGES, kl_penalty_rewards
from rlsys.types import Completion, Experience, TokenBatch


def build_experience(completions: Sequence[Completion], rewards: Sequence[float], *,
                     group_ids: Sequence[int], pad_id: int) -> Experience:
    """Right-pad ``prompt + response`` rows; ``mask`` marks response tokens (multi-turn: only
    the generated ones, ``Completion.loss_mask``; observations stay context).

    ``rollout_logprobs`` holds the engine's log-probs at the response positions (0 elsewhere).
    When any completion carries ``turn_rewards``, ``reward_tokens`` holds them per token.
    """
    if not (len(completions) == len(rewards) == len(group_ids)):
        raise ValueError("completions, rewards and group_ids must have the same length")
    if not completions:
        raise ValueError("cannot build an experience from zero completions")
    rows = [list(c.prompt_ids) + list(c.response_ids) for c in completions]
    width = max(len(r) for r in rows)
    batch = len(rows)
    input_ids = torch.full((batch, width), pad_id, dtype=torch.long)
    seq_ids = torch.zeros((batch, width), dtype=torch.long)
    mask = torch.zeros((batch, width), dtype=torch.bool)
    rollout_logprobs = torch.zeros((batch, width), dtype=torch.float32)
    multi_turn = any(c.turn_rewards is not None for c in completions)
    reward_tokens = torch.zeros((batch, width), dtype=torch.float32) if multi_turn else None
    for i, (row, c) in enumerate(zip(rows, completions, strict=True)):
        p, n = len(c.prompt_ids), len(c.response_ids)
        input_ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        seq_ids[i, : len(row)] = 1
        if c.loss_mask is None:
            mask[i, p: p + n] = True
        else:
            if len(c.loss_mask) != n:
                raise ValueError(f"completion {i}: loss_mask has {len(c.loss_mask)} entries for "
                                 f"{n} response tokens")
            mask[i, p: p + n] = torch.tensor(c.loss_mask, dtype=torch.bool)
        if c.logprobs:
            rollout_logprobs[i, p: p + n] = torch.tensor(c.logprobs, dtype=torch.float32)
        if reward_tokens is not None:
            _place_turn_rewards(reward_tokens[i], c, p, rewards[i])
    position_ids = torch.arange(width).expand(batch, width).clone() * (seq_ids > 0)
    tokens = TokenBatch(input_ids=input_ids, position_ids=position_ids, seq_ids=seq_ids,
                        mask=mask)
    return Experience(tokens=tokens, rewards=torch.tensor(list(rewards), dtype=torch.float32),
                      group_ids=torch.tensor(list(group_ids), dtype=torch.long),
                      rollout_logprobs=rollout_logprobs, reward_tokens=reward_tokens)


def _place_turn_rewards(row: torch.Tensor, c: Completion, prompt_len: int,
                        reward: float) -> None:
    """Write a trajectory's per-turn increments into ``row``; a reward that differs from their
    sum (a single-turn completion in a multi-turn batch, or a reward re-scored after the
    episode) puts the difference on the last generated token, so the row sums to ``reward``."""
    placed = 0.0
    for pos, value in c.turn_rewards or ():
        if not 0 <= pos < len(c.response_ids) or (c.loss_mask and not c.loss_mask[pos]):
            raise ValueError(f"turn reward at response position {pos} is not a generated token")
        row[prompt_len + pos] += value
        placed += value
    rest = float(reward) - placed
    if abs(rest) > 1e-9:
        generated = [j for j in range(len(c.response_ids)) if not c.loss_mask or c.loss_mask[j]]
        if generated:
            row[prompt_len + generated[-1]] += rest


def overlong_penalty(lengths: torch.Tensor, *, max_new_tokens: int, buffer: int,
                     penalty: float) -> torch.Tensor:
    """DAPO soft overlong punishment (eq. 13): 0 up to ``max_new_tokens - buffer`` tokens, then a
    linear ramp down to ``-penalty`` at ``max_new_tokens``.

    >>> overlong_penalty(torch.tensor([4, 6, 8]), max_new_tokens=8, buffer=4, penalty=1.0)
    tensor([ 0.0000, -0.5000, -1.0000])
    """
    if buffer <= 0:
        return torch.zeros_like(lengths, dtype=torch.float32)
    start = max_new_tokens - buffer
    excess = (lengths.float() - start).clamp(min=0)
    return -(excess / buffer).clamp(max=1.0) * penalty


def token_rewards(exp: Experience, *, extra: torch.Tensor | None = None) -> torch.Tensor:
    """Place each sample's scalar reward (+ ``extra`` per sample) on its last response token.

    Multi-turn (``exp.reward_tokens`` set): each turn's reward increment on that turn's last
    generated token, ``extra`` on the last one; a row still sums to its reward + extra, so the
    outcome estimators (GRPO, RLOO) see the episode reward and GAE / REINFORCE++ see per-turn
    rewards where they happened."""
    mask = exp.tokens.mask
    out = torch.zeros(mask.shape, dtype=torch.float32)
    if exp.reward_tokens is not None:
        out = torch.where(mask, exp.reward_tokens.float(), out)
        total = extra if extra is not None else torch.zeros_like(exp.rewards)
    else:
        total = exp.rewards + (extra if extra is not None else 0.0)
    positions = torch.arange(mask.shape[1]).expand_as(mask)
    last = torch.where(mask, positions, torch.full_like(positions, -1)).max(dim=1).values
    has = last >= 0
    out[has.nonzero().squeeze(-1), last[has]] += total[has]
    return out


def informative_groups(rewards: torch.Tensor, group_ids: torch.Tensor) -> torch.Tensor:
    """DAPO dynamic sampling: a (B,) bool keep-mask, False for groups whose rewards are all equal
    (they carry no group-relative signal)."""
    keep = torch.zeros_like(group_ids, dtype=torch.bool)
    for g in group_ids.unique():
        members = group_ids == g
        r = rewards[members]
        keep[members] = bool((r.max() - r.min()) > 1e-8)
    return keep


def compute_advantages(exp: Experience, *, estimator: str, gamma: float, lam: float,
                       norm_std: bool, kl_coef: float = 0.0, kl_estimator: str = "k1",
                       extra_rewards: torch.Tensor | None = None) -> Experience:
    """Fill ``exp.advantages`` and ``exp.returns`` with the named estimator.

    With ``kl_coef > 0`` (KL-as-reward mode) ``ref_logprobs`` and ``old_logprobs`` must be set;
    the per-token penalty is subtracted from the token rewards first.
    """
    rewards = token_rewards(exp, extra=extra_rewards)
    if kl_coef > 0:
        if exp.ref_logprobs is None or exp.old_logprobs is None:
            raise ValueError("KL-in-reward needs old_logprobs and ref_logprobs")
        rewards = kl_penalty_rewards(rewards, exp.old_logprobs, exp.ref_logprobs,
                                     exp.tokens.mask, kl_coef=kl_coef, estimator=kl_estimator)
    fn = ADVANTAGES.get(estimator)
    exp.advantages, exp.returns = fn(rewards, exp.tokens.mask, group_ids=exp.group_ids,
                                     values=exp.values, gamma=gamma, lam=lam, norm_std=norm_std)
    return exp


def select(exp: Experience, index: torch.Tensor) -> Experience:
    """Rows ``index`` of an experience (every per-row tensor sliced), e.g. a minibatch or shard."""
    def take(t: torch.Tensor | None) -> torch.Tensor | None:
        return None if t is None else t[index]

    tok = exp.tokens
    tokens = TokenBatch(tok.input_ids[index], tok.position_ids[index], tok.seq_ids[index],
                        tok.mask[index])
    return Experience(tokens=tokens, rewards=exp.rewards[index], group_ids=exp.group_ids[index],
                      rollout_logprobs=exp.rollout_logprobs[index],
                      old_logprobs=take(exp.old_logprobs), ref_logprobs=take(exp.ref_logprobs),
                      values=take(exp.values), advantages=take(exp.advantages),
                      returns=take(exp.returns), info=dict(exp.info),
                      reward_tokens=take(exp.reward_tokens))
