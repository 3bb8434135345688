PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
CONSTRAINTS := requirements/constraints.txt

.PHONY: demo test docs docs-serve docs-plots bench bench-docs clean

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

# pytest-xdist: one worker per core, at most 4 (each imports torch and JAX).
test: $(VENV)/.installed-test
	$(PY) -m pytest -q -n auto --maxprocesses 4

bench: $(VENV)/.installed-test
	$(PY) benchmarks/bench_losses.py

# The documentation site (also built, strictly, by tests/test_docs.py in `make test`).
docs: $(VENV)/.installed-test
	$(VENV)/bin/mkdocs build --strict

docs-serve: $(VENV)/.installed-test
	$(VENV)/bin/mkdocs serve --dev-addr 127.0.0.1:8000

# Regenerate the figures and the numbers of the docs (commit the results).
docs-plots: $(VENV)/.installed-test
	$(PY) docs/scripts/plot_losses.py
	$(PY) docs/scripts/numerics.py

# Rerun the benchmark and rewrite docs/benchmarks/{cpu,memory,cpu-compile,floors}.md, {smooth-floor,page-faults,jax-top-k,torch-top-k,select-forms,layout-forms}.txt and docs/img/bench_cpu.png.
bench-docs: $(VENV)/.installed-test
	$(PY) docs/scripts/bench_docs.py
	$(PY) benchmarks/bench_losses.py --memory-only --markdown --sizes 256x10000,64x100000 \
		--losses smooth_topk_svm,smooth_topk_svm_k10,smooth_topk_svm_k20,topk_hinge,noised_topk_hinge_5,topk_transition \
		> docs/benchmarks/memory.md
	$(PY) benchmarks/bench_losses.py --markdown --backends torch --compile --losses smooth_topk_svm \
		> docs/benchmarks/cpu-compile.md
	$(PY) benchmarks/floors.py --markdown > docs/benchmarks/floors.md
	$(PY) benchmarks/floors.py --backends torch,numpy --sizes 256x100,256x300,256x500,256x900 --repeat 15 \
		> docs/benchmarks/smooth-floor.txt
	$(PY) benchmarks/page_faults.py > docs/benchmarks/page-faults.txt
	$(PY) benchmarks/jax_top_k.py > docs/benchmarks/jax-top-k.txt
	$(PY) benchmarks/torch_top_k.py > docs/benchmarks/torch-top-k.txt
	$(PY) benchmarks/torch_top_k.py --groups 4,8,16,32 --sizes 256x3000,256x5000,256x10000,256x30000,64x100000 \
		--ks 5,6,10,20 >> docs/benchmarks/torch-top-k.txt
	$(PY) benchmarks/select_forms.py --sizes 256x100,256x500,256x1000,256x10000,64x100000 --groups 16,32,64,128 \
		> docs/benchmarks/select-forms.txt
	$(PY) benchmarks/layout_forms.py --backend torch > docs/benchmarks/layout-forms.txt
	$(PY) benchmarks/layout_forms.py --backend numpy >> docs/benchmarks/layout-forms.txt

clean:
	rm -rf $(VENV) site build dist
