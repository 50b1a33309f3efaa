"""One sweep point: its task, its computation, which variables it writes, and its store values.

A :class:`PointTask` is plain, picklable data (the :class:`~neurosubset.Allocation` itself, the circuit as TOML
text, the solver object) sent to a worker, which runs :func:`run_point` (:func:`neurosubset.match_probability`
on one thread). Which variables a point writes is declared in :mod:`neurosubset.schema` (each variable's dtype and
the :data:`~neurosubset.schema.POINT_CONDITIONS` it needs); :func:`point_conditions` evaluates those conditions for
one point, so the sweep template is built before any point runs (:func:`neurosubset.sweeps.template.
point_variables`), and :func:`point_values` reads the values to store from the Dataset a point returns. Masks are
not point variables (they belong to the allocation, known before any point runs).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import xarray as xr

from ..allocation import Allocation
from ..benchmark import match_probability
from ..circuit import Circuit
from ..dynamics import Dynamics
from ..dynamics.stability import stability_applies
from ..options import FitOptions
from ..schema import SWEEP
from ..solvers.bounded import sign_bounds

# attrs of a match_probability Dataset that a sweep stores as per-point variables: attr -> variable
_ATTR_VARIABLES = {var.attr: var.name for var in SWEEP.variables if var.attr is not None}
_ROUND = "round"  # the dim padded to the sweep's round cap (later rounds keep the final value)
SWEEP_ABSENT = {var.name: var.absent for var in SWEEP.variables if getattr(var, "absent", None) is not None}


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
    resume: Any = None  # a sweep extended to more trials: the point's old trials (a FitResult), kept, not refitted
    progress: bool = False  # a per-trial bar inside the point (in-process points on a terminal only)


@lru_cache(maxsize=8)
def _circuit(toml_text: str) -> Circuit:
    return Circuit.from_toml_text(toml_text)


def run_point(task: PointTask) -> xr.Dataset:
    """Compute one sweep point (in a worker process or in the caller): the :func:`match_probability` Dataset."""
    return match_probability(_circuit(task.circuit_toml), task.alloc, task.m, task.trials, task.seed,
                             options=task.options, _resume=task.resume, progress=task.progress, _estimate=False)


def resume_result(values: dict[str, np.ndarray], rounds_stored: int, n_plastic: int) -> Any:
    """A point's stored values over its old trials as the finished part of its rerun (a FitResult without
    weights or solver objects; :func:`neurosubset.benchmark.match_probability`'s ``_resume``).

    ``values``: point variable -> its stored value (per-trial arrays over the old trials, ``mp_by_round`` padded to
    the round cap ``rounds_stored`` with its last value, which recounts to the same trials); ``theta`` is not
    stored (zeros ``(trial, n_plastic)``: a sweep keeps no weights). Optional per-trial
    variables the point did not write (their absent value, or not stored) are None, as a fresh fit leaves them.
    """
    from .. import _schema
    from ..benchmark import FitResult
    from ..draws import Trials

    matched = np.asarray(values["matched"], dtype=bool)
    n = matched.size

    def optional(name: str) -> np.ndarray | None:
        if name not in values:
            return None
        value = np.asarray(values[name])
        absent = SWEEP_ABSENT.get(name)
        if absent is not None and (value == absent).all():
            return None
        if value.dtype.kind == "f" and np.isnan(value).all():
            return None
        return value

    decision, outcome = optional("decision"), optional("outcome")
    exact = bool(outcome is not None and decision is not None
                 and ((outcome != _schema.UNDECIDED) & (decision != _schema.LM_DECISION)).all())
    trials = Trials({}, {}, np.zeros((n, 0)), optional("teacher_rejected"), optional("student_rejected"))
    return FitResult(trials=trials, student={}, theta=np.zeros((n, n_plastic)), residual=np.asarray(values["residual"]),
                     matched=matched, restarts=np.asarray(values["restarts"]),
                     mp_by_round=np.asarray(values["mp_by_round"], dtype=float)[:rounds_stored], solver="",
                     tol=float("nan"), status=np.asarray(values["fit_status"]), options=None,
                     exact=exact, max_real_eig=optional("max_real_eig"), sign_violations=optional("sign_violations"),
                     decision=decision, outcome=outcome, proof_kind=optional("proof_kind"),
                     witness_scale=optional("witness_scale"))


def _is_point_variable(name: str) -> bool:
    return not name.startswith("mask_")


def stability_reported(circuit: Circuit) -> bool:
    """Whether a fit of ``circuit`` reports the student's stability: a stability rule (steady, linear
    continuous: :func:`neurosubset.dynamics.stability.stability_applies`) or local stability reported by its
    dynamics (nonlinear continuous: :meth:`~neurosubset.dynamics.Dynamics.local_stability`)."""
    return stability_applies(circuit) or type(circuit.dynamics).local_stability is not Dynamics.local_stability


def point_conditions(circuit: Circuit, alloc: Allocation | None, options: FitOptions) -> dict[str, bool]:
    """The :data:`neurosubset.schema.POINT_CONDITIONS` of one point (``alloc`` None: an allocation with no
    plastic synapse), which decide the variables it writes (:func:`neurosubset.schema.sweep_point_variables`)."""
    signed = alloc is not None and sign_bounds(circuit, alloc).active
    return {"certificate": bool(options.certificate),
            "stability_reported": stability_reported(circuit),
            "stable_required": bool(options.stable),
            "signed_plastic": signed,
            "constraint_acts": bool(options.dale and signed or options.stable and stability_applies(circuit))}


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
    for attr, name in _ATTR_VARIABLES.items():
        if attr in ds.attrs:
            value = ds.attrs[attr]
            values[name] = value if isinstance(value, str) else float(value)
    return values
