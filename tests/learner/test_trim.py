"""Skipping prompt positions in the LM head: trimmed losses, gradients and log-probs equal the
full computation (tiny random Llama), and ``trim_to_targets`` trims exactly what no loss reads."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from learner.learner import Learner
from learner.losses import policy_loss_fn, sft_loss_fn, trim_to_targets
from rlsys.algo import AGGREGATIONS, token_logprobs
from rlsys.data.attention import packed_forward
from rlsys.modeling import load_causal_lm
from rlsys.types import PolicyLossSpec
from tests.learner.batches import experience, random_rows, token_batch, with_noisy_logprobs


def _rl_batch(seed: int = 0):
    rows = random_rows(4, 14, seed=seed)
    tokens = token_batch(rows, prompt_lens=[6, 9, 7, 8])  # shortest prompt: 6
    exp = experience(tokens, advantages=[1.0, -0.5, 0.25, -1.0])
    return with_noisy_logprobs(exp, torch.Generator().manual_seed(seed + 1))


def _loss_and_grads(model, micro_batch, loss_fn, *, trim: bool):
    model.zero_grad()
    tokens = micro_batch.tokens if hasattr(micro_batch, "tokens") else micro_batch
    keep = 0
    if trim:
        micro_batch, keep = trim_to_targets(micro_batch)
    logits = packed_forward(model, tokens, logits_to_keep=keep)
    loss, metrics = loss_fn(micro_batch, logits)
    loss.backward()
    grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
    return loss.detach(), metrics, grads, logits.shape[1]


def test_trim_keeps_columns_from_the_shortest_prompt():
    exp = _rl_batch()
    trimmed, keep = trim_to_targets(exp)
    width = exp.tokens.input_ids.shape[1]
    assert keep == width - 5  # first target column 6 -> logits from position 5 on
    assert trimmed.tokens.input_ids.shape[1] == keep
    assert not trimmed.tokens.mask[:, 0].any()
    assert trimmed.tokens.mask.sum() == exp.tokens.mask.sum()
    for name in ("old_logprobs", "ref_logprobs", "rollout_logprobs", "advantages"):
        assert torch.equal(getattr(trimmed, name), getattr(exp, name)[:, 5:]), name
    assert torch.equal(trimmed.rewards, exp.rewards)  # per-sample tensors untouched


def test_nothing_to_trim_returns_the_batch_unchanged():
    full = token_batch([[5, 6, 7, 8]])  # mask from column 1: logits needed from position 0
    assert trim_to_targets(full) == (full, 0)
    empty = dataclasses.replace(full, mask=torch.zeros_like(full.mask))
    assert trim_to_targets(empty) == (empty, 0)
    pair = (full, full, torch.zeros(1), torch.zeros(1))
    assert trim_to_targets(pair) == (pair, 0)


def test_packed_forward_keeps_the_last_positions(tiny_model_dir):
    model = load_causal_lm(tiny_model_dir, dtype="float32")
    tokens = _rl_batch().tokens
    full = packed_forward(model, tokens)
    tail = packed_forward(model, tokens, logits_to_keep=5)
    assert tail.shape[1] == 5
    torch.testing.assert_close(tail, full[:, -5:], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="logits_to_keep"):
        packed_forward(model, tokens, logits_to_keep=-1)


@pytest.mark.parametrize("aggregation", sorted(AGGREGATIONS.names()))
def test_trimmed_policy_loss_and_gradient_equal_the_full_ones(tiny_model_dir, aggregation):
    model = load_causal_lm(tiny_model_dir, dtype="float32")
    exp = _rl_batch()
    mask = exp.tokens.mask
    loss_fn = policy_loss_fn(
        PolicyLossSpec(objective="ppo_clip", aggregation=aggregation, clip_low=0.2,
                       clip_high=0.28, clip_c=3.0, tis_cap=2.0, kl_coef=0.05,
                       kl_estimator="k3", entropy_coef=0.01, norm_len=8),
        num_tokens=int(mask.sum()), num_seqs=4,
    )  # fmt: skip
    full = _loss_and_grads(model, exp, loss_fn, trim=False)
    trimmed = _loss_and_grads(model, exp, loss_fn, trim=True)
    assert trimmed[3] < full[3]  # fewer logits computed
    torch.testing.assert_close(trimmed[0], full[0], rtol=1e-5, atol=1e-7)
    for name in full[1]:
        torch.testing.assert_close(trimmed[1][name], full[1][name], rtol=1e-5, atol=1e-7)
    assert len(trimmed[2]) == len(full[2])
    for a, b in zip(trimmed[2], full[2], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)


def test_trimmed_sft_loss_equals_the_full_one(tiny_model_dir):
    model = load_causal_lm(tiny_model_dir, dtype="float32")
    tokens = _rl_batch(seed=3).tokens
    loss_fn = sft_loss_fn(aggregation="token_mean", num_tokens=int(tokens.mask.sum()),
                          num_seqs=4)
    full = _loss_and_grads(model, tokens, loss_fn, trim=False)
    trimmed = _loss_and_grads(model, tokens, loss_fn, trim=True)
    torch.testing.assert_close(trimmed[0], full[0], rtol=1e-5, atol=1e-7)
    for a, b in zip(trimmed[2], full[2], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)


def test_learner_log_probs_match_a_full_forward(tiny_model_dir):
    learner = Learner(model_path=tiny_model_dir, lr=1e-3, seed=0)
    tokens = _rl_batch().tokens
    got = learner.forward_logprobs(tokens)
    model = load_causal_lm(tiny_model_dir, dtype="float32")
    with torch.no_grad():
        want = token_logprobs(packed_forward(model, tokens), tokens.input_ids)
    want = torch.where(tokens.mask, want, 0)
    assert got.shape == tokens.mask.shape
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
