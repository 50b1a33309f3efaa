"""The exact expressivity certificate: is ``MP(A, m)`` exactly 0, exactly 1, or positive? (no fitting)

``full_rank`` = generic rank of ``dF/dtheta`` = ``dim V`` (the teacher outputs' set), ``plastic_rank`` = generic
rank of ``dF/dtheta_A`` = ``dim S`` (the student's reachable set); for linear circuits a rank deficit proves
MP = 0 and full rank with outputs affine in ``theta_A`` proves MP = 1 (see :mod:`neurosubset.theory`), except
under sign constraints (Dale's law) or a stability requirement that the plastic values can break, where full
rank proves MP > 0 only (see :func:`certify`).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ..dynamics.stability import plastic_in_loops, stability_applies
from ..allocation import Allocation
from ..circuit import Circuit
from ..dynamics import is_affine
from ..dynamics.sparse_map import WeightsLayout, choose_layout
from ._ranks import METHODS as METHODS
from ._ranks import RANK_RTOL as RANK_RTOL
from ._ranks import TheoryError as TheoryError
from ._ranks import _check_alloc, _check_common, _columns
from .modular_ranks import rank_evidence

VERDICTS = ("zero", "one", "positive", "unproven")

__all__ = ["Certificate", "certify", "TheoryError", "VERDICTS", "METHODS", "RANK_RTOL"]


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
        Independent random points the float ranks were maximised over.
    rtol : float
        Relative singular-value tolerance used for the float ranks.
    method : {"autograd", "adjoint", "sketch", "iterative", "exact"}
        What produced the ranks: a float Jacobian, or ``"exact"``, the Jacobian evaluated exactly at a random point
        of GF(p) (:mod:`neurosubset.theory.modular_ranks`). ``"iterative"``: the sparse weights layout's float
        Jacobian through sparse solves (GMRES to relative residual 1e-12 above 2,000 neurons), stacked by TSQR
        (:mod:`neurosubset.theory.sparse_ranks`).
    estimate : bool
        ``True`` for ``method="sketch"`` and ``"iterative"``: the ranks are randomised estimates or floating-point
        ranks of a Jacobian from iterative solves (see :func:`certify`), not exact ranks, and the verdict inherits
        that.
    plastic_gap, full_gap : float
        Smallest, over the points attaining the rank, ratio of the last counted singular value to the first
        discarded one (``inf`` when none was discarded): how clear-cut the rank decision was (``nan`` when no float
        ranks ran).
    dale, stable : bool
        The constraints the verdict is about (see :func:`certify`).
    plastic_tail, full_tail : float
        The float ranks' first discarded singular value over the largest (0 when none was discarded).
    exact : bool
        The ranks are over GF(p): lower bounds on the generic ranks, equal to them except with probability at most
        ``error_bound``; a plastic rank equal to the number of equations is certain.
    decisive : bool
        The float ranks' gaps were decisive (``s_r / s_{r+1} >= 1e6`` and ``s_{r+1} <= 1e-12 s_1``, or nothing
        discarded); float ranks that are not get the verdict ``"unproven"``.
    prime : int
        The prime of the GF(p) point (0 for float ranks).
    error_bound : float
        Schwartz-Zippel bound ``r d / p`` on the probability that a GF(p) rank is below the generic rank (0 where
        the rank sits at its cap; ``nan`` for float ranks): the verdict is wrong with at most this probability.
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
    dale: bool = False
    stable: bool = False
    plastic_tail: float = float("nan")
    full_tail: float = float("nan")
    exact: bool = False
    decisive: bool = False
    prime: int = 0
    error_bound: float = float("nan")

    def to_attrs(self, prefix: str = "certificate_") -> dict[str, int | float | str]:
        """netCDF-safe attributes (``bool`` becomes ``int``), keys prefixed with ``prefix``."""
        out: dict[str, int | float | str] = {}
        for key, value in asdict(self).items():
            out[prefix + key] = int(value) if isinstance(value, bool) else value
        return out

    def __repr__(self) -> str:  # verdict, ranks, method (neurosubset._repr)
        from .._repr import certificate_text
        return certificate_text(self)

    def _repr_html_(self) -> str:
        from .._repr import certificate_html
        return certificate_html(self)



def certify(circuit: Circuit, alloc: Allocation, m: int = 4, seed: int = 0, *, points: int = 2,
            rtol: float = RANK_RTOL, method: str = "auto", dale: bool = True,
            stable: bool = True) -> Certificate:
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
        Independent random points of the float ranks (>= 2); each rank is the maximum over them.
    rtol : float
        Relative singular-value tolerance: float ranks count singular values above ``rtol * s_max``.
    method : {"auto", "exact", "autograd", "adjoint", "sketch", "iterative"}
        ``"iterative"`` (and ``"auto"`` for steady circuits in the sparse weights layout,
        :func:`~neurosubset.dynamics.sparse_map.choose_layout`; discrete ones take the dense paths): float ranks of the
        full Jacobian from the sparse closed form (:mod:`neurosubset.theory.sparse_ranks`), flagged ``estimate``; a
        verdict only where the gaps are decisive, else "unproven" (no GF(p) fallback at that size). ``"auto"`` (default)
        otherwise: by estimated cost (:func:`neurosubset.theory.modular_ranks.rank_costs`): exact ranks over
        GF(p) directly where they apply and are estimated cheaper (e.g. many probes of few stacked inputs, which the
        probe reduction shrinks; a linear RNN n = 110, T = 4, m = 100, n_in = 5, 10^4 plastic synapses: 5.2 s of CPU
        exact vs 16.8 s float, one thread), otherwise float ranks (adjoint closed form for linear circuits, autograd
        otherwise) where their singular-value gap is decisive, else exact ranks over GF(p) (linear circuits) or the
        verdict ``"unproven"``. ``Certificate.method`` records what ran. ``"exact"``: the Jacobian evaluated exactly at
        one random point of GF(p), ``p`` a random prime below ``2^62`` (:mod:`neurosubset.theory.modular_ranks`;
        polynomial and rational maps, a point with ``det(I - W) = 0 mod p`` redrawn). Its ranks are lower bounds on the
        generic ranks and equal them except with probability ``error_bound = r d / p`` (Schwartz-Zippel, ``d`` the
        degree of the Jacobian's entries: ``T + 1`` for discrete circuits). ``"autograd"``/``"adjoint"``: float Jacobian
        by torch autograd or by the adjoint closed form; a verdict only where the gaps are decisive. Never finite
        differences. ``"sketch"``: for circuits whose ``(E, N)`` Jacobian does not fit in memory, a matrix-free
        randomised estimate: ranks of ``J Omega`` for Gaussian ``Omega`` with ``min(N, E)`` columns, from JVPs in chunks
        (equal to the rank with probability 1; in floating point an estimate, flagged by ``Certificate.estimate``).
    dale : bool
        Plastic values keep their presynaptic region's sign (as :func:`neurosubset.fit` with ``dale=True``).
    stable : bool
        A match requires a stable student fixed point (steady circuits; as :func:`neurosubset.fit`).

    Returns
    -------
    Certificate
        ``plastic_rank``, ``full_rank``, ``affine``, ``verdict`` and diagnostics.

    Notes
    -----
    The full and the plastic Jacobian at a point share one computation: the plastic one is a column subset of the
    ``(E, N)`` full one. Cost: one Jacobian and two SVDs per point.

    Continuous circuits: the outputs are analytic in the weights (matrix exponential; tanh and softplus are
    analytic), so the rank argument holds with float ranks (autograd; there is no GF(p) path, expm is not rational,
    and ``method="exact"`` / ``"adjoint"`` are refused): a rank deficit gives "zero", full rank "positive" (never
    "one"), an indecisive gap or ReLU "unproven".

    ReLU circuits get the verdict ``"unproven"``. The rank argument needs ``V`` (the teacher outputs' set) to be
    an irreducible variety on which the teacher's output has a density. For ReLU nets hidden units that are dead
    on all probes happen with positive probability and lower the dimension of the teacher's output set on that
    event, so a rank-deficient allocation can still have MP > 0, and an affine, full-rank one (only the output
    layer plastic) can have MP far below 1 (about 0.49 for a 3-3-1 ReLU net with m = 3). The ranks are reported
    for information only.

    Sign constraints and stability (``dale``, ``stable``). With Dale's law the student reaches
    ``S_+ = {F(theta_frozen, theta_A) : s * theta_A >= 0}``, a semialgebraic subset of ``S``, and with ``stable``
    only the part where ``max Re(eig W) < 1``.

    - "zero" still follows from a rank deficit: ``S_+`` lies in ``S``, which has measure zero in ``V``.
    - "one" no longer follows from full rank + affine when some plastic synapse is signed: the reachable set is a
      polyhedral cone's image, not all of ``V``, and whether a trial's target lies in it is a linear feasibility
      question (measured on a small E/I circuit, read-out-only plastic: MP 1.00 without signs, about 0.03 with
      them). The exact per-trial decisions of :func:`neurosubset.fit` (bounded least squares) give the MP there.
      Nor does it follow under ``stable`` when a plastic synapse lies inside a recurrent loop (then the plastic
      values move ``eig W``). Where neither applies (no signed plastic synapse; plastic synapses outside every
      loop, whose eigenvalues are then those of the student's frozen, stable-drawn loops) "one" stands.
    - "positive" survives, for this reason. The teacher's own weights lie strictly inside the sign cone (every
      signed entry is ``s |N(0, sigma^2)|``, nonzero almost surely) and inside the stable set (teachers are drawn
      conditioned on it, and it is open). The student's frozen weights have a density that is positive near the
      teacher's frozen ones, so frozen draws within any distance ``eps`` of them have positive probability. At
      frozen = teacher's, ``theta_A = theta*_A`` solves exactly; full rank (``dF/dtheta_A`` of rank ``dim V`` at
      generic points, the teacher's included almost surely) makes ``theta_A -> F`` a submersion onto ``V`` near
      ``theta*_A``, so by the implicit function theorem every frozen draw close enough to the teacher's has a
      solution ``theta_A`` close to ``theta*_A``, hence still strictly inside the sign cone and the stable set.
      So MP > 0.

    Examples
    --------
    >>> import neurosubset as ns
    >>> net = ns.feedforward([3, 2])
    >>> ns.certify(net, ns.allocate(net, 6, within=["W1"]), m=3).verdict   # all 6 weights plastic: MP = 1
    'one'
    """
    _check_alloc(circuit, alloc)
    m, seed, points, rtol = _check_common(m, seed, points, rtol, method)
    if method == "iterative" or (method == "auto" and circuit.dynamics.name == "steady"
                                 and choose_layout(circuit) is WeightsLayout.SPARSE):
        return _certify_sparse(circuit, alloc, m, seed, points, rtol, dale, stable)
    cols = _columns(circuit, dict(alloc.masks))
    continuous = not circuit.dynamics.rational  # analytic outputs (expm; tanh, softplus), not rational ones
    if continuous and method in ("exact", "adjoint"):
        raise TheoryError(f"The 'method' parameter {method!r} needs polynomial or rational outputs; "
                          f"{circuit.dynamics.name} circuit {circuit.name!r} has none (e.g. expm is not rational). "
                          f"Use 'auto' or 'autograd'.")
    ev = rank_evidence(circuit, m, seed, points, cols, rtol, "autograd" if continuous and method == "auto" else method)
    full_rank, plastic_rank = ev.full_rank, ev.plastic_rank
    affine = is_affine(circuit, alloc, seed=seed)
    if continuous:  # analytic maps (expm; tanh, softplus): a deficit proves MP = 0, full rank MP > 0; relu unproven
        verdict = ("unproven" if circuit.nonlinearity == "relu" or not ev.proven
                   else "zero" if plastic_rank < full_rank else "positive")
    elif circuit.nonlinearity != "linear" or not ev.proven:  # never a verdict from an indecisive gap
        verdict = "unproven"
    else:
        verdict = _linear_verdict(circuit, alloc, plastic_rank, full_rank, affine, dale, stable)
    return Certificate(plastic_rank=plastic_rank, full_rank=full_rank, affine=bool(affine), verdict=verdict, m=m,
                       n_plastic=alloc.size, n_synapses=circuit.n_synapses, n_equations=m * circuit.n_out,
                       points=points, rtol=rtol, method=ev.method, plastic_gap=ev.plastic_gap,
                       full_gap=ev.full_gap, estimate=ev.method == "sketch", dale=bool(dale), stable=bool(stable),
                       plastic_tail=ev.plastic_tail, full_tail=ev.full_tail, exact=ev.exact, decisive=ev.decisive,
                       prime=int(ev.prime), error_bound=ev.error_bound)


def _linear_verdict(circuit: Circuit, alloc: Allocation, plastic_rank: int, full_rank: int, affine: bool,
                    dale: bool, stable: bool) -> str:
    """The verdict of decisive ranks on a linear circuit: a deficit proves MP = 0; full rank with outputs affine in
    the plastic weights proves MP = 1 unless a sign box (Dale on signed plastic synapses) or the stability
    requirement on plastic loop synapses can act; otherwise MP > 0."""
    if plastic_rank < full_rank:
        return "zero"
    if affine and not (dale and _signed(circuit, alloc)) and not (
            stable and stability_applies(circuit) and plastic_in_loops(circuit, alloc.counts)):
        return "one"
    return "positive"


def _certify_sparse(circuit: Circuit, alloc: Allocation, m: int, seed: int, points: int, rtol: float, dale: bool,
                    stable: bool) -> Certificate:
    """:func:`certify` in the sparse weights layout: float ranks through sparse solves (``method="iterative"``,
    flagged ``estimate``), affinity from the region graph, the synapse count from the index arrays."""
    from ..dynamics.sparse_map import plastic_value_positions, sparse_applicable, sparse_is_affine, structure_of
    from .sparse_ranks import eligible_positions, sparse_rank_evidence

    if not sparse_applicable(circuit) or circuit.dynamics.name != "steady":
        raise TheoryError(f"The 'method' parameter 'iterative' needs a steady linear circuit; {circuit.name!r} is "
                          f"{circuit.nonlinearity} {circuit.dynamics.name}. Use 'auto'.")
    structure = structure_of(circuit)
    cols = np.searchsorted(eligible_positions(circuit), plastic_value_positions(circuit, structure, alloc))
    ev = sparse_rank_evidence(circuit, m, seed, points, cols, rtol)
    affine = sparse_is_affine(circuit, alloc)
    verdict = ("unproven" if not ev.decisive
               else _linear_verdict(circuit, alloc, ev.plastic_rank, ev.full_rank, affine, dale, stable))
    n_synapses = int(sum(r.size for r, _ in structure.values()))
    return Certificate(plastic_rank=ev.plastic_rank, full_rank=ev.full_rank, affine=bool(affine), verdict=verdict,
                       m=m, n_plastic=alloc.size, n_synapses=n_synapses, n_equations=m * circuit.n_out,
                       points=points, rtol=rtol, method=ev.method, plastic_gap=ev.plastic_gap, full_gap=ev.full_gap,
                       estimate=True, dale=bool(dale), stable=bool(stable), plastic_tail=ev.plastic_tail,
                       full_tail=ev.full_tail, exact=False, decisive=ev.decisive, prime=0,
                       error_bound=float("nan"))


def _signed(circuit: Circuit, alloc: Allocation) -> bool:
    """Whether any plastic synapse leaves a region with a Dale sign."""
    return any(alloc.counts[k] and circuit.region[circuit.projection[k].pre].sign is not None
               for k in circuit.weight_names)
