"""The sweep-level part of the template: coordinates, point status, allocation masks and attrs.

What is known before any point runs. The per-point variables join it from the first computed point's Dataset
(:func:`neurosubset.sweeps.point.point_variables`). Every variable's attrs come from :mod:`neurosubset._schema`.
"""
from __future__ import annotations

import json
from typing import Any

import numpy as np
import xarray as xr

from .._schema import fraction_meta, mask_meta, meta, var_name, versions
from ..circuit import Circuit
from ..solvers import lm_fields
from .config import SweepConfig
from .grid import FractionGrid

_SEEDING = ("allocation seed and trial seed per (budget, fractions, strategy): sha256 of the sweep seed and those "
            "coordinates; the m probes of a trial are the first m of one sequence")


def levels(cfg: SweepConfig) -> list[list[float]]:
    """The coordinate of each fraction dim (the sorted levels of its key)."""
    if not cfg.keys:
        return []
    grid = FractionGrid(cfg.keys, cfg.points)
    return [grid.levels(k) for k in cfg.keys]


def skeleton(cfg: SweepConfig, circuit: Circuit, status: np.ndarray, masks: dict[str, np.ndarray],
             extra_attrs: dict[str, str]) -> xr.Dataset:
    """The sweep Dataset without its per-point variables: ``status``, ``mask_<weight>``, coords and attrs.

    ``extra_attrs`` are version attrs beyond :func:`neurosubset._schema.versions` (the store's ``zarr_version``).
    """
    data: dict[str, Any] = {"status": (cfg.dims, status, meta("status"))}
    alloc_dims = ("budget", *cfg.keys, "strategy")
    for name in circuit.weight_names:
        stem = var_name(name)
        data[f"mask_{stem}"] = ((*alloc_dims, f"{stem}_post", f"{stem}_pre"), masks[name], mask_meta(name))
    coords: dict[str, Any] = {
        "budget": ("budget", np.array(cfg.budgets, np.int64), meta("budget")),
        "strategy": ("strategy", np.array(cfg.strategies), meta("strategy")),
        "m": ("m", np.array(cfg.ms, np.int64), meta("m")),
        "trial": ("trial", np.arange(cfg.trials), meta("trial")),
        "round": ("round", np.arange(cfg.max_rounds), meta("round")),
    }
    for key, values in zip(cfg.keys, levels(cfg)):
        coords[key] = (key, np.array(values, np.float64), fraction_meta(key))
    lm = lm_fields(cfg.solver)
    attrs = {
        "title": f"neurosubset sweep of {circuit.name}",
        "circuit": cfg.circuit_toml,
        "circuit_name": circuit.name,
        "fraction_keys": json.dumps(list(cfg.keys)),
        "fraction_points": json.dumps([list(p) for p in cfg.points]),
        "within": json.dumps(None if cfg.within is None else list(cfg.within)),
        "trials": cfg.trials,
        "seed": cfg.seed,
        "tolerance": cfg.tol,
        "solver_requested": cfg.solver.name,
        "restarts_per_round": lm["restarts"],
        "max_rounds": cfg.max_rounds,
        "lm_steps": lm["iterations"],
        "certificate": int(cfg.certificate),
        "dale": int(cfg.dale and cfg.dale_acts),
        "stable": int(cfg.stable and cfg.stable_acts),
        "seeding": _SEEDING,
        "sweep_config": cfg.json,
        "config_hash": cfg.hash,
        **versions(),
        **extra_attrs,
    }
    return xr.Dataset(data, coords=coords, attrs=attrs)
