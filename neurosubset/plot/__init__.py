"""Figures from Datasets only: sweep results (:func:`neurosubset.sweep`) and single ``match_probability`` results.

Every function takes an :class:`xarray.Dataset` (or, for :func:`plot_allocation`, a circuit and an allocation) and
returns a :class:`matplotlib.figure.Figure` built without pyplot (no global figure state, no display needed);
:func:`save_figures` writes PNGs (or PDF / SVG). Sweep figures take the ``point`` layout and the dense layout of stores
written before store format 2, and mark certificate verdicts ("zero", "one", "positive", "unproven").

- :func:`mp_curves`: MP against one fraction key (or ``m``) with 95% Wilson bands and verdict markers.
- :func:`mp_heatmap`: MP over two swept axes (two fraction keys, or a fraction x ``m``), verdict hatching.
- :func:`mp_ternary`: MP on the simplex of three fraction keys (mpltern).
- :func:`allocation_masks`: the plastic synapses of allocations as one connectivity matrix, regions as blocks;
  :func:`plot_allocation` the same from a circuit and an :class:`~neurosubset.Allocation`, without results.
- :func:`plot_paired_difference`: paired MP differences with exact McNemar intervals.
- :func:`mp_summary`: one ``match_probability`` Dataset: residual histogram (log axis, tolerance line) + masks.
- :func:`spike_rates`: a spiking comparison (:func:`neurosubset.spiking.spiking_compare`): rates against the rate
  model, teacher against students; :func:`spikecheck_figure` writes it.

Modules: :mod:`._common` (layout, verdict styles, integer axes), :mod:`.sweep`, :mod:`.masks`, :mod:`.spiking`.
"""
from __future__ import annotations

from pathlib import Path

import xarray as xr
from matplotlib.figure import Figure

from ._common import is_sweep
from .masks import _draw_masks, _mask_matrix, _masks_of, allocation_masks, mp_summary, plot_allocation
from .spiking import spike_rates, spikecheck_figure
from .sweep import mp_curves, mp_heatmap, mp_ternary, plot_paired_difference, ternary_keys

__all__ = ["is_sweep", "mp_curves", "mp_heatmap", "mp_ternary", "allocation_masks", "plot_allocation",
           "plot_paired_difference", "mp_summary", "figures", "figure_paths", "save_figures", "spike_rates",
           "spikecheck_figure", "_draw_masks", "_mask_matrix", "_masks_of"]


def figures(ds: xr.Dataset) -> dict[str, Figure]:
    """Every standard figure for ``ds``: ``curves``, ``heatmap``, ``masks`` (and ``ternary`` with three fraction
    keys) for a sweep; ``mp`` for one MP estimate."""
    if is_sweep(ds):
        out = {"curves": mp_curves(ds), "heatmap": mp_heatmap(ds), "masks": allocation_masks(ds)}
        if ternary_keys(ds) is not None:  # three keys, or more with all but three constant
            out["ternary"] = mp_ternary(ds)
        return out
    return {"mp": mp_summary(ds)}


def figure_paths(names: list[str], out: str | Path) -> list[Path]:
    """The files :func:`save_figures` writes for the figures ``names``: ``out`` itself for one figure when it ends in
    ``.png``, ``.pdf`` or ``.svg``; otherwise ``<stem>_<name><suffix>`` next to it (``.png`` unless ``out`` names
    one of those formats: ``x.pdf`` -> ``x_curves.pdf``, ``x`` -> ``x_curves.png``)."""
    out = Path(out)
    suffix = out.suffix if out.suffix in _FIGURE_SUFFIXES else ""
    if suffix and len(names) == 1:
        return [out]
    stem = out.with_suffix("") if suffix else out
    return [stem.with_name(f"{stem.name}_{name}{suffix or '.png'}") for name in names]


_FIGURE_SUFFIXES = (".png", ".pdf", ".svg")


def save_figures(ds: xr.Dataset, out: str | Path, *, dpi: int = 120) -> list[Path]:
    """Write :func:`figures` as image files (PNG unless ``out`` ends in ``.pdf`` or ``.svg``).

    Parameters
    ----------
    ds : xarray.Dataset
    out : path
        ``x.png`` (or ``x.pdf``, ``x.svg``) for a single figure; with several figures, or a path without one of
        those suffixes, the files are ``<stem>_<name>.<suffix>`` next to it (see :func:`figure_paths`).
    dpi : int

    Returns
    -------
    list of pathlib.Path
        The files written.
    """
    out = Path(out)
    figs = figures(ds)
    out.parent.mkdir(parents=True, exist_ok=True)
    paths = figure_paths(list(figs), out)
    for path, fig in zip(paths, figs.values()):
        fig.savefig(path, dpi=dpi)
    return paths
