"""
Certificates versus fits: exact, lower bound and the bracket
============================================================

Where a trial is decided exactly (a least-squares solve, a linear program, a rank certificate), MP is exact up to
sampling. Where only a local optimiser (Levenberg-Marquardt) could be used, a found match is a witness but a miss
proves nothing: MP is then a **lower bound**, and the result carries a bracket ``[mp_lower, mp_upper]`` that covers
the true MP with probability >= 0.95 whatever the undecided trials hide. This example puts both side by side on a
linear recurrent network whose recurrent weights are plastic (outputs polynomial in them: no exact decider).
"""
# %%
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

import neurosubset as ns

rnn = ns.linear_rnn(8, 2, 2, steps=3)   # n = 8 neurons, 2 inputs, 2 outputs, 3 time steps
alloc = ns.allocate(rnn, budget=12, strategy="spread-rows", within=["W"], seed=0)
rnn

# %%
# The certificate alone (no fitting): the rank of the plastic synapses' Jacobian against the rank of all
# synapses'. Plastic rank below full rank proves MP = 0 ("zero"); equal ranks leave MP > 0 ("positive") to be
# measured.
ms = [1, 2, 3, 4, 5, 6, 7, 8]
certs = [ns.certify(rnn, alloc, m=m) for m in ms]
for m, c in zip(ms, certs):
    print(f"m = {m}: plastic rank {c.plastic_rank:3d} / full rank {c.full_rank:3d}  -> {c.verdict}")

# %%
# The fits (a fast, reduced LM effort: 2 restarts x 2 rounds). ``skip_zero=True`` lets the certificate decide
# every trial where it proves MP = 0 (the default turns it on for circuits with >= 128 hidden neurons only).
solver = ns.LevenbergMarquardt(restarts=2, max_rounds=2, iterations=300)
rows = []
for m, c in zip(ms, certs):
    ds = ns.match_probability(rnn, alloc, m=m, trials=30, seed=0, solver=solver, skip_zero=True)
    rows.append((m, float(ds.mp), float(ds.mp_lower), float(ds.mp_upper), ds.attrs["decision_kind"], c.verdict))
    print(f"m = {m}: MP = {float(ds.mp):.2f}, bracket [{float(ds.mp_lower):.2f}, {float(ds.mp_upper):.2f}], "
          f"{ds.attrs['decision_kind']}")

# %%
# Where the certificate says "zero", every trial is decided by it (``decision = rank_certificate``): MP = 0 is
# exact and the bracket is the 95% interval of 30 proven no-matches, [0, 0.11]. Where it says "positive", a trial
# the LM matched is proven (a witness); a trial it missed would stay undecided, and ``mp_upper`` stays at 1 unless
# something proved those trials unmatchable. Here the LM matched all 30 at m <= 4, so MP = 1 is a lower bound that
# happens to meet the top of its bracket: the label stays "lower bound" because nothing proved the misses
# impossible.
m_, mp, lo, hi, kind, verdict = map(np.array, zip(*rows))
fig, ax = plt.subplots(figsize=(5, 3.2), layout="constrained")
ax.fill_between(m_, lo, hi, alpha=0.25, label="bracket [mp_lower, mp_upper]")
ax.plot(m_, mp, "o-", label="MP (found matches)")
ax.scatter(m_[verdict == "zero"], mp[verdict == "zero"], marker="s", s=60, c="k", zorder=3,
           label='certificate "zero" (exact)')
ax.set_xlabel("probes m")
ax.set_ylabel("match probability")
ax.legend(fontsize=8)

# %%
# Run as a script, save the figure (here into the temporary folder) or show it in a window:
fig.savefig(Path(tempfile.gettempdir()) / "certificates_vs_fits.png", dpi=150)
plt.show()
