"""Figures from Datasets only: sweep results (:func:`neurosubset.sweep`) and single ``match_probability`` results.

Every function takes an :class:`xarray.Dataset` and returns a :class:`matplotlib.figure.Figure` built without
pyplot (no global figure state, no display needed); :func:`save_figures` writes PNGs.

- :func:`mp_curves`: MP against one fraction key with 95% Wilson bands, a line per (strategy, m), a panel per budget.
- :func:`mp_heatmap`: MP over two swept axes: two fraction keys (three or more keys), else fraction x m.
- :func:`allocation_masks`: the plastic synapses of allocations as one connectivity matrix, regions as blocks.
- :func:`mp_summary`: one ``match_probability`` Dataset: residual histogram (log axis, tolerance line) + masks.
- :func:`spike_rates`: a spiking comparison (:func:`neurosubset.spiking.spiking_compare`): rates against the rate
  model, teacher against students; :func:`spikecheck_figure` writes it.
"""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure

from ._checks import ParameterError
from ._schema import DONE  # status flag of a computed sweep point
from .circuit import Circuit
from .results import stored_masks

_LINESTYLES = ("-", "--", ":", "-.")
_MASK_CMAP = ListedColormap(["white", "0.82", "crimson"])  # absent, frozen synapse, plastic synapse
_RESIDUAL_FLOOR = 1e-18  # exact zeros are drawn here on the log axis


def is_sweep(ds: xr.Dataset) -> bool:
    """Whether ``ds`` is a sweep result (it has ``strategy`` and ``m`` dims and a ``status`` flag)."""
    return "status" in ds and "strategy" in ds.dims and "m" in ds.dims


def _keys(ds: xr.Dataset) -> list[str]:
    return list(json.loads(ds.attrs.get("fraction_keys", "[]")))


def _points(ds: xr.Dataset) -> list[tuple[float, ...]]:
    return [tuple(p) for p in json.loads(ds.attrs.get("fraction_points", "[[]]"))]


def _require_sweep(ds: xr.Dataset, what: str) -> None:
    if not is_sweep(ds):
        raise ParameterError(f"{what} needs a sweep Dataset (dims budget, fractions..., strategy, m and a 'status' "
                             f"variable). Got dims {dict(ds.sizes)}.")


def mp_curves(ds: xr.Dataset, *, x: str | None = None) -> Figure:
    """MP against the fraction of the budget given to one key, with 95% Wilson bands.

    Parameters
    ----------
    ds : xarray.Dataset
        A sweep result. Only computed points are drawn.
    x : str, optional
        The fraction key on the x axis (default: the first key). With three or more keys the curve follows the
        edge of the simplex between ``x`` and the last key (the other keys at 0). Without fraction keys the x
        axis is ``m``.

    Returns
    -------
    matplotlib.figure.Figure
        One panel per budget; a line per (strategy, m) (per strategy when x is ``m``): colour = m, line style =
        strategy, shaded band = 95% Wilson interval.
    """
    _require_sweep(ds, "mp_curves")
    keys = _keys(ds)
    budgets = ds["budget"].values
    fig = Figure(figsize=(4.2 * len(budgets) + 1.5, 3.6), layout="constrained")
    axes = fig.subplots(1, len(budgets), squeeze=False, sharey=True)[0]
    strategies = [str(s) for s in ds["strategy"].values]
    ms = ds["m"].values
    colours = _colours(len(ms))
    if keys:
        x = keys[0] if x is None else x
        if x not in keys:
            raise ParameterError(f"The 'x' parameter must be one of the fraction keys {keys}. Got {x!r}.")
        partner = keys[-1] if x != keys[-1] else keys[0]  # with 3+ keys: the simplex edge x <-> partner
        on_edge = [p for p in _points(ds) if all(v == 0 for k, v in zip(keys, p) if k not in (x, partner))]
        on_edge.sort(key=lambda p: p[keys.index(x)])
        xs = np.array([p[keys.index(x)] for p in on_edge])
    for ax, b in zip(axes, budgets):
        for js, strat in enumerate(strategies):
            style = _LINESTYLES[js % len(_LINESTYLES)]
            if keys:
                for jm, mm in enumerate(ms):
                    sel = [ds.sel(budget=b, strategy=strat, m=mm, **_cell(keys, p)) for p in on_edge]
                    _line(ax, xs, sel, colour=colours[jm], style=style, label=f"{strat}, m = {mm}")
            else:
                sub = ds.sel(budget=b, strategy=strat)
                _line(ax, ms, [sub.sel(m=mm) for mm in ms], colour=f"C{js}", style=style, label=strat)
        ax.set_title(f"budget M = {int(b)} synapses")
        ax.set_xlabel(f"fraction of the budget on {x} (1)" if keys else "number of probes m (1)")
        ax.set_ylim(-0.03, 1.03)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("match probability MP (1)")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right center", fontsize="small", title="95% Wilson bands")
    fig.suptitle(f"{ds.attrs.get('circuit_name', '')}: MP vs allocation ({ds.attrs.get('trials', '?')} trials/point)")
    return fig


def _cell(keys: Sequence[str], point: Sequence[float]) -> dict[str, float]:
    return dict(zip(keys, point))


def _colours(n: int) -> list[Any]:
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    return [cmap(v) for v in np.linspace(0.0, 0.85, max(n, 1))]


def _line(ax: Any, xs: np.ndarray, cells: Sequence[xr.Dataset], *, colour: Any, style: str, label: str) -> None:
    done = np.array([int(c["status"]) == DONE for c in cells], bool)
    y = np.array([float(c["mp"]) if d else np.nan for c, d in zip(cells, done)])
    lo = np.array([float(c["mp_low"]) if d else np.nan for c, d in zip(cells, done)])
    hi = np.array([float(c["mp_high"]) if d else np.nan for c, d in zip(cells, done)])
    ax.fill_between(xs, lo, hi, color=colour, alpha=0.18, linewidth=0)
    ax.plot(xs, y, linestyle=style, marker="o", markersize=3.5, color=colour, label=label)


def mp_heatmap(ds: xr.Dataset, *, budget: int | None = None, m: int | None = None) -> Figure:
    """MP as a heat map over two swept axes, one panel per strategy (and per ``m`` for two fraction keys).

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
        keys: the first key's fraction (x) against ``m`` (y). No keys: budget (x) against ``m`` (y).
    """
    _require_sweep(ds, "mp_heatmap")
    keys = _keys(ds)
    b = ds["budget"].values[0] if budget is None else budget
    strategies = [str(s) for s in ds["strategy"].values]
    mp = ds["mp"].where(ds["status"] == DONE)
    if len(keys) >= 3:
        ms = ds["m"].values if m is None else [m]
        grids = [[(mp.sel(budget=b, strategy=s, m=mm), f"{s}, m = {mm}") for s in strategies] for mm in ms]
        xdim, ydim = keys[0], keys[1]
        others = keys[2:]
        # the other keys take whatever makes the point sum to 1: reduce them away by taking the computed cell
        grids = [[(g.max(dim=others), t) for g, t in row] for row in grids]
        xlabel, ylabel = f"fraction of the budget on {xdim} (1)", f"fraction of the budget on {ydim} (1)"
    elif keys:
        xdim, ydim = keys[0], "m"
        others = keys[1:]
        grids = [[(mp.sel(budget=b, strategy=s).max(dim=others), s) for s in strategies]]
        xlabel, ylabel = f"fraction of the budget on {xdim} (1)", "number of probes m (1)"
    else:
        xdim, ydim = "budget", "m"
        grids = [[(mp.sel(strategy=s), s) for s in strategies]]
        xlabel, ylabel = "budget M (synapses)", "number of probes m (1)"
    nrow, ncol = len(grids), len(grids[0])
    fig = Figure(figsize=(3.6 * ncol + 1.2, 3.0 * nrow + 0.6), layout="constrained")
    axes = fig.subplots(nrow, ncol, squeeze=False)
    image = None
    for row, ax_row in zip(grids, axes):
        for (grid, title), ax in zip(row, ax_row):
            grid = grid.transpose(ydim, xdim)
            xv, yv = grid[xdim].values, grid[ydim].values
            image = ax.pcolormesh(_edges(xv), _edges(yv), grid.values, vmin=0.0, vmax=1.0, cmap="magma",
                                  shading="flat")
            ax.set_xlabel(xlabel)
            ax.set_ylabel(ylabel)
            ax.set_title(title, fontsize="medium")
    cbar = fig.colorbar(image, ax=axes, shrink=0.9)
    cbar.set_label("match probability MP (1)")
    what = "" if xdim == "budget" else f", budget M = {int(b)}"
    fig.suptitle(f"{ds.attrs.get('circuit_name', '')}: MP heat map{what}")
    return fig


def _edges(v: np.ndarray) -> np.ndarray:
    """Cell edges around sorted centres ``v`` (for pcolormesh)."""
    v = np.asarray(v, dtype=float)
    if v.size == 1:
        return np.array([v[0] - 0.5, v[0] + 0.5])
    mid = (v[1:] + v[:-1]) / 2
    return np.concatenate([[v[0] - (mid[0] - v[0])], mid, [v[-1] + (v[-1] - mid[-1])]])


def _mask_matrix(circuit: Circuit, masks: Mapping[str, np.ndarray]) -> tuple[np.ndarray, list[tuple[str, int, int]],
                                                                             list[tuple[str, int, int]]]:
    """Block connectivity matrix: 0 absent, 1 frozen synapse, 2 plastic; rows = receiving regions, cols = senders."""
    post, pre = ("hidden", "output"), ("input", "hidden")
    rows = [(name, s.start, s.stop) for name, s in circuit.slices(post).items()]
    cols = [(name, s.start, s.stop) for name, s in circuit.slices(pre).items()]
    mat = np.zeros((circuit.n_neurons(post), circuit.n_neurons(pre)))
    for name, at in circuit.block_slices(post, pre).items():  # every weight: inputs send, outputs receive
        block = circuit.structure[name].astype(float)
        block[np.asarray(masks[name], bool)] = 2.0
        mat[at] = np.maximum(mat[at], block)
    return mat, rows, cols


def _draw_masks(ax: Any, circuit: Circuit, masks: Mapping[str, np.ndarray], title: str) -> None:
    mat, rows, cols = _mask_matrix(circuit, masks)
    ax.imshow(mat, cmap=_MASK_CMAP, vmin=0, vmax=2, interpolation="nearest", aspect="auto")
    for _, lo, _hi in rows[1:]:
        ax.axhline(lo - 0.5, color="k", linewidth=0.8)
    for _, lo, _hi in cols[1:]:
        ax.axvline(lo - 0.5, color="k", linewidth=0.8)
    ax.set_yticks([(lo + hi - 1) / 2 for _, lo, hi in rows], [n for n, _, _ in rows])
    ax.set_xticks([(lo + hi - 1) / 2 for _, lo, hi in cols], [n for n, _, _ in cols])
    ax.set_ylabel("postsynaptic region (neurons)")
    ax.set_xlabel("presynaptic region (neurons)")
    counts = ", ".join(f"{k}: {int(np.asarray(v).sum())}" for k, v in masks.items() if np.asarray(v).any())
    ax.set_title(f"{title}\nplastic (red) {counts or 'none'}", fontsize="small")


def _masks_of(ds: xr.Dataset, circuit: Circuit) -> dict[str, np.ndarray]:
    try:
        out = stored_masks(ds)  # the synapse dim of mp results, or one mask_<weight> per weight
    except KeyError:
        out = {}
    missing = set(circuit.weight_names) - set(out)
    if missing:
        raise ParameterError(f"The Dataset has no mask variables for weights {sorted(missing)}.")
    return out


def allocation_masks(ds: xr.Dataset, *, budget: int | None = None,
                     fractions: Mapping[str, float] | None = None) -> Figure:
    """A picture of allocations' masks by region: one panel per strategy of a sweep (or the one allocation).

    Parameters
    ----------
    ds : xarray.Dataset
        A sweep result or a ``match_probability`` Dataset (both carry ``mask_<weight>`` variables and the circuit
        spec in ``attrs["circuit"]``).
    budget : int, optional
        Sweep only: which budget (default: the largest).
    fractions : dict, optional
        Sweep only: which fraction point (default: the middle one of the grid).

    Returns
    -------
    matplotlib.figure.Figure
        Rows = receiving regions, columns = sending regions, blocks separated by lines; white = no synapse,
        grey = frozen synapse, red = plastic synapse.
    """
    circuit = Circuit.from_toml_text(ds.attrs["circuit"])
    if not is_sweep(ds):
        fig = Figure(figsize=(5.0, 4.2), layout="constrained")
        _draw_masks(fig.subplots(), circuit, _masks_of(ds, circuit), ds.attrs.get("allocation_strategy", ""))
        return fig
    keys = _keys(ds)
    b = int(ds["budget"].values[-1]) if budget is None else int(budget)
    if fractions is None:
        points = _points(ds)
        fractions = dict(zip(keys, points[len(points) // 2])) if keys else {}
    strategies = [str(s) for s in ds["strategy"].values]
    fig = Figure(figsize=(4.3 * len(strategies), 4.2), layout="constrained")
    axes = fig.subplots(1, len(strategies), squeeze=False)[0]
    for ax, strat in zip(axes, strategies):
        cell = ds.sel(budget=b, strategy=strat, **fractions)
        _draw_masks(ax, circuit, _masks_of(cell.drop_dims(["m", "trial", "round"], errors="ignore"), circuit), strat)
    where = ", ".join(f"{k} = {v:g}" for k, v in fractions.items())
    fig.suptitle(f"{circuit.name}: allocations at M = {b}" + (f" ({where})" if where else ""))
    return fig


def mp_summary(ds: xr.Dataset) -> Figure:
    """One ``match_probability`` Dataset: histogram of relative residuals (log axis, tolerance line) and masks.

    Parameters
    ----------
    ds : xarray.Dataset
        The result of :func:`neurosubset.match_probability` (``residual (trial)``, ``mp``, masks, attrs).

    Returns
    -------
    matplotlib.figure.Figure
        Left: trials per residual bin with the match tolerance as a dashed line; right: the allocation's masks.
    """
    if "residual" not in ds or ds["residual"].dims != ("trial",):
        raise ParameterError(f"mp_summary needs a match_probability Dataset with 'residual (trial)'. Got variables "
                             f"{sorted(map(str, ds.data_vars))}.")
    circuit = Circuit.from_toml_text(ds.attrs["circuit"])
    tol = float(ds["residual"].attrs.get("tolerance", ds.attrs.get("tolerance", np.nan)))
    res = np.clip(np.asarray(ds["residual"].values, float), _RESIDUAL_FLOOR, None)
    fig = Figure(figsize=(10.0, 4.2), layout="constrained")
    ax_h, ax_m = fig.subplots(1, 2, width_ratios=[1.1, 1.0])
    lo = np.floor(np.log10(min(res.min(), tol))) - 0.5
    hi = np.ceil(np.log10(max(res.max(), tol))) + 0.5
    ax_h.hist(res, bins=np.logspace(lo, hi, 40), color="C0", edgecolor="white", label="trials")
    ax_h.set_xscale("log")
    ax_h.axvline(tol, color="crimson", linestyle="--", label=f"match tolerance {tol:g}")
    ax_h.set_xlabel("relative residual ||y_s - y_t|| / ||y_t|| (1)")
    ax_h.set_ylabel("trials (count)")
    ax_h.legend(fontsize="small")
    low, high = float(ds["mp_low"]), float(ds["mp_high"])
    bound = ds.attrs.get("decision_kind") == "lower bound"  # a local solver: its rate, not MP, is bounded above
    ax_h.set_title(f"MP {'>=' if bound else '='} {float(ds['mp']):.3f}, 95% CI [{low:.3f}, {high:.3f}]"
                   f"{' (lower bound: the upper end does not bound MP)' if bound else ''}\n"
                   f"m = {int(ds['m'])}, {ds.sizes['trial']} trials, solver {ds.attrs.get('solver', '?')}",
                   fontsize="medium")
    _draw_masks(ax_m, circuit, _masks_of(ds, circuit), f"allocation: {ds.attrs.get('allocation_strategy', '')}")
    fig.suptitle(f"{circuit.name}: match probability")
    return fig


def figures(ds: xr.Dataset) -> dict[str, Figure]:
    """Every standard figure for ``ds``: ``curves``, ``heatmap``, ``masks`` for a sweep; ``mp`` for one MP estimate."""
    if is_sweep(ds):
        return {"curves": mp_curves(ds), "heatmap": mp_heatmap(ds), "masks": allocation_masks(ds)}
    return {"mp": mp_summary(ds)}


def save_figures(ds: xr.Dataset, out: str | Path, *, dpi: int = 120) -> list[Path]:
    """Write :func:`figures` as PNG files.

    Parameters
    ----------
    ds : xarray.Dataset
    out : path
        ``x.png`` for a single figure; with several figures, or a path without ``.png``, the files are
        ``<stem>_<name>.png`` next to it.
    dpi : int

    Returns
    -------
    list of pathlib.Path
        The files written.
    """
    out = Path(out)
    figs = figures(ds)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".png" and len(figs) == 1:
        paths = [out]
    else:
        stem = out.with_suffix("") if out.suffix == ".png" else out
        paths = [stem.with_name(f"{stem.name}_{name}.png") for name in figs]
    for path, fig in zip(paths, figs.values()):
        fig.savefig(path, dpi=dpi)
    return paths


def spike_rates(ds: xr.Dataset) -> Figure:
    """Two panels: spiking rate vs rate-model prediction; teacher vs student spiking rates (output neurons x probes).

    Parameters
    ----------
    ds : xarray.Dataset
        From :func:`neurosubset.spiking.spiking_compare` or :func:`neurosubset.spiking.spikecheck`, with or
        without a ``student`` dim.
    """
    students = [str(s) for s in ds["student"].values] if "student" in ds.dims else [None]
    pick = (lambda name, s: (ds[name] if s is None else ds[name].sel(student=s)).values.ravel())
    fig = Figure(figsize=(10, 4.5), layout="constrained")
    left, right = fig.subplots(1, 2)
    left.errorbar(ds.rate_model_teacher.values.ravel(), ds.rate_spiking_teacher.values.ravel(),
                  yerr=ds.rate_spiking_se_teacher.values.ravel(), fmt="o", ms=3, color="k", label="teacher")
    everything = [ds.rate_model_teacher.values.ravel(), ds.rate_spiking_teacher.values.ravel()]
    for k, s in enumerate(students):
        label = s or "student"
        left.errorbar(pick("rate_model_student", s), pick("rate_spiking_student", s),
                      yerr=pick("rate_spiking_se_student", s), fmt="o", ms=3, color=f"C{k}", alpha=0.7, label=label)
        z = pick("z", s)
        agree = float(np.mean(pick("agree", s)))
        right.errorbar(ds.rate_spiking_teacher.values.ravel(), pick("rate_spiking_student", s),
                       xerr=ds.rate_spiking_se_teacher.values.ravel(), yerr=pick("rate_spiking_se_student", s),
                       fmt="o", ms=3, color=f"C{k}", alpha=0.7,
                       label=f"{label}: median |z| {np.median(np.abs(z)):.1f}, agree {agree:.0%}")
        everything += [pick("rate_model_student", s), pick("rate_spiking_student", s)]
    lo, hi = float(np.min(np.concatenate(everything))), float(np.max(np.concatenate(everything)))
    pad = 0.05 * (hi - lo + 1.0)
    for ax in (left, right):
        ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="0.6", lw=1, zorder=0)
        ax.set_xlim(lo - pad, hi + pad)
        ax.set_ylim(lo - pad, hi + pad)
        ax.set_aspect("equal")
        ax.legend(fontsize=8, loc="upper left")
    left.set_xlabel("rate-model prediction (Hz)")
    left.set_ylabel("spiking rate (Hz), mean ± s.e.")
    left.set_title("linear Poisson network vs rate model")
    right.set_xlabel("teacher spiking rate (Hz)")
    right.set_ylabel("student spiking rate (Hz)")
    right.set_title("teacher vs student in spikes (output neurons × probes)")
    setting = (lambda k: float(ds[k]) if k in ds else float(ds.attrs[k]))  # variables (s); attrs in older files
    fig.suptitle(f"{ds.attrs.get('circuit_name', '')}: tau {1e3 * setting('tau'):g} ms, "
                 f"{ds.attrs['repeats']} x {setting('duration'):g} s, brian2 {ds.attrs['brian2_version']} "
                 f"({ds.attrs['codegen_target']})", fontsize=10)
    return fig


def spikecheck_figure(ds: xr.Dataset, path: str | Path) -> Path:
    """Write :func:`spike_rates` of ``ds`` to ``path`` (the suffix picks the format, e.g. ``.png``, ``.pdf``; 120 dpi).

    Returns
    -------
    pathlib.Path
        The written file (its folder is created if needed).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    spike_rates(ds).savefig(path, dpi=120)
    return path
