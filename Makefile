# `make demo` and `make test` each set up .venv first; only python3, pip and make are assumed.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEMO_REQUEST ?= Create a comprehensive security analysis of a web application with a public REST API, a PostgreSQL database and a React front end

.PHONY: venv demo test lint format bench soak clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	touch $(STAMP)

demo: venv
	$(BIN)/parallel-agents run "$(DEMO_REQUEST)"

bench: venv
	$(BIN)/parallel-agents bench --quick

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# The end-to-end tests run `parallel-agents start/stop` with a Ray head of their own, so they
# get their own pytest process after the suite's shared Ray instance is gone.
test: lint
	$(BIN)/python -m pytest -q -p no:cacheprovider tests/unit tests/integration
	$(BIN)/python -m pytest -q -p no:cacheprovider tests/e2e

format: venv
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache

# 200 requests through HTTP and the bot while processes are SIGKILLed (several minutes; not
# part of `make test`). Prints its figures; RELIABILITY.md quotes them.
soak: venv
	$(BIN)/python -m pytest -q -s -p no:cacheprovider tests/soak
