"""Optimal allocations over all probe counts, and the minimal budget with its per-projection requirement.

For one generic point with ``m_top`` probes, ``J(m)`` (the first ``m`` probes' rows of ``dF/dtheta``) grows by rows
with ``m``, so every column set independent in ``J(m)`` stays independent in ``J(m + 1)``: the column matroids
``M_1, M_2, ...`` are nested (weak maps). Hence one allocation reaches, at every ``m`` at once, the largest plastic
rank any allocation of the budget can have, ``min(budget, r_allowed(m))``: start from a basis of ``M_{m*}`` and
extend it greedily level by level (matroid augmentation). Linear circuits use exact ranks over GF(p)
(:mod:`neurosubset.theory.modular_ranks`; beyond ``m = q``, the stacked input dimension, the matroid no longer changes).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.linalg

from .._checks import AllocationError, check_int, check_names
from ..allocation import Allocation
from ..circuit import Circuit
from ..dynamics import is_affine
from ._ranks import RANK_RTOL, TheoryError, _check_common, _columns, _full_jacobian, _point, _rank
from .modular_ranks import _GF_KEY, _POINT_KEY, _mat, gf_rank, mod_jacobian, mod_point, random_prime

__all__ = ["optimal_allocation", "minimal_budget", "MinimalBudget"]


def _within(circuit: Circuit, within: Sequence[str] | None) -> list[str]:
    if isinstance(within, str):
        raise AllocationError(f"The 'within' parameter must be a list of weight names. Got the string {within!r}.")
    names = list(circuit.weight_names) if within is None else list(within)
    check_names("within", names, circuit.weight_names, what="Weight", error=AllocationError)
    return [w for w in circuit.weight_names if w in names]


def _levels(circuit: Circuit) -> int:
    """``q``: the stacked input dimension of a probe; for ``m >= q`` a linear circuit's column matroid is fixed."""
    return circuit.n_in * circuit.dynamics.input_steps(circuit)


def _gf_jacobian(circuit: Circuit, m: int, seed: int) -> tuple[np.ndarray, int]:
    """The GF(p) Jacobian ``(m n_out, N)`` at one point with ``m`` probes (redrawn if ``det(I - W) = 0 mod p``)."""
    for k in range(8):
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_POINT_KEY, _GF_KEY, 0x0B, k)))
        p = random_prime(rng)
        weights, probes = mod_point(circuit, m, p, rng)
        try:
            return mod_jacobian(circuit, weights, probes, p), p
        except TheoryError:
            continue
    raise TheoryError("det(I - W) = 0 mod p at 8 random points in a row: the steady circuit's I - W is singular.")


def _pivots(mat: np.ndarray, p: int) -> list[int]:
    """Pivot columns of the reduced row echelon form over GF(p): the first basis in column order."""
    if mat.size == 0:
        return []
    red, rank = _mat(np.mod(mat, p), p).rref()
    out, col = [], -1
    for i in range(rank):
        col += 1
        while int(red[i, col]) == 0:
            col += 1
        out.append(col)
    return out


def _greedy(jac: np.ndarray, p: int, n_out: int, cand: np.ndarray, budget: int, start: int, top: int) -> list[int]:
    """Nested greedy over ``m = start .. top`` among columns ``cand`` (positions in ``jac``), then fill."""
    chosen: list[int] = []
    for m in range(max(start, 1), top + 1):
        if len(chosen) >= budget:
            break
        taken = set(chosen)
        order = chosen + [c for c in cand if c not in taken]
        piv = _pivots(jac[:m * n_out][:, order], p)
        new = [order[i] for i in piv if i >= len(chosen)]
        chosen += new[:budget - len(chosen)]
    if len(chosen) < budget:  # ranks are at their maximum; the rest cannot raise them (nor lower them)
        taken = set(chosen)
        chosen += [c for c in cand if c not in taken][:budget - len(chosen)]
    return chosen


def _profile(jac: np.ndarray, p: int, n_out: int, cols: Sequence[int], top: int) -> tuple[int, ...]:
    return tuple(gf_rank(jac[:m * n_out][:, list(cols)], p) if len(cols) else 0 for m in range(1, top + 1))


def _to_allocation(circuit: Circuit, names: list[str], chosen: Sequence[int], allowed_cols: np.ndarray
                   ) -> Allocation:
    """Columns of the full Jacobian (positions in ``allowed_cols``' numbering: full-Jacobian columns) -> masks."""
    present = {w: np.flatnonzero(circuit.eligible[w]) for w in circuit.weight_names}
    first = np.cumsum([0] + [present[w].size for w in circuit.weight_names])
    masks = {w: np.zeros(circuit.shape(w), dtype=bool) for w in circuit.weight_names}
    for c in chosen:
        k = int(np.searchsorted(first, c, side="right") - 1)
        w = circuit.weight_names[k]
        masks[w].flat[present[w][c - first[k]]] = True
    return Allocation(masks, strategy="optimal", circuit_name=circuit.name)


def _families(circuit: Circuit, names: list[str]) -> list[list[str]]:
    """Weight sets tried first for an affine allocation: each weight alone, then all read-outs together."""
    out = [[w] for w in names]
    reads = [w for w in names if circuit.region[circuit.projection[w].post].role == "output"]
    if len(reads) > 1:
        out.append(reads)
    return out


def optimal_allocation(circuit: Circuit, budget: int, m: int | None = None, within: Sequence[str] | None = None,
                       seed: int = 0, *, rtol: float = RANK_RTOL, method: str = "auto") -> Allocation:
    """The most expressive allocation of ``budget`` plastic synapses, over all probe counts.

    Parameters
    ----------
    circuit : Circuit
    budget : int
        ``M``, the number of plastic synapses (0 <= M <= present synapses in ``within``).
    m : int, optional
        ``None`` (default): the objective over all ``m`` below. An integer: only the plastic rank at that ``m`` (the
        greedy pivoted QR of the float Jacobian, for ReLU circuits or a single probe count).
    within : list of str, optional
        Weights whose (structurally present) synapses may be chosen; default all.
    seed : int
        Seed of the random point.
    rtol, method
        Float-rank tolerance and Jacobian method of the single-``m`` path (see :func:`certify`).

    Returns
    -------
    Allocation
        ``strategy="optimal"``.

    Notes
    -----
    Objective (``m=None``), lexicographic: (1) the largest ``m*`` at which the plastic rank reaches ``dim V`` (rank
    equality then holds at every smaller ``m``, so MP > 0 for all ``m <= m*``; MP = 0 beyond for linear circuits);
    (2) then the plastic rank at ``m* + 1``, ``m* + 2``, ...; (3) ties broken in favour of allocations whose outputs
    are affine in the plastic weights (MP = 1 rather than merely MP > 0), trying each allowed weight alone, then
    all read-outs together.

    The nested greedy (module docstring) attains the upper bound ``min(budget, r_allowed(m))`` at every ``m``
    simultaneously, so it is optimal for (1) and (2); ``m* = max{m : r_allowed(m) = dim V(m) <= budget}``.
    Ranks are exact over GF(p) at one random point (lower bounds on the generic ranks, exact except with
    probability ``<= r d / p``, see :mod:`neurosubset.theory.modular_ranks`), for ``m = 1 .. q`` with ``q`` the stacked
    input dimension (``n_in``, or ``n_in T`` for discrete circuits): beyond ``q`` no rank changes. Linear circuits
    only; ReLU circuits need an integer ``m``.
    """
    names = _within(circuit, within)
    budget = check_int("budget", budget, minimum=0, error=AllocationError)
    allowed = {w: circuit.eligible[w] for w in names}
    eligible = int(sum(v.sum() for v in allowed.values()))
    if budget > eligible:
        raise AllocationError(f"The 'budget' parameter of optimal_allocation must be <= {eligible} (the present "
                              f"synapses in {names}). Got {budget} instead.")
    if m is not None:
        return _optimal_at(circuit, budget, m, names, allowed, seed, rtol, method)
    seed = check_int("seed", seed, minimum=0)
    if circuit.nonlinearity != "linear":
        raise TheoryError(f"optimal_allocation over all m needs a linear circuit (exact ranks); circuit "
                          f"{circuit.name!r} is {circuit.nonlinearity!r}. Pass an integer 'm'.")
    top = _levels(circuit)
    jac, p = _gf_jacobian(circuit, top, seed)
    n_out = circuit.n_out
    cand = _columns(circuit, allowed)
    full = [gf_rank(jac[:k * n_out], p) for k in range(1, top + 1)]
    reach = _profile(jac, p, n_out, cand, top)
    m_star = max([k for k in range(1, top + 1) if reach[k - 1] == full[k - 1] <= budget], default=0)
    best = _greedy(jac, p, n_out, list(cand), budget, m_star, top)
    target = _profile(jac, p, n_out, best, top)
    for fam in _families(circuit, names):
        fam_cols = _columns(circuit, {w: circuit.eligible[w] for w in fam})
        if fam_cols.size < budget or fam_cols.size == cand.size:
            continue
        trial = _greedy(jac, p, n_out, list(fam_cols), budget, m_star, top)
        if _profile(jac, p, n_out, trial, top) == target:
            alloc = _to_allocation(circuit, names, trial, cand)
            if is_affine(circuit, alloc, seed=seed):
                return alloc
    return _to_allocation(circuit, names, best, cand)


def _optimal_at(circuit: Circuit, budget: int, m: int, names: list[str], allowed: dict, seed: int, rtol: float,
                method: str) -> Allocation:
    """The single-``m`` greedy: QR with column pivoting on the float Jacobian's allowed columns at one point."""
    if method == "auto":
        method = "adjoint" if circuit.dynamics.closed_adjoint(circuit) else "autograd"
    if method == "exact":
        method = "adjoint"
    m, seed, _, rtol = _check_common(m, seed, 2, rtol, method)
    cols = _columns(circuit, allowed)
    weights, probes = _point(circuit, m, seed, 0)
    jac = _full_jacobian(circuit, weights, probes, method)[:, cols]
    chosen = np.zeros(0, dtype=int)
    if budget > 0:
        r = _rank(jac, rtol)[0]
        _, piv = scipy.linalg.qr(jac, mode="r", pivoting=True)
        chosen = piv[:min(budget, r)]
        if budget > chosen.size:
            rest = np.setdiff1d(np.arange(cols.size), chosen)
            norms = np.linalg.norm(jac[:, rest], axis=0)
            chosen = np.concatenate([chosen, rest[np.argsort(-norms, kind="stable")[:budget - chosen.size]]])
    return _to_allocation(circuit, names, [int(cols[c]) for c in chosen], cols)


class MinimalBudget(int):
    """The minimal budget (an ``int``: the total) with the per-projection requirement.

    Attributes
    ----------
    by_projection : dict
        Weight name -> the fewest synapses of that weight that every full-rank allocation inside ``within`` must
        contain: ``dim V - rank(all allowed columns except that weight's)`` (matroid theory: the smallest
        intersection of a basis with a set ``S`` is ``r(E) - r(E \\ S)``).
    example : dict
        Weight name -> plastic count of one full-rank allocation of the minimal budget (a basis).
    """

    by_projection: dict
    example: dict

    def __new__(cls, total: int, by_projection: dict, example: dict):
        out = super().__new__(cls, total)
        out.by_projection, out.example = dict(by_projection), dict(example)
        return out

    def __repr__(self) -> str:
        return f"MinimalBudget({int(self)}, by_projection={self.by_projection})"


def minimal_budget(circuit: Circuit, m: int = 8, within: Sequence[str] | None = None, seed: int = 0, *,
                   points: int = 2, rtol: float = RANK_RTOL, method: str = "auto") -> MinimalBudget:
    """The fewest plastic synapses inside ``within`` whose allocation reaches ``full_rank`` (``dim V``).

    Parameters
    ----------
    circuit : Circuit
    m : int
        Number of probes.
    within : list of str, optional
        Weights whose synapses may be plastic; default all.
    seed, points, rtol, method
        As in :func:`certify` (linear circuits: exact ranks over GF(p) unless the float gaps are decisive).

    Returns
    -------
    MinimalBudget
        An ``int`` equal to ``full_rank`` (an allocation needs at least ``dim V`` columns to have rank ``dim V``,
        and a basis of the allowed columns has exactly that many), with ``by_projection``: the synapses each
        weight must contribute to every such allocation, and ``example``: the counts of one.

    Raises
    ------
    TheoryError
        If the synapses in ``within`` together have rank below ``full_rank`` (no budget there gives MP > 0), or
        the float ranks are indecisive on a ReLU circuit.
    """
    m, seed, points, rtol = _check_common(m, seed, points, rtol, method)
    names = _within(circuit, within)
    cols = _columns(circuit, {w: circuit.eligible[w] for w in names})
    if circuit.dynamics.rank_method(circuit) == "gfp" and method in ("auto", "exact"):
        jac, p = _gf_jacobian(circuit, m, seed)
        rank = (lambda c: gf_rank(jac[:, c], p))
    else:
        float_method = "autograd" if method == "auto" else method
        if float_method == "sketch":
            from ._ranks import _ranks
            (full_rank, _, _), (allowed_rank, _, _) = _ranks(circuit, m, seed, points, cols, rtol, "sketch")
            _check_reach(names, m, full_rank, allowed_rank)
            return MinimalBudget(full_rank, {}, {})
        weights, probes = _point(circuit, m, seed, 0)
        jac, p = _full_jacobian(circuit, weights, probes, float_method), 0
        rank = (lambda c: _rank(jac[:, c], rtol)[0])
    full_rank, allowed_rank = rank(np.arange(jac.shape[1])), rank(cols)
    _check_reach(names, m, full_rank, allowed_rank)
    need = {}
    for w in names:
        own = set(_columns(circuit, {w: circuit.eligible[w]}).tolist())
        need[w] = int(full_rank - rank(np.array([c for c in cols if c not in own], dtype=int)))
    if p:
        basis = [int(cols[i]) for i in _pivots(jac[:, cols], p)]
        example = _to_allocation(circuit, names, basis, cols).counts
    else:
        example = {}
    return MinimalBudget(full_rank, need, {w: example[w] for w in names} if example else {})


def _check_reach(names: list[str], m: int, full_rank: int, allowed_rank: int) -> None:
    if allowed_rank < full_rank:
        raise TheoryError(f"The synapses in within={names} reach rank {allowed_rank} < full_rank {full_rank} with "
                          f"m={m}: no allocation inside them reaches full rank (MP = 0 for every budget). Allow more "
                          f"weights in 'within' or use fewer probes.")
