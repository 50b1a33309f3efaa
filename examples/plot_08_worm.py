"""
The worm: the C. elegans connectome
===================================

:func:`neurosubset.celegans` builds the hermaphrodite connectome of Cook et al. (2019) as a circuit (302 neurons in
regions by cell type, Dale signs from the neurotransmitters, synapse counts as the structure). It needs the
optional ``connectome`` extra (``pip install 'neurosubset[connectome]'``, the ``cect`` package); without it this
example prints a note and stops.
"""
# %%
import importlib.util

import neurosubset as ns

if importlib.util.find_spec("cect") is None:
    print("The connectome extra is not installed (pip install 'neurosubset[connectome]'): skipping the worm.")
    worm = None
else:
    worm = ns.celegans()
    print(worm)

# %%
# Certificates scale to the worm where fitting would take hours: 300 plastic synapses spread over postsynaptic
# neurons, ``m = 2`` probes. The verdict needs no fitting (a few seconds).
if worm is not None:
    alloc = ns.allocate(worm, budget=300, strategy="spread-rows", seed=0)
    print(ns.certify(worm, alloc, m=2))

# %%
# Where the plastic synapses sit: spread-rows gives about one plastic synapse to each postsynaptic neuron, so the
# budget follows the neuron counts of the regions (``ns.plot_allocation(worm, alloc)`` draws every synapse, a
# 302 x 302 block matrix, too fine to read at this size).
if worm is not None:
    import matplotlib.pyplot as plt

    per_region = {}
    for name, mask in alloc.masks.items():
        post = name.split("->")[1]
        per_region[post] = per_region.get(post, 0) + int(mask.sum())
    fig, ax = plt.subplots(figsize=(5, 3), layout="constrained")
    ax.barh(list(per_region), list(per_region.values()))
    ax.set_xlabel("plastic synapses onto the region")
    ax.invert_yaxis()

# %%
# Run as a script, save the figure (here into the temporary folder) or show it in a window:
if worm is not None:
    import tempfile
    from pathlib import Path

    fig.savefig(Path(tempfile.gettempdir()) / "worm_plastic_per_region.png", dpi=150)
    plt.show()
