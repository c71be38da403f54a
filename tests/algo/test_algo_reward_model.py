"""Bradley-Terry loss: hand values, the margin, gradients, diagnostics."""

from __future__ import annotations

import math

import pytest
import torch

from rlsys.algo.reward_model import bradley_terry


def test_bradley_terry_hand_values():
    """gaps [2, 0, -1]: loss = log(1 + exp(-gap)) = [log(1 + e^-2), log 2, log(1 + e)];
    d loss / d r_c = -sigmoid(-gap) = [-1/(1 + e^2), -1/2, -e/(1 + e)], d / d r_r the negative;
    accuracy 1/3 (the tie counts as wrong), mean gap 1/3."""
    chosen = torch.tensor([3.0, 1.0, 0.0], dtype=torch.float64, requires_grad=True)
    rejected = torch.tensor([1.0, 1.0, 1.0], dtype=torch.float64, requires_grad=True)
    losses, diag = bradley_terry(chosen, rejected)
    expected = [math.log1p(math.exp(-2)), math.log(2), math.log1p(math.e)]
    torch.testing.assert_close(losses, torch.tensor(expected, dtype=torch.float64))
    losses.sum().backward()
    grad = [-1 / (1 + math.exp(2)), -0.5, -math.e / (1 + math.e)]
    torch.testing.assert_close(chosen.grad, torch.tensor(grad, dtype=torch.float64))
    torch.testing.assert_close(rejected.grad, -chosen.grad)
    assert float(diag["accuracy"]) == pytest.approx(1 / 3)
    assert float(diag["margin"]) == pytest.approx(1 / 3)
    assert float(diag["chosen"]) == pytest.approx(4 / 3)
    assert float(diag["rejected"]) == pytest.approx(1.0)
    assert all(not v.requires_grad for v in diag.values())


def test_margin_shifts_the_gap():
    """gap 2 with margin 2 is scored like gap 0: log 2; per-pair margins [0, 1] on gaps [1, 1]
    give [log(1 + e^-1), log 2]."""
    one = torch.tensor([2.0])
    losses, _ = bradley_terry(one, torch.zeros(1), margin=2.0)
    torch.testing.assert_close(losses, torch.tensor([math.log(2)]))
    losses, _ = bradley_terry(torch.ones(2), torch.zeros(2), margin=torch.tensor([0.0, 1.0]))
    torch.testing.assert_close(losses, torch.tensor([math.log1p(math.exp(-1)), math.log(2)]))


def test_bad_shapes_and_margins_are_rejected():
    with pytest.raises(ValueError, match="shape"):
        bradley_terry(torch.zeros(2), torch.zeros(3))
    with pytest.raises(ValueError, match="margin"):
        bradley_terry(torch.zeros(2), torch.zeros(2), margin=-1.0)
