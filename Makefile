# The two commands of the quick start: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint install clean

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

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy integration tasks bench celeryconfig.py

clean:
	rm -rf $(VENV) .run
