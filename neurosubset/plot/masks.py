"""Allocation pictures: which synapses are plastic, by region block, from a result or from an Allocation."""
from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
import xarray as xr
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure

from .._checks import ParameterError, StabilityWarning
from ..allocation import Allocation
from ..circuit import Circuit
from ..results import stored_masks
from ._common import fraction_keys, is_sweep, key_values, point_index, require_sweep, separate_tick_labels
from ._common import title as set_title

_MASK_CMAP = ListedColormap(["white", "0.82", "crimson"])  # absent, frozen synapse, plastic synapse
_RESIDUAL_FLOOR = 1e-18  # exact zeros are drawn here on the log axis

__all__ = ["allocation_masks", "mp_summary", "plot_allocation", "trial_classes"]


def _stored_circuit(ds: xr.Dataset) -> Circuit:
    """The circuit a result was computed on (``attrs["circuit"]``), rebuilt to draw its blocks: a spec warning
    (e.g. :class:`~neurosubset._checks.StabilityWarning`) was given when the result was made, not again here."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", StabilityWarning)
        return Circuit.from_toml_text(ds.attrs["circuit"])


def _mask_matrix(circuit: Circuit, masks: Mapping[str, np.ndarray]) -> tuple[np.ndarray, list[tuple[str, int, int]],
                                                                             list[tuple[str, int, int]]]:
    """Block connectivity matrix: 0 absent, 1 frozen synapse, 2 plastic; rows = receiving regions, cols = senders."""
    post, pre = ("hidden", "output"), ("input", "hidden")
    rows = [(name, s.start, s.stop) for name, s in circuit.slices(post).items()]
    cols = [(name, s.start, s.stop) for name, s in circuit.slices(pre).items()]
    present = circuit.blocks({k: v.astype(float) for k, v in circuit.structure.items()}, post, pre)
    plastic = circuit.blocks({k: np.asarray(masks[k], bool).astype(float) for k in circuit.weight_names}, post, pre)
    return np.where(plastic > 0, 2.0, np.where(present > 0, 1.0, 0.0)), rows, cols


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
    set_title(ax, f"{title}\nplastic (red) {counts or 'none'}", fontsize="small")


def _masks_of(ds: xr.Dataset, circuit: Circuit) -> dict[str, np.ndarray]:
    try:
        with warnings.catch_warnings():  # stored_masks rebuilds the circuit too: no second spec warning
            warnings.simplefilter("ignore", StabilityWarning)
            out = stored_masks(ds)  # the synapse dim of mp results, or one mask_<weight> per weight
    except KeyError:
        out = {}
    missing = set(circuit.weight_names) - set(out)
    if missing:
        raise ParameterError(f"The Dataset has no mask variables for weights {sorted(missing)}.")
    return out


def plot_allocation(circuit: Circuit, alloc: Allocation, *, title: str | None = None) -> Figure:
    """Which synapses of ``circuit`` an allocation makes plastic, without any result Dataset.

    Parameters
    ----------
    circuit : Circuit
    alloc : Allocation
        E.g. ``neurosubset.allocate(circuit, 20, strategy="spread-rows")``.
    title : str, optional
        Panel title (default: the allocation's strategy and size).

    Returns
    -------
    matplotlib.figure.Figure
        Rows = receiving regions (neurons), columns = sending regions, blocks separated by lines; white = no
        synapse, grey = frozen synapse, red = plastic synapse.
    """
    if not isinstance(circuit, Circuit) or not isinstance(alloc, Allocation):
        raise ParameterError(f"plot_allocation takes a Circuit and an Allocation. Got {type(circuit).__name__} and "
                             f"{type(alloc).__name__}.")
    if set(alloc.masks) != set(circuit.weight_names):
        raise ParameterError(f"The allocation does not belong to circuit {circuit.name!r}: its weights are "
                             f"{sorted(alloc.masks)}, the circuit's {list(circuit.weight_names)}.")
    fig = Figure(figsize=(5.0, 4.2), layout="constrained")
    ax = fig.subplots()
    _draw_masks(ax, circuit, alloc.masks, title or f"{alloc.strategy}, M = {alloc.size}")
    set_title(fig, f"{circuit.name}: plastic synapses")
    separate_tick_labels(fig, [ax])
    return fig


def allocation_masks(ds: xr.Dataset, *, budget: int | None = None,
                     fractions: Mapping[str, float] | None = None) -> Figure:
    """A picture of allocations' masks by region: one panel per strategy of a sweep (or the one allocation).

    Parameters
    ----------
    ds : xarray.Dataset
        A sweep result (point or old dense layout) or a ``match_probability`` Dataset (both carry
        ``mask_<weight>`` variables and the circuit spec in ``attrs["circuit"]``).
    budget : int, optional
        Sweep only: which budget (default: the largest).
    fractions : dict, optional
        Sweep only: which fraction point, by key (default: the middle point of the grid).

    Returns
    -------
    matplotlib.figure.Figure
        Rows = receiving regions, columns = sending regions, blocks separated by lines; white = no synapse,
        grey = frozen synapse, red = plastic synapse.
    """
    circuit = _stored_circuit(ds)
    if not is_sweep(ds):
        fig = Figure(figsize=(5.0, 4.2), layout="constrained")
        ax = fig.subplots()
        _draw_masks(ax, circuit, _masks_of(ds, circuit), ds.attrs.get("allocation_strategy", ""))
        separate_tick_labels(fig, [ax])
        return fig
    ds = require_sweep(ds, "allocation_masks")
    keys = fraction_keys(ds)
    sel: dict[str, Any] = {}
    if "budget" in ds.dims:
        sel["budget"] = int(ds["budget"].values[-1]) if budget is None else int(budget)
    where = ""
    cells = ds.drop_dims(["m", "trial", "round", "dale", "stable_required"], errors="ignore")
    if keys:
        ip = ds.sizes["point"] // 2 if fractions is None else point_index(ds, dict(fractions))
        cells = cells.isel(point=ip)
        where = ", ".join(f"{k} = {key_values(ds, k)[ip]:g}" for k in keys)
    strategies = [str(s) for s in ds["strategy"].values]
    fig = Figure(figsize=(4.3 * len(strategies), 4.2), layout="constrained")
    axes = fig.subplots(1, len(strategies), squeeze=False)[0]
    for ax, strat in zip(axes, strategies):
        _draw_masks(ax, circuit, _masks_of(cells.sel({**sel, "strategy": strat}), circuit), strat)
    at = f" at M = {sel['budget']}" if "budget" in sel else ""
    set_title(fig, f"{circuit.name}: allocations{at}" + (f" ({where})" if where else ""))
    separate_tick_labels(fig, axes)
    return fig


def _meanings(var: xr.DataArray) -> np.ndarray:
    """The CF flag meaning of every value of an int8 flag variable (``flag_values`` / ``flag_meanings`` attrs)."""
    names = dict(zip(np.asarray(var.attrs["flag_values"]).tolist(), str(var.attrs["flag_meanings"]).split()))
    return np.array([names.get(int(v), "") for v in np.asarray(var.values).ravel()]).reshape(var.shape)


# the residual histogram's trial classes, in stacking order: (name, colour, hatch)
TRIAL_CLASSES = (("matched", "C0", ""), ("unstable (not counted)", "crimson", "xx"),
                 ("undecided (local solver: lower bound)", "0.6", "//"), ("proven no match", "C2", ""),
                 ("not matched", "C1", ""))


def trial_classes(ds: xr.Dataset) -> np.ndarray:
    """The class of each trial of a ``match_probability`` result, as the residual histogram colours it: matched;
    unstable (``fit_status`` unstable: whatever its residual, the student does not count, as the stable option
    asks); undecided (``outcome`` undecided: a local solver neither matched nor proved the trial unmatched, so
    MP is a lower bound there); proven no match; not matched (results without ``outcome``)."""
    n = ds.sizes["trial"]
    out = np.full(n, TRIAL_CLASSES[4][0], dtype=object)
    status = _meanings(ds["fit_status"]) if "fit_status" in ds and "flag_values" in ds["fit_status"].attrs else \
        np.full(n, "")
    outcome = _meanings(ds["outcome"]) if "outcome" in ds and "flag_values" in ds["outcome"].attrs else None
    if outcome is not None:
        out[outcome == "proven_no_match"] = TRIAL_CLASSES[3][0]
        out[outcome == "undecided"] = TRIAL_CLASSES[2][0]
    elif ds.attrs.get("decision_kind") == "lower bound":
        out[:] = TRIAL_CLASSES[2][0]
    out[status == "unstable"] = TRIAL_CLASSES[1][0]
    matched = np.asarray(ds["matched"].values, bool) if "matched" in ds else status == "matched"
    out[matched] = TRIAL_CLASSES[0][0]
    return out


def mp_summary(ds: xr.Dataset) -> Figure:
    """One ``match_probability`` Dataset: histogram of relative residuals (log axis, tolerance line) and masks.

    Parameters
    ----------
    ds : xarray.Dataset
        The result of :func:`neurosubset.match_probability` (``residual (trial)``, ``mp``, masks, attrs).

    Returns
    -------
    matplotlib.figure.Figure
        Left: trials per residual bin with the match tolerance as a dashed line, stacked by trial class
        (:func:`trial_classes`: matched, unstable, undecided, proven no match; each with its count in the legend,
        so that unstable students under the tolerance are not read as matches); the title gives MP with its 95%
        interval (and the bracket ``[mp_lower, mp_upper]`` where stored; ">=" for a lower bound). Right: the
        allocation's masks.
    """
    if "residual" not in ds or ds["residual"].dims != ("trial",):
        raise ParameterError(f"mp_summary needs a match_probability Dataset with 'residual (trial)'. Got variables "
                             f"{sorted(map(str, ds.data_vars))}.")
    circuit = _stored_circuit(ds)
    tol = float(ds["residual"].attrs.get("tolerance", ds.attrs.get("tolerance", np.nan)))
    res = np.clip(np.nan_to_num(np.asarray(ds["residual"].values, float), nan=np.inf, posinf=1e300),
                  _RESIDUAL_FLOOR, 1e300)
    fig = Figure(figsize=(10.5, 4.6), layout="constrained")
    ax_h, ax_m = fig.subplots(1, 2, width_ratios=[1.1, 1.0])
    lo = np.floor(np.log10(min(res.min(), tol))) - 0.5
    hi = np.ceil(np.log10(max(res.max(), tol))) + 0.5
    classes = trial_classes(ds)
    present = [(name, colour, hatch) for name, colour, hatch in TRIAL_CLASSES if (classes == name).any()]
    ax_h.hist([res[classes == name] for name, _, _ in present], bins=np.logspace(lo, hi, 40), stacked=True,
              color=[c for _, c, _ in present], hatch=[h or None for _, _, h in present], edgecolor="white",
              label=[f"{name}: {int((classes == name).sum())}" for name, _, _ in present])
    ax_h.set_xscale("log")
    ax_h.axvline(tol, color="k", linestyle="--", label=f"match tolerance {tol:g}")
    ax_h.set_xlabel("relative residual ||y_s - y_t|| / ||y_t|| (1)")
    ax_h.set_ylabel("trials (count)")
    ax_h.legend(fontsize="x-small", title="trials", title_fontsize="x-small")
    low, high = float(ds["mp_low"]), float(ds["mp_high"])
    bound = ds.attrs.get("decision_kind") == "lower bound"  # a local solver: its rate, not MP, is bounded above
    bracket = (f", bracket [{float(ds['mp_lower']):.3f}, {float(ds['mp_upper']):.3f}]"
               if "mp_lower" in ds and "mp_upper" in ds else "")
    set_title(ax_h, f"MP {'>=' if bound else '='} {float(ds['mp']):.3f}, 95% CI [{low:.3f}, {high:.3f}]{bracket}"
              f"{' (lower bound: the CI upper end does not bound MP)' if bound else ''}\n"
              f"m = {int(ds['m'])}, {ds.sizes['trial']} trials, solver {ds.attrs.get('solver', '?')}")
    _draw_masks(ax_m, circuit, _masks_of(ds, circuit), f"allocation: {ds.attrs.get('allocation_strategy', '')}")
    set_title(fig, f"{circuit.name}: match probability")
    separate_tick_labels(fig, [ax_m])
    return fig
