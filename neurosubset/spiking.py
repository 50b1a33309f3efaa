"""Spiking check: run a linear rate circuit as a linear Poisson (Hawkes) network in brian2.

The mapping
-----------
Every non-input neuron ``i`` of the circuit (hidden and output regions) becomes a Poisson neuron with
intensity (Hz)

    lambda_i(t) = [ mu_i + sum_j A_ij g_j(t) + sum_k B_ik g_k^in(t) ]_+ ,

where ``A`` holds the recurrent (non-input -> non-input) weights and ``B`` the input weights (both
dimensionless, exactly the rate model's ``W``), ``g_j`` is neuron ``j``'s spike train filtered by a unit-area
exponential kernel with time constant ``tau`` (on each spike ``g_j += 1/tau``, so ``g_j`` is in Hz and its mean
is neuron ``j``'s rate), and ``g_k^in`` is the filtered spike train of input neuron ``k``, a Poisson neuron with
rate ``nu_k = nu_0 + r_0 * x_k`` for probe ``x``. While the bracket rarely goes negative, the stationary mean
rates solve ``r = mu + A r + B nu``:

    r = (I - A)^{-1} (mu + B nu) = r_b + r_0 * (I - A)^{-1} B x ,   with mu = (I - A) r_b - nu_0 B 1,

the rate model's fixed point ``(I - A)^{-1} B x`` (``"steady"``; for ``"feedforward"`` ``A`` is nilpotent and
the same formula is the layer-by-layer map) in units of ``r_0`` Hz on top of a baseline ``r_b``.

Units and choices:

- ``rate_unit`` ``r_0`` (Hz): one unit of probe value and of rate-model activity is ``r_0`` Hz.
- ``input_baseline`` ``nu_0`` (Hz): the input rate at probe value 0; must keep every ``nu_k >= 0``.
- ``baseline`` ``r_b`` (Hz): the stationary rate of non-input neuron ``i`` at probe 0 (``r_b,i``). The offsets
  ``mu = (I - A) r_b - nu_0 B 1`` (Hz, the "baselines" attr) make it so; ``mu`` may be negative, only the total
  intensity must stay positive. By default ``r_b,i`` is chosen per neuron: the smallest rate at which, for every
  probe, the predicted mean intensity is at least ``margin`` standard deviations of its fluctuations (and at
  least ``rate_unit``) above zero, using an independent-Poisson estimate ``var_i = sum_j W_ij^2 r_j / (2 tau)``
  that ignores network correlations (measured clipping is therefore reported, not assumed). When networks are
  compared (teacher, students) they share one ``r_b``, so equal rate-model outputs mean equal spiking rates.
  Large weights (e.g. a fitted student's) need high baselines: the fluctuation grows with ``|W|``.
- Rate-model prediction for output neuron ``o``: ``rate_model = r_b,o + r_0 * y_o`` (Hz), ``y`` from
  :func:`neurosubset.dynamics.forward`.

Discrete time: brian2 advances in steps ``dt``; a neuron spikes in a step with probability ``lambda dt`` (exact in
the mean while ``lambda dt <= 1``, counted as "saturated" otherwise) and a spike increments the postsynaptic
drive by ``W (e^{dt/tau} - 1) / dt`` so that the discrete kernel has unit area exactly: the stationary rate
equation above holds exactly in discrete time, not only as ``dt -> 0``. The drive starts at its stationary mean
and ``warmup`` seconds are discarded before counting.

What is recorded: spike counts (``SpikeMonitor(record=False)``) and per-neuron counters of clipped
(``lambda < 0``) and saturated steps, never spike times or state traces, so memory does not grow with
``duration``. All probes, repeats and networks (teacher, students) run as independent copies in one brian2
``Network`` built per call; brian2's seed is set per call and the previous random state and codegen target are
restored afterwards.
"""
from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
import xarray as xr
from scipy.special import ndtr

from ._checks import check_choice, check_int, check_real
from .circuit import Circuit, spectral_radius

SPIKING_DYNAMICS = ("steady", "feedforward")
TARGETS = ("numpy", "cython")
DEFAULT_TAU = 0.05        # s: slow (NMDA-like) kernel; fluctuations of the drive scale as 1/sqrt(tau)
DEFAULT_RATE_UNIT = 40.0  # Hz per unit of probe / rate-model activity: differences of O(1) are tens of Hz
DEFAULT_DT = 5e-4         # s: the largest automatic step; smaller when rates are high (lambda * dt <= 1)
DEFAULT_MARGIN = 4.0      # mean intensity >= 4 sd (independent-Poisson estimate) above 0; the estimate ignores
#                           network correlations, so measured clipping is ~0.1-1% (3 sd gave 2-3%)
DEFAULT_MAX_CLIPPED = 0.01  # clipped fraction of time steps above which a setting is rectification-dominated
AGREE_Z = 3.0             # agreement: within 3 standard errors ...
AGREE_REL = 0.05          # ... or within 5% relative


class SpikingSettingsError(ValueError):
    """A circuit, weights or setting that the linear Poisson mapping cannot represent faithfully."""


class SpikingWarning(UserWarning):
    """A spiking simulation ran but its rates are affected by rectification or saturation."""


def _import_brian2():
    try:
        import brian2
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise ImportError("The spiking check needs brian2, an optional dependency. Install it with "
                          "`pip install 'neurosubset[spiking]'`.") from exc
    return brian2


# ---------------------------------------------------------------------- the linear form A, B of a circuit
def _check_circuit(circuit: Circuit) -> None:
    if not isinstance(circuit, Circuit):
        raise TypeError(f"The 'circuit' parameter must be a neurosubset.Circuit. Got {type(circuit).__name__}.")
    if circuit.dynamics not in SPIKING_DYNAMICS:
        raise SpikingSettingsError(
            f"The spiking check maps linear rate circuits onto linear Poisson networks; circuit {circuit.name!r} "
            f"has dynamics {circuit.dynamics!r}. Expected one of {list(SPIKING_DYNAMICS)}.")
    if circuit.nonlinearity != "linear":
        raise SpikingSettingsError(
            f"The spiking check needs nonlinearity 'linear' (the Hawkes mapping is linear); circuit "
            f"{circuit.name!r} has {circuit.nonlinearity!r}. Expected 'linear'.")


def _neurons(circuit: Circuit) -> list[str]:
    return [r.name for r in circuit.regions if r.role != "input"]


def _check_weights(circuit: Circuit, weights: Mapping[str, Any], field: str) -> dict[str, np.ndarray]:
    if not isinstance(weights, Mapping):
        raise TypeError(f"The {field!r} parameter must be a dict weight name -> array (n_post, n_pre). "
                        f"Got {type(weights).__name__}.")
    missing = [k for k in circuit.weight_names if k not in weights]
    unknown = [k for k in weights if k not in circuit.weight_names]
    if missing or unknown:
        raise SpikingSettingsError(f"The {field!r} parameter must hold exactly the weights "
                                   f"{list(circuit.weight_names)}. Missing {missing}, unknown {unknown}.")
    out = {}
    for name in circuit.weight_names:
        w = weights[name]
        if hasattr(w, "detach"):
            w = w.detach().cpu().numpy()
        w = np.asarray(w, dtype=np.float64)
        shape = circuit.shape(name)
        if w.shape != shape:
            hint = (" It looks batched over trials: pass one trial, e.g. {k: v[0] for k, v in weights.items()}."
                    if w.ndim == 3 and w.shape[1:] == shape else "")
            raise SpikingSettingsError(f"Weight {name!r} in {field!r} must have shape {shape} (n_post, n_pre). "
                                       f"Got {w.shape} instead.{hint}")
        if not np.isfinite(w).all():
            raise SpikingSettingsError(f"Weight {name!r} in {field!r} has non-finite entries.")
        out[name] = w
    return out


def linear_form(circuit: Circuit, weights: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """The recurrent and input matrices of a linear circuit over its non-input neurons.

    Parameters
    ----------
    circuit : Circuit
        ``"steady"`` or ``"feedforward"`` dynamics, linear.
    weights : dict
        Weight name -> array ``(n_post, n_pre)`` (dimensionless).

    Returns
    -------
    A : numpy.ndarray
        ``(n_neuron, n_neuron)``: non-input regions in declaration order.
    B : numpy.ndarray
        ``(n_neuron, n_in)``: input regions in declaration order.
    """
    _check_circuit(circuit)
    weights = _check_weights(circuit, weights, "weights")
    neurons = _neurons(circuit)
    inputs = list(circuit.input_regions)
    row, col_in = circuit.offsets(neurons), circuit.offsets(inputs)
    n = sum(circuit.region[r].size for r in neurons)
    a, b = np.zeros((n, n)), np.zeros((n, circuit.n_in))
    for p in circuit.projections:
        w = weights[p.name]
        i0 = row[p.post]
        if p.pre in col_in:
            j0 = col_in[p.pre]
            b[i0:i0 + w.shape[0], j0:j0 + w.shape[1]] += w
        else:
            j0 = row[p.pre]
            a[i0:i0 + w.shape[0], j0:j0 + w.shape[1]] += w
    return a, b


def _output_index(circuit: Circuit) -> np.ndarray:
    neurons = _neurons(circuit)
    row = circuit.offsets(neurons)
    return np.concatenate([row[o] + np.arange(circuit.region[o].size) for o in circuit.output_regions])


def _noise_sd(a: np.ndarray, b: np.ndarray, rates: np.ndarray, nu: np.ndarray, tau: float) -> np.ndarray:
    """Std (Hz) of the drive around its mean, independent-Poisson estimate ``sum W^2 r / (2 tau)``.

    ``rates`` ``(neuron, probe)``, ``nu`` ``(input, probe)``; returns ``(neuron, probe)``.
    """
    var = (a**2) @ np.maximum(rates, 0.0) + (b**2) @ np.maximum(nu, 0.0)
    return np.sqrt(var / (2.0 * tau))


def _auto_baseline(nets: list[tuple[np.ndarray, np.ndarray, np.ndarray]], nu: np.ndarray, rate_unit: float,
                   tau: float, margin: float) -> np.ndarray:
    """Per-neuron baselines ``r_b`` (Hz), shared by all networks, keeping intensities positive.

    The smallest ``r_b`` with ``r_b,i + r_0 h_ip >= max(margin * sd_ip, r_0)`` for every network, neuron ``i``
    and probe ``p`` (``h`` the rate-model activity, ``sd`` the drive's fluctuation, which grows with the
    presynaptic rates): a monotone fixed-point iteration from below, rounded up to whole Hz.
    """
    rb = np.full(nets[0][2].shape[0], 0.0)
    for _, _, h in nets:
        rb = np.maximum(rb, (rate_unit - rate_unit * h).max(axis=1))
    for _ in range(10_000):
        need = rb.copy()
        for a, b, h in nets:
            rates = rb[:, None] + rate_unit * h
            need = np.maximum(need, (margin * _noise_sd(a, b, rates, nu, tau) - rate_unit * h).max(axis=1))
        if need.max() > 1e7:
            raise SpikingSettingsError(
                "No baseline rate below 1e7 Hz keeps the intensities positive: the weights are too large for the "
                "linear Poisson mapping at this 'tau'. Lengthen 'tau' or lower 'margin'.")
        if np.all(need - rb <= 1e-9 * np.maximum(1.0, need)):
            break
        rb = need
    return np.ceil(rb)


# ---------------------------------------------------------------------- the brian2 simulation
def _simulate(nets: list[dict[str, np.ndarray]], nu: np.ndarray, *, duration: float, warmup: float, repeats: int,
              seed: int, tau: float, dt: float, target: str) -> dict[str, Any]:
    """Run every (network, repeat, probe) as an independent copy in one brian2 Network.

    Parameters
    ----------
    nets : list of dict
        Each with ``a`` ``(n, n)``, ``b`` ``(n, n_in)``, ``mu`` ``(n,)`` Hz and ``rates`` ``(n, probe)`` Hz (the
        predicted stationary rates, used to start the drive at its mean).
    nu : numpy.ndarray
        ``(input, probe)`` input rates (Hz).

    Returns
    -------
    dict
        ``counts``, ``clipped``, ``saturated``: ``(net, repeat, probe, n)`` spike counts and numbers of clipped
        / saturated steps over ``duration``; ``steps`` the number of counted steps; ``brian2_version``.
    """
    b2 = _import_brian2()
    from brian2.devices.device import get_device

    n_net, (n, n_in), m = len(nets), nets[0]["b"].shape, nu.shape[1]
    copies = n_net * repeats * m
    net_of = np.arange(copies) // (repeats * m)
    probe_of = np.arange(copies) % m
    a_stack = np.stack([d["a"] for d in nets])
    b_stack = np.stack([d["b"] for d in nets])
    mu = np.concatenate([nets[k]["mu"] for k in net_of])
    # drive at its stationary mean: s = A r + B nu = r - mu
    s0 = np.concatenate([nets[k]["rates"][:, p] - nets[k]["mu"] for k, p in zip(net_of, probe_of)])
    gain = np.expm1(dt / tau) / dt  # 1/s: increment per spike giving the discrete kernel unit area
    unit_dt = dt * b2.second

    prefs = b2.prefs
    old_target = prefs.codegen.target
    device = get_device()
    old_random = device.get_random_state()
    try:
        prefs.codegen.target = target
        b2.seed(seed)
        group = b2.NeuronGroup(
            n * copies,
            """ds/dt = -s / tau_s : Hz
               mu : Hz (constant)
               nclip : integer
               nsat : integer""",
            threshold="rand() < (mu + s) * dt", method="exact", dt=unit_dt, namespace={"tau_s": tau * b2.second})
        group.mu = mu * b2.Hz
        group.s = s0 * b2.Hz
        group.run_regularly("nclip += int(mu + s < 0*Hz)\nnsat += int((mu + s) * dt > 1)", when="thresholds",
                            order=-1, dt=unit_dt)
        objects = [group]
        inputs = b2.PoissonGroup(n_in * copies, rates=np.concatenate([nu[:, p] for p in probe_of]) * b2.Hz,
                                 dt=unit_dt)
        objects.append(inputs)
        for mats, source, width in ((a_stack, group, n), (b_stack, inputs, n_in)):
            k, post, pre = np.nonzero(mats)
            if k.size == 0:
                continue
            # copy c of network k holds neurons c*n .. c*n + n - 1 and inputs c*n_in .. c*n_in + n_in - 1
            per = np.bincount(k, minlength=n_net)
            first = np.concatenate([[0], np.cumsum(per)])
            ii, jj = [], []
            for c in range(copies):
                sl = slice(first[net_of[c]], first[net_of[c] + 1])
                ii.append(pre[sl] + c * width)
                jj.append(post[sl] + c * n)
            syn = b2.Synapses(source, group, model="w : Hz (constant)", on_pre="s_post += w", dt=unit_dt)
            syn.connect(i=np.concatenate(ii), j=np.concatenate(jj))
            # set w from the connected indices, whatever order brian2 stores the synapses in
            si, sj = np.asarray(syn.i[:]), np.asarray(syn.j[:])
            c = sj // n
            syn.w = mats[net_of[c], sj % n, si % width] * gain * b2.Hz
            objects.append(syn)
        counter = b2.SpikeMonitor(group, record=False)
        objects.append(counter)
        net = b2.Network(*objects)
        if warmup > 0:
            net.run(warmup * b2.second, namespace={})
        before = np.asarray(counter.count[:]).copy()
        group.nclip = 0
        group.nsat = 0
        net.run(duration * b2.second, namespace={})
        counts = np.asarray(counter.count[:]) - before
        clipped = np.asarray(group.nclip[:]).copy()
        saturated = np.asarray(group.nsat[:]).copy()
    finally:
        prefs.codegen.target = old_target
        device.set_random_state(old_random)
    shape = (n_net, repeats, m, n)
    return {"counts": counts.reshape(shape), "clipped": clipped.reshape(shape), "saturated": saturated.reshape(shape),
            "steps": int(round(duration / dt)), "brian2_version": str(b2.__version__)}


# ---------------------------------------------------------------------- shared driver
def _settings(probes, duration, repeats, seed, tau, rate_unit, baseline, input_baseline, margin, dt, warmup,
              max_clipped, on_clipping, target, circuit):
    probes = np.asarray(probes.detach().cpu().numpy() if hasattr(probes, "detach") else probes, dtype=np.float64)
    if probes.ndim == 1:
        probes = probes[None, :]
    if probes.ndim != 2 or probes.shape[1] != circuit.n_in:
        raise SpikingSettingsError(f"The 'probes' parameter must have shape (probe, n_in) = (m, {circuit.n_in}). "
                                   f"Got {probes.shape} instead.")
    if probes.shape[0] == 0 or not np.isfinite(probes).all():
        raise SpikingSettingsError("The 'probes' parameter must hold at least one probe of finite values.")
    tau = check_real("tau", tau, low=0.0, low_open=True, error=SpikingSettingsError)
    dt = None if dt is None else check_real("dt", dt, low=0.0, low_open=True, error=SpikingSettingsError)
    duration = check_real("duration", duration, low=0.0, low_open=True, error=SpikingSettingsError)
    out = {
        "probes": probes,
        "duration": duration,
        "repeats": check_int("repeats", repeats, minimum=2, error=SpikingSettingsError),
        "seed": check_int("seed", seed, minimum=0, error=SpikingSettingsError),
        "tau": tau,
        "dt": dt,
        "rate_unit": check_real("rate_unit", rate_unit, low=0.0, low_open=True, error=SpikingSettingsError),
        "margin": check_real("margin", margin, low=0.0, error=SpikingSettingsError),
        "warmup": 5 * tau if warmup is None else check_real("warmup", warmup, low=0.0, error=SpikingSettingsError),
        "max_clipped": check_real("max_clipped", max_clipped, low=0.0, high=1.0, error=SpikingSettingsError),
    }
    check_choice("on_clipping", on_clipping, ("raise", "warn"), error=SpikingSettingsError)
    check_choice("target", target, TARGETS, error=SpikingSettingsError)
    out["on_clipping"], out["target"] = on_clipping, target
    low_nu = float(out["rate_unit"] * max(0.0, -probes.min()))
    if input_baseline is None:
        input_baseline = max(3.0 * out["rate_unit"], low_nu)
    out["input_baseline"] = check_real("input_baseline", input_baseline, low=low_nu, error=SpikingSettingsError)
    out["baseline"] = None if baseline is None else check_real("baseline", baseline, low=0.0, low_open=True,
                                                                error=SpikingSettingsError)
    return out


def _run(circuit: Circuit, networks: Mapping[str, Mapping[str, Any]], cfg: dict) -> tuple[dict, dict]:
    """Check, choose the operating point, simulate all networks together; per-network arrays and common attrs."""
    import torch

    from .dynamics import DTYPE, forward

    _check_circuit(circuit)
    probes, r0, tau = cfg["probes"], cfg["rate_unit"], cfg["tau"]
    nu = (cfg["input_baseline"] + r0 * probes).T  # (input, probe) Hz
    forms = {}
    for label, weights in networks.items():
        field = {"circuit": "weights", "teacher": "teacher_weights", "student": "student_weights"}.get(
            label, f"student_weights[{label!r}]")
        w = _check_weights(circuit, weights, field)
        a, b = linear_form(circuit, w)
        radius = spectral_radius(a)
        if radius >= 1.0:
            raise SpikingSettingsError(
                f"The {label} network is unstable: the spectral radius of its recurrent matrix (all non-input "
                f"neurons) is {radius:.3f}. The linear Poisson network has a stationary state only for a "
                f"spectral radius < 1; scale the recurrent weights down.")
        h = np.linalg.solve(np.eye(a.shape[0]) - a, b @ probes.T)  # (neuron, probe), rate-model units
        y = forward(circuit, {k: torch.as_tensor(v, dtype=DTYPE) for k, v in w.items()},
                    torch.as_tensor(probes, dtype=DTYPE)).numpy()  # (probe, n_out)
        forms[label] = {"a": a, "b": b, "h": h, "y": y, "radius": radius}
    auto = _auto_baseline([(f["a"], f["b"], f["h"]) for f in forms.values()], nu, r0, tau, cfg["margin"])
    n = auto.size
    rb = auto if cfg["baseline"] is None else np.full(n, cfg["baseline"])
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
        f["mu"] = (np.eye(n) - a) @ rb - cfg["input_baseline"] * b.sum(axis=1)
    if worst_clip > cfg["max_clipped"]:
        message = (f"Rectification-dominated setting: the intensity of {worst_where} is predicted to be negative "
                   f"(clipped) in {100 * worst_clip:.1f}% of time steps, above 'max_clipped' = "
                   f"{100 * cfg['max_clipped']:.1f}%, so its spiking rate would not follow the linear rate model. "
                   f"Raise 'baseline' (baseline=None chooses {auto.min():g} .. {auto.max():g} Hz here), lower "
                   f"'rate_unit' or lengthen 'tau'.")
        if cfg["on_clipping"] == "raise":
            raise SpikingSettingsError(message)
        warnings.warn(message, SpikingWarning, stacklevel=3)
    # lambda * dt <= 1 up to 5 sd above the mean: the Bernoulli step is then exact in the mean
    dt = cfg["dt"] if cfg["dt"] is not None else min(DEFAULT_DT, _round_down(1.0 / peak))
    if dt > tau / 5:
        raise SpikingSettingsError(f"The 'dt' parameter must be <= tau / 5 = {tau / 5:g} s. Got {dt:g} instead.")
    if cfg["duration"] < 10 * dt:
        raise SpikingSettingsError(f"The 'duration' parameter must be >= 10 dt = {10 * dt:g} s. "
                                   f"Got {cfg['duration']:g} instead.")
    sim = _simulate([{"a": f["a"], "b": f["b"], "mu": f["mu"], "rates": f["rates"]} for f in forms.values()], nu,
                    duration=cfg["duration"], warmup=cfg["warmup"], repeats=cfg["repeats"], seed=cfg["seed"],
                    tau=tau, dt=dt, target=cfg["target"])
    out_idx = _output_index(circuit)
    steps = sim["steps"]
    results = {}
    for k, (label, f) in enumerate(forms.items()):
        rate = sim["counts"][k] / cfg["duration"]  # (repeat, probe, n) Hz
        clipped = sim["clipped"][k].mean(axis=0) / steps  # (probe, n)
        saturated = sim["saturated"][k].mean(axis=0) / steps
        results[label] = {
            "rate_model": rb[out_idx] + r0 * f["y"],
            "rate_spiking": rate.mean(axis=0)[:, out_idx],
            "rate_spiking_se": (rate.std(axis=0, ddof=1) / np.sqrt(cfg["repeats"]))[:, out_idx],
            "clipped_fraction": clipped[:, out_idx],
            "clipped_fraction_all_max": float(clipped.max()),
            "saturated_fraction_max": float(saturated.max()),
            "predicted_clipped_fraction_max": worst_clip,
            "spectral_radius": f["radius"],
            "mu": f["mu"],
        }
        flag = []
        if clipped.max() > cfg["max_clipped"]:
            flag.append(f"intensities clipped at 0 in up to {100 * clipped.max():.2f}% of steps "
                        f"(max_clipped {100 * cfg['max_clipped']:.2f}%)")
        if saturated.max() > 0:
            flag.append(f"lambda*dt > 1 in up to {100 * saturated.max():.2f}% of steps (lower 'dt')")
        results[label]["flags"] = "; ".join(flag)
        if flag:
            warnings.warn(f"Spiking rates of the {label} network are not in the linear regime: {'; '.join(flag)}. "
                          f"They are flagged in the Dataset attrs ('rectification_dominated').", SpikingWarning,
                          stacklevel=3)
    attrs = {
        "tau": tau, "dt": dt, "duration": cfg["duration"], "warmup": cfg["warmup"],
        "repeats": cfg["repeats"], "seed": cfg["seed"], "rate_unit": r0,
        "baseline_rate": np.asarray(rb, dtype=np.float64), "input_baseline": cfg["input_baseline"],
        "margin": cfg["margin"],
        "max_clipped": cfg["max_clipped"], "brian2_version": sim["brian2_version"], "codegen_target": cfg["target"],
        "circuit": circuit.to_toml(), "circuit_name": circuit.name,
        "agreement_rule": f"|difference| <= {AGREE_Z:g} standard errors or <= {100 * AGREE_REL:g}% relative",
        "mapping": "lambda_i = [mu_i + sum_j W_ij g_j + sum_k B_ik g_k]_+, g = spike train * exp kernel of unit "
                   "area (tau); input rates nu = input_baseline + rate_unit * probe; rates in Hz = baseline_rate + "
                   "rate_unit * rate-model activity",
    }
    return results, attrs


def _round_down(x: float) -> float:
    """``x`` rounded down to 1, 2 or 5 times a power of ten (a readable time step)."""
    e = 10.0 ** np.floor(np.log10(x))
    return float(max(c * e for c in (1.0, 2.0, 5.0) if c * e <= x))


def _cell_label(circuit: Circuit, i: int) -> str:
    for name, start in circuit.offsets(_neurons(circuit)).items():
        if start <= i < start + circuit.region[name].size:
            return f"{name}[{i - start}]"
    return str(i)  # pragma: no cover


def _agree(diff: np.ndarray, se: np.ndarray, ref: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return (np.abs(diff) <= AGREE_Z * se) | (np.abs(diff) <= AGREE_REL * np.abs(ref))


def _coords(circuit: Circuit, m: int) -> dict:
    regions = np.concatenate([[o] * circuit.region[o].size for o in circuit.output_regions])
    within = np.concatenate([np.arange(circuit.region[o].size) for o in circuit.output_regions])
    return {"probe": np.arange(m), "neuron": np.arange(circuit.n_out), "region": ("neuron", regions.astype(str)),
            "index_in_region": ("neuron", within)}


_HZ = {"units": "Hz"}


def _check_vars(r: dict, suffix: str = "", who: str = "") -> dict:
    dims = ("probe", "neuron")
    lead = f"{who} " if who else ""
    return {
        f"rate_model{suffix}": (dims, r["rate_model"], {"long_name": f"{lead}rate-model prediction "
                                                        "baseline_rate + rate_unit * y", **_HZ}),
        f"rate_spiking{suffix}": (dims, r["rate_spiking"], {"long_name": f"{lead}spiking rate, mean over repeats",
                                                            **_HZ}),
        f"rate_spiking_se{suffix}": (dims, r["rate_spiking_se"], {"long_name": f"{lead}standard error of the spiking "
                                                                  "rate (std over repeats / sqrt(repeats))", **_HZ}),
        f"clipped_fraction{suffix}": (dims, r["clipped_fraction"], {"long_name": f"{lead}fraction of time steps with "
                                                                    "negative (clipped) intensity", "units": "1"}),
    }


def spiking_check(circuit: Circuit, weights: Mapping[str, Any], probes: Any, *, duration: float = 10.0,
                  repeats: int = 4, seed: int = 0, tau: float = DEFAULT_TAU, rate_unit: float = DEFAULT_RATE_UNIT,
                  baseline: float | None = None, input_baseline: float | None = None,
                  margin: float = DEFAULT_MARGIN, dt: float | None = None, warmup: float | None = None,
                  max_clipped: float = DEFAULT_MAX_CLIPPED, on_clipping: str = "raise",
                  target: str = "numpy") -> xr.Dataset:
    """Simulate a linear circuit as a linear Poisson (Hawkes) network and compare with the rate model.

    See the module docstring for the mapping. Output neurons are compared; all non-input neurons are simulated.

    Parameters
    ----------
    circuit : Circuit
        Linear, ``"steady"`` or ``"feedforward"`` dynamics.
    weights : dict
        Weight name -> array ``(n_post, n_pre)`` (numpy or torch), e.g. one trial of a fitted student.
    probes : array-like
        ``(probe, n_in)`` probe values (rate-model units).
    duration : float
        Simulated time per repeat (s), after ``warmup``.
    repeats : int
        Independent repeats (>= 2); the standard error comes from their spread.
    seed : int
        brian2 seed (the previous random state is restored afterwards).
    tau : float
        Time constant of the unit-area exponential synaptic kernel (s).
    rate_unit : float
        ``r_0``: Hz per unit of probe value and of rate-model activity.
    baseline : float, optional
        ``r_b``: one stationary rate (Hz) for every non-input neuron at probe 0. Default: per-neuron baselines,
        the smallest keeping every predicted mean intensity ``margin`` standard deviations (and at least
        ``rate_unit``) above 0, rounded up to whole Hz; stored in the ``baseline_rate`` attr.
    input_baseline : float, optional
        ``nu_0``: input rate at probe value 0 (Hz); default ``max(3 r_0, -r_0 min(probes))``.
    margin : float
        Standard deviations between 0 and the predicted mean intensity for the automatic baseline.
    dt : float, optional
        Time step (s), at most ``tau / 5``. Default: ``DEFAULT_DT`` (0.5 ms), or less where needed so that
        ``lambda dt <= 1`` up to 5 standard deviations above the predicted mean intensity (1, 2 or 5 times a power
        of ten).
    warmup : float, optional
        Discarded time before counting (s); default ``5 tau``.
    max_clipped : float
        Fraction of time steps with a negative (clipped) intensity above which the setting is
        rectification-dominated.
    on_clipping : {"raise", "warn"}
        What to do when the predicted clipped fraction exceeds ``max_clipped`` before simulating. A measured
        excess after simulating always warns (:class:`SpikingWarning`) and sets the ``rectification_dominated``
        attr.
    target : {"numpy", "cython"}
        brian2 code-generation target for this call (the global preference is restored).

    Returns
    -------
    xarray.Dataset
        Dims ``(probe, neuron)`` over the output regions: ``rate_model`` (Hz), ``rate_spiking`` (Hz),
        ``rate_spiking_se`` (Hz), ``clipped_fraction`` (1), ``z = (rate_spiking - rate_model) / rate_spiking_se``,
        ``agree`` (within 3 standard errors or 5% relative), ``mu`` (``cell``: the offsets of all simulated
        neurons, Hz), ``input_rate`` ``(probe, input)`` (Hz). Attrs: ``tau``, ``baselines`` (``mu``),
        ``baseline_rate``, ``rate_unit``, ``input_baseline``, ``brian2_version``, ``codegen_target``,
        ``fraction_agree``, ``spectral_radius``, ``clipped_fraction_all_max`` (hidden neurons included),
        ``rectification_dominated`` (0/1), the circuit as TOML.

    Raises
    ------
    SpikingSettingsError
        Nonlinear or discrete circuits, spectral radius >= 1, a negative predicted rate, or (with
        ``on_clipping="raise"``) a predicted clipped fraction above ``max_clipped``.
    ImportError
        brian2 is not installed (``pip install 'neurosubset[spiking]'``).

    Examples
    --------
    >>> res = ns.fit(circuit, alloc, m=4, trials=1, seed=0)                           # doctest: +SKIP
    >>> chk = ns.spiking_check(circuit, {k: v[0] for k, v in res.student.items()},
    ...                        probes=res.trials.probes[0], duration=10.0, repeats=4)  # doctest: +SKIP
    >>> float(chk.attrs["fraction_agree"])                                              # doctest: +SKIP
    """
    cfg = _settings(probes, duration, repeats, seed, tau, rate_unit, baseline, input_baseline, margin, dt, warmup,
                    max_clipped, on_clipping, target, circuit)
    results, attrs = _run(circuit, {"circuit": weights}, cfg)
    r = results["circuit"]
    data = _check_vars(r)
    diff = r["rate_spiking"] - r["rate_model"]
    with np.errstate(divide="ignore", invalid="ignore"):
        z = diff / r["rate_spiking_se"]
    agree = _agree(diff, r["rate_spiking_se"], r["rate_model"])
    data["z"] = (("probe", "neuron"), z, {"long_name": "(rate_spiking - rate_model) / rate_spiking_se", "units": "1"})
    data["agree"] = (("probe", "neuron"), agree, {"long_name": attrs["agreement_rule"], "units": "1"})
    data["mu"] = ("cell", r["mu"], {"long_name": "intensity offset of every simulated (non-input) neuron", **_HZ})
    data["input_rate"] = (("probe", "input"), cfg["input_baseline"] + cfg["rate_unit"] * cfg["probes"],
                          {"long_name": "input Poisson rates", **_HZ})
    attrs.update({"baselines": np.asarray(r["mu"], dtype=np.float64), "fraction_agree": float(agree.mean()),
                  "spectral_radius": r["spectral_radius"], "clipped_fraction_all_max": r["clipped_fraction_all_max"],
                  "saturated_fraction_max": r["saturated_fraction_max"],
                  "predicted_clipped_fraction_max": r["predicted_clipped_fraction_max"],
                  "rectification_dominated": int(bool(r["flags"])), "flags": r["flags"]})
    return xr.Dataset(data, coords=_coords(circuit, cfg["probes"].shape[0]), attrs=attrs)


def spiking_compare(circuit: Circuit, teacher_weights: Mapping[str, Any], student_weights: Mapping[str, Any],
                    probes: Any, **options: Any) -> xr.Dataset:
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
    **options
        Keyword options of :func:`spiking_check` (``duration``, ``repeats``, ``seed``, ``tau``, ``rate_unit``,
        ``baseline``, ...). The automatic baseline is the largest any network needs, shared by all, so equal
        rate-model outputs mean equal predicted spiking rates.

    Returns
    -------
    xarray.Dataset
        ``*_teacher`` and ``*_student`` versions of ``rate_model``, ``rate_spiking``, ``rate_spiking_se``,
        ``clipped_fraction`` (Hz / 1), ``z = (rate_student - rate_teacher) / sqrt(se_student^2 + se_teacher^2)``,
        ``z_model_teacher`` (teacher spiking vs its rate model), ``agree`` (within 3 standard errors or 5%),
        ``fraction_agree``, ``median_abs_z``, ``fraction_abs_z_above_3``; attrs as :func:`spiking_check`.
    """
    defaults = {"duration": 10.0, "repeats": 4, "seed": 0, "tau": DEFAULT_TAU, "rate_unit": DEFAULT_RATE_UNIT,
                "baseline": None, "input_baseline": None, "margin": DEFAULT_MARGIN, "dt": None,
                "warmup": None, "max_clipped": DEFAULT_MAX_CLIPPED, "on_clipping": "raise", "target": "numpy"}
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise TypeError(f"spiking_compare got unknown options {unknown}. Expected some of {sorted(defaults)}.")
    cfg = _settings(probes, **{**defaults, **options}, circuit=circuit)
    if not isinstance(student_weights, Mapping) or not student_weights:
        raise TypeError("The 'student_weights' parameter must be a non-empty dict.")
    many = all(isinstance(v, Mapping) for v in student_weights.values())
    students = dict(student_weights) if many else {"student": student_weights}
    if "teacher" in students:
        raise SpikingSettingsError("Student labels must differ from 'teacher'.")
    results, attrs = _run(circuit, {"teacher": teacher_weights, **students}, cfg)
    t = results["teacher"]
    data = _check_vars(t, "_teacher", "teacher")
    with np.errstate(divide="ignore", invalid="ignore"):
        data["z_model_teacher"] = (("probe", "neuron"), (t["rate_spiking"] - t["rate_model"]) / t["rate_spiking_se"],
                                   {"long_name": "(teacher spiking - teacher rate model) / se", "units": "1"})
    labels = list(students)
    stack = (lambda key: np.stack([results[s][key] for s in labels]))
    s = {key: stack(key) for key in ("rate_model", "rate_spiking", "rate_spiking_se", "clipped_fraction")}
    diff = s["rate_spiking"] - t["rate_spiking"]
    se = np.sqrt(s["rate_spiking_se"]**2 + t["rate_spiking_se"]**2)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = diff / se
    agree = _agree(diff, se, t["rate_spiking"])
    dims = ("student", "probe", "neuron")
    for key, value in _check_vars(s, "_student", "student").items():
        data[key] = (dims, value[1], value[2])
    data["z"] = (dims, z, {"long_name": "(rate_spiking_student - rate_spiking_teacher) / sqrt(se_s^2 + se_t^2)",
                           "units": "1"})
    data["agree"] = (dims, agree, {"long_name": attrs["agreement_rule"], "units": "1"})
    data["fraction_agree"] = ("student", agree.reshape(len(labels), -1).mean(axis=1),
                              {"long_name": "fraction of (probe, neuron) pairs where student and teacher agree",
                               "units": "1"})
    data["median_abs_z"] = ("student", np.median(np.abs(z).reshape(len(labels), -1), axis=1),
                            {"long_name": "median |z| over (probe, neuron)", "units": "1"})
    data["fraction_abs_z_above_3"] = ("student", (np.abs(z) > AGREE_Z).reshape(len(labels), -1).mean(axis=1),
                                      {"long_name": "fraction of (probe, neuron) with |z| > 3", "units": "1"})
    data["rate_model_difference"] = (dims, s["rate_model"] - t["rate_model"][None],
                                     {"long_name": "student - teacher rate-model prediction", **_HZ})
    data["mu_teacher"] = ("cell", t["mu"], {"long_name": "teacher intensity offsets (all simulated neurons)", **_HZ})
    data["mu_student"] = (("student", "cell"), stack("mu"), {"long_name": "student intensity offsets", **_HZ})
    data["input_rate"] = (("probe", "input"), cfg["input_baseline"] + cfg["rate_unit"] * cfg["probes"],
                          {"long_name": "input Poisson rates", **_HZ})
    teacher_agree = _agree(t["rate_spiking"] - t["rate_model"], t["rate_spiking_se"], t["rate_model"])
    flags = {lab: r["flags"] for lab, r in results.items() if r["flags"]}
    attrs.update({"baselines": np.asarray(t["mu"], dtype=np.float64),
                  "fraction_agree_teacher_model": float(teacher_agree.mean()),
                  "spectral_radius_teacher": t["spectral_radius"],
                  "clipped_fraction_all_max": max(r["clipped_fraction_all_max"] for r in results.values()),
                  "saturated_fraction_max": max(r["saturated_fraction_max"] for r in results.values()),
                  "predicted_clipped_fraction_max": t["predicted_clipped_fraction_max"],
                  "rectification_dominated": int(bool(flags)),
                  "flags": "; ".join(f"{k}: {v}" for k, v in flags.items())})
    ds = xr.Dataset(data, coords={**_coords(circuit, cfg["probes"].shape[0]), "student": labels}, attrs=attrs)
    return ds if many else ds.squeeze("student", drop=True)
