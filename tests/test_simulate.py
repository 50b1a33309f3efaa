"""``ns.simulate`` for every dynamics, against numpy written out here, and ``neurosubset simulate`` -> R.nc.

References: the steady fixed point by ``numpy.linalg.solve(I - W, W_in x)`` on a recurrent matrix assembled by hand
from the weights, the feed-forward layers and the discrete recursion as explicit loops. (Continuous trajectories
are checked in tests/test_dynamics_continuous.py.)
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import neurosubset as ns
from neurosubset.cli import main
from neurosubset.responses import read_responses, weights_dataset

ROOT = Path(__file__).resolve().parents[1]
RTOL = 1e-10  # one LU / a few products in float64: agreement to rounding


def _draw(circuit, m, seed=0):
    rng = np.random.default_rng(seed)
    return circuit.sample_weights(rng), circuit.sample_probes(m, rng)


def test_steady_rates_are_the_fixed_point():
    c = ns.Circuit.from_toml(ROOT / "circuits" / "ei_isn.toml")  # X -> E, I (recurrent) -> OUT
    w, x = _draw(c, m=4)
    n_e, n_i = c.region["E"].size, c.region["I"].size
    rec = np.block([[w["E->E"], w["I->E"]], [w["E->I"], w["I->I"]]])
    drive = np.vstack([w["X->E"], w["X->I"]]) @ x.T  # (E + I, m)
    r = np.linalg.solve(np.eye(n_e + n_i) - rec, drive).T  # (m, E + I)
    ds = ns.simulate(c, w, x)
    assert "time" not in ds.dims and ds.rate_E.dims == ("probe", "E_neuron")
    np.testing.assert_allclose(ds.rate_E.values, r[:, :n_e], rtol=RTOL)
    np.testing.assert_allclose(ds.rate_I.values, r[:, n_e:], rtol=RTOL)
    np.testing.assert_allclose(ds.output.values, r[:, :n_e] @ w["E->OUT"].T, rtol=RTOL)
    assert ds.attrs["dynamics"] == "steady"


def test_feedforward_rates_are_the_layers():
    c = ns.feedforward([3, 4, 2], "relu")
    w, x = _draw(c, m=5)
    h = np.maximum(x @ w["W1"].T, 0.0)
    ds = ns.simulate(c, w, x, regions=["L1"])
    np.testing.assert_allclose(ds.rate_L1.values, h, rtol=RTOL)
    np.testing.assert_allclose(ds.output.values, h @ w["W2"].T, rtol=RTOL)
    assert "rate_L2" not in ds


def test_discrete_rates_over_time_are_the_recursion():
    c = ns.linear_rnn(4, 2, 1, steps=3)
    w, x = _draw(c, m=2)
    h, hs = np.zeros((2, 4)), []
    for t in range(3):
        h = h @ w["W"].T + x[:, t] @ w["B"].T
        hs.append(h)
    hs = np.stack(hs, axis=1)  # (m, T, n)
    ds = ns.simulate(c, w, x)
    assert ds.output.dims == ("probe", "time", "neuron") and ds.time.values.tolist() == [1, 2, 3]
    np.testing.assert_allclose(ds.rate_rec.values, hs, rtol=RTOL)
    np.testing.assert_allclose(ds.output.values, hs @ w["C"].T, rtol=RTOL)
    np.testing.assert_allclose(ds.output.sel(time=3).values, ns.dynamics.forward(
        c, {k: __import__("torch").as_tensor(v) for k, v in w.items()},
        __import__("torch").as_tensor(x)).numpy(), rtol=RTOL)


def test_bad_arguments_are_refused_in_one_line():
    c = ns.feedforward([3, 4, 2])
    w, x = _draw(c, m=2)
    with pytest.raises(ns.ParameterError, match="'times' parameter applies to dynamics with time"):
        ns.simulate(c, w, x, times=[1])
    with pytest.raises(ns.NeurosubsetError, match="Non-input region 'L0'"):
        ns.simulate(c, w, x, regions=["L0"])
    with pytest.raises(ns.ParameterError, match=r"'times' parameter must be increasing values of \[1.0, 2.0\]"):
        rnn = ns.linear_rnn(2, 1, 1, steps=2)
        ns.simulate(rnn, *_draw(rnn, m=1), times=[5])


def test_cli_simulate_writes_the_responses_file_localize_reads(tmp_path):
    c = ns.Circuit.from_toml(ROOT / "circuits" / "ca3_ca1.toml")
    w, x = _draw(c, m=6, seed=1)
    weights_dataset(c, w).to_netcdf(tmp_path / "W.nc", engine="h5netcdf")
    xr.Dataset({"probes": (("probe", "input"), x)}).to_netcdf(tmp_path / "P.nc", engine="h5netcdf")
    recorded = [r.name for r in c.regions if r.role == "output"]
    argv = ["simulate", str(ROOT / "circuits" / "ca3_ca1.toml"), "--weights", str(tmp_path / "W.nc"),
            "--probes", str(tmp_path / "P.nc"), "--regions", ",".join(recorded), "--out", str(tmp_path / "R.nc")]
    assert main(argv) == 0
    probes, responses, noise = read_responses(tmp_path / "R.nc", c)
    np.testing.assert_array_equal(probes, x)
    expected = ns.simulate(c, w, x, regions=recorded)
    for r in recorded:
        np.testing.assert_array_equal(responses[r], expected[f"rate_{ns._schema.var_name(r)}"].values)
    assert noise is None
    assert main(argv) != 0  # the file exists now: refused without --overwrite


def test_simulate_takes_one_trial_of_a_sparse_fit():
    """A student fitted in the sparse weights layout (``res.student[k][i]``: scipy.sparse CSR) simulates as its
    dense matrices: the fixed point solved here from the CSR matrices made dense by scipy, and the dense layout's
    student of the same draw (fitted values equal to rounding); a whole SparseWeights is refused in one line."""
    c = ns.Circuit.from_toml(ROOT / "circuits" / "ei_isn.toml")
    alloc = ns.allocate(c, 9, within=["E->OUT"], seed=0)  # affine: the exact solve, equal in both layouts
    dense, sparse = (ns.fit(c, alloc, m=3, trials=2, seed=1,
                            options=ns.FitOptions(weights_layout=lay, dale=False, stable=False))
                     for lay in ("dense", "sparse"))
    i = 1
    w = {k: v[i] for k, v in sparse.student.items()}
    assert all(hasattr(v, "tocsr") for v in w.values())  # scipy.sparse matrices
    x = sparse.trials.probes[i]
    ds = ns.simulate(c, w, x)
    a = {k: v.toarray() for k, v in w.items()}
    n_e = c.region["E"].size
    rec = np.block([[a["E->E"], a["I->E"]], [a["E->I"], a["I->I"]]])
    r = np.linalg.solve(np.eye(rec.shape[0]) - rec, np.vstack([a["X->E"], a["X->I"]]) @ x.T).T
    np.testing.assert_allclose(ds.rate_E.values, r[:, :n_e], rtol=RTOL)
    np.testing.assert_allclose(ds.output.values, r[:, :n_e] @ a["E->OUT"].T, rtol=RTOL)
    ref = ns.simulate(c, {k: v[i] for k, v in dense.student.items()}, dense.trials.probes[i])
    np.testing.assert_allclose(ds.output.values, ref.output.values, rtol=1e-9)
    with pytest.raises(ns.ParameterError, match=r"Weight '.*' in 'weights' is a SparseWeights of 2 trial") as info:
        ns.simulate(c, sparse.student, x)
    assert "\n" not in str(info.value)
