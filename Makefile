# Set-up and everyday commands. `make train` and `make test` are all a fresh machine needs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DATA   := data/synthetic
DEMO   := experiments/demo.yml

.PHONY: install browser data train test lint format bench gpu-wheels clean

install: $(STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Reinstall whenever the package metadata changes.
$(STAMP): pyproject.toml setup.py | $(BIN)/python
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev,export]'
	touch $(STAMP)

# Headless Chromium: a test opens sever compare's HTML report in a real browser. Installed
# from Debian's packages when missing (needs root and apt, as on CI); where it cannot be,
# that one test is skipped and says so.
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1; } || \
	  echo "warning: no chromium (apt-get install chromium): the report's browser test is skipped"

$(DATA)/train.csv: | $(STAMP)
	$(BIN)/sever synth $(DATA)

data: $(DATA)/train.csv
	$(BIN)/sever check-data $(DATA)

train: data
	$(BIN)/sever train -c $(DEMO)

test: $(STAMP) browser
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: $(STAMP)
	for script in $(filter-out bench/bench_training_tricks.py,$(wildcard bench/bench_*.py)); do $(BIN)/python $$script || exit 1; done

# Wheels for bench/gpu_proof.py on the GPU machine (no package index there): what its
# Python 3.12 lacks, listed in bench/gpu-wheels.txt, for CPython 3.12 on manylinux x86-64.
# Downloaded beside .whl and swapped in, so a stale version never sits next to a new one.
GPU_WHEELS    := .whl
GPU_PLATFORMS := manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 \
                 manylinux2014_x86_64 manylinux1_x86_64

gpu-wheels:
	rm -rf $(GPU_WHEELS).tmp
	$(PYTHON) -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
		--implementation cp $(addprefix --platform ,$(GPU_PLATFORMS)) \
		-d $(GPU_WHEELS).tmp -r bench/gpu-wheels.txt
	rm -rf $(GPU_WHEELS) && mv $(GPU_WHEELS).tmp $(GPU_WHEELS)
	@du -ch $(GPU_WHEELS)/*.whl | tail -1

clean:
	rm -rf .pytest_cache .ruff_cache build *.egg-info
