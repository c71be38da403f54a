"""Equations and inequalities: ``x=5`` vs ``5``, ``y=2x+1`` vs ``2x-y+1=0``, ``x>3`` vs ``3<x``.

Rules: an equation whose left side is only names (``x``, ``f(x)``, ``a_3``, ``(p,q)``,
``|AB|``, ``A:B``) is an assignment and compares by its right side; a chain ``x = a = b``
keeps its first and last parts; ``x \\in S`` is ``S``; two equations are equal when
``(l1 - r1) / (l2 - r2)`` is a non-zero constant; two inequalities when their normalised
differences (``big - small``) have the same strictness and a positive constant ratio;
``a < x < b`` with a named middle is the interval ``(a, b)``.
Only called from ``compare.py`` (which passes its ``same``); works on the values of
``convert.py``.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import sympy

from rewards.math import values as V
from rewards.math.convert import scalar, value
from rewards.math.lexer import AnswerError

_EQ = {"=", "approx", "equiv", "sim"}
_LESS = {"<": True, "\\leq": False}
_MORE = {">": True, "\\geq": False}


def name_like(node: tuple) -> bool:
    """True for ASTs made of names only (no numbers, no + or -): x, f(x), a_3, (p,q), A:B."""
    kind = node[0]
    if kind == "name":
        return True
    if kind in ("group", "abs"):
        return name_like(node[1])
    if kind == "bin":
        return node[1] in "*/" and name_like(node[2]) and name_like(node[3])
    if kind == "ratio":
        return all(name_like(p) for p in node[1])
    if kind == "tuple":
        return all(name_like(p) for p in node[1])
    return False


def normalize(rel: V.Rel):
    """Simplify chains, membership and double inequalities; may return a non-relation."""
    ops, parts = rel.ops, rel.parts
    if ops[-1] == "in":
        return value(parts[-1])
    if len(ops) >= 2 and all(op in _EQ for op in ops):
        return V.Rel(["="], [parts[0], parts[-1]]) if name_like(parts[0]) else value(parts[-1])
    if len(ops) == 2 and name_like(parts[1]):
        kinds = {op in _LESS for op in ops}
        if len(kinds) == 1 and all(op in _LESS or op in _MORE for op in ops):
            lo, hi = (parts[0], parts[2]) if ops[0] in _LESS else (parts[2], parts[0])
            lo_open = (_LESS | _MORE)[ops[0] if ops[0] in _LESS else ops[1]]
            hi_open = (_LESS | _MORE)[ops[1] if ops[0] in _LESS else ops[0]]
            return V.SetV(sympy.Interval(_scalar(lo), _scalar(hi), lo_open, hi_open))
    if ops == ["approx"]:
        return V.Rel(["="], parts)
    return rel


def _scalar(node: tuple):
    return scalar(node).expr


def rel_vs_other(rel: V.Rel, other, *, same: Callable[[object, object], bool]) -> bool:
    """A relation against a non-relation: assignments compare by their right side.

    ``same`` is the general value comparison (``compare.same``), passed in so that this module
    does not import ``compare`` back."""
    norm = normalize(rel)
    if not isinstance(norm, V.Rel):
        return same(norm, other)
    if len(norm.ops) == 1 and norm.ops[0] in _EQ:
        rhs = value(norm.parts[1])
        # "x = 5" is an assignment; "1/2 + 1/3 = 5/6" a computation ending in its result.
        if name_like(norm.parts[0]) or (isinstance(rhs, V.Num) and not rhs.expr.free_symbols
                                        and not _scalar(norm.parts[0]).free_symbols):
            return same(rhs, other)
        return False
    interval = _as_interval(norm)
    if interval is not None and isinstance(other, V.SetV | V.Seq):
        return same(interval, other)
    return False


def _as_interval(rel: V.Rel):
    """``x > 3`` -> (3, oo) when one side is a bare name and the other has no symbols."""
    if len(rel.ops) != 1 or rel.ops[0] not in (_LESS | _MORE):
        return None
    lhs, rhs = rel.parts
    op = rel.ops[0]
    if rhs[0] == "name" and lhs[0] != "name":
        lhs, rhs = rhs, lhs
        op = {"<": ">", ">": "<", "\\leq": "\\geq", "\\geq": "\\leq"}[op]
    if lhs[0] != "name":
        return None
    bound = _scalar(rhs)
    if bound.free_symbols:
        return None
    if op in _LESS:
        return V.SetV(sympy.Interval(-sympy.oo, bound, True, _LESS[op]))
    return V.SetV(sympy.Interval(bound, sympy.oo, _MORE[op], True))


def same_rel(a: V.Rel, b: V.Rel, *, same: Callable[[object, object], bool]) -> bool:
    """Two relations (pred, gold); ``same`` compares their parts (``compare.same``)."""
    na, nb = normalize(a), normalize(b)
    if not isinstance(na, V.Rel) or not isinstance(nb, V.Rel):
        if isinstance(na, V.Rel):
            return rel_vs_other(na, nb, same=same)
        if isinstance(nb, V.Rel):
            return rel_vs_other(nb, na, same=same)
        return same(na, nb)
    if len(na.ops) == 1 and len(nb.ops) == 1:
        op_a, op_b = na.ops[0], nb.ops[0]
        if op_a in _EQ and op_b in _EQ:
            if name_like(na.parts[0]) and na.parts[0] == nb.parts[0]:
                return same(value(na.parts[1]), value(nb.parts[1]))
            return _constant_ratio(_difference(na), _difference(nb), positive=False)
        if op_a == op_b == "\\neq":
            return _constant_ratio(_difference(na), _difference(nb), positive=False)
        sa, sb = _oriented(na), _oriented(nb)
        if sa is not None and sb is not None and sa[1] == sb[1]:
            return _constant_ratio(sa[0], sb[0], positive=True)
        return False
    if na.ops != nb.ops:
        return False
    return all(same(value(x), value(y)) for x, y in zip(na.parts, nb.parts, strict=True))


def _difference(rel: V.Rel):
    return _scalar(rel.parts[0]) - _scalar(rel.parts[1])


def _oriented(rel: V.Rel):
    """(big - small, strict) for a single inequality, else None."""
    op = rel.ops[0]
    lhs, rhs = _scalar(rel.parts[0]), _scalar(rel.parts[1])
    if op in _LESS:
        return rhs - lhs, _LESS[op]
    if op in _MORE:
        return lhs - rhs, _MORE[op]
    return None


def _constant_ratio(da, db, positive: bool) -> bool:
    """``da / db`` is the same non-zero constant (positive if asked) at random points."""
    symbols = sorted(da.free_symbols | db.free_symbols, key=str)
    if not symbols:
        raise AnswerError("relation without unknowns")
    rng = random.Random(4321)
    ratios = []
    for _ in range(8):
        point = {s: sympy.Float(rng.uniform(0.3, 2.7), 40) for s in symbols}
        va, vb = sympy.N(da.subs(point), 40), sympy.N(db.subs(point), 40)
        if not (va.is_number and vb.is_number) or abs(vb) < 1e-20:
            continue
        ratios.append(va / vb)
        if len(ratios) == 3:
            break
    if len(ratios) < 3:
        return False
    first = ratios[0]
    if abs(first) < 1e-20 or (positive and not (first.is_real and first > 0)):
        return False
    return all(abs(r - first) <= 1e-20 * abs(first) for r in ratios)
