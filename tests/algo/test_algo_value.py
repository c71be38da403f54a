"""Clipped value loss: hand values, gradcheck, masking."""

from __future__ import annotations

import pytest
import torch

from rlsys.algo.value import clipped_value_loss


def test_hand_example():
    """old V = 0, clip 0.2, R = 1:
    V = 0.5: unclipped (0.5 - 1)^2 = 0.25, clipped V 0.2 -> 0.64; loss 0.5 * 0.64 = 0.32;
    V = 0.1: both 0.81 -> 0.405 (not counted as clipped);
    V = -0.5: unclipped 2.25, clipped (-0.2 - 1)^2 = 1.44 -> 0.5 * 2.25 = 1.125;
    masked position -> 0."""
    values = torch.tensor([[0.5, 0.1, -0.5, 3.0]], requires_grad=True)
    old = torch.zeros(1, 4)
    returns = torch.ones(1, 4)
    mask = torch.tensor([[True, True, True, False]])
    loss, diag = clipped_value_loss(values, old, returns, mask, clip=0.2)
    torch.testing.assert_close(loss, torch.tensor([[0.32, 0.405, 1.125, 0.0]]))
    loss.sum().backward()
    # clipped token gets no gradient; others get V - R
    torch.testing.assert_close(values.grad, torch.tensor([[0.0, -0.9, -1.5, 0.0]]))
    assert float(diag["vf_clip_frac"]) == pytest.approx(1 / 3)
    assert float(diag["values_mean"]) == pytest.approx(0.1 / 3 * 1.0)
    assert all(not v.requires_grad for v in diag.values())


def test_gradcheck_away_from_kinks(gen):
    old = torch.randn(2, 5, generator=gen, dtype=torch.float64)
    returns = old + 0.5 * torch.randn(2, 5, generator=gen, dtype=torch.float64)
    step = torch.tensor([0.05, -0.1, 0.5, -0.6, 0.12], dtype=torch.float64).repeat(2, 1)
    values = (old + step).requires_grad_(True)
    mask = torch.rand(2, 5, generator=gen) > 0.2
    assert torch.autograd.gradcheck(
        lambda v: clipped_value_loss(v, old, returns, mask, clip=0.2)[0], (values,)
    )


def test_masked_tokens_change_nothing(gen):
    values = torch.randn(3, 4, generator=gen)
    old = torch.randn(3, 4, generator=gen)
    returns = torch.randn(3, 4, generator=gen)
    mask = torch.rand(3, 4, generator=gen) > 0.4
    clean = values.clone().requires_grad_(True)
    loss, _ = clipped_value_loss(clean, old, returns, mask)
    loss.sum().backward()
    dirty = torch.where(mask, values, float("nan")).requires_grad_(True)
    loss2, _ = clipped_value_loss(dirty, old, torch.where(mask, returns, 1e30), mask)
    loss2.sum().backward()
    torch.testing.assert_close(loss2, loss)
    torch.testing.assert_close(dirty.grad, clean.grad)
    assert torch.equal(dirty.grad[~mask], torch.zeros_like(dirty.grad[~mask]))


def test_negative_clip_rejected():
    with pytest.raises(ValueError, match="clip"):
        clipped_value_loss(torch.zeros(1, 1), torch.zeros(1, 1), torch.zeros(1, 1),
                           torch.ones(1, 1) > 0, clip=-1.0)
