"""GSPO objective: hand values, sequence-level clipping, the sequence-level gradient (Eq. 10)
against a readable reference loop, and the on-policy limit."""

from __future__ import annotations

import math

import pytest
import torch

from rlsys.algo.aggregation import seq_mean_token_mean
from rlsys.algo.policy import gspo, ppo_clip, vanilla_pg


def _rows(log_ratios, mask, advantages):
    """old_logprobs = -1 everywhere, logprobs = old + log ratio; float64."""
    log_ratios = torch.tensor(log_ratios, dtype=torch.float64)
    old = torch.full_like(log_ratios, -1.0)
    logprobs = (old + log_ratios).requires_grad_(True)
    adv = torch.tensor(advantages, dtype=torch.float64)
    return logprobs, old, adv, torch.tensor(mask)


def test_gspo_hand_example():
    """clip 0.2. Row 0: 2 tokens, log ratios [log 2, 0] -> s_0 = (2 * 1)^(1/2) = sqrt 2 = 1.414;
    A = +1 -> min(1.414, 1.2) = 1.2: clipped, loss -1.2 on both tokens, no gradient.
    Row 1: 3 tokens, ratios [4, 0.5, 0.5] -> s_1 = (4 * 0.25)^(1/3) = 1; A = -1 -> loss
    -min(-1, -1) = 1 on each token, unclipped; d loss_t / d logprob_t = -A s_1 = 1.
    Token-level PPO on row 1 would give [4, 0.8, 0.8] instead (per-token ratios).
    clip_frac = 2 clipped tokens / 5; seq_ratio_mean = (sqrt 2 + 1) / 2;
    seq_mean_token_mean = (-1.2 + 1) / 2 = -0.1, whose gradient on row 1 is 1 / 3 / 2."""
    logprobs, old, adv, mask = _rows(
        [[math.log(2.0), 0.0, 0.0], [math.log(4.0), math.log(0.5), math.log(0.5)]],
        [[True, True, False], [True, True, True]],
        [[1.0, 1.0, 1.0], [-1.0, -1.0, -1.0]],
    )
    loss, diag = gspo(logprobs, old, adv, mask)
    expected = torch.tensor([[-1.2, -1.2, 0.0], [1.0, 1.0, 1.0]], dtype=torch.float64)
    torch.testing.assert_close(loss, expected)
    ppo, _ = ppo_clip(logprobs, old, adv, mask)
    torch.testing.assert_close(ppo[1], torch.tensor([4.0, 0.8, 0.8], dtype=torch.float64))
    assert float(diag["clip_frac"]) == pytest.approx(2 / 5)
    assert float(diag["seq_ratio_mean"]) == pytest.approx((math.sqrt(2) + 1) / 2)
    assert float(diag["dual_clip_frac"]) == 0.0
    total = seq_mean_token_mean(loss, mask)
    assert float(total.detach()) == pytest.approx(-0.1)
    total.backward()
    row1 = torch.full((3,), 1 / 6, dtype=torch.float64)
    torch.testing.assert_close(logprobs.grad[1], row1)
    assert torch.equal(logprobs.grad[0], torch.zeros(3, dtype=torch.float64))
    assert all(not v.requires_grad and v.dim() == 0 for v in diag.values())


def test_gspo_dual_clip_on_the_sequence_ratio():
    """One row, ratios [9, 1] -> s = 3; A = -1, clip_c = 2: ordinary loss max(3, 1.2) = 3,
    dual-clipped to -clip_c A = 2 with no gradient."""
    logprobs, old, adv, mask = _rows([[math.log(9.0), 0.0]], [[True, True]], [[-1.0, -1.0]])
    loss, diag = gspo(logprobs, old, adv, mask, clip_c=2.0)
    torch.testing.assert_close(loss, torch.full((1, 2), 2.0, dtype=torch.float64))
    loss.sum().backward()
    assert torch.equal(logprobs.grad, torch.zeros_like(logprobs.grad))
    assert float(diag["dual_clip_frac"]) == 1.0


def _reference(logprobs, old, adv, mask, clip_low, clip_high):
    """The sequence-level GSPO loss (Eq. 5 and 7), row by row: mean_i -min(s_i A_i,
    clip(s_i) A_i) with s_i = exp(mean over the row's masked tokens of log pi - log pi_old)."""
    losses = []
    for i in range(logprobs.shape[0]):
        m = mask[i]
        if not m.any():
            losses.append(logprobs[i].sum() * 0)
            continue
        s = torch.exp((logprobs[i][m] - old[i][m]).mean())
        a = adv[i][m][0]
        losses.append(-torch.minimum(s * a, s.clamp(1 - clip_low, 1 + clip_high) * a))
    return torch.stack(losses).mean()


@pytest.mark.parametrize("clip", [(0.2, 0.28), (3e-2, 4e-2)])
def test_gspo_token_form_matches_sequence_level_reference(gen, make_mask, clip):
    """With one advantage per row (outcome rewards) and ``seq_mean_token_mean``, GSPO-token's
    loss and gradient equal the sequence-level GSPO objective's (paper Sec. 4.3); the narrow
    clip range clips some rows, the wide one few."""
    batch, width = 6, 9
    mask = make_mask(batch, width, gen, gaps=True)
    old = torch.randn(batch, width, generator=gen, dtype=torch.float64) - 2
    logprobs = old + 0.1 * torch.randn(batch, width, generator=gen, dtype=torch.float64)
    adv = torch.randn(batch, 1, generator=gen, dtype=torch.float64).expand(batch, width)
    lp_token = logprobs.clone().requires_grad_(True)
    per_token, _ = gspo(lp_token, old, adv, mask, clip_low=clip[0], clip_high=clip[1])
    token_loss = seq_mean_token_mean(per_token, mask)
    token_loss.backward()
    lp_seq = logprobs.clone().requires_grad_(True)
    seq_loss = _reference(lp_seq, old, adv, mask, *clip)
    seq_loss.backward()
    torch.testing.assert_close(token_loss, seq_loss, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(lp_token.grad, lp_seq.grad, rtol=1e-12, atol=1e-12)


def test_gspo_on_policy_gradient_is_vanilla_pg_per_sequence(gen, make_mask):
    """At old_logprobs = logprobs every s_i = 1 and nothing is clipped, so GSPO's gradient is
    REINFORCE's with the same aggregation (per-token advantages allowed)."""
    mask = make_mask(4, 7, gen)
    logprobs = torch.randn(4, 7, generator=gen, dtype=torch.float64)
    adv = torch.randn(4, 7, generator=gen, dtype=torch.float64)
    grads = []
    for fn in (gspo, vanilla_pg):
        lp = logprobs.clone().requires_grad_(True)
        seq_mean_token_mean(fn(lp, logprobs, adv, mask)[0], mask).backward()
        grads.append(lp.grad)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-12, atol=1e-12)


def test_gspo_ratio_is_length_normalised():
    """The same per-token log ratio 0.1 on a 2-token and a 6-token row gives the same
    s = exp(0.1) (the unnormalised product would be exp(0.2) vs exp(0.6))."""
    logprobs, old, adv, mask = _rows(
        [[0.1] * 2 + [0.0] * 4, [0.1] * 6],
        [[True] * 2 + [False] * 4, [True] * 6],
        [[1.0] * 6, [1.0] * 6],
    )
    loss, diag = gspo(logprobs, old, adv, mask, clip_low=0.2, clip_high=0.2)
    torch.testing.assert_close(loss[0, :2], torch.full((2,), -math.exp(0.1), dtype=torch.float64))
    torch.testing.assert_close(loss[1], torch.full((6,), -math.exp(0.1), dtype=torch.float64))
    assert float(diag["seq_ratio_mean"]) == pytest.approx(math.exp(0.1))


def test_gspo_rejects_bad_clip():
    logprobs, old, adv, mask = _rows([[0.0]], [[True]], [[1.0]])
    with pytest.raises(ValueError, match="clip_low"):
        gspo(logprobs, old, adv, mask, clip_low=1.5)
