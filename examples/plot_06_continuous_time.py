"""
Continuous time: trajectories of a tanh E/I network
===================================================

``dynamics = "continuous"`` integrates ``T dh/dt = -h + phi(W h + W_in x(t))`` over ``duration`` seconds
(time constants ``tau`` per region, in s); a probe holds its input constant over each of ``steps`` intervals and
the outputs are read at the ``readout`` times. :func:`neurosubset.simulate` returns the trajectories as an
:class:`xarray.Dataset`.
"""
# %%
import numpy as np

import neurosubset as ns

circuit = ns.Circuit.from_dict({
    "name": "ei_continuous", "dynamics": "continuous", "nonlinearity": "tanh",
    "steps": 4, "duration": 0.2, "dt": 0.002, "readout": [0.1, 0.2],
    "tau": {"E": 0.02, "I": 0.01},
    "regions": {"in": {"size": 3, "role": "input"}, "E": {"size": 12, "sign": 1}, "I": {"size": 4, "sign": -1},
                "out": {"size": 2, "role": "output"}},
    "projections": [
        {"pre": "in", "post": "E"}, {"pre": "E", "post": "E", "p": 0.5, "gain": 0.8},
        {"pre": "I", "post": "E", "gain": 0.8}, {"pre": "E", "post": "I", "p": 0.5, "gain": 0.8},
        {"pre": "E", "post": "out"},
    ],
})

# %%
# One random circuit (weights from the init, Dale's signs applied) and two probes: each a sequence of 4 input
# vectors, held for 50 ms each.
weights = circuit.sample_weights(np.random.default_rng(0))
probes = circuit.sample_probes(2, np.random.default_rng(1))
print({k: v.shape for k, v in weights.items()}, probes.shape)

ds = ns.simulate(circuit, weights, probes, times="all")
ds

# %%
# The E rates and the outputs over time (s) for the first probe; the outputs the benchmark compares are those at
# the read-out times 0.1 s and 0.2 s (dotted).
import matplotlib.pyplot as plt

fig, axes = plt.subplots(1, 2, figsize=(8, 3), layout="constrained", sharex=True)
ds["rate_E"].isel(probe=0).plot.line(x="time", ax=axes[0], add_legend=False, lw=0.8)
ds["output"].isel(probe=0).plot.line(x="time", ax=axes[1])
for ax in axes:
    for t in circuit.readout:
        ax.axvline(t, ls=":", c="gray")
axes[0].set_title("E rates, probe 0")
axes[1].set_title("outputs, probe 0")

# %%
# The benchmark runs on continuous circuits as on any other: here 12 read-out synapses plastic. Read-out synapses
# enter the outputs linearly, so the decisions are exact; plasticity inside the tanh network would be fitted by
# the LM (a lower bound), and certificates use float ranks only (the matrix exponential is not rational).
# With 2 outputs at 2 read-out times, ``m = 3`` probes give 12 equations; all 24 read-out synapses are plastic.
alloc = ns.allocate(circuit, budget=24, within=["E->out"], seed=0)
for dale in (True, False):
    res = ns.match_probability(circuit, alloc, m=3, trials=20, seed=0, dale=dale)
    print(f"dale={dale}: MP = {float(res.mp):.2f} ({res.attrs['decision_kind']}), "
          f"certificate: {res.attrs['certificate_verdict']}")

# %%
# Run as a script, save the figure (here into the temporary folder) or show it in a window:
import tempfile
from pathlib import Path

fig.savefig(Path(tempfile.gettempdir()) / "continuous_time_rates.png", dpi=150)
plt.show()
