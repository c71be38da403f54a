"""Loss aggregations: hand values, sharding invariance (values and gradients), masking."""

from __future__ import annotations

import pytest
import torch

from rlsys.algo.aggregation import AGGREGATIONS

NORM_LEN = 8


def _aggregate(name, loss, mask, **kwargs):
    return AGGREGATIONS.get(name)(loss, mask, norm_len=NORM_LEN, **kwargs)


def test_hand_example():
    """loss [[1, 2, 3], [4, x, x]], mask [[1, 1, 1], [1, 0, 0]] (x = 100, ignored):
    token_mean = 10 / 4 = 2.5; seq_mean_token_mean = (6/3 + 4/1) / 2 = 3;
    seq_mean_token_sum = 10 / 2 = 5; seq_mean_token_sum_norm (norm_len 4) = 10 / (2 * 4)."""
    loss = torch.tensor([[1.0, 2.0, 3.0], [4.0, 100.0, 100.0]])
    mask = torch.tensor([[True, True, True], [True, False, False]])
    expected = {
        "token_mean": 2.5,
        "seq_mean_token_mean": 3.0,
        "seq_mean_token_sum": 5.0,
        "seq_mean_token_sum_norm": 1.25,
    }
    for name, value in expected.items():
        out = AGGREGATIONS.get(name)(loss, mask, norm_len=4)
        assert out.dim() == 0
        assert float(out) == pytest.approx(value), name


@pytest.mark.parametrize("name", AGGREGATIONS.names())
@pytest.mark.parametrize("splits", [[5], [2, 3], [1, 2, 2]])
def test_sharding_invariance_of_value_and_gradient(name, splits, gen, make_mask):
    """Sum over shards of the shard losses with GLOBAL normalisers == full-batch loss, and the
    summed shard gradients == the full-batch gradient (row 3 has no response token)."""
    mask = make_mask(5, 7, gen)
    mask[3] = False
    base = torch.randn(5, 7, generator=gen)
    full_in = base.clone().requires_grad_(True)
    full = _aggregate(name, full_in, mask)
    full.backward()
    normalisers = {"num_tokens": mask.sum(), "num_seqs": mask.shape[0]}
    shard_in = base.clone().requires_grad_(True)
    total = torch.zeros(())
    for rows, shard_mask in zip(
        torch.split(shard_in, splits), torch.split(mask, splits), strict=True
    ):
        total = total + _aggregate(name, rows, shard_mask, **normalisers)
    total.backward()
    torch.testing.assert_close(total, full, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(shard_in.grad, full_in.grad, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name", AGGREGATIONS.names())
def test_masked_tokens_change_nothing(name, gen, make_mask):
    mask = make_mask(4, 6, gen)
    base = torch.randn(4, 6, generator=gen)
    clean = base.clone().requires_grad_(True)
    _aggregate(name, clean, mask).backward()
    dirty = torch.where(mask, base, float("nan")).requires_grad_(True)
    out = _aggregate(name, dirty, mask)
    out.backward()
    torch.testing.assert_close(out, _aggregate(name, base, mask))
    torch.testing.assert_close(dirty.grad, clean.grad)
    assert torch.equal(dirty.grad[~mask], torch.zeros_like(dirty.grad[~mask]))


@pytest.mark.parametrize("name", AGGREGATIONS.names())
def test_empty_rows_and_empty_batch_give_no_nan(name):
    loss = torch.ones(2, 3)
    none = torch.zeros(2, 3, dtype=torch.bool)
    assert float(_aggregate(name, loss, none)) == 0.0
    assert float(_aggregate(name, loss, none, num_tokens=0, num_seqs=0)) == 0.0
    one_row = torch.tensor([[True, True, False], [False, False, False]])
    assert torch.isfinite(_aggregate(name, loss, one_row))


def test_packed_rows_with_seq_ids_match_unpacked_rows():
    """Row [a a b b b | pad] packs documents a (2 masked tokens) and b (1 masked token):
    seq_mean_token_mean over documents = ((1 + 2) / 2 + 6 / 1) / 2 = 3.75, the same as
    the unpacked rows; num_seqs defaults to the 2 documents."""
    packed_loss = torch.tensor([[1.0, 2.0, 5.0, 6.0, 7.0, 9.0]])
    packed_mask = torch.tensor([[True, True, False, True, False, False]])
    seq_ids = torch.tensor([[1, 1, 2, 2, 2, 0]])
    unpacked_loss = torch.tensor([[1.0, 2.0, 0.0], [5.0, 6.0, 7.0]])
    unpacked_mask = torch.tensor([[True, True, False], [False, True, False]])
    for name in ["seq_mean_token_mean", "seq_mean_token_sum", "seq_mean_token_sum_norm"]:
        packed = _aggregate(name, packed_loss, packed_mask, seq_ids=seq_ids)
        unpacked = _aggregate(name, unpacked_loss, unpacked_mask)
        torch.testing.assert_close(packed, unpacked)
    packed = AGGREGATIONS.get("seq_mean_token_mean")(packed_loss, packed_mask, seq_ids=seq_ids)
    assert float(packed) == pytest.approx(3.75)


def test_norm_len_is_required():
    with pytest.raises(ValueError, match="norm_len"):
        AGGREGATIONS.get("seq_mean_token_sum_norm")(torch.ones(1, 2), torch.ones(1, 2) > 0)


def test_shape_mismatch_is_reported():
    with pytest.raises(ValueError, match="per_token_loss"):
        AGGREGATIONS.get("token_mean")(torch.ones(2, 3), torch.ones(2, 4) > 0)
