"""
An E/I circuit from scratch
===========================

Write a small excitatory/inhibitory circuit as a Python dict in the TOML layout (the same fields a
``circuits/*.toml`` file has), give 40 of its synapses plasticity in two different ways, and measure how often a
student circuit with only those synapses free can reproduce a random teacher: the match probability MP.
"""
# %%
# The circuit
# -----------
# Six inputs drive 16 excitatory (E, ``sign = 1``) and 6 inhibitory (I, ``sign = -1``) neurons; the E cells are
# read out by 2 output neurons. ``dynamics = "steady"``: the rates are the fixed point ``r = W r + W_in x`` of the
# rate equation ``tau dr/dt = -r + W r + W_in x``, solved directly. The signs are Dale's law: every synapse an E
# cell sends is excitatory, every synapse an I cell sends inhibitory, in the teacher and in every fitted student.
import neurosubset as ns

spec = {
    "name": "small_ei",
    "dynamics": "steady",
    "regions": {
        "X": {"size": 6, "role": "input"},
        "E": {"size": 16, "sign": 1},
        "I": {"size": 6, "sign": -1},
        "OUT": {"size": 2, "role": "output"},
    },
    "projections": [
        {"pre": "X", "post": "E", "p": 0.5},
        {"pre": "X", "post": "I", "p": 0.5},
        {"pre": "E", "post": "E", "p": 0.3, "gain": 0.5},
        {"pre": "E", "post": "I", "p": 0.5, "gain": 0.6},
        {"pre": "I", "post": "E", "p": 0.5, "gain": 0.8},
        {"pre": "E", "post": "OUT", "p": 1.0},
    ],
}
circuit = ns.Circuit.from_dict(spec)
circuit

# %%
# ``print(circuit.to_toml())`` gives the same circuit as a TOML file, ready for ``circuits/``.
print(circuit.to_toml())

# %%
# Two allocations of the same budget
# ----------------------------------
# 16 plastic synapses on the read-out projection E->OUT (2 output neurons x 16 E cells): spread over both output
# neurons (8 each) or concentrated on as few as possible (all 16 onto one output neuron).
spread = ns.allocate(circuit, budget=16, strategy="spread-rows", within=["E->OUT"], seed=0)
concentrated = ns.allocate(circuit, budget=16, strategy="concentrated-rows", within=["E->OUT"], seed=0)
spread

# %%
# :func:`neurosubset.plot_allocation` draws every synapse by region (rows receive, columns send): grey frozen,
# red plastic.
ns.plot_allocation(circuit, concentrated)

# %%
# Match probability
# -----------------
# For each of ``trials`` random teachers, the student (frozen synapses drawn afresh, plastic ones free) is fitted
# on ``m = 4`` random probes. The result is an :class:`xarray.Dataset`; ``mp`` is the fraction of matched trials,
# ``mp_low`` / ``mp_high`` its 95% Wilson interval, and ``decision_kind`` says whether every trial was decided
# exactly (here: the outputs are affine in read-out weights, so least squares decides each trial) or whether the
# number is only a lower bound (see the user guide, "Certificates").
for name, alloc in [("spread-rows", spread), ("concentrated-rows", concentrated)]:
    ds = ns.match_probability(circuit, alloc, m=4, trials=100, seed=0)
    print(f"{name:18s} MP = {float(ds.mp):.2f} [{float(ds.mp_low):.2f}, {float(ds.mp_high):.2f}]  "
          f"{ds.attrs['decision_kind']}, certificate: {ds.attrs['certificate_verdict']}")

# %%
# Why: the certificate
# --------------------
# :func:`neurosubset.certify` compares the rank of the plastic synapses' Jacobian (how many directions of the
# outputs the plastic synapses can move) with the number of output equations (``m = 4`` probes x 2 outputs = 8).
# All 16 plastic synapses on one output neuron reach only that neuron's 4 equations: rank 4 < 8, so no student
# can match (MP = 0, proven). Spread 8 + 8, each output neuron has 8 free weights for its 4 equations.
print(ns.certify(circuit, concentrated, m=4))

# %%
# Dale's law made the certificate say "positive" rather than "one" for the spread allocation: the signs of
# E->OUT weights must stay positive, so a full rank proves MP > 0 but not MP = 1; the fits then measure it.
ds = ns.match_probability(circuit, spread, m=4, trials=100, seed=0, dale=False)
print(f"without Dale's law: MP = {float(ds.mp):.2f}, certificate: {ds.attrs['certificate_verdict']}")
