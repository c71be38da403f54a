"""Floor-1 hygiene: the data and modeling packages never pull in ray, deepspeed or vllm."""

from __future__ import annotations

import subprocess
import sys

MODULES = [
    "rlsys.data", "rlsys.data.sources", "rlsys.data.templates", "rlsys.data.encode",
    "rlsys.data.packing", "rlsys.data.attention", "rlsys.data.mixture", "rlsys.data.dataset",
    "rlsys.modeling", "rlsys.modeling.builders", "rlsys.modeling.resolve", "rlsys.modeling.load",
]


def test_no_heavy_imports():
    code = (
        "import importlib, sys\n"
        f"for name in {MODULES!r}: importlib.import_module(name)\n"
        "print(sorted(m for m in ('ray', 'deepspeed', 'vllm') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
