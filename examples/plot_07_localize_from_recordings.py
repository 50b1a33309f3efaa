"""
Which synapses changed? Localisation from recorded responses
============================================================

An experimenter holds a circuit's weights before learning and responses recorded after it. Which projection's
synapses could have changed to produce the recording? :func:`neurosubset.localize` fits every candidate (here: one
per projection, all its synapses free, every other synapse at its value before learning) on most probes and ranks
the candidates on held-out probes.
"""
# %%
import numpy as np

import neurosubset as ns

circuit = ns.Circuit.from_dict({
    "name": "ca3_ca1_small", "dynamics": "steady",
    "regions": {"EC": {"size": 8, "role": "input"}, "CA3": {"size": 12}, "CA1": {"size": 8},
                "OUT": {"size": 3, "role": "output"}},
    "projections": [
        {"pre": "EC", "post": "CA3", "p": 0.5}, {"pre": "CA3", "post": "CA3", "p": 0.2, "gain": 0.5},
        {"pre": "CA3", "post": "CA1", "p": 0.5}, {"pre": "CA1", "post": "OUT"},
    ],
})

# %%
# "Learning": 30% of the Schaffer collaterals (CA3->CA1) move by one init SD. The recording: the rates of CA1 and
# the outputs on 16 random probes, computed with :func:`neurosubset.simulate` (in an experiment these come from
# the data: arrays ``(probe, neuron)`` per recorded region).
rng = np.random.default_rng(0)
before = circuit.sample_weights(rng)
after = {k: v.copy() for k, v in before.items()}
moved = circuit.structure["CA3->CA1"] & (rng.random(before["CA3->CA1"].shape) < 0.3)
after["CA3->CA1"] = before["CA3->CA1"] + moved * rng.standard_normal(moved.shape) * circuit.init_std["CA3->CA1"]
probes = circuit.sample_probes(16, rng)
sim = ns.simulate(circuit, after, probes)
responses = {"CA1": sim["rate_CA1"].values, "OUT": sim["output"].values}
print({k: v.shape for k, v in responses.items()})

# %%
# Localise: one candidate per projection; a quarter of the probes held out. CA3->CA3 is recurrent, so its fit is
# a local optimiser's (a lower bound); the other projections enter the recorded rates affinely and are decided
# exactly.
ds = ns.localize(circuit, before, probes, responses, ns.projection_candidates(circuit),
                 solver=ns.Auto(restarts=2, max_rounds=2), seed=0)
print(ds[["place", "n_plastic", "residual", "heldout_residual", "matched", "identifiable",
          "decision_kind"]].to_dataframe().to_string())

# %%
# The changed projection ranks first: it reproduces the held-out probes to rounding, the others cannot. With noisy
# recordings pass ``noise=`` (SD per neuron): residuals become chi-squares and ``matched`` a p-value test.
import matplotlib.pyplot as plt

fig, ax = plt.subplots(figsize=(5, 2.8), layout="constrained")
names = [str(c) for c in ds["candidate"].values]
ax.barh(names, ds["heldout_residual"].values + 1e-17, color=["C2" if m else "C7" for m in ds["matched"].values])
ax.set_xscale("log")
ax.invert_yaxis()
ax.set_xlabel("held-out relative residual (green: matched)")

# %%
# Run as a script, save the figure (here into the temporary folder) or show it in a window:
import tempfile
from pathlib import Path

fig.savefig(Path(tempfile.gettempdir()) / "localize_heldout_residuals.png", dpi=150)
plt.show()
