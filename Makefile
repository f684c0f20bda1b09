# Two commands do all the set-up on a fresh machine:
#   make run    create .venv if missing, install, train the CNN on the bundled sample
#   make test   install the dev extras, run the test suite
#   make docs   the documentation site (site/), built with --strict
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install -q --disable-pip-version-check -c constraints-dev.txt

.PHONY: run test docs bench clean

$(VENV)/.installed: pyproject.toml constraints-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) torch
	$(PIP) -e '.[web]'
	touch $@

$(VENV)/.dev: $(VENV)/.installed
	$(PIP) -e '.[dev]'
	touch $@

run: $(VENV)/.installed
	$(VENV)/bin/mnistlab train cnn --dataset mnist-sample

test: $(VENV)/.dev
	$(PY) -m pytest $(PYTEST_ARGS)

$(VENV)/.docs: $(VENV)/.dev
	$(PIP) -e '.[docs]'
	touch $@

# The documentation site, into site/: --strict, so a broken link or reference fails the build
docs: $(VENV)/.docs
	NO_MKDOCS_2_WARNING=1 DISABLE_MKDOCS_2_WARNING=true $(VENV)/bin/mkdocs build --strict

clean:
	rm -rf $(VENV) build site src/*.egg-info .pytest_cache
