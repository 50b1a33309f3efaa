"""Stability of the steady state ``r = W r + input``: the recurrent loops, their eigenvalues, and the spec check.

``r* = (I - W)^{-1} input`` is the fixed point of the rate dynamics ``tau dr/dt = -r + W r + input`` over all
non-input neurons; it is stable iff ``max Re(eig W) < 1``. (A spectral radius below 1 is the criterion for the
discrete iteration ``r <- W r + input``, and is stricter: an inhibition-stabilized E/I circuit, whose E->E part
alone is unstable, has a radius above 1 and real parts below 1.)

Only the recurrent *loops* carry eigenvalues: ordering the regions by the strongly connected components of the
projection graph makes ``W`` block triangular, so ``eig W`` is the union of the eigenvalues of the diagonal blocks
of each loop (a component with a cycle) and zeros (regions outside any loop, read-outs included, which never
project). A projection between two components, from an input, or onto a read-out never moves an eigenvalue.

Continuous dynamics (``T dh/dt = -h + W h + input``, ``T = diag(tau)`` over the hidden neurons): the linear fixed
point is stable iff ``max Re eig(T^{-1} (W - I)) < 0``. A slow inhibitory population can destabilise a circuit
that is stable with equal taus. ``T^{-1}`` keeps the block structure, so the loops still carry the eigenvalues
(regions outside loops give ``-1 / tau < 0``). To keep one threshold (``< 1``) for every caller, a loop's value
is reported on the steady scale ``1 + tau_max max Re eig(T^{-1} (W - I))`` (``tau_max`` the loop's largest tau):
the same sign test, and exactly ``max Re(eig W)`` when the loop's taus are equal.

A dynamics with a steady state to keep hands out a :class:`Stability` object
(:meth:`neurosubset.dynamics.Dynamics.stability`): its loops, their values on the steady scale, the spectral
abscissa with its exact gradient in the weights, and the spec check. Circuits call it while being built.
"""
from __future__ import annotations

import contextlib
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.linalg

from .._checks import CircuitSpecError, StabilityWarning
from .blocks import block_matrix

if TYPE_CHECKING:
    from ..circuit import Circuit

try:  # ships with scipy's usual installs; without it eigensolves use OpenBLAS's own thread count
    from threadpoolctl import ThreadpoolController
except ImportError:  # pragma: no cover
    ThreadpoolController = None
_BLAS: Any = None  # one controller, made at the first eigensolve: threadpool_limits re-reads /proc/self/maps on
# every call (1.9 of the 3 ms a 4-problem ca3_ca1 stability check took), a controller scans the libraries once

NEURONS = ("hidden", "output")  # the neuron vector of the fixed point
SPEC_DRAWS = 200  # teacher draws behind a steady circuit's unstable fraction (loops of up to 64 neurons; fewer above)
SPEC_DRAWS_FULL_SIZE = 64  # loops larger than this get SPEC_DRAWS (64 / n)^3 draws, at least SPEC_DRAWS_MIN
SPEC_DRAWS_MIN = 5
REFUSE_FRACTION = 0.5  # a steady spec whose draws are unstable more often than this is refused
# an accepted spec is warned about (StabilityWarning) when more of its draws than this are unstable, or when the
# median of their max Re(eig W) lies within WARN_MARGIN of the limit: MP then depends on how close the draws sit to
# instability (stable=True rejects draws; lowering gains moves MP)
WARN_FRACTION, WARN_MARGIN = 0.01, 0.05
_SUGGEST_QUANTILE, _SUGGEST_TARGET = 0.9, 0.95  # the suggested scale brings this quantile of max Re to this value
SPEC_SEED_KEY = 0x57AB  # spawn key of the spec check's draws (with the circuit's structural seed)
# loops of more than this many neurons (steady rule) get the sparse check instead of dense draws: the random-matrix
# prediction (:func:`random_matrix_prediction`) plus SPARSE_SPEC_DRAWS sparse draws whose rightmost eigenvalue
# ARPACK finds (scipy.sparse.linalg.eigs, which="LR"); a dense 10^4-neuron draw is 800 MB and a 10^12-flop eigensolve
SPARSE_SPEC_SIZE = 1000
SPARSE_SPEC_DRAWS = 3
_ARPACK_K, _ARPACK_NCV, _ARPACK_TOL = 6, 60, 1e-8  # eigenvalues sought, Krylov basis, relative tolerance


@dataclass(frozen=True)
class Loop:
    """A strongly connected component of the region graph that carries a cycle.

    Attributes
    ----------
    regions : tuple of str
        Its regions, in declaration order.
    projections : tuple of str
        The weight names of the projections inside it (both ends in ``regions``): the only weights that move
        ``eig W``.
    """

    regions: tuple[str, ...]
    projections: tuple[str, ...]


def loops(circuit: Circuit) -> tuple[Loop, ...]:
    """The recurrent loops of ``circuit`` (components of its projection graph with a cycle), declaration order."""
    names = [r.name for r in circuit.regions if r.role != "input"]
    succ = {n: {p.post for p in circuit.projections if p.pre == n} for n in names}
    reach = {n: _reachable(succ, n) for n in names}
    out, seen = [], set()
    for n in names:
        if n in seen or n not in reach[n]:
            continue
        comp = tuple(m for m in names if m in reach[n] and n in reach[m])
        seen.update(comp)
        projs = tuple(p.name for p in circuit.projections if p.pre in comp and p.post in comp)
        out.append(Loop(comp, projs))
    return tuple(out)


def plastic_in_loops(circuit: Circuit, counts: Mapping[str, int]) -> bool:
    """Whether any plastic synapse (``counts``: weight name -> number plastic) lies inside a recurrent loop, the
    only place where a plastic value can move ``eig W``."""
    return any(counts.get(k, 0) for loop in loops(circuit) for k in loop.projections)


def _reachable(succ: Mapping[str, set[str]], source: str) -> set[str]:
    """Regions reached from ``source`` by paths of length >= 1."""
    seen: set[str] = set()
    stack = list(succ.get(source, ()))
    while stack:
        node = stack.pop()
        if node not in seen:
            seen.add(node)
            stack.extend(succ.get(node, ()))
    return seen


def loop_matrix(circuit: Circuit, loop: Loop, weights: Mapping[str, Any]) -> np.ndarray:
    """The block ``(..., n, n)`` of ``W`` between the neurons of ``loop`` (numpy float64)."""
    return block_matrix(circuit, _numpy(weights, loop.projections), loop.regions, loop.regions).astype(np.float64)


def stability_applies(circuit: Circuit) -> bool:
    """Whether the ``stable`` option acts on ``circuit`` (its dynamics has a steady state to keep: steady circuits
    and linear continuous ones; feed-forward, discrete and nonlinear continuous ones have none)."""
    return circuit.dynamics.stability(circuit) is not None


def max_real_eig(circuit: Circuit, weights: Mapping[str, Any], found: tuple[Loop, ...] | None = None) -> np.ndarray:
    """``max Re(eig W)`` per leading index by ``circuit``'s stability rule: :meth:`Stability.max_real_eig`
    (weights ``(..., n_post, n_pre)``, numpy or CPU torch; ``found``: the circuit's loops, computed once by callers
    that ask about many draws)."""
    return _rule(circuit).max_real_eig(weights, found)


def max_real_part(a: np.ndarray) -> float:
    """``max Re(eig a)`` of one square matrix (``-inf`` for an empty one)."""
    return float(_eigvals(np.asarray(a, dtype=np.float64)).real.max()) if np.size(a) else -np.inf


def _eigvals(a: np.ndarray) -> np.ndarray:
    """``numpy.linalg.eigvals`` on one BLAS thread: on a loaded 2-core machine OpenBLAS's two threads spin, and a
    200 x 200 eigensolve took 100-700 ms instead of 17 ms (the values are LAPACK's either way)."""
    global _BLAS
    if _BLAS is None and ThreadpoolController is not None:
        _BLAS = ThreadpoolController()
    with _BLAS.limit(limits=1, user_api="blas") if _BLAS is not None else contextlib.nullcontext():
        return np.linalg.eigvals(a)


def _numpy(weights: Mapping[str, Any], names: tuple[str, ...]) -> dict[str, np.ndarray]:
    return {k: (weights[k].detach().numpy() if hasattr(weights[k], "detach") else np.asarray(weights[k]))
            for k in names}


@dataclass(frozen=True)
class SpecStability:
    """How often the teacher draws of a steady circuit are unstable (see :func:`spec_stability`).

    Attributes
    ----------
    draws : int
        Teacher draws examined.
    unstable_fraction : float
        Fraction of them with ``max Re(eig W) >= 1``.
    loops : tuple of Loop
    loop_fractions : tuple of float
        The same fraction for each loop's own block.
    loop_quantiles : tuple of float
        The 90% quantile of each loop's ``max Re(eig)`` over the draws.
    values : tuple of float
        Per draw, the largest ``max Re(eig)`` over the loops (on the steady scale: stable below 1).
    check : {"dense", "sparse"}
        Which check ran: ``"dense"``, every eigenvalue of dense draws (``numpy.linalg.eigvals``); ``"sparse"``
        (loops above :data:`SPARSE_SPEC_SIZE` neurons, steady rule), the rightmost eigenvalue of sparse draws
        (ARPACK, ``which="LR"``) beside the random-matrix prediction.
    predicted : tuple of float
        ``"sparse"`` only: per loop, the predicted ``max Re(eig)`` (:func:`random_matrix_prediction`; NaN where
        the loop has projections the prediction does not cover).
    """

    draws: int
    unstable_fraction: float
    loops: tuple[Loop, ...]
    loop_fractions: tuple[float, ...]
    loop_quantiles: tuple[float, ...]
    values: tuple[float, ...] = ()
    check: str = "dense"
    predicted: tuple[float, ...] = ()

    @property
    def median(self) -> float:
        """The median over the draws of their largest ``max Re(eig)`` (NaN without draws)."""
        return float(np.median(self.values)) if self.values else float("nan")

    @property
    def near_limit(self) -> bool:
        """Whether more than :data:`WARN_FRACTION` of the draws are unstable, or their median ``max Re(eig)`` is
        within :data:`WARN_MARGIN` of the limit 1 (what :func:`check_steady_spec` warns about)."""
        return bool(self.values) and (self.unstable_fraction > WARN_FRACTION or
                                      self.median >= Stability.limit - WARN_MARGIN)

    def advice_draws(self) -> tuple[int, ...]:
        """The draws :meth:`sensitivity` averages over: the unstable ones, else those at or above the 90%
        quantile of ``max Re(eig)`` (the draws nearest the limit)."""
        v = np.asarray(self.values)
        if v.size == 0 or self.check != "dense":  # the sensitivities need dense eigenvectors
            return ()
        chosen = np.flatnonzero(v >= Stability.limit)
        if chosen.size == 0:
            chosen = np.flatnonzero(v >= np.quantile(v, _SUGGEST_QUANTILE))
        return tuple(int(k) for k in chosen)

    def sensitivity(self, circuit: Circuit, draws: tuple[int, ...] | None = None) -> dict[str, float]:
        """How much each projection's gain moves the rightmost eigenvalue: ``sum_ij w_ij d value / d w_ij`` per
        projection, averaged over ``draws`` (default :meth:`advice_draws`).

        ``value`` is the spectral abscissa on the steady scale (:meth:`Stability.abscissa`, exact gradient from
        the left and right eigenvectors), so a projection's entry is ``d value / d log(gain)``: scaling its gain by
        ``1 + e`` moves ``max Re(eig)`` by about ``e`` times it. Positive: raising the gain destabilises (lower it
        first); negative: the projection stabilises the mode (typically inhibition onto an unstable E population;
        lowering it destabilises). For the steady rule the entries sum to the value itself (eigenvalues are
        homogeneous of degree 1 in ``W``). Projections outside the loop that attains the value get 0.

        Parameters
        ----------
        circuit : Circuit
            The circuit these draws came from.
        draws : tuple of int, optional
            Draw indices (the spec check's seeds: ``SeedSequence(circuit.seed, spawn_key=(0x57AB, k))``).

        Returns
        -------
        dict
            Projection name -> mean sensitivity (units of ``max Re(eig)``), every weight of the circuit.
        """
        draws = self.advice_draws() if draws is None else tuple(draws)
        rule = _rule(circuit)
        total = {k: 0.0 for k in circuit.weight_names}
        for k in draws:
            w = spec_draw(circuit, k)
            _, grad = rule.abscissa(w)
            for name in total:
                total[name] += float((w[name] * grad[name]).sum())
        return {name: v / max(len(draws), 1) for name, v in total.items()}

    def advice(self, circuit: Circuit) -> str:
        """Which projections dominate the rightmost (unstable) mode, by :meth:`sensitivity`, and a per-projection
        gain change that brings the 90% quantile of ``max Re(eig)`` to 0.95 (a linear estimate); "" without
        draws."""
        chosen = self.advice_draws()
        if not chosen:
            return ""
        sens = {k: v for k, v in self.sensitivity(circuit, chosen).items() if v != 0.0}
        ranked = sorted(sens.items(), key=lambda kv: -kv[1])
        which = (f"the {len(chosen)} unstable of {self.draws} draws" if self.unstable_fraction > 0
                 else f"the {len(chosen)} of {self.draws} draws nearest the limit")
        listed = ", ".join(f"{k} {v:+.3g}" for k, v in ranked)
        text = f"d max Re(eig) / d log(gain) over {which}: {listed}"
        positive = [(k, v) for k, v in ranked if v > 0]
        if positive:
            top = positive[0][1]
            dominant = [k for k, v in positive if v >= 0.25 * top]
            text += f"; the projections that dominate the unstable mode: {dominant}"
            q = max(self.loop_quantiles) if self.loop_quantiles else 0.0
            mean = float(np.mean([self.values[k] for k in chosen]))
            if q > _SUGGEST_TARGET and mean > 0:
                # d log(value) / d log(gain) = e / value: value ~ gain^(e / value) near these draws
                name, e = positive[0]
                factor = float((_SUGGEST_TARGET / q) ** (mean / e))
                text += (f"; lowering {name}'s gain alone ({circuit.projection[name].gain:g} -> about "
                         f"{circuit.projection[name].gain * factor:.3g}, x{factor:.2f}) would bring the 90% quantile "
                         f"{q:.3f} to about {_SUGGEST_TARGET} (an estimate from the local elasticity "
                         f"{e / mean:.2f}; the uniform scale above is the guaranteed one)")
        negative = [k for k, v in ranked if v < 0]
        if negative:
            text += f"; {negative} stabilise it (lowering their gains destabilises)"
        return text

    def suggestion(self, circuit: Circuit) -> str:
        """How to make the spec stable: scale the gains of each unstable loop's projections (never a read-out).

        Scaling every weight of a loop by ``c > 0`` scales its eigenvalues by ``c``, so with the same draws each
        positive ``max Re`` falls by the factor ``c``: the unstable fraction cannot rise, and with the suggested
        ``c`` (the 90% quantile brought to 0.95) it falls to about 10% or less.
        """
        parts = []
        for loop, frac, q in zip(self.loops, self.loop_fractions, self.loop_quantiles):
            if frac <= 0.0 or q <= 0.0:
                continue
            c = _SUGGEST_TARGET / q
            gains = ", ".join(f"{k} {circuit.projection[k].gain:g} -> {circuit.projection[k].gain * c:.3g}"
                              for k in loop.projections)
            parts.append(f"the loop of regions {list(loop.regions)} is unstable in {frac:.0%} of the draws: "
                         f"multiply the gains of its projections {list(loop.projections)} by {c:.3g} or less "
                         f"({gains})")
        return "; ".join(parts)


def spec_stability(circuit: Circuit, draws: int | None = None) -> SpecStability:
    """The unstable fraction of ``circuit``'s teacher draws, overall and per loop.

    Draw ``k`` is ``circuit.sample_weights`` with ``SeedSequence(circuit.seed, spawn_key=(0x57AB, k))``. The
    default number of draws is :data:`SPEC_DRAWS` for loops of up to 64 neurons and falls as ``n^-3`` above (at
    least 5): a dense eigensolve costs ``n^3``, and the largest real part of a large random matrix concentrates.
    Steady circuits with a loop of more than :data:`SPARSE_SPEC_SIZE` neurons get :func:`sparse_spec_stability`
    instead (``check == "sparse"``).
    """
    found = loops(circuit)
    if not found:
        return SpecStability(0, 0.0, (), (), ())
    size = max(sum(circuit.region[r].size for r in loop.regions) for loop in found)
    if size > SPARSE_SPEC_SIZE and type(_rule(circuit)) is Stability:
        return sparse_spec_stability(circuit, SPARSE_SPEC_DRAWS if draws is None else draws)
    if draws is None:
        draws = spec_draws(size)
    names = sorted({k for loop in found for k in loop.projections})
    stack: dict[str, list[np.ndarray]] = {k: [] for k in names}
    for k in range(draws):
        w = spec_draw(circuit, k)
        for name in names:
            stack[name].append(w[name])
    weights = {k: np.stack(v) for k, v in stack.items()}
    rule = _rule(circuit)
    per_loop = [rule.loop_values(loop, weights) for loop in found]
    worst = np.max(per_loop, axis=0)
    return SpecStability(draws, float((worst >= 1.0).mean()), found,
                         tuple(float((v >= 1.0).mean()) for v in per_loop),
                         tuple(float(np.quantile(v, _SUGGEST_QUANTILE)) for v in per_loop),
                         tuple(float(v) for v in worst))


def spec_draws(size: int) -> int:
    """Teacher draws of the spec check for a largest loop of ``size`` neurons: :data:`SPEC_DRAWS` (200) up to
    :data:`SPEC_DRAWS_FULL_SIZE` (64) neurons, ``200 (64 / size)^3`` above (at least 5): 52 at 100 neurons."""
    if size <= SPEC_DRAWS_FULL_SIZE:
        return SPEC_DRAWS
    return max(SPEC_DRAWS_MIN, int(SPEC_DRAWS * (SPEC_DRAWS_FULL_SIZE / size) ** 3))


def spec_draw(circuit: Circuit, k: int) -> dict[str, np.ndarray]:
    """Teacher draw ``k`` of the spec check: ``circuit.sample_weights`` with
    ``SeedSequence(circuit.seed, spawn_key=(0x57AB, k))``; weight name -> ``(n_post, n_pre)``."""
    return circuit.sample_weights(np.random.default_rng(np.random.SeedSequence(circuit.seed,
                                                                               spawn_key=(SPEC_SEED_KEY, k))))


@dataclass(frozen=True)
class SpectrumPrediction:
    """The random-matrix prediction of a loop's spectrum at initialisation (see :func:`random_matrix_prediction`).

    Attributes
    ----------
    radius : float
        Radius of the bulk disc of eigenvalues (centred at 0).
    outliers : tuple of complex
        Eigenvalues of the population-mean matrix (one per region of the loop); those outside the disc are the
        outliers of the spectrum.
    abscissa : float
        The predicted ``max Re(eig)``: ``max(radius, max Re(outliers))``.
    """

    radius: float
    outliers: tuple[complex, ...]
    abscissa: float


def random_matrix_prediction(circuit: Circuit, loop: Loop) -> SpectrumPrediction | None:
    """The bulk radius and the mean-connectivity outliers of ``loop``'s block of ``W`` (steady scale).

    An entry of projection ``b -> a`` (Bernoulli(``p``) structure, SD ``s = gain / sqrt(p n_b)``) has mean
    ``mu_ab = sign_b p s sqrt(2/pi)`` under Dale's law (0 unsigned) and variance ``var_ab = p s^2 - mu_ab^2``
    (structure and magnitude both random). The bulk is a disc of radius ``r``, ``r^2`` the spectral radius of the
    population matrix ``n_b var_ab`` (Rajan & Abbott 2006; a variance profile: Aljadeff, Stern & Sharpee 2015);
    the outliers are the eigenvalues of the population-mean matrix ``n_b mu_ab`` (row sums
    ``sign sqrt(2/pi) gain sqrt(K)``, ``K = p n_b`` the in-degree). Asymptotic in the region sizes.

    Returns
    -------
    SpectrumPrediction or None
        None where a projection of the loop has data-given structure, per-synapse signs or fixed weights.
    """
    names = list(loop.regions)
    at = {r: k for k, r in enumerate(names)}
    mean, var = np.zeros((len(names),) * 2), np.zeros((len(names),) * 2)
    for name in loop.projections:
        p = circuit.projection[name]
        if p.fixed or p.synapses is not None or p.signs:
            return None
        n_pre = circuit.region[p.pre].size
        s = p.gain / np.sqrt(p.p * n_pre)
        sign = circuit.region[p.pre].sign
        mu = 0.0 if sign is None else sign * p.p * s * np.sqrt(2 / np.pi)
        a, b = at[p.post], at[p.pre]
        mean[a, b] += n_pre * mu
        var[a, b] += n_pre * (p.p * s**2 - mu**2)
    radius = float(np.sqrt(np.abs(np.linalg.eigvals(var)).max()))
    outliers = np.linalg.eigvals(mean)
    return SpectrumPrediction(radius, tuple(complex(v) for v in outliers),
                              float(max(radius, outliers.real.max())))


def rightmost_sparse(a: Any, seed: np.random.SeedSequence) -> float:
    """``max Re(eig a)`` of a sparse square matrix by ARPACK (``scipy.sparse.linalg.eigs``, ``which="LR"``).

    Parameters
    ----------
    a : scipy.sparse matrix
        ``(n, n)``, ``n`` above a few dozen.
    seed : numpy.random.SeedSequence
        Of the random start vector.

    Returns
    -------
    float
        The largest real part among the ``k = 6`` rightmost Ritz values, converged to relative tolerance 1e-8.

    Raises
    ------
    CircuitSpecError
        ARPACK did not converge, with a larger Krylov basis either.
    """
    from scipy.sparse.linalg import ArpackNoConvergence, eigs

    n = a.shape[0]
    v0 = np.random.default_rng(seed).standard_normal(n)
    for ncv in (_ARPACK_NCV, 3 * _ARPACK_NCV):
        try:
            vals = eigs(a, k=_ARPACK_K, which="LR", ncv=min(ncv, n - 1), tol=_ARPACK_TOL, v0=v0,
                        maxiter=100 * n, return_eigenvectors=False)
            return float(vals.real.max())
        except ArpackNoConvergence:
            continue
    raise CircuitSpecError(f"The sparse stability check (ARPACK, which='LR', {n} neurons) did not converge with "
                           f"{3 * _ARPACK_NCV} Krylov vectors; the spec's stability is unknown.")


def sparse_spec_stability(circuit: Circuit, draws: int = SPARSE_SPEC_DRAWS) -> SpecStability:
    """The spec check of a large steady circuit: sparse draws' rightmost eigenvalues and the random-matrix prediction.

    Draw ``k`` is :func:`neurosubset.dynamics.sparse.sample_sparse_weights` with
    ``SeedSequence(circuit.seed, spawn_key=(0x57AB, k))`` on :func:`~neurosubset.dynamics.sparse.sparse_structure`
    (memory linear in synapses; never a dense matrix); each loop's block gets :func:`rightmost_sparse`. The
    prediction (:func:`random_matrix_prediction`) is recorded beside the draws, not used to decide.

    Returns
    -------
    SpecStability
        ``check == "sparse"``, ``predicted`` per loop.
    """
    from .sparse import sample_sparse_weights, sparse_block
    from .sparse_map import structure_of

    found = loops(circuit)
    structure = structure_of(circuit)  # index arrays, computed once per circuit (the fit's too)
    per_loop = np.zeros((len(found), draws))
    for k in range(draws):
        seed = np.random.SeedSequence(circuit.seed, spawn_key=(SPEC_SEED_KEY, k))
        values = sample_sparse_weights(circuit, np.random.default_rng(seed), structure)
        for j, loop in enumerate(found):
            block = sparse_block(circuit, structure, values, list(loop.regions), list(loop.regions))
            per_loop[j, k] = rightmost_sparse(block, np.random.SeedSequence(circuit.seed,
                                                                             spawn_key=(SPEC_SEED_KEY, k, j + 1)))
    worst = per_loop.max(axis=0)
    predicted = tuple(float("nan") if pred is None else pred.abscissa
                      for pred in (random_matrix_prediction(circuit, loop) for loop in found))
    return SpecStability(draws, float((worst >= 1.0).mean()), found,
                         tuple(float((v >= 1.0).mean()) for v in per_loop),
                         tuple(float(np.quantile(v, _SUGGEST_QUANTILE)) for v in per_loop),
                         tuple(float(v) for v in worst), "sparse", predicted)


def check_steady_spec(circuit: Circuit) -> SpecStability:
    """Refuse a steady circuit whose teacher draws are unstable in more than :data:`REFUSE_FRACTION` of cases.

    Returns the :class:`SpecStability` of an accepted spec (its fraction is reported with results).

    Raises
    ------
    CircuitSpecError
        Naming the unstable loops' projections (never a read-out or an input projection) and a gain scale that
        lowers the fraction when followed.
    """
    found = spec_stability(circuit)
    if found.unstable_fraction > REFUSE_FRACTION:
        raise CircuitSpecError(
            f"The recurrent part of {_rule(circuit).refusal(found.unstable_fraction, found.draws)}"
            f"{REFUSE_FRACTION:.0%} unstable draws are accepted; {_draws_note(found.draws)}). "
            f"{_sentence(found.suggestion(circuit))}.{_advice_sentence(found, circuit)}")
    if found.near_limit:
        warnings.warn(
            f"Circuit {circuit.name!r} ({circuit.dynamics.name}) sits near its stability limit: "
            f"{found.unstable_fraction:.1%} of {found.draws} teacher draws are unstable and their median max Re(eig) "
            f"is {found.median:.3f} (limit 1; warned above {WARN_FRACTION:.0%} unstable or a median within "
            f"{WARN_MARGIN} of the limit; "
            f"{_draws_note(found.draws)}). MP can then move with small gain changes (stable=True conditions every "
            f"draw on stability).{_advice_sentence(found, circuit)}", StabilityWarning, stacklevel=4)
    return found


def _advice_sentence(found: SpecStability, circuit: Circuit) -> str:
    """`` Per projection, <advice>.`` (dense checks), or the sparse check's prediction."""
    if found.check != "dense":
        return (f" Random-matrix prediction of max Re(eig) per loop: {[round(v, 3) for v in found.predicted]} "
                f"(per-projection sensitivities need dense eigenvectors; not computed above "
                f"{SPARSE_SPEC_SIZE} neurons).")
    return f" Per projection, {found.advice(circuit)}."


def _draws_note(draws: int) -> str:
    return (f"{draws} draws: {SPEC_DRAWS} for loops of up to {SPEC_DRAWS_FULL_SIZE} neurons, "
            f"{SPEC_DRAWS} ({SPEC_DRAWS_FULL_SIZE} / n)^3 above, {SPARSE_SPEC_DRAWS} sparse draws (ARPACK) above "
            f"{SPARSE_SPEC_SIZE}")


def log_sum_exp_abscissa(blocks: list[tuple[np.ndarray, float, float]], beta: float
                         ) -> tuple[float, float, list[np.ndarray]]:
    """``(1 / beta) log sum_i exp(beta v_i)`` over the eigenvalues of several matrices, ``v_i = offset + scale Re
    lambda_i`` per matrix, and its exact derivative in each matrix.

    Parameters
    ----------
    blocks : list of (numpy.ndarray, float, float)
        ``(matrix (n, n), offset, scale)`` per block (a loop's matrix and its steady scale).
    beta : float
        Softness: the value lies within ``log(n) / beta`` above ``max v_i`` (``n`` the eigenvalues in all).

    Returns
    -------
    value : float
    top : float
        ``max v_i``, not floored (``blocks`` must not be empty).
    derivatives : list of numpy.ndarray
        ``d value / d matrix`` ``(n, n)`` per block: the softmax-weighted eigenvalue derivatives
        ``scale Re(u_i^H dG v_i / u_i^H v_i)`` (left and right eigenvectors; simple eigenvalues).
    """
    parts = []
    for matrix, offset, scale in blocks:
        lam, left, right = scipy.linalg.eig(matrix, left=True, right=True)
        parts.append((offset + scale * lam.real, left, right, scale))
    vals = np.concatenate([p[0] for p in parts])
    top = float(vals.max())
    share = np.exp(beta * (vals - top))
    value = top + float(np.log(share.sum())) / beta
    share /= share.sum()
    out = []
    for (_, left, right, scale), weight in zip(parts, np.split(share, np.cumsum([p[0].size for p in parts])[:-1])):
        c = weight / np.einsum("ij,ij->j", np.conj(left), right)
        out.append(scale * np.real(np.conj(left) @ (c[:, None] * right.T)))
    return value, top, out


def _rule(circuit: Circuit) -> Stability:
    """The circuit's stability rule; dynamics without one (e.g. a discrete twin built to draw weights) are judged
    by ``max Re(eig W)`` of their loops, the steady rule."""
    return circuit.dynamics.stability(circuit) or Stability(circuit)


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


class Stability:
    """The stability criterion of a steady circuit: ``max Re(eig W) < 1`` over its recurrent loops.

    Parameters
    ----------
    circuit : Circuit

    Notes
    -----
    :meth:`loop_values` and :meth:`max_real_eig` report every loop on the steady scale (stable below 1);
    :meth:`abscissa` adds the exact gradient of that value in every weight, from the left and right eigenvectors
    of the rightmost eigenvalue (``d lambda = u^H dW v / u^H v``; defined where that eigenvalue is simple).
    """

    limit = 1.0  # stable iff the value is below this

    def __init__(self, circuit: Circuit):
        self.circuit = circuit

    def refusal(self, fraction: float, draws: int) -> str:
        """The middle of the spec refusal: which circuit, how often unstable, the criterion."""
        return (f"steady circuit {self.circuit.name!r} is unstable in {fraction:.0%} of {draws} teacher draws "
                f"(max Re(eig W) >= 1; the fixed point of tau dr/dt = -r + W r + input is stable iff "
                f"max Re(eig W) < 1, and at most ")

    def loops(self) -> tuple[Loop, ...]:
        """The circuit's recurrent loops (:func:`loops`)."""
        return loops(self.circuit)

    def _generator(self, loop: Loop, block: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        """``(matrix, row_scale, offset, scale)``: the matrix whose eigenvalues decide, ``d matrix / d W`` per row,
        and ``value = offset + scale * max Re eig(matrix)``. Steady: ``W`` itself."""
        return block, np.ones(block.shape[-1]), 0.0, 1.0

    def loop_values(self, loop: Loop, weights: Mapping[str, Any]) -> np.ndarray:
        """``max Re(eig)`` of ``loop``'s block per leading index, on the steady scale."""
        gen, _, offset, scale = self._generator(loop, loop_matrix(self.circuit, loop, weights))
        return offset + scale * _eigvals(gen).real.max(-1)

    def max_real_eig(self, weights: Mapping[str, Any], found: tuple[Loop, ...] | None = None) -> np.ndarray:
        """``max Re(eig W)`` of the recurrent matrix of the fixed point (all non-input neurons), per leading index.

        Parameters
        ----------
        weights : dict
            Weight name -> array ``(..., n_post, n_pre)`` (numpy, or torch on the CPU).
        found : tuple of Loop, optional
            ``loops(circuit)``, where a caller asks about many draws of one circuit (default: computed here).

        Returns
        -------
        numpy.ndarray
            ``(...)`` float64. At least 0: read-out neurons never project, so ``W`` always has zero eigenvalues.
        """
        lead = np.shape(next(iter(weights.values())))[:-2]
        best = np.zeros(lead)
        for loop in self.loops() if found is None else found:
            best = np.maximum(best, self.loop_values(loop, _numpy(weights, loop.projections)))
        return best

    def abscissa(self, weights: Mapping[str, Any]) -> tuple[float, dict[str, np.ndarray]]:
        """The spectral abscissa on the steady scale and its exact gradient, for one set of weights.

        Parameters
        ----------
        weights : dict
            Weight name -> array ``(n_post, n_pre)`` (one circuit).

        Returns
        -------
        value : float
            :meth:`max_real_eig` (at least 0: the read-outs' zero eigenvalues).
        gradient : dict
            Weight name -> ``(n_post, n_pre)`` float64, ``d value / d W``; zero outside the loop that attains the
            value (and everywhere when the floor 0 does).
        """
        circuit = self.circuit
        w = _numpy(weights, circuit.weight_names)
        grad = {k: np.zeros(circuit.shape(k)) for k in circuit.weight_names}
        best, arg = 0.0, None
        for loop in self.loops():
            block = loop_matrix(circuit, loop, w)
            gen, row_scale, offset, scale = self._generator(loop, block)
            vals, left, right = scipy.linalg.eig(gen, left=True, right=True)
            k = int(np.argmax(vals.real))
            value = offset + scale * float(vals[k].real)
            if value > best:
                u, v = left[:, k], right[:, k]
                d = scale * (np.conj(u)[:, None] * v[None, :] / (np.conj(u) @ v)).real * row_scale[:, None]
                best, arg = value, (loop, d)
        if arg is not None:
            self._spread(*arg, grad)
        return best, grad

    def _spread(self, loop: Loop, d: np.ndarray, grad: dict[str, np.ndarray]) -> None:
        """Add ``d`` ``(n, n)``, a derivative in ``loop``'s block, to the gradient of each projection inside it."""
        pos, start = {}, 0
        for name in loop.regions:
            size = self.circuit.region[name].size
            pos[name], start = slice(start, start + size), start + size
        for name in loop.projections:
            p = self.circuit.projection[name]
            grad[name] = grad[name] + d[pos[p.post], pos[p.pre]]

    def generators(self, weights: Mapping[str, Any]) -> list[np.ndarray]:
        """Per loop, the matrix whose eigenvalues decide it (steady: ``W``'s block; continuous:
        ``T^-1 (W - I)``'s): a loop is stable iff its matrix is Hurwitz after the shift ``- limit`` on the steady
        scale, i.e. iff ``gen - I`` (steady) or ``gen`` (continuous) is Hurwitz (:meth:`hurwitz`)."""
        return [self._generator(loop, loop_matrix(self.circuit, loop, weights))[0] for loop in self.loops()]

    def hurwitz(self, gen: np.ndarray) -> np.ndarray:
        """The matrix of ``dx/dt = A x`` whose Hurwitz property is a loop's stability (steady: ``gen - I``)."""
        return gen - np.eye(gen.shape[0])

    def smoothed_abscissa(self, weights: Mapping[str, Any], beta: float
                          ) -> tuple[float, float, dict[str, np.ndarray]]:
        """A log-sum-exp of every loop eigenvalue's value on the steady scale, and its exact gradient.

        Parameters
        ----------
        weights : dict
            Weight name -> array ``(n_post, n_pre)`` (one circuit).
        beta : float
            Softness: ``value`` lies within ``log(n) / beta`` above the largest (``n`` the loops' eigenvalues).

        Returns
        -------
        value : float
            ``(1 / beta) log sum_i exp(beta v_i)``, ``v_i = offset + scale Re lambda_i`` per loop eigenvalue.
        top : float
            ``max v_i``, floored at 0 as :meth:`max_real_eig`.
        gradient : dict
            Weight name -> ``(n_post, n_pre)``, ``d value / d W``: the softmax-weighted eigenvalue derivatives
            ``scale Re(u_i^H dG v_i / u_i^H v_i)`` (``G`` the loop's generator, ``dG / dW`` its row scale); zero
            outside the loops.
        """
        circuit = self.circuit
        w = _numpy(weights, circuit.weight_names)
        grad = {k: np.zeros(circuit.shape(k)) for k in circuit.weight_names}
        found = self.loops()
        if not found:
            return 0.0, 0.0, grad
        gens = [self._generator(loop, loop_matrix(circuit, loop, w)) for loop in found]
        value, top, ds = log_sum_exp_abscissa([(gen, offset, scale) for gen, _, offset, scale in gens], beta)
        for loop, (_, row_scale, _, _), d in zip(found, gens, ds):
            self._spread(loop, d * row_scale[:, None], grad)
        return value, max(top, 0.0), grad
