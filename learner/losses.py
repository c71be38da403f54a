"""Per-micro-batch loss closures for the learner's ``train_*`` steps.

Each builder validates its hyperparameters and registry names once and returns
``loss_fn(micro_batch, logits) -> (loss, metrics)`` where ``loss`` is this micro-batch's share of
the GLOBAL loss (global normalisers, so shares over all micro-batches and ranks sum to the
full-batch loss) and ``metrics`` are detached scalars with the same additivity (a per-micro-batch
mean is multiplied by the micro-batch's share of tokens or pairs), so summing them over
micro-batches and ranks gives the global value. The math lives in ``rlsys.algo``; this module
only wires it to model outputs. It does not run models, call backward or talk to other ranks.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch

from learner.critic import values_from_output
from rlsys.algo import (
    AGGREGATIONS,
    DPO_LOSSES,
    KL_ESTIMATORS,
    POLICY_OBJECTIVES,
    clipped_value_loss,
    entropy_from_logits,
    masked_nll,
    sequence_logps,
    token_logprobs,
    truncated_is_weights,
)
from rlsys.types import Experience, PolicyLossSpec, TokenBatch

LossFn = Callable[[Any, torch.Tensor], tuple[torch.Tensor, dict[str, torch.Tensor]]]


def _positive(name: str, value: int | None) -> None:
    if value is None or value < 1:
        raise ValueError(f"{name} must be a positive global count, got {value}")


def _token_sum(values: torch.Tensor, mask: torch.Tensor, num_tokens: int) -> torch.Tensor:
    """This micro-batch's contribution to a global masked token mean."""
    return torch.where(mask, values.detach(), 0).sum() / num_tokens


def _weighted(diag: dict[str, torch.Tensor], weight: torch.Tensor | float) -> dict[str, Any]:
    return {name: value.detach() * weight for name, value in diag.items()}


def stack_pair(chosen: TokenBatch, rejected: TokenBatch) -> TokenBatch:
    """Rows of ``chosen`` then ``rejected`` in one batch, right-padded to the longer length
    (padding: id 0, seq id 0, mask False), so a DPO pair needs one forward."""
    length = max(chosen.input_ids.shape[1], rejected.input_ids.shape[1])

    def pad(tensor: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.pad(tensor, (0, length - tensor.shape[1]), value=0)

    return TokenBatch(
        **{
            f.name: torch.cat([pad(getattr(chosen, f.name)), pad(getattr(rejected, f.name))])
            for f in dataclasses.fields(TokenBatch)
        }
    )


def experience_to(experience: Experience, device: Any) -> Experience:
    """A copy of ``experience`` with every tensor (and its tokens) on ``device``."""
    moved = {
        f.name: getattr(experience, f.name).to(device)
        for f in dataclasses.fields(Experience)
        if isinstance(getattr(experience, f.name), torch.Tensor)
    }
    return dataclasses.replace(experience, tokens=experience.tokens.to(device), **moved)


def sft_loss_fn(*, aggregation: str, num_tokens: int, num_seqs: int | None) -> LossFn:
    """Masked NLL reduced with ``AGGREGATIONS[aggregation]``; metric ``nll`` is the global
    token-mean NLL whatever the aggregation."""
    aggregate = AGGREGATIONS.get(aggregation)
    _positive("num_tokens", num_tokens)

    def loss_fn(batch: TokenBatch, logits: torch.Tensor) -> tuple[torch.Tensor, dict]:
        nll = masked_nll(token_logprobs(logits, batch.input_ids), batch.mask)
        loss = aggregate(
            nll, batch.mask, num_tokens=num_tokens, num_seqs=num_seqs, seq_ids=batch.seq_ids
        )
        return loss, {"nll": _token_sum(nll, batch.mask, num_tokens)}

    return loss_fn


def dpo_loss_fn(*, loss: str, beta: float, label_smoothing: float, num_pairs: int) -> LossFn:
    """DPO-family loss on a ``(chosen, rejected, ref_chosen_logps, ref_rejected_logps)``
    micro-batch whose logits come from ``stack_pair(chosen, rejected)``; mean over pairs."""
    dpo = DPO_LOSSES.get(loss)
    _positive("num_pairs", num_pairs)

    def loss_fn(pair: tuple, logits: torch.Tensor) -> tuple[torch.Tensor, dict]:
        chosen, rejected, ref_chosen_logps, ref_rejected_logps = pair
        tokens = stack_pair(chosen, rejected)
        logps = sequence_logps(token_logprobs(logits, tokens.input_ids), tokens.mask)
        rows = chosen.input_ids.shape[0]
        chosen_logps, rejected_logps = logps[:rows], logps[rows:]
        losses, diag = dpo(
            chosen_logps,
            rejected_logps,
            ref_chosen_logps.to(logps.dtype),
            ref_rejected_logps.to(logps.dtype),
            beta=beta,
            label_smoothing=label_smoothing,
        )
        metrics = _weighted(diag, rows / num_pairs)
        metrics["logps/chosen"] = chosen_logps.detach().sum() / num_pairs
        metrics["logps/rejected"] = rejected_logps.detach().sum() / num_pairs
        return losses.sum() / num_pairs, metrics

    return loss_fn


def policy_loss_fn(spec: PolicyLossSpec, *, num_tokens: int, num_seqs: int) -> LossFn:
    """``spec.objective`` + ``kl_coef`` KL(pi || ref) - ``entropy_coef`` H, each reduced with
    ``spec.aggregation`` over the step's ``num_tokens`` / ``num_seqs``. Metrics: ``pg_loss``,
    ``kl`` and ``entropy`` (global token means), ``kl_loss``, ``entropy_loss``, and the
    objective's diagnostics (e.g. ``clip_frac``)."""
    policy_objective = POLICY_OBJECTIVES.get(spec.objective)
    aggregate = AGGREGATIONS.get(spec.aggregation)
    kl_fn = KL_ESTIMATORS.get(spec.kl_estimator)
    _positive("num_tokens", num_tokens)
    _positive("num_seqs", num_seqs)
    kl_coef, entropy_coef, tis_cap, norm_len = (spec.kl_coef, spec.entropy_coef, spec.tis_cap,
                                                spec.norm_len)
    clip = {"clip_low": spec.clip_low, "clip_high": spec.clip_high, "clip_c": spec.clip_c}

    def loss_fn(experience: Experience, logits: torch.Tensor) -> tuple[torch.Tensor, dict]:
        tokens, mask = experience.tokens, experience.tokens.mask
        if experience.advantages is None:
            raise ValueError("train_policy: Experience.advantages is None; compute them first")
        if kl_coef > 0 and experience.ref_logprobs is None:
            raise ValueError("train_policy: kl_coef > 0 needs Experience.ref_logprobs")
        logprobs = token_logprobs(logits, tokens.input_ids)
        old_logprobs = experience.old_logprobs
        if old_logprobs is None:  # on-policy: the behaviour policy is the current one
            old_logprobs = logprobs.detach()
        is_weights = None
        if tis_cap is not None:
            is_weights = truncated_is_weights(
                old_logprobs, experience.rollout_logprobs, mask, cap=tis_cap
            )
        pg, diag = policy_objective(
            logprobs, old_logprobs, experience.advantages, mask, is_weights=is_weights, **clip
        )

        def reduce(per_token: torch.Tensor) -> torch.Tensor:
            return aggregate(
                per_token, mask, num_tokens=num_tokens, num_seqs=num_seqs,
                norm_len=norm_len, seq_ids=tokens.seq_ids,
            )  # fmt: skip

        pg_loss = reduce(pg)
        metrics = {**_weighted(diag, mask.sum() / num_tokens), "pg_loss": pg_loss.detach()}
        extra, extra_metrics = _regularisers(
            experience, logits, logprobs, reduce, kl_fn=kl_fn, kl_coef=kl_coef,
            entropy_coef=entropy_coef, num_tokens=num_tokens,
        )  # fmt: skip
        return pg_loss + extra, {**metrics, **extra_metrics}

    return loss_fn


def _regularisers(
    experience: Experience,
    logits: torch.Tensor,  # (B, T, V)
    logprobs: torch.Tensor,  # (B, T) carries gradient
    reduce: Callable[[torch.Tensor], torch.Tensor],
    *,
    kl_fn: Callable[..., torch.Tensor],
    kl_coef: float,
    entropy_coef: float,
    num_tokens: int,
) -> tuple[torch.Tensor | float, dict[str, torch.Tensor]]:
    """``kl_coef`` x KL(pi || ref) - ``entropy_coef`` x H as a loss to add, and their metrics
    (``kl`` when ``ref_logprobs`` is present, ``entropy`` always, as global token means). The
    entropy only carries gradient when ``entropy_coef > 0``."""
    mask = experience.tokens.mask
    extra: torch.Tensor | float = 0.0
    metrics: dict[str, torch.Tensor] = {}
    if experience.ref_logprobs is not None:
        kl = kl_fn(logprobs, experience.ref_logprobs, mask)
        kl_loss = reduce(kl)
        if kl_coef > 0:
            extra = extra + kl_coef * kl_loss
        metrics["kl"] = _token_sum(kl, mask, num_tokens)
        metrics["kl_loss"] = kl_loss.detach()
    with torch.set_grad_enabled(entropy_coef > 0 and torch.is_grad_enabled()):
        entropy = entropy_from_logits(logits if entropy_coef > 0 else logits.detach())
    if entropy_coef > 0:
        entropy_loss = reduce(entropy)
        extra = extra - entropy_coef * entropy_loss
        metrics["entropy_loss"] = entropy_loss.detach()
    metrics["entropy"] = _token_sum(entropy, mask, num_tokens)
    return extra, metrics


def value_loss_fn(*, clip: float, num_tokens: int) -> LossFn:
    """Clipped value loss on a ``CriticModel`` output, token mean over ``num_tokens``. Needs
    ``Experience.values`` (at rollout time) and ``Experience.returns``."""
    aggregate = AGGREGATIONS.get("token_mean")
    _positive("num_tokens", num_tokens)

    def loss_fn(experience: Experience, logits: torch.Tensor) -> tuple[torch.Tensor, dict]:
        old_values, returns = experience.values, experience.returns
        if old_values is None:
            raise ValueError("train_value: Experience.values is None")
        if returns is None:
            raise ValueError("train_value: Experience.returns is None")
        mask = experience.tokens.mask
        values = values_from_output(logits)
        per_token, diag = clipped_value_loss(values, old_values, returns, mask, clip=clip)
        loss = aggregate(per_token, mask, num_tokens=num_tokens)
        return loss, _weighted(diag, mask.sum() / num_tokens)

    return loss_fn


def micro_batch_tokens(micro_batch: Any) -> TokenBatch:
    """The tokens to run the model on: a TokenBatch, an Experience's tokens, or for DPO the
    chosen and rejected rows stacked (see ``stack_pair``)."""
    if isinstance(micro_batch, TokenBatch):
        return micro_batch
    if isinstance(micro_batch, Experience):
        return micro_batch.tokens
    return stack_pair(micro_batch[0], micro_batch[1])


def micro_batch_to(micro_batch: Any, device: Any) -> Any:
    """A copy of a TokenBatch, an Experience or a DPO tuple with every tensor on ``device``."""
    if isinstance(micro_batch, TokenBatch):
        return micro_batch.to(device)
    if isinstance(micro_batch, Experience):
        return experience_to(micro_batch, device)
    return tuple(x.to(device) for x in micro_batch)


def map_token_columns(micro_batch: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    """A copy of a ``TokenBatch`` or ``Experience`` with ``fn`` applied to every per-token
    (B, T) tensor (token fields and per-token experience fields; per-sample ones untouched).
    Used to re-cut a micro-batch's columns (``trim_to_targets``, ``learner.prefix``)."""
    if isinstance(micro_batch, TokenBatch):
        return TokenBatch(**{f.name: fn(getattr(micro_batch, f.name))
                             for f in dataclasses.fields(TokenBatch)})
    width = micro_batch.tokens.input_ids.shape[1]
    per_token = {
        f.name: fn(value)
        for f in dataclasses.fields(Experience)
        if isinstance(value := getattr(micro_batch, f.name), torch.Tensor)
        and value.dim() == 2 and value.shape[1] == width
    }
    tokens = map_token_columns(micro_batch.tokens, fn)
    return dataclasses.replace(micro_batch, tokens=tokens, **per_token)


def trim_to_targets(micro_batch: Any) -> tuple[Any, int]:
    """Drop the leading columns no loss reads: ``(trimmed, logits_to_keep)``.

    With ``s`` the first column where any row's ``mask`` is True, the losses only need logits at
    positions ``s - 1 .. T - 1`` (logits at ``t - 1`` predict token ``t``). The trimmed copy
    holds columns ``s - 1 ..`` of every per-token tensor (its column 0 has ``mask`` False, so
    ``token_logprobs``' zero there never counts) and ``logits_to_keep = T - s + 1`` is what
    ``packed_forward`` should return. In a right-padded RL batch ``s`` is the shortest prompt, so
    the LM head and the log-softmax skip most prompt tokens. DPO pairs (tuples) and batches
    without targets come back unchanged with ``logits_to_keep = 0`` (keep all).
    """
    if isinstance(micro_batch, TokenBatch):
        tokens = micro_batch
    elif isinstance(micro_batch, Experience):
        tokens = micro_batch.tokens
    else:
        return micro_batch, 0
    columns = tokens.mask.any(dim=0).nonzero()
    width = tokens.mask.shape[1]
    if columns.numel() == 0 or int(columns[0]) <= 1:
        return micro_batch, 0
    start = int(columns[0]) - 1
    return map_token_columns(micro_batch, lambda t: t[:, start:]), width - start

