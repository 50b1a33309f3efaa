"""One sweep point: its task, its computation, and how its Dataset becomes store values and template variables.

A :class:`PointTask` is plain, picklable data (the :class:`~neurosubset.Allocation` itself, the circuit as TOML
text, the solver object) sent to a worker, which runs :func:`run_point` (:func:`neurosubset.match_probability`
on one thread). The Dataset it returns is the one description of a point's variables: :func:`point_variables`
expands it into the sweep template (point dims in front, NaN / False / 0 fills) and :func:`point_values` reads the
values to store. Masks are not point variables (they belong to the allocation, known before any point runs).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import xarray as xr

from .._schema import fill_value, meta
from ..allocation import Allocation
from ..benchmark import match_probability
from ..circuit import Circuit
from ..options import FitOptions

# attrs of a match_probability Dataset that a sweep stores as per-point variables: attr -> (variable, string width)
_ATTR_VARIABLES = {"solver": ("solver", 8), "last_round_gain": ("last_round_gain", 0),
                   "certificate_verdict": ("verdict", 64)}
_ROUND = "round"  # the dim padded to the sweep's round cap (later rounds keep the final value)


@dataclass(frozen=True)
class PointTask:
    """What a worker needs to compute one point.

    Attributes
    ----------
    index : tuple of int
        The point's position along the sweep's point dims ``(budget, fractions..., strategy, m)``.
    circuit_toml : str
        The circuit spec (TOML text; each worker builds the circuit once).
    alloc : Allocation
    m, trials, seed : int
        Probes, draws and the trial seed passed to :func:`neurosubset.match_probability`.
    options : FitOptions
        The point's fit options (validated once by :func:`neurosubset.sweep`, with this point's ``dale`` and
        ``stable`` and one torch thread), passed to :func:`neurosubset.match_probability` as they are.
    """

    index: tuple[int, ...]
    circuit_toml: str
    alloc: Allocation
    m: int
    trials: int
    seed: int
    options: FitOptions


@lru_cache(maxsize=8)
def _circuit(toml_text: str) -> Circuit:
    return Circuit.from_toml_text(toml_text)


def run_point(task: PointTask) -> xr.Dataset:
    """Compute one sweep point (in a worker process or in the caller): the :func:`match_probability` Dataset."""
    return match_probability(_circuit(task.circuit_toml), task.alloc, task.m, task.trials, task.seed,
                             options=task.options)


def _is_point_variable(name: str) -> bool:
    return not name.startswith("mask_")


def point_variables(ds: xr.Dataset, dims: tuple[str, ...], shape: tuple[int, ...],
                    sizes: dict[str, int]) -> dict[str, xr.Variable]:
    """The template variables of a point Dataset ``ds``, expanded over the point dims, nothing computed.

    Parameters
    ----------
    ds : xarray.Dataset
        A :func:`run_point` result.
    dims, shape
        The sweep's point dims and their sizes.
    sizes : dict
        Sizes of the point's own dims that the sweep fixes (``trial``: its trials, ``round``: its round cap).

    Returns
    -------
    dict
        Name -> variable of dims ``(*dims, *the point variable's dims)``: per-trial and per-round values keep their
        dtype (fill NaN, False or 0), scalars become float64 (NaN: not computed) and strings fixed-width (``""``).
    """
    out: dict[str, xr.Variable] = {}
    for name, var in ds.data_vars.items():
        name = str(name)
        if not _is_point_variable(name):
            continue
        own = tuple(str(d) for d in var.dims)
        dtype = var.dtype if own else np.dtype(np.float64)
        full = (*shape, *(sizes.get(d, var.sizes[d]) for d in own))
        out[name] = xr.Variable((*dims, *own), np.full(full, fill_value(dtype), dtype), dict(var.attrs))
    for attr, (name, width) in _ATTR_VARIABLES.items():
        if attr in ds.attrs:
            text = isinstance(ds.attrs[attr], str)
            data = np.full(shape, "", dtype=f"<U{width}") if text else np.full(shape, np.nan)
            out[name] = xr.Variable(dims, data, meta(name))
    return out



def point_values(ds: xr.Dataset, rounds: int) -> dict[str, Any]:
    """The values of a point Dataset to store at its index: name -> array (per trial / round) or scalar.

    Per-round values are padded to ``rounds`` with their last value (the final MP of a point that stopped early,
    what :func:`neurosubset.match_probability` itself reports for later rounds).
    """
    values: dict[str, Any] = {}
    for name, var in ds.data_vars.items():
        name = str(name)
        if not _is_point_variable(name):
            continue
        value = var.values
        if _ROUND in var.dims:
            pad = [(0, rounds - var.sizes[_ROUND]) if d == _ROUND else (0, 0) for d in var.dims]
            value = np.pad(value, pad, mode="edge")
        values[name] = value if var.ndim else float(value)
    for attr, (name, _) in _ATTR_VARIABLES.items():
        if attr in ds.attrs:
            value = ds.attrs[attr]
            values[name] = value if isinstance(value, str) else float(value)
    return values
