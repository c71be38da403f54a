"""Equivalence classes of ``verify``, each with positive and negative cases.

These go through the real worker pool (``verify_batch``), so one call covers many pairs.
"""

import pytest

from rewards.math import clean_answer, verify, verify_batch
from rewards.math.compare import equivalent

EQUAL = [
    ("42", "42.0"), ("-5", "-5"), ("0.5", r"\frac{1}{2}"), (r"\frac{10}{9}", "10/9"),
    (r"\dfrac{1}{3}", r"\tfrac13"), (r"0.3333", r"\frac{1}{3}"),
    (r"0.8660254037844386", r"\frac{\sqrt{3}}{2}"), (r"2\sqrt{2}", r"\sqrt{8}"),
    (r"\sqrt[3]{27}", "3"), (r"\frac{\sqrt{2}}{2}", r"\sin\frac{\pi}{4}"),
    (r"\cos \frac{\pi}{3}", r"\frac12"), (r"2\pi", r"\pi \cdot 2"),
    (r"1.5\times10^{3}", "1500"), ("1.5e3", "1500"), (r"50\%", "0.5"), (r"50\%", "50"),
    (r"5 \text{ cm}", "5"), (r"\{1,2\}", r"\{2,1\}"), ("(1,2)", "(1,2)"),
    ("(0,1]", "(0, 1]"), (r"(-\infty, 0) \cup (1, \infty)", r"(1,\infty)\cup(-\infty,0)"),
    ("x=5", "5"), ("y=2x+1", "2x-y+1=0"), ("x>3", "3<x"), (r"x \geq 5", r"5 \leq x"),
    ("(x+1)^2", "x^2+2x+1"), (r"\begin{pmatrix}1&2\\3&4\end{pmatrix}",
                               r"\begin{bmatrix}1 & 2\\ 3 & 4\end{bmatrix}"),
    ("1+2i", "i(2-i)"), (r"\frac{a}{b}", "a/b"), ("2x", r"x \cdot 2"), (r"3 \times 4", "12"),
    (r"1 \pm \sqrt{19}", r"\{1-\sqrt{19}, 1+\sqrt{19}\}"), (r"\ln(e^2)", "2"),
    (r"\log_2 8", "3"), (r"\exp(0)", "1"), ("5!", "120"), (r"\binom{5}{2}", "10"),
    (r"2^{10}", "1024"), (r"\frac{1}{2004!}", r"\frac{1}{2004!}"), ("(A)", "A"),
    (r"\tan^2 y + 1", r"\sec^2 y"), (r"\sqrt{2}", "1.41"), (r"40\pi", "125.663"),
    ("-3 < a < 10", "(-3, 10)"),
]
UNEQUAL = [
    ("42", "43"), ("5.001", "5"), ("2.7", "2.75"), (r"\frac{1}{2004!}", r"\frac{1}{2006!}"),
    (r"\frac{1}{2^{99}}", r"\frac{1}{2^{98}}"), (r"\frac{2^{2005}+1}{3 \cdot 2^{2006}}",
                                                 r"\frac{1}{3 \cdot 2^{2006}}"),
    ("(0,1)", "[0,1]"), ("(0,1]", "[0,1]"), ("(1,2)", "(2,1)"), (r"\{1,2\}", r"\{1,3\}"),
    ("x=5", "x=6"), ("y=2x+1", "y=2x-1"), ("x>3", "x<3"), ("x>3", r"x \geq 3"),
    ("x^2+2x+1", "x^3+2x+1"), (r"\pm 2021", "2021"), (r"\sqrt{2}", "1.42"),
    (r"\begin{pmatrix}1&2\\3&4\end{pmatrix}", r"\begin{pmatrix}1&2\\3&5\end{pmatrix}"),
    ("i", "-i"), ("(A)", "B"), (r"\sin x", r"\cos x"), ("7 = 11a+c", "11a+c"),
    ("3x-y+13=0", "3x+4y+14=0"), ("odd", "oddd"), (r"4\sqrt{2}", "4"),
]


def test_equal_pairs():
    verdicts = verify_batch([(p, g) for p, g in EQUAL], workers=2)
    wrong = [pair for pair, v in zip(EQUAL, verdicts, strict=True) if not v]
    assert wrong == []


def test_unequal_pairs():
    verdicts = verify_batch([(p, g) for p, g in UNEQUAL], workers=2)
    wrong = [pair for pair, v in zip(UNEQUAL, verdicts, strict=True) if v]
    assert wrong == []


@pytest.mark.parametrize("pred, gold, expected", [
    ("1/2", "0.5", True), ("(1,2)", "(2,1)", False), (r"\{1,2\}", r"\{2,1\}", True),
])
def test_verify_single(pred, gold, expected):
    assert verify(pred, gold, timeout=10) is expected


def test_exact_rationals_never_compared_as_floats():
    """1/2004! and 1/2006! are both ~1e-5700: equal as floats, unequal as rationals."""
    assert equivalent(r"\frac{1}{2004!}", r"\frac{1}{2006!}") is False
    assert equivalent(r"\frac{2005 \cdot 2006}{2006!}", r"\frac{1}{2004!}") is True


def test_cache_and_batch_agree():
    pairs = [("0.5", r"\frac12")] * 5 + [("x", "y")]
    assert verify_batch(pairs) == [True] * 5 + [False]
    assert verify_batch(pairs, use_cache=False) == [True] * 5 + [False]


@pytest.mark.parametrize("decimal, exact, expected", [
    ("0.333", r"\frac13", True), ("0.33", r"\frac13", False), ("0.3", r"\frac13", False),
    ("0.334", r"\frac13", False), ("3.14", r"\pi", True), ("3.15", r"\pi", False),
    ("2.7", "2.75", False), (r"0.\overline{3}", r"\frac13", True),
    (r"0.1\overline{6}", r"\frac16", True),
    (r"2.314814814815 \times 10^{-3}", r"\frac{1}{432}", True),
])
def test_decimal_rounding_policy(decimal, exact, expected):
    """Rounded or truncated at the shown digits, 3+ significant digits, non-terminating exact."""
    decimal, exact = clean_answer(decimal), clean_answer(exact)
    assert equivalent(decimal, exact) is expected
    assert equivalent(exact, decimal) is expected
