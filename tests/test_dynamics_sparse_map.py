"""neurosubset.dynamics.sparse_map: the sparse layout's draws, plastic map and dense/sparse switch.

References are independent of the sparse code: Circuit.sample_weights (the dense draw), the dense PlasticMap
(torch LU and its closed-form adjoint), and is_affine's second differences.
"""
import warnings

import numpy as np
import pytest
import torch

import neurosubset as ns
from neurosubset._checks import ParameterError, StabilityWarning
from neurosubset.dynamics import DTYPE, PlasticMap, is_affine
from neurosubset.dynamics import sparse_map as sm
from neurosubset.dynamics.stability import max_real_eig
from conftest import sparse_ei


def _ei(n_e=40, n_i=10, seed=3, **extra):
    """A small steady E/I circuit with every kind of structure the sparse layout reads (Bernoulli, autapse-free,
    data-given with init count, fixed, per-synapse signs, dense input and read-out)."""
    return sparse_ei(n_e, n_i, n_x=6, n_out=3, p_in=0.4, p_rec=0.2, p_out=0.5, p_ii=0.3, seed=seed,
                     signed_readout=True, **extra)


def _readout_plus_ee(c, ee=30):
    """Every read-out synapse from E plastic (free rows at small m) plus ``ee`` spread-rows E->E synapses."""
    masks = dict(ns.allocate(c, ee, strategy="spread-rows", within=["E->E"], seed=1).masks)
    masks["E->OUT"] = c.eligible["E->OUT"]
    return ns.Allocation.from_masks(c, masks)


def _near_unstable_ei(gain=0.56):
    """An E/I circuit whose E + I loop (300 neurons, above SPARSE_EIG_MIN: ARPACK) is unstable in about a quarter of
    its draws (E->E gain raised from 0.3)."""
    spec = sparse_ei(240, 60, n_x=6, n_out=3, p_in=0.2, p_rec=0.05, p_out=0.2, seed=3).to_dict()
    for proj in spec["projections"]:
        if (proj["pre"], proj["post"]) == ("E", "E"):
            proj["gain"] = gain
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", StabilityWarning)  # near its limit, on purpose
        return ns.Circuit.from_dict(spec)

def test_sparse_draws_are_the_dense_draws(monkeypatch):
    c = _ei()
    st = sm.structure_of(c)
    monkeypatch.setattr(sm, "_CHUNK", 17)  # many chunks of rows: the stream must not depend on them
    for seed in (0, 5):
        dense_rng, sparse_rng = np.random.default_rng(seed), np.random.default_rng(seed)
        for _ in range(2):  # consecutive draws from one generator, as a trial's teacher then student
            dense = c.sample_weights(dense_rng)
            values = sm.draw_sparse_weights(c, sparse_rng, st)
            for name, w in sm.to_dense(c, st, values).items():
                np.testing.assert_array_equal(w, dense[name])
        assert dense_rng.standard_normal() == sparse_rng.standard_normal()  # the probes drawn next agree too


def _agrees_with_the_dense_map(c, st, alloc, system, frozen, probes, rng):
    """Outputs and Jacobian of the sparse map at random plastic values within 1e-10 of the dense PlasticMap's on the
    same (densified) frozen weights; returns the sparse map, the values and the dense reference."""
    fmap = sm.SparsePlasticMap(c, alloc, system, frozen, probes)
    dense = PlasticMap(c, alloc, {k: torch.as_tensor(np.stack([sm.to_dense(c, st, f)[k] for f in frozen]))
                                  for k in c.weight_names}, probes)
    theta = torch.as_tensor(rng.standard_normal((3, alloc.size)) * 0.1, dtype=DTYPE)
    f, jac = fmap.value_and_jacobian(theta)
    f_ref, jac_ref = dense.value_and_jacobian(theta)
    assert float((f - f_ref).norm() / f_ref.norm()) < 1e-10
    assert float((jac - jac_ref).norm() / jac_ref.norm()) < 1e-10
    return fmap, theta, f_ref, jac_ref


@pytest.mark.parametrize("method", ["splu", pytest.param("gmres", marks=pytest.mark.slow)])
def test_sparse_map_matches_the_dense_map(method):
    c = _ei()
    st = sm.structure_of(c)
    alloc = _readout_plus_ee(c)
    rng = np.random.default_rng(1)
    frozen = np.stack([sm.draw_sparse_weights(c, rng, st) for _ in range(3)])
    probes = torch.as_tensor(rng.standard_normal((3, 4, c.n_in)), dtype=DTYPE)
    system = sm.SparseSteady(c, st, sm.plastic_value_positions(c, st, alloc), method=method)
    fmap, theta, f_ref, jac_ref = _agrees_with_the_dense_map(c, st, alloc, system, frozen, probes, rng)
    sel = torch.tensor([2, 0, 2])  # repeats: the LM's restarts of one trial
    sub = fmap.subset(sel)
    assert float((sub(theta[sel]) - f_ref[sel]).norm() / f_ref[sel].norm()) < 1e-10
    assert float((fmap.jacobian(theta[sel], sel) - jac_ref[sel]).norm() / jac_ref[sel].norm()) < 1e-10


def test_sparse_discrete_map_matches_the_dense_map():
    # h_t = A h_(t-1) + B x_t, y = C h_T + D x_T: plastic synapses in A (E->E, I->E), B (X->E), C and D (read-out)
    c = _ei(dynamics="discrete", steps=4)
    st = sm.structure_of(c)
    masks = dict(ns.allocate(c, 30, strategy="spread-rows", within=["E->E", "I->E", "X->E"], seed=1).masks)
    masks["E->OUT"], masks["X->OUT"] = c.eligible["E->OUT"], c.eligible["X->OUT"]
    alloc = ns.Allocation.from_masks(c, masks)
    assert all(alloc.counts[k] for k in ("E->E", "I->E", "X->E"))
    rng = np.random.default_rng(1)
    frozen = np.stack([sm.draw_sparse_weights(c, rng, st) for _ in range(3)])
    probes = torch.as_tensor(rng.standard_normal((3, 4, c.steps, c.n_in)), dtype=DTYPE)
    system = sm.sparse_system(c, st, sm.plastic_value_positions(c, st, alloc))
    assert isinstance(system, sm.SparseDiscrete)
    fmap, theta, f_ref, jac_ref = _agrees_with_the_dense_map(c, st, alloc, system, frozen, probes, rng)
    sel = torch.tensor([1, 1, 0])
    assert float((fmap.jacobian(theta[sel], sel) - jac_ref[sel]).norm() / jac_ref[sel].norm()) < 1e-10

@pytest.mark.parametrize("big", [False, True], ids=["dense-eigvals", "arpack"])
def test_sparse_max_real_eig_equals_the_dense_eigenvalues(big):
    c = _near_unstable_ei() if big else _ei()
    st = sm.structure_of(c)
    assert (sum(c.region[r].size for r in ("E", "I")) > sm.SPARSE_EIG_MIN) == big
    rng = np.random.default_rng(0)
    got, ref = [], []
    for _ in range(6 if big else 3):
        values = sm.draw_sparse_weights(c, rng, st)
        got.append(sm.sparse_max_real_eig(c, st, values))
        ref.append(float(max_real_eig(c, sm.to_dense(c, st, values))))  # numpy's dense eigenvalues
    np.testing.assert_allclose(got, ref, rtol=1e-8)
    if big:  # both sides of the limit among these draws
        assert min(ref) < 1.0 < max(ref)

def test_the_switch_picks_dense_for_small_and_sparse_for_large_sparse_circuits():
    small = _ei()
    assert sm.choose_layout(small) is sm.WeightsLayout.DENSE
    assert sm.choose_layout(small, "sparse") is sm.WeightsLayout.SPARSE
    big = ns.Circuit.from_dict({  # above the crossover, 2% connectivity, no loop (no spec check to wait for)
        "name": "wide", "dynamics": "steady",
        "regions": {"X": {"size": 50, "role": "input"}, "H": {"size": 6000}, "OUT": {"size": 5, "role": "output"}},
        "projections": [{"pre": "X", "post": "H", "p": 0.02}, {"pre": "H", "post": "OUT", "p": 0.02}]})
    assert sm.choose_layout(big) is sm.WeightsLayout.SPARSE
    assert sm.choose_layout(big, "dense") is sm.WeightsLayout.DENSE
    assert "structure" not in big.__dict__  # loaded without the dense masks
    assert sm.choose_layout(_ei(dynamics="discrete", steps=3), "sparse") is sm.WeightsLayout.SPARSE
    mid = {"name": "mid", "regions": {"X": {"size": 50, "role": "input"}, "H": {"size": 3000},
                                      "OUT": {"size": 5, "role": "output"}},
           "projections": [{"pre": "X", "post": "H", "p": 0.02}, {"pre": "H", "post": "OUT", "p": 0.02}]}
    # 3,055 neurons: between the discrete crossover (2,000) and the steady one (5,000)
    discrete, steady = (ns.Circuit.from_dict({**mid, **dyn}) for dyn in ({"dynamics": "discrete", "steps": 3},
                                                                        {"dynamics": "steady"}))
    assert sm.choose_layout(discrete) is sm.WeightsLayout.SPARSE
    assert sm.choose_layout(steady) is sm.WeightsLayout.DENSE
    relu = _ei(dynamics="discrete", steps=3, nonlinearity="relu")
    with pytest.raises(ParameterError, match="needs a steady or discrete linear circuit") as info:
        sm.choose_layout(relu, "sparse")
    assert "\n" not in str(info.value)
    with pytest.raises(ParameterError, match=r"must be one of \['auto', 'dense', 'sparse'\]"):
        sm.choose_layout(small, "csr")


def test_sparse_affinity_from_the_region_graph_agrees_with_second_differences():
    c = _ei()
    for within in (["X->OUT", "F->OUT"], ["E->E"], ["E->I", "E->OUT"], ["X->F"]):
        alloc = ns.allocate(c, 4, within=within, seed=2)
        assert sm.sparse_is_affine(c, alloc) == is_affine(c, alloc), within
