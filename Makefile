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

demo: $(STAMP)
	$(BIN)/neurosubset mp circuits/ca3_ca1.toml --budget 200 --strategy spread-rows \
	    --fractions "CA3->CA3=0.5,CA3->CA1=0.5" --m 4 --trials 100 --seed 0 --out data/demo_mp.nc
	$(BIN)/neurosubset plot data/demo_mp.nc --out data/demo_mp.png

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_mp.py

clean:
	rm -rf $(VENV) build *.egg-info
