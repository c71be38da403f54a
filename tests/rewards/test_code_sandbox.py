"""The code sandbox on honest programs: verdicts, statuses, stdin cases, the pool, rlimits.

Real bubblewrap sandboxes throughout (each run starts two interpreters, ~0.1-0.3 s).
"""

from __future__ import annotations

import math

import pytest

from rewards.code import STATUSES, SandboxPool, SandboxResult, run_tests
from rewards.code import _codec as codec
from rewards.code.rewrite import CHECK_NAME, prepare_tests

ADD = "def add(a, b):\n    return a + b\n"
ADD_TESTS = "assert add(1, 2) == 3\nassert add(-1, 1) == 0\nassert add(2, 2) == 4\n"

HUMANEVAL_TESTS = '''
def check(candidate):
    assert candidate([1, 2, 3]) == (6, 6)
    assert candidate([]) == (0, 1)
    assert math.isclose(candidate([0.5, 0.5])[0], 1.0)
check(sum_product)
'''
SUM_PRODUCT = '''
def sum_product(numbers):
    s, p = 0, 1
    for n in numbers:
        s, p = s + n, p * n
    return s, p
'''


def test_canonical_program_passes() -> None:
    result = run_tests(ADD, ADD_TESTS, timeout_s=5)
    assert isinstance(result, SandboxResult)
    assert (result.passed, result.status, result.tests_run, result.tests_total) == (
        True, "passed", 3, 3)
    assert result.wall_s > 0


def test_humaneval_style_check_with_stdlib_name_in_tests() -> None:
    result = run_tests(SUM_PRODUCT, HUMANEVAL_TESTS, timeout_s=5)
    assert result.passed, result.detail
    assert result.tests_run == 3


def test_wrong_answer_fails_and_counts_the_asserts_that_held() -> None:
    program = "def add(a, b):\n    return a + b if a > 0 else 99\n"
    result = run_tests(program, ADD_TESTS, timeout_s=5)
    assert (result.passed, result.status, result.tests_run) == (False, "failed", 2)
    assert "statement 2" in result.detail


def test_rich_return_types_cross_the_boundary() -> None:
    program = '''
class Counter:
    def __init__(self, start):
        self.value = start
    def bump(self, by=1):
        self.value += by
        return self.value
def shapes():
    return {"t": (1, 2), "s": {1, 2}, "f": frozenset({3}), "b": b"xy", "c": 1 + 2j,
            "big": 2 ** 100, "nan": float("inf"), 3: [None, True]}
def gen(n):
    yield from range(n)
def boom(x):
    if x < 0:
        raise ValueError("negative")
    return x
'''
    tests = '''
c = Counter(5)
assert c.bump() == 6 and c.bump(by=4) == 10 and c.value == 10
d = shapes()
assert d == {"t": (1, 2), "s": {1, 2}, "f": frozenset({3}), "b": b"xy", "c": 1 + 2j,
             "big": 2 ** 100, "nan": float("inf"), 3: [None, True]}
assert type(d["t"]) is tuple and type(d["s"]) is set
assert list(gen(3)) == [0, 1, 2]
try:
    boom(-1)
    assert False, "should raise"
except ValueError:
    pass
assert boom(2) == 2
'''
    result = run_tests(program, tests, timeout_s=5)
    assert result.passed, result.detail
    # `assert False` never runs (boom raises first), so 5 of the 6 assert sites held.
    assert (result.tests_run, result.tests_total) == (5, 6)


@pytest.mark.parametrize(("program", "status"), [
    ("def add(a, b) return a + b\n", "error"),           # syntax error
    ("import nonexistent_module_xyz\n", "error"),         # import error at load
    ("raise RuntimeError('at import')\n", "error"),
    ("def add(a, b):\n    raise KeyError(a)\n", "failed"),  # raises when called
    ("def plus(a, b):\n    return a + b\n", "failed"),     # missing name -> NameError
    ("def add(a, b):\n    return str(a + b)\n", "failed"),  # wrong type
])
def test_broken_programs_get_the_right_status(program: str, status: str) -> None:
    result = run_tests(program, ADD_TESTS, timeout_s=5)
    assert not result.passed
    assert result.status == status, result.detail
    assert result.status in STATUSES


def test_stdin_cases_compare_stdout_on_the_host() -> None:
    program = "a, b = map(int, input().split())\nprint(a + b)   \nprint()\n"
    ok = run_tests(program, "", timeout_s=5, stdin_cases=[("1 2\n", "3"), ("5 5", "10\n\n")])
    assert (ok.passed, ok.tests_run, ok.tests_total) == (True, 2, 2)
    bad = run_tests(program, "", timeout_s=5, stdin_cases=[("1 2", "3"), ("2 2", "5")])
    assert (bad.passed, bad.status, bad.tests_run) == (False, "failed", 1)
    crash = run_tests("raise SystemExit(3)", "", timeout_s=5, stdin_cases=[("", "")])
    assert crash.status == "error"


def test_timeout_memory_and_output_statuses() -> None:
    assert run_tests("while True:\n    pass\n", ADD_TESTS, timeout_s=1.5).status == "timeout"
    assert run_tests("x = bytearray(1 << 31)\n", ADD_TESTS, timeout_s=5,
                     memory_mb=256).status == "memory"
    assert run_tests("while True:\n    print('x' * 4096)\n", "", timeout_s=5,
                     stdin_cases=[("", "x")]).status == "output"


def test_fork_count_is_capped_by_rlimit_nproc() -> None:
    # 200 live children would print 200; RLIMIT_NPROC stops the loop far earlier.
    program = '''
import os, time
n = 0
for _ in range(200):
    try:
        pid = os.fork()
    except OSError:
        break
    if pid == 0:
        time.sleep(2)
        os._exit(0)
    n += 1
print(n)
'''
    result = run_tests(program, "", timeout_s=8, stdin_cases=[("", "200")])
    assert result.status == "failed", result.detail


def test_pool_runs_many_jobs_in_order() -> None:
    programs = [ADD if i % 2 == 0 else "def add(a, b):\n    return 0\n" for i in range(6)]
    with SandboxPool(workers=2) as pool:
        results = pool.map([{"program": p, "tests": ADD_TESTS, "timeout_s": 10}
                            for p in programs])
        single = pool.submit(ADD, ADD_TESTS, timeout_s=10).result()
    assert [r.passed for r in results] == [True, False] * 3
    assert single.passed


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"program": 1, "tests": ADD_TESTS}, "program"),
    ({"program": ADD, "tests": ""}, "tests"),
    ({"program": ADD, "tests": "x = 1\n"}, "tests"),
    ({"program": ADD, "tests": ADD_TESTS, "timeout_s": 0}, "timeout_s"),
    ({"program": ADD, "tests": ADD_TESTS, "memory_mb": 1}, "memory_mb"),
    ({"program": ADD, "tests": "", "stdin_cases": [("a",)]}, "stdin_cases[0]"),
])
def test_bad_arguments_name_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises((TypeError, ValueError), match=field.replace("[", r"\[")):
        run_tests(**kwargs)


def test_prepare_tests_rewrites_asserts_and_splits_free_names() -> None:
    prepared = prepare_tests("import os\nassert f(x=1) == math.pi\nfor i in range(2):\n"
                             "    assert g(i), 'msg'\n")
    assert prepared.n_asserts == 2
    assert prepared.stdlib == ["math"]
    assert prepared.candidate_names == ["f", "g"]
    assert all("assert" not in s for s in prepared.statements)
    assert f"{CHECK_NAME}(1, f(x=1) == math.pi)" in prepared.statements[1]


def test_codec_round_trips_plain_values_and_refs_everything_else() -> None:
    refs: list[object] = []

    def to_ref(obj: object) -> int:
        refs.append(obj)
        return len(refs) - 1

    value = {"a": (1, [2.5, None]), 2: {3}, "z": frozenset(), "b": b"\x00", "c": 1j,
             "n": -(2 ** 70), "inf": -math.inf, "t": True}
    assert codec.decode(codec.encode(value, to_ref), refs.__getitem__) == value
    weird = object()
    assert codec.decode(codec.encode([weird], to_ref), refs.__getitem__) == [weird]
    nan = codec.decode(codec.encode(math.nan, to_ref), refs.__getitem__)
    assert math.isnan(nan)
    with pytest.raises(ValueError):
        codec.decode({"$": "eval", "v": "1"}, refs.__getitem__)
