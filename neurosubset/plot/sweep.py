"""Sweep figures: MP curves and heat maps with certificate verdicts, ternary plots, paired differences.

Every function takes a sweep in the ``point`` layout or the old dense one (converted by
:func:`neurosubset.sweeps.as_points`), draws only computed points, and marks each point's certificate verdict
("zero", "one", "positive", "unproven"; markers on curves and ternary plots, hatches on heat maps).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from .._checks import ParameterError
from ._common import (_LINESTYLES, VERDICT_HATCHES, VERDICT_MARKERS, colours, done_values, edges, fraction_keys,
                      integer_axis, key_values, require_sweep, series, verdict_legend, verdict_markers)

__all__ = ["mp_curves", "mp_heatmap", "mp_ternary", "plot_paired_difference"]


def _verdicts(cells: xr.Dataset) -> np.ndarray | None:
    return np.asarray(cells["verdict"].values).astype(str) if "verdict" in cells else None


def _curve_points(ds: xr.Dataset, keys: list[str], x: str) -> np.ndarray:
    """Indices along ``point`` of the curve of key ``x``: the simplex edge ``x`` <-> the last other key (the
    remaining keys at 0); density grids: the other keys at their first point's value; points off any grid (fewer
    than two on the edge, e.g. Dirichlet draws): all of them. Sorted by ``x``."""
    if ds.attrs.get("fraction_grid") == "density":
        first = {k: key_values(ds, k)[0] for k in keys if k != x}
        hit = np.all([np.isclose(key_values(ds, k), v) for k, v in first.items()], axis=0) if first else \
            np.ones(ds.sizes["point"], bool)
    else:
        partner = keys[-1] if x != keys[-1] else keys[0]
        others = [k for k in keys if k not in (x, partner)]
        hit = np.all([key_values(ds, k) == 0 for k in others], axis=0) if others else np.ones(ds.sizes["point"], bool)
    idx = np.nonzero(hit)[0]
    if idx.size < 2:  # scattered points (dirichlet_grid): every point, drawn as points with error bars
        idx = np.arange(ds.sizes["point"])
    return idx[np.argsort(key_values(ds, x)[idx], kind="stable")]


def mp_curves(ds: xr.Dataset, *, x: str | None = None) -> Figure:
    """MP against the fraction of the budget given to one key (or against ``m``), with 95% Wilson bands.

    Parameters
    ----------
    ds : xarray.Dataset
        A sweep result. Only computed points are drawn.
    x : str, optional
        The fraction key on the x axis (default: the first key). With three or more keys the curve follows the
        edge of the simplex between ``x`` and the last key (the other keys at 0). Without fraction keys the x
        axis is ``m`` (integer ticks).

    Returns
    -------
    matplotlib.figure.Figure
        One panel per budget; a line per (strategy, swept flags, m) (per strategy and flags when x is ``m``):
        colour = m, line style = strategy, shaded band = 95% Wilson interval, white markers = certificate
        verdict of the point.
    """
    ds = require_sweep(ds, "mp_curves")
    keys = fraction_keys(ds)
    budgets = ds["budget"].values if "budget" in ds.dims else [None]
    fig = Figure(figsize=(4.2 * len(budgets) + 1.5, 3.6), layout="constrained")
    axes = fig.subplots(1, len(budgets), squeeze=False, sharey=True)[0]
    ms = ds["m"].values
    cols = colours(len(ms))
    if keys:
        x = keys[0] if x is None else x
        if x not in keys:
            raise ParameterError(f"The 'x' parameter must be one of the fraction keys {keys}. Got {x!r}.")
        on_curve = _curve_points(ds, keys, x)
        xs = key_values(ds, x)[on_curve]
        scattered = len(on_curve) == ds.sizes["point"] and len(keys) > 2
    for ax, b in zip(axes, budgets):
        panel = ds if b is None else ds.sel(budget=b)
        for js, (sel, label) in enumerate(series(ds)):
            style = _LINESTYLES[js % len(_LINESTYLES)]
            sub = panel.sel(sel)
            if keys:
                for jm, mm in enumerate(ms):
                    cells = sub.sel(m=mm).isel(point=on_curve)
                    _line(ax, xs, cells, colour=cols[jm], style=style, label=f"{label}, m = {mm}",
                          scattered=scattered)
            else:
                _line(ax, ms, sub, colour=f"C{js}", style=style, label=label)
        if b is not None:
            ax.set_title(f"budget M = {int(b)} synapses")
        grid = "density" if ds.attrs.get("fraction_grid") == "density" else "fraction of the budget"
        ax.set_xlabel(f"{grid} on {x} (1)" if keys else "number of probes m (1)")
        if not keys:
            integer_axis(ax.xaxis, ms)
        ax.set_ylim(-0.03, 1.03)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("match probability MP (1)")
    handles, labels = axes[0].get_legend_handles_labels()
    if "verdict" in ds:
        handles += verdict_legend()
        labels += [h.get_label() for h in verdict_legend()]
    fig.legend(handles, labels, loc="outside right center", fontsize="small", title="95% Wilson bands")
    fig.suptitle(f"{ds.attrs.get('circuit_name', '')}: MP vs allocation ({ds.attrs.get('trials', '?')} trials/point)")
    return fig


def _line(ax: Any, xs: np.ndarray, cells: xr.Dataset, *, colour: Any, style: str, label: str,
          scattered: bool = False) -> None:
    y, lo, hi = (done_values(cells, n) for n in ("mp", "mp_low", "mp_high"))
    if scattered:  # points that do not lie on one curve: the Wilson interval as error bars
        ax.errorbar(xs, y, yerr=np.vstack([y - lo, hi - y]), fmt="o", markersize=3.5, color=colour, label=label,
                    alpha=0.8)
    else:
        ax.fill_between(xs, lo, hi, color=colour, alpha=0.18, linewidth=0)
        ax.plot(xs, y, linestyle=style, marker="o", markersize=3.5, color=colour, label=label)
    verdicts = _verdicts(cells)
    if verdicts is not None:
        verdict_markers(ax, np.asarray(xs, float), y, verdicts, colour)


def _grid(ds: xr.Dataset, xkey: str, ykey: str | None, values: np.ndarray, verdicts: np.ndarray | None):
    """Values at points (x level, y level) on the grid of levels: the largest where several points share a cell
    (the other keys take what makes the point sum to 1)."""
    xv = key_values(ds, xkey)
    xl = np.unique(xv)
    yv = key_values(ds, ykey) if ykey else None
    yl = np.unique(yv) if ykey else None
    out = np.full((1 if yl is None else len(yl), len(xl)), np.nan)
    verdict = np.full(out.shape, "", dtype=object)
    for i, v in enumerate(values):
        c = np.searchsorted(xl, xv[i])
        r = 0 if yl is None else np.searchsorted(yl, yv[i])
        if np.isfinite(v) and not (out[r, c] >= v):
            out[r, c] = v
            if verdicts is not None:
                verdict[r, c] = verdicts[i]
    return xl, yl, out, verdict


def _hatch(ax: Any, xe: np.ndarray, ye: np.ndarray, verdict: np.ndarray) -> None:
    for r in range(verdict.shape[0]):
        for c in range(verdict.shape[1]):
            pattern = VERDICT_HATCHES.get(str(verdict[r, c]), "")
            if pattern:
                ax.add_patch(Rectangle((xe[c], ye[r]), xe[c + 1] - xe[c], ye[r + 1] - ye[r], fill=False,
                                       hatch=pattern, edgecolor="0.55", linewidth=0))


def mp_heatmap(ds: xr.Dataset, *, budget: int | None = None, m: int | None = None) -> Figure:
    """MP as a heat map over two swept axes, one panel per strategy (and flags; per ``m`` for three keys).

    Parameters
    ----------
    ds : xarray.Dataset
        A sweep result.
    budget : int, optional
        Which budget to show (default: the first).
    m : int, optional
        With three or more fraction keys: which ``m`` to show (default: every m, one row each).

    Returns
    -------
    matplotlib.figure.Figure
        Three or more keys: fraction of key 0 (x) against key 1 (y), cells off the simplex blank. One or two
        keys: the first key's fraction (x) against ``m`` (y, integer ticks). No keys: budget (x) against ``m``.
        Hatching marks each cell's certificate verdict (legend).
    """
    ds = require_sweep(ds, "mp_heatmap")
    keys = fraction_keys(ds)
    has_budget = "budget" in ds.dims
    b = (ds["budget"].values[0] if budget is None else budget) if has_budget else None
    panel = ds.sel(budget=b) if has_budget and keys else ds
    ms = ds["m"].values if (m is None or len(keys) < 3) else [m]
    rows = ms if len(keys) >= 3 else [None]
    tiles = []
    for mm in rows:
        row = []
        for sel, label in series(ds):
            cells = panel.sel(sel)
            if len(keys) >= 3:
                cells = cells.sel(m=mm)
                xl, yl, grid, verdict = _grid(ds, keys[0], keys[1], done_values(cells, "mp"), _verdicts(cells))
                row.append((xl, yl, grid, verdict, f"{label}, m = {mm}"))
            elif keys:
                per_m = [_grid(ds, keys[0], None, done_values(cells.sel(m=v), "mp"), _verdicts(cells.sel(m=v)))
                         for v in ms]
                grid = np.concatenate([g[2] for g in per_m])
                verdict = np.concatenate([g[3] for g in per_m])
                row.append((per_m[0][0], ms, grid, verdict, label))
            else:
                cells = cells.transpose("m", "budget", ...)
                verdicts = _verdicts(cells)
                row.append((ds["budget"].values, ms, done_values(cells, "mp"),
                            verdicts if verdicts is not None else np.full(cells["mp"].shape, ""), label))
        tiles.append(row)
    if len(keys) >= 3:
        xlabel, ylabel = f"fraction of the budget on {keys[0]} (1)", f"fraction of the budget on {keys[1]} (1)"
    elif keys:
        xlabel, ylabel = f"fraction of the budget on {keys[0]} (1)", "number of probes m (1)"
    else:
        xlabel, ylabel = "budget M (synapses)", "number of probes m (1)"
    nrow, ncol = len(tiles), len(tiles[0])
    fig = Figure(figsize=(3.6 * ncol + 2.2, 3.0 * nrow + 0.6), layout="constrained")
    axes = fig.subplots(nrow, ncol, squeeze=False)
    image = None
    for row, ax_row in zip(tiles, axes):
        for (xv, yv, grid, verdict, title), ax in zip(row, ax_row):
            xe, ye = edges(xv), edges(yv)
            image = ax.pcolormesh(xe, ye, grid, vmin=0.0, vmax=1.0, cmap="magma", shading="flat")
            _hatch(ax, xe, ye, verdict)
            ax.set_xlabel(xlabel)
            ax.set_ylabel(ylabel)
            if len(keys) < 3:
                integer_axis(ax.yaxis, yv)
            if not keys:
                integer_axis(ax.xaxis, xv)
            ax.set_title(title, fontsize="medium")
    cbar = fig.colorbar(image, ax=axes, shrink=0.9)
    cbar.set_label("match probability MP (1)")
    if "verdict" in ds:
        fig.legend(handles=verdict_legend("hatch"), loc="outside right lower", fontsize="x-small")
    what = "" if b is None or not keys else f", budget M = {int(b)}"
    fig.suptitle(f"{ds.attrs.get('circuit_name', '')}: MP heat map{what}")
    return fig


def mp_ternary(ds: xr.Dataset, *, budget: int | None = None, m: int | None = None) -> Figure:
    """MP on the simplex of exactly three fraction keys (a ternary plot, mpltern), one panel per strategy.

    Parameters
    ----------
    ds : xarray.Dataset
        A sweep over three fraction keys.
    budget, m : int, optional
        Which budget and ``m`` to show (default: the first of each).

    Returns
    -------
    matplotlib.figure.Figure
        Each computed point at its fractions, coloured by MP; marker shape = certificate verdict.
    """
    import mpltern  # noqa: F401  (registers the "ternary" projection)

    ds = require_sweep(ds, "mp_ternary")
    keys = fraction_keys(ds)
    if len(keys) != 3:
        raise ParameterError(f"mp_ternary needs a sweep over exactly three fraction keys. Got {keys}.")
    sel = {"m": ds["m"].values[0] if m is None else m}
    if "budget" in ds.dims:
        sel["budget"] = ds["budget"].values[0] if budget is None else budget
    panel = ds.sel(sel)
    t, left, right = (key_values(ds, k) for k in keys)
    groups = series(ds)
    fig = Figure(figsize=(4.4 * len(groups) + 1.2, 4.4), layout="constrained")
    image = None
    for j, (s, label) in enumerate(groups):
        ax = fig.add_subplot(1, len(groups), j + 1, projection="ternary")
        cells = panel.sel(s)
        mp = done_values(cells, "mp")
        verdicts = _verdicts(cells)
        for verdict, marker in VERDICT_MARKERS.items():
            hit = np.isfinite(mp) & ((verdicts == verdict) if verdicts is not None else (verdict == "positive"))
            if hit.any():
                image = ax.scatter(t[hit], left[hit], right[hit], c=mp[hit], vmin=0.0, vmax=1.0, cmap="magma",
                                   marker=marker, s=60, edgecolor="k", linewidths=0.5, label=f"verdict {verdict}")
        ax.set_tlabel(keys[0])
        ax.set_llabel(keys[1])
        ax.set_rlabel(keys[2])
        ax.set_title(label, fontsize="medium", pad=24)
        ax.legend(fontsize="x-small", loc="upper left", bbox_to_anchor=(-0.2, 1.15))
    if image is not None:
        fig.colorbar(image, ax=fig.axes, shrink=0.8).set_label("match probability MP (1)")
    at = ", ".join(f"{k} = {v}" for k, v in sel.items())
    fig.suptitle(f"{ds.attrs.get('circuit_name', '')}: MP on the simplex ({at})")
    return fig


def plot_paired_difference(diff: xr.Dataset, *, x: str | None = None) -> Figure:
    """Paired MP differences (:func:`neurosubset.paired_difference`) with their exact McNemar intervals.

    Parameters
    ----------
    diff : xarray.Dataset
        The result of :func:`neurosubset.paired_difference`.
    x : str, optional
        The dim on the x axis (default ``m`` if present, else the first dim).

    Returns
    -------
    matplotlib.figure.Figure
        ``MP(a) - MP(b)`` against ``x`` with error bars (the interval), a series per value of the other dims.
    """
    if "mp_difference" not in diff:
        raise ParameterError("plot_paired_difference needs the Dataset of paired_difference (mp_difference, ...).")
    dims = list(diff["mp_difference"].dims)
    if not dims:
        diff, dims = diff.expand_dims(comparison=[0]), ["comparison"]
    x = x or ("m" if "m" in dims else dims[0])
    if x not in dims:
        raise ParameterError(f"The 'x' parameter must be one of the dims {dims}. Got {x!r}.")
    rest = [d for d in dims if d != x]
    import itertools

    combos = list(itertools.product(*(range(diff.sizes[d]) for d in rest)))
    fig = Figure(figsize=(6.4, 4.0), layout="constrained")
    ax = fig.subplots()
    xs = np.asarray(diff[x].values) if x in diff.coords else np.arange(diff.sizes[x])
    numeric = np.issubdtype(np.asarray(xs).dtype, np.number)
    pos = xs.astype(float) if numeric else np.arange(len(xs), dtype=float)
    for j, combo in enumerate(combos):
        one = diff.isel(dict(zip(rest, combo))).transpose(x)
        y = one["mp_difference"].values
        err = np.vstack([y - one["mp_difference_low"].values, one["mp_difference_high"].values - y])
        label = ", ".join(_label(one, d) for d in rest) or None
        shift = (j - (len(combos) - 1) / 2) * 0.04 * (np.ptp(pos) or 1.0)
        ax.errorbar(pos + shift, y, yerr=err, fmt="o-", capsize=3, color=f"C{j % 10}", label=label)
    ax.axhline(0.0, color="0.5", linewidth=0.8)
    if not numeric:
        ax.set_xticks(pos, [str(v) for v in xs])
    elif x in ("m", "budget"):
        integer_axis(ax.xaxis, xs)
    ax.set_xlabel(f"{x} (1)" if x == "m" else x)
    ax.set_ylabel("MP(a) - MP(b) (1)")
    ax.set_ylim(-1.05, 1.05)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small")
    fig.suptitle(f"a = {diff.attrs.get('a', '?')} vs b = {diff.attrs.get('b', '?')}\n"
                 f"{100 * float(diff.attrs.get('confidence', 0.95)):g}% exact McNemar intervals, "
                 f"{diff.attrs.get('trials', '?')} paired trials", fontsize="medium")
    return fig


def _label(one: xr.Dataset, dim: str) -> str:
    """``dim = value`` of a selected series (a fraction point by its keys)."""
    if dim == "point":
        keys = fraction_keys(one)
        return ", ".join(f"{k} = {key_values(one, k).item():g}" for k in keys) if keys else "point"
    return f"{dim} = {one[dim].item()}" if dim in one.coords else dim
