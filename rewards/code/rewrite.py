"""Host-side preparation of assert-style tests: split, rewrite ``assert``, find free names.

The tests are trusted text (they come with the data set), parsed here with ``ast`` and never
executed on the host. Each ``assert`` becomes an explicit ``__rlsys_check__(index, condition)``
call, so ``python -O`` cannot strip it and every executed assertion is counted by the judge.
Each ``except`` clause starts with ``__rlsys_caught__()``, which tells the judge that the tests
themselves handled the exception in flight (a candidate exception handled anywhere else, e.g.
a StopIteration ending a ``map``, fails the statement; see ``rewards.code``).
Free names (used but never bound by the tests, not builtins) are split into standard-library
modules, which the judge imports itself, and names the candidate must provide.
This module does not run anything and does not talk to the sandbox.
"""

from __future__ import annotations

import ast
import builtins
import sys
from dataclasses import dataclass

CHECK_NAME = "__rlsys_check__"
CAUGHT_NAME = "__rlsys_caught__"


@dataclass(frozen=True)
class PreparedTests:
    """Tests ready for the judge: one source string per top-level statement."""

    statements: list[str]
    n_asserts: int
    stdlib: list[str]
    candidate_names: list[str]


class _AssertRewriter(ast.NodeTransformer):
    def __init__(self) -> None:
        self.count = 0

    def visit_Assert(self, node: ast.Assert) -> ast.AST:
        self.count += 1
        call = ast.Call(ast.Name(CHECK_NAME, ast.Load()),
                        [ast.Constant(self.count), self.visit(node.test)], [])
        return ast.copy_location(ast.Expr(call), node)

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> ast.AST:
        self.generic_visit(node)
        mark = ast.Expr(ast.Call(ast.Name(CAUGHT_NAME, ast.Load()), [], []))
        node.body.insert(0, ast.copy_location(mark, node))
        return node


def _free_names(tree: ast.Module) -> tuple[set[str], set[str]]:
    """(free names, free names only ever used as ``name.attr``)."""
    loaded: set[str] = set()
    bound: set[str] = set()
    attr_only: set[str] = set()
    not_attr: set[str] = set()
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            if isinstance(node.ctx, ast.Load):
                loaded.add(node.id)
                is_attr = isinstance(parents.get(node), ast.Attribute)
                (attr_only if is_attr else not_attr).add(node.id)
            else:
                bound.add(node.id)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            bound.add(node.name)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, ast.alias):
            bound.add(node.asname or node.name.split(".")[0])
        elif isinstance(node, ast.ExceptHandler) and node.name:
            bound.add(node.name)
    free = loaded - bound - set(dir(builtins))
    return free, attr_only - not_attr


def prepare_tests(tests: str) -> PreparedTests:
    """Parse and rewrite ``tests``; ValueError (naming ``tests``) if invalid or assert-free."""
    try:
        tree = ast.parse(tests)
    except SyntaxError as exc:
        raise ValueError(f"tests: not valid Python: {exc.msg} (line {exc.lineno})") from None
    rewriter = _AssertRewriter()
    tree = ast.fix_missing_locations(rewriter.visit(tree))
    if rewriter.count == 0:
        raise ValueError("tests: contain no assert statement, so nothing could be checked")
    free, attr_only = _free_names(tree)
    free -= {CHECK_NAME, CAUGHT_NAME}
    stdlib = sorted(n for n in free if n in sys.stdlib_module_names and n in attr_only)
    return PreparedTests(statements=[ast.unparse(stmt) for stmt in tree.body],
                         n_asserts=rewriter.count, stdlib=stdlib,
                         candidate_names=sorted(free - set(stdlib)))
