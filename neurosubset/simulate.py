"""Rates of any circuit on given weights and probes: :func:`simulate` returns one Dataset layout for every dynamics.

The equations are the circuit's dynamics object's (:mod:`neurosubset.dynamics`, the maps the benchmark fits):
the fixed point of steady circuits, the layers of feed-forward ones, the steps of discrete ones, the exact matrix
exponential or RK4 trajectory of continuous ones (times in seconds), all probes in one batch.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import xarray as xr

from . import _schema
from ._checks import ParameterError, check_names
from ._schema import meta, response_meta, var_name
from .circuit import Circuit
from .connectivity import name_coords
from .dynamics import DTYPE
from .dynamics.sparse_map import dense_weights

__all__ = ["simulate"]


def simulate(circuit: Circuit, weights: Mapping[str, Any], probes: Any, *, regions: Sequence[str] | None = None,
             times: Sequence[float] | str | None = None, hidden: bool = False) -> xr.Dataset:
    """The rates of ``circuit`` with ``weights`` on ``probes``: its outputs and the rates of any region.

    Parameters
    ----------
    circuit : Circuit
        Any dynamics (see :mod:`neurosubset.dynamics`).
    weights : dict
        Weight name -> array ``(n_post, n_pre)`` (numpy or torch; dimensionless), one circuit; or one trial of a
        sparse fit's :class:`~neurosubset.SparseWeights` (``{k: v[i] for k, v in res.student.items()}``, scipy.sparse
        matrices), made dense (refused in one line where that would not fit in memory).
    probes : array-like
        ``(probe, n_in)``, or ``(probe, steps, n_in)`` for sequence dynamics (discrete, continuous: the input of
        each step / interval).
    regions : sequence of str, optional
        Non-input regions whose rates are returned as ``rate_<REGION>`` (default: every non-input region).
    times : sequence of float, "all" or None
        Dynamics with time only. Continuous: read-out times (s, increasing, on the ``dt`` grid, in
        ``(0, duration]``), ``"all"`` every ``dt`` step, ``None`` the circuit's ``readout`` times. Discrete: steps
        (``1..steps``), ``"all"`` or ``None`` every step.
    hidden : bool
        Also ``hidden_rate`` (all hidden regions concatenated; kept for continuous-time users of earlier versions).

    Returns
    -------
    xarray.Dataset
        ``output (probe[, time], neuron)``: output regions concatenated; ``rate_<REGION> (probe[, time],
        <REGION>_neuron)`` per region (the stem as in result files, e.g. ``rate_CA3``); ``input`` (the probes).
        ``time`` (steps, or s for continuous circuits) only where the dynamics has time. Coords ``region`` and
        ``index_in_region`` per neuron (and neuron names where the circuit has them). Attrs: the circuit as TOML,
        its dynamics, versions, and what the dynamics adds (continuous: the integrator, ``dt``, ``duration``,
        ``max_real_jacobian (probe)``).

    Examples
    --------
    >>> c = Circuit.from_toml("circuits/ei_isn.toml")                                    # doctest: +SKIP
    >>> w = c.sample_weights(np.random.default_rng(0))                                    # doctest: +SKIP
    >>> ds = simulate(c, w, c.sample_probes(3, np.random.default_rng(1)))                 # doctest: +SKIP
    >>> ds.rate_E.sel(probe=0).plot()                                                     # doctest: +SKIP
    """
    if not isinstance(circuit, Circuit):
        raise TypeError(f"The 'circuit' parameter must be a neurosubset.Circuit. Got {type(circuit).__name__}.")
    if not isinstance(hidden, (bool, np.bool_)):
        raise ParameterError(f"The 'hidden' parameter must be True or False. Got {hidden!r} instead.")
    dyn = circuit.dynamics
    non_input = [r.name for r in circuit.regions if r.role != "input"]
    regions = non_input if regions is None else list(regions)
    check_names("regions", regions, non_input, what="Non-input region")
    w = _weights(circuit, weights)
    x = torch.as_tensor(_finite_array("probes", probes), dtype=DTYPE)
    shape = circuit.probe_shape(1)[1:]
    if x.dim() != len(shape) + 1 or tuple(x.shape[1:]) != shape:
        dims = "(probe, steps, n_in)" if len(shape) == 2 else "(probe, n_in)"
        raise ParameterError(f"The 'probes' parameter must have shape (probe, {', '.join(map(str, shape))}) {dims} "
                             f"for circuit {circuit.name!r}. Got {tuple(x.shape)} instead.")
    timed = dyn.sequences
    if times is not None and not timed:
        raise ParameterError(f"The 'times' parameter applies to dynamics with time; circuit {circuit.name!r} has "
                             f"{dyn.name!r} dynamics. Leave it None.")
    hid = [r.name for r in circuit.regions if r.role == "hidden"]
    wanted = list(dict.fromkeys([*regions, *circuit.output_regions, *(hid if hidden else [])]))
    with torch.no_grad():
        rates, time_values = dyn.simulate(circuit, w, x, wanted, times)
    _warn_non_finite(circuit, rates)
    lead = ("probe", "time") if timed else ("probe",)
    cat = (lambda names: torch.cat([rates[r] for r in names], dim=-1).numpy() if names
           else np.zeros(tuple(rates[wanted[0]].shape[:-1]) + (0,)))
    data = {"output": ((*lead, "neuron"), cat(list(circuit.output_regions)), meta("output")),
            "input": (("probe", "interval", "input_neuron") if timed else ("probe", "input_neuron"), x.numpy(),
                      meta("input"))}
    coords = {"probe": ("probe", np.arange(x.shape[0]), meta("probe")), **_neuron_coords(circuit, "output", "neuron"),
              **_neuron_coords(circuit, "input", "input_neuron")}
    for r in regions:
        stem = var_name(r)
        data[f"rate_{stem}"] = ((*lead, f"{stem}_neuron"), rates[r].numpy(), response_meta(r, "rate", units="1"))
        coords.update(name_coords(circuit, f"{stem}_neuron", [r]))
    if hidden:
        data["hidden_rate"] = ((*lead, "hidden_neuron"), cat(hid), meta("hidden_rate"))
        coords.update(_neuron_coords(circuit, "hidden", "hidden_neuron"))
    if timed:
        coords["time"] = ("time", time_values, meta("time" if dyn.time_units(circuit) == "s" else "time_step"))
    extra_vars, extra_coords, extra_attrs = dyn.simulate_extras(circuit, w, x, rates, time_values)
    data.update(extra_vars)
    coords.update(extra_coords)
    attrs = {"circuit": circuit.to_toml(), "circuit_name": circuit.name, "dynamics": dyn.name,
             "time_units": dyn.time_units(circuit) if timed else "", **extra_attrs, **_schema.versions()}
    return xr.Dataset(data, coords=coords, attrs=attrs)


def _weights(circuit: Circuit, weights: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    if not isinstance(weights, Mapping):
        raise ParameterError(f"The 'weights' parameter must be a dict weight name -> array (n_post, n_pre). Got "
                             f"{type(weights).__name__}.")
    # one trial of a sparse fit (scipy.sparse, SparseWeights' w[i]) made dense: the dynamics' maps are dense (block
    # matrices, I - W, its factor, working copies). Calibrated on the peak RSS of the call (a steady circuit's sparse
    # student, p = 0.02): 11.9 n^2 float64 at n = 2,010, 13.6 at 4,010, the weights included; this counts 13 plus
    # the weights
    n = sum(r.size for r in circuit.regions if r.role != "input")
    weights = dense_weights({"weights": weights}, caller="simulate", square=13 * n * n)["weights"]
    missing = [k for k in circuit.weight_names if k not in weights]
    if missing:
        raise ParameterError(f"The 'weights' parameter lacks weights {missing} of circuit {circuit.name!r}.")
    out = {}
    for name in circuit.weight_names:
        value = weights[name]
        value = _finite_array(f"weights[{name!r}]", value.detach().numpy() if hasattr(value, "detach") else value)
        t = torch.as_tensor(value, dtype=DTYPE)
        if tuple(t.shape) != circuit.shape(name):
            raise ParameterError(f"Weight {name!r} must have shape {circuit.shape(name)} (n_post, n_pre). Got "
                                 f"{tuple(t.shape)} instead.")
        out[name] = t
    return out


def _finite_array(field: str, value: Any) -> np.ndarray:
    """``value`` as a float64 array, or :class:`ParameterError` (one line) if it is complex, not numeric or holds a
    NaN / inf (a NaN probe or an inf weight gave NaN rates without a flag)."""
    try:
        raw = np.asarray(value)
    except (TypeError, ValueError) as exc:
        raise ParameterError(f"The {field!r} parameter must be an array of real numbers ({exc}).") from None
    if np.iscomplexobj(raw):
        raise ParameterError(f"The {field!r} parameter must be real; it is complex ({raw.dtype}). Pass its real "
                             f"part explicitly if that is what you mean.")
    try:
        out = raw.astype(np.float64)
    except (TypeError, ValueError):
        raise ParameterError(f"The {field!r} parameter must be an array of real numbers. Got dtype "
                             f"{raw.dtype}.") from None
    bad = ~np.isfinite(out)
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ParameterError(f"The {field!r} parameter must be finite; {int(bad.sum())} value(s) are NaN or inf "
                             f"(the first at index {where}: {out[where]}).")
    return out


def _warn_non_finite(circuit: Circuit, rates: Mapping[str, torch.Tensor]) -> None:
    """Warn (:class:`NonFiniteOutputWarning`, naming the probes) when finite weights and probes gave NaN / inf rates
    (the dynamics overflowed: a gain or a time constant beyond the circuit's stability)."""
    import warnings

    from ._checks import NonFiniteOutputWarning

    bad = set()
    for value in rates.values():
        flat = value.reshape(value.shape[0], -1)
        bad |= set(torch.nonzero(~torch.isfinite(flat).all(dim=1)).flatten().tolist())
    if bad:
        shown = sorted(bad)
        warnings.warn(f"simulate: the rates of {len(shown)} probe(s) of circuit {circuit.name!r} overflowed to "
                      f"NaN/inf (probes {shown[:10]}{' ...' if len(shown) > 10 else ''}): the dynamics diverge with "
                      f"these weights; lower the gains (or check the circuit's stability).",
                      NonFiniteOutputWarning, stacklevel=3)


def _neuron_coords(circuit: Circuit, role: str, dim: str) -> dict[str, tuple]:
    names = [r.name for r in circuit.regions if r.role == role]
    regions = np.array([n for n in names for _ in range(circuit.region[n].size)], dtype=str)
    within = np.array([i for n in names for i in range(circuit.region[n].size)], dtype=np.int64)
    prefix = "" if dim == "neuron" else f"{role}_"
    return {dim: (dim, np.arange(regions.size), meta(dim)), f"{prefix}region": (dim, regions, meta("neuron_region")),
            f"{prefix}index_in_region": (dim, within, meta("index_in_region")), **name_coords(circuit, dim, names)}
