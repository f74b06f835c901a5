# Two commands matter: `make demo` and `make test`. Both create/refresh .venv on demand.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip install --disable-pip-version-check -q
export XDG_RUNTIME_DIR ?= $(CURDIR)/.local/run

.PHONY: demo test lint typecheck unit serve bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Stamps re-run pip only when a requirements file changed.
$(VENV)/.local-stamp: $(BIN)/python requirements.txt requirements-local.txt constraints.txt pyproject.toml
	$(PIP) -r requirements-local.txt -c constraints.txt
	$(PIP) --no-deps -e .
	@touch $@

$(VENV)/.dev-stamp: $(VENV)/.local-stamp requirements-dev.txt
	$(PIP) -r requirements-dev.txt -c constraints.txt
	@touch $@

demo: $(VENV)/.local-stamp
	$(BIN)/caf demo

lint: $(VENV)/.dev-stamp
	$(BIN)/ruff check .
	$(BIN)/mypy

unit: $(VENV)/.dev-stamp
	$(BIN)/pytest

test: lint unit

serve: $(VENV)/.local-stamp
	$(BIN)/caf serve

bench: $(VENV)/.dev-stamp
	$(BIN)/python -m benchmarks.run_all

clean:
	rm -rf $(VENV) .local .pytest_cache .ruff_cache .mypy_cache
