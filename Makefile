# neopain — the two commands of the README: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
SNAKEMAKE := $(VENV)/bin/snakemake
CORES ?= all

.PHONY: venv demo demo-data test test-fast lint clean

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements.lock requirements-nodeps.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -c requirements.lock -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -r requirements-nodeps.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

demo-data: venv
	$(PY) -m neopain.demo resources/demo

demo: venv demo-data
	$(SNAKEMAKE) --cores $(CORES)
	@echo
	@echo "Results table: results/evaluation/table5.md (all configurations: results/evaluation/metrics.md)"
	@cat results/evaluation/table5.md

lint: venv
	$(SNAKEMAKE) --lint

test: venv
	$(PY) -m pytest -q -rs

test-fast: venv
	$(PY) -m pytest -q -rs -m "not slow"

clean:
	rm -rf results logs .snakemake
