"""
From nothing to a fraction sweep of an E/I circuit
==================================================

This tutorial writes a small excitatory/inhibitory (E/I) circuit as a TOML file, asks how well a handful of
plastic synapses lets it learn, explains the answer with a certificate, and then sweeps how a fixed budget of
plastic synapses is split between three projections. It takes about 20 s of CPU (a minute or two on a busy
machine).

The question behind every number here: a *teacher* circuit has random weights; a *student* circuit of the same
structure has random frozen weights except for its *plastic* synapses, which are free. Can the plastic synapses be
set so that the student's outputs equal the teacher's on ``m`` random input patterns (probes)? The fraction of
random teachers for which they can is the **match probability** ``MP(A, m)`` of the allocation ``A`` of plastic
synapses (Schlisselberg & Darshan, ICLR 2025).

Install first (:doc:`/getting_started`): ``make install`` in the repository, or
``pip install -e ".[all]"`` with ``-c constraints.txt``. Then ``import neurosubset as ns``.
"""
# %%
# 1. Write the circuit
# --------------------
# A circuit is a TOML file: regions (populations of neurons) and projections (all synapses from one region onto
# another). Six input neurons ``X`` drive 16 excitatory cells ``E`` and 6 inhibitory cells ``I``; E and I are
# recurrently connected; two output neurons ``OUT`` read out the E cells and also receive the input directly.
# ``sign`` is Dale's law (E sends only excitatory synapses, I only inhibitory ones); ``p`` is the connection
# probability (which synapses exist is drawn once from ``seed``); ``gain`` scales the weights' spread.
# ``dynamics = "steady"``: the rates are the fixed point of ``tau dr/dt = -r + W r + W_in x``.
import tempfile
from pathlib import Path

import neurosubset as ns
from neurosubset import plot

toml_text = """
name = "tutorial_ei"
dynamics = "steady"
seed = 0

[regions.X]
size = 6
role = "input"

[regions.E]
size = 16
sign = 1

[regions.I]
size = 6
sign = -1

[regions.OUT]
size = 2
role = "output"

[[projections]]
pre = "X"
post = "E"
p = 0.5

[[projections]]
pre = "X"
post = "I"
p = 0.5

[[projections]]
pre = "E"
post = "E"
p = 0.3
gain = 0.5

[[projections]]
pre = "E"
post = "I"
p = 0.5
gain = 0.6

[[projections]]
pre = "I"
post = "E"
p = 0.5
gain = 0.8

[[projections]]
pre = "E"
post = "OUT"

[[projections]]
pre = "X"
post = "OUT"
"""
workdir = Path(tempfile.mkdtemp(prefix="neurosubset_tutorial_"))  # use a folder of your own
spec_path = workdir / "tutorial_ei.toml"
spec_path.write_text(toml_text)

circuit = ns.Circuit.from_toml(spec_path)
circuit

# %%
# The table lists every region and projection with the number of synapses drawn. A projection's name,
# ``"X->E"``, is how allocations and sweeps refer to its synapses. The spec was also checked for stability: a
# steady circuit whose random draws are mostly unstable (``max Re(eig W) >= 1``) would be refused here.
print(circuit.weight_names)

# %%
# 2. One allocation, one number
# -----------------------------
# Make 12 synapses plastic, all on the input synapses onto E cells (``within=["X->E"]``), dealt round-robin over
# the presynaptic input neurons (``strategy="spread-cols"``: two per input neuron).
alloc = ns.allocate(circuit, budget=12, strategy="spread-cols", within=["X->E"], seed=0)
ns.plot_allocation(circuit, alloc)

# %%
# Measure MP with ``m = 4`` probes over 100 random teachers. The result is an :class:`xarray.Dataset` holding
# every trial and the full configuration.
result = ns.match_probability(circuit, alloc, m=4, trials=100, seed=0)
print(f"MP = {float(result.mp):.2f}, 95% interval [{float(result.mp_low):.2f}, {float(result.mp_high):.2f}]")
print("decisions:", result.attrs["decision_kind"], "| certificate:", result.attrs["certificate_verdict"])

# %%
# ``exact`` means every trial was decided exactly: the outputs are affine in these plastic weights (the recurrent
# weights are frozen), so least squares either finds plastic values that reproduce the teacher or proves there
# are none. MP is then exact up to sampling, and the interval is a plain 95% Wilson interval over the 100 trials.
# (With plasticity inside a recurrent loop the fits are a local optimiser's and MP a lower bound; see
# :doc:`/user_guide/certificates`.)
#
# 3. Why: the certificate
# -----------------------
# :func:`neurosubset.certify` decides, without fitting, whether the plastic synapses can move the outputs in as
# many directions as there are equations (``m`` probes x 2 outputs).
print(ns.certify(circuit, alloc, m=4))

# %%
# The ranks as ``m`` grows: the plastic rank keeps up with the full rank (``2 m``) until ``m = 6``, then both stop
# at 12. The circuit is linear, so its input-output map is one 2 x 6 matrix (2 outputs, 6 inputs): a student that
# matches the teacher on 6 generic probes matches it on every input, and more probes add no equations. 12
# plastic synapses, two per input neuron, are just enough to set all 12 entries.
for m in (2, 4, 6, 8):
    cert = ns.certify(circuit, alloc, m=m)
    print(f"m = {m}: plastic rank {cert.plastic_rank:2d} / full rank {cert.full_rank:2d} -> {cert.verdict}")

# %%
# 4. A fraction sweep
# -------------------
# Now the question the toolkit is built for: with 12 plastic synapses, how should they be split between the
# input synapses onto excitatory cells (X->E), onto inhibitory cells (X->I) and the direct input-to-output
# pathway (X->OUT)? :func:`neurosubset.simplex_grid` lists every split in steps of 0.25 (15 points);
# :func:`neurosubset.sweep` measures MP at each, for two strategies and three probe counts, and writes every
# finished point to a Zarr store as it goes.
grid = ns.simplex_grid(["X->E", "X->I", "X->OUT"], step=0.25)
store = workdir / "tutorial_sweep.zarr"
ds = ns.sweep(circuit, budget=12, fractions=grid, strategy=["spread-rows", "spread-cols"], m=[4, 5, 6],
              trials=40, seed=0, store=store)
ds

# %%
# The fraction points lie along one dimension ``point``; each key's share is a coordinate (``X_to_E``, ...). A
# tidy table at ``m = 6``:
print(ds["mp"].sel(m=6).to_dataframe()["mp"].unstack("strategy").round(2).to_string())

# %%
# At ``m = 6`` (the full 2 x 6 map) spread-cols reaches MP = 1 at six of the 15 splits, spread-rows only where all
# 12 synapses sit on the direct pathway X->OUT: dealing the budget over the presynaptic input neurons gives every
# input two plastic synapses, which is what setting a 2 x 6 map needs; dealing it over postsynaptic cells leaves
# some inputs with fewer. Every number here is exact (``decision_kind`` "exact"), up to the sampling of 40
# teachers per point.
#
# The figures
# -----------
# MP on the simplex of the three shares, one panel per strategy (marker: the certificate's verdict). The plot
# functions return a :class:`matplotlib.figure.Figure` that Jupyter displays; in a script, save it (it is not a
# pyplot window, so ``plt.show()`` does not show it):
fig = plot.mp_ternary(ds, m=6)
fig.savefig(workdir / "tutorial_ternary.png")
fig

# %%
# :func:`neurosubset.plot.mp_curves` draws MP along one edge of the simplex (here X->I = 0: the budget moves from
# X->OUT to X->E), one curve per strategy and ``m``, with 95% Wilson bands. With fewer probes (``m = 4, 5``) fewer
# entries of the map must be set, and more splits reach MP = 1.
plot.mp_curves(ds)

# %%
# The paired comparison: all points share the same teachers (paired draws), so the difference between the two
# strategies comes with an exact McNemar interval.
diff = ns.paired_difference(ds, a={"strategy": "spread-cols"}, b={"strategy": "spread-rows"})
plot.plot_paired_difference(diff)

# %%
# 5. Resume, extend, export
# -------------------------
# Running the same call again reads the finished points from the store and computes nothing; adding ``m`` values
# computes only the new points. A different configuration (another seed, another circuit) would be refused,
# naming the field that differs.
again = ns.sweep(circuit, budget=12, fractions=grid, strategy=["spread-rows", "spread-cols"], m=[4, 5, 6, 8],
                 trials=40, seed=0, store=store)
print(again["mp"].sel(m=8).to_dataframe()["mp"].unstack("strategy").round(2).to_string())

# %%
# ``m = 8`` repeats ``m = 6``, as the ranks above predicted. Finally, a self-describing netCDF file of the whole
# sweep, with the configuration in its attributes (open it with :func:`xarray.open_dataset`):
nc = ns.sweeps.export(store, workdir / "tutorial_sweep.nc")
print(nc.name, f"{nc.stat().st_size / 1e3:.0f} kB")
