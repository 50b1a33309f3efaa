"""The multi-start policy of the Levenberg-Marquardt solver: restart rounds, start scales, continued restarts.

Every still-unmatched trial gets a new round until it matches or reaches ``max_rounds``; restart ``j`` of round
``r`` starts from ``N(0, (widen^(r j / (restarts - 1)) sigma)^2)`` (``sigma`` the per-synapse init std) and runs
up to ``iterations * 2^min(r, 3)`` LM iterations. Restarts stopped by a round's cap while still descending
continue into the trial's next round, beside its fresh starts.

Constraints (optional): with a box (:class:`~neurosubset.solvers.bounded.Bounds`) the starts are drawn inside it
(a start's scale stops at the box's reach, ``max(|lower|, |upper|) / sigma`` per value: a wider draw would sit
on its faces, the widest on one corner) and the LM projects its steps onto it; with ``admissible`` (e.g. "the
student's steady state is stable") a match counts only where ``admissible`` accepts it, so a trial that lands on a
refused solution stays open and gets the next rounds' restarts. Without either, the arithmetic is the
unconstrained policy's, bit for bit.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from .._schema import ITERATION_CAP, MATCHED, NO_DESCENT, NON_FINITE, STALLED, UNSTABLE
from .bounded import Bounds
from .lm import (LM_CAPPED, LM_CONVERGED, LM_INADMISSIBLE, LM_NO_DESCENT, LM_NON_FINITE, LM_STALLED, LMResult,
                 levenberg_marquardt, relative_residual, trial_status)
from .options import LevenbergMarquardt

_MAX_DOUBLINGS = 3  # round r runs iterations * 2**min(r, 3) LM iterations
# a round improves a trial when it lowers the trial's best relative residual below this fraction of its best before
# the round (a fresh or continued restart came closer); ``patience`` rounds in a row that do not, and the trial stops
IMPROVED = 0.99
# an unmatched trial's status is how its best restart stopped (converged/sibling cannot be unmatched at tol)
_LM_TO_FIT = {LM_STALLED: STALLED, LM_CAPPED: ITERATION_CAP, LM_NO_DESCENT: NO_DESCENT, LM_NON_FINITE: NON_FINITE}


@dataclass(frozen=True)
class MultiStartResult:
    """Best plastic values per trial over all restart rounds.

    Attributes
    ----------
    theta : torch.Tensor
        ``(trial, M)`` best plastic values.
    residual : torch.Tensor
        ``(trial,)`` relative residual recomputed from ``theta`` (not the solver's own value).
    restarts : numpy.ndarray
        ``(trial,)`` int64 fresh random starts used (continued restarts counted once).
    history : list of float
        Fraction of trials matched after each round (``max_rounds`` entries).
    status : numpy.ndarray
        ``(trial,)`` int8 :data:`neurosubset._schema.FIT_STATUS`; ``unstable`` where the only matches found were
        refused by ``admissible`` (``theta`` and ``residual`` are then the best refused match).
    improving : numpy.ndarray
        ``(trial,)`` bool: the trial ran the last round (``max_rounds``) and that round still improved it (lowered
        its best residual below :data:`IMPROVED` times its best before, a match included): more rounds may have
        matched more. False for every trial where the rounds stopped before the cap.
    rounds : numpy.ndarray
        ``(trial,)`` int64 rounds the trial ran (until it matched, ``patience`` rounds in a row did not improve it,
        or ``max_rounds``).
    """

    theta: torch.Tensor
    residual: torch.Tensor
    restarts: np.ndarray
    history: list[float]
    status: np.ndarray
    improving: np.ndarray | None = None
    rounds: np.ndarray | None = None


def ladder(rnd: int, restarts: int, widen: float) -> np.ndarray:
    """Start scales (in init SDs) of the restarts of round ``rnd``, shape ``(restarts, 1)``.

    Restart ``j`` starts at ``widen^(rnd * j / (restarts - 1))``: every round keeps one start at the init scale
    and spreads the others log-evenly out to ``widen^rnd``.
    """
    if restarts == 1:
        return np.full((1, 1), widen**rnd)
    return widen ** (rnd * np.linspace(0.0, 1.0, restarts))[:, None]


def multistart(fmap, targets: torch.Tensor, sigma: np.ndarray, solver: LevenbergMarquardt, *, seed: int,
               tol: float, progress: bool = False, bounds: Bounds | None = None,
               admissible: Callable | None = None, first: int = 0,
               trial_ids: np.ndarray | None = None, tick: Callable[[int], None] | None = None,
               stream: int = 1) -> MultiStartResult:
    """Fit every trial of ``fmap`` by LM restart rounds until it matches (residual < ``tol``) or runs out of rounds.

    Parameters
    ----------
    fmap : PlasticMap
        The problems, one per trial.
    targets : torch.Tensor
        ``(trial, E)`` teacher outputs.
    sigma : numpy.ndarray
        ``(M,)`` init std of each plastic synapse (the scale of the random starts).
    solver : LevenbergMarquardt
        Restarts per round, rounds, first-round iterations and start-scale growth.
    seed : int
        Restart ``j`` of trial ``i`` in round ``r`` draws from ``SeedSequence(seed, spawn_key=(i, stream, r))``.
    tol : float
        Match tolerance; LM problems stop at ``tol * 1e-3``.
    progress : bool
        A tqdm bar over rounds.
    bounds : Bounds, optional
        A box on ``theta`` (Dale's law); ``None`` or an inactive box: unconstrained.
    admissible : callable, optional
        ``admissible(fmap_subset, theta) -> (problem,) bool``: which matches count (see the module docstring).
    first : int
        Global index of the map's first trial: row ``k`` is trial ``first + k`` of the restart seeds, so a chunk of
        trials is fitted exactly as inside one batch of all of them.
    trial_ids : numpy.ndarray, optional
        ``(trial,)`` global index of each row (a subset of a batch's trials); overrides ``first``.
    tick : callable, optional
        ``tick(k)``: ``k`` more trials are finished (matched, or out of patience) after a round, and the rest
        after the last one (a per-trial progress bar).
    stream : int
        The restart seeds' stream (default 1, the LM decider's): a search that runs before the LM decider on the
        same box takes another, so the LM does not repeat its starts.

    Returns
    -------
    MultiStartResult
    """
    restarts, max_rounds, widen, patience = solver.restarts, solver.max_rounds, solver.widen, solver.patience
    trials, size = targets.shape[0], fmap.size
    ids = np.arange(first, first + trials) if trial_ids is None else np.asarray(trial_ids)
    dtype, device = targets.dtype, targets.device
    best_theta = targets.new_zeros((trials, size))
    best = torch.full((trials,), torch.inf, dtype=dtype, device=device)
    best_why = torch.full((trials,), LM_CAPPED, dtype=torch.int8, device=device)
    n_rest = np.zeros(trials, dtype=np.int64)
    history: list[float] = []
    carry = _Carry.empty(size, dtype, device)  # restarts that hit their round's cap while still descending
    box = bounds.tensors(dtype, device) if bounds is not None and bounds.active else (None, None)
    # a start scale beyond a finite box would put the start on its faces, for the widest starts on one corner of
    # it (the same start in every later round): the ladder stops at the box's reach; a sign box reaches to inf
    reach = bounds.reach(sigma) if box[0] is not None else np.inf
    refused = _Refused.empty(trials, size, dtype, device) if admissible is not None else None
    quiet = np.zeros(trials, dtype=np.int64)  # rounds in a row that did not improve the trial
    ran = np.zeros(trials, dtype=np.int64)
    improving = np.zeros(trials, dtype=bool)  # the last round improved it (kept only for the cap's round)
    stopped = torch.zeros(trials, dtype=torch.bool, device=device)  # patience ran out
    finished = 0  # trials reported to ``tick``
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=max_rounds, desc="restart rounds", unit="round", leave=False)
    for rnd in range(max_rounds):
        todo = torch.nonzero(~(best < tol) & ~stopped).flatten().cpu()
        if todo.numel() == 0:  # every trial matched or stopped: the later rounds would change nothing
            history.extend([history[-1]] * (max_rounds - rnd))
            improving[:] = False
            break
        scales = np.minimum(ladder(rnd, restarts, widen), reach)  # (restarts, 1), or (restarts, M) in a finite box
        starts = np.concatenate([
            np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(int(ids[int(i)]), stream, rnd)))
            .standard_normal((restarts, size)) * sigma * scales for i in todo])
        if box[0] is not None:
            starts = bounds.inside(starts)
        fresh = starts.shape[0]
        todo = todo.to(device)
        owner = torch.cat([todo.repeat_interleave(restarts), carry.owner])
        theta0 = torch.cat([torch.as_tensor(starts, dtype=dtype, device=device), carry.theta])
        mu0 = torch.cat([torch.full((fresh,), 1e-3, dtype=dtype, device=device), carry.mu])
        nu0 = torch.cat([torch.full((fresh,), 2.0, dtype=dtype, device=device), carry.nu])
        # no autograd bookkeeping where the Jacobian is the closed form (~20% faster on small batches)
        with torch.inference_mode() if fmap.closed_form else contextlib.nullcontext():
            res = levenberg_marquardt(fmap, owner, targets[owner], theta0,
                                      steps=solver.iterations * 2 ** min(rnd, _MAX_DOUBLINGS), stop=tol * 1e-3,
                                      mu0=mu0, nu0=nu0, lower=box[0], upper=box[1], admissible=admissible)
        n_rest[todo.cpu().numpy()] += restarts
        # best problem of each trial (lowest residual; ties -> the lowest index: fresh restarts in order, then
        # the continued ones)
        resid = res.residual.nan_to_num(torch.inf)
        if refused is not None:  # refused matches never count; the best of them is kept for the report
            resid = refused.update(fmap, res, owner, resid, tol, admissible)
        low = torch.full((trials,), torch.inf, dtype=dtype, device=device).scatter_reduce(0, owner, resid,
                                                                                            reduce="amin")
        index = torch.arange(owner.numel(), device=device)
        at_low = resid == low[owner]
        lead = torch.full((trials,), owner.numel(), device=device).scatter_reduce(0, owner[at_low], index[at_low],
                                                                                  reduce="amin")
        before = best[todo].clone()
        better = low[todo] < best[todo]
        rows = todo[better]
        best[rows] = low[rows]
        best_theta[rows] = res.theta[lead[rows]]
        best_why[rows] = res.status[lead[rows]]
        history.append(float((best < tol).double().mean()))
        # convergence, per trial: did this round bring it closer (its best residual down by >= 1%)?
        ids_np = todo.cpu().numpy()
        gained = (best[todo] < IMPROVED * before).cpu().numpy()
        quiet[ids_np] = np.where(gained, 0, quiet[ids_np] + 1)
        ran[ids_np] += 1
        improving[:] = False
        improving[ids_np] = gained
        if patience:
            stopped[todo[torch.as_tensor(quiet[ids_np] >= patience, device=device)]] = True
        carry = _Carry.keep(res, owner, (best >= tol) & ~stopped, restarts)  # only trials still open go on
        if tick is not None:
            now = int(((best < tol) | stopped).sum())
            tick(now - finished)
            finished = now
        if bar is not None:
            bar.update(1)
            bar.set_postfix(matched=f"{history[-1]:.3f}")
    if bar is not None:
        bar.close()
    if tick is not None and trials > finished:
        tick(trials - finished)
    unmatched = np.array([_LM_TO_FIT.get(int(w), STALLED) for w in best_why.cpu()], dtype=np.int8)
    if refused is not None:  # no admissible match but a refused one: report it, flagged unstable
        only = ~(best < tol) & (refused.residual < tol)
        best_theta[only] = refused.theta[only]
        unmatched[only.cpu().numpy()] = UNSTABLE
    # the reported residual is recomputed from the assembled weights, not taken from the solver
    resid = relative_residual(fmap(best_theta), targets)
    status = trial_status(resid, tol, unmatched=unmatched)
    if refused is not None:
        status[(status == MATCHED) & (unmatched == UNSTABLE)] = UNSTABLE
    return MultiStartResult(best_theta, resid, n_rest, history, status, improving, ran)


@dataclass(frozen=True)
class _Carry:
    """LM problems continued from one restart round into the next: state ``(problem, ...)`` and owning trial."""

    owner: torch.Tensor
    theta: torch.Tensor
    mu: torch.Tensor
    nu: torch.Tensor

    @classmethod
    def empty(cls, size: int, dtype: torch.dtype, device: torch.device = torch.device("cpu")) -> _Carry:
        return cls(torch.zeros(0, dtype=torch.long, device=device), torch.zeros((0, size), dtype=dtype, device=device),
                   torch.zeros(0, dtype=dtype, device=device), torch.zeros(0, dtype=dtype, device=device))

    @classmethod
    def keep(cls, res: LMResult, owner: torch.Tensor, open_trial: torch.Tensor, most: int) -> _Carry:
        """The capped problems of still-unmatched trials, at most ``most`` per trial (the lowest residuals)."""
        cand = torch.nonzero(res.capped & open_trial[owner]).flatten()
        if cand.numel():
            # order by trial, then residual (stable), and keep the first `most` of each trial
            cand = cand[torch.argsort(res.residual[cand], stable=True)]
            cand = cand[torch.argsort(owner[cand], stable=True)]
            own = owner[cand]
            start = torch.searchsorted(own, own, side="left")
            cand = cand[torch.arange(own.numel(), device=own.device) - start < most]
        return cls(owner[cand], res.theta[cand], res.mu[cand], res.nu[cand])


@dataclass
class _Refused:
    """Per trial, the best match that ``admissible`` refused (lowest residual), over all rounds."""

    residual: torch.Tensor
    theta: torch.Tensor

    @classmethod
    def empty(cls, trials: int, size: int, dtype: torch.dtype, device: torch.device = torch.device("cpu")
              ) -> _Refused:
        return cls(torch.full((trials,), torch.inf, dtype=dtype, device=device),
                   torch.zeros((trials, size), dtype=dtype, device=device))

    def update(self, fmap, res: LMResult, owner: torch.Tensor, resid: torch.Tensor, tol: float,
               admissible: Callable) -> torch.Tensor:
        """Record this round's refused matches; return ``resid`` with them set to inf (they never count).

        A problem below ``tol`` is refused if the LM refused it at its stop or ``admissible`` refuses it now (a
        problem that stopped between the LM's ``stop`` and ``tol`` was not asked by the LM). The LM's answers are
        reused: it asked at the very values it returned (``LM_CONVERGED``: accepted, ``LM_INADMISSIBLE``: refused).
        """
        asked = (res.status == LM_CONVERGED) | (res.status == LM_INADMISSIBLE)
        hit = torch.nonzero((resid < tol) & ~asked).flatten()
        bad = res.status == LM_INADMISSIBLE
        if hit.numel():
            bad[hit] = ~torch.as_tensor(admissible(fmap.subset(owner[hit]), res.theta[hit]), dtype=torch.bool,
                                        device=bad.device)
        # per trial, the lowest refused residual (ties: the lowest index), kept where it beats the recorded one
        cand = torch.where(bad, resid, torch.full_like(resid, torch.inf))
        low = torch.full_like(self.residual, torch.inf).scatter_reduce(0, owner, cand, reduce="amin")
        at_low = bad & (cand == low[owner])
        index = torch.arange(owner.numel(), device=owner.device)
        lead = torch.full(low.shape, owner.numel(), dtype=torch.long, device=owner.device).scatter_reduce(
            0, owner[at_low], index[at_low], reduce="amin")
        rows = torch.nonzero(low < self.residual).flatten()
        self.residual[rows], self.theta[rows] = low[rows], res.theta[lead[rows]]
        return torch.where(bad, torch.full_like(resid, torch.inf), resid)
