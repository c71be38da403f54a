# The two commands a new user types: `make demo` (CPU quickstart) and `make test`.
.PHONY: setup demo test lint bench
SHELL := /bin/bash
VENV := .venv

setup:
	@bash scripts/setup.sh

demo: setup
	OMP_WAIT_POLICY=ACTIVE $(VENV)/bin/rlsys train configs/quickstart.yaml

test: setup
	$(VENV)/bin/python -m pytest -q tests

lint: setup
	$(VENV)/bin/ruff check .

bench: setup
	$(VENV)/bin/python bench/run_all.py
