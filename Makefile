PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
CONSTRAINTS := requirements/constraints.txt

.PHONY: demo test docs bench clean

$(VENV)/.installed-base: pyproject.toml $(CONSTRAINTS)
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c $(CONSTRAINTS) -e ".[demo]"
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed-base
	$(PIP) install -q -c $(CONSTRAINTS) -e ".[test,docs]"
	touch $@

demo: $(VENV)/.installed-base
	$(PY) -m topkloss demo

test: $(VENV)/.installed-test
	$(PY) -m pytest -q

bench: $(VENV)/.installed-test
	$(PY) benchmarks/bench_losses.py

clean:
	rm -rf $(VENV) site build dist
