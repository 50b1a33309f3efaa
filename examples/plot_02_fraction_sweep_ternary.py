"""
A fraction sweep and its ternary plot
=====================================

Where should a budget of 12 plastic synapses sit: on the input synapses onto excitatory cells (X->E), onto
inhibitory cells (X->I), or on a direct input-to-read-out pathway (X->OUT)? :func:`neurosubset.sweep` measures MP
at every split of the budget on a grid of the simplex, for two strategies, and
:func:`neurosubset.plot.mp_ternary` draws it.
"""
# %%
import neurosubset as ns
from neurosubset import plot

circuit = ns.Circuit.from_dict({
    "name": "small_ei", "dynamics": "steady",
    "regions": {"X": {"size": 6, "role": "input"}, "E": {"size": 16, "sign": 1}, "I": {"size": 6, "sign": -1},
                "OUT": {"size": 2, "role": "output"}},
    "projections": [
        {"pre": "X", "post": "E", "p": 0.5}, {"pre": "X", "post": "I", "p": 0.5},
        {"pre": "E", "post": "E", "p": 0.3, "gain": 0.5}, {"pre": "E", "post": "I", "p": 0.5, "gain": 0.6},
        {"pre": "I", "post": "E", "p": 0.5, "gain": 0.8},
        {"pre": "E", "post": "OUT", "p": 1.0}, {"pre": "X", "post": "OUT", "p": 1.0},
    ],
})

# %%
# The grid: every split of the budget over the three projections in steps of 0.25 (15 points).
grid = ns.simplex_grid(["X->E", "X->I", "X->OUT"], step=0.25)
print(len(grid.points), "fraction points, e.g.", grid.points[1])

# %%
# The sweep: two strategies (spread over postsynaptic cells, ``spread-rows``, or over presynaptic cells,
# ``spread-cols``), ``m = 6`` probes, 40 trials per point. Only input synapses are plastic here, so the outputs are
# affine in them and every trial is decided exactly by least squares: each MP is exact up to sampling.
ds = ns.sweep(circuit, budget=12, fractions=grid, strategy=["spread-rows", "spread-cols"], m=6, trials=40, seed=0)
ds

# %%
# A tidy table of MP per point and strategy:
print(ds["mp"].to_dataframe()["mp"].unstack("strategy").round(2).to_string())

# %%
# The ternary plot: each point of the simplex coloured by MP, one panel per strategy; the marker shape is the
# certificate's verdict ("one": proven MP = 1, "zero": proven MP = 0).
plot.mp_ternary(ds)

# %%
# Why spread-cols wins: with only input synapses plastic, a student changes its outputs by ``G dW x``, with
# ``G`` the (fixed) map from the E/I rates to the outputs. Matching 2 outputs on 6 probes needs ``G dW`` to reach
# every 2 x 6 matrix, i.e. every input neuron needs two plastic synapses onto cells that reach the outputs in
# different ways. Dealing the budget round-robin over the 6 presynaptic input neurons gives each of them exactly
# two; dealing it over postsynaptic cells leaves some inputs with fewer.
