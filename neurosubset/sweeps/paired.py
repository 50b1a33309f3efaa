"""Paired comparisons of two allocations of a paired sweep: MP difference with an exact McNemar interval.

In a sweep with ``paired=True`` trial ``i`` of every point uses the same teacher, frozen student draw and probes
(they depend only on the sweep seed, ``m`` and ``i``), so two allocations can be compared trial by trial: only the
discordant trials (matched by one allocation and not the other) carry information about the difference, and
:func:`neurosubset.results.mcnemar_interval` turns their counts into an exact (conditional Clopper-Pearson)
interval on ``MP(a) - MP(b)`` and the exact McNemar p-value.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np
import xarray as xr

from .._checks import ParameterError
from .._schema import DONE, meta, var_name
from ..results import mcnemar_interval
from .layout import as_points

_METHOD = ("exact McNemar: Clopper-Pearson interval of P(a only | discordant) from the discordant trial counts, "
           "mapped to MP(a) - MP(b) = (discordant / trials) (2 pi - 1), conditional on the discordant count; p-value "
           "of the two-sided exact binomial test of pi = 1/2. Conditional: the sampling variation of the discordant "
           "share is left out, so where every discordant trial favours one side that bound is the observed difference")


def _select(ds: xr.Dataset, where: Mapping[str, Any], what: str) -> xr.Dataset:
    """The points of ``ds`` at ``where`` (fraction keys by their names or CF names), ``point`` fixed."""
    if not isinstance(where, Mapping) or not where:
        raise ParameterError(f"The {what!r} parameter must be a non-empty mapping of coordinate -> value, e.g. "
                             f"{{'strategy': 'spread-rows'}}. Got {where!r}.")
    sel = {}
    allowed = [str(c) for c in ds.coords if str(c) not in ("trial", "round", "point") and ds[c].ndim <= 1
               and not str(c).endswith(("_post", "_pre"))]
    for key, value in where.items():
        name = var_name(key) if key not in ds.coords else key
        if name not in allowed:
            raise ParameterError(f"{what}[{key!r}] is not a sweep coordinate; allowed: {allowed}.")
        sel[name] = value
    try:
        out = ds.sel(sel)
    except KeyError as exc:
        raise ParameterError(f"The {what!r} point {dict(where)} is not in the sweep ({exc}).") from None
    levels = [str(n) for n in ds.indexes["point"].names] if "point" in ds.indexes else []
    if "point" in out.dims and any(k in levels for k in sel):
        if out.sizes["point"] != 1:
            raise ParameterError(f"The {what!r} parameter {dict(where)} leaves {out.sizes['point']} fraction points; "
                                 f"give every fraction key.")
        out = out.isel(point=0, drop=True)
    return out


def paired_difference(ds: xr.Dataset, a: Mapping[str, Any], b: Mapping[str, Any], *,
                      confidence: float = 0.95) -> xr.Dataset:
    """``MP(a) - MP(b)`` with exact paired intervals, for two allocations of a paired sweep.

    Parameters
    ----------
    ds : xarray.Dataset
        A sweep made with ``paired=True`` (the default of new sweeps).
    a, b : dict
        The two allocations: coordinate -> value, e.g. ``{"strategy": "spread-rows"}`` and
        ``{"strategy": "concentrated-rows"}``; fraction keys by name (``"CA3->CA1"``) or CF name (``CA3_to_CA1``).
        Dims fixed by neither (``m``, ``budget``, ...) remain dims of the result; a dim fixed by one must be fixed
        by the other.
    confidence : float
        Two-sided confidence level of the interval.

    Returns
    -------
    xarray.Dataset
        Over the remaining dims: ``mp_a``, ``mp_b``, ``mp_difference`` (``mp_a - mp_b``), ``mp_difference_low``,
        ``mp_difference_high`` (see :func:`neurosubset.results.mcnemar_interval`), ``discordant_a``,
        ``discordant_b`` (trials matched by one only), ``mcnemar_pvalue``; NaN where either point is not done.
        Attrs: ``a``, ``b`` (JSON), ``method``, ``confidence``, ``trials``, the sweep's ``config_hash``.

    Raises
    ------
    ParameterError
        The sweep is not paired (its trials differ between allocations), or ``a`` / ``b`` name no single point.
    """
    if "matched" not in ds or "status" not in ds:
        raise ParameterError("paired_difference needs a sweep Dataset (variables 'matched' and 'status').")
    if int(ds.attrs.get("paired", 0)) != 1:
        raise ParameterError("paired_difference needs a sweep made with paired=True (attr 'paired' is "
                             f"{ds.attrs.get('paired', 'absent')!r}): unpaired points draw different teachers, "
                             "so their trials cannot be compared pair by pair.")
    ds = as_points(ds)
    sa, sb = _select(ds, a, "a"), _select(ds, b, "b")
    dims = [d for d in sa["matched"].dims if d != "trial"]
    if dims != [d for d in sb["matched"].dims if d != "trial"]:
        raise ParameterError(f"'a' and 'b' must fix the same dims: a leaves {dims}, b leaves "
                             f"{[d for d in sb['matched'].dims if d != 'trial']}.")
    ma = sa["matched"].transpose(*dims, "trial").values
    mb = sb["matched"].transpose(*dims, "trial").values
    done = (sa["status"].transpose(*dims).values == DONE) & (sb["status"].transpose(*dims).values == DONE)
    n = ma.shape[-1]
    only_a = (ma & ~mb).sum(-1).astype(np.float64)
    only_b = (~ma & mb).sum(-1).astype(np.float64)
    low, high, pval = (np.full(done.shape, np.nan) for _ in range(3))
    for index in zip(*np.nonzero(done)):
        low[index], high[index], pval[index] = mcnemar_interval(int(only_a[index]), int(only_b[index]), n,
                                                                confidence)
    mp_a = np.where(done, ma.mean(-1), np.nan)
    mp_b = np.where(done, mb.mean(-1), np.nan)
    only_a[~done], only_b[~done] = np.nan, np.nan
    data = {"mp_a": mp_a, "mp_b": mp_b, "mp_difference": mp_a - mp_b, "mp_difference_low": low,
            "mp_difference_high": high, "discordant_a": only_a, "discordant_b": only_b, "mcnemar_pvalue": pval}
    template = sa["status"].transpose(*dims).reset_coords(drop=True)  # the remaining dims' index coordinates
    out = xr.Dataset({k: template.copy(data=v).assign_attrs(meta(k)) for k, v in data.items()})
    out.attrs = {"title": f"paired MP difference of {ds.attrs.get('circuit_name', '')}", "a": json.dumps(dict(a)),
                 "b": json.dumps(dict(b)), "method": _METHOD, "confidence": confidence, "trials": n,
                 "config_hash": ds.attrs.get("config_hash", ""), "fraction_keys": ds.attrs.get("fraction_keys", "[]")}
    return out
