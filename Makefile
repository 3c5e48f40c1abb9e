# Two commands a researcher needs: `make run` (default job) and `make test` (whole suite).
# Each creates .venv on first use and re-installs when pyproject.toml changes.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(PY) -m ablate $(ARGS)

test: $(STAMP)
	$(PY) -m pytest -q $(ARGS)
