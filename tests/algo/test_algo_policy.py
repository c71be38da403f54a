"""Policy objectives and truncated IS weights: hand values, kinks, signs, gradcheck, masking."""

from __future__ import annotations

import math

import pytest
import torch

from rlsys.algo.policy import POLICY_OBJECTIVES, ppo_clip, truncated_is_weights, vanilla_pg


def _ppo_inputs(ratios, advantages):
    """One row; old_logprobs = 0 so logprobs = log(ratio)."""
    logprobs = torch.log(torch.tensor([ratios], dtype=torch.float64)).requires_grad_(True)
    old = torch.zeros_like(logprobs)
    adv = torch.tensor([advantages], dtype=torch.float64)
    mask = torch.ones_like(adv, dtype=torch.bool)
    return logprobs, old, adv, mask


def test_ppo_clip_hand_example():
    """clip 0.2, token by token (loss = -min(r A, clip(r) A)):
    r=1.5, A=+1: min(1.5, 1.2) = 1.2 -> loss -1.2, clipped (no gradient);
    r=0.5, A=+1: min(0.5, 0.8) = 0.5 -> loss -0.5, not clipped;
    r=0.5, A=-1: min(-0.5, -0.8) = -0.8 -> loss 0.8, clipped;
    r=1.5, A=-1: min(-1.5, -1.2) = -1.5 -> loss 1.5, not clipped.
    clip_frac = 2/4; ratio_mean = 1.0; ratio_max = 1.5;
    approx_kl = mean(r - 1 - log r) = (2 (0.5 - log 1.5) + 2 (-0.5 - log 0.5)) / 4."""
    logprobs, old, adv, mask = _ppo_inputs([1.5, 0.5, 0.5, 1.5], [1.0, 1.0, -1.0, -1.0])
    loss, diag = ppo_clip(logprobs, old, adv, mask)
    torch.testing.assert_close(loss, torch.tensor([[-1.2, -0.5, 0.8, 1.5]], dtype=torch.float64))
    loss.sum().backward()
    grad = logprobs.grad[0]
    assert grad[0] == 0 and grad[2] == 0  # clipped tokens give no gradient
    torch.testing.assert_close(grad[1], torch.tensor(-0.5, dtype=torch.float64))  # d(-rA)/dlogr
    torch.testing.assert_close(grad[3], torch.tensor(1.5, dtype=torch.float64))
    assert float(diag["clip_frac"]) == 0.5
    assert float(diag["ratio_max"]) == pytest.approx(1.5)
    assert float(diag["ratio_mean"]) == pytest.approx(1.0)
    expected_kl = (2 * (0.5 - math.log(1.5)) + 2 * (-0.5 - math.log(0.5))) / 4
    assert float(diag["approx_kl"]) == pytest.approx(expected_kl)
    assert all(not v.requires_grad and v.dim() == 0 for v in diag.values())


def test_clip_high_differs_from_clip_low():
    """clip_low 0.2, clip_high 0.28: r = 1.25, A = +1 stays unclipped (loss -1.25; symmetric
    clipping gives -1.2); r = 0.75, A = -1 is clipped at 0.8 either way (loss 0.8)."""
    logprobs, old, adv, mask = _ppo_inputs([1.25, 0.75], [1.0, -1.0])
    asym, diag = ppo_clip(logprobs, old, adv, mask, clip_low=0.2, clip_high=0.28)
    sym, _ = ppo_clip(logprobs, old, adv, mask, clip_low=0.2, clip_high=0.2)
    torch.testing.assert_close(asym, torch.tensor([[-1.25, 0.8]], dtype=torch.float64))
    torch.testing.assert_close(sym, torch.tensor([[-1.2, 0.8]], dtype=torch.float64))
    assert float(diag["clip_frac"]) == 0.5


def test_dual_clip_bounds_negative_advantage_loss(gen):
    """clip_c = 3: r = 4, A = -1 -> ordinary loss max(4, 1.2) = 4, dual-clipped to 3 with
    no gradient; A > 0 tokens are never dual-clipped."""
    logprobs, old, adv, mask = _ppo_inputs([4.0, 2.0, 4.0], [-1.0, -1.0, 1.0])
    loss, diag = ppo_clip(logprobs, old, adv, mask, clip_c=3.0)
    torch.testing.assert_close(loss, torch.tensor([[3.0, 2.0, -1.2]], dtype=torch.float64))
    loss.sum().backward()
    assert logprobs.grad[0, 0] == 0
    assert float(diag["dual_clip_frac"]) == pytest.approx(1 / 3)
    # Random large ratios: the loss never exceeds -clip_c * A where A < 0.
    lp = torch.randn(4, 16, generator=gen) * 3
    adv = torch.randn(4, 16, generator=gen)
    m = torch.ones(4, 16, dtype=torch.bool)
    loss, _ = ppo_clip(lp, torch.zeros_like(lp), adv, m, clip_c=3.0)
    neg = adv < 0
    assert (loss[neg] <= -3.0 * adv[neg] + 1e-6).all()


def test_ppo_clip_gradcheck_away_from_kinks(gen):
    """Ratios drawn in (0.85, 1.15) (inside the clip range), in (1.3, 2) with A > 0 (clipped)
    and > clip_c with A < 0 (dual-clipped): all smooth points."""
    inside = torch.empty(2, 5, dtype=torch.float64).uniform_(0.85, 1.15, generator=gen).log()
    old = torch.randn(2, 5, generator=gen, dtype=torch.float64)
    adv = torch.randn(2, 5, generator=gen, dtype=torch.float64)
    mask = torch.rand(2, 5, generator=gen) > 0.3
    weights = torch.rand(2, 5, generator=gen, dtype=torch.float64) + 0.5
    logprobs = (old + inside).requires_grad_(True)

    def fn(lp):
        return ppo_clip(lp, old, adv, mask, clip_c=3.0, is_weights=weights)[0]

    assert torch.autograd.gradcheck(fn, (logprobs,))
    outside = torch.tensor([[math.log(1.6), math.log(5.0)]], dtype=torch.float64)
    adv2 = torch.tensor([[1.0, -2.0]], dtype=torch.float64)
    m2 = torch.ones(1, 2, dtype=torch.bool)
    assert torch.autograd.gradcheck(
        lambda lp: ppo_clip(lp, torch.zeros_like(lp), adv2, m2, clip_c=3.0)[0],
        (outside.requires_grad_(True),),
    )


@pytest.mark.parametrize("name", POLICY_OBJECTIVES.names())
def test_positive_advantage_increases_logprob(name):
    """A gradient-descent step on the loss moves logprob up where A > 0, down where A < 0."""
    logprobs = torch.tensor([[-1.0, -1.0]], requires_grad=True)
    adv = torch.tensor([[2.0, -2.0]])
    loss, _ = POLICY_OBJECTIVES.get(name)(logprobs, logprobs.detach(), adv, torch.ones(1, 2) > 0)
    loss.sum().backward()
    assert logprobs.grad[0, 0] < 0 < logprobs.grad[0, 1]


@pytest.mark.parametrize("name", POLICY_OBJECTIVES.names())
def test_masked_tokens_change_nothing(name, gen):
    logprobs = torch.randn(3, 6, generator=gen)
    old = logprobs + 0.1 * torch.randn(3, 6, generator=gen)
    adv = torch.randn(3, 6, generator=gen)
    mask = torch.rand(3, 6, generator=gen) > 0.4
    fn = POLICY_OBJECTIVES.get(name)
    lp1 = logprobs.clone().requires_grad_(True)
    loss1, diag1 = fn(lp1, old, adv, mask, clip_c=3.0)
    loss1.sum().backward()
    garbage = torch.where(mask, logprobs, torch.tensor(float("inf"))).requires_grad_(True)
    bad_old = torch.where(mask, old, -1e30)
    loss2, diag2 = fn(garbage, bad_old, torch.where(mask, adv, 1e30), mask, clip_c=3.0)
    loss2.sum().backward()
    torch.testing.assert_close(loss2, loss1)
    torch.testing.assert_close(garbage.grad, lp1.grad)
    assert torch.equal(lp1.grad[~mask], torch.zeros_like(lp1.grad[~mask]))
    assert torch.equal(loss1[~mask], torch.zeros_like(loss1[~mask]))
    for key in diag1:
        torch.testing.assert_close(diag2[key], diag1[key])


def test_vanilla_pg_gradient_equals_ppo_on_policy(gen):
    logprobs = torch.randn(2, 5, generator=gen)
    adv = torch.randn(2, 5, generator=gen)
    mask = torch.rand(2, 5, generator=gen) > 0.3
    grads = []
    for fn in (ppo_clip, vanilla_pg):
        lp = logprobs.clone().requires_grad_(True)
        fn(lp, logprobs, adv, mask)[0].sum().backward()
        grads.append(lp.grad)
    torch.testing.assert_close(grads[0], grads[1])
    loss, _ = vanilla_pg(logprobs, logprobs, adv, mask)
    torch.testing.assert_close(loss, torch.where(mask, -logprobs * adv, 0))


def test_is_weights_scale_the_loss_and_are_detached():
    logprobs, old, adv, mask = _ppo_inputs([1.1, 0.9], [1.0, 1.0])
    weights = torch.tensor([[2.0, 0.5]], dtype=torch.float64, requires_grad=True)
    loss, _ = ppo_clip(logprobs, old, adv, mask, is_weights=weights)
    torch.testing.assert_close(loss, torch.tensor([[-2.2, -0.45]], dtype=torch.float64))
    loss.sum().backward()
    assert weights.grad is None


def test_truncated_is_weights_hand_example():
    """old - rollout = [log 1.5, log 3, 0 (masked)] with cap 2 -> [1.5, 2.0, 0]."""
    old = torch.tensor([[math.log(1.5), math.log(3.0), 50.0]], requires_grad=True)
    rollout = torch.zeros(1, 3)
    mask = torch.tensor([[True, True, False]])
    weights = truncated_is_weights(old, rollout, mask, cap=2.0)
    torch.testing.assert_close(weights, torch.tensor([[1.5, 2.0, 0.0]]))
    assert not weights.requires_grad


def test_bad_hyperparameters_are_rejected():
    logprobs, old, adv, mask = _ppo_inputs([1.0], [1.0])
    with pytest.raises(ValueError, match="clip_c"):
        ppo_clip(logprobs, old, adv, mask, clip_c=1.0)
    with pytest.raises(ValueError, match="clip_low"):
        ppo_clip(logprobs, old, adv, mask, clip_low=1.0)
    with pytest.raises(ValueError, match="old_logprobs"):
        ppo_clip(logprobs, old[:, :0], adv, mask)
    with pytest.raises(ValueError, match="cap"):
        truncated_is_weights(old, old, mask, cap=0.0)
