"""A pooled noise model for trial-averaged pair responses where most pairs have one or two trials.

The SD of one trial's amplitude of pair ``(i, j)`` (responding ``i``, stimulated ``j``) is modelled as

    sd_ij = a_i + b |mu_ij|

with ``a_i`` a per-responding-neuron floor (shrunk towards the common floor ``a`` with the weight of ``shrink``
pseudo-degrees of freedom) and ``b`` one slope for all pairs (the trial-to-trial variability grows with the
response). It is fitted by weighted least squares ``sum_(ij) (n_ij - 1) (s_ij / c4(n_ij) - a_i - b |m_ij|)^2`` on the
pairs with ``n_ij >= 2`` trials (``s_ij`` their sample SD, ``c4`` the bias of the sample SD of normal data,
``m_ij`` their mean), off the diagonal. The SD of a pair's mean is then ``sd_ij / sqrt(n_ij)``.
``b`` is the slope against the *measured* mean (errors in variables attenuate it against the true mean; on
wt data heavy-tailed trials make ``|m|`` and ``s`` correlate, so it is also no proof that noise grows with the true
response). Measured on the atlas (wt / unc31): ``a`` 0.050 / 0.042, ``b`` 1.09 / 0.99 from 17,574 / 3,998 pairs;
the model over-predicts the noise of single-trial pairs (its noise variance exceeds the measured variance of all
means), so the split-half reliability is the noise ceiling to read fits against.

Gross outliers: single trials with ``|amplitude| > outlier`` (default 5 dF/F, over twice the largest self-response
of either strain) are dropped before anything is computed, and listed.

The noise ceiling: split-half reliability of the pairs with >= 2 trials (trials split at random into two halves,
Pearson r of the half means across pairs, Spearman-Brown corrected ``2 r / (1 + r)``), and the explainable fraction
of the measured variance under the noise model ``1 - sum sd_mean^2 / sum (R - mean R)^2`` (the explained variance
that the true means would reach).
"""
from __future__ import annotations

import numpy as np
import xarray as xr
from scipy.special import gammaln

from .._checks import ParameterError, check_real
from ._schema import meta

__all__ = ["pooled_noise", "split_half", "OUTLIER_DFF"]

OUTLIER_DFF = 5.0
"""Single trials beyond this |dF/F| are gross outliers (dropped, listed)."""


def _c4(n: np.ndarray) -> np.ndarray:
    """E[sample SD] / sigma for ``n`` normal samples (ddof 1); 1 where ``n < 2``."""
    n = np.asarray(n, dtype=np.float64)
    safe = np.maximum(n, 2.0)
    out = np.sqrt(2.0 / (safe - 1.0)) * np.exp(gammaln(safe / 2.0) - gammaln((safe - 1.0) / 2.0))
    return np.where(n >= 2, out, 1.0)


def pooled_noise(ds: xr.Dataset, *, outlier: float = OUTLIER_DFF, shrink: float = 20.0) -> xr.Dataset:
    """Drop gross outlier trials and fit the pooled noise model (module docstring) to an atlas Dataset.

    Parameters
    ----------
    ds : xarray.Dataset
        As :func:`neurosubset.datasets.randi2023` returns (``trials``, ``response``, ``self_response`` ...).
    outlier : float
        Single trials with ``|amplitude|`` above this (dF/F, > 0) are dropped.
    shrink : float
        Pseudo-degrees of freedom pulling each floor ``a_i`` towards the common floor (>= 0).

    Returns
    -------
    xarray.Dataset
        ``ds`` with outlier trials removed (``response``, ``self_response``, ``n_trials``, ``trial_sd`` recomputed) plus
        ``sd_trial (responding, stimulated)`` the modelled SD of one trial, ``sd_mean`` that of the pair's mean (NaN
        where unmeasured), ``sd_floor`` the floor's part alone ``a_i / sqrt(n)`` (the fits' weights), ``floor
        (responding)`` ``a_i``, ``floor_dof (responding)`` the degrees of freedom behind it, and the outliers along dim
        ``outlier`` (``outlier_responding``, ``outlier_stimulated``, ``outlier_value``). Attrs ``noise_model`` (the
        equation), ``noise_floor`` ``a``, ``noise_slope`` ``b``, ``noise_pairs`` (pairs fitted), ``outlier_threshold``.
    """
    outlier = check_real("outlier", outlier, low=0.0, low_open=True)
    shrink = check_real("shrink", shrink, low=0.0)
    if "trials" not in ds:
        raise ParameterError("The 'ds' parameter must be an atlas Dataset with a 'trials' variable "
                             "(neurosubset.datasets.randi2023).")
    trials = ds["trials"].values.copy()
    bad = np.isfinite(trials) & (np.abs(trials) > outlier)
    where = np.argwhere(bad)
    values = trials[bad]
    trials[bad] = np.nan
    order = np.argsort(~np.isfinite(trials), axis=-1, kind="stable")
    trials = np.take_along_axis(trials, order, axis=-1)
    n = np.isfinite(trials).sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(n > 0, np.nansum(trials, -1) / np.maximum(n, 1), np.nan)
        var = np.nansum((trials - mean[..., None]) ** 2, -1) / np.maximum(n - 1, 1)
    s = np.where(n >= 2, np.sqrt(var), np.nan)
    size = n.shape[0]
    diag = np.eye(size, dtype=bool)
    use = (n >= 2) & ~diag
    rows, _ = np.nonzero(use)
    w = (n[use] - 1).astype(np.float64)
    y = s[use] / _c4(n[use])
    x = np.abs(mean[use])
    # common floor and slope first (weighted least squares), then per-neuron floors shrunk towards the common one
    design = np.stack([np.ones_like(x), x], axis=1) * np.sqrt(w)[:, None]
    a, b = np.linalg.lstsq(design, y * np.sqrt(w), rcond=None)[0]
    b = max(float(b), 0.0)
    resid_sum = np.bincount(rows, weights=w * (y - b * x), minlength=size)
    dof = np.bincount(rows, weights=w, minlength=size)
    floor = (resid_sum + shrink * a) / (dof + shrink) if shrink > 0 else np.where(dof > 0, resid_sum / np.maximum(
        dof, 1e-300), a)
    floor = np.maximum(floor, 1e-3)
    sd_trial = floor[:, None] + b * np.abs(np.nan_to_num(mean))
    sd_trial = np.where(n > 0, sd_trial, np.nan)
    sd_mean = sd_trial / np.sqrt(np.maximum(n, 1))
    out = ds.copy()
    pair = ("responding", "stimulated")
    out["trials"] = (pair + ("trial",), trials, ds["trials"].attrs)
    out["n_trials"] = (pair, n.astype(np.int64), ds["n_trials"].attrs)
    out["response"] = (pair, np.where(diag, np.nan, mean), ds["response"].attrs)
    out["self_response"] = ("stimulated", np.diag(mean).copy(), ds["self_response"].attrs)
    out["trial_sd"] = (pair, s, ds["trial_sd"].attrs)
    out["sd_trial"] = (pair, sd_trial, meta("sd_trial"))
    out["sd_mean"] = (pair, np.where(diag, np.nan, sd_mean), meta("sd_mean"))
    out["sd_floor"] = (pair, np.where(diag | (n == 0), np.nan, floor[:, None] / np.sqrt(np.maximum(n, 1))),
                       meta("sd_floor"))
    out["floor"] = ("responding", floor, meta("floor"))
    out["floor_dof"] = ("responding", dof, meta("floor_dof"))
    names = ds["responding"].values
    out = out.assign_coords(outlier=("outlier", np.arange(len(values))))
    out["outlier_responding"] = ("outlier", np.array([names[i] for i, _, _ in where], dtype=str))
    out["outlier_stimulated"] = ("outlier", np.array([names[j] for _, j, _ in where], dtype=str))
    out["outlier_value"] = ("outlier", values.astype(np.float64), meta("outlier_value"))
    out.attrs.update({"noise_model": "sd_trial_ij = a_i + b |mean_ij| (weighted least squares on the pairs with "
                                     ">= 2 trials, sample SD / c4(n), weights n - 1; a_i shrunk to a with "
                                     f"{shrink:g} pseudo-dof); sd_mean = sd_trial / sqrt(n)",
                      "noise_floor": float(a), "noise_slope": b, "noise_pairs": int(use.sum()),
                      "outlier_threshold": outlier,
                      "outliers": "; ".join(f"{names[i]}<-{names[j]} trial {v:.3g}" for (i, j, _), v
                                            in zip(where, values)) or "none"})
    return out


def split_half(ds: xr.Dataset, *, seed: int = 0) -> dict[str, float]:
    """Split-half reliability of the pairs with >= 2 trials (off the diagonal; module docstring).

    Returns
    -------
    dict
        ``r`` (Pearson r of the two half means across pairs), ``spearman_brown`` (``2 r / (1 + r)``, the
        reliability of the full means), ``pairs``.
    """
    trials = ds["trials"].values
    n = np.isfinite(trials).sum(-1)
    use = (n >= 2) & ~np.eye(n.shape[0], dtype=bool)
    rng = np.random.default_rng(seed)
    first, second = [], []
    for v, k in zip(trials[use], n[use]):
        perm = rng.permutation(v[:k])
        h = k // 2 if k % 2 == 0 or rng.random() < 0.5 else k - k // 2
        first.append(perm[:h].mean())
        second.append(perm[h:].mean())
    r = float(np.corrcoef(first, second)[0, 1])
    return {"r": r, "spearman_brown": 2 * r / (1 + r), "pairs": int(use.sum())}
