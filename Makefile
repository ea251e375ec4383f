# Two commands set everything up on a fresh machine (Python 3.11 or 3.12):
#   make demo   create .venv, install bedside, run the end-to-end demo ward
#   make test   create .venv, install bedside with its dev tools, lint, type-check, test
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install demo test lint

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

install: $(BIN)/.installed

demo: install
	$(BIN)/bedside demo

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy schemas engine

test: lint
	$(BIN)/pytest
