"""neurosubset.dynamics.sparse: structure as index arrays, sparse draws, the steady solve and Jacobian through splu.

References are independent of the sparse code: the circuit's dense structure (Circuit.structure), the dense
steady path (neurosubset.dynamics.steady, torch LU) and numpy's dense solve.
"""
import numpy as np
import pytest
import torch

from neurosubset._checks import ParameterError
from neurosubset.allocation import Allocation
from neurosubset.dynamics import sparse as sp
from neurosubset.dynamics.adjoint import FIXED_POINT, plastic_layout
from neurosubset.dynamics.steady import Steady
from conftest import sparse_ei


def _ei(n_e=240, n_i=60, seed=3, **extra):
    """A steady E/I circuit of a few hundred neurons with every kind of structure the sparse path reads."""
    return sparse_ei(n_e, n_i, n_x=12, n_out=4, p_in=0.3, p_rec=0.1, p_out=0.2, seed=seed, **extra)


def test_sparse_structure_is_the_circuits_structure():
    for seed in (0, 3):
        c = _ei(seed=seed)
        st = sp.sparse_structure(c)
        for name in c.weight_names:
            rows, cols = st[name]
            mask = np.zeros(c.shape(name), dtype=bool)
            mask[rows, cols] = True
            assert rows.size == c.structure[name].sum()  # no duplicates
            np.testing.assert_array_equal(mask, c.structure[name])
            order = rows * c.shape(name)[1] + cols
            assert (np.diff(order) > 0).all()  # row-major, the order of np.nonzero / theta


def test_sparse_structure_chunks_reproduce_the_dense_stream(monkeypatch):
    c = _ei()
    monkeypatch.setattr(sp, "_CHUNK", 1000)  # several rows per chunk, many chunks
    st = sp.sparse_structure(c)
    for name in c.weight_names:
        np.testing.assert_array_equal(np.stack(np.nonzero(c.structure[name])), np.stack(st[name]))


def test_sparse_draws_follow_the_weight_distribution():
    c = _ei(n_e=2000, n_i=500, dynamics="discrete")  # the same distribution, no spec check to wait for
    st = sp.sparse_structure(c)
    w = sp.sample_sparse_weights(c, np.random.default_rng(0), st)
    assert (w["E->E"] > 0).all() and (w["I->E"] < 0).all()  # Dale's law, half-normal
    sd = 0.3 / np.sqrt(0.1 * 2000)
    # |N(0, sd^2)|: mean sd sqrt(2/pi), second moment sd^2 (about 40,000 synapses: 1.5% tolerance is > 5 SE)
    assert np.mean(w["E->E"]) == pytest.approx(sd * np.sqrt(2 / np.pi), rel=0.015)
    assert np.mean(w["E->E"] ** 2) == pytest.approx(sd**2, rel=0.03)
    np.testing.assert_array_equal(w["F->E"], [0.5, -0.25])  # fixed projection: its values
    counts = np.array([2.0, 1.0, 4.0, 1.0])
    ratio = np.abs(w["X->F"]) / counts  # init 'count': SD proportional to the count
    assert ratio.shape == (4,) and np.all(ratio > 0)


def _dense_reference(c, st, vals, x, alloc, split):
    w = sp.dense_weights(c, st, vals)
    layout = plastic_layout(c, alloc, FIXED_POINT)
    if split:
        layout["split"] = True
    y, j = Steady().adjoint_jacobian(c, layout, {k: torch.as_tensor(v)[None] for k, v in w.items()},
                                     torch.as_tensor(x)[None], with_outputs=True)
    return y[0].numpy(), j[0].numpy()


@pytest.mark.parametrize("split, method", [(False, "splu"), (True, "splu"), (True, "gmres")])
def test_sparse_steady_matches_the_dense_path(split, method):
    c = _ei()
    st = sp.sparse_structure(c)
    rng = np.random.default_rng(1)
    plastic_rng = np.random.default_rng(2)
    masks = {k: c.eligible[k] & (plastic_rng.random(c.shape(k)) < 0.3) for k in c.weight_names}
    alloc = Allocation.from_masks(c, masks)
    assert all(alloc.masks[k].any() for k in c.weight_names if not c.projection[k].fixed)
    for _ in range(3):
        vals = sp.sample_sparse_weights(c, rng, st)
        x = rng.standard_normal((5, c.n_in))
        y_d, j_d = _dense_reference(c, st, vals, x, alloc, split)
        y_s, j_s = sp.sparse_steady(c, st, vals, x, sp.plastic_positions(st, alloc.masks), method=method)
        assert y_s.shape == y_d.shape == (5 * 4,) and j_s.shape == j_d.shape == (20, alloc.size)
        assert np.abs(y_s - y_d).max() <= 1e-10 * np.abs(y_d).max()
        assert np.abs(j_s - j_d).max() <= 1e-10 * np.abs(j_d).max()


def test_sparse_steady_outputs_solve_the_fixed_point():
    c = _ei()
    st = sp.sparse_structure(c)
    rng = np.random.default_rng(4)
    vals = sp.sample_sparse_weights(c, rng, st)
    x = rng.standard_normal((3, c.n_in))
    w = sp.dense_weights(c, st, vals)
    a, b = c.blocks(w, FIXED_POINT, FIXED_POINT), c.blocks(w, FIXED_POINT, "input")
    r = np.linalg.solve(np.eye(a.shape[0]) - a, b @ x.T)  # numpy's dense LAPACK solve
    out = c.slices(FIXED_POINT)["OUT"]
    y, jac = sp.sparse_steady(c, st, vals, x)
    assert jac is None
    np.testing.assert_allclose(y, r[out].T.reshape(-1), rtol=1e-10, atol=1e-12 * np.abs(r).max())


def test_sparse_steady_singular_and_bad_input():
    c = _ei()
    st = sp.sparse_structure(c)
    vals = {k: np.zeros_like(v, dtype=float) for k, v in sp.sample_sparse_weights(c, np.random.default_rng(0),
                                                                                    st).items()}
    e = c.slices(FIXED_POINT)["E"].start
    rows, cols = st["E->E"]
    vals["E->E"][(rows == 0) & (cols == 0)] = 1.0  # w_00 = 1: I - W singular
    assert ((rows == 0) & (cols == 0)).any() and e == 0
    y, j = sp.sparse_steady(c, st, vals, np.ones((2, c.n_in)), {"E->E": np.array([0])})
    assert not np.isfinite(y).all() and not np.isfinite(j).all()
    with pytest.raises(ParameterError, match=r"probes.*\(m, 12\)"):
        sp.sparse_steady(c, st, vals, np.ones((2, 3)))
    with pytest.raises(ParameterError, match=r"values\['E->E'\]"):
        sp.sparse_steady(c, st, {**vals, "E->E": vals["E->E"][:-1]}, np.ones((2, c.n_in)))
    with pytest.raises(ParameterError, match=r"plastic\['E->E'\] must be increasing"):
        sp.sparse_steady(c, st, vals, np.ones((2, c.n_in)), {"E->E": np.array([3, 1])})
    with pytest.raises(ParameterError, match=r"'method' parameter must be one of \['splu', 'gmres'\]"):
        sp.sparse_steady(c, st, vals, np.ones((2, c.n_in)), method="cg")
    with pytest.raises(ParameterError, match=r"'rtol' parameter must be a number in \(0, 1\)"):
        sp.sparse_steady(c, st, vals, np.ones((2, c.n_in)), method="gmres", rtol=0)
    with pytest.raises(ParameterError, match=r"masks\['E->E'\]"):
        sp.plastic_positions(st, {"E->E": ~c.structure["E->E"]})
