"""Sweep figures: MP curves and heat maps with certificate verdicts, ternary plots, paired differences.

Every function takes a sweep in the ``point`` layout or the old dense one (converted by
:func:`neurosubset.sweeps.as_points`), draws only computed points, and marks each point's certificate verdict
("zero", "one", "positive", "unproven"; markers on curves and ternary plots, hatches on heat maps).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import xarray as xr
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle

from .._checks import ParameterError
from ._common import (_LINESTYLES, BRACKET_LABEL, LOWER_BOUND_LABEL, VERDICT_HATCHES, VERDICT_MARKERS, colours,
                      done_values, edges, fraction_keys, integer_axis, key_values, lower_bound, require_sweep,
                      separate_tick_labels, series, title, varying_keys, verdict_legend, verdict_markers, wrap)

__all__ = ["mp_curves", "mp_heatmap", "mp_ternary", "plot_paired_difference", "ternary_keys"]


def _verdicts(cells: xr.Dataset) -> np.ndarray | None:
    return np.asarray(cells["verdict"].values).astype(str) if "verdict" in cells else None


def _curve_path(ds: xr.Dataset, keys: list[str], x: str) -> tuple[np.ndarray, bool, str]:
    """Which points the curves of key ``x`` follow, whether they lie on one curve, and the x-axis label.

    Returns ``(indices along point, on_curve, label)``. On one curve (indices sorted by ``x``): a sweep over at
    most two varying keys; a full simplex grid, along its edge ``x`` <-> the last other varying key (the other
    varying keys at 0); a density grid, with the other keys at the first point's values. Otherwise (explicit
    points, Dirichlet draws) every point, in point order, drawn as separate points. The label names every key:
    the one on the axis, and how each other key depends on it or what it is held at.
    """
    varying = varying_keys(ds)
    fixed = [k for k in keys if k not in varying]
    held = [f"{k} = {key_values(ds, k)[0]:g}" for k in fixed]
    n = ds.sizes["point"]
    if ds.attrs.get("fraction_grid") == "density":
        first = {k: key_values(ds, k)[0] for k in varying if k != x}
        hit = np.all([np.isclose(key_values(ds, k), v) for k, v in first.items()], axis=0) if first else \
            np.ones(n, bool)
        idx = np.nonzero(hit)[0]
        if idx.size >= 2 or n < 2:
            label = "; ".join([f"density of plastic synapses on {x} (1)"]
                              + [f"{k} = {v:g}" for k, v in first.items()] + held)
            return idx[np.argsort(key_values(ds, x)[idx], kind="stable")], True, label
    elif len(varying) <= 2 or _simplex_grid(ds, varying):
        partner = ([k for k in varying if k != x] or [None])[-1]
        others = [k for k in varying if k not in (x, partner)]
        hit = np.all([np.isclose(key_values(ds, k), 0.0) for k in others], axis=0) if others else np.ones(n, bool)
        idx = np.nonzero(hit)[0]
        total = float(np.median(key_values(ds, x)[idx] + (key_values(ds, partner)[idx] if partner else 0.0)))
        parts = [f"fraction of the budget on {x} (1)"]
        if partner:
            parts.append(f"{partner} = {'1' if np.isclose(total, 1.0) else f'{total:g}'} - {x}")
        if others:
            parts.append(f"{', '.join(others)} = 0")
        idx = idx[np.argsort(key_values(ds, x)[idx], kind="stable")]
        return idx, True, "; ".join(parts + held)
    shares = " / ".join(keys)
    return np.arange(n), False, f"sweep point (fractions of the budget on {shares}, 1)"


def _simplex_grid(ds: xr.Dataset, keys: list[str]) -> bool:
    """Whether the points are every point of one simplex grid over ``keys`` (``simplex_grid(keys, step)``, the
    shares scaled by their common sum where a constant key takes part of the budget)."""
    values = np.stack([key_values(ds, k) for k in keys], axis=1)
    total = values.sum(1)
    if not np.allclose(total, total[0]) or total[0] <= 0:
        return False
    values = values / total[0]
    positive = np.unique(values[values > 1e-9])
    if not positive.size:
        return False
    units = round(1.0 / positive.min())
    grid = values * units
    if not np.allclose(grid, np.round(grid), atol=1e-6):
        return False
    return len(np.unique(np.round(grid).astype(int), axis=0)) == math.comb(units + len(keys) - 1, len(keys) - 1)


def _point_label(ds: xr.Dataset, keys: list[str], i: int) -> str:
    """A point's tick label: its share of every key, two significant digits each, ``/``-separated."""
    return "/".join(f"{key_values(ds, k)[i]:.2g}" for k in keys)


def mp_curves(ds: xr.Dataset, *, x: str | None = None) -> Figure:
    """MP against the fraction of the budget given to one key, against the budget, or against ``m``.

    Parameters
    ----------
    ds : xarray.Dataset
        A sweep result. Only computed points are drawn.
    x : str, optional
        What goes on the x axis: a fraction key (default: the first key), ``"budget"`` (default for a sweep over
        two or more budgets without fraction keys; allowed where the sweep has one fraction point or none) or
        ``"m"`` (default otherwise). With three or more keys the curve follows the edge of the simplex between
        ``x`` and the last other key (the other keys at 0, said in the axis label); explicit points off any grid
        are drawn one by one, labelled by the fractions of every key.

    Returns
    -------
    matplotlib.figure.Figure
        One panel per budget (one panel when ``x`` is ``"budget"``); a line per (strategy, swept flags, m)
        (per strategy and flags when x is ``m``): colour = m, line style = strategy, shaded band = 95% Wilson
        interval, white markers = certificate verdict, hollow squares = lower bounds (a local solver decided some
        trials: MP may be higher) with the MP bracket ``[mp_lower, mp_upper]`` as a bar where stored.
    """
    ds = require_sweep(ds, "mp_curves")
    keys = fraction_keys(ds)
    has_budget = "budget" in ds.dims
    if x is None:
        x = keys[0] if keys else ("budget" if has_budget and ds.sizes["budget"] > 1 else "m")
    allowed = keys + ["m"] + (["budget"] if has_budget and (not keys or ds.sizes["point"] == 1) else [])
    if x not in allowed:
        raise ParameterError(f"The 'x' parameter must be one of {allowed}. Got {x!r}.")
    if x in keys and x not in varying_keys(ds) and ds.sizes["point"] > 1:
        raise ParameterError(f"The 'x' parameter must be a fraction key that varies between points "
                             f"{varying_keys(ds)}: {x!r} is the same at every point.")
    by_budget = x == "budget"
    budgets = ds["budget"].values if has_budget and not by_budget else [None]
    ms = ds["m"].values
    cols = colours(len(ms))
    on_curve, xs, label_x = None, None, ""
    if x in keys:
        on_curve, continuous, label_x = _curve_path(ds, keys, x)
        xs = key_values(ds, x)[on_curve] if continuous else np.arange(len(on_curve), dtype=float)
    else:
        continuous = True
    width = 4.2 * len(budgets) + 2.5 + (0.18 * max(0, len(on_curve) - 12) if not continuous else 0.0)
    fig = Figure(figsize=(width, 4.0 if continuous else 4.6), layout="constrained")
    axes = fig.subplots(1, len(budgets), squeeze=False, sharey=True)[0]
    groups = series(ds)
    for ax, b in zip(axes, budgets):
        panel = ds if b is None else ds.sel(budget=b)
        if "point" in panel.dims and x not in keys:
            panel = panel.isel(point=0)
        for js, (sel, label) in enumerate(groups):
            style = _LINESTYLES[js % len(_LINESTYLES)]
            sub = panel.sel(sel)
            if x in keys or by_budget:
                for jm, mm in enumerate(ms):
                    cells = sub.sel(m=mm)
                    if x in keys:
                        cells = cells.isel(point=on_curve)
                    pos = ds["budget"].values if by_budget else xs
                    if not continuous:  # dodge the series apart at each point
                        k, n = js * len(ms) + jm, len(groups) * len(ms)
                        pos = xs + (k - (n - 1) / 2) * min(0.6 / n, 0.12)
                    _line(ax, np.asarray(pos, float), cells, colour=cols[jm], style=style,
                          label=(f"{label}, " if label else "") + f"m = {mm}", scattered=not continuous)
            else:
                _line(ax, ms, sub, colour=f"C{js}", style=style, label=label or "MP")
        if b is not None:
            title(ax, f"budget M = {int(b)} synapses")
        if x in keys:
            ax.set_xlabel(wrap(label_x, fig.get_figwidth() / len(budgets), 10.0))
            if continuous:
                ax.set_xlim(*_share_limits(xs))
            else:
                ax.set_xticks(xs, [_point_label(ds, keys, i) for i in on_curve], rotation=90, fontsize="small")
        elif by_budget:
            ax.set_xlabel("budget M (synapses)")
            integer_axis(ax.xaxis, ds["budget"].values)
        else:
            ax.set_xlabel("number of probes m (1)")
            integer_axis(ax.xaxis, ms)
        ax.set_ylim(-0.03, 1.03)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("match probability MP (1)")
    handles, labels = axes[0].get_legend_handles_labels()
    extra = _lower_bound_legend(ds)
    if "verdict" in ds:
        extra = verdict_legend() + extra
    handles += extra
    labels += [h.get_label() for h in extra]
    fig.legend(handles, labels, loc="outside right center", fontsize="small", title="95% Wilson bands")
    what = {None: "allocation", "m": "number of probes", "budget": "budget"}.get(x if x in ("m", "budget") else None)
    title(fig, f"{ds.attrs.get('circuit_name', '')}: MP vs {what} ({ds.attrs.get('trials', '?')} trials/point)")
    if not continuous:
        separate_tick_labels(fig, axes)
    return fig


def _share_limits(values: np.ndarray) -> tuple[float, float]:
    """x limits for shares: the values with a small margin, kept inside [0, 1]."""
    lo, hi = (float(np.min(values)), float(np.max(values))) if np.size(values) else (0.0, 1.0)
    pad = 0.03 * max(hi - lo, 0.1)
    return max(0.0, lo - pad), min(1.0, hi + pad)


def _lower_bound_legend(ds: xr.Dataset) -> list[Any]:
    """Legend handles for the lower-bound marks (and the MP bracket where stored), where the sweep has any."""
    if not lower_bound(ds).any():
        return []
    out = [Line2D([], [], marker="s", linestyle="", markerfacecolor="none", markeredgecolor="k", markersize=8,
                  label=LOWER_BOUND_LABEL)]
    if "mp_lower" in ds:
        out.append(Line2D([], [], marker="_", linestyle="-", color="k", markersize=8, label=BRACKET_LABEL))
    return out


def _line(ax: Any, xs: np.ndarray, cells: xr.Dataset, *, colour: Any, style: str, label: str,
          scattered: bool = False) -> None:
    y, lo, hi = (done_values(cells, n) for n in ("mp", "mp_low", "mp_high"))
    if scattered:  # points that do not lie on one curve: the Wilson interval as error bars
        ax.errorbar(xs, y, yerr=_yerr(y, lo, hi), fmt="o", markersize=3.5, color=colour, label=label, alpha=0.8)
    else:
        ax.fill_between(xs, lo, hi, color=colour, alpha=0.18, linewidth=0)
        ax.plot(xs, y, linestyle=style, marker="o", markersize=3.5, color=colour, label=label)
    verdicts = _verdicts(cells)
    if verdicts is not None:
        verdict_markers(ax, np.asarray(xs, float), y, verdicts, colour)
    lb = lower_bound(cells) & np.isfinite(y)
    if lb.any():
        ax.scatter(xs[lb], y[lb], marker="s", s=64, facecolor="none", edgecolor=colour, linewidths=1.3, zorder=4)
        if "mp_lower" in cells:
            low, up = done_values(cells, "mp_lower")[lb], done_values(cells, "mp_upper")[lb]
            ax.errorbar(xs[lb], y[lb], yerr=_yerr(y[lb], low, up), fmt="none", ecolor=colour, elinewidth=1.0,
                        capsize=3, zorder=3)


def _yerr(y: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """``(2, n)`` error-bar lengths from an interval, never negative: an estimate on (or, by rounding, a hair
    beyond) its interval's edge gets a zero-length bar on that side."""
    return np.clip(np.vstack([np.asarray(y) - np.asarray(low), np.asarray(high) - np.asarray(y)]), 0.0, None)


def _grid(ds: xr.Dataset, xkey: str, ykey: str | None, values: np.ndarray, verdicts: np.ndarray | None,
          bound: np.ndarray | None = None):
    """Values at points (x level, y level) on the grid of levels: the largest where several points share a cell
    (the other keys take what makes the point sum to 1). Returns ``(x levels, y levels, values, verdicts, lower
    bound per cell, points per cell)``."""
    xv = key_values(ds, xkey)
    xl = np.unique(xv)
    yv = key_values(ds, ykey) if ykey else None
    yl = np.unique(yv) if ykey else None
    out = np.full((1 if yl is None else len(yl), len(xl)), np.nan)
    verdict = np.full(out.shape, "", dtype=object)
    lower = np.zeros(out.shape, bool)
    count = np.zeros(out.shape, int)
    for i, v in enumerate(values):
        c = np.searchsorted(xl, xv[i])
        r = 0 if yl is None else np.searchsorted(yl, yv[i])
        count[r, c] += 1
        if np.isfinite(v) and not (out[r, c] >= v):
            out[r, c] = v
            if verdicts is not None:
                verdict[r, c] = verdicts[i]
            lower[r, c] = bool(bound[i]) if bound is not None else False
    return xl, yl, out, verdict, lower, count


def _hatch(ax: Any, xe: np.ndarray, ye: np.ndarray, verdict: np.ndarray) -> None:
    for r in range(verdict.shape[0]):
        for c in range(verdict.shape[1]):
            pattern = VERDICT_HATCHES.get(str(verdict[r, c]), "")
            if pattern:
                ax.add_patch(Rectangle((xe[c], ye[r]), xe[c + 1] - xe[c], ye[r + 1] - ye[r], fill=False,
                                       hatch=pattern, edgecolor="0.55", linewidth=0))


def _share_edges(v: np.ndarray) -> np.ndarray:
    """Cell edges around share levels, clipped to [0, 1] (a share's axis never leaves it)."""
    return np.clip(edges(v), 0.0, 1.0)


def _reduction(ds: xr.Dataset, keys: list[str], shown: list[str], crowded: bool) -> str:
    """What a heat map over the keys ``shown`` does with the others: ``""`` (none), how a hidden key follows from the
    shown ones, or the maximum over the splits between the hidden keys (``crowded``: some cell holds several
    points)."""
    hidden = [k for k in keys if k not in shown]
    if not hidden:
        return ""
    varying = varying_keys(ds)
    fixed = [f"{k} = {key_values(ds, k)[0]:g}" for k in hidden if k not in varying]
    moving = [k for k in hidden if k in varying]
    parts = []
    if moving and crowded:
        parts.append(f"max over {', '.join(moving)}")
    elif moving and ds.attrs.get("fraction_grid") != "density":
        parts.append(f"{', '.join(moving)} = the rest of the budget")
    elif moving:
        parts.append(f"{', '.join(moving)} at each point's value")
    return "; ".join(parts + fixed)


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
        Three or more keys: fraction of key 0 (x) against key 1 (y), cells off the simplex blank; where several
        points share a cell (four keys and more, or density grids) the cell shows their largest MP, and the colour
        bar and title say so ("max over" the hidden keys). One or two keys: the first key's fraction (x) against
        ``m`` (y, integer ticks). No keys: budget (x) against ``m``. Share axes stay inside [0, 1]. Hatching
        marks each cell's certificate verdict, a hollow square a lower bound (legend).
    """
    ds = require_sweep(ds, "mp_heatmap")
    keys = fraction_keys(ds)
    has_budget = "budget" in ds.dims
    b = (ds["budget"].values[0] if budget is None else budget) if has_budget else None
    panel = ds.sel(budget=b) if has_budget and keys else ds
    ms = ds["m"].values if (m is None or len(keys) < 3) else [m]
    rows = ms if len(keys) >= 3 else [None]
    shown = [k for k in (varying_keys(ds) if len(varying_keys(ds)) >= 2 else keys)][:2] if keys else []
    tiles = []
    crowded = False
    for mm in rows:
        row = []
        for sel, label in series(ds):
            cells = panel.sel(sel)
            if len(keys) >= 3:
                cells = cells.sel(m=mm)
                xl, yl, grid, verdict, lower, count = _grid(ds, shown[0], shown[1], done_values(cells, "mp"),
                                                            _verdicts(cells), lower_bound(cells))
                crowded |= bool((count > 1).any())
                row.append((xl, yl, grid, verdict, lower, f"{label}, m = {mm}" if label else f"m = {mm}"))
            elif keys:
                per_m = [_grid(ds, keys[0], None, done_values(cells.sel(m=v), "mp"), _verdicts(cells.sel(m=v)),
                               lower_bound(cells.sel(m=v))) for v in ms]
                crowded |= any(bool((g[5] > 1).any()) for g in per_m)
                row.append((per_m[0][0], ms, *(np.concatenate([g[i] for g in per_m]) for i in (2, 3, 4)), label))
            else:
                cells = cells.transpose("m", "budget", ...)
                verdicts = _verdicts(cells)
                row.append((ds["budget"].values, ms, done_values(cells, "mp"),
                            verdicts if verdicts is not None else np.full(cells["mp"].shape, ""),
                            lower_bound(cells), label))
        tiles.append(row)
    grid_word = "density of plastic synapses on" if ds.attrs.get("fraction_grid") == "density" else \
        "fraction of the budget on"
    if len(keys) >= 3:
        xlabel, ylabel = f"{grid_word} {shown[0]} (1)", f"{grid_word} {shown[1]} (1)"
        reduced = _reduction(ds, keys, shown, crowded)
    elif keys:
        xlabel, ylabel = f"{grid_word} {keys[0]} (1)", "number of probes m (1)"
        reduced = _reduction(ds, keys, keys[:1], crowded)
    else:
        xlabel, ylabel = "budget M (synapses)", "number of probes m (1)"
        reduced = ""
    nrow, ncol = len(tiles), len(tiles[0])
    fig = Figure(figsize=(3.6 * ncol + 2.6, 3.0 * nrow + 0.9), layout="constrained")
    axes = fig.subplots(nrow, ncol, squeeze=False)
    image = None
    any_lower = False
    for row, ax_row in zip(tiles, axes):
        for (xv, yv, grid, verdict, lower, name), ax in zip(row, ax_row):
            xe = _share_edges(xv) if keys else edges(xv)
            ye = _share_edges(yv) if len(keys) >= 3 else edges(yv)
            image = ax.pcolormesh(xe, ye, grid, vmin=0.0, vmax=1.0, cmap="magma", shading="flat")
            _hatch(ax, xe, ye, verdict)
            lower = np.asarray(lower, bool) & np.isfinite(grid)
            if lower.any():
                any_lower = True
                r, c = np.nonzero(lower)
                ax.scatter((xe[c] + xe[c + 1]) / 2, (ye[r] + ye[r + 1]) / 2, marker="s", s=46, facecolor="none",
                           edgecolor="deepskyblue", linewidths=1.4, zorder=3)
            ax.set_xlim(xe[0], xe[-1])
            ax.set_ylim(ye[0], ye[-1])
            ax.set_xlabel(wrap(xlabel, fig.get_figwidth() / ncol, 10.0))
            ax.set_ylabel(wrap(ylabel, 3.0, 10.0))
            if len(keys) < 3:
                integer_axis(ax.yaxis, yv)
            if not keys:
                integer_axis(ax.xaxis, xv)
            title(ax, name or "MP")
    cbar = fig.colorbar(image, ax=axes, shrink=0.9)
    cbar.set_label(wrap("match probability MP (1)" + (f", {reduced}" if reduced else ""), 3.0 * nrow + 0.4, 10.0))
    handles = verdict_legend("hatch") if "verdict" in ds else []
    if any_lower:
        handles.append(Line2D([], [], marker="s", linestyle="", markerfacecolor="none",
                              markeredgecolor="deepskyblue", label="lower bound (local solver; MP may be higher)"))
    if handles:
        fig.legend(handles=handles, loc="outside right lower", fontsize="x-small")
    what = "" if b is None or not keys else f", budget M = {int(b)}"
    title(fig, f"{ds.attrs.get('circuit_name', '')}: MP heat map{what}" + (f" ({reduced})" if reduced else ""))
    separate_tick_labels(fig, axes.ravel())
    return fig


def ternary_keys(ds: xr.Dataset) -> list[str] | None:
    """The three keys a ternary plot of ``ds`` shows: its fraction keys less those held constant at every point,
    when exactly three remain (else None)."""
    keys = fraction_keys(ds)
    if len(keys) < 3 or ds.attrs.get("fraction_grid") == "density":
        return None
    varying = varying_keys(require_sweep(ds, "ternary_keys")) if len(keys) > 3 else keys
    return varying if len(varying) == 3 else None


_SIMPLEX_PAD = 0.06  # the drawn triangle reaches this far past each fraction's 0 (and 1 + 2 pads past 1)


def _pad_simplex(ax: Any) -> None:
    """Draw the triangle a little larger than the simplex (ticks stay at 0, 0.2, ..., 1), so a point at a corner
    or on an edge (all the budget on one key, or none on one) shows its whole marker inside the axes."""
    lo, hi = -_SIMPLEX_PAD, 1.0 + 2 * _SIMPLEX_PAD
    ax.set_ternary_lim(lo, hi, lo, hi, lo, hi)
    ticks = np.linspace(0.0, 1.0, 6)
    for axis in (ax.taxis, ax.laxis, ax.raxis):
        axis.set_ticks(ticks)


def mp_ternary(ds: xr.Dataset, *, budget: int | None = None, m: int | None = None) -> Figure:
    """MP on the simplex of three fraction keys (a ternary plot, mpltern), one panel per strategy.

    Parameters
    ----------
    ds : xarray.Dataset
        A sweep over three fraction keys, or over more where all but three are held constant (those are named in
        the title; the three shown split what the constant ones leave of the budget, drawn normalised).
    budget, m : int, optional
        Which budget and ``m`` to show (default: the first of each).

    Returns
    -------
    matplotlib.figure.Figure
        Each computed point at its fractions, coloured by MP; marker shape = certificate verdict; a hollow
        square around a point = lower bound (a local solver decided some trials).
    """
    import mpltern  # noqa: F401  (registers the "ternary" projection)

    ds = require_sweep(ds, "mp_ternary")
    keys = fraction_keys(ds)
    shown = ternary_keys(ds)
    if shown is None:
        raise ParameterError(f"mp_ternary needs a sweep over exactly three fraction keys (more where all but three "
                             f"are constant; no density grid). Got {keys}, of which {varying_keys(ds)} vary.")
    fixed = [k for k in keys if k not in shown]
    sel = {"m": ds["m"].values[0] if m is None else m}
    if "budget" in ds.dims:
        sel["budget"] = ds["budget"].values[0] if budget is None else budget
    panel = ds.sel(sel)
    t, left, right = (key_values(ds, k) for k in shown)
    groups = series(ds)
    fig = Figure(figsize=(4.6 * len(groups) + 1.6, 5.0), layout="constrained")
    image = None
    any_lower = False
    for j, (s, label) in enumerate(groups):
        ax = fig.add_subplot(1, len(groups), j + 1, projection="ternary")
        cells = panel.sel(s)
        mp = done_values(cells, "mp")
        verdicts = _verdicts(cells)
        for verdict, marker in VERDICT_MARKERS.items():
            hit = np.isfinite(mp) & ((verdicts == verdict) if verdicts is not None else (verdict == "positive"))
            if hit.any():
                image = ax.scatter(t[hit], left[hit], right[hit], c=mp[hit], vmin=0.0, vmax=1.0, cmap="magma",
                                   marker=marker, s=60, edgecolor="k", linewidths=0.5, label=f"verdict {verdict}",
                                   clip_on=False, zorder=3)
        lower = lower_bound(cells) & np.isfinite(mp)
        if lower.any():
            any_lower = True
            ax.scatter(t[lower], left[lower], right[lower], marker="s", s=150, facecolor="none",
                       edgecolor="deepskyblue", linewidths=1.4, label="lower bound", clip_on=False, zorder=3)
        _pad_simplex(ax)
        for axis, key in zip((ax.taxis, ax.laxis, ax.raxis), shown):
            axis.set_label_text(key)  # at its corner (where the key holds the whole budget), horizontal, never rotated
            axis.set_label_rotation_mode("horizontal")
        title(ax, label or "MP", pad=36)
    handles = [h for h in fig.axes[0].get_legend_handles_labels()[0]]
    if image is not None:
        fig.colorbar(image, ax=fig.axes, shrink=0.8).set_label("match probability MP (1)")
    if handles:
        fig.legend(handles=handles, loc="outside lower center", fontsize="x-small", ncols=min(len(handles), 5))
    at = ", ".join(f"{k} = {v}" for k, v in sel.items())
    held = ", ".join(f"{k} = {key_values(ds, k)[0]:g}" for k in fixed)
    title(fig, f"{ds.attrs.get('circuit_name', '')}: MP on the simplex ({at})"
          + (f"; held constant: {held}" if held else "")
          + ("; hollow squares: lower bounds (MP may be higher)" if any_lower else ""))
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
        err = _yerr(y, one["mp_difference_low"].values, one["mp_difference_high"].values)
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
