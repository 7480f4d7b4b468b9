# The two commands a newcomer needs: `make run` and `make test` (see README.md).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PYTEST_ARGS ?=
# The dashboard's tests drive Debian's chromium: pip never fetches a browser of its own.
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD := 1

.PHONY: run test test-fast bench system-deps venv asterisk-up asterisk-down clean

# constraints.txt pins the versions the suite is known to pass with.
$(BIN)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	touch $@

venv: $(BIN)/.installed

system-deps:
	./scripts/install-system-deps

# Starts the local Asterisk (built on first use), migrates the SQLite database and
# serves the API and the call controller on their embedded defaults.
run: venv system-deps
	$(BIN)/hotline asterisk up
	$(BIN)/hotline migrate
	$(BIN)/hotline serve

# Everything: the architecture's import contracts, then unit, API (SQLite and PostgreSQL), fuzz and
# end-to-end tests.
test: venv system-deps
	$(BIN)/lint-imports
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The fast layers only (no Asterisk).
test-fast: venv
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -m "not e2e" $(PYTEST_ARGS)

bench: venv system-deps
	$(BIN)/pip install -q -c constraints.txt -e '.[bench]'
	$(BIN)/python bench/api_bench.py
	$(BIN)/python bench/call_bench.py latency
	$(BIN)/python bench/call_bench.py load
	$(BIN)/python bench/call_bench.py load --flow simple --baseline
	$(BIN)/python bench/call_bench.py load --sizes 300 --api-load 100000
	$(BIN)/python bench/cc_bench.py

asterisk-up: venv system-deps
	$(BIN)/hotline asterisk up

asterisk-down: venv
	$(BIN)/hotline asterisk down

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
