# The two commands a new user types: `make demo` (CPU quickstart) and `make test`.
.PHONY: setup demo test test-fast test-slow lint format bench
SHELL := /bin/bash
VENV := .venv
PYTEST := $(VENV)/bin/python -m pytest -q -p no:cacheprovider

setup:
	@bash scripts/setup.sh

demo: setup
	$(VENV)/bin/rlsys train configs/quickstart.yaml

# The default suite, then the heavier runs (multi-rank training, full recipes, vLLM) that sit
# behind the `slow` marker. CI (.ci/run) runs both through this target.
test: setup
	$(PYTEST) -m "not slow" tests
	$(PYTEST) -m "slow" tests

test-fast: setup
	$(PYTEST) -m "not slow" tests

test-slow: setup
	$(PYTEST) -m "slow" tests

# ruff (style, imports, bugbear) and pyright in basic mode (pyrightconfig.json); both must be clean.
lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/pyright

# Safe automatic fixes: import order, pyupgrade rewrites, unused imports (the code is not
# ruff-format styled; line length 100 is checked by lint).
format: setup
	$(VENV)/bin/ruff check --fix .

bench: setup
	$(VENV)/bin/python bench/run_all.py
