"""Deciders behind one protocol, and the ordered chain that runs them on a batch of trials.

A decider (optimistix's ``AbstractIterativeSolver`` is the model) says whether it applies to a batch of problems
(:meth:`Decider.applicable`), receives the trials still open and returns, for each, one of three outcomes
(:data:`neurosubset._schema.OUTCOME`): ``proven_match`` (a witness: the assembled student reproduces the teacher
within ``tol``, its residual recomputed from the assembled weights, admissible where stability is required),
``proven_no_match`` (a proof that no admissible plastic values match) or ``undecided``; with the kind of proof or
witness (:data:`~neurosubset._schema.DECISION`) and the fit status (:data:`~neurosubset._schema.FIT_STATUS`).

:func:`run_chain` gives each applicable decider, in order, the trials the earlier ones left undecided; the chain
for a requested solver (:func:`decider_chain`) is exact deciders first and the Levenberg-Marquardt last. Dale's sign
box and the stability requirement reach the deciders as data (:attr:`Batch.bounds`, :attr:`Batch.admissible`),
not as flags. Registering a new decider is one class and one line in :data:`AUTO_CHAIN`.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch

from .._schema import (BOUNDED_DECISION, CERTIFICATE_DECISION, LEAST_SQUARES_DECISION, LIFTED_DECISION, LM_DECISION,
                       MATCHED, NO_SOLUTION, INFEASIBLE, PROVEN_MATCH, PROVEN_NO_MATCH, STABLE_WITNESS_DECISION,
                       STALLED, UNDECIDED)
from .biological import StableWitness, batch_box, descend_refused, linear_continuous
from .bounded import Bounds, solve_exact
from .exact import ReluFeasibility, UnivariateRoots, exact_decider, solve_decider
from .lifted import lifting_applicable, solve_lifted
from .lm import relative_residual
from .multistart import multistart
from .proofs import BranchAndBound, SignConeLP
from .options import LIFT_HIDDEN, Auto, LeastSquares, LevenbergMarquardt, SteadyLifting

if TYPE_CHECKING:
    from ..allocation import Allocation


@dataclass(frozen=True)
class Problem:
    """What a decider's applicability depends on (no tensors: known before any draw).

    Attributes
    ----------
    circuit : Circuit
    alloc : Allocation
    m, trials : int
        Probes per trial and trials in the batch.
    affine : bool
        Whether the outputs are affine in the plastic weights.
    signed : bool
        Whether the sign box (Dale's law) binds some plastic synapse.
    zero : bool
        The certificate's rank deficit already decides every trial (fit ``skip_zero``).
    """

    circuit: Any
    alloc: Any
    m: int
    trials: int
    affine: bool
    signed: bool = False
    zero: bool = False


@dataclass
class Batch:
    """The trials of one chunk, as every decider sees them.

    Attributes
    ----------
    problem : Problem
    fmap : PlasticMap
        ``theta -> F(theta)`` per trial, on the CPU (the exact deciders' map).
    work : callable
        Returns the same map on the LM's device (built only where the LM runs).
    targets : torch.Tensor
        ``(trial, E)`` teacher outputs.
    own : torch.Tensor
        ``(trial, M)`` the student's plastic values as drawn.
    alloc : Allocation
    sigma : numpy.ndarray
        ``(M,)`` init SD of each plastic synapse (the LM's start scale).
    bounds : Bounds or None
        The sign box (Dale's law) where it binds, else None.
    admissible : callable or None
        ``admissible(map, theta) -> (n,) bool``: the stability requirement, where one is asked for.
    tol : float
    seed, first : int
        The fit's seed and the global index of the batch's first trial (restart seeds).
    device : torch.device
    progress : bool
    plausibility_bound : float
        ``K``: the biological deciders' witnesses and proofs keep each plastic value within ``K`` init SDs
        (:attr:`sigma`) of its synapse (:class:`~neurosubset.FitOptions` ``plausibility_bound``).
    tick : callable or None
        ``tick(k)``: ``k`` more trials finished (set by :func:`run_chain` where ``progress``: its per-trial bar).
    """

    problem: Problem
    fmap: Any
    work: Callable[[], Any]
    targets: torch.Tensor
    own: torch.Tensor
    alloc: Allocation
    sigma: np.ndarray
    bounds: Bounds | None
    admissible: Callable | None
    tol: float
    seed: int
    first: int
    device: torch.device = torch.device("cpu")
    progress: bool = False
    plausibility_bound: float = 100.0
    tick: Callable[[int], None] | None = None

    @property
    def trials(self) -> int:
        return int(self.targets.shape[0])


@dataclass
class Decided:
    """One decider's verdicts on the trials it was given (all arrays over those trials, in order).

    Attributes
    ----------
    theta, residual : torch.Tensor
        ``(n, M)`` plastic values and ``(n,)`` relative residuals (CPU).
    status, decision, outcome : numpy.ndarray
        ``(n,)`` int8 :data:`FIT_STATUS`, :data:`DECISION` and :data:`OUTCOME`.
    restarts : numpy.ndarray
        ``(n,)`` int64 restarts used.
    history : list of float or None
        Matched fraction (over these ``n``) after each restart round, for deciders that run rounds.
    rounds : int or None
        Length of the batch's ``mp_by_round`` when this decider is the last to run (None: the rounds of the
        solver the result records).
    improving : numpy.ndarray or None
        ``(n,)`` bool, deciders that run rounds: the last round (the cap) still improved the trial (its effort had
        not converged); None: False for every trial.
    """

    theta: torch.Tensor
    residual: torch.Tensor
    status: np.ndarray
    decision: np.ndarray
    outcome: np.ndarray
    restarts: np.ndarray
    history: list[float] | None = None
    rounds: int | None = 1
    improving: np.ndarray | None = None


class Decider:
    """The protocol: :meth:`applicable` to a batch, :meth:`decide` the open trials.

    Attributes
    ----------
    final : bool
        Whether the trials it leaves undecided stay so (it ran on the whole problem; the deciders after it would
        repeat a weaker search) rather than going on to the next decider.
    records : bool
        Whether a result records this decider's :meth:`recorded` solver when it is the first to apply.
    sparse_ready : bool
        Whether it runs on the sparse weights layout's map (:class:`~neurosubset.dynamics.sparse_map.SparsePlasticMap`:
        calls, Jacobians and subsets only, no dense weight matrices); the sparse layout's chain keeps only these.
    """

    name: ClassVar[str] = ""
    final: ClassVar[bool] = False
    records: ClassVar[bool] = True
    sparse_ready: ClassVar[bool] = False

    def applicable(self, problem: Problem) -> bool:
        raise NotImplementedError

    def decide(self, batch: Batch, open_: np.ndarray) -> Decided:
        raise NotImplementedError

    def recorded(self, problem: Problem) -> Any:
        """The solver object a result records (``FitResult.options``) when this decider is the first to apply."""
        raise NotImplementedError

    @classmethod
    def build(cls, lm: LevenbergMarquardt, dale: bool) -> Decider:
        """The decider for a requested solver's LM fields ``lm`` and the ``dale`` flag (how :data:`AUTO_CHAIN`
        is instantiated)."""
        return cls()


def _outcome(status: np.ndarray, proofs: Sequence[int] = (NO_SOLUTION, INFEASIBLE)) -> np.ndarray:
    """Per trial: matched -> proven_match, a proof status -> proven_no_match, anything else undecided."""
    out = np.full(status.shape, UNDECIDED, dtype=np.int8)
    out[status == MATCHED] = PROVEN_MATCH
    out[np.isin(status, list(proofs))] = PROVEN_NO_MATCH
    return out


def _on(batch: Batch, open_: np.ndarray):
    """``(fmap, targets, own)`` restricted to the open trials (the batch's own tensors when all are open)."""
    if open_.size == batch.trials:
        return batch.fmap, batch.targets, batch.own
    sel = torch.as_tensor(open_)
    return batch.fmap.subset(sel), batch.targets[sel], batch.own[sel]


@dataclass(frozen=True)
class RankCertificate(Decider):
    """The certificate's rank deficit (``skip_zero``): every trial proven unmatchable, nothing fitted; the student
    stays as drawn (``theta`` its own values, ``residual`` its actual residual)."""

    name: ClassVar[str] = "rank_certificate"
    final: ClassVar[bool] = True
    sparse_ready: ClassVar[bool] = True
    records: ClassVar[bool] = False  # the result records the solver that would have run

    def applicable(self, problem: Problem) -> bool:
        return problem.zero

    def decide(self, batch: Batch, open_: np.ndarray) -> Decided:
        fmap, targets, own = _on(batch, open_)
        n = open_.size
        return Decided(own, relative_residual(fmap(own), targets), np.full(n, NO_SOLUTION, dtype=np.int8),
                       np.full(n, CERTIFICATE_DECISION, dtype=np.int8), np.full(n, PROVEN_NO_MATCH, dtype=np.int8),
                       np.zeros(n, dtype=np.int64), rounds=None)


@dataclass(frozen=True)
class AffineLeastSquares(Decider):
    """Outputs affine in the plastic weights: least squares decides every trial exactly (bounded least squares
    inside the sign box). ``forced``: run even where the outputs are not affine (``solver="lstsq"`` asked for; a
    linearisation: its unmatched trials are then no proof). ``empty_only``: only for an empty allocation (the
    chains of a requested LM or lifted solver, which fit affine outputs their own way)."""

    forced: bool = False
    empty_only: bool = False
    name: ClassVar[str] = "lstsq"
    final: ClassVar[bool] = True
    sparse_ready: ClassVar[bool] = True

    def recorded(self, problem: Problem) -> LeastSquares:
        return LeastSquares()

    def applicable(self, problem: Problem) -> bool:
        if self.empty_only:
            return problem.alloc.size == 0
        return problem.affine or self.forced or problem.alloc.size == 0

    def decide(self, batch: Batch, open_: np.ndarray) -> Decided:
        fmap, targets, _ = _on(batch, open_)
        theta, resid, status = solve_exact(fmap, targets, batch.bounds, tol=batch.tol)
        kind = BOUNDED_DECISION if batch.bounds is not None else LEAST_SQUARES_DECISION
        proofs = (NO_SOLUTION, INFEASIBLE) if (batch.problem.affine or batch.alloc.size == 0) else ()
        return Decided(theta, resid, status, np.full(open_.size, kind, dtype=np.int8), _outcome(status, proofs),
                       np.zeros(open_.size, dtype=np.int64))


@dataclass(frozen=True)
class ExactNonAffine(Decider):
    """The exact deciders of :mod:`neurosubset.solvers.exact` where one applies (the ReLU cone / activation-pattern
    LPs, the real roots of one plastic synapse of a discrete linear circuit); stalled trials stay open."""

    dale: bool = False
    name: ClassVar[str] = "exact"
    final: ClassVar[bool] = True  # its stalled trials are reported as such, not handed to the LM

    @classmethod
    def build(cls, lm: LevenbergMarquardt, dale: bool) -> ExactNonAffine:
        return cls(dale=dale)

    def _which(self, problem: Problem) -> ReluFeasibility | UnivariateRoots | None:
        return exact_decider(problem.circuit, problem.alloc, problem.m, self.dale and problem.signed, problem.trials)

    def recorded(self, problem: Problem) -> ReluFeasibility | UnivariateRoots | None:
        return self._which(problem)

    def applicable(self, problem: Problem) -> bool:
        return not problem.affine and problem.alloc.size > 0 and self._which(problem) is not None

    def decide(self, batch: Batch, open_: np.ndarray) -> Decided:
        fmap, targets, _ = _on(batch, open_)
        theta, resid, status, kind = solve_decider(self._which(batch.problem), fmap, targets, batch.alloc, batch.bounds,
                                                   tol=batch.tol)
        return Decided(theta, resid, status, np.full(open_.size, kind, dtype=np.int8), _outcome(status),
                       np.zeros(open_.size, dtype=np.int64))


@dataclass(frozen=True)
class LiftedRates(Decider):
    """Linear steady circuits: the rates as unknowns (:func:`~neurosubset.solvers.lifted.solve_lifted`), a witness
    or a proof per trial; a witness that the stability requirement refuses stays open. ``lm``: the LM fields a
    result records (:class:`SteadyLifting`); ``forced``: asked for by name (any circuit size)."""

    lm: LevenbergMarquardt = field(default_factory=LevenbergMarquardt)
    forced: bool = False
    name: ClassVar[str] = "lifted"
    sparse_ready: ClassVar[bool] = True  # the free-read-out witness on sparse rows (solvers.sparse_lifted)

    @classmethod
    def build(cls, lm: LevenbergMarquardt, dale: bool) -> LiftedRates:
        return cls(lm)

    def recorded(self, problem: Problem) -> SteadyLifting:
        return SteadyLifting(self.lm.restarts, self.lm.max_rounds, self.lm.iterations, self.lm.widen,
                             self.lm.patience)

    def applicable(self, problem: Problem) -> bool:
        circuit = problem.circuit
        if problem.alloc.size == 0 or not lifting_applicable(circuit, problem.alloc, self.lm):
            return False
        return self.forced or (not problem.affine and circuit.n_neurons("hidden") >= LIFT_HIDDEN)

    def decide(self, batch: Batch, open_: np.ndarray) -> Decided:
        fmap, targets, own = _on(batch, open_)
        if getattr(fmap, "sparse", False):  # sparse rows: the free-read-out witness (finds, never refutes)
            from .sparse_lifted import solve_lifted_sparse
            theta, resid, status = solve_lifted_sparse(fmap, targets, own, batch.alloc, batch.bounds, tol=batch.tol)
        else:
            theta, resid, status = solve_lifted(fmap, targets, own, batch.alloc, batch.bounds, tol=batch.tol)
        if batch.admissible is not None and (status == MATCHED).any():
            hit = torch.as_tensor(np.flatnonzero(status == MATCHED))
            ok = np.asarray(batch.admissible(fmap.subset(hit), theta[hit]), dtype=bool)
            status[hit.numpy()[~ok]] = STALLED
        return Decided(theta, resid, status, np.full(open_.size, LIFTED_DECISION, dtype=np.int8), _outcome(status),
                       np.zeros(open_.size, dtype=np.int64), rounds=self.lm.max_rounds)


@dataclass(frozen=True)
class LevenbergMarquardtRounds(Decider):
    """The local solver, last in every chain: restart rounds of batched Levenberg-Marquardt
    (:func:`~neurosubset.solvers.multistart.multistart`). A match is a witness; an unmatched trial is undecided
    (a local solver can miss solutions), whatever its status.

    Where stability is required (``batch.admissible``), it searches inside the sign box within the plausibility
    bound ``K`` (:func:`~neurosubset.solvers.biological.plausibility_box`), as every other decider of that setting
    does: a witness beyond ``K`` does not count towards the bracket (``mp_lower``), and iterates far beyond it cost
    the most (V1 continuous, 40 plastic synapses, m = 2, 10 trials at the defaults, ``bench_realistic.py``, one
    run each: unbounded 1,230 s CPU, most of it in rounds 3-5 of one trial at 1,450-17,000 init SDs that ended at
    residual 0.04, 6 matched of which 1 within K; inside the box 102.5 s, 6 matched, all within K). Elsewhere it
    searches the sign box (or everywhere) as before.

    On a linear continuous circuit that must be stable, a trial whose rounds found only unstable matches inside the
    box goes on from its best one down the smoothed abscissa along the matched manifold
    (:func:`~neurosubset.solvers.biological.descend_refused`); a stable match found so is a witness (decision
    ``stable_witness``, Lyapunov-certified), and the last round's entry of ``history`` counts it. V1 continuous
    (``bench_realistic.py``, 10 trials, one run each side, interleaved): 8 decided in 148 s CPU instead of 6 in
    130 s; a 10x-effort reference matches 9.
    """

    lm: LevenbergMarquardt = field(default_factory=LevenbergMarquardt)
    name: ClassVar[str] = "lm"
    sparse_ready: ClassVar[bool] = True

    def recorded(self, problem: Problem) -> LevenbergMarquardt:
        return self.lm

    @classmethod
    def build(cls, lm: LevenbergMarquardt, dale: bool) -> LevenbergMarquardtRounds:
        return cls(lm)

    def applicable(self, problem: Problem) -> bool:
        return True

    def decide(self, batch: Batch, open_: np.ndarray) -> Decided:
        work, bounds = batch.work(), batch.bounds
        if batch.admissible is not None:  # stability required: within the plausibility bound (class doc)
            bounds = Bounds(*batch_box(batch))
        if open_.size == batch.trials:  # one batch: restart seeds from the batch's first global index
            out = multistart(work, batch.targets.to(batch.device), batch.sigma, self.lm, seed=batch.seed,
                             tol=batch.tol, progress=batch.progress, bounds=bounds,
                             admissible=batch.admissible, first=batch.first, tick=batch.tick)
        else:
            sel = torch.as_tensor(open_)
            out = multistart(work.subset(sel.to(batch.device)), batch.targets[sel].to(batch.device), batch.sigma,
                             self.lm, seed=batch.seed, tol=batch.tol, progress=batch.progress, bounds=bounds,
                             admissible=batch.admissible, trial_ids=batch.first + open_, tick=batch.tick)
        status, theta, resid = np.array(out.status), out.theta.cpu(), out.residual.cpu()
        decision, history = np.full(open_.size, LM_DECISION, dtype=np.int8), list(out.history)
        if batch.admissible is not None and linear_continuous(batch.problem.circuit):
            theta, resid, found = self._descend(batch, open_, theta, resid, status)
            status[found], decision[found] = MATCHED, STABLE_WITNESS_DECISION
            history[-1] += float(found.sum()) / open_.size  # the last round ends with its descents
        return Decided(theta, resid, status, decision, _outcome(status, proofs=()), np.asarray(out.restarts),
                       history=history, rounds=len(history), improving=out.improving)

    @staticmethod
    def _descend(batch: Batch, open_: np.ndarray, theta: torch.Tensor, resid: torch.Tensor, status: np.ndarray
                 ) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
        """Linear continuous circuits: down the smoothed abscissa from the rounds' refused (unstable) matches
        (:func:`~neurosubset.solvers.biological.descend_refused`): ``(theta, residual, found)``, the residuals
        recomputed by the toolkit's forward map and ``found`` only where that residual is below ``tol`` and the
        fit's stability requirement holds (elsewhere the LM's values and residuals stay)."""
        fmap, targets, _ = _on(batch, open_)
        values = theta.numpy().copy()
        found = descend_refused(batch, open_, values, status)
        if not found.any():
            return theta, resid, found
        hit = torch.as_tensor(np.flatnonzero(found))
        new = torch.as_tensor(values[hit.numpy()], dtype=targets.dtype)
        sub = fmap.subset(hit)
        new_resid = relative_residual(sub(new), targets[hit])
        ok = (new_resid.numpy() < batch.tol) & np.asarray(batch.admissible(sub, new), dtype=bool)
        found[hit.numpy()] = ok
        keep = hit[torch.as_tensor(ok)]
        theta, resid = theta.clone(), resid.clone()
        theta[keep], resid[keep] = new[torch.as_tensor(ok)], new_resid[torch.as_tensor(ok)]
        return theta, resid, found


# the chain Auto runs, in order: exact deciders first, the local solver last (a new decider: one line here)
AUTO_CHAIN = (RankCertificate, AffineLeastSquares, ExactNonAffine, LiftedRates, SignConeLP, StableWitness,
              BranchAndBound, LevenbergMarquardtRounds)


def decider_chain(solver: Any, *, dale: bool) -> tuple[Decider, ...]:
    """The deciders that run for a requested solver: :class:`Auto` the whole :data:`AUTO_CHAIN`; ``"lstsq"``
    least squares alone; ``"lifted"`` the lifted rates then the LM; ``"lm"`` the LM alone (the certificate's
    rank deficit first in every chain, where ``skip_zero`` computed one)."""
    lm = LevenbergMarquardt(solver.restarts, solver.max_rounds, solver.iterations, solver.widen,
                            solver.patience) if isinstance(solver, LevenbergMarquardt) else LevenbergMarquardt()
    zero = RankCertificate()
    if isinstance(solver, Auto):
        return tuple(decider.build(lm, dale) for decider in AUTO_CHAIN)
    if isinstance(solver, LeastSquares):
        return (zero, AffineLeastSquares(forced=True))
    if isinstance(solver, SteadyLifting):
        return (zero, AffineLeastSquares(empty_only=True), LiftedRates(lm, forced=True), LevenbergMarquardtRounds(lm))
    return (zero, AffineLeastSquares(empty_only=True), LevenbergMarquardtRounds(lm))


@dataclass
class ChainResult(Decided):
    """The chain's verdicts on every trial of a batch (:class:`Decided` over all its trials).

    ``history`` is the batch's ``mp_by_round`` where a decider ran rounds (``from_rounds``), else the final matched
    fraction repeated over the rounds the result records (recounted by the caller after its own admissibility
    check); ``solver`` the object recorded for the first decider that applied (and records).
    """

    from_rounds: bool = False
    solver: Any = None


def run_chain(chain: Sequence[Decider], batch: Batch) -> ChainResult:
    """Give each applicable decider, in order, the trials still undecided (until a ``final`` one has run).

    ``history``: where a decider ran rounds (the LM), the matched fraction after each of its rounds, counting the
    trials earlier deciders matched; otherwise the final matched fraction, repeated over the last decider's rounds.
    With ``batch.progress``, a tqdm bar over the batch's trials advances as trials finish (decided by a decider,
    or done with the LM's rounds), naming the decider at work.
    """
    n = batch.trials
    applicable = [d for d in chain if d.applicable(batch.problem)]
    bar, done = None, [0]
    if batch.progress:
        from tqdm.auto import tqdm

        # updated a few times per decider or LM round: every update drawn (no rate limit)
        bar = tqdm(total=n, desc="trials", unit="trial", leave=False, mininterval=0, miniters=1)

        def tick(k: int) -> None:
            done[0] += k
            bar.update(k)

        batch.tick = tick
    try:
        return _run(applicable, chain, batch, bar, done)
    finally:
        if bar is not None:
            bar.close()
            batch.tick = None


def _run(applicable: list[Decider], chain: Sequence[Decider], batch: Batch, bar: Any, done: list[int]
         ) -> ChainResult:
    """The loop of :func:`run_chain` (``bar``: its progress bar or None; ``done``: trials it counted)."""
    n = batch.trials
    recorded = resolve(chain, batch.problem)
    theta, resid = batch.own.clone(), torch.full((n,), float("nan"), dtype=batch.targets.dtype)
    status, decision = np.zeros(n, dtype=np.int8), np.zeros(n, dtype=np.int8)
    outcome, restarts = np.full(n, UNDECIDED, dtype=np.int8), np.zeros(n, dtype=np.int64)
    improving = np.zeros(n, dtype=bool)
    open_, history, rounds = np.arange(n), None, 1
    for step, decider in enumerate(applicable):
        if open_.size == 0:
            break
        if bar is not None:
            bar.set_postfix_str(decider.name)
        before = float((status == MATCHED).sum())
        got = decider.decide(batch, open_)
        if open_.size == n:
            theta, resid = got.theta, got.residual
        else:
            sel = torch.as_tensor(open_)
            theta, resid = theta.clone(), resid.clone()
            theta[sel], resid[sel] = got.theta, got.residual
        status[open_], decision[open_], outcome[open_] = got.status, got.decision, got.outcome
        restarts[open_] = got.restarts
        if got.improving is not None:
            improving[open_] = got.improving
        rounds = got.rounds if got.rounds is not None else getattr(recorded, "max_rounds", 1)
        if got.history is None:
            history = None
        elif open_.size == n:
            history = list(got.history)
        else:
            history = [(before + h * open_.size) / n for h in got.history]
        open_ = open_[got.outcome == UNDECIDED]
        if bar is not None:  # decided trials are finished; after the last decider, every trial is
            last = decider.final or step == len(applicable) - 1
            gone = n if last else n - open_.size
            if gone > done[0]:
                bar.update(gone - done[0])
                done[0] = gone
        if decider.final:
            break
    if history is None:
        return ChainResult(theta, resid, status, decision, outcome, restarts,
                           [float((status == MATCHED).sum()) / n] * rounds, improving=improving, from_rounds=False,
                           solver=recorded)
    return ChainResult(theta, resid, status, decision, outcome, restarts, history, improving=improving,
                       from_rounds=True, solver=recorded)


def resolve(chain: Sequence[Decider], problem: Problem) -> Any:
    """The solver object a result records: that of the first decider of ``chain`` that applies (and records)."""
    return next((d.recorded(problem) for d in chain if d.records and d.applicable(problem)), None)
