"""Build sympy values from the parser's AST, refusing huge numbers before computing them.

Only whitelisted nodes become sympy objects (numbers, one-letter or Greek symbols, the listed
functions); decimals are kept exact (``Rational``) with a note of their shown precision, so
that comparisons stay exact when both sides are exact. Powers, factorials and binomials are
size-checked from their already-evaluated arguments (bit-length estimates) before sympy
computes them. This module does not decide equivalence (``compare.py`` does).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import sympy

from rewards.math.lexer import AnswerError

MAX_BITS = 120_000          # largest exact integer/rational we agree to build (~36k digits)
MAX_FACTORIAL = 6_000
MAX_SYMBOLIC_POWER = 2_000
MAX_ROOT = 1_000
MAX_EXP10 = 400


@dataclass
class Num:
    """A scalar: an exact sympy expression, its shown precision and whether it was a percent.

    ``approx`` is None for exact input, ``("abs", d, s)`` for a lone decimal literal with ``d``
    fractional and ``s`` significant digits, ``("rel", 0, s)`` for an expression holding
    decimals (``s``: the fewest significant digits of any of them).
    """

    expr: Any
    approx: tuple[str, int, int] | None = None
    pct: bool = False


@dataclass
class Seq:
    """An ordered tuple (``kind="tuple"``) or an order-free list/set (``"list"``/``"set"``)."""

    kind: str
    items: list = field(default_factory=list)
    opener: str = "("
    closer: str = ")"


@dataclass
class SetV:
    """A sympy set (intervals and their unions)."""

    value: Any


@dataclass
class Rel:
    """A relation: ``ops[i]`` sits between ``parts[i]`` and ``parts[i+1]``; parts are AST."""

    ops: list[str]
    parts: list


@dataclass
class Mat:
    """A matrix as rows of values."""

    rows: list[list]


def _bits(x: Any) -> int:
    if isinstance(x, sympy.Rational):
        return int(x.p).bit_length() + int(x.q).bit_length()
    return 0


def _log2(x: Any) -> float:
    """log2 of |numerator| + log2 of the denominator: the bits per unit of exponent."""
    def lg(n: int) -> float:
        return math.log2(n) if n < 2**1000 else float(n.bit_length())
    return lg(abs(int(x.p))) + lg(int(x.q))


def _check_size(x: Any) -> Any:
    if isinstance(x, sympy.Rational) and _bits(x) > MAX_BITS:
        raise AnswerError(f"number larger than {MAX_BITS} bits")
    return x


def number(text: str) -> Num:
    """A numeric literal, exact; decimals remember how many digits they showed."""
    mantissa, _, exponent = text.lower().partition("e")
    shift = int(exponent) if exponent else 0
    if abs(shift) > MAX_EXP10:
        raise AnswerError(f"exponent beyond 10^{MAX_EXP10}")
    exact = Fraction(mantissa)  # the lexer matched digits only; no string is sympified
    value = sympy.Rational(exact.numerator, exact.denominator) * sympy.Integer(10) ** shift
    if "." not in mantissa and shift >= 0:
        return Num(value)
    frac_digits = len(mantissa.partition(".")[2]) - shift
    sig_digits = max(1, len(mantissa.replace(".", "").lstrip("0")))
    return Num(value, ("abs", frac_digits, sig_digits))


def _merge_approx(*nums: Num) -> tuple[str, int, int] | None:
    sig = [n.approx[2] for n in nums if n.approx is not None]
    return ("rel", 0, min(sig)) if sig else None


def symbol(name: str) -> Any:
    """One-letter (or Greek / subscripted) symbol; ``i`` is the imaginary unit, ``e`` Euler."""
    if name == "i":
        return sympy.I
    if name == "e":
        return sympy.E
    if name == "pi":
        return sympy.pi
    return sympy.Symbol(name)


def power(base: Num, exp: Num) -> Num:
    """``base ** exp`` after bounding the size of the result."""
    b, e = base.expr, exp.expr
    if isinstance(e, sympy.Rational) and not e.is_integer:
        if abs(e.p) > MAX_SYMBOLIC_POWER or e.q > MAX_ROOT:
            raise AnswerError("power too large")
    if isinstance(e, sympy.Rational):
        if isinstance(b, sympy.Rational) and b not in (0, 1, -1):
            if _log2(b) * abs(int(e.p)) > MAX_BITS:
                raise AnswerError("power too large")
        elif abs(int(e.p)) > MAX_SYMBOLIC_POWER:
            raise AnswerError("power too large")
    elif e.is_number and isinstance(b, sympy.Rational) and b not in (0, 1, -1):
        magnitude = sympy.N(sympy.Abs(e), 15)
        if not magnitude.is_finite or magnitude * _log2(b) > MAX_BITS:
            raise AnswerError("power too large")
    return Num(_check_size(b ** e), _merge_approx(base, exp))


def factorial(arg: Num) -> Num:
    """``n!`` for a bounded non-negative integer n, or unevaluated for a symbol."""
    n = arg.expr
    if isinstance(n, sympy.Integer):
        if n < 0 or n > MAX_FACTORIAL:
            raise AnswerError(f"factorial argument outside 0..{MAX_FACTORIAL}")
        return Num(sympy.factorial(n))
    if n.is_number:
        raise AnswerError("factorial of a non-integer")
    return Num(sympy.factorial(n))


def binomial(top: Num, bottom: Num) -> Num:
    """``C(n, k)`` after bounding its bit length by ``k * log2(n)``."""
    n, k = top.expr, bottom.expr
    if isinstance(n, sympy.Integer) and isinstance(k, sympy.Integer):
        kk = min(int(k), int(n - k)) if n >= k >= 0 else 0
        if kk * max(1.0, math.log2(max(int(abs(n)), 2))) > MAX_BITS:
            raise AnswerError("binomial too large")
    return Num(sympy.binomial(n, k))


def root(arg: Num, index: Num | None) -> Num:
    """Square root, or the ``index``-th root for a small positive integer index."""
    if index is None:
        return Num(sympy.sqrt(arg.expr), _merge_approx(arg))
    n = index.expr
    if not isinstance(n, sympy.Integer) or not 1 <= n <= MAX_ROOT:
        raise AnswerError("root index must be an integer in 1..1000")
    return Num(sympy.root(arg.expr, n), _merge_approx(arg))


def arith(op: str, a: Num, b: Num) -> Num:
    """``a op b`` for op in + - * /."""
    x, y = a.expr, b.expr
    if op == "+":
        value = x + y
    elif op == "-":
        value = x - y
    elif op == "*":
        value = x * y
    else:
        if y == 0:
            raise AnswerError("division by zero")
        value = x / y
    pct = a.pct if op in "*/" and not b.pct else False
    return Num(_check_size(value), _merge_approx(a, b), pct)


FUNCS = {
    "sin": sympy.sin, "cos": sympy.cos, "tan": sympy.tan, "sec": sympy.sec, "csc": sympy.csc,
    "cot": sympy.cot, "asin": sympy.asin, "acos": sympy.acos, "atan": sympy.atan,
    "sinh": sympy.sinh, "cosh": sympy.cosh, "tanh": sympy.tanh, "ln": sympy.log,
    "exp": sympy.exp,
}
INVERSE = {"sin": "asin", "cos": "acos", "tan": "atan"}


def function(name: str, arg: Num, power_: Num | None, base: Num | None) -> Num:
    """Apply a whitelisted function; ``\\sin^2 x`` squares, ``\\sin^{-1}`` inverts."""
    x = arg.expr
    if power_ is not None and power_.expr == -1 and name in INVERSE:
        name, power_ = INVERSE[name], None
    if name == "exp" and x.is_number and sympy.N(sympy.re(x), 15) > 10**6:
        raise AnswerError("exponential too large")
    if name in ("log", "lg"):
        if base is not None:
            value = sympy.log(x, base.expr)
        else:
            value = sympy.log(x, 10) if name == "lg" else sympy.log(x)
    else:
        value = FUNCS[name](x)
    result = Num(value, _merge_approx(arg))
    return power(result, power_) if power_ is not None else result
