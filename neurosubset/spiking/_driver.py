"""The shared driver of the checks: operating point (baselines, clipping, time step), simulation, reduction.

For every network (the circuit, or a teacher and its students) it builds the linear form, refuses unstable or
rectification-dominated settings, picks one baseline for all networks, runs them together in brian2 and reduces
the spike counts to rates, standard errors and clipped fractions over the output neurons.
"""
from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from scipy.special import ndtr

from .._schema import meta, versions
from ..dynamics.stability import max_real_part
from ..circuit import Circuit
from ..distribution import spectral_radius
from ..dynamics import DTYPE, forward
from ..dynamics.sparse_map import dense_weights
from .hawkes import (_auto_baseline, _cell_label, _check_circuit, _check_weights, _neurons, _noise_sd, _output_index,
                     linear_form)
from .settings import (DEFAULT_DT, DEFAULT_RATE_UNIT, DEFAULT_TAU, MIN_RATE_UNIT, TAU_STEPS, SpikingSettings,
                       SpikingSettingsError, SpikingWarning)
from .simulation import _simulate

AGREE_Z = 3.0             # agreement: within 3 standard errors ...
AGREE_REL = 0.05          # ... or within 5% relative


def _agree_meta() -> dict[str, Any]:
    """Attrs of the ``agree`` variables; their long_name is the agreement rule (also the ``agreement_rule`` attr)."""
    attrs = meta("agree")
    attrs["long_name"] = attrs["long_name"].format(z=AGREE_Z, percent=100 * AGREE_REL)
    return attrs


def _run(circuit: Circuit, networks: Mapping[str, Mapping[str, Any]], cfg: SpikingSettings, probes: np.ndarray,
         seed: int) -> tuple[dict, dict, dict]:
    """Check, choose the operating point, simulate all networks together; per-network arrays, common attrs, and
    the settings as Dataset variables (they carry units: ``tau``, ``dt``, ``duration``, ``warmup`` in s,
    ``rate_unit``, ``input_baseline`` and ``baseline_rate (cell)`` in Hz).

    ``cfg`` is resolved (:meth:`SpikingSettings.resolved`), ``probes`` ``(probe, n_in)`` checked, ``seed`` the
    brian2 seed.
    """
    _check_circuit(circuit)
    fields = {label: {"circuit": "weights", "teacher": "teacher_weights", "student": "student_weights"}.get(
        label, f"student_weights[{label!r}]") for label in networks}
    # sparse weights (one trial of a sparse fit) made dense, refused in one line where the dense matrices would not
    # fit: per network A (kept in `forms`) and its copy in the simulation's stack, plus the (n, n) working copies
    # of the eigenvalues, I - A, A**2 and the torch rate model. Calibrated on the peak RSS of the call (one sparse
    # student of a steady circuit, p = 0.02, brian2 numpy target): 12.5 n^2 float64 at n = 3,010 with one network,
    # 12.8 at 4,010, 12.0 with three networks at 3,010; this counts 12 and 16, plus the weights
    dense = dense_weights({fields[label]: w for label, w in networks.items()}, caller="The spiking check",
                          square=(2 * len(networks) + 10) * _neurons(circuit) ** 2, error=SpikingSettingsError)
    forms = {}
    for label in networks:
        field = fields[label]
        w = _check_weights(circuit, dense[field], field)
        a, b = linear_form(circuit, w)
        # the mean filtered traces follow tau dg/dt = -g + mu + W g + B nu: stationary iff max Re(eig W) < 1 (not
        # radius < 1, which would refuse inhibition-stabilized E/I networks and Dale-respecting students)
        radius, max_re = spectral_radius(a), max_real_part(a)
        if max_re >= 1.0:
            raise SpikingSettingsError(
                f"The {label} network is unstable: the largest real part of the eigenvalues of its recurrent "
                f"matrix (all non-input neurons) is max Re(eig W) = {max_re:.3f} >= 1 (spectral radius "
                f"{radius:.3f}). The mean rates of the linear Poisson network follow tau dr/dt = -r + W r + input, "
                f"which has a stable stationary state only for max Re(eig W) < 1; scale the recurrent weights "
                f"down.")
        h = np.linalg.solve(np.eye(a.shape[0]) - a, b @ probes.T)  # (neuron, probe), rate-model units
        y = forward(circuit, {k: torch.as_tensor(v, dtype=DTYPE) for k, v in w.items()},
                    torch.as_tensor(probes, dtype=DTYPE)).numpy()  # (probe, n_out)
        forms[label] = {"a": a, "b": b, "h": h, "y": y, "radius": radius, "max_re": max_re}
    cfg, point = _operating_point(circuit, forms, cfg, probes)
    r0, tau = cfg.rate_unit, cfg.tau
    nu = (cfg.input_baseline + r0 * probes).T  # (input, probe) Hz
    auto = _auto_baseline([(f["a"], f["b"], f["h"]) for f in forms.values()], nu, r0, tau, cfg.margin)
    n = auto.size
    rb = auto if cfg.baseline is None else np.full(n, cfg.baseline)
    where = (lambda i: _cell_label(circuit, int(i)))
    worst_clip, worst_where, peak = 0.0, "", 0.0
    for label, f in forms.items():
        a, b = f["a"], f["b"]
        rates = rb[:, None] + r0 * f["h"]  # (neuron, probe) Hz
        if rates.min() <= 0.0:
            i, p = np.unravel_index(np.argmin(rates), rates.shape)
            raise SpikingSettingsError(
                f"Rectification-dominated setting: with baseline {rb[i]:g} Hz and rate_unit {r0:g} Hz, neuron "
                f"{where(i)} of the {label} network would need a negative rate ({rates[i, p]:.1f} Hz) on probe {p}, "
                f"which a Poisson neuron cannot fire. The 'baseline' parameter must be > "
                f"{float(-(r0 * f['h']).min()):.1f} Hz; baseline=None chooses per-neuron baselines automatically "
                f"({auto.min():g} .. {auto.max():g} Hz here).")
        sd = _noise_sd(a, b, rates, nu, tau)
        clip = np.where(sd > 0, ndtr(-rates / np.where(sd > 0, sd, 1.0)), 0.0)  # Gaussian P(intensity < 0)
        if clip.max() > worst_clip:
            i, _ = np.unravel_index(np.argmax(clip), clip.shape)
            worst_clip, worst_where = float(clip.max()), f"neuron {where(i)} of the {label} network"
        peak = max(peak, float((rates + 5 * sd).max()))
        f["rates"] = rates
        f["mu"] = (np.eye(n) - a) @ rb - cfg.input_baseline * b.sum(axis=1)
    if worst_clip > cfg.max_clipped:
        message = (f"Rectification-dominated setting: the intensity of {worst_where} is predicted to be negative "
                   f"(clipped) in {100 * worst_clip:.1f}% of time steps, above 'max_clipped' = "
                   f"{100 * cfg.max_clipped:.1f}%, so its spiking rate would not follow the linear rate model. "
                   f"Raise 'baseline' (baseline=None chooses {auto.min():g} .. {auto.max():g} Hz here), lower "
                   f"'rate_unit' or lengthen 'tau'.")
        if cfg.on_clipping == "raise":
            raise SpikingSettingsError(message)
        warnings.warn(message, SpikingWarning, stacklevel=3)
    # lambda * dt <= 1 up to 5 sd above the mean: the Bernoulli step is then exact in the mean
    dt = cfg.dt if cfg.dt is not None else min(DEFAULT_DT, _round_down(1.0 / peak))
    if dt > tau / 5:
        raise SpikingSettingsError(f"The 'dt' parameter must be <= tau / 5 = {tau / 5:g} s. Got {dt:g} instead.")
    if cfg.duration < 10 * dt:
        raise SpikingSettingsError(f"The 'duration' parameter must be >= 10 dt = {10 * dt:g} s. "
                                   f"Got {cfg.duration:g} instead.")
    sim = _simulate([{"a": f["a"], "b": f["b"], "mu": f["mu"], "rates": f["rates"]} for f in forms.values()], nu,
                    duration=cfg.duration, warmup=cfg.warmup, repeats=cfg.repeats, seed=seed,
                    tau=tau, dt=dt, target=cfg.target)
    out_idx = _output_index(circuit)
    steps = sim["steps"]
    results = {}
    for k, (label, f) in enumerate(forms.items()):
        rate = sim["counts"][k] / cfg.duration  # (repeat, probe, n) Hz
        clipped = sim["clipped"][k].mean(axis=0) / steps  # (probe, n)
        saturated = sim["saturated"][k].mean(axis=0) / steps
        results[label] = {
            "rate_model": rb[out_idx] + r0 * f["y"],
            "rate_spiking": rate.mean(axis=0)[:, out_idx],
            "rate_spiking_se": (rate.std(axis=0, ddof=1) / np.sqrt(cfg.repeats))[:, out_idx],
            "clipped_fraction": clipped[:, out_idx],
            "clipped_fraction_all_max": float(clipped.max()),
            "saturated_fraction_max": float(saturated.max()),
            "predicted_clipped_fraction_max": worst_clip,
            "spectral_radius": f["radius"],
            "max_real_eig": f["max_re"],
            # radius >= 1 with max Re < 1: the means are stable, but the rate model's fixed point is not the limit
            # of the discrete iteration, and the amplified fluctuations make rectification (clipping, flagged
            # above when it happens) more likely than in a radius < 1 network
            "inhibition_stabilized": int(f["radius"] >= 1.0),
            "mu": f["mu"],
        }
        flag = []
        if clipped.max() > cfg.max_clipped:
            worst = np.unravel_index(np.argmax(clipped), clipped.shape)
            flag.append(f"the intensity of neuron {where(worst[1])} was negative (and set to 0) in "
                        f"{100 * clipped.max():.2f}% of its time steps on probe {worst[0]}, more than the "
                        f"{100 * cfg.max_clipped:.2f}% tolerated ('max_clipped'), so its spiking rate runs above "
                        f"the linear prediction")
        if saturated.max() > 0:
            flag.append(f"lambda*dt > 1 in up to {100 * saturated.max():.2f}% of steps (lower 'dt')")
        results[label]["flags"] = "; ".join(flag)
        if flag:
            warnings.warn(f"Spiking rates of the {label} network are not in the linear regime: {'; '.join(flag)}. "
                          f"They are flagged in the Dataset attrs ('rectification_dominated').", SpikingWarning,
                          stacklevel=3)
    settings = {name: ((), float(value), meta(name)) for name, value in (
        ("tau", tau), ("dt", dt), ("duration", cfg.duration), ("warmup", cfg.warmup), ("rate_unit", r0),
        ("input_baseline", cfg.input_baseline))}
    settings["baseline_rate"] = ("cell", np.asarray(rb, dtype=np.float64), meta("baseline_rate"))
    attrs = {
        "title": f"neurosubset spiking check of {circuit.name}", **versions(), "repeats": cfg.repeats, "seed": seed,
        **point,
        "margin": cfg.margin,
        "max_clipped": cfg.max_clipped, "brian2_version": sim["brian2_version"], "codegen_target": cfg.target,
        "circuit": circuit.to_toml(), "circuit_name": circuit.name,
        "agreement_rule": _agree_meta()["long_name"],
        "mapping": "lambda_i = [mu_i + sum_j W_ij g_j + sum_k B_ik g_k]_+, g = spike train * exp kernel of unit "
                   "area (tau); input rates nu = input_baseline + rate_unit * probe; rates in Hz = baseline_rate + "
                   "rate_unit * rate-model activity",
    }
    return results, attrs, settings


def _output_peak(forms: dict, cfg: SpikingSettings, probes: np.ndarray, out_idx: np.ndarray, r0: float) -> float:
    """The largest predicted mean output rate (Hz) over networks and probes at rate unit ``r0`` (the automatic
    baselines, or the given one, at that unit; an automatic input baseline follows ``r0``)."""
    at = dataclasses.replace(cfg, rate_unit=r0, input_baseline=cfg.input_baseline).resolved(probes)
    nu = (at.input_baseline + r0 * probes).T
    nets = [(f["a"], f["b"], f["h"]) for f in forms.values()]
    rb = (_auto_baseline(nets, nu, r0, cfg.tau, cfg.margin) if cfg.baseline is None
          else np.full(nets[0][2].shape[0], cfg.baseline))
    return float(max((rb[:, None] + r0 * h)[out_idx].max() for _, _, h in nets))


def _operating_point(circuit: Circuit, forms: dict, cfg: SpikingSettings, probes: np.ndarray
                     ) -> tuple[SpikingSettings, dict[str, Any]]:
    """The settings with ``tau``, the rate unit and the input baseline resolved, and attrs saying how.

    Where left automatic (None): ``tau`` is the first of ``DEFAULT_TAU x TAU_STEPS`` (0.05 .. 0.5 s) at which the
    predicted mean output rates can stay at or below ``max_rate`` (with the rate unit given, or with
    ``MIN_RATE_UNIT``), else ``DEFAULT_TAU``; the rate unit the largest in ``[MIN_RATE_UNIT, DEFAULT_RATE_UNIT]``
    (bisection in ``log r_0``, 12 steps) keeping them there, else ``DEFAULT_RATE_UNIT`` with a plain
    :class:`SpikingWarning` naming what would allow it. The baselines' fluctuation floor (``margin`` standard
    deviations of ``sum W^2 r / (2 tau)``) falls about as ``1 / tau`` and does not shrink with the rate unit.
    """
    out_idx = _output_index(circuit)
    peak = (lambda at, r0: _output_peak(forms, at, probes, out_idx, r0))
    auto_tau, auto_r0 = cfg.tau is None, cfg.rate_unit is None
    lowest = MIN_RATE_UNIT if auto_r0 else cfg.rate_unit
    top = peak(dataclasses.replace(cfg, tau=DEFAULT_TAU if auto_tau else cfg.tau), DEFAULT_RATE_UNIT)
    taus = [DEFAULT_TAU * k for k in TAU_STEPS] if auto_tau else [cfg.tau]
    if cfg.max_rate is None:
        taus = taus[:1]
    tau = next((t for t in taus if cfg.max_rate is None or peak(dataclasses.replace(cfg, tau=t), lowest)
                <= cfg.max_rate), None)
    feasible = tau is not None
    at = dataclasses.replace(cfg, tau=taus[0] if tau is None else tau)
    r0 = cfg.rate_unit if not auto_r0 else DEFAULT_RATE_UNIT
    if auto_r0 and feasible and cfg.max_rate is not None and peak(at, DEFAULT_RATE_UNIT) > cfg.max_rate:
        lo, hi = np.log(MIN_RATE_UNIT), np.log(DEFAULT_RATE_UNIT)  # peak(lo) <= max_rate < peak(hi)
        for _ in range(12):
            mid = 0.5 * (lo + hi)
            if peak(at, float(np.exp(mid))) <= cfg.max_rate:
                lo = mid
            else:
                hi = mid
        r0 = float(np.floor(np.exp(lo) * 100) / 100)  # readable, still at or below the ceiling
    final = peak(at, r0)
    how = []
    if auto_tau:
        how.append(f"tau {at.tau:g} s (automatic: the first of {DEFAULT_TAU:g} x {list(TAU_STEPS)} s letting the "
                   f"output rates stay <= max_rate)" if feasible and cfg.max_rate is not None
                   else f"tau {at.tau:g} s (automatic default)")
    unit_how = (f"automatic: the largest <= {DEFAULT_RATE_UNIT:g} Hz keeping the output rates <= max_rate"
                if auto_r0 and feasible and cfg.max_rate is not None else "automatic default" if auto_r0 else "given")
    how.append(f"rate_unit {r0:g} Hz ({unit_how})")
    if not feasible and (auto_tau or auto_r0):  # a setting given in full is the user's choice: said in attrs only
        what = (f"even with a rate unit of {lowest:g} Hz" + (f" and tau up to {taus[-1]:g} s" if auto_tau else
                                                               f" at tau = {cfg.tau:g} s"))
        warnings.warn(
            f"The predicted mean output rates reach {final:.0f} Hz, above max_rate = {cfg.max_rate:g} Hz, and cannot "
            f"be brought below it {what}: the baselines that keep every intensity {cfg.margin:g} standard deviations "
            f"above 0 are that high for these weights (they fall about as 1 / tau; lower 'margin' allows lower "
            f"rates with more clipping). The check runs at {r0:g} Hz per unit and tau = {at.tau:g} s.",
            SpikingWarning, stacklevel=4)
    if not feasible:
        how.append(f"output rates above max_rate = {cfg.max_rate:g} Hz")
    resolved = dataclasses.replace(at, rate_unit=r0).resolved(probes)
    # a rate-model difference dy is r0 dy Hz; its standard error ~ sqrt(rate / (duration repeats)) once duration >>
    # tau: the z-score of the 40 Hz, 0.05 s setting needs duration x (40 / r0)^2 x (rate / rate_40)
    same = cfg.duration * (DEFAULT_RATE_UNIT / r0) ** 2 * (final / top)
    return resolved, {"rate_unit_choice": "; ".join(how), "predicted_output_rate_max": final,
                      "duration_for_same_precision": float(same),
                      **({} if cfg.max_rate is None else {"max_rate": cfg.max_rate})}


def _round_down(x: float) -> float:
    """``x`` rounded down to 1, 2 or 5 times a power of ten (a readable time step)."""
    e = 10.0 ** np.floor(np.log10(x))
    return float(max(c * e for c in (1.0, 2.0, 5.0) if c * e <= x))
