"""Shared pieces of the figures: sweep checks, the point layout, verdict styles, colours, integer axes, lower-bound
marks, and the layout fixes every figure gets (titles wrapped to fit, tick labels kept apart)."""
from __future__ import annotations

import json
import textwrap
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
    """The sweep's fraction keys (``attrs["fraction_keys"]``: a JSON string in stores, or a list)."""
    keys = ds.attrs.get("fraction_keys", "[]")
    return list(json.loads(keys) if isinstance(keys, str) else keys)


def varying_keys(ds: xr.Dataset) -> list[str]:
    """The fraction keys whose value differs between the sweep's points (point layout), in key order."""
    return [k for k in fraction_keys(ds) if np.ptp(key_values(ds, k)) > 1e-12] if "point" in ds.dims else \
        fraction_keys(ds)


def lower_bound(cells: xr.Dataset) -> np.ndarray:
    """Whether each point's MP is a lower bound (a local solver decided some of its trials), per point of
    ``cells``: the ``decision_kind`` variable of the store, or (stores without it) derived from the per-trial
    ``decision`` / ``outcome`` (:func:`neurosubset.sweeps.table.point_decision_kind`). False where not computed."""
    from ..sweeps.table import point_decision_kind

    return np.asarray(point_decision_kind(cells).values).astype(str) == "lower bound"


LOWER_BOUND_STYLE = {"marker": "o", "facecolor": "none", "linewidths": 1.4}  # hollow: MP is a lower bound
LOWER_BOUND_LABEL = "hollow: lower bound (local solver; MP may be higher)"
BRACKET_LABEL = "bar: MP bracket [mp_lower, mp_upper]"


def wrap(text: str, width_in: float, fontsize: float = 12.0) -> str:
    """``text`` wrapped (each line separately) to fit ``width_in`` inches at ``fontsize`` points (about 0.6 em
    per character of DejaVu Sans), so that titles are never clipped by the figure's edge."""
    chars = max(12, int(width_in * 72.0 / (0.6 * fontsize)))
    return "\n".join(textwrap.fill(line, chars) if line else line for line in text.split("\n"))


def title(ax_or_fig: Any, text: str, *, fontsize: str | float = "medium", **kw: Any) -> None:
    """Set an axes title or a figure's suptitle, wrapped to the width it has (see :func:`wrap`)."""
    from matplotlib.font_manager import FontProperties

    size = FontProperties(size=fontsize).get_size_in_points()
    if hasattr(ax_or_fig, "suptitle"):
        width = ax_or_fig.get_figwidth()
        ax_or_fig.suptitle(wrap(text, 0.95 * width, size), fontsize=fontsize, **kw)
    else:
        fig = ax_or_fig.get_figure()
        width = fig.get_figwidth() * ax_or_fig.get_position().width
        ax_or_fig.set_title(wrap(text, max(width, 1.0), size), fontsize=fontsize, **kw)


def separate_tick_labels(fig: Any, axes: Any, *, passes: int = 3) -> None:
    """Keep the tick labels of ``axes`` from overlapping: labels that would touch their neighbour move to a second
    row (x axis: further down; y axis: further left) as minor ticks; if two rows are not enough, the font shrinks.

    Measures the labels with the figure's own renderer after a layout pass (the figure is drawn without output),
    and repeats up to ``passes`` times since the constrained layout moves the axes once labels move.
    """
    for _ in range(passes):
        fig.draw_without_rendering()
        renderer = fig._get_renderer()
        changed = False
        for ax in axes:
            for axis in (ax.xaxis, ax.yaxis):
                changed |= _separate(axis, renderer)
        if not changed:
            return


def _labels_of(axis: Any) -> list[tuple[float, str]]:
    """(position, text) of every labelled tick of ``axis``, major and minor, in position order."""
    out = []
    for locs, labels in ((axis.get_majorticklocs(), axis.get_majorticklabels()),
                         (axis.get_minorticklocs(), axis.get_minorticklabels())):
        out += [(float(v), t.get_text()) for v, t in zip(locs, labels) if t.get_text()]
    return sorted(out)


def _overlaps(boxes: list[Any]) -> bool:
    return any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])


def _separate(axis: Any, renderer: Any) -> bool:
    """One pass of :func:`separate_tick_labels` on one axis; whether anything changed."""
    shown = [t for t in axis.get_majorticklabels() + axis.get_minorticklabels() if t.get_visible() and t.get_text()]
    if len(shown) < 2 or not _overlaps([t.get_window_extent(renderer).expanded(1.06, 1.06) for t in shown]):
        return False
    ticks = _labels_of(axis)
    horizontal = axis.axis_name == "x"
    size = shown[0].get_fontsize()
    # greedy rows: a label goes on the first row whose last label it does not touch (extent along the axis,
    # measured in display units at the current size, plus a small gap)
    extent = {text: (t.get_window_extent(renderer).width if horizontal else t.get_window_extent(renderer).height)
              for t in shown for text in [t.get_text()]}
    trans = axis.axes.transData
    pos = [trans.transform((v, 0))[0] if horizontal else trans.transform((0, v))[1] for v, _ in ticks]
    rows: list[list[int]] = [[], []]
    ends = [-np.inf, -np.inf]
    order = np.argsort(pos)
    for i in order:
        half = extent[ticks[i][1]] / 2 + 2.0
        for r in range(2):
            if pos[i] - half >= ends[r]:
                rows[r].append(int(i))
                ends[r] = pos[i] + half
                break
        else:  # neither row has room: shrink the font and start again on the next pass
            for t in shown:
                t.set_fontsize(size * 0.85)
            axis.set_tick_params(which="both", labelsize=size * 0.85)
            return True
    major = [ticks[i] for i in sorted(rows[0])]
    minor = [ticks[i] for i in sorted(rows[1])]
    axis.set_ticks([v for v, _ in major], [t for _, t in major])
    axis.set_ticks([v for v, _ in minor], [t for _, t in minor], minor=True)
    if minor:
        first = max((t.get_window_extent(renderer).height if horizontal else t.get_window_extent(renderer).width)
                    for t in shown) * 72.0 / fig_dpi(axis)
        axis.set_tick_params(which="major", labelsize=size)
        axis.set_tick_params(which="minor", labelsize=size, length=3.5, pad=3.5 + first + 1.0)
    return True


def fig_dpi(axis: Any) -> float:
    """Dots per inch of the figure ``axis`` is drawn in (window extents are in dots, pads in points)."""
    return float(axis.axes.get_figure(root=True).dpi)


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
