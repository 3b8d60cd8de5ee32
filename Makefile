# Set-up and everyday commands. `make train` and `make test` are all a fresh machine needs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DATA   := data/synthetic
DEMO   := experiments/demo.yml

.PHONY: install data train test lint format bench clean

install: $(STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Reinstall whenever the package metadata changes.
$(STAMP): pyproject.toml setup.py | $(BIN)/python
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

$(DATA)/train.csv: | $(STAMP)
	$(BIN)/sever synth $(DATA)

data: $(DATA)/train.csv
	$(BIN)/sever check-data $(DATA)

train: data
	$(BIN)/sever train -c $(DEMO)

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: $(STAMP)
	for script in bench/bench_*.py; do $(BIN)/python $$script || exit 1; done

clean:
	rm -rf .pytest_cache .ruff_cache build *.egg-info
