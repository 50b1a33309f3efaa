"""Closed-form adjoint Jacobians of linear circuits, shared by the dynamics that have one.

``dy_o/dW_ij = sum_t G_t[o, i] u_t[j]``: ``G_t`` the adjoint (output sensitivity to the drive of neuron ``i`` at
step ``t``) and ``u_t`` the presynaptic activity. The fixed point ``r = A r + B x`` over all non-input neurons
serves both linear feed-forward (``A`` nilpotent) and steady circuits (:func:`fixed_point_jacobian`); the discrete
recursion has its own (:mod:`neurosubset.dynamics.discrete`). :func:`plastic_layout` says where each plastic
synapse sits in that indexing, :func:`sum_outer` contracts adjoints with activity.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np
import torch

from .blocks import block_matrix, selector

if TYPE_CHECKING:
    from ..allocation import Allocation
    from ..circuit import Circuit

DTYPE = torch.float64
_BROADCAST_MAX = 2**22  # elements (32 MB) of the broadcast intermediate of sum_outer; beyond it, einsum
FIXED_POINT = ("hidden", "output")  # the neuron vector of r = A r + B x


def plastic_layout(circuit: Circuit, alloc: Allocation, roles: tuple[str, ...], *,
                   direct_outputs: bool = False) -> dict:
    """Per plastic synapse: its postsynaptic row and presynaptic column in the adjoint's global indexing.

    Parameters
    ----------
    circuit : Circuit
    alloc : Allocation
    roles : tuple of str
        The neuron vector of the adjoint's rows and columns (``("hidden", "output")`` for the fixed point,
        ``("hidden",)`` for the discrete recursion); inputs follow it as extra columns.
    direct_outputs : bool
        Read-outs are not in that vector (discrete): a synapse onto an output region is indexed by its output neuron
        and flagged ``to_output``.

    Returns
    -------
    dict
        ``rows``, ``cols`` (region names), ``post``, ``pre`` (long ``(M,)``), ``to_output`` (bool ``(M,)``),
        ``select`` (the rows of the output neurons among the vector's, ``(n_out, N)``, or None with
        ``direct_outputs``), ``input_to_output`` (whether a read-out sees the inputs directly).
    """
    rows, cols = circuit.slices(roles), circuit.slices(roles)
    n_cols = circuit.n_neurons(roles)
    inputs, outputs = circuit.slices("input"), circuit.slices("output")
    post, pre, to_output = [], [], []
    for name in circuit.weight_names:
        idx = np.flatnonzero(alloc.masks[name])
        proj = circuit.projection[name]
        n_pre = circuit.shape(name)[1]
        i, j = idx // n_pre, idx % n_pre
        direct = direct_outputs and circuit.region[proj.post].role == "output"
        post.append(i + (outputs[proj.post].start if direct else rows[proj.post].start))
        pre.append(j + (inputs[proj.pre].start + n_cols if proj.pre in inputs else cols[proj.pre].start))
        to_output.append(np.full(idx.size, direct))
    cat = (lambda xs, dt: torch.as_tensor(np.concatenate(xs) if xs else np.zeros(0), dtype=dt))
    return {"rows": list(rows), "cols": list(cols), "post": cat(post, torch.long), "pre": cat(pre, torch.long),
            "to_output": cat(to_output, torch.bool),
            "select": (None if direct_outputs
                       else torch.cat([selector(circuit, roles, o, DTYPE) for o in outputs], dim=0)),
            "input_to_output": any(p.pre in inputs for o in outputs for p in circuit.projections_into(o))}


def fixed_point_jacobian(circuit: Circuit, layout: dict, weights: Mapping[str, torch.Tensor],
                         probes: torch.Tensor, *, with_outputs: bool = False):
    """Jacobian ``(P, E, M)`` of ``y = S (I - A)^-1 B x`` (and the outputs ``(P, E)`` with ``with_outputs``).

    One LU of ``I - A`` over all non-input neurons; the adjoint ``G = S (I - A)^-1`` is one transposed solve.
    """
    rows = layout["rows"]
    a = block_matrix(circuit, weights, rows, rows)
    b = block_matrix(circuit, weights, rows, list(circuit.input_regions))
    return _fixed_point_solve(torch.eye(a.shape[-1], dtype=a.dtype, device=a.device) - a, b, layout, probes,
                              with_outputs)


def fixed_point_system(circuit: Circuit, layout: dict, frozen: Mapping[str, torch.Tensor]) -> dict:
    """The frozen part of the fixed point's system ``[I - A | B]`` and where the plastic values enter it.

    Parameters
    ----------
    circuit : Circuit
    layout : dict
        :func:`plastic_layout` of the fixed point (``rows``, ``post``, ``pre``).
    frozen : dict
        Weight name -> ``(P, n_post, n_pre)`` frozen weights, zero at the plastic entries.

    Returns
    -------
    dict
        ``system`` ``(P, N, N + n_in)``: ``[I - A_0 | B_0]`` of the frozen weights; ``flat`` (long ``(M,)``): each
        plastic value's flat position in one problem's ``N x (N + n_in)`` system; ``sign`` ``(M,)``: ``-1`` where it
        enters ``A`` (so ``I - A``), ``+1`` where it enters ``B``. :func:`system_jacobian` adds ``sign * theta`` at
        ``flat`` instead of assembling the blocks again.
    """
    rows = layout["rows"]
    a0 = block_matrix(circuit, frozen, rows, rows)
    b0 = block_matrix(circuit, frozen, rows, list(circuit.input_regions))
    n = a0.shape[-1]
    lead = torch.broadcast_shapes(a0.shape[:-2], b0.shape[:-2])
    eye = torch.eye(n, dtype=a0.dtype, device=a0.device)
    system = torch.cat([(eye - a0).expand(lead + (n, n)), b0.expand(lead + b0.shape[-2:])], dim=-1)
    post, pre = layout["post"].to(a0.device), layout["pre"].to(a0.device)
    sign = torch.where(pre < n, -1.0, 1.0).to(a0.dtype)
    return {"system": system.contiguous(), "flat": post * system.shape[-1] + pre, "sign": sign}


def system_jacobian(layout: dict, system: dict, theta: torch.Tensor, probes: torch.Tensor, *,
                    with_outputs: bool = False):
    """:func:`fixed_point_jacobian` at ``theta`` ``(P, M)`` from the frozen system of :func:`fixed_point_system`
    (its ``system`` over the same ``P`` problems): the plastic values are added into a copy of ``[I - A_0 | B_0]``,
    no block assembly. The same outputs and Jacobian as assembling the student's weights (bit for bit where no
    plastic synapse shares its matrix entry with another projection's synapse; else to rounding)."""
    base = system["system"]
    n = base.shape[-2]
    full = base.flatten(-2).index_add(-1, system["flat"], theta * system["sign"]).unflatten(-1, base.shape[-2:])
    return _fixed_point_solve(full[..., :n].contiguous(), full[..., n:].contiguous(), layout, probes, with_outputs)


def _fixed_point_solve(ia: torch.Tensor, b: torch.Tensor, layout: dict, probes: torch.Tensor, with_outputs: bool):
    """Jacobian (and outputs) of ``y = S ia^-1 B x`` with ``ia = I - A`` ``(P, N, N)``, ``b`` ``(P, N, n_in)``."""
    post, pre = layout["post"], layout["pre"]
    n_prob = probes.shape[0]
    # singular: inf/NaN, not a raise
    lu, piv, _ = torch.linalg.lu_factor_ex(ia)
    x = probes.transpose(-1, -2)  # (P, n_in, m)
    rates = torch.linalg.lu_solve(lu, piv, b @ x)  # (P, N, m)
    select = layout["select"]  # (n_out, N)
    g_t = torch.linalg.lu_solve(lu, piv, select.T.expand(n_prob, -1, -1), adjoint=True)  # (P, N, n_out)
    act = torch.cat([rates, x], dim=-2)  # (P, N + n_in, m)
    jac = sum_outer(g_t.transpose(-1, -2).unsqueeze(1), act.unsqueeze(1), post, pre)
    if not with_outputs:
        return jac
    return (select @ rates).transpose(-1, -2).reshape(n_prob, -1), jac


def mod_fixed_point(circuit: Circuit, weights: Mapping[str, np.ndarray], xs: np.ndarray, mat, to_numpy,
                    layout: dict):
    """The fixed point's adjoint and activity over GF(p): ``(G (1, n_out, N), act (1, N + n_in, m), None)``.

    ``mat`` builds a matrix mod ``p`` (python-flint ``nmod_mat``) from an int64 array and ``to_numpy`` reads one
    back; ``xs`` ``(m, n_in)`` the probes mod ``p``. Raises ZeroDivisionError where ``det(I - A) = 0`` mod ``p``.
    """
    a = mat(block_matrix(circuit, weights, FIXED_POINT, FIXED_POINT))
    b = mat(block_matrix(circuit, weights, FIXED_POINT, "input"))
    inv = (mat(np.eye(a.nrows(), dtype=np.int64)) - a).inv()
    rates = inv * (b * mat(xs.T))
    select = np.rint(layout["select"].numpy()).astype(np.int64)  # 0/1 rows picking the output neurons
    g = to_numpy(mat(select) * inv)[None]
    act = np.concatenate([to_numpy(rates), xs.T], axis=0)[None]
    return g, act, None


def sum_outer(g: torch.Tensor, act: torch.Tensor, post: torch.Tensor, pre: torch.Tensor) -> torch.Tensor:
    """``J[p, (m, o), k] = sum_t g[p, t, o, post_k] act[p, t, pre_k, m]``, shape ``(P, m * n_out, K)``.

    ``g`` ``(P, T, n_out, N)`` adjoints, ``act`` ``(P, T, N', m)`` presynaptic activity. Small problems (the
    solver's hot path) use a broadcast product summed over ``t``, twice as fast as the einsum, which runs as
    ``P * K`` tiny matrix products; large ones (a certificate's full Jacobian) use the einsum, which needs no
    ``T``-fold intermediate.
    """
    n_prob, steps, n_out = g.shape[:3]
    if steps == 1:  # steady / feedforward: one outer product per synapse, written in the output layout
        return (g[:, 0, :, post].unsqueeze(1) * act[:, 0, pre, :].mT.contiguous().unsqueeze(2)).flatten(1, 2)
    if n_prob * steps * n_out * post.numel() * act.shape[-1] > _BROADCAST_MAX:
        return torch.einsum("ptos,ptsm->pmos", g[..., post], act[:, :, pre, :]).flatten(1, 2)
    prod = g[..., post].unsqueeze(-1) * act[:, :, pre, :].unsqueeze(2)  # (P, T, n_out, K, m)
    return prod.sum(1).permute(0, 3, 1, 2).flatten(1, 2)
