"""The sweep's template, all of it known before any point runs: coordinates, point status, allocation masks and
attrs (:func:`skeleton`), and the per-point variables (:func:`point_variables`), built from their declared layout
(:func:`neurosubset.schema.sweep_point_variables`: dtype, dims, when a point writes each). Every variable's attrs
come from :mod:`neurosubset._schema`.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import xarray as xr

from .._schema import LOWER_BOUND_COMMENT, density_meta, fill_value, fraction_meta, mask_meta, meta, var_name, versions
from ..allocation import Allocation
from ..circuit import Circuit
from ..connectivity import weight_name_coords
from ..options import FitOptions
from ..schema import sweep_point_variables
from .config import SweepConfig, paired_seed
from .grid import FractionGrid
from .point import point_conditions

_SEEDING = ("allocation seed and trial seed per (budget, fractions, strategy): sha256 of the sweep seed and those "
            "coordinates; the m probes of a trial are the first m of one sequence")
_PAIRED = ("paired: allocation seed per (budget, fractions, strategy) hashed from the sweep seed and those coordinates;"
           " one trial seed for every point (sha256 of the sweep seed), so trial i's teacher, student draw and probes "
           "depend only on (seed, m, i); the m probes of a trial are the first m of one sequence")
_FLAG_DIMS = {"dale": "dales", "stable_required": "stables"}
# the attrs of FitOptions.to_attrs in the order sweep stores have always written them (their .zattrs stay
# byte-identical); any other (lm_widen, where not the default) follows
_FIT_ATTRS = ("tolerance", "solver_requested", "restarts_per_round", "max_rounds", "lm_steps", "certificate", "dale",
              "stable")


def levels(cfg: SweepConfig) -> list[list[float]]:
    """The coordinate of each fraction dim (the sorted levels of its key; dense layout only)."""
    if not cfg.keys or cfg.layout != "dense":
        return []
    grid = FractionGrid(cfg.keys, cfg.points)
    return [grid.levels(k) for k in cfg.keys]


def point_coords(cfg: SweepConfig, point_budgets: list[int] | None = None) -> dict[str, Any]:
    """The plain coordinates along ``point`` (store format 2): each key's share (density grids: density), under
    its CF name (:func:`neurosubset._schema.var_name`; the key in attr ``fraction_key``), and a density grid's
    per-point ``budget``."""
    if cfg.layout == "dense" or not cfg.keys:
        return {}
    out: dict[str, Any] = {}
    for i, key in enumerate(cfg.keys):
        attrs = density_meta(key) if cfg.density else fraction_meta(key)
        out[var_name(key)] = ("point", np.array([p[i] for p in cfg.points], np.float64), {**attrs, "fraction_key": key})
    if cfg.density and point_budgets is not None:
        out["budget"] = ("point", np.array(point_budgets, np.int64), meta("budget"))
    return out


def skeleton(cfg: SweepConfig, circuit: Circuit, status: np.ndarray, masks: dict[str, np.ndarray],
             extra_attrs: dict[str, str], point_budgets: list[int] | None = None) -> xr.Dataset:
    """The sweep Dataset without its per-point variables: ``status``, ``mask_<weight>``, coords and attrs.

    ``extra_attrs`` are version attrs beyond :func:`neurosubset._schema.versions` (the store's ``zarr_version``);
    ``point_budgets`` the budget of each point of a density grid. Coordinates are plain (no pandas index on
    ``point``: :func:`neurosubset.sweeps.store.index_points` adds it when a result is returned or opened).
    """
    data: dict[str, Any] = {"status": (cfg.dims, status, meta("status"))}
    alloc_dims = ("budget", *cfg.keys, "strategy") if cfg.layout == "dense" else cfg.alloc_dims
    names: dict[str, Any] = {}  # neuron names along the masks' dims, where the circuit names its neurons
    for name in circuit.weight_names:
        stem = var_name(name)
        data[f"mask_{stem}"] = ((*alloc_dims, f"{stem}_post", f"{stem}_pre"), masks[name], mask_meta(name))
        names.update(weight_name_coords(circuit, name, stem))
    coords: dict[str, Any] = {
        **names,
        **({} if cfg.density else {"budget": ("budget", np.array(cfg.budgets, np.int64), meta("budget"))}),
        "strategy": ("strategy", np.array(cfg.strategies), meta("strategy")),
        "m": ("m", np.array(cfg.ms, np.int64), meta("m")),
        "trial": ("trial", np.arange(cfg.trials), meta("trial")),
        "round": ("round", np.arange(cfg.max_rounds), meta("round")),
    }
    if cfg.layout == "dense":
        for key, values in zip(cfg.keys, levels(cfg)):
            coords[key] = (key, np.array(values, np.float64), fraction_meta(key))
    coords.update(point_coords(cfg, point_budgets))
    for dim, field in _FLAG_DIMS.items():
        if getattr(cfg, field) is not None:
            coords[dim] = (dim, np.array(getattr(cfg, field), bool), meta(dim))
    # the fit options as every writer records them (FitOptions.to_attrs: solver_requested, tolerance, the LM's
    # fields, certificate); dale and stable as a sweep records them: 1 only where they can act, or swept
    fit = cfg.options.to_attrs()
    fit.update(dale="swept (the dale dim)" if cfg.dales is not None else int(cfg.dale and cfg.dale_acts),
               stable="swept (the stable_required dim)" if cfg.stables is not None
               else int(cfg.stable and cfg.stable_acts))
    # K (issue 28) as the flags: recorded only where dale or stable can act at some point (swept or not)
    dale_on = any(cfg.dales) if cfg.dales is not None else cfg.dale
    stable_on = any(cfg.stables) if cfg.stables is not None else cfg.stable
    if not (dale_on and cfg.dale_acts or stable_on and cfg.stable_acts):
        fit.pop("plausibility_bound", None)
    attrs = {
        "title": f"neurosubset sweep of {circuit.name}",
        "circuit": cfg.circuit_toml,
        "circuit_name": circuit.name,
        "fraction_keys": json.dumps(list(cfg.keys)),
        "fraction_points": json.dumps([list(p) for p in cfg.points]),
        "within": json.dumps(None if cfg.within is None else list(cfg.within)),
        "trials": cfg.trials,
        "seed": cfg.seed,
        **{k: fit.pop(k) for k in _FIT_ATTRS if k in fit}, **fit,  # in the order stores have always had
        "seeding": _PAIRED if cfg.paired else _SEEDING,
        **({"trial_seed": paired_seed(cfg.seed)} if cfg.paired else {}),
        **({} if cfg.layout == "dense" else {"layout": "point", "paired": int(cfg.paired),
                                              "fraction_grid": "density" if cfg.density else "fractions"}),
        "weights_layout": cfg.weights_layout,  # how the points held their weights (as match_probability records)
        "sweep_config": cfg.json,
        "config_hash": cfg.hash,
        **versions(),
        **extra_attrs,
    }
    return xr.Dataset(data, coords=coords, attrs=attrs)


def point_options(cfg: SweepConfig) -> list[tuple[dict[str, int], FitOptions]]:
    """The fit options of each combination of swept flags: ``(position along the flag dims, options)``; one
    ``({}, cfg.options)`` where no flag is swept."""
    flags: list[dict[str, int]] = [{}]
    for dim, field in _FLAG_DIMS.items():
        values = getattr(cfg, field)
        if values is not None:
            flags = [{**f, dim: j} for f in flags for j in range(len(values))]
    out = []
    for flag in flags:
        evolve = {}
        if "dale" in flag:
            evolve["dale"] = cfg.dales[flag["dale"]]
        if "stable_required" in flag:
            evolve["stable"] = cfg.stables[flag["stable_required"]]
        out.append((flag, cfg.options._evolve(**evolve) if evolve else cfg.options))
    return out


def point_variables(cfg: SweepConfig, circuit: Circuit, allocations: Sequence[Allocation],
                    shape: tuple[int, ...]) -> dict[str, xr.Variable]:
    """The per-point variables of the template, nothing computed, from their declared layout.

    A variable is there where any point of the grid writes it (any of ``allocations``, the feasible ones, under
    any combination of swept flags; see :data:`neurosubset.schema.POINT_CONDITIONS`), with its declared dtype and
    the point dims ``cfg.dims`` (sizes ``shape``) in front of its own (``trial``: the sweep's trials, ``round``: its
    round cap); filled with NaN, False, 0 or "" (:func:`neurosubset._schema.fill_value`).
    """
    options = [opts for _, opts in point_options(cfg)]
    conditions = [point_conditions(circuit, alloc, opts) for alloc in (allocations or (None,)) for opts in options]
    sizes = {"trial": cfg.trials, "round": cfg.max_rounds}
    out: dict[str, xr.Variable] = {}
    for var in sweep_point_variables(*conditions):
        own = var.dims[0]
        dtype = np.dtype(var.dtype)
        data = np.full((*shape, *(sizes[d] for d in own)), fill_value(dtype), dtype)
        attrs = var.sweep_attrs
        if var.name == "residual":  # the match tolerance, as on an mp result's residual (plots draw it)
            attrs["tolerance"] = cfg.tol
        if var.name == "mp_high":  # as an mp result's where its point is a lower bound (decision_kind per point)
            attrs = {**attrs, "comment": f"{LOWER_BOUND_COMMENT} (at the points whose decision_kind "
                                                f"variable says 'lower bound')"}
        out[var.name] = xr.Variable((*cfg.dims, *own), data, attrs)
    return out
