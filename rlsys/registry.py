"""A small generic name -> object registry.

Used for advantage estimators, policy objectives, loss aggregations, KL estimators, rewards,
rollout engines and LR schedules. Does not import anything heavy; does not discover plugins
(callers such as ``rewards`` add entry-point discovery on top).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to objects of one kind; duplicate names are refused.

    >>> r = Registry[int]("numbers")
    >>> r.register("one", 1)
    1
    >>> r.get("one")
    1
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str, obj: T) -> T:
        """Add ``obj`` under ``name``; raises ``ValueError`` when the name is taken."""
        if not name or not isinstance(name, str):
            raise ValueError(f"{self.kind} registry: name must be a non-empty string, got {name!r}")
        if name in self._items:
            raise ValueError(f"{self.kind} registry: {name!r} is already registered")
        self._items[name] = obj
        return obj

    def decorator(self, name: str) -> Callable[[T], T]:
        """Return a decorator that registers the decorated object under ``name``."""

        def wrap(obj: T) -> T:
            return self.register(name, obj)

        return wrap

    def get(self, name: str) -> T:
        """Look up ``name``; the ``KeyError`` message lists every known name."""
        try:
            return self._items[name]
        except KeyError:
            known = ", ".join(sorted(self._items)) or "(none)"
            raise KeyError(f"unknown {self.kind} {name!r}; known: {known}") from None

    def names(self) -> list[str]:
        """Sorted list of registered names."""
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __len__(self) -> int:
        return len(self._items)

    @contextmanager
    def override(self, name: str, obj: T) -> Iterator[None]:
        """Test-only: temporarily bind ``name`` to ``obj`` (replacing any entry), then restore."""
        missing = object()
        previous = self._items.get(name, missing)
        self._items[name] = obj
        try:
            yield
        finally:
            if previous is missing:
                del self._items[name]
            else:
                self._items[name] = previous  # type: ignore[assignment]
