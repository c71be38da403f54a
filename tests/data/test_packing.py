"""Packing: bins respect the limit, every document lands once, collates follow TokenBatch rules."""

from __future__ import annotations

import random

import pytest
import torch

from rlsys.data.encode import Encoded
from rlsys.data.packing import collate_packed, collate_padded, pack


def _docs(lengths: list[int]) -> list[Encoded]:
    out, token = [], 10
    for n in lengths:
        out.append(Encoded(list(range(token, token + n)), [True] * n))
        token += n
    return out


@pytest.mark.parametrize("seed", range(20))
def test_bins_respect_limit_and_cover_each_document_once(seed):
    rng = random.Random(seed)
    max_tokens = rng.randint(8, 64)
    lengths = [rng.randint(1, max_tokens) for _ in range(rng.randint(1, 60))]
    docs = _docs(lengths)
    bins = pack(docs, max_tokens)
    assert sorted(i for b in bins for i in b) == list(range(len(docs)))
    assert all(sum(lengths[i] for i in b) <= max_tokens for b in bins)
    # Best fit never leaves two bins that could be merged (a lower bound sanity check).
    assert len(bins) >= -(-sum(lengths) // max_tokens)
    assert pack(docs, max_tokens) == bins  # deterministic


def test_best_fit_decreasing_hand_example():
    # sorted: 6(0) 5(1) 4(2) 3(3) 2(4); cap 10: 6->A; 5->B; 4->A(free 4 -> 0); 3->B(5->2); 2->B
    docs = _docs([6, 5, 4, 3, 2])
    assert pack(docs, 10) == [[0, 2], [1, 3, 4]]


def test_too_long_document_names_limit():
    with pytest.raises(ValueError, match="document 1 has 9 tokens, more than max_tokens=8"):
        pack(_docs([3, 9]), 8)


def test_collate_packed_layout():
    docs = [Encoded([1, 2, 3], [False, True, True]), Encoded([4, 5], [True, True]),
            Encoded([6, 7, 8, 9], [False, False, True, True])]
    batch = collate_packed(docs, [[0, 1], [2]], max_tokens=6, pad_id=0)
    assert batch.input_ids.tolist() == [[1, 2, 3, 4, 5], [6, 7, 8, 9, 0]]
    assert batch.position_ids.tolist() == [[0, 1, 2, 0, 1], [0, 1, 2, 3, 0]]
    assert batch.seq_ids.tolist() == [[1, 1, 1, 2, 2], [1, 1, 1, 1, 0]]
    # The second document's first token (id 4) is not a target even though its mask said so.
    assert batch.mask.tolist() == [[False, True, True, False, True],
                                   [False, False, True, True, False]]
    assert batch.num_tokens() == 9
    with pytest.raises(ValueError, match="more than max_tokens=4"):
        collate_packed(docs, [[0, 1], [2]], max_tokens=4, pad_id=0)
    with pytest.raises(ValueError, match="more than one bin"):
        collate_packed(docs, [[0, 1], [1]], max_tokens=6, pad_id=0)


def test_collate_padded_layout():
    docs = [Encoded([1, 2, 3], [False, True, True]), Encoded([4, 5], [True, True])]
    batch = collate_padded(docs, pad_id=99)
    assert batch.input_ids.tolist() == [[1, 2, 3], [4, 5, 99]]
    assert batch.seq_ids.tolist() == [[1, 1, 1], [1, 1, 0]]
    assert batch.position_ids.tolist() == [[0, 1, 2], [0, 1, 0]]
    assert batch.mask.tolist() == [[False, True, True], [False, True, False]]
    assert batch.input_ids.dtype == torch.long and batch.mask.dtype == torch.bool
