"""Deterministic, resumable weighted mixing of data sources, and staged curricula.

``Curriculum(phases, sizes=..., seed=...)`` yields ``(source_name, index)`` pairs. Phase ``k``
draws ``num_samples`` items; each draw picks a source with probability proportional to the
phase's weights (e.g. 99 % domain text, 1 % general replay), then takes the next index of that
source's current epoch permutation. A source that runs out starts a new epoch with a fresh
permutation; a source's position carries over between phases. ``MixtureSampler`` is the
one-phase case. A phase with ``num_samples=None`` is open: the last one never ends, an earlier one
lasts until ``end_phase()`` is called (a stage that switches phases by trained tokens, not by
draws, ends a phase when its token budget is spent).

Determinism and resume: the source choices for draws ``[1024 b, 1024 (b+1))`` come from a
generator seeded with ``(seed, phase, b)`` and a source's epoch-``e`` permutation from
``(seed, source index, e)``, so the whole stream is a pure function of the seed. The state is
only counters (``state_dict()``: draws made, each source's epoch/position and the lengths of
phases ended by ``end_phase``), JSON-friendly;
``load_state_dict`` continues the exact same stream. Sources are ordered by name, so the order
of the ``sizes``/``weights`` dicts does not matter. This module does not load or encode data.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

_BLOCK = 1024


def _check_weights(sizes: dict[str, int], weights: dict[str, float], phase: int) -> None:
    if set(weights) != set(sizes):
        raise ValueError(
            f"phase {phase}: weights name {sorted(weights)} but sizes name {sorted(sizes)}"
        )
    for name, weight in weights.items():
        if not weight >= 0:
            raise ValueError(f"phase {phase}: weight of {name!r} must be >= 0, got {weight}")
        if weight > 0 and sizes[name] <= 0:
            raise ValueError(f"phase {phase}: source {name!r} has weight {weight} but no items")
    if sum(weights.values()) <= 0:
        raise ValueError(f"phase {phase}: weights must not all be 0")


class Curriculum:
    """Weighted source mixing whose weights change by phase; see the module docstring.

    Args:
        phases: ``[(num_samples, weights), ...]``; ``num_samples=None`` makes a phase open
            (the last: endless; an earlier one: until ``end_phase()``).
        sizes: number of items per source.
        seed: the seed of the whole stream.
    """

    def __init__(
        self,
        phases: Sequence[tuple[int | None, dict[str, float]]],
        *,
        sizes: dict[str, int],
        seed: int,
    ) -> None:
        if not phases:
            raise ValueError("a curriculum needs at least one phase")
        self.names = sorted(sizes)
        self.sizes = dict(sizes)
        self.seed = int(seed)
        self._lengths: list[int | None] = []  # draws per phase; None = open
        self._probs: list[np.ndarray] = []
        for k, (num_samples, weights) in enumerate(phases):
            _check_weights(sizes, weights, k)
            if num_samples is not None and num_samples < 0:
                raise ValueError(f"phase {k}: num_samples must be >= 0, got {num_samples}")
            raw = np.array([float(weights[n]) for n in self.names])
            self._probs.append(raw / raw.sum())
            self._lengths.append(num_samples)
        self._drawn = 0
        self._epochs = dict.fromkeys(self.names, 0)
        self._positions = dict.fromkeys(self.names, 0)
        self._choice_cache: tuple[tuple[int, int], np.ndarray] | None = None
        self._perm_cache: dict[str, tuple[int, np.ndarray]] = {}

    def __len__(self) -> int:
        if any(n is None for n in self._lengths):
            raise TypeError("a curriculum with an open phase has no length")
        return sum(self._lengths)  # type: ignore[arg-type]

    @property
    def num_drawn(self) -> int:
        """Number of items drawn so far."""
        return self._drawn

    @property
    def phase(self) -> int | None:
        """The phase the next draw comes from (None when the stream is exhausted)."""
        return self._phase(self._drawn)

    def _phase(self, draw: int) -> int | None:
        start = 0
        for k, length in enumerate(self._lengths):
            if length is None or draw < start + length:
                return k
            start += length
        return None

    def end_phase(self) -> None:
        """End the current phase now: the next draw comes from the next phase.

        Raises ``ValueError`` in the last phase (it has nothing to switch to)."""
        k = self.phase
        if k is None or k == len(self._lengths) - 1:
            raise ValueError("end_phase: already in the last phase")
        self._lengths[k] = self._drawn - sum(self._lengths[:k])  # type: ignore[arg-type]

    def _choice(self, phase: int, draw: int) -> int:
        block = draw // _BLOCK
        if self._choice_cache is None or self._choice_cache[0] != (phase, block):
            rng = np.random.default_rng([self.seed, phase, block])
            picks = rng.choice(len(self.names), size=_BLOCK, p=self._probs[phase])
            self._choice_cache = ((phase, block), picks)
        return int(self._choice_cache[1][draw % _BLOCK])

    def _permutation(self, name: str, epoch: int) -> np.ndarray:
        cached = self._perm_cache.get(name)
        if cached is None or cached[0] != epoch:
            rng = np.random.default_rng([self.seed, self.names.index(name), epoch, 7])
            cached = (epoch, rng.permutation(self.sizes[name]))
            self._perm_cache[name] = cached
        return cached[1]

    def __iter__(self) -> Iterator[tuple[str, int]]:
        return self

    def __next__(self) -> tuple[str, int]:
        phase = self._phase(self._drawn)
        if phase is None:
            raise StopIteration
        name = self.names[self._choice(phase, self._drawn)]
        index = int(self._permutation(name, self._epochs[name])[self._positions[name]])
        self._positions[name] += 1
        if self._positions[name] == self.sizes[name]:
            self._epochs[name] += 1
            self._positions[name] = 0
        self._drawn += 1
        return name, index

    def state_dict(self) -> dict[str, Any]:
        """Counters that fix the position in the stream (plain ints; JSON-serialisable)."""
        return {
            "drawn": self._drawn,
            "epochs": dict(self._epochs),
            "positions": dict(self._positions),
            "seed": self.seed,
            "sizes": dict(self.sizes),
            "lengths": list(self._lengths),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from ``state``; the seed and source sizes must match this sampler's."""
        if state["seed"] != self.seed or dict(state["sizes"]) != self.sizes:
            raise ValueError(
                f"sampler state is for seed {state['seed']} and sizes {state['sizes']}, "
                f"this sampler has seed {self.seed} and sizes {self.sizes}"
            )
        self._drawn = int(state["drawn"])
        self._epochs = {n: int(state["epochs"][n]) for n in self.names}
        self._positions = {n: int(state["positions"][n]) for n in self.names}
        if "lengths" in state:  # phases ended early by ``end_phase``
            if len(state["lengths"]) != len(self._lengths):
                raise ValueError(f"sampler state has {len(state['lengths'])} phases, this "
                                 f"curriculum has {len(self._lengths)}")
            self._lengths = list(state["lengths"])


class MixtureSampler(Curriculum):
    """Weighted mixing with fixed weights: a one-phase ``Curriculum``.

    ``num_samples=None`` makes it endless (sources are re-shuffled every epoch).
    """

    def __init__(
        self,
        sizes: dict[str, int],
        weights: dict[str, float],
        *,
        seed: int,
        num_samples: int | None = None,
    ) -> None:
        super().__init__([(num_samples, weights)], sizes=sizes, seed=seed)


def batches(
    sampler: Iterator[tuple[str, int]], batch_size: int, *, drop_last: bool = False
) -> Iterator[list[tuple[str, int]]]:
    """Group a sampler's draws into lists of ``batch_size`` (the last may be short)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    batch: list[tuple[str, int]] = []
    for item in sampler:
        batch.append(item)
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch and not drop_last:
        yield batch
