# neurosubset — two commands set up everything on a fresh machine: `make demo` and `make test`.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed

.PHONY: install demo test test-fast bench docs clean

# pyproject.toml states ranges (torch>=2.1, numpy>=1.26, ...), so the package installs beside a user's own (GPU)
# torch; constraints.txt holds the exact pins this project's machines need: torch==2.13.0, the CPU build on their
# disk (anything else pulls a multi-GB CUDA build), and numpy<2.4 (brian2 2.9.0 calls ndarray.ptp, gone in 2.4).
$(STAMP): pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e ".[all]"
	touch $(STAMP)

install: $(STAMP)

# The main job, under 2 minutes after the install on a 2-core machine: 48 plastic Schaffer-collateral synapses
# (CA3->CA1) of circuits/ca3_ca1.toml, spread over the CA1 neurons (3 each) or concentrated on as few as possible
# (3 rows). Exact decisions (the outputs are affine in these weights), so MP is exact up to sampling, and the
# certificate says why: 3 concentrated rows reach 3 m = 24 of the 4 m = 32 output equations (plastic rank 24 < 32:
# MP = 0), 16 spread rows reach all 32 (MP = 1). Then the same budget over m = 4..12 and all five strategies (a
# sweep store, its table, figures and netCDF export; spread rows hold MP = 1 up to m = 10, spread columns up to 12).
# Measured after `make install` in a fresh clone on the 2-core machine while other jobs ran (load average 7-9):
# 106 s and 120 s wall, 28 s of CPU (user + sys) in all, most of it importing torch/xarray in five processes.
# Every step regenerates its own files (--overwrite).
DEMO_MP := circuits/ca3_ca1.toml --budget 48 --within "CA3->CA1" --m 8 --trials 100 --seed 0 --quiet --overwrite
demo: $(STAMP)
	@echo "== spread vs concentrated: 48 plastic CA3->CA1 synapses, m = 8 probes, 100 trials each"
	$(BIN)/neurosubset mp $(DEMO_MP) --strategy spread-rows --out data/demo_spread.nc
	$(BIN)/neurosubset mp $(DEMO_MP) --strategy concentrated-rows --out data/demo_concentrated.nc
	@echo "== the same budget over m = 4..12 and five strategies (20 trials per point)"
	$(BIN)/neurosubset sweep circuits/ca3_ca1.toml --budget 48 --within "CA3->CA1" --m 4,6,8,10,12 \
	    --strategy spread-rows,spread-cols,random,concentrated-rows,concentrated-cols --trials 20 --seed 0 \
	    --workers 2 --quiet --overwrite --out data/demo_sweep.zarr
	$(BIN)/neurosubset plot data/demo_sweep.zarr --out data/demo_sweep --overwrite
	$(BIN)/neurosubset export data/demo_sweep.zarr data/demo_sweep.nc --overwrite

# everything: the linter, then every test (slow ones included), spread over JOBS pytest-xdist workers (default 2,
# the reference machine's cores), one torch thread each (--dist loadgroup: the docs tests that share one site build
# stay on one worker). `make test JOBS=` runs them in one process.
JOBS ?= 2
test: lint
	$(if $(JOBS),OMP_NUM_THREADS=1 MKL_NUM_THREADS=1) $(BIN)/python -m pytest -q $(if $(JOBS),-n $(JOBS) --dist loadgroup)

# ruff, configured in pyproject.toml ([tool.ruff]: pycodestyle errors and warnings, pyflakes; line length 120)
lint: $(STAMP)
	$(BIN)/ruff check .

# the fast lane: every test over about 1 s is marked slow (kept there by reading pytest --durations)
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_mp.py

# The documentation site (docs/README.md): offline, warnings as errors, nitpicky cross-references; runs the gallery
# (examples/*.py) and the tutorial. Installs the docs extra (Sphinx and friends, pinned) beside `make install`'s.
DOCS_STAMP := $(VENV)/.docs-installed
$(DOCS_STAMP): $(STAMP) pyproject.toml constraints.txt
	$(BIN)/pip install --quiet -c constraints.txt -e ".[all,docs]"
	touch $(DOCS_STAMP)

# The stamp carries the build's start time: tests/test_docs.py reuses the site while no source is newer than it.
docs: $(DOCS_STAMP)
	@mkdir -p docs/_build && touch docs/_build/.docs-started
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(BIN)/sphinx-build -b html -W --keep-going -n -q docs docs/_build/html
	@mv docs/_build/.docs-started docs/_build/html/.sources-stamp
	@echo "== docs/_build/html/index.html"

clean:
	rm -rf $(VENV) build *.egg-info docs/_build docs/generated docs/auto_examples docs/tutorial
