"""Rates of any region as functions of the weights, and the batched map from plastic values to recorded responses.

:func:`region_rates` evaluates the activity of named regions (hidden or output) with the equations of
:func:`neurosubset.dynamics.forward`; :class:`RecordedMap` is the problem batch the solvers take (the protocol of
:class:`neurosubset.dynamics.PlasticMap`: ``value_and_jacobian``, ``__call__``, ``jacobian``, ``subset``,
``size``, ``weights``) with the recorded responses, noise-normalised, as its outputs and one problem per candidate
set of plastic synapses.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from ..allocation import Allocation
from ..circuit import Circuit
from ..dynamics import DTYPE, assemble
from ..dynamics.adjoint import FIXED_POINT, fixed_point_jacobian, plastic_layout
from ..dynamics.blocks import selector
from ..dynamics.plastic_map import vanishing_second_difference

def n_times(circuit: Circuit) -> int:
    """Length of a response's time dim: the steps of a discrete circuit, the read-out times of a continuous one."""
    return circuit.dynamics.recorded_times(circuit)


def region_rates(circuit: Circuit, weights: Mapping[str, torch.Tensor], probes: torch.Tensor,
                 regions: Sequence[str], *, time: bool = False) -> dict[str, torch.Tensor]:
    """Activity of ``regions`` (hidden or output) of ``circuit`` with ``weights`` on ``probes``.

    Parameters
    ----------
    circuit : Circuit
    weights : dict
        Weight name -> tensor ``(..., n_post, n_pre)``.
    probes : torch.Tensor
        ``(..., m, n_in)``, or ``(..., m, steps, n_in)`` for sequence dynamics.
    regions : list of str
        Non-input region names.
    time : bool
        Every time point of the dynamics (:meth:`~neurosubset.dynamics.Dynamics.recorded_times`: the steps of a
        discrete circuit, the read-out times of a continuous one), else the last one, which is what
        :func:`~neurosubset.dynamics.forward` reads out.

    Returns
    -------
    dict
        Region -> ``(..., m, size)``, or ``(..., m, times, size)`` with ``time``. Units: the circuit's rate units.
        Output regions equal the matching columns of :func:`~neurosubset.dynamics.forward`.
    """
    return circuit.dynamics.rates(circuit, weights, probes, regions, time=time)


class RecordedMap:
    """``theta -> R(theta)``: the recorded responses of one problem per candidate, noise-normalised and flattened.

    Every problem shares the weights before learning ``w0`` and the probes; problem ``p`` may change only the
    synapses of its candidate: its effective plastic values are ``mask_p * theta + (1 - mask_p) * w0`` over the
    union of all candidates' synapses, so the values outside its candidate have no effect (zero Jacobian columns)
    and report their value before learning.

    Parameters
    ----------
    circuit : Circuit
    union : Allocation
        Every synapse plastic in at least one candidate (``theta`` has its ``M = union.size`` entries).
    w0 : dict
        Weight name -> ``(n_post, n_pre)`` tensor, the weights before learning.
    probes : torch.Tensor
        ``(m, n_in)`` or ``(m, steps, n_in)``.
    regions : list of str
        Recorded regions, in the order of the flattened responses.
    time : bool
        Responses at every step (discrete dynamics), see :func:`region_rates`.
    mask : torch.Tensor
        ``(problem, M)`` float64, 1 where the synapse belongs to the problem's candidate.
    scale : torch.Tensor
        ``(E,)`` 1 / noise SD of each flattened response (ones without noise).

    Notes
    -----
    Outputs ``(problem, E)``, ``E = m * sum(steps * size)``, probe-major, then region, then step, then neuron.
    """

    closed_form = False  # the Jacobian comes from torch.func (multistart then keeps autograd on)

    def __init__(self, circuit: Circuit, union: Allocation, w0: Mapping[str, torch.Tensor], probes: torch.Tensor,
                 regions: Sequence[str], time: bool, mask: torch.Tensor, scale: torch.Tensor):
        self.circuit, self.probes, self.regions, self.time = circuit, probes, list(regions), time
        self.index = {k: torch.as_tensor(v, dtype=torch.long) for k, v in union.indices.items()}
        masks = {k: torch.from_numpy(union.masks[k].copy()) for k in circuit.weight_names}
        self.base = {k: w0[k].masked_fill(masks[k], 0.0) for k in circuit.weight_names}
        self.before = torch.cat([w0[k].flatten()[self.index[k]] for k in circuit.weight_names])
        self.mask, self.scale = mask, scale
        self.size = union.size
        self._layout = None
        if circuit.nonlinearity == "linear" and circuit.dynamics.fixed_point and not time:
            # r = A r + B x over all non-input neurons: the closed-form adjoint of dynamics.PlasticMap, read out at
            # the recorded neurons instead of the outputs
            select = torch.cat([selector(circuit, FIXED_POINT, r, DTYPE) for r in self.regions], dim=0)
            self._layout = {**plastic_layout(circuit, union, FIXED_POINT), "select": select}

    def effective(self, theta: torch.Tensor) -> torch.Tensor:
        """``(problem, M)`` values in effect: ``theta`` on each candidate's synapses, ``w0`` elsewhere."""
        return self.mask * theta + (1.0 - self.mask) * self.before

    def weights(self, theta: torch.Tensor) -> dict[str, torch.Tensor]:
        """Weight name -> ``(problem, n_post, n_pre)`` for ``theta`` ``(problem, M)``."""
        out = assemble(self.base, self.index, self.effective(theta))
        lead = theta.shape[:-1]  # weights without plastic entries come back unbatched: every block needs the dims
        return {k: v if v.shape[:-2] == lead else v.expand(lead + v.shape[-2:]) for k, v in out.items()}

    def rates(self, theta: torch.Tensor, probes: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Region -> ``(problem, m[, steps], size)`` responses (not noise-normalised), on ``probes`` if given."""
        return region_rates(self.circuit, self.weights(theta), self.probes if probes is None else probes,
                            self.regions, time=self.time)

    def __call__(self, theta: torch.Tensor) -> torch.Tensor:
        """``R(theta) / noise`` of shape ``(problem, E)``."""
        return flatten(self.rates(theta), self.regions, self.time) * self.scale

    def subset(self, select: torch.Tensor) -> RecordedMap:
        """The map over problems ``select`` (long ``(problem,)``, repeats allowed)."""
        out = object.__new__(RecordedMap)
        out.__dict__.update(self.__dict__)
        out.mask = self.mask[select]
        return out

    def value_and_jacobian(self, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``R(theta)`` ``(problem, E)`` and ``dR/dtheta`` ``(problem, E, M)``."""
        if self._layout is None or not self.size:
            return self(theta), self.jacobian(theta)
        return self._closed_form(theta)

    def _closed_form(self, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Linear steady / feed-forward circuits: ``dr/dW_ij = (I - A)^-1 e_i r_j`` (the adjoint), masked."""
        n = theta.shape[0]
        probes = self.probes.expand((n,) + self.probes.shape)
        out, jac = fixed_point_jacobian(self.circuit, self._layout, self.weights(theta), probes, with_outputs=True)
        return out * self.scale, jac * self.scale.unsqueeze(-1) * self.mask.unsqueeze(-2)

    def jacobian(self, theta: torch.Tensor, *, method: str = "auto") -> torch.Tensor:
        """``dR/dtheta`` ``(problem, E, M)``, exact (never finite differences): the closed-form adjoint for linear
        steady and feed-forward circuits; otherwise torch.func, forward mode (one JVP per plastic value) when
        ``M <= E``, reverse mode (one VJP per response) otherwise (``method="autograd"`` forces torch.func)."""
        n, size = theta.shape
        e = self.scale.numel()
        if n == 0 or size == 0:
            return theta.new_zeros((n, e, size))
        if self._layout is not None and method == "auto":
            return self._closed_form(theta)[1]
        if size <= e:
            basis = torch.eye(size, dtype=theta.dtype).unsqueeze(1).expand(size, n, size)
            cols = torch.func.vmap(lambda v: torch.func.jvp(self, (theta,), (v,))[1])(basis)
            return cols.permute(1, 2, 0)
        _, vjp = torch.func.vjp(self, theta)
        basis = torch.eye(e, dtype=theta.dtype).unsqueeze(1).expand(e, n, e)
        return torch.func.vmap(vjp)(basis)[0].permute(1, 0, 2)

    def affine(self, sigma: np.ndarray, seed: int) -> np.ndarray:
        """``(problem,)`` bool: whether each problem's responses are affine in its candidate's values.

        ReLU: affine iff every synapse of the candidate targets an output region (read-outs are linear and feed
        nothing back; anything upstream passes a ReLU). Linear dynamics: the responses are polynomial (rational
        for steady) in the weights, affine iff their second difference along a random direction vanishes at random
        points (two points, as :func:`neurosubset.dynamics.is_affine`).
        """
        n = self.mask.shape[0]
        if self.circuit.nonlinearity == "relu":
            to_out = torch.cat([torch.full((self.index[k].numel(),), self.circuit.region[
                self.circuit.projection[k].post].role == "output") for k in self.circuit.weight_names])
            return ((self.mask > 0) <= to_out).all(-1).numpy() if self.size else np.ones(n, dtype=bool)
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0xAFF,)))
        ok = np.ones(n, dtype=bool)
        for _ in range(2):
            a, d = (torch.as_tensor(rng.standard_normal((n, self.size)) * sigma, dtype=DTYPE) for _ in range(2))
            ok &= vanishing_second_difference(self, a, d).numpy()  # NaN (a singular draw): not affine
        return ok


def flatten(rates: Mapping[str, torch.Tensor], regions: Sequence[str], time: bool = False) -> torch.Tensor:
    """Region -> ``(..., m[, steps], size)`` concatenated to ``(..., E)``, probe-major (then region, step, neuron)."""
    parts = [rates[r].flatten(-2) if time else rates[r] for r in regions]
    return torch.cat(parts, dim=-1).flatten(-2)
