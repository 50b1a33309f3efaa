"""The forward map of any circuit and the plastic-parameter map the solvers and theory evaluate (torch, float64).

Shapes use named dims: ``(..., m, n_in)`` probes (``(..., m, steps, n_in)`` for sequence dynamics), weights
``(..., n_post, n_pre)``, outputs ``(..., m, n_out)``. All functions accept extra leading batch dims (``trial``,
``restart``), so one call evaluates many independent circuits at once. The equations are the circuit's
:attr:`~neurosubset.Circuit.dynamics` object's; this module adds the checks, the student's weights
(:func:`assemble`), the batched map ``theta -> F(theta)`` (:class:`PlasticMap`) and the affine test.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np
import torch

from .._checks import ParameterError, check_choice

if TYPE_CHECKING:
    from ..allocation import Allocation
    from ..circuit import Circuit

DTYPE = torch.float64
_AFFINE_RTOL = 1e-9  # second differences of an affine map are rounding noise (~1e-15); others are O(1)


def forward(circuit: Circuit, weights: Mapping[str, torch.Tensor], probes: torch.Tensor) -> torch.Tensor:
    """Outputs of ``circuit`` with ``weights`` on ``probes``.

    Parameters
    ----------
    circuit : Circuit
    weights : dict
        Weight name -> tensor ``(..., n_post, n_pre)``.
    probes : torch.Tensor
        ``(..., m, n_in)``, or ``(..., m, steps, n_in)`` for discrete dynamics.

    Returns
    -------
    torch.Tensor
        ``(..., m, n_out)``: output regions concatenated in declaration order.
    """
    _check_forward(circuit, weights, probes)
    return circuit.dynamics.forward(circuit, weights, probes)


def _check_forward(circuit: Circuit, weights: Mapping[str, torch.Tensor], probes: torch.Tensor) -> None:
    """Raise :class:`ParameterError` unless ``weights`` names every weight and ``probes`` ends in the probe shape."""
    missing = [k for k in circuit.weight_names if k not in weights]
    if missing:
        raise ParameterError(f"The 'weights' parameter lacks weights {missing} of circuit {circuit.name!r}.")
    tail = circuit.probe_shape(1)[1:]
    if tuple(probes.shape[-len(tail):]) != tail or probes.dim() < len(tail) + 1:
        raise ParameterError(f"The 'probes' parameter must have shape (..., m, {', '.join(map(str, tail))}) for "
                             f"circuit {circuit.name!r}. Got {tuple(probes.shape)} instead.")


def assemble(frozen: Mapping[str, torch.Tensor], index: Mapping[str, torch.Tensor],
             theta: torch.Tensor) -> dict[str, torch.Tensor]:
    """Student weights ``W = W_frozen + scatter(theta)``.

    Parameters
    ----------
    frozen : dict
        Weight name -> ``(..., n_post, n_pre)``, zero at plastic entries.
    index : dict
        Weight name -> long tensor of flat plastic indices (from :attr:`Allocation.indices`).
    theta : torch.Tensor
        ``(..., M)`` plastic values, concatenated in weight order.

    Returns
    -------
    dict
        Weight name -> ``(..., n_post, n_pre)``. Frozen entries are bit-identical to ``frozen``.
    """
    out, start = {}, 0
    for name, w in frozen.items():
        idx = index[name]
        if idx.numel() == 0:
            out[name] = w
            continue
        flat = w.flatten(-2)
        if flat.shape[:-1] != theta.shape[:-1]:
            lead = theta.shape[:-1] if len(theta.shape) > len(flat.shape) else flat.shape[:-1]
            flat = flat.expand(lead + flat.shape[-1:])
        flat = flat.index_add(-1, idx, theta[..., start:start + idx.numel()])
        out[name] = flat.unflatten(-1, w.shape[-2:])
        start += idx.numel()
    return out


class PlasticMap:
    """``theta -> F(theta)``: the stacked outputs of many student problems as functions of their plastic values.

    Parameters
    ----------
    circuit : Circuit
    alloc : Allocation
    frozen : dict
        Weight name -> ``(problem, n_post, n_pre)`` frozen weights (plastic entries are ignored, set to 0).
    probes : torch.Tensor
        ``(problem, m, n_in)`` or ``(problem, m, steps, n_in)``.

    Notes
    -----
    ``F`` has shape ``(problem, E)`` with ``E = m * n_out`` (probe-major).
    """

    def __init__(self, circuit: Circuit, alloc: Allocation, frozen: Mapping[str, torch.Tensor],
                 probes: torch.Tensor):
        self.circuit = circuit
        device = probes.device  # every tensor of the map lives where the probes do
        self.index = {k: torch.as_tensor(v, dtype=torch.long, device=device) for k, v in alloc.indices.items()}
        masks = {k: torch.from_numpy(v.copy()).to(device) for k, v in alloc.masks.items()}
        self.frozen = {k: frozen[k].masked_fill(masks[k], 0.0) for k in circuit.weight_names}
        self.probes = probes
        self.size = alloc.size
        # without a closed-form adjoint the Jacobian comes from autograd (or the dynamics' forward sensitivities)
        dyn = circuit.dynamics
        self._layout = dyn.adjoint_layout(circuit, alloc, hot=True) if dyn.closed_adjoint(circuit) else None
        if self._layout is not None and device.type != "cpu":
            self._layout = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in self._layout.items()}
        # the frozen part of the adjoint's system (steady circuits: [I - A_0 | B_0]), built at the first
        # value_and_jacobian and gathered by subset: an LM iteration then adds theta instead of assembling the blocks
        self._system: dict | None = None

    @property
    def closed_form(self) -> bool:
        """Whether :meth:`jacobian` uses the closed-form adjoint (linear circuits), i.e. needs no autograd."""
        return self._layout is not None

    def weights(self, theta: torch.Tensor) -> dict[str, torch.Tensor]:
        """Full student weights for ``theta`` ``(problem, M)``."""
        return assemble(self.frozen, self.index, theta)

    def __call__(self, theta: torch.Tensor, select: torch.Tensor | None = None) -> torch.Tensor:
        """``F(theta)`` of shape ``(problem, E)``; ``select`` (long) evaluates a subset of problems."""
        frozen, probes = self._subset(select)
        out = forward(self.circuit, assemble(frozen, self.index, theta), probes)
        return out.flatten(-2)

    def _subset(self, select):
        if select is None:
            return self.frozen, self.probes
        return {k: v[select] for k, v in self.frozen.items()}, self.probes[select]

    def subset(self, select: torch.Tensor) -> PlasticMap:
        """The map over problems ``select`` (long ``(problem,)``, repeats allowed), its tensors gathered once.

        An iterative solver works on a subset for many steps; gathering the frozen weights and probes once instead
        of at every evaluation keeps the per-step cost down.
        """
        out = object.__new__(PlasticMap)
        out.__dict__.update(self.__dict__)
        out.frozen, out.probes = self._subset(select)
        if self._system:  # built already: gathered with the rest (else built by the subset when it needs it)
            out._system = {**self._system, "system": self._system["system"][select]}
        return out

    def _frozen_system(self) -> dict | None:
        """The dynamics' frozen adjoint system over this map's problems (built once), or None where it keeps none."""
        if self._system is None:
            self._system = self.circuit.dynamics.adjoint_system(self.circuit, self._layout, self.frozen) or {}
        return self._system or None

    def value_and_jacobian(self, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``F(theta)`` ``(problem, E)`` and ``dF/dtheta`` ``(problem, E, M)`` together.

        For linear circuits both come from one pass of the closed-form adjoint (the outputs are a by-product of the
        presynaptic activity it computes); otherwise ``F`` is a plain forward pass beside the autograd Jacobian.
        """
        dyn = self.circuit.dynamics
        if dyn.tangent_jacobian(self.circuit):  # e.g. continuous nonlinear: forward sensitivities of the RK4 scheme
            return dyn.tangents(self.circuit, self.weights(theta), self.probes, self.index, self.size)
        if self._layout is None:
            return self(theta), self.jacobian(theta)
        system = self._frozen_system()
        if system is not None and tuple(theta.shape[:-1]) == tuple(system["system"].shape[:-2]):
            return dyn.system_jacobian(self.circuit, self._layout, system, theta, self.probes, with_outputs=True)
        return dyn.adjoint_jacobian(self.circuit, self._layout, assemble(self.frozen, self.index, theta),
                                    self.probes, with_outputs=True)

    def jacobian(self, theta: torch.Tensor, select: torch.Tensor | None = None, *, method: str = "auto",
                 max_bytes: float = 2.5e8) -> torch.Tensor:
        """``dF/dtheta`` of shape ``(problem, E, M)``, exact (never finite differences).

        Parameters
        ----------
        theta : torch.Tensor
            ``(problem, M)``.
        select : torch.Tensor, optional
            Long ``(problem,)``: which of the map's problems each row of ``theta`` belongs to.
        method : {"auto", "adjoint", "autograd"}
            ``"adjoint"`` (linear circuits; the default there): the closed form
            ``dy/dW_ij = sum_t G_t[:, i] u_t[j]`` with ``G_t`` the adjoint (output sensitivity to the drive of
            neuron ``i`` at step ``t``) and ``u_t`` the presynaptic activity, a few batched matmuls.
            ``"autograd"``: torch.func, forward mode (one JVP per plastic weight) when ``M <= E``, reverse mode
            (one VJP per output) otherwise, vmapped over basis directions and chunked over problems so that the
            tangents stay under ``max_bytes``.
        """
        frozen, probes = self._subset(select)
        check_choice("method", method, ("auto", "adjoint", "autograd"))
        dyn = self.circuit.dynamics
        if method == "auto" and dyn.tangent_jacobian(self.circuit):  # forward sensitivities (e.g. RK4's)
            return dyn.tangents(self.circuit, assemble(frozen, self.index, theta), probes, self.index, self.size)[1]
        if method == "auto":
            method = "adjoint" if self._layout is not None else "autograd"
        if method == "adjoint":
            if self._layout is None:
                raise ParameterError("method='adjoint' needs a linear circuit; use method='autograd'.")
            return dyn.adjoint_jacobian(self.circuit, self._layout, assemble(frozen, self.index, theta), probes)
        n, size = theta.shape
        e = probes.shape[1] * self.circuit.n_out
        if n == 0 or size == 0:
            return theta.new_zeros((n, e, size))
        width = min(size, e)
        per_problem = 8.0 * width * (sum(v[0].numel() for v in frozen.values()) + probes[0].numel() * 4 + e)
        chunk = max(1, int(max_bytes // per_problem))
        parts = []
        for a in range(0, n, chunk):
            sub_frozen = {k: v[a:a + chunk] for k, v in frozen.items()}
            sub_probes, th = probes[a:a + chunk], theta[a:a + chunk]

            def fn(t, sub_frozen=sub_frozen, sub_probes=sub_probes):
                return forward(self.circuit, assemble(sub_frozen, self.index, t), sub_probes).flatten(-2)

            if size <= e:
                basis = torch.eye(size, dtype=th.dtype, device=th.device).unsqueeze(1).expand(size, th.shape[0], size)
                cols = torch.func.vmap(lambda v, fn=fn, th=th: torch.func.jvp(fn, (th,), (v,))[1])(basis)
                parts.append(cols.permute(1, 2, 0))
            else:
                _, vjp = torch.func.vjp(fn, th)
                basis = torch.eye(e, dtype=th.dtype, device=th.device).unsqueeze(1).expand(e, th.shape[0], e)
                parts.append(torch.func.vmap(vjp)(basis)[0].permute(1, 0, 2))
        return torch.cat(parts)


def is_affine(circuit: Circuit, alloc: Allocation, *, seed: int = 0) -> bool:
    """Whether the outputs are affine in the plastic weights (for every value of the frozen ones).

    Where the dynamics decides from structure alone (:meth:`Dynamics.affine_by_structure`; ReLU: affine iff every
    plastic synapse targets an output region), that answer. Otherwise the outputs are smooth (polynomial, rational
    for steady) in the weights, so they are affine in the plastic ones iff their second difference along a random
    direction vanishes at random points (checked at two points; a non-affine polynomial vanishes there with
    probability 0).
    """
    if alloc.size == 0:
        return True
    known = circuit.dynamics.affine_by_structure(circuit, alloc)
    if known is not None:
        return known
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0xAFF,)))
    frozen = {}
    draws = [circuit.sample_weights(rng) for _ in range(2)]
    for name in circuit.weight_names:
        frozen[name] = torch.as_tensor(np.stack([d[name] for d in draws]), dtype=DTYPE)
    probes = torch.as_tensor(np.stack([circuit.sample_probes(2, rng) for _ in range(2)]), dtype=DTYPE)
    fmap = PlasticMap(circuit, alloc, frozen, probes)
    scale = circuit.init_scale(alloc)
    a = torch.as_tensor(rng.standard_normal((2, alloc.size)) * scale, dtype=DTYPE)
    d = torch.as_tensor(rng.standard_normal((2, alloc.size)) * scale, dtype=DTYPE)
    return bool(vanishing_second_difference(fmap, a, d).all())


def vanishing_second_difference(f, a: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """``(problem,)`` bool: whether ``f(a + d) - 2 f(a) + f(a - d)`` is rounding noise next to the values.

    ``f`` maps ``(problem, M)`` to ``(problem, E)``; ``a`` the points, ``d`` the directions, both ``(problem, M)``.
    An affine map's second difference is rounding noise (~1e-15 relative); a non-affine polynomial's is O(1) at
    random points. NaN (a singular draw) counts as not vanishing.
    """
    fp, f0, fm = f(a + d), f(a), f(a - d)
    second = (fp - 2 * f0 + fm).abs().amax(dim=-1)
    size = (fp.abs() + 2 * f0.abs() + fm.abs()).amax(dim=-1)
    return second <= _AFFINE_RTOL * size
