"""KV cache kept between the turns of multi-turn episodes, for the HF engine.

A multi-turn rollout (``actors.episodes``) sends every turn the trajectory's whole context so
far: the previous turn's prompt, the tokens the engine generated, and the tokenized
observation. Without reuse the HF engine prefills all of it again each turn, so the cost of
turn ``t`` grows with everything before it (vLLM serves those tokens from its prefix cache).

``TurnCache`` holds, per finished row of a ``generate`` call made with ``keep_kv=True``, the
row's key/value tensors for its prompt and all generated tokens but the last (the last one was
sampled, never fed back) without padding, keyed by those token ids. On the next call a prompt
that extends such an entry takes it (the entry is removed: a context is extended once), and
only the new tokens are prefilled (``HFEngine._prefill``). Positions are those of the first
call, counted from the row's first real token, so reused keys carry the same rotary positions
as recomputed ones; reused and recomputed KV agree up to float rounding.

Bounded by ``max_bytes`` (oldest entries dropped first). Entries are only valid for the weights
that computed them: the engine clears the cache on every weight or adapter load. This module
does not decide when to keep KV (the episode loop asks for it) and only handles plain
``DynamicLayer`` caches (models with sliding-window or recurrent layers are not kept).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import torch

Layers = list[tuple[torch.Tensor, torch.Tensor]]  # per layer: keys, values, (heads, len, dim)


@dataclass(frozen=True)
class TurnEntry:
    """KV of one finished row: ``layers`` cover exactly ``len(ids)`` positions."""

    ids: tuple[int, ...]
    layers: Layers
    nbytes: int


class TurnCache:
    """Finished rows' KV by token ids, taken by the prompts that extend them.

    Args:
        max_bytes: most bytes of key/value tensors held; 0 disables the cache.
    """

    def __init__(self, max_bytes: int) -> None:
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple[int, ...], TurnEntry] = OrderedDict()
        self._lengths: dict[int, int] = {}  # entry length -> how many entries have it
        self.nbytes = 0
        self.hits = 0  # prompt tokens served from the cache (since construction)

    def __len__(self) -> int:
        return len(self._entries)

    def put(self, ids: Sequence[int], layers: Layers) -> None:
        """Keep ``layers`` (each ``(heads, len(ids), dim)``) for the token ids ``ids``."""
        nbytes = sum(k.numel() * k.element_size() + v.numel() * v.element_size()
                     for k, v in layers)
        if not ids or nbytes > self.max_bytes:
            return
        key = tuple(ids)
        if key in self._entries:
            self._remove(key)
        self._entries[key] = TurnEntry(key, layers, nbytes)
        self._lengths[len(key)] = self._lengths.get(len(key), 0) + 1
        self.nbytes += nbytes
        while self.nbytes > self.max_bytes:
            self._remove(next(iter(self._entries)))

    def take(self, prompt: Sequence[int]) -> TurnEntry | None:
        """The longest entry whose ids are a prefix of ``prompt`` shorter than it (at least
        the last prompt token is left to run), removed from the cache; ``None`` if none."""
        for length in sorted(self._lengths, reverse=True):
            if length >= len(prompt):
                continue
            key = tuple(prompt[:length])
            if key in self._entries:
                entry = self._entries[key]
                self._remove(key)
                self.hits += length
                return entry
        return None

    def clear(self) -> None:
        """Drop every entry (after a weight load, or when the episodes are over)."""
        self._entries.clear()
        self._lengths.clear()
        self.nbytes = 0

    def _remove(self, key: tuple[int, ...]) -> None:
        entry = self._entries.pop(key)
        self.nbytes -= entry.nbytes
        self._lengths[len(key)] -= 1
        if not self._lengths[len(key)]:
            del self._lengths[len(key)]


def is_plain_dynamic(cache: object) -> bool:
    """Whether ``cache`` is a ``DynamicCache`` of plain full-attention layers (the only kind
    whose per-row tensors can be cut out and put back)."""
    from transformers.cache_utils import DynamicCache, DynamicLayer

    layers = getattr(cache, "layers", None)
    return (type(cache) is DynamicCache and bool(layers)
            and all(type(layer) is DynamicLayer and layer.keys is not None for layer in layers))


def row_layers(cache: object, row: int, columns: torch.Tensor) -> Layers:
    """Row ``row``'s keys and values at cache positions ``columns`` (copies, no padding)."""
    return [(layer.keys[row].index_select(1, columns), layer.values[row].index_select(1, columns))
            for layer in cache.layers]  # type: ignore[attr-defined]


def left_padded_cache(entries: Sequence[TurnEntry | None], width: int, template: Layers) -> object:
    """A ``DynamicCache`` of ``len(entries)`` rows and ``width`` positions: each entry's KV
    right-aligned (rows without one, and the columns left of an entry, are zeros that the
    attention mask hides). ``template`` gives per-layer shapes, dtype and device."""
    from transformers.cache_utils import DynamicCache

    data = []
    for index, (key0, value0) in enumerate(template):
        keys = key0.new_zeros((len(entries), key0.shape[0], width, key0.shape[2]))
        values = value0.new_zeros((len(entries), value0.shape[0], width, value0.shape[2]))
        for row, entry in enumerate(entries):
            if entry is not None:
                k, v = entry.layers[index]
                keys[row, :, width - k.shape[1]:] = k
                values[row, :, width - v.shape[1]:] = v
        data.append((keys, values))
    return DynamicCache(data)
