"""Fixtures for the pure-math tests: one thread, a seeded generator, random masks."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def gen() -> torch.Generator:
    return torch.Generator().manual_seed(1234)


def _random_response_mask(
    batch: int, length: int, gen: torch.Generator, *, gaps: bool = False
) -> torch.Tensor:
    """(B, T) bool: a prompt prefix, a response, right padding; optionally masked-out holes
    inside the response (tool outputs). Row 0 always has >= 2 response tokens."""
    mask = torch.zeros(batch, length, dtype=torch.bool)
    for i in range(batch):
        start = int(torch.randint(1, max(2, length // 3), (1,), generator=gen))
        end = int(torch.randint(start, length + 1, (1,), generator=gen))
        if i == 0:
            end = max(end, min(start + 2, length))
        mask[i, start:end] = True
    if gaps:
        mask &= torch.rand(batch, length, generator=gen) > 0.2
    return mask


@pytest.fixture
def make_mask():
    """``make_mask(B, T, gen, gaps=False)`` -> a random (B, T) response mask."""
    return _random_response_mask
