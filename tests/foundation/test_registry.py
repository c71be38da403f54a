"""The generic registry: duplicates refused, errors list known names, override restores."""

import pytest

from rlsys.registry import Registry


def test_register_get_and_duplicates():
    r: Registry[int] = Registry("thing")
    r.register("a", 1)

    @r.decorator("b")
    def b():  # noqa: D401 - a registered object
        return 2

    assert r.get("a") == 1 and r.get("b") is b
    assert r.names() == ["a", "b"] and "a" in r and len(r) == 2
    with pytest.raises(ValueError, match="already registered"):
        r.register("a", 3)
    with pytest.raises(KeyError, match=r"unknown thing 'zz'; known: a, b"):
        r.get("zz")


def test_override_is_temporary():
    r: Registry[int] = Registry("thing")
    r.register("a", 1)
    with r.override("a", 5), r.override("new", 7):
        assert r.get("a") == 5 and r.get("new") == 7
    assert r.get("a") == 1 and "new" not in r


def test_empty_name_refused():
    with pytest.raises(ValueError, match="non-empty"):
        Registry("thing").register("", 1)
