"""A small generic name -> object registry.

Used for advantage estimators, policy objectives, loss aggregations, KL estimators, rewards,
environments, rollout engines and LR schedules. Does not import anything heavy. Plugin
registries (rewards, environments) register their built-ins as ``lazy_factory("module:attr")``
(nothing is imported until one is built) and discover third-party entries with
``load_entry_points(group)`` on first lookup.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Generic, TypeVar

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
        self._groups_loaded: set[str] = set()

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

    def load_entry_points(self, group: str,
                          adapt: Callable[[Any, str], T] | None = None) -> None:
        """Register every entry point of the ``group`` (e.g. ``rlsys.rewards``) whose name is
        not taken yet, through ``adapt(obj, name)`` when given; once per group."""
        if group in self._groups_loaded:
            return
        self._groups_loaded.add(group)
        from importlib.metadata import entry_points

        for ep in entry_points(group=group):
            if ep.name not in self._items:
                obj = ep.load()
                self.register(ep.name, adapt(obj, ep.name) if adapt else obj)

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


def lazy_factory(path: str) -> Callable[..., Any]:
    """A factory ``(**kwargs)`` that imports ``module:attr`` only when called and calls it with
    ``kwargs``; its ``__qualname__`` is ``path`` (``rlsys.config.checks`` reads it to check
    arguments against the real signature without importing at registration)."""

    def factory(**kwargs: Any) -> Any:
        module, attr = path.split(":")
        return getattr(importlib.import_module(module), attr)(**kwargs)

    factory.__qualname__ = factory.__name__ = path
    return factory

