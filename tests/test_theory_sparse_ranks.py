"""neurosubset.theory.sparse_ranks: certify's float ranks through sparse solves (method "iterative").

The reference is the GF(p) path (neurosubset.theory.modular_ranks: exact ranks at a random point of GF(p)), and
the verdict rules written out here.
"""
import pytest

import neurosubset as ns

from test_dynamics_sparse_map import _ei


def _integer_fixed():
    """The small E/I circuit with integer fixed weights (the GF(p) path needs them)."""
    spec = _ei().to_dict()
    for proj in spec["projections"]:
        if proj.get("weights"):
            proj["weights"] = [[0, 0, 1.0], [7, 2, -2.0]]
    return ns.Circuit.from_dict(spec)


@pytest.mark.parametrize("within, budget, m, verdict", [
    (["E->E"], 3, 3, "zero"),  # 3 plastic values for 9 equations: a rank deficit
    (["E->E"], 60, 3, "positive"),  # full rank, outputs not affine
    (["E->OUT"], 30, 3, "one"),  # full rank, affine (read-out only)
])
def test_iterative_ranks_equal_the_gfp_ranks(within, budget, m, verdict):
    c = _integer_fixed()
    alloc = ns.allocate(c, budget, strategy="spread-rows", within=within, seed=1)
    exact = ns.certify(c, alloc, m=m, method="exact", dale=False, stable=False)
    it = ns.certify(c, alloc, m=m, method="iterative", dale=False, stable=False)
    assert (it.plastic_rank, it.full_rank) == (exact.plastic_rank, exact.full_rank)
    assert it.verdict == exact.verdict == verdict
    assert it.method == "iterative" and it.estimate and not it.exact  # flagged: a float rank from sparse solves
    assert exact.method == "exact" and not exact.estimate


def test_certify_takes_the_iterative_ranks_in_the_sparse_layout():
    big = ns.Circuit.from_dict({  # above the crossover: the sparse layout, no loop
        "name": "wide", "dynamics": "steady",
        "regions": {"X": {"size": 50, "role": "input"}, "H": {"size": 6000}, "OUT": {"size": 5, "role": "output"}},
        "projections": [{"pre": "X", "post": "H", "p": 0.02}, {"pre": "H", "post": "OUT", "p": 0.02}]})
    readout = int(big.structure["H->OUT"].sum())  # the dense structure, independently
    alloc = ns.allocate(big, readout, within=["H->OUT"], seed=0)  # the whole read-out: affine
    cert = ns.certify(big, alloc, m=2)
    assert cert.method == "iterative" and cert.estimate
    assert cert.n_synapses == int(big.structure["X->H"].sum()) + readout
    # each output row reads ~120 hidden cells with independent rates: rank m * n_out = 10 = E, affine -> "one"
    assert cert.full_rank == cert.plastic_rank == 10 and cert.affine and cert.verdict == "one"
