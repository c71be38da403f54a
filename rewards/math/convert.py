"""AST -> comparable values: ``value(node)`` turns a parsed answer into a ``Num``, ``Seq``,
``SetV``, ``Rel`` or ``Mat`` (``values.py``); ``scalar(node)`` evaluates arithmetic with sympy.

Only our own AST from ``parser.py`` is evaluated: never model text, never ``sympify``/``eval``.
It does not compare values (``compare.py``) nor normalise relations (``relations.py``).
"""

from __future__ import annotations

import sympy

from rewards.math import values as V
from rewards.math.lexer import AnswerError


def scalar(node: tuple) -> V.Num:
    """Evaluate an arithmetic AST node to a ``Num`` (raises on sets, relations, ±)."""
    kind = node[0]
    if kind == "num":
        return V.number(node[1])
    if kind == "name":
        return V.Num(V.symbol(node[1]))
    if kind == "const":
        if node[1] in ("emptyset", "ldots"):
            return V.Num(sympy.Symbol(node[1]))
        return V.Num({"pi": sympy.pi, "oo": sympy.oo, "I": sympy.I}[node[1]])
    if kind == "bin":
        return V.arith(node[1], scalar(node[2]), scalar(node[3]))
    if kind == "neg":
        inner = scalar(node[1])
        return V.Num(-inner.expr, inner.approx, inner.pct)
    if kind == "group":
        return scalar(node[1])
    if kind == "pow":
        return V.power(scalar(node[1]), scalar(node[2]))
    if kind == "fact":
        return V.factorial(scalar(node[1]))
    if kind == "pct":
        inner = scalar(node[1])
        return V.Num(inner.expr, inner.approx, True)
    if kind == "sqrt":
        return V.root(scalar(node[1]), scalar(node[2]) if node[2] is not None else None)
    if kind == "binom":
        return V.binomial(scalar(node[1]), scalar(node[2]))
    if kind == "abs":
        inner = scalar(node[1])
        return V.Num(sympy.Abs(inner.expr), inner.approx)
    if kind == "func":
        _, name, arg, power, base = node
        return V.function(name, scalar(arg), scalar(power) if power is not None else None,
                          scalar(base) if base is not None else None)
    if kind == "matrix":  # only reached inside arithmetic such as A + B or A B
        return V.Num(sympy.ImmutableMatrix([[scalar(c).expr for c in row] for row in node[1]]))
    if kind == "based":
        digits, base = node[1], node[2]
        if base.isdigit() and 2 <= int(base) <= 36 and "." not in digits:
            try:
                return V.Num(sympy.Integer(int(digits, int(base))))
            except ValueError:
                pass
        return V.Num(sympy.Symbol(f"{digits}_{base}"))
    raise AnswerError(f"not a scalar: {kind}")


def expand_pm(node: tuple, budget: int = 3) -> list[tuple]:
    """Replace each ``a ± b`` (at most 3) by its two readings; returns the list of variants."""
    if budget <= 0 or not isinstance(node, tuple):
        return [node]
    if node[0] == "pm":
        left = expand_pm(node[1], budget - 1)
        right = expand_pm(node[2], budget - 1)
        return [("bin", op, a, b) for op in "+-" for a in left for b in right]
    if node[0] == "upm":
        inner = expand_pm(node[1], budget - 1)
        return [x for a in inner for x in (a, ("neg", a))]
    if node[0] in ("bin", "group", "neg", "pow", "sqrt"):
        children = [expand_pm(c, budget) if isinstance(c, tuple) else [c] for c in node[1:]]
        if all(len(c) == 1 for c in children):
            return [node]
        out = [()]
        for options in children:
            out = [prefix + (o,) for prefix in out for o in options]
        return [(node[0],) + combo for combo in out]
    return [node]


def value(node: tuple):
    """Turn an AST into a comparable value (Num, Seq, SetV, Rel, Mat)."""
    kind = node[0]
    if kind in ("list", "set"):
        items = []
        for item in node[1]:
            variants = expand_pm(item)
            items.extend(value(v) for v in variants)
        return V.Seq(kind, items)
    if kind == "tuple":
        _, items, opener, closer = node
        if len(items) == 2 and (opener != closer.translate(str.maketrans(")]", "([")) or
                                _has_infinity(items)):
            return V.SetV(_interval(items, opener, closer))
        return V.Seq("tuple", [value(i) for i in items], opener, closer)
    if kind in ("cup", "cap", "setminus"):
        left, right = as_set(value(node[1])), as_set(value(node[2]))
        op = {"cup": sympy.Union, "cap": sympy.Intersection, "setminus": sympy.Complement}
        return V.SetV(op[kind](left, right))
    if kind == "rel":
        return V.Rel(node[1], node[2])
    if kind == "ratio":
        return V.Seq("tuple", [value(i) for i in node[1]], ":", ":")
    if kind == "matrix":
        return V.Mat([[value(c) for c in row] for row in node[1]])
    if kind == "group" and node[1][0] not in ("bin", "num", "name", "neg", "pow"):
        return value(node[1])
    variants = expand_pm(node)
    if len(variants) > 1:
        return V.Seq("set", [value(v) for v in variants])
    return scalar(node)


def _has_infinity(items: list[tuple]) -> bool:
    return any(i == ("const", "oo") or i == ("neg", ("const", "oo")) for i in items)


def _interval(items: list[tuple], opener: str, closer: str):
    lo, hi = scalar(items[0]).expr, scalar(items[1]).expr
    return sympy.Interval(lo, hi, left_open=opener == "(", right_open=closer == ")")


def as_set(v):
    """A sympy set from an interval-like tuple, a ``\\{..\\}`` set or a set value."""
    if isinstance(v, V.SetV):
        return v.value
    if isinstance(v, V.Seq) and v.kind == "tuple" and len(v.items) == 2:
        lo, hi = v.items
        if isinstance(lo, V.Num) and isinstance(hi, V.Num):
            return sympy.Interval(lo.expr, hi.expr, left_open=v.opener == "(",
                                  right_open=v.closer == ")")
    if isinstance(v, V.Seq) and v.kind in ("set", "list"):
        if all(isinstance(i, V.Num) for i in v.items):
            return sympy.FiniteSet(*[i.expr for i in v.items])
    if isinstance(v, V.Num) and v.expr.is_number:
        return sympy.FiniteSet(v.expr)
    raise AnswerError("not a set")
