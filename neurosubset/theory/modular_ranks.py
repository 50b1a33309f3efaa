"""Exact ranks: the output Jacobian of a linear circuit evaluated exactly at a random point of GF(p).

Floating-point ranks fail when the Jacobian's entries span many orders of magnitude (a linear RNN at gain 2 over
T = 30 steps has entries ~10^9 apart). Here the point (every present weight and every probe entry) is drawn
uniformly from GF(p), ``p`` a random prime just below ``2^62``, and the closed-form adjoint Jacobian of
:func:`neurosubset.dynamics.PlasticMap.jacobian` is evaluated in arithmetic modulo ``p`` (python-flint
``nmod_mat``), never by rounding a float Jacobian. Its rank over GF(p):

- never exceeds the rank of the same integer Jacobian over Q, which never exceeds the generic rank, so it is always
  a **lower bound** on the generic rank;
- is smaller only if some non-vanishing ``r x r`` minor of the (polynomial) Jacobian vanishes mod ``p`` at the
  point, with probability at most ``D / p`` (Schwartz-Zippel), ``D = r * d`` the degree of the minor and ``d``
  the degree of the entries (:func:`entry_degree`: the longest input-to-output path for feed-forward circuits,
  ``T + 1`` for discrete ones, ``2 n`` for steady ones after multiplying by ``det(I - W)^2``).

Steady circuits are rational: a point where ``det(I - W) = 0 mod p`` is refused and another drawn.

Probe reduction (exact, no probability): the outputs of a linear circuit are linear in the ``q`` stacked inputs
of a probe (``q = n_in``, or ``n_in T`` for discrete dynamics), ``F = (Xbar^T kron I) K``. When ``m > q`` and the
first ``q`` probes' stacked inputs are independent mod ``p``, every column subset of the Jacobian has the same rank
on those ``q`` probes as on all ``m``; only those are evaluated.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ..allocation import Allocation
from ..circuit import Circuit
from ..connectivity import triples_to_dense
from ._ranks import _POINT_KEY, TheoryError

PRIME_BITS = 62
_GF_KEY = 0x6F  # spawn key of the GF(p) points (and their primes), beside the float points'
_MAX_REDRAWS = 8  # points with det(I - W) = 0 mod p redrawn before giving up (each has probability <= n / p)

__all__ = ["PRIME_BITS", "DECISIVE_GAP", "DECISIVE_TAIL", "random_prime", "mod_point", "mod_jacobian", "gf_rank",
           "entry_degree", "GFRanks", "gf_ranks", "decisive", "RankEvidence", "rank_evidence", "rank_costs",
           "exact_applies"]


def _flint():
    try:
        import flint
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise ImportError("Exact ranks need python-flint (pip install 'python-flint>=0.6').") from exc
    return flint


def random_prime(rng: np.random.Generator, bits: int = PRIME_BITS) -> int:
    """A uniformly drawn prime in ``[2^bits - 2^(bits - 8), 2^bits)`` (rejection sampling with FLINT's
    deterministic primality test for 64-bit integers)."""
    flint = _flint()
    low = (1 << bits) - (1 << (bits - 8))
    while True:
        cand = int(rng.integers(low, 1 << bits, dtype=np.int64)) | 1
        if flint.fmpz(cand).is_prime():
            return cand


def mod_point(circuit: Circuit, m: int, p: int, rng: np.random.Generator
              ) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """A uniform point of GF(p): present weights and probes as int64 in ``[0, p)``, absent synapses 0."""
    weights = {}
    for name in circuit.weight_names:
        w = rng.integers(0, p, size=circuit.shape(name), dtype=np.int64)
        if circuit.projection[name].fixed:  # given weights, not a variable: their values mod p (integers only)
            given = triples_to_dense(circuit.projection[name].weights, circuit.shape(name))
            if not (given == np.round(given)).all():
                raise TheoryError(f"Exact ranks need integer weights in fixed projection {name!r}; use "
                                  f"method='autograd'.")
            w = np.mod(given.astype(np.int64), p)
        weights[name] = np.where(circuit.structure[name], w, 0)
    return weights, rng.integers(0, p, size=circuit.probe_shape(m), dtype=np.int64)


# ---------------------------------------------------------------------------------------------- GF(p) matrices
def _mat(a: np.ndarray, p: int):
    a = np.asarray(a, dtype=np.int64)
    return _flint().nmod_mat(int(a.shape[0]), int(a.shape[1]), a.ravel().tolist(), p)


def _np(mat) -> np.ndarray:
    r, c = mat.nrows(), mat.ncols()
    if r * c == 0:
        return np.zeros((r, c), dtype=np.int64)
    return np.fromiter(map(int, mat.entries()), dtype=np.int64, count=r * c).reshape(r, c)


def gf_rank(mat: np.ndarray, p: int) -> int:
    """Rank over GF(p) of an integer matrix (entries taken mod ``p``)."""
    mat = np.asarray(mat, dtype=np.int64)
    if mat.size == 0:
        return 0
    return int(_mat(np.mod(mat, p), p).rank())


def _stacked_inputs(circuit: Circuit, probes: np.ndarray) -> np.ndarray:
    """``(m, q)``: each probe's inputs as one vector (all steps for discrete dynamics)."""
    return probes.reshape(probes.shape[0], -1)


def _reduce_probes(circuit: Circuit, probes: np.ndarray, p: int) -> np.ndarray:
    """The first ``q`` probes if ``m > q`` and their stacked inputs are independent mod ``p`` (then every column
    subset of the Jacobian has the same rank on them as on all probes); otherwise all probes."""
    xbar = _stacked_inputs(circuit, probes)
    q = xbar.shape[1]
    if probes.shape[0] <= q or gf_rank(xbar[:q], p) < q:
        return probes
    return probes[:q]


def mod_jacobian(circuit: Circuit, weights: Mapping[str, np.ndarray], probes: np.ndarray, p: int) -> np.ndarray:
    """``dF/dtheta`` over all present synapses at an integer point, exactly mod ``p``: int64 ``(E, N)``.

    Rows are probe-major ``(probe, output)`` as :class:`~neurosubset.dynamics.PlasticMap`; columns the present
    synapses in weight order, row-major (the columns of the float certificate). The closed form of
    :meth:`PlasticMap.jacobian`: ``dy_o/dW_ik = sum_t G_t[o, i] u_t[k]`` with ``G_t`` the adjoint and ``u_t`` the
    presynaptic activity; every product is an ``nmod_mat`` product, one per weight
    (``(n_out n_post, T) x (T, n_pre m)``), rearranged with integer index operations only.

    Raises
    ------
    TheoryError
        A ReLU circuit (piecewise, not polynomial), or ``det(I - W) = 0 mod p`` (steady; draw another point).
    """
    if circuit.nonlinearity != "linear":
        raise TheoryError(f"Exact ranks need a linear (polynomial or rational) circuit; circuit {circuit.name!r} "
                          f"is {circuit.nonlinearity!r}, whose outputs are piecewise.")
    if circuit.dynamics.rank_method(circuit) != "gfp":
        raise TheoryError(f"Exact ranks need polynomial or rational outputs; {circuit.dynamics.name} circuit "
                          f"{circuit.name!r} has none (e.g. expm is not rational). Use float ranks "
                          f"(method='autograd').")
    full = Allocation.from_masks(circuit, dict(circuit.eligible), strategy="full")
    lay = circuit.dynamics.adjoint_layout(circuit, full)
    m, n_out = probes.shape[0], circuit.n_out
    xs = np.mod(probes, p)
    try:
        g_np, act, last = circuit.dynamics.mod_adjoint(circuit, weights, xs, lambda a: _mat(a, p), _np, lay)
    except ZeroDivisionError:
        raise TheoryError("det(I - W) = 0 mod p at this point: the rational outputs are undefined there; draw "
                          "another point.") from None
    post, pre = lay["post"].numpy(), lay["pre"].numpy()
    to_out = lay["to_output"].numpy()
    cols = []
    start = 0
    for name in circuit.weight_names:
        size = int(circuit.eligible[name].sum())
        sl = slice(start, start + size)
        start += size
        if size == 0:
            cols.append(np.zeros((m * n_out, 0), dtype=np.int64))
            continue
        ps, qs = post[sl], pre[sl]
        if to_out[sl].any():  # a read-out of discrete dynamics: dy_o/dC_ik = delta(o, i) last[k]
            block = np.zeros((m, n_out, size), dtype=np.int64)
            block[:, ps, np.arange(size)] = last[qs].T
            cols.append(block.reshape(m * n_out, size))
            continue
        cols.append(_weight_columns(g_np, act, ps, qs, p))
    return np.concatenate(cols, axis=1) if cols else np.zeros((m * n_out, 0), dtype=np.int64)


_BLOCK_ENTRIES = 2**22  # entries of one GF(p) product block (posts x their presynaptic cells x outputs x probes)


def _weight_columns(g_np: np.ndarray, act: np.ndarray, post: np.ndarray, pre: np.ndarray, p: int) -> np.ndarray:
    """``(m * n_out, K)`` Jacobian columns of one weight's synapses ``(post, pre)`` (``(K,)`` each), mod ``p``.

    ``sum_t G_t[o, i] act_t[j, probe]`` as ``nmod_mat`` products ``(n_out n_posts, T) x (T, n_pres m)`` over blocks
    of postsynaptic cells, each block's product at most about :data:`_BLOCK_ENTRIES` entries (a block holds one
    cell at least): one product over all ``(post, pre)`` pairs would take ``n_out n_post n_pre m`` entries, 320
    million at 2,000 neurons (the GF(p) path's memory was quadratic in neurons), while the columns take ``E K``.
    """
    steps, n_out = g_np.shape[0], g_np.shape[1]
    m = act.shape[-1]
    out = np.empty((m * n_out, post.size), dtype=np.int64)
    order = np.argsort(post, kind="stable")
    cells, starts = np.unique(post[order], return_index=True)
    bounds = np.append(starts, post.size)
    per = max(1, _BLOCK_ENTRIES // (n_out * m))  # posts x synapses allowed per block (synapses bound the pres)
    first = 0
    while first < cells.size:
        last = first + 1
        while last < cells.size and (last + 1 - first) * (bounds[last + 1] - bounds[first]) <= per:
            last += 1
        at = order[bounds[first]:bounds[last]]  # this block's synapses (positions in the weight)
        up, inv_p = np.unique(post[at], return_inverse=True)
        uq, inv_q = np.unique(pre[at], return_inverse=True)
        left = g_np[:, :, up].transpose(1, 2, 0).reshape(n_out * up.size, steps)  # (o, i) x t
        right = act[:, uq, :].reshape(steps, uq.size * m)  # t x (k, j)
        prod = _np(_mat(left, p) * _mat(right, p)).reshape(n_out, up.size, uq.size, m)
        out[:, at] = prod[:, inv_p, inv_q, :].transpose(2, 0, 1).reshape(m * n_out, at.size)
        first = last
    return out


def entry_degree(circuit: Circuit) -> int:
    """Degree ``d`` of the Jacobian's entries as polynomials in the point (weights and probe entries).

    Feed-forward: the longest input-to-output path in projections (an output is a sum over paths of products of
    the path's weights and one input entry; the derivative drops one weight). Discrete: ``T + 1`` (``h_t`` has
    degree ``t + 1``, ``y = C h_T`` degree ``T + 2``). Steady: ``2 n`` for ``n`` non-input neurons, the degree of
    ``det(I - W)^2 dF/dtheta`` (adjugate entries have degree ``n - 1``), which has the rank of the Jacobian
    wherever ``det(I - W) != 0``.
    """
    return circuit.dynamics.entry_degree(circuit)


# ---------------------------------------------------------------------------------------------- ranks
class GFRanks:
    """Ranks over GF(p) of the full Jacobian and of a column subset at one or more points (see :func:`gf_ranks`).

    Attributes
    ----------
    full_rank, plastic_rank : int
        Maxima over the points: lower bounds on the generic ranks.
    equations : int
        Rows evaluated (``n_out`` times the probes kept by the probe reduction).
    prime : int
        The last point's prime.
    degree : int
        ``d`` of :func:`entry_degree`.
    error_bound : float
        Probability bound that the plastic or full rank is below its generic value: ``prod_k (r d / p_k)`` over
        the points for each rank, summed (0 for a rank at its cap ``min(rows, columns)``, which is certain).
    points : int
    """

    __slots__ = ("full_rank", "plastic_rank", "equations", "prime", "degree", "error_bound", "points")

    def __init__(self, **kw):
        for k, v in kw.items():
            setattr(self, k, v)


def gf_ranks(circuit: Circuit, m: int, seed: int, cols: np.ndarray, *, points: int = 1) -> GFRanks:
    """Exact ranks at ``points`` random points of GF(p): point ``k`` (its prime, weights and probes) is drawn with
    ``SeedSequence(seed, spawn_key=(0xCE27, 0x6F, k))``."""
    deg = entry_degree(circuit)
    full_best = plastic_best = 0
    full_fail = plastic_fail = 1.0
    e_kept = m * circuit.n_out
    p = 0
    done = 0
    k = 0
    while done < points:
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_POINT_KEY, _GF_KEY, k)))
        k += 1
        p = random_prime(rng)
        weights, probes = mod_point(circuit, m, p, rng)
        probes = _reduce_probes(circuit, probes, p)
        try:
            jac = mod_jacobian(circuit, weights, probes, p)
        except TheoryError:
            if k > points + _MAX_REDRAWS:
                raise
            continue
        done += 1
        e_kept = jac.shape[0]
        full = gf_rank(jac, p)
        plastic = full if cols.size == jac.shape[1] else gf_rank(jac[:, cols], p)
        full_best, plastic_best = max(full_best, full), max(plastic_best, plastic)
        full_fail *= min(1.0, min(jac.shape) * deg / p)
        plastic_fail *= min(1.0, min(jac.shape[0], cols.size) * deg / p)
    n = sum(int(circuit.eligible[w].sum()) for w in circuit.weight_names)
    certain_full = full_best == min(e_kept, n)
    certain_plastic = plastic_best == min(e_kept, cols.size)
    bound = (0.0 if certain_full else full_fail) + (0.0 if certain_plastic else plastic_fail)
    return GFRanks(full_rank=full_best, plastic_rank=plastic_best, equations=e_kept, prime=p, degree=deg,
                   error_bound=float(bound), points=done)


# ---------------------------------------------------------------------------------------------- the rank evidence
# A float rank decides only where its singular-value gap is decisive: nothing discarded, or the first discarded
# value at most 1e-12 of the largest (rounding noise of a float64 Jacobian is ~1e-15 relative) and at least 1e6
# below the last one counted. Anything else goes to GF(p) (linear circuits) or stays unproven.
DECISIVE_GAP = 1e6
DECISIVE_TAIL = 1e-12


def decisive(gap: float, tail: float) -> bool:
    """Whether a float rank with gap ``s_r / s_{r+1}`` and tail ``s_{r+1} / s_1`` is decisive (see above)."""
    if not np.isfinite(tail):
        return False
    return tail == 0.0 or (gap >= DECISIVE_GAP and tail <= DECISIVE_TAIL)


@dataclass(frozen=True)
class RankEvidence:
    """The ranks a certificate rests on, and how far they are proven.

    Attributes
    ----------
    full_rank, plastic_rank : int
    full_gap, plastic_gap, full_tail, plastic_tail : float
        The float path's gap ``s_r / s_{r+1}`` and tail ``s_{r+1} / s_1`` (``nan`` where no float ranks ran).
    method : {"autograd", "adjoint", "sketch", "exact"}
        What produced the ranks.
    exact : bool
        Ranks over GF(p) (lower bounds on the generic ranks, exact except with probability ``error_bound``).
    decisive : bool
        The float ranks' gaps were decisive (:func:`decisive`).
    prime : int
        The GF(p) point's prime (0 for float ranks).
    error_bound : float
        Schwartz-Zippel bound on the probability that a GF(p) rank is below its generic value (0 where the rank
        is at its cap; ``nan`` for float ranks).
    """

    full_rank: int
    plastic_rank: int
    full_gap: float
    plastic_gap: float
    full_tail: float
    plastic_tail: float
    method: str
    exact: bool
    decisive: bool
    prime: int = 0
    error_bound: float = float("nan")

    @property
    def proven(self) -> bool:
        """Whether the ranks may carry a verdict."""
        return self.exact or self.decisive


# Seconds per unit of work on one thread of the reference machine (2 cores, torch 2.13 CPU, python-flint 0.9),
# fitted on linear RNNs n = 10..110 (m = 8..100) and a 20-40-40-10 feed-forward net, both paths timed side by side:
# float ranks, per point, cost FLOAT_S_PER_FLOP * min(E, n)^2 max(E, n) for the full and the plastic Jacobian
# (Jacobian and SVD); exact ranks cost EXACT_S_PER_OP * min(E_k, n)^2 max(E_k, n) per rank (flint's elimination)
# plus EXACT_S_PER_ENTRY per entry moved between numpy and flint (the product read back, the full and the plastic
# matrix written), E_k the equations kept by the probe reduction.
FLOAT_S_PER_FLOP = 1.0e-10
EXACT_S_PER_OP = 4.6e-10
EXACT_S_PER_ENTRY = 2.9e-7


def exact_applies(circuit: Circuit) -> bool:
    """Whether GF(p) ranks exist for ``circuit``: polynomial or rational outputs (linear, not continuous) and
    integer weights in every fixed projection."""
    if circuit.dynamics.rank_method(circuit) != "gfp":
        return False
    for name in circuit.weight_names:
        proj = circuit.projection[name]
        if proj.fixed:
            given = triples_to_dense(proj.weights, circuit.shape(name))
            if not (given == np.round(given)).all():
                return False
    return True


def rank_costs(circuit: Circuit, m: int, n_plastic: int, points: int) -> tuple[float, float]:
    """Estimated seconds (one thread) of the float ranks at ``points`` points and of the exact ranks at one point.

    Parameters
    ----------
    circuit : Circuit
    m : int
        Probes.
    n_plastic : int
        Plastic synapses ``M`` (columns of the plastic Jacobian).
    points : int
        Float points.

    Returns
    -------
    (float_s, exact_s) : tuple of float
        The estimates (model and constants above); ``exact_s`` is ``inf`` where :func:`exact_applies` is false.
        Only their ratio matters to :func:`rank_evidence`; they are not promises.
    """
    n = sum(int(circuit.eligible[w].sum()) for w in circuit.weight_names)
    e = m * circuit.n_out
    q = int(np.prod(circuit.probe_shape(1)[1:]))  # stacked inputs per probe (the probe reduction keeps q probes)
    e_kept = circuit.n_out * (q if m > q else m)

    def elim(rows: int, cols: int) -> float:
        return float(min(rows, cols)) ** 2 * max(rows, cols)

    float_s = points * FLOAT_S_PER_FLOP * (elim(e, n) + (elim(e, n_plastic) if n_plastic < n else 0.0))
    if not exact_applies(circuit):
        return float_s, float("inf")
    moved = e_kept * (2 * n + (n_plastic if n_plastic < n else 0))
    exact_s = (EXACT_S_PER_ENTRY * moved
               + EXACT_S_PER_OP * (elim(e_kept, n) + (elim(e_kept, n_plastic) if n_plastic < n else 0.0)))
    return float_s, exact_s


def rank_evidence(circuit: Circuit, m: int, seed: int, points: int, cols: np.ndarray, rtol: float,
                  method: str) -> RankEvidence:
    """Ranks of the full Jacobian and of its columns ``cols``, by ``method``.

    ``"auto"``: for linear circuits whose exact ranks are estimated cheaper than the float ones
    (:func:`rank_costs`), exact ranks over GF(p) at one point (:func:`gf_ranks`) directly; otherwise float ranks
    (the adjoint for linear circuits, autograd otherwise) where their gaps are decisive, and for linear circuits
    exact ranks where they are not. ``"exact"``: GF(p) only. ``"autograd"``, ``"adjoint"``, ``"sketch"``: float
    only, proven only where decisive. :attr:`RankEvidence.method` records what ran.
    """
    from ._ranks import _ranks

    nan = float("nan")
    linear = circuit.dynamics.rank_method(circuit) == "gfp"  # e.g. continuous: float ranks only
    if method == "exact" and not linear:
        raise TheoryError(f"method='exact' needs a linear circuit; circuit {circuit.name!r} is "
                          f"{circuit.nonlinearity!r} (piecewise outputs have no exact rank). Use method='auto'.")
    if method == "auto" and linear:
        float_s, exact_s = rank_costs(circuit, m, int(cols.size), points)
        if exact_s < float_s:  # always proven, and cheaper: no float pass first
            method = "exact"
    if method != "exact":
        closed = "adjoint" if circuit.dynamics.closed_adjoint(circuit) else "autograd"
        float_method = closed if method == "auto" else method
        (fr, fg, ft), (pr, pg, pt) = _ranks(circuit, m, seed, points, cols, rtol, float_method)
        dec = decisive(fg, ft) and decisive(pg, pt)
        if dec or method != "auto" or not linear:
            return RankEvidence(fr, pr, fg, pg, ft, pt, float_method, exact=False, decisive=dec)
        gaps = (fg, pg, ft, pt)
    else:
        gaps = (nan, nan, nan, nan)
    gf = gf_ranks(circuit, m, seed, cols)
    return RankEvidence(gf.full_rank, gf.plastic_rank, gaps[0], gaps[1], gaps[2], gaps[3], "exact", exact=True,
                        decisive=False, prime=gf.prime, error_bound=gf.error_bound)
