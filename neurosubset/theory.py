"""Theory without fitting: the exact expressivity certificate, optimal allocations and the paper's heuristic.

Let ``F(theta) = (f(theta; x_1), ..., f(theta; x_m))`` in ``R^E`` (``E = m * n_out``, probe-major) be the outputs
on ``m`` probes as a function of all structurally present weights ``theta``, and ``theta_A`` the plastic ones.

- ``full_rank`` = generic rank of ``dF/dtheta`` = ``dim V``, ``V`` the closure of the set of teacher outputs.
- ``plastic_rank`` = generic rank of ``dF/dtheta_A`` = ``dim S``, ``S`` the student's reachable set.

For linear circuits ``F`` is polynomial (rational for ``"steady"`` dynamics) in the weights, ``V`` is irreducible
and ``S`` is a subset of ``V``; then (Schlisselberg & Darshan 2025, and /work/shared/SCIENCE.md):

- ``plastic_rank < full_rank``: ``S`` has measure zero in ``V`` and the teacher's output has a density on ``V``,
  so ``MP = 0`` exactly (verdict ``"zero"``);
- ranks equal and ``F`` affine in ``theta_A``: ``S`` is an affine space of dimension ``dim V`` inside ``V``, so
  ``S = V`` and ``MP = 1`` exactly (verdict ``"one"``);
- ranks equal, not affine: ``S`` contains an open piece of ``V`` around the student's own output, so
  ``MP > 0``; its value needs fitting (verdict ``"positive"``).

Generic ranks are computed at random points (weights from :meth:`Circuit.sample_weights`, probes from
:meth:`Circuit.sample_probes`), where they equal the generic rank with probability one; the maximum over several
independent points guards against an unlucky draw. Columns of the Jacobian are derivatives with respect to each
weight in units of its initial standard deviation (rank-neutral, but it puts all columns on one scale).

Because the columns of a fixed Jacobian form a linear matroid, picking columns greedily (QR with column
pivoting) gives a maximal-rank allocation for every budget (:func:`optimal_allocation`), and the fewest plastic
synapses that reach ``dim V`` is ``dim V`` itself whenever the allowed synapses reach it (:func:`minimal_budget`).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import scipy.linalg
import torch

from ._checks import AllocationError, check_choice, check_int, check_names, check_real
from .allocation import Allocation
from .circuit import Circuit
from .dynamics import DTYPE, PlasticMap, is_affine

VERDICTS = ("zero", "one", "positive", "unproven")
HEURISTIC_VERDICTS = ("zero", "one", "in-between")
METHODS = ("autograd", "adjoint", "sketch")
# Relative SVD tolerance: a singular value counts when it exceeds RANK_RTOL * (largest singular value).
# Rounding noise of the float64 Jacobians here is ~1e-15 relative; the smallest generic singular values of the
# small and medium circuits measured in analysis/theory_vs_empirics.py stay above ~1e-6 relative, so 1e-9 sits in
# the gap (each certificate records the gap it saw: ``plastic_gap`` / ``full_gap``).
RANK_RTOL = 1e-9
_POINT_KEY = 0xCE27  # spawn key of the certificate's random points, independent of match_probability's trials
_MAX_BYTES = 2.5e8  # cap on the tangents held at once by the chunked autograd Jacobian


class TheoryError(ValueError):
    """A theory request cannot be answered (e.g. the allowed synapses cannot reach the full rank)."""


@dataclass(frozen=True)
class Certificate:
    """The exact expressivity certificate of an allocation (see :func:`certify`).

    Attributes
    ----------
    plastic_rank : int
        Generic rank of ``dF/dtheta_A`` (plastic weights only), ``dim S``.
    full_rank : int
        Generic rank of ``dF/dtheta`` (all structurally present weights), ``dim V``.
    affine : bool
        Whether the outputs are affine in the plastic weights (:func:`neurosubset.dynamics.is_affine`).
    verdict : {"zero", "one", "positive", "unproven"}
        ``"zero"``: MP = 0 exactly; ``"one"``: MP = 1 exactly; ``"positive"``: MP > 0, value needs fitting;
        ``"unproven"``: ReLU circuits, where the rank argument does not hold (ranks given for information).
    m : int
        Number of probes.
    n_plastic, n_synapses, n_equations : int
        ``M`` (plastic synapses), structurally present synapses, and ``E = m * n_out``.
    points : int
        Independent random points the ranks were maximised over.
    rtol : float
        Relative singular-value tolerance used for the ranks.
    method : {"autograd", "adjoint", "sketch"}
        How the Jacobian was computed.
    estimate : bool
        ``True`` for ``method="sketch"``: the ranks are randomised estimates (see :func:`certify`), not exact
        numerical ranks of the Jacobian, and the verdict inherits that.
    plastic_gap, full_gap : float
        Smallest, over the points attaining the rank, ratio of the last counted singular value to the first
        discarded one (``inf`` when none was discarded): how clear-cut the rank decision was.
    """

    plastic_rank: int
    full_rank: int
    affine: bool
    verdict: str
    m: int
    n_plastic: int
    n_synapses: int
    n_equations: int
    points: int
    rtol: float
    method: str
    plastic_gap: float
    full_gap: float
    estimate: bool = False

    def to_attrs(self, prefix: str = "certificate_") -> dict[str, int | float | str]:
        """netCDF-safe attributes (``bool`` becomes ``int``), keys prefixed with ``prefix``."""
        out: dict[str, int | float | str] = {}
        for key, value in asdict(self).items():
            out[prefix + key] = int(value) if isinstance(value, bool) else value
        return out


@dataclass(frozen=True)
class Heuristic:
    """The paper-style effective-count estimate of an allocation's expressivity (see :func:`heuristic`).

    Attributes
    ----------
    effective : int
        Effective plastic count: plastic synapses that the circuit can use, summed over weights and capped at
        ``required``.
    required : int
        The closed-form estimate of ``dim V`` (the effective count a maximal allocation reaches).
    by_weight : dict
        Weight name -> its effective count before the global cap.
    affine : bool
        Whether the outputs are affine in the plastic weights.
    verdict : {"zero", "one", "in-between"}
        ``"zero"`` if ``effective < required``; ``"one"`` if equal and affine; ``"in-between"`` otherwise.
    mp : float
        Predicted MP in [0, 1]: 0, 1, or ``1 - 2**-(1 + surplus)`` for ``"in-between"`` (see :func:`heuristic`).
    surplus : int
        Sum of ``by_weight`` minus ``required`` (negative for ``"zero"``).
    """

    effective: int
    required: int
    by_weight: dict
    affine: bool
    verdict: str
    mp: float
    surplus: int


# ---------------------------------------------------------------------------------------------- helpers
def _check_alloc(circuit: Circuit, alloc: Allocation) -> None:
    if not isinstance(alloc, Allocation):
        raise TypeError(f"The 'alloc' parameter must be an Allocation. Got {type(alloc).__name__}.")
    if set(alloc.masks) != set(circuit.weight_names):
        raise AllocationError(f"The allocation does not belong to circuit {circuit.name!r}: its weights are "
                              f"{sorted(alloc.masks)}, the circuit's {list(circuit.weight_names)}.")
    for name in circuit.weight_names:
        mask = alloc.masks[name]
        if mask.shape != circuit.shape(name):
            raise AllocationError(f"The allocation's mask for weight {name!r} has shape {mask.shape}; the circuit "
                                  f"needs {circuit.shape(name)} (n_post, n_pre).")
        if (mask & ~circuit.structure[name]).any():
            raise AllocationError(f"The allocation makes absent synapses of weight {name!r} plastic; only "
                                  f"structurally present synapses can be plastic.")


def _within(circuit: Circuit, within: Sequence[str] | None) -> list[str]:
    if isinstance(within, str):
        raise AllocationError(f"The 'within' parameter must be a list of weight names. Got the string {within!r}.")
    names = list(circuit.weight_names) if within is None else list(within)
    check_names("within", names, circuit.weight_names, what="Weight", error=AllocationError)
    return [w for w in circuit.weight_names if w in names]


def _columns(circuit: Circuit, masks: dict[str, np.ndarray]) -> np.ndarray:
    """Positions of the entries of ``masks`` among the full Jacobian's columns (structure, weight order)."""
    out, offset = [], 0
    for name in circuit.weight_names:
        present = np.flatnonzero(circuit.structure[name])
        chosen = np.flatnonzero(masks[name]) if name in masks else np.zeros(0, dtype=int)
        out.append(offset + np.searchsorted(present, chosen))
        offset += present.size
    return np.concatenate(out) if out else np.zeros(0, dtype=int)


def _point(circuit: Circuit, m: int, seed: int, k: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_POINT_KEY, k)))
    return circuit.sample_weights(rng), circuit.sample_probes(m, rng)


def _full_jacobian(circuit: Circuit, weights: dict[str, np.ndarray], probes: np.ndarray, method: str,
                   max_bytes: float = _MAX_BYTES) -> np.ndarray:
    """``dF/dtheta`` over all present synapses at one point, ``(E, N)``, columns in units of the init std.

    ``"autograd"``: torch.func, forward mode (JVPs) when ``N <= E``, reverse mode (VJPs) otherwise, vmapped over
    basis directions in chunks that keep the tangents under ``max_bytes``. ``"adjoint"``: the closed form of
    :meth:`PlasticMap.jacobian` (linear circuits; tests/test_dynamics.py checks it equals autograd).
    """
    full = Allocation.from_masks(circuit, dict(circuit.structure), strategy="full")
    frozen = {k: torch.as_tensor(v, dtype=DTYPE).unsqueeze(0) for k, v in weights.items()}
    probe_t = torch.as_tensor(probes, dtype=DTYPE).unsqueeze(0)
    fmap = PlasticMap(circuit, full, frozen, probe_t)
    theta = torch.as_tensor(np.concatenate([weights[k].ravel()[full.indices[k]] for k in circuit.weight_names]),
                            dtype=DTYPE)
    scale = np.concatenate([np.full(full.counts[k], circuit.init_std[k]) for k in circuit.weight_names])
    n, e = theta.numel(), probes.shape[0] * circuit.n_out
    if method == "sketch":
        raise TheoryError("The 'method' parameter 'sketch' gives ranks only, and this needs the Jacobian's columns "
                          "(pivoted QR). Use method='autograd' or 'adjoint'.")
    if n == 0:
        return np.zeros((e, 0))
    if method == "adjoint":
        if circuit.nonlinearity != "linear":
            raise TheoryError(f"The 'method' parameter 'adjoint' needs a linear circuit; circuit {circuit.name!r} "
                              f"is {circuit.nonlinearity!r}. Use method='autograd'.")
        jac = fmap.jacobian(theta.unsqueeze(0), method="adjoint")[0].numpy()
        return jac * scale

    def fn(t: torch.Tensor) -> torch.Tensor:
        return fmap(t.unsqueeze(0)).squeeze(0)

    # bytes one tangent direction needs: every activation along the way plus the weights
    states = probes.shape[0] * circuit.steps * sum(r.size for r in circuit.regions)
    per_dir = 8.0 * 4 * (n + states + e)
    chunk = int(max(1, min(max(n, e), max_bytes // per_dir)))
    blocks = []
    with torch.enable_grad():  # the caller may be under no_grad; restored on exit
        if n <= e:
            for a in range(0, n, chunk):
                basis = torch.eye(n, dtype=DTYPE)[a:a + chunk]
                cols = torch.func.vmap(lambda v: torch.func.jvp(fn, (theta,), (v,))[1])(basis)  # (chunk, E)
                blocks.append(cols.T)
            jac = torch.cat(blocks, dim=1)
        else:
            _, vjp = torch.func.vjp(fn, theta)
            for a in range(0, e, chunk):
                basis = torch.eye(e, dtype=DTYPE)[a:a + chunk]
                blocks.append(torch.func.vmap(vjp)(basis)[0])  # (chunk, N)
            jac = torch.cat(blocks, dim=0)
    return jac.detach().numpy() * scale


def _sketch_ranks(circuit: Circuit, weights: dict[str, np.ndarray], probes: np.ndarray, cols: np.ndarray,
                  rtol: float, seed: int, k: int, max_bytes: float = _MAX_BYTES
                  ) -> tuple[tuple[int, float], tuple[int, float]]:
    """Matrix-free randomised ranks of the full and the plastic Jacobian at one point.

    ``Y = J Omega`` with ``Omega`` Gaussian ``(N, q)``, ``q = min(N, E)`` (and ``J_A Omega_A`` for the plastic
    columns, ``q_A = min(M, E)``), built from JVPs in chunks of directions: the ``(E, N)`` Jacobian is never held,
    only ``(E, q)`` sketches. With probability 1, ``rank(J Omega) = rank(J)`` when ``q >= rank(J)``, which
    ``q = min(N, E)`` guarantees; in floating point the random sketch can blur a weak singular-value gap, so the
    result is an estimate.
    """
    full = Allocation.from_masks(circuit, dict(circuit.structure), strategy="full")
    frozen = {kk: torch.as_tensor(v, dtype=DTYPE).unsqueeze(0) for kk, v in weights.items()}
    fmap = PlasticMap(circuit, full, frozen, torch.as_tensor(probes, dtype=DTYPE).unsqueeze(0))
    theta = torch.as_tensor(np.concatenate([weights[w].ravel()[full.indices[w]] for w in circuit.weight_names]),
                            dtype=DTYPE)
    scale = torch.as_tensor(np.concatenate([np.full(full.counts[w], circuit.init_std[w])
                                            for w in circuit.weight_names]), dtype=DTYPE)
    n, e = theta.numel(), probes.shape[0] * circuit.n_out

    def fn(t: torch.Tensor) -> torch.Tensor:
        return fmap(t.unsqueeze(0)).squeeze(0)

    states = probes.shape[0] * circuit.steps * sum(r.size for r in circuit.regions)
    chunk = int(max(1, max_bytes // (8.0 * 4 * (n + states + e))))
    gen = torch.Generator().manual_seed(int(np.random.SeedSequence(seed, spawn_key=(_POINT_KEY, 0x5E, k))
                                            .generate_state(1)[0]))

    def sketch(support: torch.Tensor) -> tuple[int, float]:
        q = min(int(support.numel()), e)
        if q == 0:
            return 0, float("inf")
        cols_out = []
        with torch.enable_grad():
            for a in range(0, q, chunk):
                c = min(chunk, q - a)
                omega = torch.zeros(c, n, dtype=DTYPE)
                omega[:, support] = torch.randn(c, int(support.numel()), generator=gen, dtype=DTYPE)
                omega *= scale  # columns in units of the init std, as for the exact ranks
                cols_out.append(torch.func.vmap(lambda v: torch.func.jvp(fn, (theta,), (v,))[1])(omega).detach())
        return _rank_of(torch.linalg.svdvals(torch.cat(cols_out).T), rtol)

    full_res = sketch(torch.arange(n))
    plastic_res = full_res if cols.size == n else sketch(torch.from_numpy(cols))
    return full_res, plastic_res


def _reduce(mat: torch.Tensor) -> torch.Tensor:
    """A matrix with the same singular values and at most ``min(mat.shape)`` rows: the QR factor ``R`` of the
    tall orientation when it is at least twice as tall as wide (cheaper to decompose), else the tall orientation."""
    tall = mat if mat.shape[0] >= mat.shape[1] else mat.T
    if tall.shape[0] >= 2 * tall.shape[1]:
        return torch.linalg.qr(tall, mode="r")[1]
    return tall


def _rank_of(s: torch.Tensor, rtol: float) -> tuple[int, float]:
    """Numerical rank of singular values ``s`` (descending): those above ``rtol * s_max``; and the gap
    ``s_r / s_{r+1}`` (``inf`` if nothing is discarded)."""
    s = s.numpy()
    if s.size == 0 or s[0] == 0.0 or not np.isfinite(s[0]):
        return 0, float("inf")
    r = int((s > rtol * s[0]).sum())
    if r == s.size:
        return r, float("inf")
    return r, float(s[r - 1] / max(s[r], np.finfo(float).tiny))


def _rank(mat: np.ndarray, rtol: float) -> tuple[int, float]:
    """Numerical rank of ``mat`` (singular values above ``rtol * s_max``) and the gap ``s_r / s_{r+1}``."""
    if mat.size == 0:
        return 0, float("inf")
    return _rank_of(torch.linalg.svdvals(_reduce(torch.from_numpy(np.ascontiguousarray(mat)))), rtol)


def _point_ranks(jac: np.ndarray, cols: np.ndarray, rtol: float) -> tuple[tuple[int, float], tuple[int, float]]:
    """Ranks (and gaps) of the full Jacobian ``(E, N)`` and of its plastic columns ``cols``.

    When the plastic block ``A`` is wide (``M >= 2 E``) one QR serves both: ``A^T = Q R`` and the full Jacobian's
    transpose ``[A^T; B^T]`` has the singular values of ``[R; B^T]`` (``diag(Q, I)`` has orthonormal columns).
    """
    full_t = torch.from_numpy(np.ascontiguousarray(jac))
    if cols.size == jac.shape[1]:
        res = _rank_of(torch.linalg.svdvals(_reduce(full_t)), rtol)
        return res, res
    if cols.size == 0 or jac.shape[0] == 0:
        return _rank_of(torch.linalg.svdvals(_reduce(full_t)), rtol), (0, float("inf"))
    rest = np.ones(jac.shape[1], dtype=bool)
    rest[cols] = False
    plastic_t, rest_t = full_t[:, torch.from_numpy(cols)], full_t[:, torch.from_numpy(rest)]
    if cols.size >= 2 * jac.shape[0]:
        r_a = torch.linalg.qr(plastic_t.T, mode="r")[1]
        plastic = _rank_of(torch.linalg.svdvals(r_a), rtol)
        full = _rank_of(torch.linalg.svdvals(_reduce(torch.cat([r_a, rest_t.T]))), rtol)
        return full, plastic
    plastic = _rank_of(torch.linalg.svdvals(_reduce(plastic_t)), rtol)
    return _rank_of(torch.linalg.svdvals(_reduce(full_t)), rtol), plastic


def _max_rank(results: list[tuple[int, float]]) -> tuple[int, float]:
    best = max(r for r, _ in results)
    return best, float(min(g for r, g in results if r == best))


def _ranks(circuit: Circuit, m: int, seed: int, points: int, cols: np.ndarray, rtol: float, method: str
           ) -> tuple[tuple[int, float], tuple[int, float]]:
    """(rank, gap) of the full Jacobian and of its columns ``cols``, each maximised over ``points`` random points."""
    full_res, sub_res = [], []
    for k in range(points):
        weights, probes = _point(circuit, m, seed, k)
        if method == "sketch":
            full, sub = _sketch_ranks(circuit, weights, probes, cols, rtol, seed, k)
        else:
            full, sub = _point_ranks(_full_jacobian(circuit, weights, probes, method), cols, rtol)
        full_res.append(full)
        sub_res.append(sub)
    return _max_rank(full_res), _max_rank(sub_res)


def _check_common(m: int, seed: int, points: int, rtol: float, method: str) -> tuple[int, int, int, float]:
    m = check_int("m", m, minimum=1)
    seed = check_int("seed", seed, minimum=0)
    points = check_int("points", points, minimum=2)
    rtol = check_real("rtol", rtol, low=0.0, high=1.0, low_open=True)
    check_choice("method", method, METHODS)
    return m, seed, points, rtol


# ---------------------------------------------------------------------------------------------- public API
def certify(circuit: Circuit, alloc: Allocation, m: int = 4, seed: int = 0, *, points: int = 2,
            rtol: float = RANK_RTOL, method: str = "autograd") -> Certificate:
    """Decide, without fitting, whether ``MP(alloc, m)`` is exactly 0, exactly 1, or positive.

    Parameters
    ----------
    circuit : Circuit
    alloc : Allocation
        The plastic synapses (``M`` of them).
    m : int
        Number of probes.
    seed : int
        Point ``k`` (weights and probes) is drawn with ``SeedSequence(seed, spawn_key=(0xCE27, k))``.
    points : int
        Independent random points (>= 2); each rank is the maximum over them.
    rtol : float
        Relative singular-value tolerance: ranks count singular values above ``rtol * s_max``.
    method : {"autograd", "adjoint", "sketch"}
        Jacobian by torch autograd (default, any circuit) or by the exact adjoint closed form (linear circuits;
        equal to autograd to rounding). Never finite differences. ``"sketch"``: for circuits whose ``(E, N)``
        Jacobian does not fit in memory, a matrix-free randomised estimate: ranks of ``J Omega`` for Gaussian
        ``Omega`` with ``min(N, E)`` columns, from JVPs in chunks (equal to the rank with probability 1; in floating
        point an estimate, flagged by ``Certificate.estimate``).

    Returns
    -------
    Certificate
        ``plastic_rank``, ``full_rank``, ``affine``, ``verdict`` and diagnostics.

    Notes
    -----
    The full and the plastic Jacobian at a point share one computation: the plastic one is a column subset of the
    ``(E, N)`` full one. Cost: one Jacobian and two SVDs per point.

    ReLU circuits get the verdict ``"unproven"``. The rank argument needs ``V`` (the teacher outputs' set) to be
    an irreducible variety on which the teacher's output has a density. For ReLU nets hidden units that are dead
    on all probes happen with positive probability and lower the dimension of the teacher's output set on that
    event, so a rank-deficient allocation can still have MP > 0, and an affine, full-rank one (only the output
    layer plastic) can have MP far below 1 (about 0.49 for a 3-3-1 ReLU net with m = 3). The ranks are reported
    for information only.

    Examples
    --------
    >>> net = feedforward([3, 2])                                              # doctest: +SKIP
    >>> certify(net, allocate(net, 6, within=["W1"]), m=3).verdict             # doctest: +SKIP
    'one'
    """
    _check_alloc(circuit, alloc)
    m, seed, points, rtol = _check_common(m, seed, points, rtol, method)
    cols = _columns(circuit, dict(alloc.masks))
    (full_rank, full_gap), (plastic_rank, plastic_gap) = _ranks(circuit, m, seed, points, cols, rtol, method)
    affine = is_affine(circuit, alloc, seed=seed)
    if circuit.nonlinearity != "linear":
        verdict = "unproven"
    elif plastic_rank < full_rank:
        verdict = "zero"
    elif affine:
        verdict = "one"
    else:
        verdict = "positive"
    return Certificate(plastic_rank=plastic_rank, full_rank=full_rank, affine=bool(affine), verdict=verdict, m=m,
                       n_plastic=alloc.size, n_synapses=circuit.n_synapses, n_equations=m * circuit.n_out,
                       points=points, rtol=rtol, method=method, plastic_gap=plastic_gap, full_gap=full_gap,
                       estimate=method == "sketch")


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


# ---------------------------------------------------------------------------------------------- heuristic
def _layer_ranks(circuit: Circuit, m: int) -> tuple[dict[str, int], dict[str, int]]:
    """Closed-form ranks per weight: ``r_in`` (presynaptic activity over probes and steps) and ``r_out``
    (the output's sensitivity to the postsynaptic drive, stacked over the steps the weight acts at)."""
    size = {r.name: r.size for r in circuit.regions}
    relu = circuit.nonlinearity == "relu"
    r_in, r_out = {}, {}
    if circuit.dynamics == "feedforward":
        rk: dict[str, int] = {}
        for q in circuit.order:
            if circuit.region[q].role == "input":
                rk[q] = min(size[q], m)
            elif relu and circuit.region[q].role == "hidden":
                rk[q] = min(size[q], m)  # a ReLU can raise the rank of its input; at most m probes
            else:
                rk[q] = min(size[q], m, sum(rk[p.pre] for p in circuit.projections_into(q)))
        co: dict[str, int] = {}
        for q in reversed(circuit.order):
            if circuit.region[q].role == "output":
                co[q] = size[q]
            else:
                co[q] = min(size[q], sum(co[p.post] for p in circuit.projections if p.pre == q))
        for p in circuit.projections:
            r_in[p.name], r_out[p.name] = rk[p.pre], co[p.post]
        return r_in, r_out
    if circuit.dynamics == "steady":
        for p in circuit.projections:
            role = circuit.region[p.pre].role
            r_in[p.name] = min(size[p.pre], m) if role == "input" else min(size[p.pre], m, circuit.n_in)
            r_out[p.name] = min(size[p.post], circuit.n_out)
        return r_in, r_out
    # discrete: unroll over t = 1..T, h(0) = 0
    steps = circuit.steps
    hidden = [r.name for r in circuit.regions if r.role == "hidden"]
    span = {q: [0] * (steps + 1) for q in hidden}  # dim of the space h_q(1..t) lives in, over all probes
    for t in range(1, steps + 1):
        for q in hidden:
            drive = sum(span[p.pre][t - 1] if p.pre in span else size[p.pre] for p in circuit.projections_into(q))
            span[q][t] = (size[q] if drive else 0) if relu else min(size[q], drive)
    n_read = {q: sum(size[p.post] for p in circuit.projections
                     if p.pre == q and circuit.region[p.post].role == "output") for q in hidden}
    g = {q: [0] * (steps + 2) for q in hidden}  # rank of dy/dh_q(t)
    co = {q: [0] * (steps + 2) for q in hidden}  # rank of dy/dh_q(t..T) stacked
    for t in range(steps, 0, -1):
        for q in hidden:
            nxt = [p.post for p in circuit.projections if p.pre == q and p.post in span]
            if t == steps:
                g[q][t] = co[q][t] = min(size[q], n_read[q])
            else:
                g[q][t] = min(size[q], circuit.n_out, sum(g[s][t + 1] for s in nxt))
                co[q][t] = min(size[q], co[q][t + 1] + g[q][t])
    for p in circuit.projections:
        pre_role, post_role = circuit.region[p.pre].role, circuit.region[p.post].role
        if post_role == "output":
            r_in[p.name] = min(size[p.pre], m) if pre_role == "input" else min(span[p.pre][steps], m)
            r_out[p.name] = size[p.post]
            continue
        if pre_role == "input":
            times = list(range(1, steps + 1))  # x(t) drives h(t)
            r_in[p.name] = min(size[p.pre], m * steps)
        else:
            times = [t for t in range(2, steps + 1) if span[p.pre][t - 1] > 0]  # h(t-1) drives h(t)
            per = [min(span[p.pre][t - 1], m) for t in times]
            r_in[p.name] = min(size[p.pre], span[p.pre][steps - 1], sum(per)) if times else 0
        r_out[p.name] = min(size[p.post], co[p.post][times[0]], sum(g[p.post][t] for t in times)) if times else 0
    return r_in, r_out


def _effective(mask: np.ndarray, a: int, b: int) -> int:
    """Paper's principle for one weight: rows use at most ``a`` synapses, columns at most ``b``, all ``a * b``."""
    if not mask.any():
        return 0
    return int(min(np.minimum(mask.sum(axis=1), a).sum(), np.minimum(mask.sum(axis=0), b).sum(), a * b))


def _chain_sizes(circuit: Circuit) -> list[int] | None:
    """Layer sizes ``[d_0, ..., d_L]`` if the circuit is a dense feed-forward chain, else ``None``."""
    if circuit.dynamics != "feedforward" or len(circuit.input_regions) != 1 or len(circuit.output_regions) != 1:
        return None
    if any(not mask.all() for mask in circuit.structure.values()):
        return None
    q, sizes = circuit.input_regions[0], []
    while True:
        sizes.append(circuit.region[q].size)
        out = [p for p in circuit.projections if p.pre == q]
        if not out:
            break
        if len(out) != 1 or len(circuit.projections_into(out[0].post)) != 1:
            return None
        q = out[0].post
    return sizes if len(sizes) == len(circuit.regions) else None


def _required(circuit: Circuit, m: int, r_in: dict[str, int], r_out: dict[str, int]) -> int:
    """Closed-form estimate of ``dim V``."""
    e = m * circuit.n_out
    sizes = _chain_sizes(circuit)
    if sizes is not None and circuit.nonlinearity == "linear":
        # Y = P X with P = W_L ... W_1 of rank <= b: the rank-b matrices of size d_L x min(m, d_0)
        b = min([m] + sizes)
        return b * (sizes[-1] + min(m, sizes[0]) - b)
    if sizes is not None:
        # ReLU chain: parameters minus one positive rescaling per hidden unit, at most E
        hidden = sum(sizes[1:-1])
        return int(min(e, circuit.n_synapses - hidden))
    if circuit.nonlinearity == "linear":
        # linear outputs are Y = M Xbar with Xbar the (n_in * steps) x m stacked probes: dim V <= n_out rank(Xbar)
        e = min(e, circuit.n_out * min(m, circuit.n_in * (circuit.steps if circuit.dynamics == "discrete" else 1)))
    full = sum(_effective(circuit.structure[w], r_in[w], r_out[w]) for w in circuit.weight_names)
    return int(min(e, full))


def heuristic(circuit: Circuit, alloc: Allocation, m: int = 4) -> Heuristic:
    """The paper's effective-count estimate of an allocation's expressivity, in closed form (no fitting).

    Parameters
    ----------
    circuit : Circuit
    alloc : Allocation
    m : int
        Number of probes.

    Returns
    -------
    Heuristic
        ``effective``, ``required``, per-weight counts, predicted ``verdict`` and ``mp``.

    Notes
    -----
    Principle (Schlisselberg & Darshan 2025): plastic synapses beyond what a neuron's inputs can use are wasted.
    For weight ``w`` with ``k_i`` plastic synapses in row ``i`` and ``l_j`` in column ``j``::

        eff_w = min(sum_i min(k_i, r_in), sum_j min(l_j, r_out), r_in * r_out)

    ``r_in`` is the rank of the presynaptic activity over the ``m`` probes (and the steps the weight acts at),
    ``r_out`` the rank of the output's sensitivity to the postsynaptic drive (stacked over those steps). Both are
    propagated through the region graph in closed form, assuming generic weights:

    - feed-forward: ``rank(h_q) = min(n_q, m, sum of the presynaptic ranks)``; a ReLU region gets
      ``min(n_q, m)`` (a ReLU can raise the rank); the sensitivity rank of a region is
      ``min(n_q, sum of its targets' sensitivity ranks)``, ``n_o`` for an output region.
    - discrete (RNN): unrolled in time from ``h(0) = 0``; the activity of a hidden region up to step ``t`` lies
      in a space of dimension ``min(n_q, sum of its sources' dimensions at t - 1)`` (a Krylov space), each
      step adds at most ``m`` to the rank; sensitivities are propagated backwards the same way.
    - steady: ``r_in = min(n_pre, m, n_in)``, ``r_out = min(n_post, n_out)`` (crude).

    ``required`` estimates ``dim V``: exact for dense linear feed-forward chains,
    ``b (d_L + min(m, d_0) - b)`` with ``b = min(m, d_0, ..., d_L)``; ReLU chains ``min(E, N - hidden units)``;
    otherwise ``min(E', sum of eff_w over the full structure)``, with ``E' = n_out min(m, n_in T)`` for linear
    circuits (outputs are linear in the ``n_in T`` stacked inputs of each probe; ``T = 1`` unless discrete) and
    ``E' = E`` for ReLU. It ignores gauge symmetries (e.g. the GL(n) of a linear RNN) and so can overestimate
    ``dim V`` when ``E'`` does not cap it. ``effective`` is
    ``min(sum_w eff_w, required)``.

    Prediction: ``"zero"`` (mp 0) if ``sum_w eff_w < required``; ``"one"`` (mp 1) if not and the outputs are
    affine in the plastic weights (:func:`neurosubset.dynamics.is_affine`); otherwise ``"in-between"`` with
    ``mp = 1 - 2**-(1 + surplus)``, ``surplus = sum_w eff_w - required``: an exactly determined polynomial system
    is matched about half the time (the teacher must lie on the reachable side of a fold), and each redundant
    effective synapse is taken to halve the chance of a miss. The last rule is a rough guess, not a theorem.

    For a single linear layer it is exact: ``r_in = min(m, d_in)``, ``r_out = d_out``, so ``effective =
    required = d_out min(m, d_in)`` iff every row has ``k_i >= min(m, d_in)``, the closed-form condition for
    MP = 1 (MP = 0 otherwise).
    """
    _check_alloc(circuit, alloc)
    m = check_int("m", m, minimum=1)
    r_in, r_out = _layer_ranks(circuit, m)
    by_weight = {w: _effective(alloc.masks[w], r_in[w], r_out[w]) for w in circuit.weight_names}
    required = _required(circuit, m, r_in, r_out)
    total = int(sum(by_weight.values()))
    affine = bool(is_affine(circuit, alloc))
    surplus = total - required
    if total < required:
        verdict, mp = "zero", 0.0
    elif affine:
        verdict, mp = "one", 1.0
    else:
        verdict, mp = "in-between", float(1.0 - 2.0 ** -(1 + surplus))
    return Heuristic(effective=min(total, required), required=required, by_weight=by_weight, affine=affine,
                     verdict=verdict, mp=mp, surplus=surplus)
