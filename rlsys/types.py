"""Batch dataclasses shared across layers: token batches, completions, experiences.

Conventions used everywhere in rlsys:

* ``mask`` is True where a token counts (its log-prob enters the loss).
* Per-token tensors are aligned with ``input_ids``: position ``t`` holds the quantity for token
  ``t`` given tokens ``< t``. Position 0 of a row (and the first token of each packed document)
  has no prediction, so its ``mask`` is False and its log-prob is 0.
* ``seq_ids`` numbers the documents inside a (packed) row, starting at 1; 0 marks padding.
  Attention never crosses documents; ``position_ids`` restart at 0 for each document.

This module only defines containers; it does no I/O and imports only torch lazily for typing.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import torch


@dataclass
class TokenBatch:
    """A right-padded (or packed) batch of token rows for the learner.

    Attributes:
        input_ids: (B, T) long token ids.
        position_ids: (B, T) long, restarting at 0 per document.
        seq_ids: (B, T) long document index within the row, 1-based; 0 = padding.
        mask: (B, T) bool, True where the token is a training target.
    """

    input_ids: torch.Tensor  # (B, T)
    position_ids: torch.Tensor  # (B, T)
    seq_ids: torch.Tensor  # (B, T)
    mask: torch.Tensor  # (B, T)

    def to(self, device: Any) -> TokenBatch:
        """Return a copy with every tensor moved to ``device``."""
        return type(self)(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    def num_tokens(self) -> int:
        """Number of non-padding tokens."""
        return int((self.seq_ids > 0).sum())


@dataclass
class Completion:
    """One sampled response from a rollout engine.

    Attributes:
        prompt_index: index of the prompt in the batch handed to the engine.
        prompt_ids: token ids of the (chat-templated) prompt.
        response_ids: sampled token ids.
        text: the decoded response.
        logprobs: per-response-token log-probs, same length as ``response_ids``: by default
            ("raw" ``logprobs_mode``) under the model's own distribution at temperature 1, the
            same quantity the learner computes (used for the truncated-IS correction); with
            "processed" under the sampling distribution (after temperature/top-p).
        finish_reason: ``"stop"`` (EOS/stop string) or ``"length"`` (hit max tokens).
        loss_mask: multi-turn only: per response token, True where the engine generated it
            (a training target), False for observation and template tokens (context only).
            None: every response token was generated.
        turn_rewards: multi-turn only: ``(response position, reward increment)`` pairs, each on
            the last generated token of a turn; they sum to the episode's reward.
        trajectory: multi-turn only: the episode's messages, turns, tool calls and rewards
            (``actors.episodes``), for metrics and ``samples.jsonl``.
        token_versions: the rollout pool's weights version that generated each response token
            (same length as ``response_ids``; partial rollouts switch weights between chunks,
            see ``RolloutWorker.generate_partial``); None when the engine did not record it.
    """

    prompt_index: int
    prompt_ids: list[int]
    response_ids: list[int]
    text: str
    logprobs: list[float]
    finish_reason: str
    loss_mask: list[bool] | None = None
    turn_rewards: list[tuple[int, float]] | None = None
    trajectory: dict[str, Any] | None = None
    token_versions: list[int] | None = None


@dataclass
class Experience:
    """A scored RL batch, one row per (prompt, response) sample, right-padded.

    ``tokens.mask`` marks response tokens. Per-token tensors are (B, T) aligned with
    ``tokens.input_ids``; per-sample tensors are (B,).
    """

    tokens: TokenBatch
    rewards: torch.Tensor  # (B,) scalar reward per sample
    group_ids: torch.Tensor  # (B,) long, samples of the same prompt share an id
    rollout_logprobs: torch.Tensor  # (B, T) engine log-probs on response tokens, 0 elsewhere
    old_logprobs: torch.Tensor | None = None  # (B, T) learner log-probs before the update
    ref_logprobs: torch.Tensor | None = None  # (B, T) reference-policy log-probs
    values: torch.Tensor | None = None  # (B, T) critic values (PPO only)
    advantages: torch.Tensor | None = None  # (B, T)
    returns: torch.Tensor | None = None  # (B, T) value targets (PPO only)
    info: dict[str, Any] = field(default_factory=dict)
    # (B, T) multi-turn per-turn reward increments on each turn's last generated token (None:
    # the scalar reward goes on the last response token)
    reward_tokens: torch.Tensor | None = None


@dataclass(frozen=True)
class PolicyLossSpec:
    """Everything that defines an RL stage's policy loss, fixed for the stage: built once by
    the controller from ``stages[].algo`` and passed unchanged to the learner's ``train_policy``
    and on to ``learner.losses.policy_loss_fn`` (per-step sizes such as ``num_tokens`` travel
    beside it).

    Attributes:
        objective: name in ``rlsys.algo.POLICY_OBJECTIVES`` (``ppo_clip``, ``gspo``, ...).
        aggregation: name in ``rlsys.algo.AGGREGATIONS`` (``token_mean``, ...).
        clip_low, clip_high: ratio clip range ``[1 - clip_low, 1 + clip_high]``.
        clip_c: dual-clip constant (None: off).
        tis_cap: truncated importance-sampling cap for rollout/learner mismatch (None: off).
        kl_coef: weight of KL(pi || ref) added to the loss (0: none; KL-in-reward is not here).
        kl_estimator: ``k1``, ``k2`` or ``k3``.
        entropy_coef: weight of the entropy bonus.
        norm_len: the fixed length of ``seq_mean_token_sum_norm`` (the max response length).
    """

    objective: str = "ppo_clip"
    aggregation: str = "token_mean"
    clip_low: float = 0.2
    clip_high: float = 0.2
    clip_c: float | None = None
    tis_cap: float | None = None
    kl_coef: float = 0.0
    kl_estimator: str = "k3"
    entropy_coef: float = 0.0
    norm_len: int | None = None

    def __post_init__(self) -> None:
        if self.kl_coef < 0 or self.entropy_coef < 0:
            raise ValueError(f"kl_coef and entropy_coef must be >= 0, got {self.kl_coef}, "
                             f"{self.entropy_coef}")

