"""Shared-prompt forward: every loss, metric, gradient and log-prob equals the plain forward's
(tiny random Llama), and micro-batches that do not fit the layout fall back (plan is None)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from learner.learner import Learner
from learner.losses import policy_loss_fn
from learner.prefix import plan_shared_prompts, shared_prompt_forward
from rlsys.algo import AGGREGATIONS, token_logprobs
from rlsys.data.attention import packed_forward
from rlsys.modeling import load_causal_lm
from rlsys.types import PolicyLossSpec
from tests.learner.batches import experience, token_batch, with_noisy_logprobs


def _grouped_batch(seed: int = 0):
    """Two prompts (lengths 7 and 5) x 3 responses of different lengths, plus a lone prompt."""
    gen = torch.Generator().manual_seed(seed)

    def ids(n: int) -> list[int]:
        return torch.randint(10, 2000, (n,), generator=gen).tolist()

    prompts = [ids(7), ids(5), ids(6)]
    rows, prompt_lens = [], []
    for p, lengths in zip(prompts, [(4, 6, 2), (5, 1, 3), (4,)], strict=True):
        for n in lengths:
            rows.append(p + ids(n))
            prompt_lens.append(len(p))
    tokens = token_batch(rows, prompt_lens=prompt_lens)
    exp = experience(tokens, advantages=[1.0, -0.5, 0.25, -1.0, 0.5, 0.75, -0.25])
    return with_noisy_logprobs(exp, gen)


def _step(model, exp, loss_fn, *, shared: bool):
    model.zero_grad()
    if shared:
        plan = plan_shared_prompts(exp)
        assert plan is not None
        exp, logits = plan.aligned, shared_prompt_forward(model, plan)
    else:
        logits = packed_forward(model, exp.tokens)
    loss, metrics = loss_fn(exp, logits)
    loss.backward()
    return loss.detach(), metrics, [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("aggregation", sorted(AGGREGATIONS.names()))
def test_shared_prompt_loss_and_gradient_equal_the_plain_forward(tiny_model_dir, aggregation):
    model = load_causal_lm(tiny_model_dir, dtype="float32")
    exp = _grouped_batch()
    loss_fn = policy_loss_fn(
        PolicyLossSpec(objective="ppo_clip", aggregation=aggregation, clip_low=0.2,
                       clip_high=0.28, clip_c=3.0, tis_cap=2.0, kl_coef=0.05,
                       kl_estimator="k3", entropy_coef=0.01, norm_len=8),
        num_tokens=int(exp.tokens.mask.sum()), num_seqs=7,
    )  # fmt: skip
    plain = _step(model, exp, loss_fn, shared=False)
    shared = _step(model, exp, loss_fn, shared=True)
    torch.testing.assert_close(shared[0], plain[0], rtol=1e-5, atol=1e-6)
    for name in plain[1]:
        torch.testing.assert_close(shared[1][name], plain[1][name], rtol=1e-4, atol=1e-6)
    for a, b in zip(shared[2], plain[2], strict=True):  # float32 noise: relative to the scale
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5 * float(b.abs().max()) + 1e-9)


def test_plan_shares_each_prompt_once_and_aligns_every_tensor():
    exp = _grouped_batch()
    plan = plan_shared_prompts(exp)
    assert plan.prompt_ids.shape[0] == 3 and plan.prompt_lens.tolist() == [7, 5, 6]
    assert plan.row_prompt.tolist() == [0, 0, 0, 1, 1, 1, 2]
    assert plan.response_lens.tolist() == [4, 6, 2, 5, 1, 3, 4]
    aligned = plan.aligned
    assert aligned.tokens.mask.shape == (7, 7)
    assert aligned.tokens.mask.sum() == exp.tokens.mask.sum()
    for r, p in enumerate([7, 7, 7, 5, 5, 5, 6]):
        n = int(plan.response_lens[r])
        assert not aligned.tokens.mask[r, 0]
        want = exp.tokens.input_ids[r, p - 1 : p + n]
        assert torch.equal(aligned.tokens.input_ids[r, : n + 1], want)
        assert torch.equal(aligned.advantages[r, : n + 1], exp.advantages[r, p - 1 : p + n])
        assert torch.equal(plan.response_ids[r, :n], exp.tokens.input_ids[r, p : p + n])


def test_layouts_that_do_not_fit_fall_back():
    exp = _grouped_batch()
    pair = (exp.tokens, exp.tokens, torch.zeros(7), torch.zeros(7))
    assert plan_shared_prompts(pair) is None  # DPO pairs
    lone = _grouped_batch()
    keep = torch.tensor([0, 3, 6])  # one row per prompt: nothing shared
    lone = dataclasses.replace(
        lone, tokens=dataclasses.replace(
            lone.tokens, **{f.name: getattr(lone.tokens, f.name)[keep]
                            for f in dataclasses.fields(lone.tokens)}),
        advantages=lone.advantages[keep])
    assert plan_shared_prompts(lone) is None
    packed = token_batch([[5, 6, 7, 8, 9], [5, 6, 7, 8, 9]], prompt_lens=[2, 2])
    packed.seq_ids[:, 3:] = 2  # two documents in a row
    assert plan_shared_prompts(experience(packed, advantages=[1.0, -1.0])) is None
    gap = token_batch([[5, 6, 7, 8, 9], [5, 6, 7, 8, 9]], prompt_lens=[2, 2])
    gap.mask[:, 3] = False  # targets not contiguous
    assert plan_shared_prompts(experience(gap, advantages=[1.0, -1.0])) is None


def test_learner_uses_shared_prompts_and_matches_a_full_forward(tiny_model_dir):
    learner = Learner(model_path=tiny_model_dir, lr=1e-3, seed=0)
    assert learner.info()["share_prompts"]
    exp = _grouped_batch()
    assert plan_shared_prompts(exp.tokens) is not None  # old/ref log-probs share too
    got = learner.forward_logprobs(exp.tokens)
    model = load_causal_lm(tiny_model_dir, dtype="float32")
    with torch.no_grad():
        want = token_logprobs(packed_forward(model, exp.tokens), exp.tokens.input_ids)
    torch.testing.assert_close(got, torch.where(exp.tokens.mask, want, 0), rtol=1e-5, atol=1e-5)
    exp.old_logprobs = got  # on-policy: ratio 1, nothing clipped, loss = -token mean of A
    metrics = learner.train_policy([exp], num_tokens=int(exp.tokens.mask.sum()), num_seqs=7)
    assert metrics["clip_frac"] == 0.0 and metrics["loss"] == pytest.approx(
        -float((exp.advantages * exp.tokens.mask).sum() / exp.tokens.mask.sum()), rel=1e-4)
