"""The text table of a sweep (what ``neurosubset sweep`` prints): MP per computed point with its bracket, lower
bounds and still-improving points marked.

:func:`point_decision_kind` says per point whether MP is exact or a lower bound (the ``decision_kind`` variable of
stores that have it; stores written before it: read from ``decision`` and ``outcome``, as
:func:`neurosubset.match_probability` decides its ``decision_kind`` attr); :func:`mp_table` formats the table.
"""
from __future__ import annotations

import numpy as np
import xarray as xr

from .. import _schema

LOWER_BOUND_MARK = "LB"  # a lower bound: a local solver decided some trials (mp_high is no upper bound on MP)
IMPROVING_MARK = "+"  # the last restart round still gained more than _schema.LAST_ROUND_GAIN_FLAG of MP


def point_decision_kind(ds: xr.Dataset) -> xr.DataArray:
    """``"exact"`` or ``"lower bound"`` per point of a sweep (``""`` where nothing was computed).

    Parameters
    ----------
    ds : xarray.Dataset
        A sweep (:func:`neurosubset.sweep`, :func:`neurosubset.open_sweep`), with its point dims.

    Returns
    -------
    xarray.DataArray
        Strings, with the dims of ``ds.mp``. Stores written before the per-point ``decision_kind`` variable: a
        point is exact where every trial was settled by an exact decider (``decision`` other than
        levenberg_marquardt and, where stored, ``outcome`` other than undecided), else a lower bound; stores
        without ``decision``: by ``solver`` (``"lm"``: lower bound).
    """
    done = ds["mp"].notnull()
    if "decision_kind" in ds.data_vars:
        kind = ds["decision_kind"].astype(str)
    elif "decision" in ds.data_vars:
        local = (ds["decision"] == _schema.LM_DECISION)
        if "outcome" in ds.data_vars:
            local = local | (ds["outcome"] == _schema.UNDECIDED)
        kind = xr.where(local.any("trial"), _schema.DECISION_KINDS[1], _schema.DECISION_KINDS[0])
    elif "solver" in ds.data_vars:
        kind = xr.where(ds["solver"].astype(str) == "lm", _schema.DECISION_KINDS[1], _schema.DECISION_KINDS[0])
    else:
        kind = xr.full_like(ds["mp"], _schema.DECISION_KINDS[1], dtype=object)  # nothing says exact
    return xr.where(done, kind, "").astype(str)


def mp_table(ds: xr.Dataset, limit: int = 40) -> str:
    """MP per computed point of a sweep with its 95% bracket, one column per ``m`` (up to ``limit`` rows).

    A cell reads ``MP [low, high]``: the bracket ``[mp_lower, mp_upper]`` where the sweep stores it (proven
    matches and proven no-matches; it equals the Wilson interval where every trial is decided), else the Wilson
    interval ``[mp_low, mp_high]``. ``LB`` marks a lower bound (a local solver decided some trials: MP itself can be
    higher, and ``mp_high`` is not an upper bound on MP); ``+`` marks a point whose last restart round still gained
    more than ``neurosubset._schema.LAST_ROUND_GAIN_FLAG`` (0.05) of MP. A legend line follows where either occurs.

    Parameters
    ----------
    ds : xarray.Dataset
        A sweep.
    limit : int
        Most rows printed; a longer table is replaced by a pointer to ``neurosubset plot`` / ``export``.

    Returns
    -------
    str
        The table ("" where no point was computed).
    """
    low, high = ("mp_lower", "mp_upper") if "mp_lower" in ds.data_vars else ("mp_low", "mp_high")
    parts = ds[["mp", low, high]].copy()
    parts["kind"] = point_decision_kind(ds)
    gain = ds["last_round_gain"] if "last_round_gain" in ds.data_vars else xr.zeros_like(ds["mp"])
    parts["improving"] = gain > _schema.LAST_ROUND_GAIN_FLAG
    frame = parts.to_dataframe().dropna(subset=["mp"])
    if frame.empty:
        return ""

    def cell(r) -> str:
        mark = (f" {LOWER_BOUND_MARK}" if r["kind"] == _schema.DECISION_KINDS[1] else "") + \
               (f" {IMPROVING_MARK}" if bool(r["improving"]) else "")
        return f"{r['mp']:.2f} [{r[low]:.2f}, {r[high]:.2f}]{mark}"

    cells = frame.apply(cell, axis=1)
    table = cells.unstack("m") if "m" in cells.index.names and cells.index.nlevels > 1 else cells
    if len(table) > limit:
        return f"({len(frame)} MP values: see them with `neurosubset plot` or `neurosubset export`)"
    what = "bracket" if low == "mp_lower" else "95% CI"
    lines = [f"MP [{what}] per point (columns: m)" if "m" in cells.index.names else f"MP [{what}] per point",
             table.to_string()]
    lower = int((frame["kind"] == _schema.DECISION_KINDS[1]).sum())
    improving = int(np.asarray(frame["improving"], bool).sum())
    if lower:
        cover = ("the bracket [mp_lower, mp_upper] shown covers it; mp_high does not bound it" if low == "mp_lower"
                 else "mp_high is not an upper bound on MP")
        lines.append(f"{LOWER_BOUND_MARK}: lower bound at {lower} of {len(frame)} points (a local solver decided some "
                     f"trials; MP can be higher: {cover})")
    if improving:
        lines.append(f"{IMPROVING_MARK}: still improving at {improving} of {len(frame)} points (the last restart "
                     f"round gained > {_schema.LAST_ROUND_GAIN_FLAG} of MP; more rounds may match more trials)")
    return "\n".join(lines)
