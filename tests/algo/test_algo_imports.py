"""Every ``rlsys.algo`` module imports only torch, the registry and its sibling checks
(``rlsys.registry`` itself imports only the standard library)."""

from __future__ import annotations

import ast
from pathlib import Path

import rlsys.algo

ALLOWED = {"__future__", "collections.abc", "torch", "torch.nn.functional", "rlsys.registry",
           "rlsys.algo._checks"}


def test_modules_import_only_torch_and_registry():
    algo_dir = Path(rlsys.algo.__file__).parent
    for path in sorted(algo_dir.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                names = {node.module or ""}
            else:
                continue
            if path.name == "__init__.py":
                names = {n for n in names if not n.startswith("rlsys.algo.")}
            assert names <= ALLOWED, f"{path.name} imports {names - ALLOWED}"

