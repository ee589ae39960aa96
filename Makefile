# The two commands of the quick start: `make run` and `make test`; `make docs` builds the site.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint install clean bench soak docs docs-serve constraints

$(STAMP): setup.cfg pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## Start Redis (embedded unless INTEGRATION_REDIS_URL is set), gateway, worker and beat;
## PORT, METRICS_PORT (worker metrics, 0: none), FLOWER_PORT (with FLOWER=1) move them.
run: $(STAMP)
	$(if $(METRICS_PORT),INTEGRATION_METRICS_PORT=$(METRICS_PORT)) $(BIN)/integration up \
	  $(if $(PORT),--port $(PORT)) $(if $(FLOWER),--flower) $(if $(FLOWER_PORT),--flower-port $(FLOWER_PORT))

## Install and run the whole test suite against real Redis and real worker processes; the
## docs site must build strictly (a broken link or a page missing from the nav fails).
test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy integration tasks bench tools celeryconfig.py
	$(BIN)/lint-imports
	$(BIN)/mkdocs build --strict
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## The docs site into site/: the configuration page generated from the settings, then built strictly.
docs: $(STAMP)
	$(BIN)/python -m tools.settings_reference
	$(BIN)/mkdocs build --strict

## The docs site at http://127.0.0.1:8001, rebuilt on every change.
docs-serve: $(STAMP)
	$(BIN)/python -m tools.settings_reference
	$(BIN)/mkdocs serve --dev-addr 127.0.0.1:8001

## The service against raw Celery and Flask, side by side (ratios; JSON in .bench/).
bench: $(STAMP)
	$(BIN)/python -m bench $(BENCH_ARGS)

## Five minutes at half of peak, watching the gateway's memory.
soak: $(STAMP)
	$(BIN)/python -m bench --rounds 1 --soak 300 $(BENCH_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy integration tasks bench tools celeryconfig.py
	$(BIN)/lint-imports

## Record the versions installed now (after a change to setup.cfg and a green make test).
constraints: $(STAMP)
	{ sed -n '1,2p' constraints.txt; $(BIN)/pip freeze --exclude-editable | grep -v '^integration-bus'; } > constraints.new
	mv constraints.new constraints.txt

clean:
	rm -rf $(VENV) .run site
