"""neurosubset.responses.atlas_compare: the common measurement set, the neuropeptide groups, the ranking's order."""
from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

import numpy as np
import pytest

from neurosubset.datasets import pooled_noise, randi2023
from neurosubset.responses.atlas import atlas_anatomy, atlas_data
from neurosubset.responses.atlas_compare import common_measured, neuropeptide_groups


@pytest.fixture(scope="module")
def both():
    an = atlas_anatomy()
    return an, {s: atlas_data(pooled_noise(randi2023(s)), an, sd="sd_floor") for s in ("wt", "unc31")}


@pytest.mark.slow  # the anatomy and the atlas load in ~8 s
def test_common_measured_is_the_intersection(both):
    """Counted here from the two Datasets directly: the issue's ~8,150 pairs over 105 stimulations (AWC merged and
    the neurons outside the anatomy dropped change a few)."""
    an, data = both
    wt, unc = common_measured(data["wt"], data["unc31"])
    np.testing.assert_array_equal(wt.stimulated, unc.stimulated)
    np.testing.assert_array_equal(wt.mask, unc.mask)
    a, b = randi2023("wt"), randi2023("unc31")
    ma, mb = np.isfinite(a["response"].values), np.isfinite(b["response"].values)
    names = list(a["responding"].values)
    inside = np.array([n in an.names for n in names])
    both_m = ma & mb & inside[:, None] & inside[None, :]
    assert int(wt.mask.sum()) == int(both_m.sum())
    assert wt.stimulated.size == int(both_m.any(0).sum())
    assert abs(int(wt.mask.sum()) - 8150) < 100 and abs(wt.stimulated.size - 105) <= 2


@pytest.mark.slow  # the anatomy and the atlas load in ~8 s
def test_peptide_groups_from_the_edge_list(both):
    an, _ = both
    groups = neuropeptide_groups(an, min_edges=1)
    path = Path(importlib.util.find_spec("cect").submodule_search_locations[0]) / "data" / "edgelist_NP.csv"
    index = {n: i for i, n in enumerate(an.names)}
    expected: dict[str, set] = {}
    with open(path) as f:
        for pre, post, peptide, _ in csv.reader(f):
            pre, post = ("AWC" if pre in ("AWCL", "AWCR") else pre), ("AWC" if post in ("AWCL", "AWCR") else post)
            if pre in index and post in index and pre != post:
                expected.setdefault(peptide.split("-")[0], set()).add((index[post], index[pre]))
    assert set(groups) == set(expected)
    for k, v in groups.items():
        assert set(map(tuple, v.tolist())) == expected[k]


def _small(clamp: bool, seed: int = 0):
    """A 10-neuron anatomy, a frozen fit with known gains, and responses of a known shared change on one group."""
    from neurosubset.responses.atlas import Anatomy, AtlasData, AtlasFit

    rng = np.random.default_rng(seed)
    n = 10
    counts = np.where(rng.random((n, n)) < 0.35, rng.integers(1, 6, (n, n)), 0).astype(float)
    np.fill_diagonal(counts, 0)
    sign = np.where(rng.random(n) < 0.3, -1.0, 1.0)
    pairs = np.triu(rng.random((n, n)) < 0.2, 1).astype(float)
    pairs = pairs + pairs.T
    gap = pairs - np.diag(pairs.sum(1))
    an = Anatomy(tuple(f"N{i}" for i in range(n)), counts, sign, gap, tuple(f"C{i % 4}" for i in range(n)))
    gains = np.exp(0.2 * rng.standard_normal(n))
    empty = np.zeros((0, 2), dtype=np.int64)
    base = AtlasFit(0.5, 0.2, gains, empty, np.zeros(0), empty, np.zeros(0, dtype=np.int64), np.zeros(0), 0.0, 0,
                    True, True, True, clamp)
    stim = np.arange(n)
    drive = 0.3 + rng.random(n)
    mask = (rng.random((n, n)) < 0.8) & ~np.eye(n, dtype=bool)
    sd = 0.02 + 0.02 * rng.random((n, n))
    return an, base, stim, drive, mask, sd, AtlasData, rng


def _chi_numpy(an, base, stim, drive, resp, mask, sd, pairs, v, lam):
    """The shared change's objective, written out with numpy (independent of the library's Gauss-Newton)."""
    sign = np.where(an.sign < 0, -1.0, 1.0)
    rho = np.max(np.abs(np.linalg.eigvals(an.counts)))
    w = base.chem_gain * an.counts * sign[None] / rho + base.gap_gain * an.gap
    for i, j in pairs:
        w[i, j] += v
    x = np.linalg.solve(np.eye(an.size) - w, np.eye(an.size)[:, stim] * drive)
    if base.clamp:
        x = x * (drive / x[stim, np.arange(stim.size)])[None]
    pred = base.gains[:, None] * x
    return float((((pred - resp) / sd)[mask] ** 2).sum()) + lam * v * v


@pytest.mark.parametrize("clamp", [False, True])
def test_shared_change_is_the_one_dimensional_minimum(clamp):
    """Gauss-Newton's v against a bounded scalar minimisation of the same chi-square written with numpy."""
    from scipy.optimize import minimize_scalar

    from neurosubset.responses.atlas_compare import shared_change

    an, base, stim, drive, mask, sd, AtlasData, rng = _small(clamp)
    group = np.array([[1, 2], [3, 4], [5, 2], [7, 0]])
    truth = 0.15
    sign = np.where(an.sign < 0, -1.0, 1.0)
    rho = np.max(np.abs(np.linalg.eigvals(an.counts)))
    w = base.chem_gain * an.counts * sign[None] / rho + base.gap_gain * an.gap
    w[group[:, 0], group[:, 1]] += truth
    x = np.linalg.solve(np.eye(10) - w, np.eye(10)[:, stim] * drive)
    if clamp:
        x = x * (drive / x[stim, np.arange(10)])[None]
    resp = np.where(mask, base.gains[:, None] * x + sd * rng.standard_normal((10, 10)), 0.0)
    data = AtlasData(resp, sd, mask, stim, drive, np.ones(10, dtype=bool))
    fit, jac = shared_change(base, data, an, group, lam=1.0)
    best = minimize_scalar(lambda v: _chi_numpy(an, base, stim, drive, resp, mask, sd, group, v, 1.0),
                           bounds=(-0.5, 0.5), method="bounded", options={"xatol": 1e-10})
    assert abs(fit.departures[-1] - best.x) < 1e-6, (fit.departures[-1], best.x)
    assert abs(fit.chi_square + 1.0 * best.x**2 - best.fun) < 1e-6 * best.fun
    assert abs(best.x - truth) < 0.05  # and near the truth
    # the Jacobian: central differences of the whitened residuals
    h = 1e-6

    def resid(v):
        ww = w.copy()
        ww[group[:, 0], group[:, 1]] += v - truth
        xx = np.linalg.solve(np.eye(10) - ww, np.eye(10)[:, stim] * drive)
        if clamp:
            xx = xx * (drive / xx[stim, np.arange(10)])[None]
        return ((base.gains[:, None] * xx - resp) / sd)[mask]

    v = fit.departures[-1]
    np.testing.assert_allclose(jac, (resid(v + h) - resid(v - h)) / (2 * h), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("linear", [True, False])
def test_group_ranking_finds_the_changed_group_and_reports_localize_ties(linear):
    """The group whose shared change made the other strain comes first, beats all its size-matched random groups
    (p = 1 / (1 + draws)); the same pairs under another name are structurally equivalent and tied (ambiguous, as
    localize rules it), an unrelated group is not."""
    from neurosubset.responses.atlas_compare import group_change_ranking

    an, base, stim, drive, mask, sd, AtlasData, rng = _small(False, seed=1)
    group = np.array([[1, 2], [3, 4], [5, 2], [7, 0], [8, 4]])
    other_group = np.array([[0, 9], [6, 3], [2, 8], [9, 5], [4, 6]])
    sign = np.where(an.sign < 0, -1.0, 1.0)
    rho = np.max(np.abs(np.linalg.eigvals(an.counts)))
    w = base.chem_gain * an.counts * sign[None] / rho + base.gap_gain * an.gap
    x_ref = np.linalg.solve(np.eye(10) - w, np.eye(10)[:, stim] * drive)
    w[group[:, 0], group[:, 1]] += 0.2
    x = np.linalg.solve(np.eye(10) - w, np.eye(10)[:, stim] * drive)
    noise = sd * rng.standard_normal((10, 10))
    ref = AtlasData(np.where(mask, base.gains[:, None] * x_ref + noise, 0.0), sd, mask, stim, drive,
                    np.ones(10, dtype=bool))
    other = AtlasData(np.where(mask, base.gains[:, None] * x + noise, 0.0), sd, mask, stim, drive,
                      np.ones(10, dtype=bool))
    draws = 9
    out = group_change_ranking(ref, other, an, {"A": group, "A again": group[::-1].copy(), "B": other_group},
                               folds=3, draws=draws, base=base, linear=linear)
    place = dict(zip(out["names"], out["place"]))
    assert place["B"] == 3 and {place["A"], place["A again"]} == {1, 2}
    amb = dict(zip(out["names"], out["ambiguous"]))
    assert amb["A"] and amb["A again"] and not amb["B"]
    same = dict(zip(out["names"], out["structurally_equivalent"]))
    assert same["A"] and same["A again"] and not same["B"]
    p = dict(zip(out["names"], out["p_value"]))
    assert p["A"] == p["A again"] == 1 / (1 + draws)
    assert set(out["equally_good"]) == {"A", "A again"}
    assert "chi2.isf(alpha, 1)" in out["tie_rule"]  # localize's own rule text


def test_linear_group_score_is_one_gauss_newton_step():
    """The default (linearised) score of one group, fold by fold, against numpy: the Jacobian by central
    differences of the full model, v = -J.r / (J.J + lam) on the training stimulations, held-out chi-square of
    r0 + v J."""
    from neurosubset.responses.atlas import atlas_folds
    from neurosubset.responses.atlas_compare import group_change_ranking

    an, base, stim, drive, mask, sd, AtlasData, rng = _small(False, seed=2)
    group = np.array([[1, 2], [3, 4], [5, 2]])
    resp = np.where(mask, 0.3 * rng.standard_normal((10, 10)), 0.0)
    other = AtlasData(resp, sd, mask, stim, drive, np.ones(10, dtype=bool))
    out = group_change_ranking(other, other, an, {"G": group}, folds=3, draws=0, base=base, lam=0.5)

    def resid(v):
        sign = np.where(an.sign < 0, -1.0, 1.0)
        rho = np.max(np.abs(np.linalg.eigvals(an.counts)))
        w = base.chem_gain * an.counts * sign[None] / rho + base.gap_gain * an.gap
        w[group[:, 0], group[:, 1]] += v
        x = np.linalg.solve(np.eye(10) - w, np.eye(10)[:, stim] * drive)
        return np.where(mask, (base.gains[:, None] * x - resp) / sd, 0.0)

    r0, h = resid(0.0), 1e-6
    jac = (resid(h) - resid(-h)) / (2 * h)
    chi = 0.0
    for fold in atlas_folds(other, an, 3, seed=0):
        train = np.setdiff1d(np.arange(10), fold)
        v = -(jac[:, train] * r0[:, train]).sum() / ((jac[:, train] ** 2).sum() + 0.5)
        chi += ((r0[:, fold] + v * jac[:, fold]) ** 2).sum()
    assert abs(out["heldout_chi_square"][0] - chi) < 1e-6 * chi
    assert abs(out["baseline_chi_square"] - (r0**2).sum()) < 1e-9 * (r0**2).sum()
    assert abs(out["value"][0] + (jac * r0).sum() / ((jac**2).sum() + 0.5)) < 1e-6
