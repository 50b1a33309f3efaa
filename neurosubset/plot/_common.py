"""Shared pieces of the figures: sweep checks, the point layout, verdict styles, colours, integer axes."""
from __future__ import annotations

import json
from typing import Any

import numpy as np
import xarray as xr
from matplotlib.patches import Patch
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from .._checks import ParameterError
from .._schema import DONE, var_name
from ..sweeps.layout import as_points

_LINESTYLES = ("-", "--", ":", "-.")
# certificate verdicts (neurosubset.certify): a marker on curves / ternary plots and a hatch on heat maps
VERDICT_MARKERS = {"zero": "v", "one": "^", "positive": "o", "unproven": "X"}
VERDICT_HATCHES = {"zero": "////", "one": "....", "positive": "", "unproven": "xx"}
FLAG_DIMS = ("dale", "stable_required")  # constraint flags swept as dims: drawn like strategies


def is_sweep(ds: xr.Dataset) -> bool:
    """Whether ``ds`` is a sweep result (it has ``strategy`` and ``m`` dims and a ``status`` flag)."""
    return "status" in ds and "strategy" in ds.dims and "m" in ds.dims


def require_sweep(ds: xr.Dataset, what: str) -> xr.Dataset:
    """``ds`` in the point layout (old dense stores converted), or ParameterError if it is not a sweep."""
    if not is_sweep(ds):
        raise ParameterError(f"{what} needs a sweep Dataset (dims budget, point, strategy, m and a 'status' "
                             f"variable). Got dims {dict(ds.sizes)}.")
    return as_points(ds)


def fraction_keys(ds: xr.Dataset) -> list[str]:
    return list(json.loads(ds.attrs.get("fraction_keys", "[]")))


def key_values(ds: xr.Dataset, key: str) -> np.ndarray:
    """The share (or density) of ``key`` at every point of a point-layout sweep."""
    return np.asarray(ds[var_name(key)].values, dtype=float)


def point_index(ds: xr.Dataset, fractions: dict[str, float]) -> int:
    """The position along ``point`` of the point with these key values."""
    keys = fraction_keys(ds)
    if set(fractions) != set(keys):
        raise ParameterError(f"The 'fractions' parameter must give every fraction key {keys}. Got {fractions!r}.")
    hit = np.ones(ds.sizes["point"], bool)
    for k in keys:
        hit &= np.isclose(key_values(ds, k), float(fractions[k]), atol=1e-9)
    if not hit.any():
        raise ParameterError(f"No sweep point has the fractions {fractions!r}.")
    return int(np.argmax(hit))


def series(ds: xr.Dataset) -> list[tuple[dict[str, Any], str]]:
    """One line style per (strategy, swept constraint flags): selections and labels."""
    out: list[tuple[dict[str, Any], str]] = [({}, "")]
    for dim in ("strategy", *FLAG_DIMS):
        if dim not in ds.dims:
            continue
        values = [v.item() for v in ds[dim].values]
        out = [({**sel, dim: v}, (f"{label}, " if label else "") + (str(v) if dim == "strategy" else f"{dim}={v}"))
               for sel, label in out for v in values]
    return out


def colours(n: int) -> list[Any]:
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    return [cmap(v) for v in np.linspace(0.0, 0.85, max(n, 1))]


def integer_axis(axis: Any, values: Any = None) -> None:
    """Integer ticks on an axis of ``m`` or a budget: the values themselves when few, else integer locations."""
    if values is not None and len(values) <= 12:
        axis.set_ticks([int(v) for v in values])
    else:
        axis.set_major_locator(MaxNLocator(integer=True))


def done_values(cells: xr.Dataset, name: str) -> np.ndarray:
    """``cells[name]`` where the point is done, NaN elsewhere."""
    return np.where(cells["status"].values == DONE, np.asarray(cells[name].values, dtype=float), np.nan)


def verdict_markers(ax: Any, xs: np.ndarray, ys: np.ndarray, verdicts: np.ndarray, colour: Any) -> None:
    """Overlay a marker per point by certificate verdict (zero, one, positive, unproven)."""
    for verdict, marker in VERDICT_MARKERS.items():
        hit = (verdicts == verdict) & np.isfinite(ys)
        if hit.any():
            ax.scatter(xs[hit], ys[hit], marker=marker, s=34, facecolor="white", edgecolor=colour, zorder=3,
                       linewidths=1.2)


def verdict_legend(kind: str = "marker") -> list[Any]:
    """Legend handles of the verdict styles (markers on curves, hatches on heat maps)."""
    if kind == "hatch":
        return [Patch(facecolor="white", edgecolor="k", hatch=VERDICT_HATCHES[v] or None, label=f"verdict {v}")
                for v in VERDICT_HATCHES]
    return [Line2D([], [], marker=m, linestyle="", markerfacecolor="white", markeredgecolor="k",
                   label=f"verdict {v}") for v, m in VERDICT_MARKERS.items()]


def edges(v: np.ndarray) -> np.ndarray:
    """Cell edges around sorted centres ``v`` (for pcolormesh)."""
    v = np.asarray(v, dtype=float)
    if v.size == 1:
        return np.array([v[0] - 0.5, v[0] + 0.5])
    mid = (v[1:] + v[:-1]) / 2
    return np.concatenate([[v[0] - (mid[0] - v[0])], mid, [v[-1] + (v[-1] - mid[-1])]])
