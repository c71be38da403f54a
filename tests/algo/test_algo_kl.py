"""KL estimators: hand values, exact expectations, sign, masking, gradcheck, KL-in-reward."""

from __future__ import annotations

import math

import pytest
import torch

from rlsys.algo.kl import KL_ESTIMATORS, kl_penalty_rewards


def test_hand_values():
    """log_ratio = log 2: k1 = 0.693147, k2 = 0.5 * 0.693147^2 = 0.240227,
    k3 = 1/2 - 1 + 0.693147 = 0.193147. log_ratio = -log 2: k3 = 2 - 1 - 0.693147 = 0.306853."""
    logprobs = torch.tensor([[math.log(2.0), -math.log(2.0)]])
    ref = torch.zeros(1, 2)
    mask = torch.ones(1, 2, dtype=torch.bool)
    l2 = math.log(2.0)
    expected = {
        "k1": [l2, -l2],
        "k2": [0.5 * l2**2, 0.5 * l2**2],
        "k3": [0.5 - 1 + l2, 2 - 1 - l2],
    }
    for name, values in expected.items():
        torch.testing.assert_close(KL_ESTIMATORS.get(name)(logprobs, ref, mask),
                                   torch.tensor([values]))


def test_expectations_match_closed_form_by_enumeration():
    """Two categoricals p (the sampling policy) and q (the reference) over 5 outcomes:
    E_p[k1] = E_p[k3] = KL(p || q) exactly; E_p[k2] = 0.5 E_p[log^2(p/q)] != KL."""
    p = torch.tensor([0.05, 0.1, 0.2, 0.3, 0.35], dtype=torch.float64)
    q = torch.tensor([0.3, 0.3, 0.2, 0.1, 0.1], dtype=torch.float64)
    kl = float((p * (p / q).log()).sum())
    logp, logq = p.log().unsqueeze(0), q.log().unsqueeze(0)
    mask = torch.ones_like(logp, dtype=torch.bool)
    expect = {name: float((p * KL_ESTIMATORS.get(name)(logp, logq, mask)[0]).sum())
              for name in ("k1", "k2", "k3")}
    assert expect["k1"] == pytest.approx(kl, rel=1e-12)
    assert expect["k3"] == pytest.approx(kl, rel=1e-12)
    assert expect["k2"] == pytest.approx(0.5 * float((p * (p / q).log() ** 2).sum()), rel=1e-12)
    assert abs(expect["k2"] - kl) > 1e-3  # k2 is biased


def test_k2_k3_non_negative(gen):
    logprobs = torch.randn(8, 32, generator=gen) * 3
    ref = torch.randn(8, 32, generator=gen) * 3
    mask = torch.ones(8, 32, dtype=torch.bool)
    assert (KL_ESTIMATORS.get("k3")(logprobs, ref, mask) >= 0).all()
    assert (KL_ESTIMATORS.get("k2")(logprobs, ref, mask) >= 0).all()
    assert (KL_ESTIMATORS.get("k1")(logprobs, ref, mask) < 0).any()


@pytest.mark.parametrize("name", KL_ESTIMATORS.names())
def test_masked_tokens_change_nothing(name, gen):
    logprobs = torch.randn(3, 5, generator=gen)
    ref = torch.randn(3, 5, generator=gen)
    mask = torch.rand(3, 5, generator=gen) > 0.4
    fn = KL_ESTIMATORS.get(name)
    clean = logprobs.clone().requires_grad_(True)
    out = fn(clean, ref, mask)
    out.sum().backward()
    dirty = torch.where(mask, logprobs, float("inf")).requires_grad_(True)
    out2 = fn(dirty, torch.where(mask, ref, -1e30), mask)
    out2.sum().backward()
    torch.testing.assert_close(out2, out)
    assert torch.equal(out[~mask], torch.zeros_like(out[~mask]))
    torch.testing.assert_close(dirty.grad, clean.grad)
    assert torch.equal(dirty.grad[~mask], torch.zeros_like(dirty.grad[~mask]))


@pytest.mark.parametrize("name", KL_ESTIMATORS.names())
def test_gradcheck(name, gen):
    logprobs = torch.randn(2, 4, generator=gen, dtype=torch.float64).requires_grad_(True)
    ref = torch.randn(2, 4, generator=gen, dtype=torch.float64).requires_grad_(True)
    mask = torch.rand(2, 4, generator=gen) > 0.3
    assert torch.autograd.gradcheck(lambda a, b: KL_ESTIMATORS.get(name)(a, b, mask),
                                    (logprobs, ref))


def test_kl_penalty_rewards():
    """rewards [0, 1, 7], log_ratio [log 2, -log 2, (masked)], kl_coef 0.1, k1:
    [0 - 0.0693147, 1 + 0.0693147, 7]; detached."""
    rewards = torch.tensor([[0.0, 1.0, 7.0]])
    logprobs = torch.tensor([[math.log(2.0), -math.log(2.0), 3.0]], requires_grad=True)
    ref = torch.zeros(1, 3)
    mask = torch.tensor([[True, True, False]])
    out = kl_penalty_rewards(rewards, logprobs, ref, mask, kl_coef=0.1)
    l2 = math.log(2.0)
    torch.testing.assert_close(out, torch.tensor([[-0.1 * l2, 1 + 0.1 * l2, 7.0]]))
    assert not out.requires_grad
    k3 = kl_penalty_rewards(rewards, logprobs, ref, mask, kl_coef=1.0, estimator="k3")
    torch.testing.assert_close(k3[0, 0], torch.tensor(-(0.5 - 1 + l2)))
    with pytest.raises(KeyError, match="k1"):
        kl_penalty_rewards(rewards, logprobs, ref, mask, kl_coef=1.0, estimator="k9")
