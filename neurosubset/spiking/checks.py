"""The checks: one circuit against its rate model (:func:`spiking_check`), a teacher against students
(:func:`spiking_compare`), and the fit-then-compare run of ``neurosubset spikecheck`` (:func:`spikecheck`).

Each returns an :class:`xarray.Dataset` whose variables take their attrs from :data:`neurosubset._schema.VARIABLES`.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np
import xarray as xr

from .._schema import meta
from ..allocation import Allocation
from ..benchmark import DEFAULT_TOL, fit
from ..circuit import Circuit
from ..connectivity import name_coords
from ..dynamics import Continuous
from ._driver import AGREE_REL, AGREE_Z, _agree_meta, _run
from .hawkes import _check_circuit
from .settings import SpikingSettings, SpikingSettingsError, check_probes, check_seed

_DIMS = ("probe", "neuron")


def _meta(name: str, **fields: Any) -> dict[str, Any]:
    """The attrs of ``name`` from the schema, its long_name template filled in with ``fields``."""
    attrs = meta(name)
    if fields:
        attrs["long_name"] = attrs["long_name"].format(**fields)
    return attrs


def _agree(diff: np.ndarray, se: np.ndarray, ref: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return (np.abs(diff) <= AGREE_Z * se) | (np.abs(diff) <= AGREE_REL * np.abs(ref))


def _coords(circuit: Circuit, m: int) -> dict:
    regions = np.concatenate([[o] * circuit.region[o].size for o in circuit.output_regions])
    within = np.concatenate([np.arange(circuit.region[o].size) for o in circuit.output_regions])
    return {"probe": ("probe", np.arange(m), meta("probe")),
            "neuron": ("neuron", np.arange(circuit.n_out), meta("neuron")),
            "region": ("neuron", regions.astype(str), meta("neuron_region")),
            "index_in_region": ("neuron", within, meta("index_in_region")),
            **name_coords(circuit, "neuron", circuit.output_regions)}


def _check_vars(r: dict, suffix: str = "", who: str = "") -> dict:
    lead = f"{who} " if who else ""
    return {f"{name}{suffix}": (_DIMS, r[name], _meta(name, who=lead))
            for name in ("rate_model", "rate_spiking", "rate_spiking_se", "clipped_fraction")}


def _prepare(circuit: Circuit, probes: Any, settings: SpikingSettings | None, seed: Any, options: dict[str, Any],
             caller: str) -> tuple[SpikingSettings, np.ndarray, int]:
    """Resolved settings, checked probes ``(probe, n_in)`` and the brian2 seed of one call."""
    cfg = SpikingSettings.from_options(settings, options, caller=caller)
    probes = check_probes(probes, circuit.n_in)
    return cfg.resolved(probes), probes, check_seed(seed)


def _rate_circuit(circuit: Circuit, cfg: SpikingSettings, probes: np.ndarray) -> tuple[Circuit, SpikingSettings]:
    """The rate circuit the spiking network is compared with. A linear continuous circuit whose every ``tau``
    equals the kernel's: its steady twin, since the kernel-filtered mean rates of the Hawkes network obey
    ``tau dr/dt = -r + W r + input``, whose stationary state (constant probes) is the fixed point. Other continuous
    circuits are refused (one line)."""
    if not isinstance(circuit.dynamics, Continuous):
        return circuit, cfg
    if cfg.tau is None:  # automatic: the circuit's own (one) tau, the kernel its rates obey
        cfg = dataclasses.replace(cfg, tau=continuous_kernel_tau(circuit)).resolved(probes)
    taus = sorted({v for _, v in circuit.tau} if isinstance(circuit.tau, tuple) else {circuit.tau})
    if circuit.nonlinearity != "linear" or any(abs(t - cfg.tau) > 1e-12 * cfg.tau for t in taus):
        raise SpikingSettingsError(f"The spiking check maps continuous circuits only when linear with tau equal to "
                                   f"the kernel's tau ({cfg.tau:g} s); circuit {circuit.name!r} is "
                                   f"{circuit.nonlinearity!r} with tau {taus} s.")
    return (dataclasses.replace(circuit, dynamics="steady", steps=1, tau=None, duration=None, dt=None, readout=None),
            cfg)


def _input_rate(setting_vars: dict, probes: np.ndarray) -> tuple:
    """Input rates (Hz) at the operating point the check used (its rate unit and input baseline, which an
    automatic rate unit chooses from the weights)."""
    nu0, r0 = setting_vars["input_baseline"][1], setting_vars["rate_unit"][1]
    return ("probe", "input"), nu0 + r0 * probes, meta("input_rate")


def spiking_check(circuit: Circuit, weights: Mapping[str, Any], probes: Any, *,
                  settings: SpikingSettings | None = None, seed: int = 0, **options: Any) -> xr.Dataset:
    """Simulate a linear circuit as a linear Poisson (Hawkes) network and compare with the rate model.

    See :mod:`neurosubset.spiking` for the mapping. Output neurons are compared; all non-input neurons are simulated.

    Parameters
    ----------
    circuit : Circuit
        Linear, ``"steady"`` or ``"feedforward"`` dynamics, or linear ``"continuous"`` with every ``tau`` equal to
        the kernel's (compared as its steady twin: the stationary rates, its limit under constant probes).
    weights : dict
        Weight name -> array ``(n_post, n_pre)`` (numpy or torch), e.g. one trial of a fitted student.
    probes : array-like
        ``(probe, n_in)`` probe values (rate-model units).
    settings : SpikingSettings, optional
        Duration, repeats, kernel, operating point, time step, clipping policy and codegen target (units in
        :class:`SpikingSettings`); default ``SpikingSettings()``.
    seed : int
        brian2 seed (the previous random state is restored afterwards).
    **options
        Fields of :class:`SpikingSettings` as loose keywords (``duration``, ``repeats``, ``tau``, ``rate_unit``,
        ``baseline``, ``input_baseline``, ``margin``, ``dt``, ``warmup``, ``max_clipped``, ``on_clipping``,
        ``target``), applied on top of ``settings``.

    Returns
    -------
    xarray.Dataset
        Dims ``(probe, neuron)`` over the output regions: ``rate_model`` (Hz), ``rate_spiking`` (Hz),
        ``rate_spiking_se`` (Hz), ``clipped_fraction`` (1), ``z = (rate_spiking - rate_model) / rate_spiking_se``,
        ``agree`` (within 3 standard errors or 5% relative), ``mu`` (``cell``: the offsets of all simulated
        neurons, Hz), ``input_rate`` ``(probe, input)`` (Hz); the settings as variables with units: ``tau``,
        ``dt``, ``duration``, ``warmup`` (s), ``rate_unit``, ``input_baseline`` (Hz) and ``baseline_rate``
        (``cell``, Hz). Attrs: ``repeats``, ``seed``, ``brian2_version``, ``codegen_target``,
        ``fraction_agree``, ``spectral_radius``, ``max_real_eig``, ``inhibition_stabilized`` (0/1: radius >= 1
        with real parts < 1, held by inhibition), ``clipped_fraction_all_max`` (hidden neurons included),
        ``rectification_dominated`` (0/1), the circuit as TOML.

    Raises
    ------
    SpikingSettingsError
        Bad settings or probes, nonlinear or discrete circuits, max Re(eig W) >= 1, a negative predicted rate,
        or (with ``on_clipping="raise"``) a predicted clipped fraction above ``max_clipped``.
    MissingExtraError
        brian2 is not installed (``pip install 'neurosubset[spiking]'``); an ImportError.

    Examples
    --------
    >>> res = ns.fit(circuit, alloc, m=4, trials=1, seed=0)                           # doctest: +SKIP
    >>> chk = ns.spiking_check(circuit, {k: v[0] for k, v in res.student.items()},
    ...                        probes=res.trials.probes[0], duration=10.0, repeats=4)  # doctest: +SKIP
    >>> float(chk.attrs["fraction_agree"])                                              # doctest: +SKIP
    """
    cfg, probes, seed = _prepare(circuit, probes, settings, seed, options, "spiking_check")
    circuit, cfg = _rate_circuit(circuit, cfg, probes)
    results, attrs, setting_vars = _run(circuit, {"circuit": weights}, cfg, probes, seed)
    r = results["circuit"]
    data = _check_vars(r)
    diff = r["rate_spiking"] - r["rate_model"]
    with np.errstate(divide="ignore", invalid="ignore"):
        z = diff / r["rate_spiking_se"]
    agree = _agree(diff, r["rate_spiking_se"], r["rate_model"])
    data["z"] = (_DIMS, z, meta("z"))
    data["agree"] = (_DIMS, agree, _agree_meta())
    data["mu"] = ("cell", r["mu"], meta("mu"))
    data["input_rate"] = _input_rate(setting_vars, probes)
    data.update(setting_vars)
    attrs.update({"fraction_agree": float(agree.mean()),
                  "spectral_radius": r["spectral_radius"], "max_real_eig": r["max_real_eig"],
                  "inhibition_stabilized": r["inhibition_stabilized"],
                  "clipped_fraction_all_max": r["clipped_fraction_all_max"],
                  "saturated_fraction_max": r["saturated_fraction_max"],
                  "predicted_clipped_fraction_max": r["predicted_clipped_fraction_max"],
                  "rectification_dominated": int(bool(r["flags"])), "flags": r["flags"]})
    return xr.Dataset(data, coords=_coords(circuit, probes.shape[0]), attrs=attrs)


def spiking_compare(circuit: Circuit, teacher_weights: Mapping[str, Any], student_weights: Mapping[str, Any],
                    probes: Any, *, settings: SpikingSettings | None = None, seed: int = 0,
                    **options: Any) -> xr.Dataset:
    """Teacher versus student(s) in spikes, simulated together with the same operating point.

    Parameters
    ----------
    circuit : Circuit
    teacher_weights : dict
        Weight name -> array ``(n_post, n_pre)``.
    student_weights : dict
        Either one student (weight name -> array) or several: label -> (weight name -> array), e.g.
        ``{"fitted": ..., "unfitted": ...}``; the latter adds a ``student`` dim.
    probes : array-like
        ``(probe, n_in)``.
    settings, seed, **options
        As in :func:`spiking_check`. The automatic baseline is the largest any network needs, shared by all, so
        equal rate-model outputs mean equal predicted spiking rates.

    Returns
    -------
    xarray.Dataset
        ``*_teacher`` and ``*_student`` versions of ``rate_model``, ``rate_spiking``, ``rate_spiking_se``,
        ``clipped_fraction`` (Hz / 1), ``z = (rate_student - rate_teacher) / sqrt(se_student^2 + se_teacher^2)``,
        ``z_model_teacher`` (teacher spiking vs its rate model), ``agree`` (within 3 standard errors or 5%),
        ``fraction_agree``, ``median_abs_z``, ``fraction_abs_z_above_3``; attrs as :func:`spiking_check`.
    """
    cfg, probes, seed = _prepare(circuit, probes, settings, seed, options, "spiking_compare")
    circuit, cfg = _rate_circuit(circuit, cfg, probes)
    if not isinstance(student_weights, Mapping) or not student_weights:
        raise TypeError("The 'student_weights' parameter must be a non-empty dict.")
    many = all(isinstance(v, Mapping) for v in student_weights.values())
    students = dict(student_weights) if many else {"student": student_weights}
    if "teacher" in students:
        raise SpikingSettingsError("Student labels must differ from 'teacher'.")
    results, attrs, setting_vars = _run(circuit, {"teacher": teacher_weights, **students}, cfg, probes, seed)
    t = results["teacher"]
    data = _check_vars(t, "_teacher", "teacher")
    with np.errstate(divide="ignore", invalid="ignore"):
        data["z_model_teacher"] = (_DIMS, (t["rate_spiking"] - t["rate_model"]) / t["rate_spiking_se"],
                                   meta("z_model_teacher"))
    labels = list(students)
    stack = (lambda key: np.stack([results[s][key] for s in labels]))
    s = {key: stack(key) for key in ("rate_model", "rate_spiking", "rate_spiking_se", "clipped_fraction")}
    diff = s["rate_spiking"] - t["rate_spiking"]
    se = np.sqrt(s["rate_spiking_se"]**2 + t["rate_spiking_se"]**2)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = diff / se
    agree = _agree(diff, se, t["rate_spiking"])
    dims = ("student", *_DIMS)
    for key, value in _check_vars(s, "_student", "student").items():
        data[key] = (dims, value[1], value[2])
    data["z"] = (dims, z, meta("z_compare"))
    data["agree"] = (dims, agree, _agree_meta())
    data["fraction_agree"] = ("student", agree.reshape(len(labels), -1).mean(axis=1), meta("fraction_agree"))
    data["median_abs_z"] = ("student", np.median(np.abs(z).reshape(len(labels), -1), axis=1), meta("median_abs_z"))
    data["fraction_abs_z_above_3"] = ("student", (np.abs(z) > AGREE_Z).reshape(len(labels), -1).mean(axis=1),
                                      meta("fraction_abs_z_above_3"))
    data["rate_model_difference"] = (dims, s["rate_model"] - t["rate_model"][None], meta("rate_model_difference"))
    data["mu_teacher"] = ("cell", t["mu"], meta("mu_teacher"))
    data["mu_student"] = (("student", "cell"), stack("mu"), meta("mu_student"))
    data["input_rate"] = _input_rate(setting_vars, probes)
    teacher_agree = _agree(t["rate_spiking"] - t["rate_model"], t["rate_spiking_se"], t["rate_model"])
    flags = {lab: r["flags"] for lab, r in results.items() if r["flags"]}
    data.update(setting_vars)
    attrs.update({"fraction_agree_teacher_model": float(teacher_agree.mean()),
                  "spectral_radius_teacher": t["spectral_radius"], "max_real_eig_teacher": t["max_real_eig"],
                  "inhibition_stabilized": int(any(r["inhibition_stabilized"] for r in results.values())),
                  "clipped_fraction_all_max": max(r["clipped_fraction_all_max"] for r in results.values()),
                  "saturated_fraction_max": max(r["saturated_fraction_max"] for r in results.values()),
                  "predicted_clipped_fraction_max": t["predicted_clipped_fraction_max"],
                  "rectification_dominated": int(bool(flags)),
                  "flags": "; ".join(f"{k}: {v}" for k, v in flags.items())})
    ds = xr.Dataset(data, coords={**_coords(circuit, probes.shape[0]),
                                  "student": ("student", labels, meta("student"))}, attrs=attrs)
    return ds if many else ds.squeeze("student", drop=True)


def continuous_kernel_tau(circuit: Circuit) -> float:
    """The kernel tau (s) that runs continuous ``circuit`` in spikes: its one ``tau``.

    The circuit must be linear, with one ``tau`` (global, or equal in every hidden region) and ``steps = 1`` (the
    Poisson inputs are stationary); otherwise :class:`SpikingSettingsError`, one line naming what cannot be mapped.
    """
    who = f"spikecheck cannot map continuous circuit {circuit.name!r}"
    if circuit.nonlinearity != "linear":
        raise SpikingSettingsError(f"{who}: its nonlinearity {circuit.nonlinearity!r} (the Hawkes mapping is "
                                   f"linear). Expected 'linear'.")
    per = dict(circuit.tau) if isinstance(circuit.tau, tuple) else {}
    taus = sorted(set(per.values())) if per else [circuit.tau]
    if len(taus) > 1:
        raise SpikingSettingsError(f"{who}: its per-region tau {per} s differ (the network has one kernel tau). "
                                   f"Expected one tau for every hidden region.")
    if circuit.steps != 1:
        raise SpikingSettingsError(f"{who}: its input changes over {circuit.steps} intervals (the Poisson inputs "
                                   f"are stationary). Expected steps = 1.")
    return float(taus[0])


def _spikecheck_settings(circuit: Circuit, settings: SpikingSettings | None) -> SpikingSettings:
    """The settings ``spikecheck`` runs ``circuit`` with: for a continuous circuit the kernel's tau is the
    circuit's (:func:`continuous_kernel_tau`); ``settings=None`` takes it, a given ``settings.tau`` must equal it."""
    if settings is not None and not isinstance(settings, SpikingSettings):
        raise TypeError(f"The 'settings' parameter of spikecheck must be a SpikingSettings or None. "
                        f"Got {type(settings).__name__}.")
    if not isinstance(circuit.dynamics, Continuous):
        return SpikingSettings() if settings is None else settings
    tau = continuous_kernel_tau(circuit)
    if settings is None or settings.tau is None:
        return dataclasses.replace(settings or SpikingSettings(), tau=tau)
    if abs(settings.tau - tau) > 1e-12 * tau:
        raise SpikingSettingsError(f"The 'tau' setting ({settings.tau:g} s) must equal the tau of continuous "
                                   f"circuit {circuit.name!r} ({tau:g} s), the kernel its rates obey; pass "
                                   f"tau={tau:g} or settings=None.")
    return settings


def spikecheck(circuit: Circuit, alloc: Allocation, m: int, *, seed: int = 0,
               settings: SpikingSettings | None = None, tol: float = DEFAULT_TOL,
               threads: int | None = 1) -> xr.Dataset:
    """Fit one student, then run the teacher, the fitted and the unfitted student as linear Poisson networks.

    What ``neurosubset spikecheck`` does: one teacher/student/probe draw (:func:`neurosubset.fit` with
    ``trials=1``), then :func:`spiking_compare` of the teacher against the students ``"fitted"`` (the fitted
    plastic values) and ``"unfitted"`` (the student's initial weights) on the draw's ``m`` probes.

    Parameters
    ----------
    circuit : Circuit
        Linear, ``"steady"`` or ``"feedforward"`` dynamics, or linear ``"continuous"`` with one ``tau`` (global or
        equal in every hidden region) and ``steps = 1`` (checked before fitting). A continuous circuit is fitted on
        its outputs at the read-out times and compared in spikes at its stationary rates (its long-time limit
        under a constant probe, see :func:`spiking_check`): a matched student agrees in spikes only where the two
        coincide (duration much longer than ``tau / (1 - max Re eig W)``, or the teacher's map recovered);
        ``rate_model_difference`` shows the stationary difference and the attr ``duration_over_tau`` the ratio.
    alloc : Allocation
        The plastic synapses of the student.
    m : int
        Number of probes; each is simulated.
    seed : int
        Seed of the fit's draw and of brian2.
    settings : SpikingSettings, optional
        How the networks are simulated (duration, repeats, tau, rate_unit, target, ...). ``None`` (default):
        ``SpikingSettings()``, with ``tau`` the circuit's for a continuous circuit (a given ``tau`` must equal it).
    tol, threads
        As in :func:`neurosubset.fit`.

    Returns
    -------
    xarray.Dataset
        :func:`spiking_compare`'s Dataset with a ``student`` dim (``"fitted"``, ``"unfitted"``), plus the attrs
        ``budget`` (``M``), ``m``, ``allocation_strategy``, ``matched`` (0/1: the fit matched the teacher) and
        ``residual`` (the fit's relative residual); continuous circuits add ``duration_over_tau``.

    Raises
    ------
    SpikingSettingsError
        A circuit the mapping cannot represent (one line naming what: the nonlinearity, discrete dynamics,
        per-region tau that differ, a piecewise input, a ``tau`` setting other than the circuit's).

    Examples
    --------
    >>> ds = spikecheck(circuit, allocate(circuit, 40, within=["CA1->OUT"]), m=3,
    ...                 settings=SpikingSettings(duration=1.0, repeats=2))     # doctest: +SKIP
    >>> ds.fraction_agree.sel(student="fitted")                                   # doctest: +SKIP
    """
    settings = _spikecheck_settings(circuit, settings)
    continuous = isinstance(circuit.dynamics, Continuous)
    if not continuous:
        _check_circuit(circuit)  # refuse relu / discrete circuits before fitting
    res = fit(circuit, alloc, m, trials=1, seed=seed, tol=tol, threads=threads)
    one = (lambda weights: {k: v[0] for k, v in weights.items()})
    probes = res.trials.probes[0]
    if continuous:  # (m, steps = 1, n_in): one constant input per probe
        probes = probes.reshape(probes.shape[0], -1)
    ds = spiking_compare(circuit, one(res.trials.teacher),
                         {"fitted": one(res.student), "unfitted": one(res.trials.student_init)},
                         probes, settings=settings, seed=seed)
    ds.attrs.update({"budget": alloc.size, "m": int(m), "allocation_strategy": alloc.strategy,
                     "matched": int(res.matched[0]), "residual": float(res.residual[0])})
    if continuous:
        ds.attrs["duration_over_tau"] = float(circuit.duration / settings.tau)  # the circuit's tau (set above)
    return ds
