# The two commands of the quick start: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint install clean bench soak

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## Start Redis (embedded unless INTEGRATION_REDIS_URL is set), gateway, worker and beat.
run: $(STAMP)
	$(BIN)/integration up

## Install and run the whole test suite against real Redis and real worker processes.
test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy integration tasks bench celeryconfig.py
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## The service against raw Celery and Flask, side by side (ratios; JSON in .bench/).
bench: $(STAMP)
	$(BIN)/python -m bench $(BENCH_ARGS)

## Five minutes at half of peak, watching the gateway's memory.
soak: $(STAMP)
	$(BIN)/python -m bench --rounds 1 --soak 300 $(BENCH_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy integration tasks bench celeryconfig.py

clean:
	rm -rf $(VENV) .run
