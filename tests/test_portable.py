"""Portability: tracked code, tests, scripts and configs name no absolute path of one machine.

Scans every file ``git ls-files`` lists except prose and data (``*.md``, ``*.jsonl``) for
directories of a particular machine (the top-level ``work`` and ``root`` folders,
``/home/<user>``, ``/Users/<user>``) and for the ``shared`` folder beside the checkout, which
exists only where the project was developed. Tests and benchmarks read their data from the
repository (``tests/data``).

It does not check prose (README, results tables record where a run wrote) nor untracked files.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SKIP_SUFFIXES = {".md", ".jsonl"}
# An absolute path starts after a quote, space, '=', '(' ... never inside a word, URL or
# relative path (so ``https://host/root/x`` and ``a/home/b`` are not flagged).
MACHINE_PATH = re.compile(
    r"(?<![\w./~:-])/(?:work|root)/"
    r"|(?<![\w./~:-])/(?:home|Users)/[A-Za-z_][\w.-]*"
    r"|\.\./+shared\b")
# Absolute paths that are about somewhere else than the developer's machine, with the reason.
ALLOWED = {
    ("docker/Dockerfile", "/home/" + "ray"): "the container image's own user home",
    ("tests/rewards/test_code_hostile.py", "/" + "root/"):
        "hostile programs probe it; the sandbox must not let them read or write there",
}


def machine_paths(text: str) -> list[str]:
    """Every machine-specific absolute path named in ``text``, in order."""
    return [m.group(0) for m in MACHINE_PATH.finditer(text)]


def _tracked_files() -> list[str]:
    out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True)
    return [p for p in out.stdout.decode().split("\0") if p]


@pytest.mark.parametrize("text, expected", [
    ('DATA = Path("/' + 'work/shared/bench")', ["/" + "work/"]),
    ("cd /" + "root/.cache && ls", ["/" + "root/"]),
    ("open('/home/" + "alice/data.txt')", ["/home/" + "alice"]),
    ("--data /Users/" + "bob/x", ["/Users/" + "bob"]),
    ("see ../" + "shared/seed/tutorial.txt", ["../" + "shared"]),
    ("url = 'https://example.com/" + "root/x'; rel = 'a/home/b'; p = '~/" + "work/x'", []),
    ("RUN_DIR/logs/rollout-0.log, /tmp/x, runs/{name}", []),
])
def test_pattern_flags_machine_paths_only(text, expected):
    """The scanner finds machine dirs and the sibling shared folder, not URLs or relative paths."""
    assert machine_paths(text) == expected


def test_tracked_files_name_no_machine_path():
    """No tracked code, test, script or config names a path of the machine it was written on."""
    files = _tracked_files()
    assert files, "git ls-files listed nothing"
    offenders = []
    for rel in files:
        path = ROOT / rel
        if path.suffix in SKIP_SUFFIXES or not path.is_file():
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:  # binary files (images) name no paths we could fix
            continue
        for lineno, line in enumerate(text.splitlines(), 1):
            for hit in machine_paths(line):
                if (rel, hit) not in ALLOWED:
                    offenders.append(f"{rel}:{lineno}: {hit!r} in {line.strip()[:100]!r}")
    assert not offenders, "machine-specific paths:\n" + "\n".join(offenders)


def test_labelled_math_sets_ship_with_the_repository():
    """The regression test and bench_math read their labelled sets from tests/data (tracked)."""
    files = set(_tracked_files())
    for name in ("math_equiv_cases.jsonl", "math_silver_qwen_cot100.jsonl", "README.md"):
        assert f"tests/data/{name}" in files, f"tests/data/{name} is not tracked by git"
