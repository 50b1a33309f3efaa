"""Trajectories of a continuous-time circuit: :func:`simulate` returns outputs (and hidden rates) over time.

The dynamics are those of :mod:`neurosubset._continuous` (the forward map the benchmark fits): exact matrix
exponential for linear circuits, fixed-step RK4 otherwise, all probes in one batch. Times are in seconds.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import xarray as xr

from . import _continuous, _schema
from ._checks import ParameterError
from ._schema import meta
from .circuit import Circuit
from .connectivity import name_coords
from .dynamics import DTYPE

__all__ = ["simulate"]


def simulate(circuit: Circuit, weights: Mapping[str, Any], probes: Any, *,
             times: Sequence[float] | str | None = None, hidden: bool = False) -> xr.Dataset:
    """Integrate a continuous circuit on ``probes`` and return its outputs at ``times``.

    ``T dh/dt = -h + phi(W_rec h + W_in x(t))`` from ``h(0) = 0``, outputs ``y(t) = W_out h(t) + W_direct x(t)``,
    ``x(t)`` held constant over each of the circuit's ``steps`` input intervals (see
    :class:`~neurosubset.circuit.Circuit`).

    Parameters
    ----------
    circuit : Circuit
        ``dynamics = "continuous"``.
    weights : dict
        Weight name -> array ``(n_post, n_pre)`` (numpy or torch; dimensionless), one circuit.
    probes : array-like
        ``(probe, steps, n_in)``: the input of each interval.
    times : sequence of float, "all" or None
        Read-out times (s, increasing, on the ``dt`` grid, in ``(0, duration]``); ``"all"`` every ``dt`` step;
        ``None`` (default) the circuit's ``readout`` times (the end of the duration unless set).
    hidden : bool
        Also return the hidden rates.

    Returns
    -------
    xarray.Dataset
        ``output (probe, time, neuron)``; with ``hidden`` also ``hidden_rate (probe, time, hidden_neuron)``;
        ``max_real_jacobian (probe)`` (1/s) of the vector field at the final state (negative: the trajectory
        ends near a locally stable state); ``input (probe, interval, input_neuron)``. Coords: ``time`` (s),
        ``region`` and ``index_in_region`` per neuron. Attrs: the circuit as TOML, the integrator, versions.

    Examples
    --------
    >>> c = Circuit.from_toml("circuits/ei_continuous.toml")                             # doctest: +SKIP
    >>> w = c.sample_weights(np.random.default_rng(0))                                    # doctest: +SKIP
    >>> ds = simulate(c, w, c.sample_probes(3, np.random.default_rng(1)), times="all")     # doctest: +SKIP
    >>> ds.output.sel(probe=0).plot.line(x="time")                                        # doctest: +SKIP
    """
    if not isinstance(circuit, Circuit):
        raise TypeError(f"The 'circuit' parameter must be a neurosubset.Circuit. Got {type(circuit).__name__}.")
    if circuit.dynamics != "continuous":
        raise ParameterError(f"simulate needs dynamics 'continuous'; circuit {circuit.name!r} has "
                             f"{circuit.dynamics!r}. Use neurosubset.dynamics.forward for the others.")
    if not isinstance(hidden, (bool, np.bool_)):
        raise ParameterError(f"The 'hidden' parameter must be True or False. Got {hidden!r} instead.")
    w = _weights(circuit, weights)
    x = torch.as_tensor(np.asarray(probes, dtype=np.float64), dtype=DTYPE)
    shape = circuit.probe_shape(1)[1:]
    if x.dim() != 3 or tuple(x.shape[1:]) != shape:
        raise ParameterError(f"The 'probes' parameter must have shape (probe, {shape[0]}, {shape[1]}) (probe, steps, "
                             f"n_in) for circuit {circuit.name!r}. Got {tuple(x.shape)} instead.")
    n = _continuous.n_dt(circuit)
    if isinstance(times, str):
        if times != "all":
            raise ParameterError(f"The 'times' parameter must be a list of times (s), 'all' or None. Got {times!r}.")
        index = np.arange(1, n + 1)
    else:
        index = _continuous.grid_steps(_continuous.readout_times(circuit) if times is None else times,
                                       circuit.dt, n, "times", ParameterError)
    with torch.no_grad():
        y, h = _continuous.integrate(circuit, w, x, index)
        # RK4's trajectory does not depend on the read-outs: reuse h(duration) where it was read out (the exact
        # linear solution's segments, so its rounding, do; recomputing it there costs a few matrix exponentials)
        last = h[..., -1, :] if circuit.nonlinearity != "linear" and index[-1] == n else None
        final = _continuous.final_max_real(circuit, w, x, last)
    data = {"output": (("probe", "time", "neuron"), y.numpy(), meta("output")),
            "max_real_jacobian": (("probe",), final.numpy(), meta("max_real_jacobian")),
            "input": (("probe", "interval", "input_neuron"), x.numpy(), meta("input"))}
    if hidden:
        data["hidden_rate"] = (("probe", "time", "hidden_neuron"), h.numpy(), meta("hidden_rate"))
    per = n // circuit.steps
    coords = {"probe": np.arange(x.shape[0]), "time": ("time", index * circuit.dt, meta("time")),
              "interval_start": ("interval", np.arange(circuit.steps) * per * circuit.dt, meta("interval_start")),
              **_neuron_coords(circuit, "output", "neuron"), **_neuron_coords(circuit, "input", "input_neuron")}
    if hidden:
        coords.update(_neuron_coords(circuit, "hidden", "hidden_neuron"))
    attrs = {"circuit": circuit.to_toml(), "integrator": "expm" if circuit.nonlinearity == "linear" else "rk4",
             "dt": float(circuit.dt), "duration": float(circuit.duration), "time_units": "s",
             **_schema.versions()}
    return xr.Dataset(data, coords=coords, attrs=attrs)


def _weights(circuit: Circuit, weights: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    if not isinstance(weights, Mapping):
        raise ParameterError(f"The 'weights' parameter must be a dict weight name -> array (n_post, n_pre). Got "
                             f"{type(weights).__name__}.")
    missing = [k for k in circuit.weight_names if k not in weights]
    if missing:
        raise ParameterError(f"The 'weights' parameter lacks weights {missing} of circuit {circuit.name!r}.")
    out = {}
    for name in circuit.weight_names:
        value = weights[name]
        value = value.detach() if hasattr(value, "detach") else np.asarray(value, dtype=np.float64)
        t = torch.as_tensor(value, dtype=DTYPE)
        if tuple(t.shape) != circuit.shape(name):
            raise ParameterError(f"Weight {name!r} must have shape {circuit.shape(name)} (n_post, n_pre). Got "
                                 f"{tuple(t.shape)} instead.")
        out[name] = t
    return out


def _neuron_coords(circuit: Circuit, role: str, dim: str) -> dict[str, tuple]:
    names = [r.name for r in circuit.regions if r.role == role]
    regions = np.array([n for n in names for _ in range(circuit.region[n].size)], dtype=str)
    within = np.array([i for n in names for i in range(circuit.region[n].size)], dtype=np.int64)
    prefix = "" if dim == "neuron" else f"{role}_"
    return {dim: np.arange(regions.size), f"{prefix}region": (dim, regions),
            f"{prefix}index_in_region": (dim, within), **name_coords(circuit, dim, names)}
