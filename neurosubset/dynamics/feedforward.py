"""Feed-forward dynamics: ``h_r = phi(sum_{q -> r} W_{q->r} h_q)`` over a DAG of regions, read-outs linear."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from .._spec import topological_order
from .adjoint import FIXED_POINT, fixed_point_jacobian, mod_fixed_point, plastic_layout
from .base import Dynamics, register
from .blocks import drive, phi

if TYPE_CHECKING:
    from ..allocation import Allocation
    from ..circuit import Circuit


@register
class Feedforward(Dynamics):
    """``h_r = phi(sum_{q -> r} W_{q->r} h_q)`` in topological order; outputs ``y_o = sum_{q -> o} W_{q->o} h_q``.

    The projection graph must be a DAG. Input regions hold slices of the probe ``x`` ``(m, n_in)``. Linear circuits
    are the fixed point ``r = A r + B x`` of a nilpotent ``A`` (the closed-form adjoint of
    :func:`~neurosubset.dynamics.adjoint.fixed_point_jacobian`, exact ranks over GF(p)).
    """

    name = "feedforward"
    rational = True
    fixed_point = True
    spiking = True

    def validate(self, circuit: Circuit) -> None:
        super().validate(circuit)
        topological_order(circuit.regions, circuit.projections)  # raises on cycles

    def order(self, circuit: Circuit) -> tuple[str, ...]:
        return tuple(topological_order(circuit.regions, circuit.projections))

    def _states(self, circuit: Circuit, weights: Mapping[str, torch.Tensor], probes: torch.Tensor,
                outputs: bool) -> dict[str, torch.Tensor]:
        states = {name: probes[..., s] for name, s in circuit.slices("input").items()}
        for name in circuit.order:
            role = circuit.region[name].role
            if role == "hidden":
                states[name] = phi(circuit, drive(circuit, name, weights, states))
            elif role == "output" and outputs:
                states[name] = drive(circuit, name, weights, states)
        return states

    def forward(self, circuit: Circuit, weights: Mapping[str, torch.Tensor], probes: torch.Tensor) -> torch.Tensor:
        states = self._states(circuit, weights, probes, outputs=True)
        return torch.cat([states[name] for name in circuit.output_regions], dim=-1)

    def rates(self, circuit: Circuit, weights: Mapping[str, torch.Tensor], probes: torch.Tensor,
              regions: Sequence[str], *, time: bool = False) -> dict[str, torch.Tensor]:
        states = self._states(circuit, weights, probes, outputs=True)
        return {r: states[r] for r in regions}

    def closed_adjoint(self, circuit: Circuit) -> bool:
        return circuit.nonlinearity == "linear"

    def adjoint_layout(self, circuit: Circuit, alloc: Allocation, *, hot: bool = False) -> dict:
        return plastic_layout(circuit, alloc, FIXED_POINT)

    def adjoint_jacobian(self, circuit: Circuit, layout: dict, weights: Mapping[str, torch.Tensor],
                         probes: torch.Tensor, *, with_outputs: bool = False):
        return fixed_point_jacobian(circuit, layout, weights, probes, with_outputs=with_outputs)

    def entry_degree(self, circuit: Circuit) -> int:
        """The longest input-to-output path in projections (an output is a sum over paths of products of the
        path's weights and one input entry; the derivative drops one weight)."""
        depth: dict[str, int] = {}
        for q in circuit.order:
            into = circuit.projections_into(q)
            depth[q] = 0 if not into else max(depth[pr.pre] + 1 for pr in into)
        return max([depth[o] for o in circuit.output_regions] + [1])

    def mod_adjoint(self, circuit: Circuit, weights: Mapping[str, np.ndarray], xs: np.ndarray, mat, to_numpy,
                    layout: dict):
        return mod_fixed_point(circuit, weights, xs, mat, to_numpy, layout)
