"""Rewrite the README's recipe field table from the schema (``rlsys.config.doc.recipe_table``).

Usage: ``python scripts/recipe_table.py`` rewrites the table between the markers in README.md;
``--check`` only compares and exits 1 when the README is out of date. Run it after changing a
field of ``rlsys/config/schema.py`` (``tests/config/test_recipe_table.py`` fails until you do).
It touches nothing but README.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rlsys.config.doc import replace_table

README = Path(__file__).resolve().parents[1] / "README.md"


def main(argv: list[str] | None = None) -> int:
    """Rewrite (or with ``--check`` compare) the README table; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare only; exit 1 if stale")
    parser.add_argument("--readme", type=Path, default=README, help="the README to update")
    args = parser.parse_args(argv)
    text = args.readme.read_text(encoding="utf-8")
    new = replace_table(text)
    if args.check:
        if new != text:
            print(f"{args.readme}: recipe table is out of date; run scripts/recipe_table.py",
                  file=sys.stderr)
            return 1
        return 0
    if new != text:
        args.readme.write_text(new, encoding="utf-8")
        print(f"{args.readme}: recipe table updated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
