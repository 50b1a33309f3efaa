"""The Hawkes mapping: the linear form ``(A, B)`` of a rate circuit, intensity fluctuations and baseline rates.

``A`` holds the weights among non-input neurons (hidden and output regions, declaration order), ``B`` those from
the inputs; the stationary rates of the linear Poisson network solve ``r = mu + A r + B nu``
(see :mod:`neurosubset.spiking`).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ..circuit import Circuit
from ..dynamics import Feedforward, Steady
from ..dynamics.blocks import block_matrix
from ..dynamics.sparse_map import dense_weights
from .settings import SpikingSettingsError

SPIKING_DYNAMICS = tuple(d.name for d in (Steady(), Feedforward()) if d.spiking)  # names, for messages
_NEURONS = ("hidden", "output")  # the simulated (non-input) neurons: roles of the rows and columns of A


def _check_circuit(circuit: Circuit) -> None:
    if not isinstance(circuit, Circuit):
        raise TypeError(f"The 'circuit' parameter must be a neurosubset.Circuit. Got {type(circuit).__name__}.")
    if not circuit.dynamics.spiking:
        raise SpikingSettingsError(
            f"The spiking check maps linear rate circuits onto linear Poisson networks; circuit {circuit.name!r} "
            f"has dynamics {circuit.dynamics.name!r}. Expected one of {list(SPIKING_DYNAMICS)}.")
    if circuit.nonlinearity != "linear":
        raise SpikingSettingsError(
            f"The spiking check needs nonlinearity 'linear' (the Hawkes mapping is linear); circuit "
            f"{circuit.name!r} has {circuit.nonlinearity!r}. Expected 'linear'.")


def _neurons(circuit: Circuit) -> int:
    """Simulated (non-input) neurons: the size of ``A``."""
    return sum(r.size for r in circuit.regions if r.role in _NEURONS)


def _check_weights(circuit: Circuit, weights: Mapping[str, Any], field: str) -> dict[str, np.ndarray]:
    # one trial of a sparse fit (scipy.sparse, SparseWeights' w[i]) made dense: the mapping is dense by nature (A
    # and its eigenvalues, (I - A)^-1); refused in one line where A and its working copies would not fit in memory
    weights = dense_weights({field: weights}, caller="The spiking check", square=4 * _neurons(circuit) ** 2,
                            error=SpikingSettingsError)[field]
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
        Weight name -> array ``(n_post, n_pre)`` (dimensionless; numpy, torch, or one trial of a sparse fit's
        :class:`~neurosubset.SparseWeights`, a ``scipy.sparse`` matrix, made dense).

    Returns
    -------
    A : numpy.ndarray
        ``(n_neuron, n_neuron)``: non-input regions in declaration order.
    B : numpy.ndarray
        ``(n_neuron, n_in)``: input regions in declaration order.
    """
    _check_circuit(circuit)
    weights = _check_weights(circuit, weights, "weights")
    weights = {k: np.asarray(v, dtype=np.float64) for k, v in weights.items()}
    return block_matrix(circuit, weights, _NEURONS, _NEURONS), block_matrix(circuit, weights, _NEURONS, "input")


def _output_index(circuit: Circuit) -> np.ndarray:
    rows = circuit.slices(_NEURONS)
    return np.concatenate([np.arange(rows[o].start, rows[o].stop) for o in circuit.output_regions])


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


def _cell_label(circuit: Circuit, i: int) -> str:
    for name, rows in circuit.slices(_NEURONS).items():
        if rows.start <= i < rows.stop:
            return f"{name}[{i - rows.start}]"
    return str(i)  # pragma: no cover
