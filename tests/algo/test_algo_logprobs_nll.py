"""token_logprobs / entropy_from_logits alignment and values; masked NLL vs cross-entropy."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from rlsys.algo.aggregation import AGGREGATIONS
from rlsys.algo.logprobs import entropy_from_logits, token_logprobs
from rlsys.algo.nll import masked_nll


def _reference_logprobs(logits, input_ids):
    out = torch.zeros(input_ids.shape, dtype=torch.float32)
    for i in range(input_ids.shape[0]):
        for t in range(1, input_ids.shape[1]):
            out[i, t] = torch.log_softmax(logits[i, t - 1].float(), -1)[input_ids[i, t]]
    return out


def test_hand_example():
    """V = 2, logits at t=0 are [0, log 3] -> p = [1/4, 3/4]; the token at t=1 is id 1, so
    result[0, 1] = log(3/4); result[0, 0] = 0. Entropy at t=1 is
    -(1/4 log 1/4 + 3/4 log 3/4) = 0.562335."""
    logits = torch.tensor([[[0.0, math.log(3.0)], [5.0, -5.0]]])
    input_ids = torch.tensor([[0, 1]])
    torch.testing.assert_close(token_logprobs(logits, input_ids),
                               torch.tensor([[0.0, math.log(0.75)]]))
    expected_h = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    torch.testing.assert_close(entropy_from_logits(logits), torch.tensor([[0.0, expected_h]]))


@pytest.mark.parametrize("chunk_rows", [1, 2, 64])
def test_matches_reference_loop(gen, chunk_rows):
    logits = torch.randn(3, 6, 11, generator=gen) * 4
    input_ids = torch.randint(0, 11, (3, 6), generator=gen)
    out = token_logprobs(logits, input_ids, chunk_rows=chunk_rows)
    torch.testing.assert_close(out, _reference_logprobs(logits, input_ids), rtol=1e-5, atol=1e-6)
    probs = torch.softmax(logits[:, :-1], -1)
    expected_h = -(probs * torch.log_softmax(logits[:, :-1], -1)).sum(-1)
    torch.testing.assert_close(entropy_from_logits(logits, chunk_rows=chunk_rows)[:, 1:],
                               expected_h, rtol=1e-5, atol=1e-6)


def test_uniform_logits_have_entropy_log_v():
    logits = torch.zeros(2, 3, 7)
    h = entropy_from_logits(logits)
    torch.testing.assert_close(h[:, 1:], torch.full((2, 2), math.log(7.0)))
    assert torch.equal(h[:, 0], torch.zeros(2))


def test_bf16_logits_are_computed_in_float32(gen):
    logits = (torch.randn(2, 5, 9, generator=gen) * 4).to(torch.bfloat16)
    input_ids = torch.randint(0, 9, (2, 5), generator=gen)
    out = token_logprobs(logits, input_ids)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, _reference_logprobs(logits, input_ids), rtol=1e-5, atol=1e-6)


def test_gradients_flow_to_logits(gen):
    logits = torch.randn(2, 4, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    input_ids = torch.randint(0, 5, (2, 4), generator=gen)
    assert torch.autograd.gradcheck(lambda z: token_logprobs(z, input_ids, chunk_rows=1),
                                    (logits,))
    assert torch.autograd.gradcheck(lambda z: entropy_from_logits(z, chunk_rows=1), (logits,))


def test_masked_nll_token_mean_equals_cross_entropy(gen):
    """token_logprobs + masked_nll + token_mean == F.cross_entropy on shifted labels with the
    unmasked targets set to ignore_index."""
    logits = torch.randn(3, 7, 13, generator=gen, requires_grad=True)
    input_ids = torch.randint(0, 13, (3, 7), generator=gen)
    mask = torch.rand(3, 7, generator=gen) > 0.3
    mask[:, 0] = False
    per_token = masked_nll(token_logprobs(logits, input_ids), mask)
    assert torch.equal(per_token[~mask], torch.zeros_like(per_token[~mask]))
    loss = AGGREGATIONS.get("token_mean")(per_token, mask)
    labels = torch.where(mask, input_ids, -100)[:, 1:]
    expected = F.cross_entropy(logits[:, :-1].reshape(-1, 13), labels.reshape(-1))
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)
    grad, = torch.autograd.grad(loss, logits)
    expected_grad, = torch.autograd.grad(expected, logits)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-5, atol=1e-7)


def test_shape_errors_name_the_argument():
    with pytest.raises(ValueError, match="input_ids"):
        token_logprobs(torch.zeros(2, 3, 4), torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="logits"):
        entropy_from_logits(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="logprobs"):
        masked_nll(torch.zeros(2, 3), torch.ones(2, 4) > 0)
