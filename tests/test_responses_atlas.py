"""neurosubset.responses.atlas on a small made-up anatomy: the model against numpy's closed form, masking, and
recovery of known gains (fast: no cect, no atlas file)."""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from neurosubset.responses.atlas import (Anatomy, AtlasData, fit_atlas, heldout_scores, loss_gradient,
                                         predict_atlas)

RTOL = 1e-10  # torch solve vs numpy solve of the same 12 x 12 float64 system


def _anatomy(rng, n=12):
    counts = np.where(rng.random((n, n)) < 0.3, rng.integers(1, 6, (n, n)), 0).astype(float)
    np.fill_diagonal(counts, 0)
    g = np.where(rng.random((n, n)) < 0.15, 1.0, 0.0)
    g = np.triu(g, 1)
    g = g + g.T
    sign = np.where(rng.random(n) < 0.3, -1.0, 1.0)
    names = tuple(f"N{i}" for i in range(n))
    return Anatomy(names, counts, sign, g - np.diag(g.sum(1)), tuple(f"C{i // 3}" for i in range(n)))


def _truth(an, a, c, gains, stim, drive, extra=None):
    rho = np.max(np.abs(np.linalg.eigvals(an.counts)))
    w = a * an.counts * np.where(an.sign < 0, -1.0, 1.0)[None] / rho + c * an.gap
    if extra is not None:
        w = w + extra
    x = np.linalg.solve(np.eye(an.size) - w, np.eye(an.size)[:, stim] * drive)
    return gains[:, None] * x


def _data(an, rng, resp, stim, drive, missing=0.3):
    mask = rng.random(resp.shape) > missing
    mask[stim, np.arange(stim.size)] = False  # the diagonal is the drive, never a residual
    return AtlasData(np.where(mask, resp, 0.0), np.full(resp.shape, 0.05), mask, stim, drive,
                     np.ones(stim.size, dtype=bool))


def test_prediction_is_the_closed_form(rng):
    an = _anatomy(rng)
    stim = np.array([0, 3, 5, 7, 11])
    drive = rng.uniform(0.2, 0.6, stim.size)
    gains = rng.uniform(0.5, 2, an.size)
    extra = np.zeros((an.size, an.size))
    extra[2, 3], extra[4, 0] = 0.3, -0.2
    expected = _truth(an, 0.4, 0.2, gains, stim, drive, extra)
    data = _data(an, rng, expected, stim, drive)
    fit = fit_atlas(data, an, np.array([[2, 3], [4, 0]]), iterations=0)  # no steps: the starting values
    fit = replace(fit, chem_gain=0.4, gap_gain=0.2, gains=gains, departures=np.array([0.3, -0.2]))
    np.testing.assert_allclose(predict_atlas(fit, data, an), expected, rtol=RTOL, atol=1e-14)
    # the gradient of the chi-square w.r.t. W is zero at the truth (every residual zero)
    assert np.abs(loss_gradient(fit, data, an)).max() < 1e-8


def test_masked_entries_never_enter_the_fit(rng):
    an = _anatomy(rng)
    stim = np.arange(0, an.size, 2)
    drive = np.full(stim.size, 0.4)
    resp = _truth(an, 0.5, 0.3, np.ones(an.size), stim, drive) + 0.01 * rng.standard_normal((an.size, stim.size))
    data = _data(an, rng, resp, stim, drive)
    garbage = replace(data, response=np.where(data.mask, data.response, 1e6 * rng.standard_normal(resp.shape)))
    one, two = fit_atlas(data, an, iterations=50), fit_atlas(garbage, an, iterations=50)
    assert one.chi_square == two.chi_square and one.values == two.values == int(data.mask.sum())
    np.testing.assert_array_equal(one.gains, two.gains)


def test_recovers_known_gains_without_noise(rng):
    """Noise-free data from known a, c and read-out gains: the fit reproduces every measured response (the
    chi-square near 0) and held-out stimulations are predicted (EV near 1)."""
    an = _anatomy(rng)
    stim = np.arange(an.size)
    drive = rng.uniform(0.3, 0.5, an.size)
    gains = rng.uniform(0.7, 1.5, an.size)
    resp = _truth(an, 0.6, 0.4, gains, stim, drive)
    data = _data(an, rng, resp, stim, drive, missing=0.1)
    train, held = data.columns(np.arange(0, an.size - 3)), data.columns(np.arange(an.size - 3, an.size))
    fit = fit_atlas(train, an, lam_g=0.0, iterations=500)
    assert fit.chi_square / fit.values < 1e-6, fit.chi_square
    assert heldout_scores(fit, held, an)["ev"] > 0.999


def test_clamped_stimulation_is_the_closed_form(rng):
    """clamp=True: the stimulated neuron's rate equals its drive; the others follow the linear steady state with
    that neuron held there, r_rest = (I - W_rest,rest)^-1 W_rest,j u_j (numpy, the reduced system)."""
    an = _anatomy(rng)
    stim = np.array([1, 4, 8])
    drive = rng.uniform(0.2, 0.6, stim.size)
    gains = rng.uniform(0.5, 2, an.size)
    rho = np.max(np.abs(np.linalg.eigvals(an.counts)))
    w = 0.5 * an.counts * np.where(an.sign < 0, -1.0, 1.0)[None] / rho + 0.3 * an.gap
    expected = np.zeros((an.size, stim.size))
    for k, j in enumerate(stim):
        rest = np.delete(np.arange(an.size), j)
        expected[rest, k] = np.linalg.solve(np.eye(an.size - 1) - w[np.ix_(rest, rest)], w[rest, j] * drive[k])
        expected[j, k] = drive[k]
    expected *= gains[:, None]
    data = _data(an, rng, expected, stim, drive)
    fit = replace(fit_atlas(data, an, clamp=True, iterations=0), chem_gain=0.5, gap_gain=0.3, gains=gains)
    np.testing.assert_allclose(predict_atlas(fit, data, an), expected, rtol=RTOL, atol=1e-14)
