# Two commands matter: `make demo` and `make test`. Both create/refresh .venv on demand.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip install --disable-pip-version-check -q
export XDG_RUNTIME_DIR ?= $(CURDIR)/.local/run

.PHONY: demo test lint typecheck unit serve bench clean browser wire

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
	$(BIN)/lint-imports

unit: $(VENV)/.dev-stamp browser
	$(BIN)/pytest

# Debian's Chromium for the operator page's browser test (tests/web); installed only when missing.
browser: /usr/bin/chromium
/usr/bin/chromium:
	@if [ "$$(id -u)" = 0 ]; then \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; \
	else echo "chromium missing and not root: the browser test is skipped (apt-get install chromium)"; fi

test: lint unit

# Opt-in, not part of `make test`: the BigQuery adapter against local-bigquery (needs Python 3.13,
# built once under .local/bigquery-venv) beside gcp-storage-emulator. See run/scripts/wire.
wire: $(VENV)/.dev-stamp
	$(BIN)/python run/scripts/wire

serve: $(VENV)/.local-stamp
	$(BIN)/caf serve

bench: $(VENV)/.dev-stamp
	$(BIN)/python -m benchmarks.run_all

clean:
	rm -rf $(VENV) .local .pytest_cache .ruff_cache .mypy_cache .import_linter_cache
