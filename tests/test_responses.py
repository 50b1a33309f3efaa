"""Fitting recorded responses (neurosubset.responses): region rates, localize, fit_responses, files, CLI.

References are independent of the code under test: the ground truth that made the synthetic recording, numpy
solves of the fixed point, per-row numpy least squares of a single linear layer (ranks and chi-squares), the
chi2 distribution of scipy.stats, torch autograd against the closed-form Jacobian.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import xarray as xr
from scipy import stats

import neurosubset as ns
from neurosubset._schema import BOUNDED_DECISION
from neurosubset.cli import main
from neurosubset.responses import (fit_responses, localize, projection_candidates, region_candidates, region_rates,
                                   responses_dataset, weights_dataset)
from neurosubset.responses.rates import RecordedMap

MATCH_TOL = 1e-8  # the toolkit's match tolerance: matched residuals sit at 1e-13 .. 1e-16, unmatched >= 1e-3
GAP = 1e-4  # an unmatched candidate's relative residual is O(0.1) here; far above MATCH_TOL
QUICK_LM = ns.Auto(restarts=1, max_rounds=1, iterations=40)  # the LM only has to fail where no solution exists

_REGIONS = """
[regions.X]
size = 6
role = "input"
[regions.A]
size = 6
role = "hidden"
[regions.B]
size = 5
role = "hidden"
[regions.OUT]
size = 2
role = "output"
"""
_PROJ = """
[[projections]]
pre = "{pre}"
post = "{post}"
p = {p}
gain = {gain}
"""


def _circuit(dynamics: str, *, recurrent: bool = True, nonlinearity: str = "linear", sign: bool = False
             ) -> ns.Circuit:
    """X -> A (-> A) -> B -> OUT, small enough for a test; ``sign``: A is excitatory (Dale's law)."""
    edges = [("X", "A", 1.0, 1.0)] + ([("A", "A", 0.5, 0.5)] if recurrent else []) + [("A", "B", 1.0, 1.0),
                                                                                       ("B", "OUT", 1.0, 1.0)]
    timing = "tau = 0.02\nduration = 0.06\ndt = 0.01\nreadout = [0.03, 0.06]\n" if dynamics == "continuous" else ""
    text = (f'name = "toy_{dynamics}"\ndynamics = "{dynamics}"\nnonlinearity = "{nonlinearity}"\nsteps = 3\n'
            f"seed = 1\n" + timing + (_REGIONS.replace('role = "hidden"\n', 'role = "hidden"\nsign = 1\n', 1)
                                      if sign else _REGIONS)
            + "".join(_PROJ.format(pre=a, post=b, p=p, gain=g) for a, b, p, g in edges))
    return ns.Circuit.from_toml_text(text)


def _record(circuit, weights, probes, regions, *, time=False):
    t = {k: torch.as_tensor(v) for k, v in weights.items()}
    return {r: v.numpy() for r, v in region_rates(circuit, t, torch.as_tensor(probes), regions, time=time).items()}


def _changed(circuit, w0, projection, rng, fraction=1.0):
    """The weights after learning: ``fraction`` of ``projection``'s synapses moved by N(0, init SD^2)."""
    w1 = {k: v.copy() for k, v in w0.items()}
    present = circuit.structure[projection] & (rng.random(w0[projection].shape) < fraction)
    w1[projection] = w0[projection] + present * rng.standard_normal(present.shape) * circuit.init_std[projection]
    return w1


# ------------------------------------------------------------------------------------------------ region rates
def test_region_rates_match_forward_and_a_numpy_fixed_point(rng):
    for dyn in ("feedforward", "discrete", "steady"):
        c = _circuit(dyn, recurrent=dyn != "feedforward")
        w = c.sample_weights(rng)
        x = c.sample_probes(4, rng)
        rates = _record(c, w, x, ["A", "B", "OUT"])
        out = ns.dynamics.forward(c, {k: torch.as_tensor(v) for k, v in w.items()}, torch.as_tensor(x)).numpy()
        np.testing.assert_allclose(rates["OUT"], out, rtol=1e-13, atol=1e-14, err_msg=dyn)
    # continuous: forward reads out at every read-out time, time-major; region_rates(time=True) has them per time
    c = _circuit("continuous")
    w, x = c.sample_weights(rng), c.sample_probes(4, rng)
    rates = _record(c, w, x, ["A", "OUT"], time=True)
    out = ns.dynamics.forward(c, {k: torch.as_tensor(v) for k, v in w.items()}, torch.as_tensor(x)).numpy()
    assert rates["A"].shape == (4, 2, 6)
    np.testing.assert_allclose(rates["OUT"].reshape(4, -1), out, rtol=1e-13, atol=1e-14)
    # steady: r = W r + W_in x solved by numpy on the hand-built block matrix (A: 0..5, B: 6..10, OUT: 11..12)
    c = _circuit("steady")
    w, x = c.sample_weights(rng), c.sample_probes(4, rng)
    big, w_in = np.zeros((13, 13)), np.zeros((13, 6))
    big[0:6, 0:6], big[6:11, 0:6], big[11:13, 6:11] = w["A->A"], w["A->B"], w["B->OUT"]
    w_in[0:6] = w["X->A"]
    r = np.linalg.solve(np.eye(13) - big, w_in @ x.T).T
    rates = _record(c, w, x, ["A", "B"])
    np.testing.assert_allclose(rates["A"], r[:, 0:6], rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(rates["B"], r[:, 6:11], rtol=1e-12, atol=1e-13)
    # discrete, every step: h_A(t) = W_AA h_A(t-1) + W_XA x(t), h_B(t) = W_AB h_A(t-1), h(0) = 0
    c = _circuit("discrete")
    w, x = c.sample_weights(rng), c.sample_probes(2, rng)
    rates = _record(c, w, x, ["A", "B"], time=True)
    ha, hb = np.zeros((2, 6)), np.zeros((2, 5))
    for t in range(3):
        ha, hb = ha @ w["A->A"].T + x[:, t] @ w["X->A"].T, ha @ w["A->B"].T
        np.testing.assert_allclose(rates["A"][:, t], ha, rtol=1e-12, atol=1e-13)
        np.testing.assert_allclose(rates["B"][:, t], hb, rtol=1e-12, atol=1e-13)


def test_closed_form_jacobian_equals_autograd(rng):
    c = _circuit("steady")
    union = ns.Allocation.from_masks(c, {"A->A": c.structure["A->A"], "A->B": c.structure["A->B"]})
    w0 = {k: torch.as_tensor(v) for k, v in c.sample_weights(rng).items()}
    mask = torch.as_tensor(rng.random((3, union.size)) < 0.6, dtype=torch.float64)
    scale = torch.as_tensor(rng.uniform(0.5, 2.0, 5 * 11))
    fmap = RecordedMap(c, union, w0, torch.as_tensor(c.sample_probes(5, rng)), ["A", "B"], False, mask, scale)
    assert fmap._layout is not None  # the closed form is what runs
    theta = torch.as_tensor(rng.standard_normal((3, union.size)) * 0.2)
    value, jac = fmap.value_and_jacobian(theta)
    np.testing.assert_allclose(value.numpy(), fmap(theta).numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(jac.numpy(), fmap.jacobian(theta, method="autograd").numpy(), rtol=1e-10, atol=1e-12)


# ------------------------------------------------------------------------------------------------ localize
@pytest.mark.parametrize("dynamics,time", [("steady", False), ("discrete", True), ("feedforward", False),
                                           ("continuous", True)])
def test_localize_finds_the_changed_projection(dynamics, time):
    # ground truth: only A->B changed; A, B and OUT recorded. A->B explains everything; every other projection
    # leaves B's mismatch (B depends on A->B given the recorded A, and X->A / A->A would also move the recorded A)
    rng = np.random.default_rng(7)
    c = _circuit(dynamics, recurrent=dynamics != "feedforward")
    w0 = c.sample_weights(rng)
    w1 = _changed(c, w0, "A->B", rng)
    x = c.sample_probes(20, rng)
    rec = _record(c, w1, x, ["A", "B", "OUT"], time=time)
    ds = localize(c, w0, x, rec, projection_candidates(c), holdout=5, solver=QUICK_LM)
    assert str(ds.candidate[0].values) == "A->B" and int(ds.place[0]) == 1, ds[["residual", "place"]]
    best = ds.sel(candidate="A->B")
    assert bool(best.matched) and float(best.heldout_residual) < MATCH_TOL, float(best.heldout_residual)
    assert best.decision_kind.item() == "exact"  # affine in A->B: least squares
    others = ds.drop_sel(candidate="A->B")
    assert not others.matched.any(), others[["residual", "matched"]]
    assert (others.residual > GAP).all(), others.residual.values
    # identifiable: A's activity on the 15 fit probes has rank 6 (6 inputs), each B row has 6 plastic synapses
    assert bool(best.identifiable) and int(best["rank"]) == int(best.n_plastic) == 30
    np.testing.assert_allclose(best.theta.values[best.plastic.values],
                               w1["A->B"][c.structure["A->B"]], rtol=1e-9, atol=1e-12)


def test_localize_ranks_ties_by_fewer_synapses():
    # per-region candidates over the same truth: region B (= A->B only) and a superset candidate both match
    rng = np.random.default_rng(3)
    c = _circuit("feedforward", recurrent=False)
    w0 = c.sample_weights(rng)
    w1 = _changed(c, w0, "A->B", rng)
    x = c.sample_probes(30, rng)
    rec = _record(c, w1, x, ["A", "B", "OUT"])  # without A, X->A could stand in for A->B (B = W_AB W_XA x)
    cands = region_candidates(c)
    cands["A->B + B->OUT"] = ns.Allocation.from_masks(c, {"A->B": c.structure["A->B"],
                                                          "B->OUT": c.structure["B->OUT"]})
    ds = localize(c, w0, x, rec, cands)
    assert list(ds.candidate.values[:2]) == ["B", "A->B + B->OUT"], ds[["residual", "n_plastic", "place"]]
    assert ds.matched.values[:2].all() and not ds.matched.values[2:].any()


def test_dale_keeps_the_sign_of_fitted_synapses():
    # A is excitatory: A->B synapses stay >= 0 under Dale's law. A change that keeps the signs is found by bounded
    # least squares; one that makes A->B synapses negative cannot be matched with dale=True, only without it
    rng = np.random.default_rng(2)
    c = _circuit("feedforward", recurrent=False, sign=True)
    w0 = c.sample_weights(rng)
    x = c.sample_probes(16, rng)
    cand = projection_candidates(c)["A->B"]
    for flip, dale, matched in ((False, True, True), (True, True, False), (True, False, True)):
        w1 = {k: v.copy() for k, v in w0.items()}
        w1["A->B"] = np.abs(w0["A->B"] + rng.standard_normal(w0["A->B"].shape) * c.init_std["A->B"])
        if flip:
            w1["A->B"][0, :3] *= -1
        ds = fit_responses(c, cand, x, _record(c, w1, x, ["A", "B"]), w0, dale=dale)
        assert bool(ds.matched) == matched, (flip, dale, float(ds.residual))
        assert (int(ds.decision) == BOUNDED_DECISION) == dale
        if dale:
            assert (ds.theta.values >= 0).all(), ds.theta.values.min()


def test_candidates_solved_in_chunks_give_the_same_answer(monkeypatch):
    # large problems are solved in chunks of candidates (memory): one candidate per chunk must change nothing
    rng = np.random.default_rng(4)
    c = _circuit("feedforward", recurrent=False)
    w0 = c.sample_weights(rng)
    x = c.sample_probes(12, rng)
    noise = 0.01
    rec = {r: v + noise * rng.standard_normal(v.shape)
           for r, v in _record(c, _changed(c, w0, "A->B", rng), x, ["A", "B", "OUT"]).items()}
    together = localize(c, w0, x, rec, region_candidates(c), noise=noise)
    monkeypatch.setattr(ns.responses.fitting, "_CHUNK_BYTES", 1)
    alone = localize(c, w0, x, rec, region_candidates(c), noise=noise)
    for name in ("residual", "chi_square", "heldout_chi_square", "theta"):
        np.testing.assert_allclose(alone[name].values, together[name].values, rtol=1e-9, atol=1e-12, err_msg=name)
    assert (alone["rank"].values == together["rank"].values).all() and (alone.place == together.place).all()


# ------------------------------------------------------------------------------------------------ identifiability
def _one_layer_rows(rng, counts, d=6):
    c = ns.feedforward([d, len(counts)])
    masks = np.zeros((len(counts), d), dtype=bool)
    for i, k in enumerate(counts):
        masks[i, rng.choice(d, size=k, replace=False)] = True
    return c, ns.Allocation.from_masks(c, {"W1": masks}), masks


@pytest.mark.parametrize("m", [2, 3, 8])
def test_identifiability_against_a_hand_computed_rank(m):
    # y = W x on m probes: the Jacobian of row i's plastic entries is X[:, A_i] (m x k_i), rows independent, so
    # rank = sum_i rank(X[:, A_i]) (= sum_i min(k_i, m) for generic X), computed here by numpy
    rng = np.random.default_rng(m)
    c, alloc, masks = _one_layer_rows(rng, [4, 2, 0, 3])
    w0 = c.sample_weights(rng)
    w1 = _changed(c, w0, "W1", rng)
    w1["W1"] = np.where(masks, w1["W1"], w0["W1"])  # only the allocation's synapses changed
    x = c.sample_probes(m, rng)
    ds = fit_responses(c, alloc, x, _record(c, w1, x, ["L1"]), w0)
    hand = sum(np.linalg.matrix_rank(x[:, row]) for row in masks if row.any())
    assert int(ds["rank"]) == hand == sum(min(int(k), m) for k in masks.sum(1)), (int(ds["rank"]), hand)
    assert bool(ds.identifiable) == (hand == alloc.size) and bool(ds.matched)
    assert ds.attrs["decision_kind"] == "exact" and float(ds.residual) < MATCH_TOL


def test_region_residuals_and_fitted_values_of_one_allocation(rng):
    # truth: A->B changed; candidate B->OUT cannot touch B, so B keeps its before-learning error, and the read-out
    # rows are the least-squares fits of the recorded OUT on the before-learning B (numpy lstsq per row)
    c = _circuit("steady")
    w0 = c.sample_weights(rng)
    w1 = _changed(c, w0, "A->B", rng)
    x = c.sample_probes(12, rng)
    rec = _record(c, w1, x, ["B", "OUT"])
    ds = fit_responses(c, projection_candidates(c)["B->OUT"], x, rec, w0)
    b0 = _record(c, w0, x, ["B"])["B"]
    hand = np.linalg.norm(b0 - rec["B"]) / np.linalg.norm(rec["B"])
    np.testing.assert_allclose(float(ds.region_residual.sel(region="B")), hand, rtol=1e-9)
    rows = np.stack([np.linalg.lstsq(b0, rec["OUT"][:, i], rcond=None)[0] for i in range(2)])
    np.testing.assert_allclose(ds.theta.values, rows.ravel(), rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(ds.theta_before.values, w0["B->OUT"].ravel(), rtol=0, atol=0)
    assert not bool(ds.matched) and bool(ds.identifiable) and ds.attrs["decision_kind"] == "exact"


# ------------------------------------------------------------------------------------------------ noise
def test_chi_square_of_the_true_candidate_follows_its_degrees_of_freedom():
    # single layer, every row with 3 plastic synapses, 14 probes of which 4 held out, 4 outputs: the fit has N = 40
    # values, M = 12 => dof 28, and 16 held-out values. The fit is weighted least squares, so at its minimum
    # chi2 ~ chi2(28) exactly (Gaussian noise); the held-out residual of row i has covariance
    # sd^2 (I + X_h (X_f^T X_f)^-1 X_h^T) on the row's plastic columns, so its chi-square ~ chi2(16). Both are
    # also computed here per row by numpy.
    sd, fits, helds = 0.05, [], []
    for seed in range(12):
        rng = np.random.default_rng(100 + seed)
        c, alloc, masks = _one_layer_rows(rng, [3, 3, 3, 3])
        w0 = c.sample_weights(rng)
        w1 = {"W1": np.where(masks, w0["W1"] + rng.standard_normal(masks.shape), w0["W1"])}
        x = c.sample_probes(14, rng)
        y = _record(c, w1, x, ["L1"])["L1"] + sd * rng.standard_normal((14, 4))
        ds = localize(c, w0, x, {"L1": y}, {"truth": alloc}, noise=sd, holdout=4).sel(candidate="truth")
        held = np.array([int(v) for v in ds.attrs["heldout_index"].split(",")])
        fit = np.setdiff1d(np.arange(14), held)
        chi_fit = chi_held = 0.0
        for i, row in enumerate(masks):
            target = y[:, i] - x[:, ~row] @ w0["W1"][i, ~row]
            xf, xh = x[fit][:, row], x[held][:, row]
            sol = np.linalg.lstsq(xf, target[fit], rcond=None)[0]
            chi_fit += float(((xf @ sol - target[fit]) ** 2).sum()) / sd**2
            r_h = xh @ sol - target[held]
            cov = sd**2 * (np.eye(4) + xh @ np.linalg.inv(xf.T @ xf) @ xh.T)
            chi_held += float(r_h @ np.linalg.solve(cov, r_h))
        np.testing.assert_allclose(float(ds.chi_square), chi_fit, rtol=1e-8)
        np.testing.assert_allclose(float(ds.heldout_chi_square), chi_held, rtol=1e-8)
        assert int(ds.dof) == 28 and int(ds["rank"]) == 12
        np.testing.assert_allclose(float(ds.p_value), stats.chi2.sf(chi_fit, 28), rtol=1e-8)
        np.testing.assert_allclose(float(ds.heldout_p_value), stats.chi2.sf(chi_held, 16), rtol=1e-8)
        fits.append(chi_fit)
        helds.append(chi_held)
    for values, dof in ((fits, 28), (helds, 16)):
        low, high = stats.chi2.ppf([0.0005, 0.9995], dof)
        assert all(low < v < high for v in values), (dof, values)
        total_low, total_high = stats.chi2.ppf([0.001, 0.999], dof * len(values))
        assert total_low < sum(values) < total_high, (dof, sum(values), total_low, total_high)


def test_localize_with_noise_keeps_the_true_projection_first():
    rng = np.random.default_rng(11)
    c = _circuit("steady", recurrent=False)
    w0 = c.sample_weights(rng)
    w1 = _changed(c, w0, "A->B", rng)
    x = c.sample_probes(24, rng)
    clean = _record(c, w1, x, ["A", "B", "OUT"])
    sd = {r: 0.01 * clean[r].std(0) + 1e-3 for r in clean}
    noisy = {r: v + sd[r] * rng.standard_normal(v.shape) for r, v in clean.items()}
    ds = localize(c, w0, x, noisy, projection_candidates(c), noise=sd, holdout=6)
    assert str(ds.candidate[0].values) == "A->B" and bool(ds.matched[0]), ds[["chi_square", "p_value"]]
    assert not ds.matched.values[1:].any()
    assert float(ds.heldout_p_value[0]) > 0.001 and (ds.heldout_p_value.values[1:] < 1e-6).all()


# ------------------------------------------------------------------------------------------------ bad input
def _toy_inputs(rng):
    c = _circuit("steady")
    w0 = c.sample_weights(rng)
    x = c.sample_probes(6, rng)
    return c, w0, x, _record(c, w0, x, ["B", "OUT"])


@pytest.mark.parametrize("case,field", [
    ("unknown region", "Region 'LGN' (in 'responses') does not exist"),
    ("input region", "responses['X']: 'X' is an input region"),
    ("probe count", "responses['B'] must have shape (6, 5)"),
    ("neuron count", "responses['OUT'] must have shape (6, 2)"),
    ("missing weight", "The 'weights' parameter lacks weight(s) ['A->B']"),
    ("weight shape", "weights['B->OUT'] must have shape (2, 5)"),
    ("probe shape", "The 'probes' parameter must have shape (m, 6)"),
    ("noise region", "The 'noise' parameter lacks recorded region 'OUT'"),
])
def test_bad_input_is_refused_in_one_line_naming_the_field(rng, case, field):
    c, w0, x, rec = _toy_inputs(rng)
    noise = None
    if case == "unknown region":
        rec = {**rec, "LGN": rec["B"]}
    elif case == "input region":
        rec = {**rec, "X": x}
    elif case == "probe count":
        rec = {**rec, "B": rec["B"][:5]}
    elif case == "neuron count":
        rec = {**rec, "OUT": rec["OUT"][:, :1]}
    elif case == "missing weight":
        w0 = {k: v for k, v in w0.items() if k != "A->B"}
    elif case == "weight shape":
        w0 = {**w0, "B->OUT": w0["B->OUT"][:, :4]}
    elif case == "probe shape":
        x = x[:, :2]
    elif case == "noise region":
        noise = {"B": 0.1}
    with pytest.raises(ns.ParameterError) as err:
        localize(c, w0, x, rec, projection_candidates(c), noise=noise)
    message = str(err.value)
    assert field in message and "\n" not in message, message


# ------------------------------------------------------------------------------------------------ files and CLI
def test_cli_localize_end_to_end(tmp_path, capsys):
    rng = np.random.default_rng(5)
    c = _circuit("steady", recurrent=False)
    w0 = c.sample_weights(rng)
    w1 = _changed(c, w0, "B->OUT", rng)
    x = c.sample_probes(16, rng)
    rec = _record(c, w1, x, ["B", "OUT"])
    spec = tmp_path / "toy.toml"
    spec.write_text(c.to_toml())
    weights_dataset(c, w0).to_netcdf(tmp_path / "W.nc", engine="h5netcdf")
    responses_dataset(c, x, rec).to_netcdf(tmp_path / "R.nc", engine="h5netcdf")
    out = tmp_path / "OUT.nc"
    args = ["localize", str(spec), "--weights", str(tmp_path / "W.nc"), "--responses", str(tmp_path / "R.nc"),
            "--candidates", "projections", "--out", str(out)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "B->OUT" in printed.splitlines()[1], printed  # the table's first row is the best candidate
    with xr.open_dataset(out, engine="h5netcdf") as ds:
        ds = ds.load()
    assert str(ds.candidate[0].values) == "B->OUT" and bool(ds.matched[0]) and not ds.matched[1:].any()
    assert main(args) == 2  # the output exists: refused without --overwrite
    # noise SDs in R.nc: the fit becomes a chi-square one
    sd = {r: np.full(v.shape[1], 1e-3) for r, v in rec.items()}
    noisy = {r: v + 1e-3 * rng.standard_normal(v.shape) for r, v in rec.items()}
    responses_dataset(c, x, noisy, sd).to_netcdf(tmp_path / "Rn.nc", engine="h5netcdf")
    assert main(args[:5] + [str(tmp_path / "Rn.nc")] + args[6:-1] + [str(tmp_path / "OUTn.nc")]) == 0
    with xr.open_dataset(tmp_path / "OUTn.nc", engine="h5netcdf") as ds:
        assert str(ds.candidate[0].values) == "B->OUT" and "chi_square" in ds and bool(ds.matched[0])
    # a weights file missing a projection: one line naming it, exit 2
    weights_dataset(c, w0).drop_vars("A_to_B").to_netcdf(tmp_path / "W2.nc", engine="h5netcdf")
    args[3] = str(tmp_path / "W2.nc")
    args[-1] = str(tmp_path / "OUT2.nc")
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "lacks weight(s) ['A->B']" in err and "\n" not in err, err


def test_localize_names_each_synapses_neurons_where_the_circuit_names_them():
    names = {"A": [f"a{i}" for i in range(6)], "B": [f"b{i}" for i in range(5)]}
    text = _circuit("steady").to_toml()
    for region, given in names.items():  # the same toy circuit with named A and B neurons
        text = text.replace(f"[regions.{region}]\n", f"[regions.{region}]\nneurons = {given}\n".replace("'", '"'))
    c = ns.Circuit.from_toml_text(text)
    assert c.neurons["A"] == tuple(names["A"])
    rng = np.random.default_rng(3)
    w0 = c.sample_weights(rng)
    x = c.sample_probes(12, rng)
    rec = _record(c, _changed(c, w0, "A->B", rng), x, ["A", "B", "OUT"])
    ds = localize(c, w0, x, rec, projection_candidates(c), holdout=3, solver=QUICK_LM)
    checked = 0
    for end in ("post", "pre"):  # each synapse's neuron, looked up by hand from its weight's regions and index
        for w, k, got in zip(ds.synapse_weight.values, ds[f"synapse_{end}"].values, ds[f"synapse_{end}_name"].values):
            region = getattr(c.projection[str(w)], end)
            if region in names:
                assert str(got) == names[region][int(k)], (w, end, k)
                checked += 1
    assert checked == 2 * int(c.structure["A->B"].sum()) + int(c.structure["A->A"].sum()) * 2 + int(
        c.structure["X->A"].sum()) + int(c.structure["B->OUT"].sum())


# ------------------------------------------------------------------ candidates that cannot be told apart (issue 27)
def _ca3_ca1_out_only(seed: int = 5, m: int = 24):
    """circuits/ca3_ca1.toml, CA3->CA1 changed (30% of its synapses), only OUT recorded on ``m`` probes."""
    from pathlib import Path

    c = ns.Circuit.from_toml(Path(__file__).resolve().parents[1] / "circuits" / "ca3_ca1.toml")
    rng = np.random.default_rng(seed)
    w0 = c.sample_weights(rng)
    w1 = _changed(c, w0, "CA3->CA1", rng, fraction=0.3)
    x = c.sample_probes(m, rng)
    return c, w0, w1, x


def _numpy_out(w, x):
    """OUT of ca3_ca1's fixed point, solved here: r3 = (I - W33)^-1 W3E x, r1 = W13 r3, out = WO1 r1."""
    r3 = np.linalg.solve(np.eye(32) - w["CA3->CA3"], w["EC->CA3"] @ x.T)
    return (w["CA1->OUT"] @ (w["CA3->CA1"] @ r3)).T  # (probe, 4)


def _numpy_jacobian(c, w, x, name, h=1e-6):
    """d OUT / d (every present synapse of ``name``) by central differences of the numpy solve: (values, synapses)."""
    cols = []
    for i, j in zip(*np.nonzero(c.structure[name])):
        up = {k: v.copy() for k, v in w.items()}
        down = {k: v.copy() for k, v in w.items()}
        up[name][i, j] += h
        down[name][i, j] -= h
        cols.append(((_numpy_out(up, x) - _numpy_out(down, x)) / (2 * h)).ravel())
    return np.stack(cols, axis=1)


def test_only_out_recorded_four_candidates_are_flagged_ambiguous_with_their_set():
    c, w0, w1, x = _ca3_ca1_out_only()
    rec = {"OUT": _numpy_out(w1, x)}
    ds = localize(c, w0, x, rec, projection_candidates(c), holdout=6, solver=ns.Auto(restarts=2, max_rounds=2,
                                                                                      iterations=100))
    # independent structural check: numpy Jacobians of OUT on the fit probes, per candidate, at the weights before
    # learning. Each has rank 64 = 4 outputs x 16 inputs (OUT = M X for a 4 x 16 matrix M that every candidate can
    # move in every direction), and every pair's stacked Jacobian too: one column space, told apart by nothing
    fit = np.setdiff1d(np.arange(24), [int(i) for i in ds.attrs["heldout_index"].split(",")])
    jac = {k: _numpy_jacobian(c, w0, x[fit], k) for k in c.weight_names}
    ranks = {k: np.linalg.matrix_rank(j, tol=1e-7 * np.linalg.norm(j, 2)) for k, j in jac.items()}
    assert set(ranks.values()) == {4 * 16}, ranks
    for a in jac:
        for b in jac:
            stacked = np.hstack([jac[a], jac[b]])
            assert np.linalg.matrix_rank(stacked, tol=1e-7 * np.linalg.norm(stacked, 2)) == 64, (a, b)
    assert ds["rank"].values.tolist() == [64] * 4
    assert ds["structurally_equivalent"].values.all() and ds["matched"].values.all()
    assert ds["ambiguous"].values.all() and ds.attrs["ambiguous"] == 1
    assert set(ds.attrs["equally_good"].split(",")) == set(c.weight_names)
    assert ds["place"].sel(candidate="CA3->CA1") > 1  # the true one is not first, and the Dataset says why
    ns.validate_dataset(ds, "localize")


@pytest.mark.slow
def test_a_recording_that_tells_the_candidates_apart_is_not_ambiguous():
    c, w0, w1, x = _ca3_ca1_out_only(m=24)
    rec = _record(c, w1, x, ["CA3", "CA1", "OUT"])  # CA1 recorded: only CA3->CA1 can move it and leave CA3
    ds = localize(c, w0, x, rec, projection_candidates(c), holdout=6, solver=ns.Auto(restarts=2, max_rounds=2,
                                                                                      iterations=100))
    assert ds.candidate.values[0] == "CA3->CA1" and ds.attrs["ambiguous"] == 0, ds[["residual", "place"]]
    assert ds.attrs["equally_good"] == "CA3->CA1" and not ds["ambiguous"].values.any()
    # independently: before learning, only the true candidate's numpy forward solve differs from the others'
    # recorded CA1 -- the recorded CA1 is off w0's by more than the match tolerance
    r3 = np.linalg.solve(np.eye(32) - w0["CA3->CA3"], w0["EC->CA3"] @ x.T)
    assert np.linalg.norm((w0["CA3->CA1"] @ r3).T - rec["CA1"]) / np.linalg.norm(rec["CA1"]) > 1e-3
    assert ds["matched"].values.tolist() == [True, False, False, False]


def test_with_noise_statistical_ties_follow_the_critical_difference():
    c, w0, w1, x = _ca3_ca1_out_only(m=24)
    clean = _numpy_out(w1, x)
    sd = 0.05 * clean.std(0) + 1e-12
    noisy = clean + sd * np.random.default_rng(9).standard_normal(clean.shape)
    ds = localize(c, w0, x, {"OUT": noisy}, projection_candidates(c), noise={"OUT": sd}, holdout=6,
                  solver=ns.Auto(restarts=2, max_rounds=2, iterations=100))
    chi = ds["heldout_chi_square"].values
    critical = stats.chi2.isf(0.01, 1)  # alpha = 0.01: a one-degree-of-freedom chi-square difference
    np.testing.assert_array_equal(ds["statistically_tied"].values, np.abs(chi - chi[0]) < critical)
    # the three affine candidates reach the same responses (one column space) and are fitted by exact least
    # squares: the same held-out predictions, so tied with each other
    exact = ds["decision_kind"].values == "exact"
    assert np.ptp(chi[exact]) < 1e-6 * chi[exact].max(), chi
    assert ds.attrs["ambiguous"] == 1 and len(ds.attrs["equally_good"].split(",")) >= 3


def test_cli_localize_says_when_the_first_place_is_not_unique(tmp_path, capsys):
    # only OUT recorded on the toy X -> A -> B -> OUT: OUT = W_OB W_BA W_AX x, and X->A or A->B (each free to set
    # any 2 x 6 map through the invertible rest) reproduce it as well as the true B->OUT does
    rng = np.random.default_rng(5)
    c = _circuit("steady", recurrent=False)
    w0 = c.sample_weights(rng)
    x = c.sample_probes(16, rng)
    rec = _record(c, _changed(c, w0, "B->OUT", rng), x, ["OUT"])
    spec = tmp_path / "toy.toml"
    spec.write_text(c.to_toml())
    weights_dataset(c, w0).to_netcdf(tmp_path / "W.nc", engine="h5netcdf")
    responses_dataset(c, x, rec).to_netcdf(tmp_path / "R.nc", engine="h5netcdf")
    assert main(["localize", str(spec), "--weights", str(tmp_path / "W.nc"), "--responses", str(tmp_path / "R.nc"),
                 "--candidates", "projections"]) == 0
    printed = capsys.readouterr().out
    line = [s for s in printed.splitlines() if s.startswith("ambiguous:")]
    assert len(line) == 1 and all(k in line[0] for k in ("X->A", "A->B", "B->OUT")), printed
    assert "convention, not evidence" in line[0]


def test_a_recordings_weights_may_be_one_trial_of_a_sparse_fit():
    """weights_dataset (the W.nc that localize reads) of a teacher drawn in the sparse weights layout (scipy.sparse
    CSR per weight) holds the dense layout's teacher of the same draw, bit for bit."""
    c = _circuit("steady")
    alloc = ns.allocate(c, 2, within=["B->OUT"], seed=0)
    dense, sparse = (ns.fit(c, alloc, m=2, trials=1, seed=3,
                            options=ns.FitOptions(weights_layout=lay, dale=False, stable=False))
                     for lay in ("dense", "sparse"))
    got = weights_dataset(c, {k: v[0] for k, v in sparse.trials.teacher.items()})
    want = weights_dataset(c, {k: v[0] for k, v in dense.trials.teacher.items()})
    for var in want.data_vars:
        np.testing.assert_array_equal(got[var].values, want[var].values, err_msg=var)
