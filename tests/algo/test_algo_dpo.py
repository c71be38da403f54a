"""DPO-family losses: hand values, gradient direction, gradcheck, sequence log-probs."""

from __future__ import annotations

import math

import pytest
import torch

from rlsys.algo.dpo import DPO_LOSSES, sequence_logps


def _pair(dtype=torch.float32):
    """chosen -1, rejected -2, both references -1.5: h = 0.5 - (-0.5) = 1."""
    chosen = torch.tensor([-1.0], dtype=dtype, requires_grad=True)
    rejected = torch.tensor([-2.0], dtype=dtype, requires_grad=True)
    ref = torch.tensor([-1.5], dtype=dtype)
    return chosen, rejected, ref, ref.clone()


def test_hand_values():
    """beta 0.5, h = 1: sigmoid = -log sigmoid(0.5) = log(1 + e^-0.5) = 0.474077;
    cdpo (eps 0.1) = 0.9 * 0.474077 + 0.1 * log(1 + e^0.5) = 0.426669 + 0.097408 = 0.524077;
    ipo = (1 - 1/(2 * 0.5))^2 = 0, and with beta 0.25: (1 - 2)^2 = 1.
    Implicit rewards: chosen 0.5 * 0.5 = 0.25, rejected -0.25, margin 0.5, accuracy 1."""
    args = _pair()
    sig, diag = DPO_LOSSES.get("sigmoid")(*args, beta=0.5)
    assert float(sig[0].detach()) == pytest.approx(math.log1p(math.exp(-0.5)), rel=1e-6)
    cdpo, _ = DPO_LOSSES.get("cdpo")(*args, beta=0.5, label_smoothing=0.1)
    assert float(cdpo[0].detach()) == pytest.approx(0.524077, rel=1e-5)
    smoothed, _ = DPO_LOSSES.get("sigmoid")(*args, beta=0.5, label_smoothing=0.1)
    torch.testing.assert_close(smoothed, cdpo)
    ipo = DPO_LOSSES.get("ipo")
    assert float(ipo(*args, beta=0.5)[0][0].detach()) == pytest.approx(0.0, abs=1e-12)
    assert float(ipo(*args, beta=0.25)[0][0].detach()) == pytest.approx(1.0)
    expected = {"rewards/chosen": 0.25, "rewards/rejected": -0.25, "rewards/margin": 0.5,
                "rewards/accuracy": 1.0}
    for key, value in expected.items():
        assert float(diag[key]) == pytest.approx(value), key
        assert not diag[key].requires_grad and diag[key].dim() == 0


@pytest.mark.parametrize("name,kwargs", [("sigmoid", {}), ("cdpo", {}), ("ipo", {"beta": 0.1})])
def test_gradient_step_increases_margin(name, kwargs):
    """Descending the loss raises the chosen log-prob and lowers the rejected one (for IPO
    while h < 1/(2 beta) = 5 here); references get no gradient."""
    chosen, rejected, ref_c, ref_r = _pair()
    ref_c.requires_grad_(True)
    loss, _ = DPO_LOSSES.get(name)(chosen, rejected, ref_c, ref_r, **kwargs)
    loss.sum().backward()
    assert chosen.grad[0] < 0 < rejected.grad[0]
    assert ref_c.grad is None
    with torch.no_grad():
        chosen -= 0.1 * chosen.grad
        rejected -= 0.1 * rejected.grad
    assert float((chosen - rejected).detach()) > 1.0


@pytest.mark.parametrize("name", DPO_LOSSES.names())
def test_gradcheck(name, gen):
    chosen = torch.randn(4, generator=gen, dtype=torch.float64).requires_grad_(True)
    rejected = torch.randn(4, generator=gen, dtype=torch.float64).requires_grad_(True)
    ref_c = torch.randn(4, generator=gen, dtype=torch.float64)
    ref_r = torch.randn(4, generator=gen, dtype=torch.float64)
    fn = DPO_LOSSES.get(name)
    assert torch.autograd.gradcheck(
        lambda c, r: fn(c, r, ref_c, ref_r, beta=0.3, label_smoothing=0.2)[0], (chosen, rejected)
    )


def test_sequence_logps_sum_and_average():
    """Row 0: masked [-1, -2] -> sum -3, mean -1.5; row 1 has no masked token -> 0 (no NaN)."""
    token_logprobs = torch.tensor([[-1.0, -2.0, -9.0], [-4.0, -5.0, -6.0]])
    mask = torch.tensor([[True, True, False], [False, False, False]])
    torch.testing.assert_close(sequence_logps(token_logprobs, mask), torch.tensor([-3.0, 0.0]))
    torch.testing.assert_close(sequence_logps(token_logprobs, mask, average=True),
                               torch.tensor([-1.5, 0.0]))


def test_bad_inputs_are_rejected():
    args = _pair()
    with pytest.raises(ValueError, match="label_smoothing"):
        DPO_LOSSES.get("cdpo")(*args, label_smoothing=0.0)
    with pytest.raises(ValueError, match="beta"):
        DPO_LOSSES.get("sigmoid")(*args, beta=0.0)
    with pytest.raises(ValueError, match="rejected_logps"):
        DPO_LOSSES.get("ipo")(args[0], torch.zeros(2), args[2], args[3])
