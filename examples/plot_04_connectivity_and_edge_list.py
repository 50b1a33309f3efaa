"""
A circuit from a connectivity matrix and from an edge list
==========================================================

Measured circuits come as synapse-count matrices or as edge lists (pre, post, count). Which synapses exist is
then the data, not a random draw. :meth:`neurosubset.Circuit.from_connectivity` takes either; a TOML spec can
name the same data as a file (``connectivity = "FILE.npz"`` or ``"FILE.csv"``, next to the spec).
"""
# %%
# Regions first: sizes, roles, Dale signs, and (for edge lists) one name per neuron.
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

import neurosubset as ns

regions = [
    ns.Region("S", 3, role="input", neurons=("s0", "s1", "s2")),
    ns.Region("E", 4, sign=1, neurons=("e0", "e1", "e2", "e3")),
    ns.Region("I", 2, sign=-1, neurons=("i0", "i1")),
    ns.Region("M", 2, role="output", neurons=("m0", "m1")),
]

# %%
# A connectivity matrix per projection
# ------------------------------------
# One ``(n_post, n_pre)`` array of synapse counts per projection ``"PRE->POST"`` (rows are postsynaptic neurons,
# as everywhere in the package). A zero means no synapse.
rng = np.random.default_rng(0)
matrices = {
    "S->E": rng.integers(0, 3, size=(4, 3)),
    "S->I": np.ones((2, 3), dtype=int),
    "E->I": rng.integers(0, 2, size=(2, 4)) + np.eye(2, 4, dtype=int),
    "I->E": np.ones((4, 2), dtype=int),
    "E->M": np.array([[1, 1, 0, 0], [0, 0, 1, 1]]),
}
circuit = ns.Circuit.from_connectivity(regions, matrices, init="count", name="from_matrices")
print(circuit)

# %%
# ``init = "count"`` draws each synapse's weight with an SD proportional to its count (``"gain"``: the same SD
# for every present synapse). The structure is the data:
print(circuit.structure["S->E"].astype(int))

# %%
# An edge list
# ------------
# The same circuit as rows ``pre, post, count`` by neuron name, here written as a CSV file. An optional ``sign``
# column is checked against the regions' Dale signs.
rows = []
for name, counts in matrices.items():
    pre, post = name.split("->")
    pre_names = next(r.neurons for r in regions if r.name == pre)
    post_names = next(r.neurons for r in regions if r.name == post)
    for i, j in zip(*np.nonzero(counts)):
        rows.append({"pre": pre_names[j], "post": post_names[i], "count": int(counts[i, j])})
edges = pd.DataFrame(rows)
print(edges.head())

with tempfile.TemporaryDirectory() as tmp:
    csv = Path(tmp) / "edges.csv"
    edges.to_csv(csv, index=False)
    from_csv = ns.Circuit.from_connectivity(regions, csv, init="count", name="from_matrices")
print("same structure:", all((from_csv.structure[k] == circuit.structure[k]).all() for k in matrices))

# %%
# Errors speak the spec's language: an edge to a neuron no region names is refused in one line naming the field.
bad = pd.concat([edges, pd.DataFrame([{"pre": "s0", "post": "x9", "count": 1}])])
try:
    ns.Circuit.from_connectivity(regions, bad)
except ns.CircuitSpecError as err:
    print("CircuitSpecError:", err)

# %%
# The circuit as a TOML spec (the data written inline as ``synapses = [[post, pre, count], ...]``), then the
# benchmark as for any circuit: all four read-out synapses plastic, two probes.
print(circuit.to_toml()[:600])
alloc = ns.allocate(circuit, budget=4, within=["E->M"], seed=0)
print(ns.certify(circuit, alloc, m=2))
