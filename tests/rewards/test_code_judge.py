"""The judge against candidate objects and exceptions: no answer may decide a verdict.

Issue #16 items 1-2. A candidate exception must never steer the tests' control flow (a
StopIteration ending a ``map`` inside ``all()`` made failing code pass), and a candidate object
may only answer data queries (calls, attributes, ``len``, ``[]``, iteration), never a
predicate such as ``in`` (``__contains__`` returning True passed ``assert 7 in f(10)``).
Real sandboxes; every hack below passed before the fix.
"""

from __future__ import annotations

import pytest

from rewards.code import run_tests
from rewards.code.rewrite import CAUGHT_NAME, prepare_tests

RAISES = "def f(x):\n    raise {exc}\n"
EVERYTHING = '''
class A:
    def __contains__(self, x): return True
    def __eq__(self, o): return True
    def __ne__(self, o): return False
    def __lt__(self, o): return True
    def __le__(self, o): return True
    def __gt__(self, o): return True
    def __ge__(self, o): return True
    def __bool__(self): return True
    def __hash__(self): return hash(7)
    def __index__(self): return 7
    def __int__(self): return 7
    def __float__(self): return 7.0
    def __round__(self, n=None): return 7
    def __abs__(self): return 7
    def __add__(self, o): return 7
    __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = __mod__ = __add__
    def __len__(self): return 7
    def __iter__(self): return iter([])
    def __str__(self): return "7"
    def __format__(self, spec): return "7"
    @property
    def __class__(self): return int
def f(n):
    return A()
'''


@pytest.mark.parametrize("exc", ["StopIteration(9)", "StopAsyncIteration", "GeneratorExit",
                                 "SystemExit(0)", "AttributeError", "TypeError", "ValueError"])
@pytest.mark.parametrize("tests", [
    "assert all(map(lambda x: f(x) == x * x, [1, 2, 3]))",  # the issue's repro
    "assert all(f(x) == x * x for x in filter(lambda x: f(x) or True, [1, 2]))",
    "assert list(zip([1, 2], map(f, [1, 2]))) == []",
    "assert next(map(f, [1]), 'done') == 'done'",
    "assert not hasattr(type('T', (), {'v': property(lambda s: f(1))})(), 'v')",
    "assert getattr(type('T', (), {'v': property(lambda s: f(1))})(), 'v', 3) == 3",
    "assert sum(f(x) for x in [1, 2]) == 0",  # PEP 479 makes it RuntimeError; also failed
])
def test_a_candidate_exception_never_steers_the_tests(exc: str, tests: str) -> None:
    result = run_tests(RAISES.format(exc=exc), tests, timeout_s=5, memory_mb=256)
    assert not result.passed, (exc, tests)
    assert result.status == "failed", result.detail


def test_the_issue_repro_names_the_swallowed_exception() -> None:
    result = run_tests("def f(x):\n    raise StopIteration\n",
                       "assert all(map(lambda x: f(x) == x*x, [1, 2, 3]))", 5, 256)
    assert (result.passed, result.status) == (False, "failed")
    assert "StopIteration" in result.detail


def test_exceptions_the_tests_catch_themselves_still_count_as_expected() -> None:
    program = ("def f(x):\n    if x < 0:\n        raise ValueError('neg')\n"
               "    if x == 0:\n        raise StopIteration\n    return x\n")
    tests = ("try:\n    f(-1)\n    assert False\nexcept ValueError:\n    pass\n"
             "try:\n    f(0)\n    assert False\nexcept (KeyError, StopIteration) as e:\n"
             "    assert type(e) is StopIteration\n"
             "try:\n    f(-1)\nexcept Exception:\n    pass\nassert f(2) == 2\n")
    result = run_tests(program, tests, timeout_s=5, memory_mb=256)
    assert result.passed, result.detail


def test_a_bare_except_in_the_tests_cannot_swallow_a_failed_assert() -> None:
    tests = "try:\n    assert f(1) == 2\nexcept:\n    pass\nassert f(2) == 2\n"
    result = run_tests("def f(x):\n    return x\n", tests, timeout_s=5, memory_mb=256)
    assert (result.passed, result.status) == (False, "failed"), result.detail


@pytest.mark.parametrize("tests", [
    "assert 7 in f(10)",  # the issue's repro
    "assert f(10) == 7",
    "assert not (f(10) != 7)",
    "assert f(10) < 8 and f(10) >= 7",
    "assert f(10)",
    "assert hash(f(10)) == hash(7)",
    "assert ([0] * 8)[f(10)] == 0",
    "assert int(f(10)) == 7 or float(f(10)) == 7.0",
    "assert round(f(10)) == 7",
    "assert abs(f(10)) == 7",
    "assert f(10) + 0 == 7 or 0 + f(10) == 7",
    "assert f(10) % 2 == 7",
    "assert str(f(10)) == '7' or f'{f(10)}' == '7'",
    "assert isinstance(f(10), int) or type(f(10)) is int or f(10).__class__ is int",
    "assert {f(10): 1}.get(7) == 1",
    "assert 7 in {f(10)}",
    "assert sorted([f(10), 7])[0] == 7",
    "assert max(f(10), 7) == 7 and min(f(10), 7) == 7",
    "assert f(10) in [7]",
    "assert [7] == [f(10)]",
])
def test_a_candidate_object_cannot_answer_a_predicate(tests: str) -> None:
    result = run_tests(EVERYTHING, tests, timeout_s=5, memory_mb=256)
    assert not result.passed, tests
    assert result.status == "failed", result.detail


def test_membership_is_judged_on_the_iterated_data() -> None:
    program = ("class Box:\n    def __init__(self, xs):\n        self.xs = xs\n"
               "    def __iter__(self):\n        return iter(self.xs)\n"
               "    def __len__(self):\n        return len(self.xs)\n"
               "    def __contains__(self, x):\n        return True\n"
               "def primes(n):\n    return Box([p for p in range(2, n) "
               "if all(p % d for d in range(2, p))])\n")
    good = "assert 7 in primes(10)\nassert 4 not in primes(10)\nassert len(primes(10)) == 4\n"
    assert run_tests(program, good, timeout_s=5, memory_mb=256).passed
    lying = "assert 8 in primes(10)\n"
    result = run_tests(program, lying, timeout_s=5, memory_mb=256)
    assert (result.passed, result.status) == (False, "failed"), result.detail


def test_absent_attributes_and_missing_len_are_answers_not_errors() -> None:
    program = ("class P:\n    x = 1\n    def __iter__(self):\n        return iter([1, 2])\n"
               "def make():\n    return P()\n")
    tests = ("p = make()\nassert hasattr(p, 'x') and not hasattr(p, 'y')\n"
             "assert getattr(p, 'y', 5) == 5\nassert list(p) == [1, 2]\n")
    result = run_tests(program, tests, timeout_s=5, memory_mb=256)
    assert result.passed, result.detail


def test_prepare_tests_marks_every_except_clause() -> None:
    prepared = prepare_tests("try:\n    f()\nexcept ValueError:\n    pass\nexcept:\n    pass\n"
                             "try:\n    f()\nexcept* KeyError:\n    pass\nassert g()\n")
    assert prepared.statements[0].count(f"{CAUGHT_NAME}()") == 2
    assert prepared.statements[1].count(f"{CAUGHT_NAME}()") == 1
    assert CAUGHT_NAME not in prepared.candidate_names
