"""Checked inputs of response fitting: the weights before learning, the probes, the recordings and their noise.

Every refusal is one :class:`~neurosubset._checks.ParameterError` line naming the field (``weights['CA3->CA1']``,
``responses['CA1']``, ``noise['CA1']``, ``probes``) with what was given and what is allowed.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from .._checks import ParameterError, check_int, check_names, check_real
from ..circuit import Circuit
from ..dynamics.sparse_map import dense_weights
from .rates import n_times


@dataclass(frozen=True)
class Recording:
    """Probes and the responses recorded on them (numpy float64).

    Attributes
    ----------
    probes : numpy.ndarray
        ``(probe, n_in)`` or ``(probe, steps, n_in)`` (discrete dynamics).
    responses : dict
        Region -> ``(probe, size)``, or ``(probe, steps, size)`` when ``time``.
    noise : dict or None
        Region -> ``(size,)`` noise SD per neuron, in the responses' units (None: noise-free).
    time : bool
        Responses recorded at every step of a discrete circuit (else at the last step, or at the steady state).
    """

    probes: np.ndarray
    responses: dict[str, np.ndarray]
    noise: dict[str, np.ndarray] | None
    time: bool

    @property
    def m(self) -> int:
        """Number of probes."""
        return int(self.probes.shape[0])

    @property
    def regions(self) -> list[str]:
        """Recorded regions, in the order given."""
        return list(self.responses)

    def take(self, rows: np.ndarray) -> Recording:
        """The recording restricted to probes ``rows``."""
        return Recording(self.probes[rows], {r: v[rows] for r, v in self.responses.items()}, self.noise, self.time)

    @property
    def values(self) -> int:
        """Number of recorded values (probes x steps x neurons)."""
        return int(sum(v.size for v in self.responses.values()))


def check_weights(circuit: Circuit, weights) -> dict[str, np.ndarray]:
    """The weights before learning as float64 arrays, one per projection (numpy, torch, or one trial of a sparse
    fit's :class:`~neurosubset.SparseWeights`, scipy.sparse matrices made dense).

    Raises
    ------
    ParameterError
        Not a mapping, a projection missing, an unknown name, a wrong shape, a non-finite value, or a non-zero
        value where the circuit has no synapse.
    """
    if not isinstance(weights, Mapping):
        raise ParameterError(f"The 'weights' parameter must be a mapping of weight name -> array (n_post, n_pre). "
                             f"Got {type(weights).__name__}.")
    weights = dense_weights({"weights": weights}, caller="A recording's weights")["weights"]  # one sparse trial
    missing = [k for k in circuit.weight_names if k not in weights]
    if missing:
        raise ParameterError(f"The 'weights' parameter lacks weight(s) {missing} of circuit {circuit.name!r} (one "
                             f"array (n_post, n_pre) per projection: {list(circuit.weight_names)}).")
    check_names("weights", weights, circuit.weight_names, what="Weight")
    out = {}
    for name in circuit.weight_names:
        arr = np.asarray(weights[name], dtype=np.float64)
        if arr.shape != circuit.shape(name):
            raise ParameterError(f"weights[{name!r}] must have shape {circuit.shape(name)} (n_post, n_pre). Got "
                                 f"{arr.shape} instead.")
        if not np.isfinite(arr).all():
            raise ParameterError(f"weights[{name!r}] holds {int((~np.isfinite(arr)).sum())} non-finite value(s).")
        absent = (arr != 0) & ~circuit.structure[name]
        if absent.any():
            i, j = np.argwhere(absent)[0]
            raise ParameterError(f"weights[{name!r}] is non-zero at {int(absent.sum())} synapse(s) that circuit "
                                 f"{circuit.name!r} does not have, e.g. ({i}, {j}); absent synapses must be 0.")
        out[name] = arr
    return out


def check_recording(circuit: Circuit, probes, responses, noise=None) -> Recording:
    """Validate probes, responses and noise against ``circuit``.

    Parameters
    ----------
    circuit : Circuit
    probes : array-like
        ``(probe, n_in)``, or ``(probe, steps, n_in)`` for discrete dynamics.
    responses : dict
        Region (hidden or output) -> ``(probe, size)``; ``(probe, time, size)`` records every step of a discrete
        circuit or every read-out time of a continuous one (all regions alike).
    noise : float, dict or None
        Noise SD of every recorded neuron (a positive float), or region -> positive float or ``(size,)`` array,
        one entry per recorded region.

    Raises
    ------
    ParameterError
        One line naming the field.
    """
    tail = circuit.probe_shape(1)[1:]
    probes = np.asarray(probes, dtype=np.float64)
    if probes.ndim != len(tail) + 1 or probes.shape[1:] != tail or probes.shape[0] < 1:
        raise ParameterError(f"The 'probes' parameter must have shape (m, {', '.join(map(str, tail))}) for circuit "
                             f"{circuit.name!r}, m >= 1. Got {probes.shape} instead.")
    if not np.isfinite(probes).all():
        raise ParameterError("The 'probes' parameter holds non-finite values.")
    if not isinstance(responses, Mapping) or not responses:
        raise ParameterError(f"The 'responses' parameter must be a non-empty mapping of region -> array (probe[, "
                             f"time], neuron). Got {responses!r:.80}.")
    recordable = [r.name for r in circuit.regions if r.role != "input"]
    check_names("responses", responses, list(circuit.region), what="Region")
    m, out, shapes = probes.shape[0], {}, set()
    for region, value in responses.items():
        if circuit.region[region].role == "input":
            raise ParameterError(f"responses[{region!r}]: {region!r} is an input region (its activity is the probes);"
                                 f" record one of {recordable}.")
        arr = np.asarray(value, dtype=np.float64)
        size = circuit.region[region].size
        allowed = [(m, size)] + ([(m, n_times(circuit), size)] if circuit.dynamics.sequences
                                 else [])
        if arr.shape not in allowed:
            raise ParameterError(f"responses[{region!r}] must have shape {' or '.join(map(str, allowed))} "
                                 f"((probe{', time' if len(allowed) > 1 else ''}, neuron) for {m} probes and "
                                 f"{size} neurons). Got {arr.shape} instead.")
        if not np.isfinite(arr).all():
            raise ParameterError(f"responses[{region!r}] holds non-finite values.")
        shapes.add(arr.ndim)
        out[region] = arr
    if len(shapes) > 1:
        raise ParameterError("The 'responses' parameter mixes arrays with and without a time dim; record every "
                             "region either at every step (probe, time, neuron) or at the last (probe, neuron).")
    return Recording(probes, out, _check_noise(circuit, noise, list(out)), shapes == {3})


def _check_noise(circuit: Circuit, noise, regions: list[str]) -> dict[str, np.ndarray] | None:
    if noise is None:
        return None
    if not isinstance(noise, Mapping):
        value = check_real("noise", noise, low=0.0, low_open=True)
        return {r: np.full(circuit.region[r].size, value) for r in regions}
    check_names("noise", noise, regions, what="Recorded region")
    out = {}
    for r in regions:
        if r not in noise:
            raise ParameterError(f"The 'noise' parameter lacks recorded region {r!r}; give the noise SD of every "
                                 f"recorded region ({regions}).")
        size = circuit.region[r].size
        arr = np.broadcast_to(np.asarray(noise[r], dtype=np.float64), (size,)) if np.ndim(noise[r]) in (0, 1) \
            and np.size(noise[r]) in (1, size) else None
        if arr is None:
            raise ParameterError(f"noise[{r!r}] must be a number or an array of {size} per-neuron SDs. Got shape "
                                 f"{np.shape(noise[r])}.")
        if not (np.isfinite(arr) & (arr > 0)).all():
            raise ParameterError(f"noise[{r!r}] must be positive and finite (an SD per neuron). Got {arr.min()}.")
        out[r] = arr.copy()
    return out


def holdout_rows(m: int, holdout, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Fit and held-out probe indices: ``holdout`` probes drawn at random from ``SeedSequence(seed, (0x401D,))``.

    ``None`` holds out a quarter of the probes (at least 1 when ``m >= 2``); the fit keeps at least one.
    """
    k = (m // 4 if m >= 4 else min(1, m - 1)) if holdout is None else check_int("holdout", holdout, minimum=0,
                                                                                maximum=m - 1)
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0x401D,)))
    held = np.sort(rng.choice(m, size=k, replace=False)) if k else np.zeros(0, dtype=int)
    return np.setdiff1d(np.arange(m), held), held
