# The one entry point: `make demo` and `make test` work on a fresh machine (they build .venv first).
# `make e2e` builds (or reuses) the pinned Collector and Jaeger with Go, then runs tests/e2e against them.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# The suite and the demo use every extra (pyproject.toml); `pip install otelprobe` alone is the prober.
EXTRAS := dev,attribution,lab,sidecar,compression

.PHONY: venv check lint fmt typecheck test test-fast e2e otel demo bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[$(EXTRAS)]"
	touch $(STAMP)

lint: venv
	$(BIN)/ruff format --check otelprobe tests bench
	$(BIN)/ruff check otelprobe tests bench

fmt: venv
	$(BIN)/ruff format otelprobe tests bench
	$(BIN)/ruff check --fix otelprobe tests bench

typecheck: venv
	$(BIN)/mypy otelprobe

check: lint typecheck

test: check
	$(BIN)/pytest -q --durations=25

# The Collector (OCB manifest collector-config/builder/) and Jaeger v2, built into the user's cache.
otel:
	bash scripts/otel-build.sh all

# Exit 3 from the build script = no Go: the suite then skips, saying why.
e2e: venv
	bash scripts/otel-build.sh all || test $$? -eq 3
	OTELPROBE_E2E=1 $(BIN)/pytest -q tests/e2e

test-fast: venv
	$(BIN)/pytest -q -x -m "not slow"

demo: venv
	$(BIN)/otelprobe demo

bench: venv
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
