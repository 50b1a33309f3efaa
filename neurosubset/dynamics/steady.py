"""Steady dynamics: the fixed point ``r = W_rec r + W_in x`` over all non-input neurons (linear only)."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from .._checks import CircuitSpecError
from .adjoint import (FIXED_POINT, fixed_point_jacobian, fixed_point_system, mod_fixed_point, plastic_layout,
                      sum_outer, system_jacobian)
from .base import Dynamics, register
from .blocks import block_matrix
from .stability import Stability

if TYPE_CHECKING:
    from ..allocation import Allocation
    from ..circuit import Circuit

# steady circuits with at least this many hidden neurons factor only I - W_hidden in the solvers' hot path (outputs
# are sinks); smaller ones keep the one LU over all neurons their results were made with, bit for bit
SPLIT_MIN = 128


@register
class Steady(Dynamics):
    """``r = (I - W_rec)^{-1} W_in x``: the fixed point of ``tau dr/dt = -r + W_rec r + W_in x``.

    Linear only (the fixed point of a nonlinear circuit is not unique). Stable iff ``max Re(eig W_rec) < 1``
    (:meth:`stability`); specs whose teacher draws are mostly unstable are refused. Outputs are rational in the
    weights: closed-form adjoint through one LU, exact ranks over GF(p).
    """

    name = "steady"
    rational = True
    fixed_point = True
    nonlinearities = ("linear",)
    spiking = True

    def validate(self, circuit: Circuit) -> None:
        if circuit.nonlinearity == "relu":
            raise CircuitSpecError("'steady' dynamics needs nonlinearity 'linear' (the fixed point of a "
                                   f"nonlinear circuit is not unique). Got {circuit.nonlinearity!r}.")
        super().validate(circuit)

    def _rates(self, circuit: Circuit, weights: Mapping[str, torch.Tensor], probes: torch.Tensor) -> torch.Tensor:
        neurons = list(circuit.slices(FIXED_POINT))
        w_rec = block_matrix(circuit, weights, neurons, neurons)
        w_in = block_matrix(circuit, weights, neurons, "input")
        eye = torch.eye(w_rec.shape[-1], dtype=w_rec.dtype, device=w_rec.device)
        # lu_factor/lu_solve, not linalg.solve: in torch 2.13 vmap(jacfwd(linalg.solve)) returns wrong
        # derivatives (tests/test_dynamics.py checks the Jacobian against finite differences)
        lu, pivots, _ = torch.linalg.lu_factor_ex(eye - w_rec)  # a singular student: non-finite rates, not a raise
        return torch.linalg.lu_solve(lu, pivots, w_in @ probes.transpose(-1, -2)).transpose(-1, -2)

    def forward(self, circuit: Circuit, weights: Mapping[str, torch.Tensor], probes: torch.Tensor) -> torch.Tensor:
        rates, where = self._rates(circuit, weights, probes), circuit.slices(FIXED_POINT)
        return torch.cat([rates[..., where[name]] for name in circuit.output_regions], dim=-1)

    def rates(self, circuit: Circuit, weights: Mapping[str, torch.Tensor], probes: torch.Tensor,
              regions: Sequence[str], *, time: bool = False) -> dict[str, torch.Tensor]:
        rates, where = self._rates(circuit, weights, probes), circuit.slices(FIXED_POINT)
        return {r: rates[..., where[r]] for r in regions}

    def closed_adjoint(self, circuit: Circuit) -> bool:
        return True

    def adjoint_layout(self, circuit: Circuit, alloc: Allocation, *, hot: bool = False) -> dict:
        """The fixed point's layout; ``hot`` (the solvers' batched map) marks circuits of at least
        :data:`SPLIT_MIN` hidden neurons for :func:`split_steady`."""
        layout = plastic_layout(circuit, alloc, FIXED_POINT)
        if hot and circuit.n_neurons("hidden") >= SPLIT_MIN:
            layout["split"] = True
        return layout

    def adjoint_jacobian(self, circuit: Circuit, layout: dict, weights: Mapping[str, torch.Tensor],
                         probes: torch.Tensor, *, with_outputs: bool = False):
        if layout.get("split"):
            return split_steady(circuit, layout, weights, probes, with_outputs)
        return fixed_point_jacobian(circuit, layout, weights, probes, with_outputs=with_outputs)

    def adjoint_system(self, circuit: Circuit, layout: dict, frozen: Mapping[str, torch.Tensor]) -> dict | None:
        """``[I - A_0 | B_0]`` of the frozen weights (:func:`~neurosubset.dynamics.adjoint.fixed_point_system`),
        kept by the solvers' map so that an LM iteration adds the plastic values instead of assembling every block
        again; None on the split layout (large circuits, :func:`split_steady`), which assembles per call."""
        return None if layout.get("split") else fixed_point_system(circuit, layout, frozen)

    def system_jacobian(self, circuit: Circuit, layout: dict, system: dict, theta: torch.Tensor,
                        probes: torch.Tensor, *, with_outputs: bool = False):
        return system_jacobian(layout, system, theta, probes, with_outputs=with_outputs)

    def entry_degree(self, circuit: Circuit) -> int:
        """``2 n`` for ``n`` non-input neurons, the degree of ``det(I - W)^2 dF/dtheta`` (adjugate entries have
        degree ``n - 1``), which has the rank of the Jacobian wherever ``det(I - W) != 0``."""
        return 2 * circuit.n_neurons(FIXED_POINT)

    def mod_adjoint(self, circuit: Circuit, weights: Mapping[str, np.ndarray], xs: np.ndarray, mat, to_numpy,
                    layout: dict):
        return mod_fixed_point(circuit, weights, xs, mat, to_numpy, layout)

    def stability(self, circuit: Circuit) -> Stability:
        return Stability(circuit)

    def factor_size(self, circuit: Circuit) -> int:
        return circuit.n_neurons(FIXED_POINT)

    def spec_memory_terms(self, circuit: Circuit) -> dict[str, int]:
        """The dense eigen-solve of the spec check; none where a loop is large enough for the sparse check
        (:data:`~neurosubset.dynamics.stability.SPARSE_SPEC_SIZE`), which needs memory linear in synapses."""
        from .stability import SPARSE_SPEC_SIZE, loops

        sizes = [sum(circuit.region[r].size for r in loop.regions) for loop in loops(circuit)]
        if sizes and max(sizes) > SPARSE_SPEC_SIZE:
            return {"eigen-solve": 0}
        n = sum(r.size for r in circuit.regions)
        return {"eigen-solve": 8 * 4 * n * n}


def split_steady(circuit: Circuit, layout: dict, weights: Mapping[str, torch.Tensor], probes: torch.Tensor,
                 with_outputs: bool):
    """Outputs ``(P, E)`` (with ``with_outputs``) and Jacobian ``(P, E, M)`` of a steady linear circuit.

    Output neurons never project, so ``I - W`` is block triangular: ``r_h = (I - A_hh)^-1 B_h x``,
    ``y = A_oh r_h + B_o x``, and the output sensitivities are ``G_h = A_oh (I - A_hh)^-1`` on hidden neurons and
    the identity on output ones. One LU of size ``N_hidden`` replaces the one of size ``N_hidden + n_out`` (2.9x
    fewer flops on the worm, 302 + 126 neurons).
    """
    rows, inputs = layout["rows"], list(circuit.input_regions)
    hid, outs = [r for r in rows if circuit.region[r].role == "hidden"], list(circuit.output_regions)
    a_oh, x = block_matrix(circuit, weights, outs, hid), probes.transpose(-1, -2)
    lu, piv, _ = torch.linalg.lu_factor_ex(torch.eye(circuit.n_neurons("hidden"), dtype=x.dtype, device=x.device)
                                     - block_matrix(circuit, weights, hid, hid))
    r_h = torch.linalg.lu_solve(lu, piv, block_matrix(circuit, weights, hid, inputs) @ x)  # (P, N_h, m)
    y = a_oh @ r_h + block_matrix(circuit, weights, outs, inputs) @ x  # (P, n_out, m)
    g_h = torch.linalg.lu_solve(lu, piv, a_oh.transpose(-1, -2), adjoint=True)  # (P, N_h, n_out)
    starts = circuit.offsets(hid + outs)
    order = torch.as_tensor(np.concatenate([np.arange(starts[r], starts[r] + circuit.region[r].size) for r in rows]),
                            device=x.device)  # layout position -> position in (hidden, outputs)
    eye = torch.eye(y.shape[-2], dtype=x.dtype, device=x.device).expand(x.shape[0], -1, -1)
    act = torch.cat([torch.cat([r_h, y], dim=-2)[:, order], x], dim=-2)  # (P, N + n_in, m)
    g_t = torch.cat([g_h, eye], dim=-2)[:, order]  # (P, N, n_out): outputs see themselves with weight 1
    jac = sum_outer(g_t.transpose(-1, -2).unsqueeze(1), act.unsqueeze(1), layout["post"], layout["pre"])
    return (y.transpose(-1, -2).reshape(x.shape[0], -1), jac) if with_outputs else jac
