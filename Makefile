# Two entry points: `make demo` (the pipeline on a model trained here, then ECA-ResNet-50 for speed) and
# `make test`. Both build .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
OUT ?= out/demo

.PHONY: demo test bench venv clean gpu-check jetpack-stacks

venv: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -r requirements-dev.txt
	$(BIN)/python -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m demo --out $(OUT)

test: $(STAMP) jetpack-stacks
	$(BIN)/python -m pytest -q -rs

# JetPack 5 and 6's own numpy and Pillow on Python 3.8 and 3.10, where those interpreters exist (deploy/ runs on them).
jetpack-stacks:
	@tools/jetpack_stacks.sh

bench: $(STAMP)
	$(BIN)/python -m pipeline.bench

# On a lent GPU machine: uses .venv when it exists, else $(PYTHON) (never builds a venv there). No GPU: one line.
GPU_PYTHON := $(if $(wildcard $(BIN)/python),$(BIN)/python,$(PYTHON))
gpu-check:
	$(GPU_PYTHON) tools/gpu_check.py

clean:
	rm -rf $(VENV) .venv-jetpack out .pytest_cache
