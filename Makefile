# The two commands a new user needs:  `make demo`  and  `make test`.
.PHONY: setup demo demo-quick test test-fast lint bench

setup:
	./scripts/setup.sh

demo: setup
	.venv/bin/quirky demo

demo-quick: setup
	.venv/bin/quirky demo --quick

test: setup
	.venv/bin/python -m pytest -q

test-fast: setup
	.venv/bin/python -m pytest -q -m "not slow"

lint: setup
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
