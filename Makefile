# neurosubset — two commands set up everything on a fresh machine: `make demo` and `make test`.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed

.PHONY: install demo test bench clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch pinned to the CPU build on this disk (see pyproject.toml); numpy<2.4 for brian2.
	$(BIN)/pip install --quiet "torch==2.13.0" "numpy<2.4"
	$(BIN)/pip install --quiet -e ".[all]"
	touch $(STAMP)

install: $(STAMP)

# The main job: sweep how a budget of 48 plastic synapses is split between the CA3 recurrent collaterals and the
# Schaffer collaterals, spread over neurons vs concentrated on few, for m = 6, 8, 10 probes (4 outputs each).
# The store is resumable: rerunning computes only missing points; delete data/demo_sweep.zarr to start over.
# The demo regenerates its own files (--overwrite); no command replaces a file without it.
demo: $(STAMP)
	$(BIN)/neurosubset mp circuits/ca3_ca1.toml --budget 48 --strategy concentrated-rows \
	    --fractions "CA3->CA3=0.5,CA3->CA1=0.5" --m 8 --trials 50 --seed 0 --out data/demo_mp.nc --overwrite
	$(BIN)/neurosubset plot data/demo_mp.nc --out data/demo_mp.png --overwrite
	$(BIN)/neurosubset sweep circuits/ca3_ca1.toml --budget 48 --fractions "CA3->CA3,CA3->CA1" --step 0.25 \
	    --strategy spread-rows,concentrated-rows --m 6,8,10 --trials 16 --seed 0 \
	    --workers 2 --out data/demo_sweep.zarr
	$(BIN)/neurosubset plot data/demo_sweep.zarr --out data/demo_sweep --overwrite
	$(BIN)/neurosubset export data/demo_sweep.zarr data/demo_sweep.nc --overwrite

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_mp.py

clean:
	rm -rf $(VENV) build *.egg-info
