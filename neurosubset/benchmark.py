"""The teacher-student benchmark: draw teachers, students and probes; fit the plastic synapses; estimate MP.

For each trial ``i`` (its own ``numpy.random.SeedSequence(seed, spawn_key=(i, 0))``):

1. teacher weights ``W*`` from the circuit's initial distribution;
2. the student's weights ``W0`` drawn independently from the same distribution; the entries outside the
   allocation are frozen at these values;
3. ``m`` probes with iid N(0, 1) entries (sequences of ``steps`` inputs for discrete dynamics);
4. the plastic values ``theta`` are fitted so that the student ``W0[frozen] + scatter(theta)`` reproduces the
   teacher's outputs on all probes. The trial is *matched* if the relative residual
   ``||y_student - y_teacher|| / ||y_teacher||`` falls below ``tol`` (default 1e-8; see :data:`DEFAULT_TOL`).

``MP(A, m)`` is the fraction of matched trials, reported with a 95% Wilson score interval.

Biological constraints (both on by default; ``dale=False, stable=False`` is the unconstrained benchmark, bit for
bit):

- ``dale``: a plastic synapse from a region with ``sign = s`` stays in ``s * [0, inf)`` throughout fitting
  (:func:`neurosubset.solvers.bounded.sign_bounds`): affine outputs are decided exactly per trial by bounded least
  squares (BVLS), others fitted by a projected Levenberg-Marquardt with restarts drawn inside the box.
- ``stable`` (steady circuits; discrete and feed-forward ones have no fixed point to lose): a match counts only
  if the student's recurrent matrix has ``max Re(eig W) < 1`` (its fixed point is stable under
  ``tau dr/dt = -r + W r + input``); the LM keeps restarting a trial that lands on an unstable solution. The
  teacher and the student's own draw then come from the circuit's init distribution *conditioned on stability*:
  an unstable draw is rejected and redrawn from the trial's stream (the counts are stored per trial), which is the
  circuit one means by a stable E/I spec; specs with mostly unstable draws are refused when built
  (:class:`~neurosubset.circuit.Circuit`), so the rejection costs at most about 2 draws per accepted one.
"""
from __future__ import annotations

import dataclasses
import sys
import time
import warnings
from dataclasses import dataclass

import numpy as np
import torch
import xarray as xr

from . import _schema
from ._checks import MAX_SEED, NonFiniteOutputWarning, ParameterError, check_flag, check_int
from ._memory import chunk_trials
from ._schema import NON_FINITE, UNSTABLE, meta, var_name, version
from .dynamics.stability import loops, max_real_eig, stability_applies
from .allocation import Allocation
from .circuit import Circuit
from .draws import Trials, draw_trials
from .dynamics import DTYPE, PlasticMap, forward, is_affine, torch_threads
from .dynamics.sparse_map import SparseWeights, WeightsLayout, choose_layout
from .solvers import Auto, LeastSquares, LevenbergMarquardt, Solver, as_solver
from .solvers.bounded import sign_bounds
from .solvers.chain import Batch, Problem, decider_chain, resolve, run_chain
from .solvers.options import SteadyLifting
from .solvers.lifted import lifting_applicable
from .options import DEFAULT_TOL, FitOptions, fit_options
from .results import fit_dataset, student_weights, teacher_weights, wilson_interval
from .theory import Certificate, certify

SKIP_ZERO_HIDDEN = 128  # skip_zero's default: certify first on circuits with at least this many hidden neurons

__all__ = ["DEFAULT_TOL", "FitResult", "PartialResult", "Trials", "cost_estimate", "draw_trials", "fit", "fit_dataset",
           "match_probability",
           "student_weights", "teacher_weights", "version", "var_name", "wilson_interval"]


@dataclass(frozen=True)
class FitResult:
    """Fitted students of a batch of trials.

    Attributes
    ----------
    trials : Trials
        The draws.
    student : dict
        Weight name -> ``(trial, n_post, n_pre)``: fitted student weights (frozen entries equal ``student_init``
        bit for bit; plastic entries hold ``theta``). In the sparse weights layout
        (:class:`~neurosubset.FitOptions` ``weights_layout``) each is a
        :class:`~neurosubset.dynamics.sparse_map.SparseWeights` instead (and so are ``trials.teacher`` and
        ``trials.student_init``): ``(trial, S)`` values on the present synapses, ``student[k][i]`` trial ``i``'s
        matrix as a ``scipy.sparse.csr_array`` ``(n_post, n_pre)``, ``student[k].toarray()`` the dense array.
    theta : numpy.ndarray
        ``(trial, M)`` best plastic values found (the allocation's entries in weight order, row-major).
    residual : numpy.ndarray
        ``(trial,)`` best relative residual.
    matched : numpy.ndarray
        ``(trial,)`` bool, ``residual < tol``.
    restarts : numpy.ndarray
        ``(trial,)`` restarts (fresh random starts) used; 0 for the exact affine solve. Restarts continued from one
        round into the next are counted once.
    mp_by_round : numpy.ndarray
        ``(round,)`` fraction matched after each restart round (one entry for the affine solve).
    solver : str
        ``"lstsq"`` (exact, affine case) or ``"lm"``: the solver that ran.
    tol : float
        The match tolerance.
    status : numpy.ndarray
        ``(trial,)`` int8 how each trial's fit ended (:data:`neurosubset._schema.FIT_STATUS`: matched,
        no_solution (exact: proven unmatchable even without sign bounds), stalled, iteration_cap, no_descent,
        non_finite, unstable (reproduces the teacher, but the student's fixed point is unstable), infeasible
        (exact: solvable, but not with the signs Dale's law allows)).
    options : LeastSquares or LevenbergMarquardt
        The solver object that ran (``Auto`` resolved).
    dale, stable : bool
        The constraints asked for: sign bounds on the plastic values; stability required of a match (which applies
        to steady circuits only).
    exact : bool
        Whether MP is exact up to sampling (affine decisions, and stability either not required or not moved by the
        plastic values); otherwise a lower bound (a local solver can miss solutions).
    max_real_eig : numpy.ndarray or None
        ``(trial,)`` ``max Re(eig W)`` of the fitted student's recurrent matrix (steady circuits); continuous ones
        on the steady scale (linear: ``T^-1 (W - I)``, :mod:`neurosubset.dynamics.stability`; nonlinear: the Jacobian at
        the final states, maxed over probes, :func:`neurosubset.dynamics.continuous.final_max_real_eig`); else None.
    sign_violations : numpy.ndarray or None
        ``(trial,)`` int64 plastic values of the wrong sign for their presynaptic region (None if no plastic
        synapse is signed; always 0 with ``dale``).
    decision : numpy.ndarray or None
        ``(trial,)`` int8 :data:`neurosubset._schema.DECISION`: the decider that settled each trial.
    outcome : numpy.ndarray or None
        ``(trial,)`` int8 :data:`neurosubset._schema.OUTCOME`: a witness (proven_match), a proof of no match
        (proven_no_match) or neither (undecided).
    proof_kind : numpy.ndarray or None
        ``(trial,)`` int8 :data:`neurosubset._schema.PROOF_KIND` where ``dale`` or ``stable`` acts (else None):
        a witness (Lyapunov-certified where stability is required and the dynamics is steady), an exact proof, or
        a proof within the plausibility bound ``K``.
    witness_scale : numpy.ndarray or None
        ``(trial,)`` float64 where ``dale`` or ``stable`` acts: ``max_k |theta_k| / sigma_k`` of a matched
        student (init SDs of its synapse), NaN where not matched.
    improving : numpy.ndarray or None
        ``(trial,)`` bool: the LM's last round (``max_rounds``) still improved the trial (a match, or a lower best
        residual): its effort had not converged (:attr:`LevenbergMarquardt.patience`); False where a decider other
        than the LM settled it. None for trials read back from a file or store.
    """

    trials: Trials
    student: dict[str, np.ndarray]
    theta: np.ndarray
    residual: np.ndarray
    matched: np.ndarray
    restarts: np.ndarray
    mp_by_round: np.ndarray
    solver: str
    tol: float
    status: np.ndarray
    options: LeastSquares | LevenbergMarquardt
    dale: bool = False
    stable: bool = False
    exact: bool = True
    max_real_eig: np.ndarray | None = None
    sign_violations: np.ndarray | None = None
    decision: np.ndarray | None = None
    outcome: np.ndarray | None = None
    proof_kind: np.ndarray | None = None
    witness_scale: np.ndarray | None = None
    improving: np.ndarray | None = None

    @property
    def student_stable(self) -> np.ndarray | None:
        """``(trial,)`` bool: ``max_real_eig < 1`` (steady and linear continuous: the fixed point is stable;
        nonlinear continuous: the Jacobian at every probe's final state has all real parts < 0), else None."""
        return None if self.max_real_eig is None else self.max_real_eig < 1.0


def fit(circuit: Circuit, alloc: Allocation, m: int, trials: int = 200, seed: int = 0, *,
        solver: Solver | str = Auto(), tol: float = DEFAULT_TOL, threads: int | None = 1, progress: bool = False,
        dale: bool = True, stable: bool = True, restarts: int | None = None, max_rounds: int | None = None,
        steps: int | None = None, widen: float | None = None, device: str | torch.device = "cpu",
        chunk: int | None = None, max_memory: float | None = None, skip_zero: bool | None = None,
        options: FitOptions | None = None) -> FitResult:
    """Draw ``trials`` teacher/student pairs and fit every student's plastic synapses, batched over trials.

    Trials are processed in chunks sized from the memory available (all in one batch when they fit), so memory
    does not grow with ``trials`` beyond the per-trial results; every trial's draws and restarts come from its own
    seeds, so the decisions do not depend on the chunk size.

    Parameters
    ----------
    circuit : Circuit
    alloc : Allocation
    m : int
        Number of probes (>= 1).
    trials : int
        Number of independent teacher/student/probe draws.
    seed : int
        Trial ``i`` uses ``SeedSequence(seed, spawn_key=(i, 0))``; restarts ``(i, 1, round)``.
    solver : Auto, LeastSquares, LevenbergMarquardt or {"auto", "lstsq", "lm"}
        :class:`~neurosubset.solvers.Auto` (default) uses exact least squares when the outputs are affine in the
        plastic weights (:func:`neurosubset.dynamics.is_affine`), the exact deciders of
        :mod:`neurosubset.solvers.exact` and :mod:`neurosubset.solvers.lifted` where they apply (``"lifted"``:
        linear steady circuits, by default from 128 hidden neurons) and Levenberg-Marquardt otherwise. The LM's
        multi-start policy (:mod:`neurosubset.solvers.multistart`): every still-unmatched trial gets a new round
        until it matches or reaches ``max_rounds``; restart ``j`` of round ``r`` starts from
        ``N(0, (widen^(r j / (restarts - 1)) sigma)^2)`` with ``sigma`` the init std, and runs up to
        ``iterations * 2^min(r, 3)`` iterations; restarts still descending at a round's cap continue into the
        next round (the ``restarts`` best of them).
    tol : float
        Match tolerance on the relative residual.
    threads : int or None
        torch intra-op threads while fitting (restored afterwards; ``None`` keeps torch's setting). One thread is
        as fast on an idle machine and many times faster on a loaded one (see
        :func:`neurosubset.dynamics.torch_threads`).
    progress : bool
        Show a progress bar over rounds (and, in :func:`match_probability`, print a cost estimate first:
        :func:`cost_estimate`).
    dale : bool
        Keep every plastic synapse from a signed region on its sign while fitting (Dale's law): exact bounded least
        squares (BVLS) on affine outputs, a projected LM with restarts inside the sign box otherwise. Regions
        without ``sign`` are free either way.
    stable : bool
        Steady circuits: count a match only if the student's fixed point is stable (``max Re(eig W) < 1``), keep
        restarting trials that land on unstable solutions, and draw teacher and student from the init
        distribution conditioned on stability (rejected draws counted). Linear continuous circuits likewise, with
        their criterion ``max Re eig(T^-1 (W - I)) < 0`` (``max_real_eig`` is then reported on the steady scale,
        see :mod:`neurosubset.dynamics.stability`). Ignored for other dynamics: nonlinear continuous circuits report
        ``max_real_eig`` per trial (the Jacobian at each probe's final state, maxed over probes) without acting on
        it, since that state is not a fixed point in general (local, probe-dependent information, not the
        stability of a steady state).
    restarts, max_rounds, steps, widen
        Deprecated (FutureWarning): fields of the solver object (``steps`` is its ``iterations``).
    device : {"cpu", "cuda"} or torch.device
        Where the LM's batched iterations run (``"cuda"`` needs a torch that sees a GPU); decisions agree to
        rounding. Draws (numpy) and the exact deciders (least squares, BVLS, LPs, roots) stay on the CPU; results
        come back as numpy arrays.
    chunk : int, optional
        Trials per batch (default: as many as half the available memory, at most 1 GiB, holds; see
        :func:`neurosubset._memory.chunk_trials`).
    max_memory : float, optional
        Bytes one batch may take (an upper bound on the default chunk size).
    skip_zero : bool, optional
        Certify first (:func:`neurosubset.theory.certify` with the same ``m``, ``seed``, ``dale``, ``stable``) and,
        where the verdict is "zero" (a rank deficit: no plastic values reproduce a generic teacher), fit nothing:
        every trial is recorded with ``decision`` "rank_certificate", ``fit_status`` no_solution, no restarts,
        and the student as drawn (``theta`` its own plastic values, ``residual`` its actual residual). Default
        (None): on for circuits with at least :data:`SKIP_ZERO_HIDDEN` hidden neurons, where fitting a trial the
        certificate already decides costs minutes (the worm: seconds to certify, hours of LM), off otherwise;
        ``False`` fits every trial, whatever the certificate.
    options : FitOptions, optional
        All of ``solver``, ``tol``, ``threads``, ``dale``, ``stable``, ``device``, ``chunk``, ``max_memory`` and
        ``skip_zero`` as one validated object (:class:`neurosubset.FitOptions`; its ``certificate`` is not used
        here), instead of the keywords.

    Returns
    -------
    FitResult
    """
    options = fit_options("fit", options, solver=solver, tol=tol, threads=threads, dale=dale, stable=stable,
                          device=device, chunk=chunk, max_memory=max_memory, skip_zero=skip_zero)
    if any(v is not None for v in (restarts, max_rounds, steps, widen)):  # deprecated: FutureWarning
        options = options._evolve(solver=as_solver(options.solver, where="fit", restarts=restarts,
                                                   max_rounds=max_rounds, steps=steps, widen=widen))
    options.check_circuit(circuit, "fit")
    return _request(circuit, alloc, m, trials, seed, options=options, progress=progress)


def _request(circuit: Circuit, alloc: Allocation, m: int, trials: int, seed: int, *, options: FitOptions,
             progress: bool, keep_weights: bool = True, cert: Certificate | None = None,
             resume: FitResult | None = None) -> FitResult:
    """:func:`fit` after its options are validated: the checks of the request, the certificate where asked, the
    chunked fit."""
    m = check_int("m", m, minimum=1)
    trials = check_int("trials", trials, minimum=1)
    seed = check_int("seed", seed, minimum=0, maximum=MAX_SEED)
    if set(alloc.masks) != set(circuit.weight_names):
        raise ParameterError(f"The allocation does not belong to circuit {circuit.name!r}: its weights are "
                             f"{sorted(alloc.masks)}, the circuit's {list(circuit.weight_names)}.")
    if not _skips_zero(circuit, options.skip_zero):
        cert = None
    elif cert is None:
        with torch_threads(options.threads):
            cert = certify(circuit, alloc, m=m, seed=seed, dale=options.dale, stable=options.stable)
    return _fit_trials(circuit, alloc, m, trials, seed, options=options, progress=progress, cert=cert,
                       keep_weights=keep_weights, resume=resume)


class _Interrupted(KeyboardInterrupt):
    """An interrupt after at least one chunk of trials finished; ``result`` holds those trials."""

    def __init__(self, result: FitResult):
        super().__init__("interrupted")
        self.result = result


class PartialResult(KeyboardInterrupt):
    """:func:`match_probability` interrupted (``KeyboardInterrupt``: Ctrl-C, or SIGTERM where the caller maps it,
    as the ``mp`` command does) after at least one chunk of trials finished.

    Attributes
    ----------
    dataset : xarray.Dataset
        The finished trials ``0 .. trials_done - 1`` as a result Dataset, marked ``partial = 1`` with attrs
        ``trials_done`` and ``trials_requested`` (no certificate).
    result : FitResult
        The same trials (per-trial values, no weights), what ``_resume`` takes to complete the request.
    """

    def __init__(self, dataset: xr.Dataset, result: FitResult):
        super().__init__(f"interrupted after {result.matched.size} trials")
        self.dataset = dataset
        self.result = result


def _fit_trials(circuit: Circuit, alloc: Allocation, m: int, trials: int, seed: int, *, options: FitOptions,
                progress: bool, cert: Certificate | None, keep_weights: bool = True,
                resume: FitResult | None = None) -> FitResult:
    """Trials in chunks (the solver resolved once for all of them), results concatenated in trial order.

    ``keep_weights=False`` drops the per-trial weight matrices and probes of each chunk once it is fitted (what a
    Dataset without ``return_weights`` needs), so memory stays at one chunk plus per-trial scalars. ``resume``: the
    trials ``0 .. k - 1`` already fitted (an interrupted request's, without weights); only ``k ..`` are fitted.
    A ``KeyboardInterrupt`` after at least one finished chunk (or a ``resume``) becomes :class:`_Interrupted`
    carrying the finished trials.
    """
    solver, tol, dale, stable = options.solver, options.tol, options.dale, options.stable
    if choose_layout(circuit, options.weights_layout) is WeightsLayout.SPARSE:  # values on synapses, sparse solves
        return _fit_trials_sparse(circuit, alloc, m, trials, seed, options=options, progress=progress, cert=cert,
                                  keep_weights=keep_weights, resume=resume)
    device = torch.device(options.device)
    with torch_threads(options.threads):
        _check_lifted(circuit, alloc, solver)
        resolved = resolve(decider_chain(solver, dale=dale), _problem(circuit, alloc, m, trials, seed, dale))
        # refuse, before any draw, what the machine cannot hold even one trial at a time
        size = chunk_trials(circuit, alloc, m, trials, resolved, chunk=options.chunk, max_memory=options.max_memory,
                            what="fit")
        zero = cert is not None and cert.verdict == "zero"
        parts = [] if resume is None else [resume]
        try:
            for first in range(0 if resume is None else resume.matched.size, trials, size):
                draws = draw_trials(circuit, m, min(size, trials - first), seed, first=first, stable=stable)
                part = _fit(circuit, alloc, draws, seed=seed, tol=tol, solver=solver, progress=progress, dale=dale,
                            stable=stable, first=first, device=device, zero=zero,
                            plausibility_bound=options.plausibility_bound)
                parts.append(part if keep_weights else _without_weights(part))
        except KeyboardInterrupt:
            if not parts:
                raise
            raise _Interrupted(parts[0] if len(parts) == 1 else _concat(_with_solver(parts))) from None
    return parts[0] if len(parts) == 1 else _concat(_with_solver(parts))


def _fit_trials_sparse(circuit: Circuit, alloc: Allocation, m: int, trials: int, seed: int, *, options: FitOptions,
                       progress: bool, cert: Certificate | None, keep_weights: bool = True,
                       resume: FitResult | None = None) -> FitResult:
    """:func:`_fit_trials` in the sparse weights layout (:mod:`neurosubset.sparse_fit`): the same trials, restart
    seeds and chain of sparse-ready deciders; with ``stable`` (steady circuits) every match checked for stability by
    sparse eigen-solves (``max_real_eig`` reported then, None otherwise). With ``keep_weights`` the
    teacher, the student's draw and the fitted student come back as
    :class:`~neurosubset.dynamics.sparse_map.SparseWeights` per weight name (values on the structure, memory checked
    first), with the probes; without, none of them."""
    from .dynamics.sparse_map import sparse_weights
    from .sparse_fit import check_kept_weights, sparse_setup

    plan = sparse_setup(circuit, alloc, m, trials, options=options, cert=cert)
    if keep_weights:
        check_kept_weights(plan, trials)
    parts = [] if resume is None else [resume]
    with torch_threads(options.threads):
        try:
            for first in range(0 if resume is None else resume.matched.size, trials, plan.size):
                n = min(plan.size, trials - first)
                out, draws = plan.run_chunk(first, n, seed, tol=options.tol, progress=progress,
                                            plausibility_bound=options.plausibility_bound)
                resid = out.residual.cpu().numpy()
                matched = (resid < options.tol) & (not plan.zero)
                theta = out.theta.cpu().numpy()
                fitted = draws.student_init.copy()
                fitted[:, plan.system.plastic] = theta
                status, outcome, max_re = out.status, out.outcome, None
                if plan.found:  # checked on the values reported, whatever the decider did (as the dense layout)
                    max_re = plan.max_real_eig(fitted)
                    unstable = matched & ~(max_re < 1.0)
                    matched, status = matched & ~unstable, np.where(unstable, np.int8(UNSTABLE), status)
                    outcome = np.where(unstable, np.int8(_schema.UNDECIDED), outcome)
                history = out.history if out.from_rounds else [float(matched.mean())] * len(out.history)
                exact = bool(((outcome != _schema.UNDECIDED) & (out.decision != _schema.LM_DECISION)).all())
                proof_kind = witness_scale = None
                if plan.bounds is not None or plan.found:  # a stable witness here: ARPACK's, no Lyapunov solve
                    proof_kind, witness_scale = _evidence(circuit, {}, theta, plan.sigma, out.decision, outcome,
                                                          False)
                if keep_weights:
                    kept = Trials(sparse_weights(circuit, plan.structure, draws.teacher),
                                  sparse_weights(circuit, plan.structure, draws.student_init), draws.probes,
                                  draws.teacher_rejected, draws.student_rejected)
                    student = sparse_weights(circuit, plan.structure, fitted)
                else:
                    kept = Trials({}, {}, np.zeros((n, 0)), draws.teacher_rejected, draws.student_rejected)
                    student = {}
                parts.append(FitResult(
                    kept, student, theta, resid, matched, out.restarts, np.array(history), out.solver.name, options.tol,
                    status, out.solver, dale=options.dale, stable=options.stable, exact=exact, max_real_eig=max_re,
                    sign_violations=plan.signs.violations(theta) if plan.signs.active else None,
                    decision=out.decision.astype(np.int8), outcome=outcome.astype(np.int8),
                    proof_kind=proof_kind, witness_scale=witness_scale))
        except KeyboardInterrupt:
            if not parts:
                raise
            raise _Interrupted(parts[0] if len(parts) == 1 else _concat(_with_solver(parts))) from None
    return parts[0] if len(parts) == 1 else _concat(_with_solver(parts))


CALIBRATION_TRIALS = 2  # trials of the one-round calibration behind the cost estimate


def _seconds(t: float) -> str:
    return f"{t:.0f} s" if t < 120 else f"{t / 60:.1f} min" if t < 7200 else f"{t / 3600:.1f} h"


def cost_estimate(circuit: Circuit, alloc: Allocation, m: int, trials: int, seed: int, options: FitOptions,
                  *, points: int = 1) -> str:
    """One line: the estimated cost of ``trials`` trials (at each of ``points`` points) from a one-round calibration
    on the first :data:`CALIBRATION_TRIALS` trials, and what lowers it.

    The calibration fits those trials with the same deciders and one LM round (``max_rounds = 1``), timed on this
    machine. Exact deciders settle a trial at that cost; the LM's later rounds run only for trials still open, with
    iterations doubling per round up to 8x, so the estimate is a range: every trial settled in its first round, up
    to every trial running all ``max_rounds`` rounds. The calibration's own time is extra (and included in none of
    them).
    """
    from .solvers import lm_fields

    k = min(trials, CALIBRATION_TRIALS)
    solver = options.solver
    lm = lm_fields(solver)
    one = solver if isinstance(solver, LeastSquares) else type(solver)(**{**lm, "max_rounds": 1})
    start = time.perf_counter()
    res = _fit_trials(circuit, alloc, m, k, seed, options=options._evolve(solver=one, chunk=None), progress=False,
                      cert=None, keep_weights=False)
    took = time.perf_counter() - start
    low = took / k * trials * points
    rounds = int(lm["max_rounds"])
    high = low * sum(min(2 ** r, 8) for r in range(rounds))
    what = f"{trials} trials" + (f" x {points} points" if points > 1 else "")
    if res.exact or isinstance(solver, LeastSquares):
        return (f"estimated cost: about {_seconds(low)} for {what} (exact deciders: one round on {k} trials took "
                f"{took:.2f} s); fewer trials lower it")
    return (f"estimated cost: about {_seconds(low)} for {what} if each trial is settled in its first round, up to "
            f"{_seconds(high)} if every trial runs all {rounds} rounds (one LM round on {k} trials took {took:.2f} s; "
            f"iterations double per round up to 8x); lower it with fewer trials, fewer rounds or restarts "
            f"(LevenbergMarquardt(max_rounds=..., restarts=...), --max-rounds / --restarts), or without the "
            f"constraints that keep trials open (dale=False / stable=False, --no-dale / --no-stable)")


def _with_solver(parts: list[FitResult]) -> list[FitResult]:
    """``parts`` with a resumed first part (read back without its solver objects) given the second's."""
    if len(parts) > 1 and parts[0].options is None:
        ref = parts[1]
        parts = [dataclasses.replace(parts[0], options=ref.options, solver=ref.solver, tol=ref.tol, dale=ref.dale,
                                     stable=ref.stable), *parts[1:]]
    return parts


def _check_lifted(circuit: Circuit, alloc: Allocation, solver: Solver) -> None:
    """Refuse ``solver="lifted"`` where the lifted rates do not apply (one line)."""
    if isinstance(solver, SteadyLifting) and not lifting_applicable(circuit, alloc, solver):
        raise ParameterError(f"solver 'lifted' needs a linear steady circuit; {circuit.name!r} "
                             f"is {circuit.nonlinearity} {circuit.dynamics}. Use one of 'auto', 'lstsq', 'lm'.")


def _problem(circuit: Circuit, alloc: Allocation, m: int, trials: int, seed: int, dale: bool,
             zero: bool = False) -> Problem:
    """What the deciders' applicability depends on (no draws needed)."""
    signed = dale and sign_bounds(circuit, alloc).active
    return Problem(circuit, alloc, m, trials, affine=is_affine(circuit, alloc, seed=seed), signed=signed, zero=zero)


def _without_weights(res: FitResult) -> FitResult:
    """``res`` without its weight matrices and probes (per-trial scalars, ``theta`` and rejection counts kept)."""
    t = res.trials
    light = Trials({}, {}, np.zeros((res.matched.size, 0)), t.teacher_rejected, t.student_rejected)
    return dataclasses.replace(res, trials=light, student={})


def _concat(parts: list[FitResult]) -> FitResult:
    """The chunks' results as one, in trial order; ``mp_by_round`` recounted over all trials."""
    # a resumed part (read back from a file or a sweep store) may lack what the fitted parts report: then None
    cat = (lambda xs: None if any(x is None for x in xs) else np.concatenate(xs))
    field = (lambda name: cat([getattr(p, name) for p in parts]))
    dicts = (lambda ds: {k: SparseWeights.concatenate([d[k] for d in ds]) if isinstance(ds[0][k], SparseWeights)
                         else np.concatenate([d[k] for d in ds]) for k in ds[0]})
    ts = [p.trials for p in parts]
    draws = Trials(dicts([t.teacher for t in ts]), dicts([t.student_init for t in ts]),
                   np.concatenate([t.probes for t in ts]), cat([t.teacher_rejected for t in ts]),
                   cat([t.student_rejected for t in ts]))
    matched = field("matched")
    sizes = [p.matched.size for p in parts]
    # each chunk's fractions are exact counts / chunk size: recount, then divide once (as over one batch); a part
    # with fewer rounds keeps its final count in the later ones (a resumed part may be padded to the round cap)
    rounds = max(p.mp_by_round.size for p in parts)
    counts = sum(np.rint(np.pad(p.mp_by_round, (0, rounds - p.mp_by_round.size), mode="edge") * n)
                 for p, n in zip(parts, sizes))
    return dataclasses.replace(
        parts[0], trials=draws, student=dicts([p.student for p in parts]), theta=field("theta"),
        residual=field("residual"), matched=matched, restarts=field("restarts"), mp_by_round=counts / matched.size,
        status=field("status"), exact=all(p.exact for p in parts), max_real_eig=field("max_real_eig"),
        sign_violations=field("sign_violations"), decision=field("decision"), outcome=field("outcome"),
        proof_kind=field("proof_kind"), witness_scale=field("witness_scale"), improving=field("improving"))


def _skips_zero(circuit: Circuit, skip_zero: bool | None) -> bool:
    """``skip_zero`` resolved: None means "on for circuits with >= SKIP_ZERO_HIDDEN hidden neurons"."""
    if skip_zero is None:
        return circuit.n_neurons("hidden") >= SKIP_ZERO_HIDDEN
    return check_flag("skip_zero", skip_zero)


def _fit(circuit: Circuit, alloc: Allocation, draws: Trials, *, seed: int, tol: float, solver: Solver,
         progress: bool, dale: bool = False, stable: bool = False, first: int = 0,
         device: torch.device = torch.device("cpu"), zero: bool = False,
         plausibility_bound: float = 100.0) -> FitResult:
    """Fit trials ``first .. first + len(draws) - 1`` (restart seeds use the global trial index)."""
    trials, m = draws.probes.shape[:2]
    to_t = (lambda a: torch.as_tensor(a, dtype=DTYPE))  # exact deciders run on the CPU; the LM on `device`
    fmap = PlasticMap(circuit, alloc, {k: to_t(v) for k, v in draws.student_init.items()}, to_t(draws.probes))
    teacher = {k: to_t(v) for k, v in draws.teacher.items()}
    targets = forward(circuit, teacher, fmap.probes).flatten(-2)
    signs = sign_bounds(circuit, alloc)
    bounds = signs if dale and signs.active else None
    steady = stability_applies(circuit)  # steady, or linear continuous (max Re eig(T^-1 (W - I)) < 0)
    need_stable = stable and steady
    found = loops(circuit) if need_stable else ()  # once: the LM asks about many iterates
    admissible = (lambda work, th: max_real_eig(circuit, {k: v.cpu() for k, v in work.weights(th).items()},
                                                found) < 1.0) if need_stable else None
    own = [draws.student_init[k].reshape(trials, -1)[:, alloc.indices[k]] for k in circuit.weight_names]
    own = to_t(np.concatenate(own, axis=-1) if own else np.zeros((trials, 0)))  # the student's own plastic values
    sigma, on = circuit.init_scale(alloc), (lambda a: a.to(device))
    work = (lambda: fmap if device.type == "cpu" else PlasticMap(  # the LM's copy, built only where it runs
        circuit, alloc, {k: on(v) for k, v in fmap.frozen.items()}, on(fmap.probes)))
    batch = Batch(_problem(circuit, alloc, m, trials, seed, dale, zero), fmap, work, targets, own, alloc, sigma,
                  bounds, admissible, tol, seed, first, device=device, progress=progress,
                  plausibility_bound=plausibility_bound)
    out = run_chain(decider_chain(solver, dale=dale), batch)  # exact deciders first, the LM last
    theta, resid, status, decision, outcome = out.theta, out.residual, out.status, out.decision, out.outcome
    n_rest, history, solver = out.restarts, out.history, out.solver
    student = {k: v.cpu().numpy() for k, v in fmap.weights(theta).items()}
    resid_np = resid.cpu().numpy()
    matched = (resid_np < tol) & (not zero)
    max_re = max_real_eig(circuit, student) if steady else (  # e.g. nonlinear continuous: reported, not required
        circuit.dynamics.local_stability(circuit, fmap.weights(theta), fmap.probes))
    if need_stable:  # checked on the weights reported, whatever the solver did: an unstable witness proves nothing
        unstable = matched & ~(max_re < 1.0)
        matched, status = matched & ~unstable, np.where(unstable, np.int8(UNSTABLE), status)
        outcome = np.where(unstable, np.int8(_schema.UNDECIDED), outcome)
    if not out.from_rounds:  # no restart rounds ran: the matched fraction, over the rounds the result records
        history = [float(matched.mean())] * len(history)
    # exact: every trial settled by an exact decider. An LM match is a witness of its trial, yet an LM count stays
    # a lower bound on MP: decision_kind keeps that meaning, and the bracket (mp_lower, mp_upper) uses the outcomes
    exact = bool(((outcome != _schema.UNDECIDED) & (decision != _schema.LM_DECISION)).all())
    theta_np = theta.cpu().numpy()
    proof_kind = witness_scale = None
    if bounds is not None or need_stable:  # the biological setting: what settled each trial, and the witnesses' size
        proof_kind, witness_scale = _evidence(circuit, student, theta_np, sigma, decision, outcome, need_stable)
    return FitResult(draws, student, theta_np, resid_np, matched, n_rest, np.array(history), solver.name, tol,
                     status, solver, dale=dale, stable=stable, exact=exact, max_real_eig=max_re,
                     sign_violations=signs.violations(theta_np) if signs.active else None,
                     decision=decision.astype(np.int8), outcome=outcome.astype(np.int8), proof_kind=proof_kind,
                     witness_scale=witness_scale, improving=out.improving)


def _evidence(circuit: Circuit, student: dict[str, np.ndarray], theta: np.ndarray, sigma: np.ndarray,
              decision: np.ndarray, outcome: np.ndarray, need_stable: bool) -> tuple[np.ndarray, np.ndarray]:
    """``(proof_kind, witness_scale)`` per trial (:data:`neurosubset._schema.PROOF_KIND`; init SDs, NaN where not
    matched). A witness of a linear steady circuit that must be stable is re-certified by a Lyapunov solve on its
    assembled recurrent matrix (``lyapunov_witness``); one of a linear continuous circuit by a Lyapunov solve on each
    loop's ``T^-1 (W - I)`` (:meth:`~neurosubset.dynamics.stability.Stability.generators`)."""
    from .dynamics import Steady
    from .dynamics.blocks import block_matrix
    from .solvers.biological import hurwitz_certificate, lyapunov_certificate, linear_continuous

    kind = np.full(outcome.shape, _schema.NO_PROOF, dtype=np.int8)
    match, proof = outcome == _schema.PROVEN_MATCH, outcome == _schema.PROVEN_NO_MATCH
    kind[match] = _schema.WITNESS_PROOF
    kind[proof] = _schema.EXACT_PROOF
    kind[proof & (decision == _schema.SIGN_CONE_DECISION)] = _schema.SIGN_CONE_PROOF
    kind[proof & (decision == _schema.BRANCH_AND_BOUND_DECISION)] = _schema.BRANCH_AND_BOUND_PROOF
    if need_stable and isinstance(circuit.dynamics, Steady) and match.any():
        neurons = list(circuit.slices(("hidden", "output")))
        for p in np.flatnonzero(match):
            w = block_matrix(circuit, {k: torch.as_tensor(v[p]) for k, v in student.items()}, neurons, neurons)
            if lyapunov_certificate(w.numpy()):
                kind[p] = _schema.LYAPUNOV_PROOF
    elif need_stable and linear_continuous(circuit) and match.any():
        stab = circuit.dynamics.stability(circuit)
        for p in np.flatnonzero(match):
            gens = stab.generators({k: v[p] for k, v in student.items()})
            if all(hurwitz_certificate(stab.hurwitz(g)) for g in gens):
                kind[p] = _schema.LYAPUNOV_PROOF
    scale = (np.abs(theta) / sigma).max(-1) if theta.shape[-1] else np.zeros(theta.shape[0])
    return kind, np.where(match, scale, np.nan)


def match_probability(circuit: Circuit, alloc: Allocation, m: int, trials: int = 200, seed: int = 0, *,
                      solver: Solver | str = Auto(), tol: float = DEFAULT_TOL, return_weights: bool = False,
                      progress: bool = False, certificate: bool = True, threads: int | None = 1,
                      dale: bool = True, stable: bool = True, restarts: int | None = None,
                      max_rounds: int | None = None, steps: int | None = None, device: str | torch.device = "cpu",
                      chunk: int | None = None, max_memory: float | None = None,
                      skip_zero: bool | None = None, options: FitOptions | None = None,
                      _resume: FitResult | None = None, _estimate: bool = True) -> xr.Dataset:
    """Estimate ``MP(A, m)``: the probability that the student can match the teacher on ``m`` random probes.

    Parameters
    ----------
    circuit : Circuit
    alloc : Allocation
    m : int
        Number of probes.
    trials : int
        Number of teacher/student/probe draws.
    seed : int
        Base seed; the same seed gives an identical Dataset and trial ``i`` does not depend on ``trials``.
    solver, tol, progress, threads, dale, stable, device, chunk, max_memory, skip_zero
        See :func:`fit` (``dale=False, stable=False``: the unconstrained benchmark). Without ``return_weights``
        only per-trial results are kept between chunks, so memory stays at one chunk's. With ``skip_zero`` and
        ``certificate`` the certificate is computed once, before fitting.
    return_weights : bool
        Also store teacher, initial and fitted student weights, probes and ``theta`` per trial.
    certificate : bool
        Also compute :func:`neurosubset.theory.certify` with the same ``m`` and ``seed`` (no fitting) and store
        ``plastic_rank`` and ``full_rank`` as variables and every certificate field as a ``certificate_*`` attr
        (``certificate_verdict`` is "zero", "one", "positive" or "unproven"; ``certificate_affine`` is 0/1), under
        the same ``dale`` and ``stable``.
    restarts, max_rounds, steps
        Deprecated (FutureWarning): fields of the solver object (``steps`` is its ``iterations``).
    options : FitOptions, optional
        ``solver``, ``tol``, ``certificate``, ``threads``, ``dale``, ``stable``, ``device``, ``chunk``,
        ``max_memory`` and ``skip_zero`` as one validated object (:class:`neurosubset.FitOptions`), instead of
        the keywords.
    _resume : FitResult, optional
        Private (the ``mp`` command's resume): trials ``0 .. k - 1`` of this same request, already fitted
        (:attr:`PartialResult.result`); only the others are fitted, and the result equals an uninterrupted run's.
    _estimate : bool
        Private (a sweep point's per-trial bar): with ``progress``, print the cost estimate first (the sweep prints
        one for all its points).

    Raises
    ------
    PartialResult
        A ``KeyboardInterrupt`` after at least one chunk of trials finished (``chunk`` sets their size): it
        carries those trials as a Dataset marked ``partial`` (see :class:`PartialResult`).

    Returns
    -------
    xarray.Dataset
        ``matched (trial)`` bool, ``residual (trial)`` relative residual, ``restarts (trial)``,
        ``fit_status (trial)`` int8 flags, ``mp``, ``mp_low``, ``mp_high`` (95% Wilson interval),
        ``mp_first_round`` and ``mp_by_round (round)``, the allocation as ``mask_synapse (synapse)`` with the
        coordinates ``synapse_weight``, ``synapse_post``, ``synapse_pre`` (read back by
        :func:`neurosubset.results.stored_masks`); steady and continuous circuits add
        ``stable (trial)`` and ``max_real_eig (trial)`` of the fitted student (and with ``stable`` the rejected
        unstable draws ``teacher_rejected``, ``student_rejected``), signed plastic synapses ``sign_violations
        (trial)``. Attrs hold the configuration (circuit spec as TOML, allocation, solver, tolerance, ``dale`` and
        ``stable`` as 0/1, versions and ``Conventions``, a config hash) and ``decision_kind``: "exact" (exact
        deciders) or "lower bound" (a local solver's count, which can miss solutions), and ``weights_layout``:
        "dense" or "sparse", how the fit held the weights (:class:`~neurosubset.FitOptions` ``weights_layout``; the
        exact decisions do not depend on it). ``plastic_rank`` and ``full_rank`` are float64, as in sweeps.

    Examples
    --------
    >>> import neurosubset as ns
    >>> ff = ns.feedforward([8, 6, 3])
    >>> ds = ns.match_probability(ff, ns.allocate(ff, 18, within=["W2"]), m=4, trials=20)   # all of W2 plastic
    >>> float(ds.mp), ds.attrs["decision_kind"], ds.attrs["certificate_verdict"]
    (1.0, 'exact', 'one')
    """
    options = fit_options("match_probability", options, solver=solver, tol=tol, certificate=certificate,
                          threads=threads, dale=dale, stable=stable, device=device, chunk=chunk,
                          max_memory=max_memory, skip_zero=skip_zero)
    if any(v is not None for v in (restarts, max_rounds, steps)):  # deprecated: FutureWarning
        options = options._evolve(solver=as_solver(options.solver, where="match_probability", restarts=restarts,
                                                   max_rounds=max_rounds, steps=steps))
    options.check_circuit(circuit, "match_probability")
    layout = choose_layout(circuit, options.weights_layout)
    if layout is WeightsLayout.SPARSE:
        from .sparse_fit import check_sparse_request

        check_sparse_request(circuit, options, return_weights=return_weights)
    certificate, threads = options.certificate, options.threads
    cert = None
    if certificate and _skips_zero(circuit, options.skip_zero):  # certified first: a "zero" verdict spares fitting
        with torch_threads(threads):
            cert = certify(circuit, alloc, m=check_int("m", m, minimum=1), seed=check_int("seed", seed, minimum=0),
                           dale=options.dale, stable=options.stable)
    if progress and _estimate and _resume is None and not (cert is not None and cert.verdict == "zero"):
        with torch_threads(threads):
            print(cost_estimate(circuit, alloc, check_int("m", m, minimum=1), check_int("trials", trials, minimum=1),
                                check_int("seed", seed, minimum=0), options), file=sys.stderr, flush=True)
    try:
        res = _request(circuit, alloc, m, trials, seed, options=options, progress=progress,
                       keep_weights=return_weights, cert=cert, resume=_resume)
    except _Interrupted as exc:
        done = fit_dataset(circuit, alloc, exc.result, m=m, seed=seed, options=options,
                           return_weights=return_weights and _resume is None)
        done.attrs.update(partial=1, trials_done=int(exc.result.matched.size), trials_requested=int(trials),
                          weights_layout=layout.value)
        raise PartialResult(done, exc.result) from None
    ds = fit_dataset(circuit, alloc, res, m=m, seed=seed, options=options, return_weights=return_weights)
    ds.attrs["weights_layout"] = layout.value  # how the fit held its weights (decisions do not depend on it)
    overflowed = int((res.status == NON_FINITE).sum())
    if overflowed:
        warnings.warn(f"In {overflowed} of {res.status.size} trials the outputs overflowed to inf/NaN (fit_status "
                      f"non_finite; they count as unmatched, so MP says nothing about them): lower the gains or the "
                      f"time steps of {circuit.name!r}.", NonFiniteOutputWarning, stacklevel=2)
    if certificate:
        if cert is None:
            with torch_threads(threads):
                cert = certify(circuit, alloc, m=m, seed=seed, dale=res.dale, stable=res.stable)
        ds["plastic_rank"] = ((), np.float64(cert.plastic_rank), meta("plastic_rank"))
        ds["full_rank"] = ((), np.float64(cert.full_rank), meta("full_rank"))
        ds.attrs.update(cert.to_attrs())
    return ds
