"""
What biological constraints cost
================================

By default every fit keeps **Dale's law** (a plastic synapse from a region with ``sign = s`` stays in
``s * [0, inf)``) and, for steady circuits, counts a match only when the student is **stable**
(``max Re(eig W) < 1``). Passing ``dale=[True, False]`` to :func:`neurosubset.sweep` makes the constraint a sweep
dimension on paired draws, so its cost is measured on the same teachers.
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
        {"pre": "I", "post": "E", "p": 0.5, "gain": 0.8}, {"pre": "E", "post": "OUT", "p": 1.0},
    ],
})

# %%
# 16 plastic read-out synapses (all excitatory: Dale's law keeps them >= 0), spread over the two output neurons.
ds = ns.sweep(circuit, budget=16, within=["E->OUT"], strategy="spread-rows", m=[1, 2, 3, 4, 6, 8],
              dale=[True, False], trials=60, seed=0)
print(ds["mp"].to_dataframe()["mp"].unstack("dale").round(2).to_string())

# %%
# Unconstrained, 8 free weights per output neuron match any 8 probes; with Dale's law the non-negative weights
# span only a cone, and MP falls long before the rank limit. The certificate says "positive" rather than "one"
# under Dale's law: a full rank proves MP > 0 but not MP = 1.
plot.mp_curves(ds)

# %%
# The paired cost of Dale's law per ``m`` (same teachers, exact McNemar interval):
diff = ns.paired_difference(ds, a={"dale": False}, b={"dale": True})
print(diff[["mp_difference", "mp_difference_low", "mp_difference_high"]].to_dataframe().round(2).to_string())

# %%
# The cost in time: recurrent plasticity under Dale's law and stability has no exact decider, so every trial goes
# to the multi-start Levenberg-Marquardt with its sign box and stability check. On a 100-neuron circuit such fits
# take minutes per point (see the user guide, "Biological constraints"); the read-out example above is exact and
# takes seconds.
