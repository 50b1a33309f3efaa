"""Float ranks of the certificate for circuits in the sparse weights layout (``method="iterative"``).

Exact ranks over GF(p) need the Jacobian's ``(E, N)`` entries at a point of GF(p) through a dense modular solve: out
of reach for ``10^4`` neurons on 2 cores. Here the full Jacobian of a steady linear circuit comes from its closed
form through the sparse solves of :class:`~neurosubset.dynamics.sparse_map.SparseSteady`:
``dy_(p, o) / dw_ij = G[o, i] act[j, p]`` with the rates ``act`` (one solve per probe) and ``G = S (I - A)^-1`` (one
adjoint solve per output), splu up to :data:`~neurosubset.dynamics.sparse_map.SPLU_MAX_NEURONS` neurons and GMRES to
relative residual 1e-12 above. Its ``N`` columns (one per present synapse, in units of the init SD as the dense
paths) are never held at once: their transposes are reduced per postsynaptic neuron to ``m x m`` QR factors
(:func:`_factor`) and stacked a chunk at a time into the ``E x E`` triangular factor of a QR (TSQR), whose singular
values are the Jacobian's. The ranks are floating-point ranks of a Jacobian computed by
iterative solves, **flagged** ``Certificate.method = "iterative"`` and ``Certificate.estimate = True``; a verdict
needs their gaps to be decisive (else "unproven": no GF(p) fallback at this size). Cross-checked against the GF(p)
ranks up to 2,000 neurons (tests/test_theory_sparse_ranks.py, benchmarks/bench_sparse.py).
"""
from __future__ import annotations

import numpy as np
import scipy.linalg

from ..dynamics.sparse import GMRES_RTOL, gmres_columns
from ..dynamics.sparse_map import SparseSteady, draw_sparse_weights, structure_of, synapse_sd

__all__ = ["sparse_rank_evidence", "eligible_positions"]

_ROWS_PER_CHUNK = 2**15  # rows per TSQR step (2^15 x E float64: 21 MB at E = 80)


def eligible_positions(circuit) -> np.ndarray:
    """``(N,)`` positions in the value vector of the synapses that may be plastic (non-fixed projections), in the
    order of the full Jacobian's columns (weights in declaration order, row-major)."""
    structure = structure_of(circuit)
    out, at = [], 0
    for name in circuit.weight_names:
        s = structure[name][0].size
        if not circuit.projection[name].fixed:
            out.append(np.arange(at, at + s))
        at += s
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def _factor(act: np.ndarray, g_t: np.ndarray, post: np.ndarray, pre: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """A matrix with the singular values of the Jacobian over the given synapses, ``(rows, E)`` with few rows.

    The Jacobian's transpose has one row ``s_k (a_k kron g_i)`` per synapse ``k`` onto neuron ``i`` (``a_k`` the
    presynaptic activity on the ``m`` probes, ``g_i = G[:, i]``, ``s_k`` the init SD). Grouped by postsynaptic neuron
    the rows are ``A_i kron g_i^T``; with ``A_i = Q_i R_i`` (QR, ``R_i`` at most ``m x m``) that is
    ``(Q_i kron 1)(R_i kron g_i^T)``, and ``diag(Q_i)`` has orthonormal columns, so the stacked ``R_i kron g_i^T``
    (at most ``m`` rows per neuron instead of one per synapse) has the same singular values; a QR of those (a chunk at
    a time, TSQR) leaves the ``E x E`` factor. No Gram matrix is formed (its rounding would hide singular values
    below ``1e-8`` relative).
    """
    m, n_out = act.shape[1], g_t.shape[1]
    e = m * n_out
    if post.size == 0:
        return np.zeros((0, e))
    order = np.argsort(post, kind="stable")
    post_s = post[order]
    cells, start, counts = np.unique(post_s, return_index=True, return_counts=True)
    within = np.arange(post_s.size) - np.repeat(start, counts)
    rows = act[pre[order]] * scale[order, None]  # (S, m): A_i's rows, neuron by neuron
    first = np.repeat(np.arange(cells.size), counts)
    r = np.zeros((0, e))
    step = max(1, _ROWS_PER_CHUNK * 8 // max(int(counts.max()) * m, 1))  # neurons per batched QR
    for a in range(0, cells.size, step):
        sel = slice(start[a], start[a + step] if a + step < cells.size else post_s.size)
        depth = int(counts[a:a + step].max())
        padded = np.zeros((min(step, cells.size - a) * depth, m))  # each neuron's A_i, zero rows below
        padded[(first[sel] - a) * depth + within[sel]] = rows[sel]
        padded = padded.reshape(-1, depth, m)
        r_i = np.linalg.qr(padded, mode="r")  # (cells, min(K, m), m)
        block = (r_i[:, :, :, None] * g_t[cells[a:a + step]][:, None, None, :]).reshape(-1, e)
        r = scipy.linalg.qr(np.vstack([r, block]), mode="r", check_finite=False)[0][:e]
    return r


def sparse_rank_evidence(circuit, m: int, seed: int, points: int, cols: np.ndarray, rtol: float):
    """Float ranks (and gaps) of the full Jacobian and of its columns ``cols`` over ``points`` random points.

    Point ``k`` is :func:`neurosubset.theory._ranks._point`'s: the weights and probes drawn from
    ``SeedSequence(seed, spawn_key=(0xCE27, k))`` (:func:`~neurosubset.dynamics.sparse_map.draw_sparse_weights` gives
    the dense draw's numbers).

    Returns
    -------
    RankEvidence
        ``method="iterative"``, ``exact=False``, ``decisive`` from the gaps.
    """
    from ._ranks import _POINT_KEY, _max_rank, _rank_of
    from .modular_ranks import RankEvidence, decisive
    import torch

    structure = structure_of(circuit)
    sd = synapse_sd(circuit, structure)
    everyone = eligible_positions(circuit)
    system = SparseSteady(circuit, structure, everyone)
    scale = np.concatenate([sd[k] for k in circuit.weight_names])[everyone]
    n, n_out = system.n, system.out_idx.size
    full_res, sub_res = [], []
    for k in range(points):
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_POINT_KEY, k)))
        values = draw_sparse_weights(circuit, rng, structure, sd)
        x = circuit.sample_probes(m, rng)
        mat, b = system.matrices(values)
        rhs = np.asarray(b @ x.T)
        select = np.zeros((n, n_out))
        select[system.out_idx, np.arange(n_out)] = 1.0
        if system.method == "gmres":
            rates, g_t = gmres_columns(mat, rhs, GMRES_RTOL), gmres_columns(mat.T.tocsr(), select, GMRES_RTOL)
        else:
            import scipy.sparse.linalg

            lu = scipy.sparse.linalg.splu(mat.tocsc())
            rates, g_t = lu.solve(rhs), lu.solve(select, trans="T")
        act = np.concatenate([rates, x.T], axis=0)  # (N + n_in, m)
        if not (np.isfinite(act).all() and np.isfinite(g_t).all()):
            from ._ranks import TheoryError

            raise TheoryError(f"The steady solves of circuit {circuit.name!r} did not converge at certificate point "
                              f"{k} (I - W singular, or GMRES short of its 1e-12 tolerance): no float rank exists "
                              f"there. Lower the circuit's gains.")
        full_r = _factor(act, g_t, system.post, system.pre, scale)
        full_res.append(_rank_of(torch.as_tensor(np.linalg.svd(full_r, compute_uv=False)), rtol))
        if cols.size == everyone.size:
            sub_res.append(full_res[-1])
        else:
            sub_r = _factor(act, g_t, system.post[cols], system.pre[cols], scale[cols])
            sub_res.append(_rank_of(torch.as_tensor(np.linalg.svd(sub_r, compute_uv=False)), rtol))
    (fr, fg, ft), (pr, pg, pt) = _max_rank(full_res), _max_rank(sub_res)
    return RankEvidence(fr, pr, fg, pg, ft, pt, "iterative", exact=False,
                        decisive=decisive(fg, ft) and decisive(pg, pt))
