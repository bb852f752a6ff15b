# The two commands of the README: `make demo` runs the job, `make test` runs the tests.
# Each creates the virtual environment it needs (.venv) on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test worker lint bench clean

$(BIN)/escalations: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

demo: $(BIN)/escalations
	$(BIN)/escalations demo

test: $(BIN)/escalations
	$(BIN)/python -m pytest $(PYTEST_ARGS)

worker: $(BIN)/escalations
	$(BIN)/escalations worker

lint: $(BIN)/escalations
	$(BIN)/ruff check streams tests benchmarks
	$(BIN)/ruff format --check streams tests benchmarks
	$(BIN)/mypy
	$(BIN)/lint-imports

# The speed benchmark (never part of the tests); e.g. make bench BENCH_ARGS=--quick
bench: $(BIN)/escalations
	$(BIN)/python -m benchmarks $(BENCH_ARGS)

clean:
	rm -rf $(VENV) state .pytest_cache .mypy_cache .ruff_cache
