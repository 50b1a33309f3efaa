"""Optimal allocations: greedy column selection on the Jacobian (QR with column pivoting), and the minimal budget.

The columns of ``dF/dtheta`` at a fixed generic point form a linear matroid, so the pivots of a column-pivoted QR
are a maximal-rank allocation for every budget (:func:`optimal_allocation`), and the fewest plastic synapses that
reach ``dim V`` is ``dim V`` itself whenever the allowed synapses reach it (:func:`minimal_budget`).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.linalg

from .._checks import AllocationError, check_int, check_names
from ..allocation import Allocation
from ..circuit import Circuit
from ._ranks import RANK_RTOL, TheoryError, _check_common, _columns, _full_jacobian, _point, _rank, _ranks

__all__ = ["optimal_allocation", "minimal_budget"]


def _within(circuit: Circuit, within: Sequence[str] | None) -> list[str]:
    if isinstance(within, str):
        raise AllocationError(f"The 'within' parameter must be a list of weight names. Got the string {within!r}.")
    names = list(circuit.weight_names) if within is None else list(within)
    check_names("within", names, circuit.weight_names, what="Weight", error=AllocationError)
    return [w for w in circuit.weight_names if w in names]


def optimal_allocation(circuit: Circuit, budget: int, m: int = 8, within: Sequence[str] | None = None,
                       seed: int = 0, *, rtol: float = RANK_RTOL, method: str = "autograd") -> Allocation:
    """A maximal-rank allocation of ``budget`` plastic synapses: greedy column selection on the Jacobian.

    Parameters
    ----------
    circuit : Circuit
    budget : int
        ``M``, the number of plastic synapses (0 <= M <= present synapses in ``within``).
    m : int
        Number of probes the allocation is optimised for.
    within : list of str, optional
        Weights whose (structurally present) synapses may be chosen; default all.
    seed : int
        Seed of the random point (the same point as :func:`certify`'s first).
    rtol : float
        Relative singular-value tolerance of the rank.
    method : {"autograd", "adjoint"}
        How the Jacobian is computed (see :func:`certify`).

    Returns
    -------
    Allocation
        ``strategy="optimal"``. Its ``plastic_rank`` equals ``min(budget, r)``, ``r`` the rank over all allowed
        synapses, which is the largest rank any allocation of that budget inside ``within`` can have.

    Notes
    -----
    QR with column pivoting (LAPACK ``geqp3``) on the allowed columns of ``dF/dtheta`` at one random point: the
    first ``min(budget, r)`` pivots are linearly independent. Since the columns form a linear matroid, every
    independent set extends to a basis, so these pivots are a maximal-rank choice for the budget; at a random
    point the rank of every column subset equals its generic rank with probability one. If ``budget > r`` the
    rest of the budget goes to the remaining allowed synapses in decreasing order of their Jacobian column norm
    (their sensitivity at the point); the rank cannot grow any more, and no choice lowers it.
    """
    m, seed, _, rtol = _check_common(m, seed, 2, rtol, method)
    names = _within(circuit, within)
    budget = check_int("budget", budget, minimum=0, error=AllocationError)
    allowed = {w: circuit.structure[w] for w in names}
    eligible = int(sum(v.sum() for v in allowed.values()))
    if budget > eligible:
        raise AllocationError(f"The 'budget' parameter of optimal_allocation must be <= {eligible} (the present "
                              f"synapses in {names}). Got {budget} instead.")
    cols = _columns(circuit, allowed)
    weights, probes = _point(circuit, m, seed, 0)
    jac = _full_jacobian(circuit, weights, probes, method)[:, cols]
    chosen = np.zeros(0, dtype=int)
    if budget > 0:
        r, _ = _rank(jac, rtol)
        _, piv = scipy.linalg.qr(jac, mode="r", pivoting=True)
        chosen = piv[:min(budget, r)]
        if budget > chosen.size:
            rest = np.setdiff1d(np.arange(cols.size), chosen)
            norms = np.linalg.norm(jac[:, rest], axis=0)
            chosen = np.concatenate([chosen, rest[np.argsort(-norms, kind="stable")[:budget - chosen.size]]])
    # map chosen allowed-column positions back to (weight, flat index)
    owner, flat = [], []
    for w in names:
        idx = np.flatnonzero(allowed[w])
        owner.extend([w] * idx.size)
        flat.append(idx)
    flat_all = np.concatenate(flat) if flat else np.zeros(0, dtype=int)
    masks = {w: np.zeros(circuit.shape(w), dtype=bool) for w in circuit.weight_names}
    for c in chosen:
        masks[owner[c]].flat[flat_all[c]] = True
    return Allocation(masks, strategy="optimal", circuit_name=circuit.name)


def minimal_budget(circuit: Circuit, m: int = 8, within: Sequence[str] | None = None, seed: int = 0, *,
                   points: int = 2, rtol: float = RANK_RTOL, method: str = "autograd") -> int:
    """The fewest plastic synapses inside ``within`` whose allocation reaches ``full_rank`` (``dim V``).

    Parameters
    ----------
    circuit : Circuit
    m : int
        Number of probes.
    within : list of str, optional
        Weights whose synapses may be plastic; default all.
    seed, points, rtol, method
        As in :func:`certify`.

    Returns
    -------
    int
        ``full_rank``: an allocation needs at least ``dim V`` columns to have rank ``dim V``, and a basis of the
        allowed columns (e.g. :func:`optimal_allocation` with this budget) has exactly that many.

    Raises
    ------
    TheoryError
        If the synapses in ``within`` together have rank below ``full_rank`` (no budget there gives MP > 0).
    """
    m, seed, points, rtol = _check_common(m, seed, points, rtol, method)
    names = _within(circuit, within)
    cols = _columns(circuit, {w: circuit.structure[w] for w in names})
    (full_rank, _), (allowed_rank, _) = _ranks(circuit, m, seed, points, cols, rtol, method)
    if allowed_rank < full_rank:
        raise TheoryError(f"The synapses in within={names} reach rank {allowed_rank} < full_rank {full_rank} with "
                          f"m={m}: no allocation inside them reaches full rank (MP = 0 for every budget). Allow more "
                          f"weights in 'within' or use fewer probes.")
    return full_rank
