"""Shards of pool work: contiguous slices of a batch, one per worker, and the in-flight record
of one (``actors.launch`` pools and the async methods of ``actors.async_pool``). Plain data;
no Ray calls here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class PendingShard:
    """One in-flight shard: which worker, where the shard starts, its inputs, its result ref."""

    worker: int
    start: int
    inputs: list[Any]
    ref: Any  # ray.ObjectRef


def shard_bounds(num_items: int, num_shards: int) -> list[tuple[int, int]]:
    """Contiguous ``[start, end)`` chunks, sizes differing by at most one, empty ones dropped."""
    base, extra = divmod(num_items, num_shards)
    bounds, start = [], 0
    for i in range(num_shards):
        end = start + base + (1 if i < extra else 0)
        if end > start:
            bounds.append((start, end))
        start = end
    return bounds
