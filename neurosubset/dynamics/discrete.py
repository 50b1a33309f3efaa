"""Discrete-time dynamics: ``T`` synchronous updates of the hidden regions from zero, then a linear read-out."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from .adjoint import plastic_layout, sum_outer
from .base import Dynamics, register
from .blocks import block_matrix, drive, phi

if TYPE_CHECKING:
    from ..allocation import Allocation
    from ..circuit import Circuit


@register
class Discrete(Dynamics):
    """``h_r(t) = phi(sum_{hidden q} W h_q(t-1) + sum_{input q} W x_q(t))``, ``h(0) = 0``, ``t = 1..T``.

    ``T = steps``; a probe is a sequence of ``T`` input vectors ``(m, steps, n_in)``; the read-out is
    ``y = sum W h(T)`` plus input projections from ``x(T)``. Linear: ``y = sum_k C A^k B x_{T-k}``, polynomial of
    degree ``T + 1`` in the weights (closed-form adjoint ``G_{t-1} = G_t A``, exact ranks over GF(p)).
    """

    name = "discrete"
    rational = True
    sequences = True

    def forward(self, circuit: Circuit, weights: Mapping[str, torch.Tensor], probes: torch.Tensor) -> torch.Tensor:
        slices = circuit.slices("input")
        hidden = [r.name for r in circuit.regions if r.role == "hidden"]
        lead = probes.shape[:-2]  # (..., m)
        states = {name: probes.new_zeros(lead + (circuit.region[name].size,)) for name in hidden}
        for t in range(circuit.steps):
            x_t = probes[..., t, :]
            inputs = {name: x_t[..., s] for name, s in slices.items()}
            new = {name: phi(circuit, drive(circuit, name, weights, {**states, **inputs})) for name in hidden}
            states = new
        states.update({name: probes[..., -1, s] for name, s in slices.items()})
        for name in circuit.output_regions:
            states[name] = drive(circuit, name, weights, states)
        return torch.cat([states[name] for name in circuit.output_regions], dim=-1)

    def recorded_times(self, circuit: Circuit) -> int:
        return circuit.steps

    def rates(self, circuit: Circuit, weights: Mapping[str, torch.Tensor], probes: torch.Tensor,
              regions: Sequence[str], *, time: bool = False) -> dict[str, torch.Tensor]:
        """Hidden ``h(t)``; outputs ``sum W h(t)`` plus input projections from ``x(t)``; every step with ``time``."""
        slices = circuit.slices("input")
        hidden = [r.name for r in circuit.regions if r.role == "hidden"]
        outputs = [r for r in regions if circuit.region[r].role == "output"]
        states = {name: probes.new_zeros(probes.shape[:-2] + (circuit.region[name].size,)) for name in hidden}
        kept: dict[str, list[torch.Tensor]] = {r: [] for r in regions}
        for t in range(circuit.steps):
            inputs = {name: probes[..., t, s] for name, s in slices.items()}
            states = {name: phi(circuit, drive(circuit, name, weights, {**states, **inputs})) for name in hidden}
            if time or t == circuit.steps - 1:
                seen = {**states, **inputs}
                for r in regions:
                    kept[r].append(drive(circuit, r, weights, seen) if r in outputs else states[r])
        return {r: torch.stack(v, dim=-2) if time else v[0] for r, v in kept.items()}

    def closed_adjoint(self, circuit: Circuit) -> bool:
        return circuit.nonlinearity == "linear"

    def adjoint_layout(self, circuit: Circuit, alloc: Allocation, *, hot: bool = False) -> dict:
        return plastic_layout(circuit, alloc, ("hidden",), direct_outputs=True)

    def adjoint_jacobian(self, circuit: Circuit, layout: dict, weights: Mapping[str, torch.Tensor],
                         probes: torch.Tensor, *, with_outputs: bool = False):
        """``G_T = C``, ``G_{t-1} = G_t A``; ``u_t`` the hidden state and input entering step ``t``."""
        inputs, outputs = list(circuit.input_regions), list(circuit.output_regions)
        post, pre = layout["post"], layout["pre"]
        n_prob, m = probes.shape[0], probes.shape[1]
        hidden = layout["rows"]
        a = block_matrix(circuit, weights, hidden, hidden)
        b = block_matrix(circuit, weights, hidden, inputs)
        c = block_matrix(circuit, weights, outputs, hidden)
        n_in, steps = probes.shape[-1], circuit.steps
        xs = probes.permute(0, 2, 3, 1)  # (P, T, n_in, m)
        # B x_t for every step in one product: (P, N_h, n_in) @ (P, n_in, T m) -> (P, N_h, T, m)
        drive_ = (b @ probes.permute(0, 3, 2, 1).reshape(n_prob, n_in, steps * m)).unflatten(-1, (steps, m))
        states = [torch.zeros_like(drive_[..., 0, :]), drive_[..., 0, :]]  # h_0 = 0, h_1 = B x_1
        for t in range(1, steps):
            states.append(torch.baddbmm(drive_[..., t, :], a, states[-1]))  # h_{t+1} = A h_t + B x_{t+1}
        adjoints = [c]  # G_T = C, G_{t-1} = G_t A
        for _ in range(steps - 1):
            adjoints.append(adjoints[-1] @ a)
        g = torch.stack(adjoints[::-1], dim=1)  # (P, T, n_out, N_h), index t-1 for step t
        act = torch.cat([torch.stack(states[:-1], dim=1), xs], dim=2)  # (P, T, N_h + n_in, m): inputs to step t
        to_out = layout["to_output"]
        if not to_out.any():
            jac = sum_outer(g, act, post, pre)
        else:
            jac = a.new_zeros((n_prob, m * circuit.n_out, post.numel()))
            hid = ~to_out
            if hid.any():
                jac[..., hid] = sum_outer(g, act, post[hid], pre[hid])
            last = torch.cat([states[-1], xs[:, -1]], dim=1)  # (P, N_h + n_in, m): what the read-out sees
            onehot = torch.nn.functional.one_hot(post[to_out], circuit.n_out).to(a.dtype).T  # (n_out, k)
            jac[..., to_out] = (onehot * last[:, pre[to_out], :].permute(0, 2, 1).unsqueeze(2)).flatten(1, 2)
        if not with_outputs:
            return jac
        # y = C h_T + C_in x_T (read-outs may also see the inputs of the last step)
        y = c @ states[-1]
        if layout["input_to_output"]:
            y = y + block_matrix(circuit, weights, outputs, inputs) @ xs[:, -1]
        return y.transpose(-1, -2).reshape(n_prob, -1), jac

    def entry_degree(self, circuit: Circuit) -> int:
        """``T + 1``: ``h_t`` has degree ``t + 1``, ``y = C h_T`` degree ``T + 2``."""
        return circuit.steps + 1

    def mod_adjoint(self, circuit: Circuit, weights: Mapping[str, np.ndarray], xs: np.ndarray, mat, to_numpy,
                    layout: dict):
        m = xs.shape[0]
        a = mat(block_matrix(circuit, weights, "hidden", "hidden"))
        b = mat(block_matrix(circuit, weights, "hidden", "input"))
        c = mat(block_matrix(circuit, weights, "output", "hidden"))
        h = [mat(np.zeros((a.nrows(), m), dtype=np.int64))]  # h_0 = 0
        for t in range(circuit.steps):
            h.append(a * h[-1] + b * mat(xs[:, t, :].T))
        g = [c]  # G_T = C, G_{t-1} = G_t A
        for _ in range(circuit.steps - 1):
            g.append(g[-1] * a)
        g_np = np.stack([to_numpy(x) for x in g[::-1]])  # (T, n_out, N_h): index t-1 for step t
        act = np.concatenate([np.stack([to_numpy(x) for x in h[:-1]]), xs.transpose(1, 2, 0)], axis=1)
        last = np.concatenate([to_numpy(h[-1]), xs[:, -1, :].T], axis=0)  # (N_h + n_in, m): what a read-out sees
        return g_np, act, last
