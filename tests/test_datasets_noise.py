"""neurosubset.datasets.noise: the pooled noise model recovers a known model; split-half reliability in closed form."""
from __future__ import annotations

import numpy as np
import xarray as xr

from neurosubset.datasets.noise import pooled_noise, split_half


def _synthetic(rng, size=60, depth=6, a=0.05, b=0.2, spread=0.02):
    """An atlas-like Dataset: true means mu ~ N(0, 0.2), per-neuron floors a_i, trials ~ N(mu, (a_i + b|mu|)^2),
    1..depth trials per pair (about half of them with one trial), a fifth of the pairs unmeasured."""
    floors = a + spread * rng.standard_normal(size)
    mu = 0.2 * rng.standard_normal((size, size))
    n = np.where(rng.random((size, size)) < 0.5, 1, rng.integers(2, depth + 1, (size, size)))
    n[rng.random((size, size)) < 0.2] = 0
    sd = floors[:, None] + b * np.abs(mu)
    trials = np.full((size, size, depth), np.nan)
    for k in range(depth):
        trials[..., k] = np.where(k < n, mu + sd * rng.standard_normal((size, size)), np.nan)
    names = np.array([f"N{i}" for i in range(size)])
    pair = ("responding", "stimulated")
    mean = np.where(n > 0, np.nansum(trials, -1) / np.maximum(n, 1), np.nan)
    ds = xr.Dataset({"trials": (pair + ("trial",), trials), "n_trials": (pair, n),
                     "response": (pair, np.where(np.eye(size, dtype=bool), np.nan, mean)),
                     "self_response": ("stimulated", np.diag(mean).copy()), "trial_sd": (pair, mean * np.nan)},
                    coords={"responding": names, "stimulated": names})
    return ds, floors, b, mu, n


def test_recovers_known_floor_and_slope(rng):
    ds, floors, b, mu, n = _synthetic(rng)
    # the model fits |sample mean|, not |mu| (errors in variables attenuate b): small at b = 0.2 with |mu| ~ 0.16;
    # tolerances of 15%
    out = pooled_noise(ds, shrink=0.0)
    assert abs(out.attrs["noise_slope"] - b) < 0.15 * b, out.attrs["noise_slope"]
    assert abs(out.attrs["noise_floor"] - floors.mean()) < 0.15 * floors.mean(), out.attrs["noise_floor"]
    err = out["floor"].values - floors
    assert np.sqrt(np.mean(err**2)) < 0.5 * floors.std(), err
    assert out.sizes["outlier"] == 0 and out.attrs["outliers"] == "none"
    off = (n > 1) & ~np.eye(60, dtype=bool)
    expected = out["floor"].values[:, None] + out.attrs["noise_slope"] * np.abs(out["response"].fillna(0).values)
    np.testing.assert_allclose(out["sd_mean"].values[off] * np.sqrt(n[off]), expected[off], rtol=1e-12)


def test_outlier_trials_are_dropped_and_listed(rng):
    ds, *_ = _synthetic(rng)
    trials = ds["trials"].values.copy()
    i, j = np.argwhere(ds["n_trials"].values >= 3)[0]
    trials[i, j, 1] = -100.0
    ds["trials"] = (ds["trials"].dims, trials)
    out = pooled_noise(ds)
    assert out.sizes["outlier"] == 1 and float(out["outlier_value"][0]) == -100.0
    assert str(out["outlier_responding"][0].values) == f"N{i}" and str(out["outlier_stimulated"][0].values) == f"N{j}"
    kept = np.delete(trials[i, j][np.isfinite(trials[i, j])], np.flatnonzero(trials[i, j] == -100.0))
    assert int(out["n_trials"][i, j]) == kept.size
    if i != j:
        assert np.isclose(float(out["response"][i, j]), kept.mean(), rtol=1e-12)


def test_split_half_matches_the_reliability_of_known_signal_and_noise(rng):
    """Signal var s2, noise var e2 per trial, exactly 4 trials: two 2-trial halves have
    r = s2 / (s2 + e2 / 2) in expectation (closed form)."""
    size, s2, e2 = 120, 0.04, 0.08
    mu = np.sqrt(s2) * rng.standard_normal((size, size))
    trials = mu[..., None] + np.sqrt(e2) * rng.standard_normal((size, size, 4))
    ds = xr.Dataset({"trials": (("responding", "stimulated", "trial"), trials)})
    got = split_half(ds, seed=1)
    expected = s2 / (s2 + e2 / 2)
    assert abs(got["r"] - expected) < 0.02, (got, expected)
    assert np.isclose(got["spearman_brown"], 2 * got["r"] / (1 + got["r"]))
