"""The result Dataset of one match-probability estimate, and the weights stored in it.

:func:`fit_dataset` packages a :class:`neurosubset.benchmark.FitResult` (per-trial ``matched``, ``residual``,
``restarts``, ``fit_status``; ``mp`` with its 95% Wilson interval; masks; optionally the weights and probes) with
attrs that hold the full configuration and a config hash; :func:`student_weights` / :func:`teacher_weights` read
the stored weights back. Variable attrs come from :mod:`neurosubset._schema`.
"""
from __future__ import annotations

import hashlib
import json
from statistics import NormalDist
from typing import Any

import numpy as np
import xarray as xr

from . import _schema
from ._schema import meta, var_name
from ._stability import stability_applies
from .allocation import Allocation
from .circuit import Circuit
from .solvers import LevenbergMarquardt, Solver


def wilson_interval(matched: int, trials: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion.

    Parameters
    ----------
    matched, trials : int
        Successes and trials (``trials >= 1``).
    confidence : float
        Two-sided confidence level.

    Returns
    -------
    (low, high) : tuple of float
    """
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p = matched / trials
    denom = 1 + z**2 / trials
    centre = (p + z**2 / (2 * trials)) / denom
    half = z * np.sqrt(p * (1 - p) / trials + z**2 / (4 * trials**2)) / denom
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def fit_dataset(circuit: Circuit, alloc: Allocation, res: Any, *, m: int, seed: int,
                requested: Solver | None = None, return_weights: bool = False) -> xr.Dataset:
    """Package a :class:`neurosubset.benchmark.FitResult` as the Dataset :func:`match_probability` returns.

    ``requested`` is the solver object asked for (its LM fields are recorded when the LM ran; default: the one
    that ran).
    """
    trials = res.matched.size
    k = int(res.matched.sum())
    low, high = wilson_interval(k, trials)
    data = {
        "matched": ("trial", res.matched, meta("matched")),
        "residual": ("trial", res.residual, meta("residual", tolerance=res.tol)),
        "restarts": ("trial", res.restarts, meta("restarts")),
        "fit_status": ("trial", res.status, meta("fit_status")),
        "mp": ((), k / trials, meta("mp")),
        "mp_low": ((), low, meta("mp_low")),
        "mp_high": ((), high, meta("mp_high") if res.exact else meta("mp_high", comment=_schema.LOWER_BOUND_COMMENT)),
        "mp_first_round": ((), float(res.mp_by_round[0]), meta("mp_first_round")),
        "mp_by_round": ("round", res.mp_by_round, meta("mp_by_round")),
        **_constraint_variables(res),
        **({} if res.decision is None else {"decision": ("trial", res.decision, meta("decision"))}),
    }
    for name, mask in alloc.masks.items():
        stem = var_name(name)
        data[f"mask_{stem}"] = ((f"{stem}_post", f"{stem}_pre"), mask, _schema.mask_meta(name))
    if return_weights:
        for name in circuit.weight_names:
            stem = var_name(name)
            dims = ("trial", f"{stem}_post", f"{stem}_pre")
            for role, values in (("teacher", res.trials.teacher), ("student_init", res.trials.student_init),
                                 ("student", res.student)):
                data[f"{role}_{stem}"] = (dims, values[name], _schema.weight_meta(role, name))
        probe_dims = ("trial", "probe", "step", "input") if res.trials.probes.ndim == 4 else ("trial", "probe", "input")
        data["probes"] = (probe_dims, res.trials.probes, meta("probes"))
        data["theta"] = (("trial", "synapse"), res.theta, meta("theta"))
    last_gain = float(res.mp_by_round[-1] - res.mp_by_round[-2]) if res.mp_by_round.size > 1 else 0.0
    lm = res.options if isinstance(res.options, LevenbergMarquardt) else None
    config = {
        "circuit": circuit.to_toml(),
        "circuit_name": circuit.name,
        "allocation_strategy": alloc.strategy,
        "allocation_hash": alloc.hash,
        "allocation_size": alloc.size,
        "allocation_counts": json.dumps(alloc.counts),
        "m": m,
        "trials": trials,
        "seed": seed,
        "solver": res.solver,
        "tolerance": res.tol,
        "restarts_per_round": lm.restarts if lm else 0,
        "max_rounds": lm.max_rounds if lm else 0,
        "lm_steps": lm.iterations if lm else 0,
    }
    if lm and lm.widen != LevenbergMarquardt.widen:  # hashed only when not the default, so old hashes still hold
        config["lm_widen"] = lm.widen
    # the constraints are hashed only where they can act (signed regions; steady dynamics), so the unconstrained
    # configuration and circuits that the flags cannot change keep their hashes
    if res.dale and any(r.sign is not None for r in circuit.regions):
        config["dale"] = 1
    if res.stable and stability_applies(circuit):
        config["stable"] = 1
    attrs = {**config,
             "config_hash": hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16],
             "solver_requested": (requested or res.options).name,
             "last_round_gain": last_gain,
             "dale": int(res.dale), "stable": int(res.stable),
             "mp_estimate": "exact" if res.exact else "lower_bound",
             "decision_kind": _schema.DECISION_KINDS[0] if res.exact else _schema.DECISION_KINDS[1],
             **_schema.versions()}
    if stability_applies(circuit):
        attrs["spec_unstable_fraction"] = circuit.stability.unstable_fraction
    coords = {"trial": np.arange(trials), "round": np.arange(res.mp_by_round.size), "m": m}
    return xr.Dataset(data, coords=coords, attrs=attrs)


def _constraint_variables(res: Any) -> dict[str, tuple]:
    """Per-trial stability (steady circuits), rejected draws (with ``stable``) and sign violations (signed
    plastic synapses) of a :class:`FitResult`, as Dataset variables."""
    out: dict[str, tuple] = {}
    if res.max_real_eig is not None:
        out["stable"] = ("trial", res.max_real_eig < 1.0, meta("stable"))
        out["max_real_eig"] = ("trial", res.max_real_eig, meta("max_real_eig"))
        if res.stable and res.trials.teacher_rejected is not None:
            out["teacher_rejected"] = ("trial", res.trials.teacher_rejected, meta("teacher_rejected"))
            out["student_rejected"] = ("trial", res.trials.student_rejected, meta("student_rejected"))
    if res.sign_violations is not None:
        out["sign_violations"] = ("trial", res.sign_violations, meta("sign_violations"))
    return out


def student_weights(ds: xr.Dataset) -> dict[str, np.ndarray]:
    """The fitted student weights stored by ``match_probability(..., return_weights=True)``.

    Returns
    -------
    dict
        Weight name -> ``(trial, n_post, n_pre)``.
    """
    return _weights(ds, "student_")


def teacher_weights(ds: xr.Dataset) -> dict[str, np.ndarray]:
    """The teacher weights stored by ``match_probability(..., return_weights=True)``."""
    return _weights(ds, "teacher_")


def _weights(ds: xr.Dataset, prefix: str) -> dict[str, np.ndarray]:
    out = {}
    for name, var in ds.data_vars.items():
        name = str(name)
        if prefix == "student_" and name.startswith("student_init_"):
            continue
        if name.startswith(prefix) and "weight" in var.attrs:
            out[var.attrs["weight"]] = var.values
    if not out:
        raise KeyError(f"The Dataset has no {prefix}* variables; call match_probability(..., return_weights=True).")
    return out

