"""Single-rank in-process Learner: DPO, policy-gradient and critic steps, group wrappers."""

from __future__ import annotations

import math

import pytest
import torch

from learner.launch import InProcessLearnerGroup, LearnerCallError, shard
from learner.learner import Learner
from rlsys.types import PolicyLossSpec
from tests.learner.batches import experience, token_batch

PROMPT = [101, 102, 103, 104]
RESPONSE_A = [201, 202, 203, 204, 205]
RESPONSE_B = [301, 302, 303, 304]


def _sequence_logps(learner: Learner, batch) -> torch.Tensor:
    return learner.forward_sequence_logps(batch)


def test_dpo_raises_the_chosen_vs_rejected_margin(tiny_model_dir):
    learner = Learner(model_path=tiny_model_dir, lr=3e-3, seed=0)
    chosen = token_batch([PROMPT + RESPONSE_A, PROMPT[:2] + RESPONSE_A], prompt_lens=[4, 2])
    rejected = token_batch([PROMPT + RESPONSE_B, PROMPT[:2] + RESPONSE_B], prompt_lens=[4, 2])
    ref_chosen, ref_rejected = _sequence_logps(learner, chosen), _sequence_logps(learner, rejected)
    assert ref_chosen.shape == (2,)
    pair = (chosen, rejected, ref_chosen, ref_rejected)
    history = [learner.train_dpo([pair], beta=0.1, num_pairs=2) for _ in range(4)]
    # policy == reference at the first step: h = 0, loss = -log sigmoid(0) = log 2
    assert history[0]["loss"] == pytest.approx(math.log(2), rel=1e-5)
    assert history[0]["rewards/margin"] == pytest.approx(0.0, abs=1e-6)
    margins = [m["rewards/margin"] for m in history]
    assert margins == sorted(margins) and margins[-1] > 0.05, margins
    after = (_sequence_logps(learner, chosen) - ref_chosen) - (
        _sequence_logps(learner, rejected) - ref_rejected
    )
    assert (after > 0.5).all(), after


def test_policy_step_follows_the_advantage_sign(tiny_model_dir):
    learner = Learner(model_path=tiny_model_dir, lr=1e-3, seed=0)
    tokens = token_batch([PROMPT + RESPONSE_A, PROMPT + RESPONSE_B], prompt_lens=[4, 4])
    batch = experience(tokens, advantages=[1.0, -1.0])
    batch.old_logprobs = learner.forward_logprobs(tokens)
    batch.ref_logprobs = batch.old_logprobs.clone()
    before = batch.old_logprobs.sum(-1)
    metrics = learner.train_policy(
        [batch],
        spec=PolicyLossSpec(aggregation="seq_mean_token_mean", kl_coef=0.1, entropy_coef=0.01),
        num_tokens=int(tokens.mask.sum()),
        num_seqs=2,
    )
    after = learner.forward_logprobs(tokens).sum(-1)
    assert after[0] > before[0] + 1e-3 and after[1] < before[1] - 1e-3, (before, after)
    # at the first step pi == pi_old == pi_ref: ratio 1, no clipping, KL 0, loss = -mean(A) = 0
    assert metrics["clip_frac"] == 0.0 and metrics["kl"] == pytest.approx(0.0, abs=1e-7)
    assert metrics["pg_loss"] == pytest.approx(0.0, abs=1e-6)
    assert metrics["entropy"] > 0 and metrics["grad_norm"] > 0 and metrics["lr"] == 1e-3
    for key in ("loss", "ratio_mean", "approx_kl", "kl_loss", "entropy_loss"):
        assert key in metrics


def test_policy_requires_ref_logprobs_for_kl(tiny_model_dir):
    group = InProcessLearnerGroup(model_path=tiny_model_dir, lr=1e-3)
    tokens = token_batch([PROMPT + RESPONSE_A], prompt_lens=[4])
    with pytest.raises(LearnerCallError, match="rank 0 failed in train_policy.*ref_logprobs"):
        group.train(
            "train_policy", [experience(tokens, [1.0])], spec=PolicyLossSpec(kl_coef=0.1),
            num_tokens=5, num_seqs=1
        )
    with pytest.raises(LearnerCallError, match="value_head=True"):
        group.train("train_value", [experience(tokens, [1.0])], num_tokens=5)


def test_critic_step_reduces_value_loss(tiny_model_dir):
    critic = Learner(model_path=tiny_model_dir, value_head=True, lr=1e-2, seed=0)
    tokens = token_batch([PROMPT + RESPONSE_A, PROMPT + RESPONSE_B], prompt_lens=[4, 4])
    batch = experience(tokens, advantages=[0.0, 0.0])
    batch.values = critic.forward_values(tokens)
    assert batch.values.shape == tokens.mask.shape
    assert (batch.values == 0).all()  # zero-initialised head
    batch.returns = torch.where(tokens.mask, 1.0, 0.0)
    losses = []
    for _ in range(4):
        losses.append(
            critic.train_value([batch], clip=10.0, num_tokens=int(tokens.mask.sum()))["loss"]
        )
        batch.values = critic.forward_values(tokens)
    assert losses[0] == pytest.approx(0.5, rel=1e-6)  # 0.5 * (0 - 1)^2
    assert losses[-1] < 0.5 * losses[0], losses
    assert (critic.forward_values(tokens)[tokens.mask] > 0.3).all()


def test_shard_splits_evenly_or_refuses():
    assert shard([1, 2, 3, 4], 2) == [[1, 2], [3, 4]]
    assert shard(["a"], 1) == [["a"]]
    with pytest.raises(ValueError, match="cannot shard 3 micro-batches evenly over 2 ranks"):
        shard([1, 2, 3], 2)
    with pytest.raises(ValueError, match="world_size"):
        shard([1], 0)


@pytest.mark.slow
def test_zero3_critic_trains_saves_and_reloads(tiny_model_dir, tmp_path):
    """ZeRO-3 (one rank, in-process): the partitioned critic trains, its checkpoint holds the
    whole backbone + value head, and ``load_critic`` reproduces the trained values."""
    from learner.critic import load_critic
    from rlsys.data.attention import packed_forward

    critic = Learner(model_path=tiny_model_dir, zero_stage=3, value_head=True, lr=1e-2)
    tokens = token_batch([PROMPT + RESPONSE_A, PROMPT + RESPONSE_B], prompt_lens=[4, 4])
    batch = experience(tokens, advantages=[0.0, 0.0])
    batch.returns = torch.where(tokens.mask, 1.0, 0.0)
    losses = []
    for _ in range(3):
        batch.values = critic.forward_values(tokens)
        losses.append(
            critic.train_value([batch], clip=10.0, num_tokens=int(tokens.mask.sum()))["loss"]
        )
    assert losses[-1] < 0.5 * losses[0], losses
    critic.save_checkpoint(tmp_path / "critic")
    reloaded = load_critic(str(tmp_path / "critic"), torch.float32).eval()
    with torch.no_grad():
        head = packed_forward(reloaded, tokens)[..., 0]
    values = torch.where(tokens.mask, torch.cat([torch.zeros(2, 1), head[:, :-1]], dim=1), 0)
    torch.testing.assert_close(values, critic.forward_values(tokens), rtol=0, atol=1e-5)
