# Two commands do all the set-up on a fresh machine:
#   make run          create .venv if missing, install (with the page's, explain and export extras),
#                     train the CNN on the bundled sample
#   make test         install the dev extras, run the whole suite (what CI runs)
# and for development:
#   make lint         ruff check and ruff format --check (CI runs it first)
#   make format       format the code and fix what ruff can
#   make typecheck    mypy on the core (config, checks, runs, data, train)
#   make test-fast    the inner loop: every test not marked slow (each slow mark says why)
#   make test-kernels the tests of what a training reaches, and the tutorials, on another CPU
#                     kernel path (oneDNN and MKL capped to AVX, ATen's default kernels): an outcome
#                     that holds only on one CPU's rounding fails here, not for a user
#   make docs         the documentation site (site/), built with --strict
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install -q --disable-pip-version-check -c constraints-dev.txt
# pytest-xdist workers: one per core, each training on one thread (tests/conftest.py)
WORKERS ?= auto
KERNELS := ONEDNN_MAX_CPU_ISA=AVX ATEN_CPU_CAPABILITY=default MKL_ENABLE_INSTRUCTIONS=AVX

.PHONY: run test test-fast test-kernels lint format typecheck docs clean

$(VENV)/.installed: pyproject.toml constraints-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) torch
	$(PIP) -e '.[web,explain,export]'
	touch $@

$(VENV)/.dev: $(VENV)/.installed
	$(PIP) -e '.[dev]'
	touch $@

run: $(VENV)/.installed
	$(VENV)/bin/mnistlab train cnn --dataset mnist-sample

test: $(VENV)/.dev
	$(PY) -m pytest -n $(WORKERS) $(PYTEST_ARGS)

test-fast: $(VENV)/.dev
	$(PY) -m pytest -n $(WORKERS) -m "not slow and not gpu" $(PYTEST_ARGS)

test-kernels: $(VENV)/.dev
	$(KERNELS) $(PY) -m pytest -n $(WORKERS) -m outcome $(PYTEST_ARGS)

lint: $(VENV)/.dev
	$(VENV)/bin/ruff check src tests docs benchmarks scripts
	$(VENV)/bin/ruff format --check src tests docs benchmarks scripts

format: $(VENV)/.dev
	$(VENV)/bin/ruff format src tests docs benchmarks scripts
	$(VENV)/bin/ruff check --fix src tests docs benchmarks scripts

typecheck: $(VENV)/.dev
	$(VENV)/bin/mypy

$(VENV)/.docs: $(VENV)/.dev
	$(PIP) -e '.[docs]'
	touch $@

# The documentation site, into site/: --strict, so a broken link or reference fails the build
docs: $(VENV)/.docs
	NO_MKDOCS_2_WARNING=1 DISABLE_MKDOCS_2_WARNING=true $(VENV)/bin/mkdocs build --strict

clean:
	rm -rf $(VENV) build site src/*.egg-info .pytest_cache
