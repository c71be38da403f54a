"""Mathematical equivalence of two extracted answers (runs inside the worker processes).

``equivalent(pred, gold)`` parses both answers with our own parser (never ``sympify``/``eval``),
converts them to values (``values.py``) and compares by kind: numbers exactly when both are
exact, a decimal against an exact value when it is that value rounded to nearest or truncated
at its shown number of decimals (only when the exact value is not itself a terminating
decimal, and only with 3 or more significant digits: 2.7 is not 2.75, 0.333 is 1/3, 0.33
is not, 1.41 is sqrt 2, 1.42 is not), percentages as
either the number or the number/100 (both conventions occur in the labelled sets),
expressions by exact or high-precision random-point identity (unknowns sampled as positive
reals, the usual domain of competition answers, so sqrt(x^2) = x), equations up to a constant
factor, inequalities up to a positive factor, tuples in order, sets and top-level lists in any
order, intervals and unions as sets, matrices element-wise. ``\\pm`` makes a set of two.
It has no time limit of its own: callers run it in a killable process (``pool.py``).
"""

from __future__ import annotations

import random
import re

import sympy

from rewards.math import values as V
from rewards.math.convert import as_set, value
from rewards.math.lexer import AnswerError
from rewards.math.parser import parse
from rewards.math.relations import rel_vs_other, same_rel

_TEXT_RE = re.compile(r"[A-Za-z][A-Za-z\s']*")
_SAMPLE_POINTS = 3
MIN_SIGNIFICANT_DIGITS = 3  # 0.333 and 3.14 approximate 1/3 and pi; 0.3 and 0.33 do not
_DIGITS = 60


def equivalent(pred: str, gold: str) -> bool:
    """True when the two cleaned answers denote the same mathematical object."""
    if _squash(pred) == _squash(gold):
        return True
    if _is_text(pred) or _is_text(gold):
        return _is_text(pred) and _is_text(gold) and _squash(pred).lower() == \
            _squash(gold).lower()
    try:
        pred_ast, gold_ast = parse(pred), parse(gold)
    except AnswerError:
        return False
    try:
        return same_node(pred_ast, gold_ast)
    except (AnswerError, ValueError, TypeError, ZeroDivisionError, AttributeError,
            RecursionError, OverflowError, NotImplementedError):
        return False


def _squash(text: str) -> str:
    return re.sub(r"\s+", "", text)


def _is_text(text: str) -> bool:
    """Prose such as ``odd`` or ``Evelyn``: letters only with a word of two letters or more."""
    return bool(_TEXT_RE.fullmatch(text.strip())) and re.search(r"[A-Za-z]{2}", text) is not None


# -- comparison -----------------------------------------------------------------------------
def same_node(a: tuple, b: tuple) -> bool:
    """Compare two ASTs (pred, gold) as values."""
    return same(value(a), value(b))


def same(a, b) -> bool:
    """Equivalence of two values of any kind."""
    a, b = _matrix_value(a), _matrix_value(b)
    if isinstance(a, V.Rel) and isinstance(b, V.Rel):
        return same_rel(a, b, same=same)
    if isinstance(a, V.Rel):
        return rel_vs_other(a, b, same=same)
    if isinstance(b, V.Rel):
        return rel_vs_other(b, a, same=same)
    if isinstance(a, V.Num) and isinstance(b, V.Num):
        return same_num(a, b)
    if isinstance(a, V.Seq) and isinstance(b, V.Seq):
        return _same_seq(a, b)
    if isinstance(a, V.Mat) or isinstance(b, V.Mat):
        return _same_matrix(a, b)
    if isinstance(a, V.SetV) or isinstance(b, V.SetV):
        try:
            return _same_set(as_set(a), as_set(b))
        except AnswerError:
            return False
    return False


def _matrix_value(v):
    """A scalar holding a sympy matrix (the result of matrix arithmetic) becomes a ``Mat``."""
    if isinstance(v, V.Num) and isinstance(v.expr, sympy.MatrixBase):
        m = v.expr
        return V.Mat([[V.Num(m[i, j], v.approx) for j in range(m.cols)] for i in range(m.rows)])
    return v


def _same_seq(a: V.Seq, b: V.Seq) -> bool:
    if a.kind == "tuple" or b.kind == "tuple":
        if len(a.items) != len(b.items):
            return False
        if a.kind != b.kind or (a.opener, a.closer) != (b.opener, b.closer):
            return False
        return all(same(x, y) for x, y in zip(a.items, b.items, strict=True))
    # Sets and top-level lists: every element of each side has an equal one on the other side.
    return all(any(same(x, y) for y in b.items) for x in a.items) and \
        all(any(same(x, y) for x in a.items) for y in b.items)


def _same_matrix(a, b) -> bool:
    rows_a = a.rows if isinstance(a, V.Mat) else None
    rows_b = b.rows if isinstance(b, V.Mat) else None
    if rows_a is not None and rows_b is not None:
        return len(rows_a) == len(rows_b) and all(
            len(r) == len(s) and all(same(x, y) for x, y in zip(r, s, strict=True))
            for r, s in zip(rows_a, rows_b, strict=True))
    mat, other = (a, b) if rows_a is not None else (b, a)
    flat = [c for row in mat.rows for c in row]
    if isinstance(other, V.Seq) and (len(mat.rows) == 1 or len(mat.rows[0]) == 1):
        return len(flat) == len(other.items) and all(
            same(x, y) for x, y in zip(flat, other.items, strict=True))
    return False


def _same_set(x, y) -> bool:
    if x == y:
        return True
    diff = sympy.Union(sympy.Complement(x, y), sympy.Complement(y, x))
    return diff == sympy.EmptySet or diff.is_empty is True


def same_num(a: V.Num, b: V.Num) -> bool:
    """Scalars: exact when both are exact; percentages may be read as x or x/100."""
    options_a = [a.expr] + ([a.expr / 100] if a.pct and not b.pct else [])
    options_b = [b.expr] + ([b.expr / 100] if b.pct and not a.pct else [])
    return any(_same_expr(x, a.approx, y, b.approx) for x in options_a for y in options_b)


def _same_expr(x, approx_x, y, approx_y) -> bool:
    if x == y:
        return True
    if isinstance(x, sympy.Rational) and isinstance(y, sympy.Rational):
        return _within_shown_precision(x, approx_x, y) or \
            _within_shown_precision(y, approx_y, x)
    symbols = (x.free_symbols | y.free_symbols) if hasattr(x, "free_symbols") else set()
    tol = _tolerance(approx_x, approx_y)
    if symbols:
        return _identity_by_sampling(x, y, sorted(symbols, key=str), tol)
    return _close(x, y, tol, approx_x, approx_y)


def _terminating(q: sympy.Rational) -> bool:
    den = int(q.q)
    for p in (2, 5):
        while den % p == 0:
            den //= p
    return den == 1


def _within_shown_precision(decimal, approx, exact) -> bool:
    """A decimal literal matches a non-terminating exact value it rounds or truncates to."""
    if approx is None or _terminating(exact) or approx[2] < MIN_SIGNIFICANT_DIGITS:
        return False
    if approx[0] == "rel":  # e.g. 2.314814814815 \times 10^{-3}
        return abs(decimal - exact) <= sympy.Rational(10) ** (1 - approx[2]) * abs(exact)
    return _rounds_to(decimal, exact, approx[1])


def _rounds_to(decimal, exact, digits: int) -> bool:
    """``decimal`` is ``exact`` rounded to nearest, or truncated, at ``digits`` decimals."""
    scale = sympy.Integer(10) ** digits if digits >= 0 else sympy.Rational(1, 10 ** -digits)
    shown = decimal * scale
    if not isinstance(shown, sympy.Integer):
        return False
    target = sympy.N(exact * scale, _DIGITS + max(digits, 0))
    if not target.is_real:
        return False
    sign = 1 if target >= 0 else -1
    truncated = sign * sympy.floor(abs(target))
    nearest = sign * sympy.floor(abs(target) + sympy.Rational(1, 2))
    return shown in (truncated, nearest)


def _tolerance(approx_x, approx_y) -> sympy.Expr:
    sig = [a[2] for a in (approx_x, approx_y) if a is not None]
    if not sig:
        return sympy.Float(10) ** -40
    return sympy.Float(5) * sympy.Float(10) ** (-min(sig))


def _close(x, y, tol, approx_x, approx_y) -> bool:
    nx, ny = sympy.N(x, _DIGITS), sympy.N(y, _DIGITS)
    if not (nx.is_number and ny.is_number) or nx.has(sympy.nan, sympy.zoo) or \
            ny.has(sympy.nan, sympy.zoo):
        return False
    if nx.has(sympy.oo, -sympy.oo) or ny.has(sympy.oo, -sympy.oo):
        return nx == ny
    for decimal, approx, exact in ((x, approx_x, ny), (y, approx_y, nx)):
        if approx is not None and approx[0] == "abs" and isinstance(decimal, sympy.Rational):
            return approx[2] >= MIN_SIGNIFICANT_DIGITS and _rounds_to(decimal, exact, approx[1])
    scale = max(abs(nx), abs(ny), sympy.Float(10) ** -300)
    return bool(abs(nx - ny) <= tol * scale)


def _identity_by_sampling(x, y, symbols, tol) -> bool:
    """Equal at random real points (high precision): a probabilistic identity test."""
    rng = random.Random(1234)
    agreed = 0
    for _ in range(_SAMPLE_POINTS * 3):
        point = {s: sympy.Float(rng.uniform(0.3, 2.7), _DIGITS) for s in symbols}
        vx, vy = sympy.N(x.subs(point), _DIGITS), sympy.N(y.subs(point), _DIGITS)
        if not (vx.is_number and vy.is_number) or vx.has(sympy.nan, sympy.zoo) or \
                vy.has(sympy.nan, sympy.zoo):
            continue
        scale = max(abs(vx), abs(vy), sympy.Float(10) ** -30)
        if abs(vx - vy) > max(tol, sympy.Float(10) ** -30) * scale:
            return False
        agreed += 1
        if agreed >= _SAMPLE_POINTS:
            return True
    return sympy.simplify(x - y) == 0
