"""Sparse weights for large steady circuits: structure as index arrays, weights as values, ``I - W`` through splu.

Every other path of the toolkit holds each weight as a dense ``(n_post, n_pre)`` matrix (800 MB per trial for a
10^4-neuron circuit). Here a projection's structure is two index arrays (``rows``, ``cols``: postsynaptic and
presynaptic neuron of each present synapse, row-major order, the order of ``numpy.nonzero`` on
:attr:`Circuit.structure`) and a draw of weights is one float64 value per synapse, so memory is linear in
synapses. The steady fixed point ``r = A r + B x`` over all non-input neurons (:mod:`neurosubset.dynamics.steady`)
is solved by one sparse LU (``scipy.sparse.linalg.splu`` of ``I - A``), and the adjoint Jacobian of the outputs in
the plastic synapses by one transposed solve through the same factor (the closed form of
:func:`neurosubset.dynamics.adjoint.fixed_point_jacobian`, whose dense path is the reference the tests compare to).

Not wired into the solvers yet: one trial at a time, steady linear circuits only.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse
import scipy.sparse.linalg

from .._checks import CircuitSpecError, ParameterError
from .adjoint import FIXED_POINT

if TYPE_CHECKING:
    from ..circuit import Circuit

_CHUNK = 2**22  # uniforms drawn per chunk when regenerating a Bernoulli structure (32 MB of float64)
GMRES_RTOL = 1e-12  # relative residual of each iterative solve (method "gmres")
_GMRES_RESTART = 100

__all__ = ["sparse_structure", "sample_sparse_weights", "sparse_block", "dense_weights", "plastic_positions",
           "sparse_steady", "gmres_columns"]


def sparse_structure(circuit: Circuit) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Which synapses exist, as index arrays: the same synapses as :attr:`Circuit.structure`, without its matrices.

    A Bernoulli(``p``) projection redraws the circuit's structural stream (``SeedSequence(seed, spawn_key=(k,))``
    for the ``k``-th projection) a chunk of rows at a time, so memory stays ``O(synapses + chunk)``; data-given
    structure comes from its triples.

    Parameters
    ----------
    circuit : Circuit

    Returns
    -------
    dict
        Weight name -> ``(rows, cols)``, two int64 arrays ``(S,)`` (``S`` the projection's present synapses):
        postsynaptic and presynaptic index of each synapse, sorted row-major.
    """
    out = {}
    for k, p in enumerate(circuit.projections):
        n_post, n_pre = circuit.shape(p.name)
        given = p.weights if p.fixed else p.synapses
        if given is not None:
            arr = np.asarray(given, dtype=float).reshape(-1, 3)
            rows, cols = arr[:, 0].astype(np.int64), arr[:, 1].astype(np.int64)  # sorted row-major by _triples
        elif p.p >= 1.0:
            rows, cols = np.repeat(np.arange(n_post), n_pre), np.tile(np.arange(n_pre), n_post)
        else:
            rng = np.random.default_rng(np.random.SeedSequence(circuit.seed, spawn_key=(k,)))
            step = max(1, _CHUNK // n_pre)
            parts_r, parts_c = [], []
            for start in range(0, n_post, step):  # the same stream as rng.random((n_post, n_pre)), in row chunks
                r, c = np.nonzero(rng.random((min(step, n_post - start), n_pre)) < p.p)
                parts_r.append(r + start)
                parts_c.append(c)
            rows, cols = np.concatenate(parts_r).astype(np.int64), np.concatenate(parts_c).astype(np.int64)
        if not p.autapses:
            keep = rows != cols
            rows, cols = rows[keep], cols[keep]
        out[p.name] = (rows, cols)
    return out


def sample_sparse_weights(circuit: Circuit, rng: np.random.Generator,
                          structure: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None
                          ) -> dict[str, np.ndarray]:
    """One draw of weights from the circuit's initial distribution, one value per present synapse.

    The distribution of :meth:`Circuit.sample_weights` (``N(0, sd^2)``, Dale's sign ``sign * |.|``, per-synapse
    signs, fixed projections their given values) drawn only on the synapses: ``rng.standard_normal(S)`` per
    projection in declaration order. Not the same numbers as the dense draw from the same ``rng`` (that draws every
    entry of each matrix).

    Parameters
    ----------
    circuit : Circuit
    rng : numpy.random.Generator
    structure : dict, optional
        :func:`sparse_structure` of ``circuit`` (computed here if not given).

    Returns
    -------
    dict
        Weight name -> float64 ``(S,)``, aligned with ``structure[name]``.
    """
    structure = sparse_structure(circuit) if structure is None else structure
    out = {}
    for p in circuit.projections:
        rows, cols = structure[p.name]
        if p.fixed:
            out[p.name] = np.asarray(p.weights, dtype=float).reshape(-1, 3)[:, 2].copy()
            continue
        n_post, n_pre = circuit.shape(p.name)
        if p.synapses is None:
            sd = p.gain / np.sqrt(p.p * n_pre)
        else:
            counts = np.asarray(p.synapses, dtype=float).reshape(-1, 3)[:, 2]
            if p.init == "count":
                norm = np.sqrt((counts**2).sum() / n_post)
                sd = p.gain * counts / norm if norm > 0 else counts
            else:
                sd = p.gain / np.sqrt(rows.size / n_post) if rows.size else 0.0
        w = rng.standard_normal(rows.size) * sd
        sign = circuit.region[p.pre].sign
        if sign is not None:
            w = sign * np.abs(w)
        if p.signs:
            s = np.asarray(p.signs, dtype=np.int64).reshape(-1, 3)
            at = np.searchsorted(rows * n_pre + cols, s[:, 0] * n_pre + s[:, 1])  # signs name present synapses
            w[at] = s[:, 2] * np.abs(w[at])
        out[p.name] = w
    return out


def _check_values(circuit: Circuit, structure: Mapping[str, tuple[np.ndarray, np.ndarray]],
                  values: Mapping[str, np.ndarray]) -> None:
    for name in circuit.weight_names:
        if name not in values or name not in structure:
            raise ParameterError(f"The 'values' and 'structure' parameters need every weight of circuit "
                                 f"{circuit.name!r}: {list(circuit.weight_names)}. Missing {name!r}.")
        if np.shape(values[name]) != np.shape(structure[name][0]):
            raise ParameterError(f"values[{name!r}] must hold one value per synapse of structure[{name!r}], shape "
                                 f"{np.shape(structure[name][0])}. Got {np.shape(values[name])}.")


def sparse_block(circuit: Circuit, structure: Mapping[str, tuple[np.ndarray, np.ndarray]],
                 values: Mapping[str, np.ndarray], rows: str | tuple[str, ...] | list[str],
                 cols: str | tuple[str, ...] | list[str]) -> scipy.sparse.csr_matrix:
    """The sparse block matrix of the projections from the ``cols`` regions onto the ``rows`` ones.

    The sparse twin of :func:`neurosubset.dynamics.blocks.block_matrix`: the same layout (regions concatenated in
    the given order, or the regions with the given roles), projections between the same regions summed.

    Parameters
    ----------
    circuit : Circuit
    structure : dict
        Weight name -> ``(rows, cols)`` (:func:`sparse_structure`).
    values : dict
        Weight name -> ``(S,)`` float64 (:func:`sample_sparse_weights`).
    rows, cols : str or sequence of str
        Region names or roles.

    Returns
    -------
    scipy.sparse.csr_matrix
        ``(sum rows, sum cols)`` float64, ``O(synapses)`` memory.
    """
    from .blocks import region_list

    rows, cols = region_list(circuit, rows), region_list(circuit, cols)
    row_at, col_at = circuit.offsets(rows), circuit.offsets(cols)
    shape = (sum(circuit.region[r].size for r in rows), sum(circuit.region[c].size for c in cols))
    ii, jj, vv = [], [], []
    for p in circuit.projections:
        if p.post in row_at and p.pre in col_at:
            r, c = structure[p.name]
            ii.append(r + row_at[p.post])
            jj.append(c + col_at[p.pre])
            vv.append(np.asarray(values[p.name], dtype=np.float64))
    if not vv:
        return scipy.sparse.csr_matrix(shape)
    return scipy.sparse.csr_matrix((np.concatenate(vv), (np.concatenate(ii), np.concatenate(jj))), shape=shape)


def dense_weights(circuit: Circuit, structure: Mapping[str, tuple[np.ndarray, np.ndarray]],
                  values: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The dense matrices ``(n_post, n_pre)`` of sparse weights (for small circuits and cross-checks)."""
    out = {}
    for name in circuit.weight_names:
        w = np.zeros(circuit.shape(name))
        r, c = structure[name]
        w[r, c] = values[name]
        out[name] = w
    return out


def plastic_positions(structure: Mapping[str, tuple[np.ndarray, np.ndarray]],
                      masks: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Positions in each weight's synapse list of the plastic synapses of dense bool ``masks`` (an Allocation's).

    Raises
    ------
    ParameterError
        A plastic entry where the structure has no synapse.
    """
    out = {}
    for name, (rows, cols) in structure.items():
        mask = np.asarray(masks.get(name, np.zeros(0, dtype=bool)), dtype=bool)
        if not mask.any():
            out[name] = np.zeros(0, dtype=np.int64)
            continue
        pr, pc = np.nonzero(mask)
        n_pre = mask.shape[1]
        linear = rows * n_pre + cols
        at = np.searchsorted(linear, pr * n_pre + pc)
        if (at >= linear.size).any() or (linear[np.minimum(at, linear.size - 1)] != pr * n_pre + pc).any():
            raise ParameterError(f"masks[{name!r}] marks entries where the structure has no synapse.")
        out[name] = at.astype(np.int64)
    return out


def sparse_steady(circuit: Circuit, structure: Mapping[str, tuple[np.ndarray, np.ndarray]],
                  values: Mapping[str, np.ndarray], probes: np.ndarray,
                  plastic: Mapping[str, np.ndarray] | None = None, *, method: str = "splu",
                  rtol: float = GMRES_RTOL) -> tuple[np.ndarray, np.ndarray | None]:
    """Outputs of a steady linear circuit and their Jacobian in the plastic synapses, through one sparse LU.

    ``method="splu"`` factors ``I - A`` (SuperLU, COLAMD ordering): exact up to rounding, but a random sparse
    matrix fills its factors almost completely (``L + U`` held 98.5 million entries for the 10,120 neurons of
    circuits/balanced_ei.toml, about ``n^2``; 570 s on the shared 2-core machine). ``method="gmres"`` solves each
    probe and each output's adjoint by GMRES to relative residual ``rtol`` (memory ``O(synapses)``, one sparse
    product per iteration): the iterative solve with a stated tolerance.

    ``r = (I - A)^-1 B x`` over all non-input neurons (``A`` the recurrent block, ``B`` the input block), outputs
    ``y = S r``; ``dy_o / dw_ij = G[o, i] act[j]`` with ``G = S (I - A)^-1`` (one transposed solve through the
    same factor) and ``act`` the rates or, for an input projection, the probe.

    Parameters
    ----------
    circuit : Circuit
        Steady dynamics, linear.
    structure : dict
        Weight name -> ``(rows, cols)`` int arrays (:func:`sparse_structure`).
    values : dict
        Weight name -> ``(S,)`` float64, one draw (:func:`sample_sparse_weights`).
    probes : numpy.ndarray
        ``(m, n_in)``.
    plastic : dict, optional
        Weight name -> int positions into that weight's synapse list (:func:`plastic_positions`), in increasing
        order; weights in declaration order make the columns of the Jacobian (the layout of ``theta``).
    method : {"splu", "gmres"}
    rtol : float
        GMRES only: relative residual ``||b - (I - A) r|| / ||b||`` each solve reaches (default 1e-12).

    Returns
    -------
    outputs : numpy.ndarray
        ``(m * n_out,)`` float64, probe-major (the layout of the dense path's outputs).
    jacobian : numpy.ndarray or None
        ``(m * n_out, M)`` float64, ``M`` plastic synapses; None without ``plastic``. A singular ``I - A``
        (splu) or a GMRES solve that does not reach ``rtol`` gives NaN (as the dense path's non-finite values),
        not an error.
    """
    if circuit.dynamics.name != "steady":
        raise CircuitSpecError(f"sparse_steady needs dynamics 'steady'; circuit {circuit.name!r} has "
                               f"{circuit.dynamics.name!r}.")
    _check_values(circuit, structure, values)
    x = np.asarray(probes, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != circuit.n_in:
        raise ParameterError(f"The 'probes' parameter must have shape (m, {circuit.n_in}) (m, n_in). "
                             f"Got {x.shape}.")
    if method not in ("splu", "gmres"):
        raise ParameterError(f"The 'method' parameter must be one of ['splu', 'gmres']. Got {method!r}.")
    if not (isinstance(rtol, (int, float)) and 0 < rtol < 1):
        raise ParameterError(f"The 'rtol' parameter must be a number in (0, 1). Got {rtol!r}.")
    m = x.shape[0]
    slices = circuit.slices(FIXED_POINT)
    a = sparse_block(circuit, structure, values, FIXED_POINT, FIXED_POINT)
    b = sparse_block(circuit, structure, values, FIXED_POINT, "input")
    n = a.shape[0]
    out_idx = np.concatenate([np.arange(slices[o].start, slices[o].stop) for o in circuit.output_regions])
    # the read-out selector (n, n_out) from its index pairs (blocks.selector builds a dense identity: O(n^2))
    select = scipy.sparse.coo_matrix((np.ones(out_idx.size), (out_idx, np.arange(out_idx.size))),
                                     shape=(n, out_idx.size)).toarray()
    if method == "gmres":
        system = (scipy.sparse.identity(n, format="csr") - a).tocsr()
        rates = gmres_columns(system, np.asarray(b @ x.T), rtol)  # (N, m)
        g_t = gmres_columns(system.T.tocsr(), select, rtol) if plastic is not None else None  # (N, n_out) = G^T
    else:
        try:
            lu = scipy.sparse.linalg.splu((scipy.sparse.identity(n, format="csc") - a).tocsc())
            rates = lu.solve(np.asarray(b @ x.T))  # (N, m)
            g_t = lu.solve(select, trans="T") if plastic is not None else None  # (N, n_out) = G^T
        except RuntimeError:  # "Factor is exactly singular"
            rates = np.full((n, m), np.nan)
            g_t = np.full((n, out_idx.size), np.nan) if plastic is not None else None
    outputs = rates[out_idx].T.reshape(-1)
    if plastic is None:
        return outputs, None
    inputs = circuit.slices("input")
    post, pre = [], []
    for name in circuit.weight_names:
        at = np.asarray(plastic.get(name, np.zeros(0, dtype=np.int64)), dtype=np.int64)
        if at.size and (at.min() < 0 or at.max() >= structure[name][0].size or (np.diff(at) <= 0).any()):
            raise ParameterError(f"plastic[{name!r}] must be increasing positions in 0..{structure[name][0].size - 1}"
                                 f" (the synapses of structure[{name!r}]).")
        proj = circuit.projection[name]
        r, c = structure[name]
        post.append(r[at] + slices[proj.post].start)
        pre.append(c[at] + (n + inputs[proj.pre].start if proj.pre in inputs else slices[proj.pre].start))
    post, pre = np.concatenate(post), np.concatenate(pre)
    act = np.concatenate([rates, x.T], axis=0)  # (N + n_in, m)
    jac = act[pre].T[:, None, :] * g_t[post].T[None, :, :]  # (m, n_out, M)
    return outputs, jac.reshape(m * out_idx.size, post.size)


def gmres_columns(system: scipy.sparse.csr_matrix, rhs: np.ndarray, rtol: float) -> np.ndarray:
    """``system^-1 rhs`` column by column by GMRES (restart 100) to relative residual ``rtol``; NaN columns where a
    solve stops short of it."""
    out = np.empty_like(rhs, dtype=np.float64)
    for k in range(rhs.shape[1]):
        if not rhs[:, k].any():
            out[:, k] = 0.0
            continue
        sol, info = scipy.sparse.linalg.gmres(system, rhs[:, k], rtol=rtol, atol=0.0, restart=_GMRES_RESTART,
                                              maxiter=max(10, system.shape[0] // _GMRES_RESTART))
        out[:, k] = sol if info == 0 else np.nan
    return out
