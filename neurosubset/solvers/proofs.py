"""Proofs that no plastic values match, within the sign box and the plausibility box (linear steady circuits).

A match is what the toolkit calls one: the assembled student's relative residual below ``tol``. A proof must
therefore cover the *tol box*: every output ``Y + e`` with ``||e|| <= tol ||Y||``, not only ``Y``. Plastic values
are unbounded, and no global solver proves infeasibility over unbounded variables, so both proofs here hold within
the plausibility box ``|theta_k| <= K sigma_k`` (``K`` the fit's ``plausibility_bound``, ``sigma_k`` the init SD of
synapse ``k``) intersected with the sign box: a bracket from them is "within K".

The lifted problem (:mod:`neurosubset.solvers.lifted`) has the hidden rates ``R`` ``(N_hidden, m)`` and the plastic
values as unknowns: row ``i`` of the fixed point reads ``R_i - W0_i Z - U0_i X = sum_{k in S_i} theta_k Z_{c_k}``
with ``Z = [R; Y + e; X]`` the presynaptic activity. Every match gives a solution (its rates), so an infeasible
lifted problem proves that no match exists (the converse needs ``I - W`` invertible, which a witness check adds).

Two deciders, cheapest first:

- :class:`SignConeLP`: the necessary linear conditions. Rows without plastic synapses and the read-outs are linear
  equations in ``R``; where they pin a cell's rates (no component in their null space, as
  :mod:`~neurosubset.solvers.lifted` finds them), a row whose own and presynaptic cells are all pinned is a linear
  system in its plastic values alone: ``|Z_S^T theta - b| <= eps`` per probe, ``eps`` bounding what the output
  error ``e`` (through the pseudo-inverse that pins the rates) and the plausibility box can move. Inside the box
  that is an LP; HiGHS (``highspy``) decides it and, where infeasible, hands out a dual ray ``y >= 0`` (Farkas)
  that is then checked in exact rational arithmetic (:func:`farkas_certificate`): ``min_box y^T A theta >
  y^T c``. Only a checked ray is a proof.
- :class:`BranchAndBound`: the whole lifted problem, bilinear, given to SCIP's spatial branch and bound
  (``pyscipopt``, the optional ``scip`` extra) inside the K box, with ``||e|| <= tol ||Y||`` as a convex quadratic
  constraint and a time limit per trial. "infeasible" is a proof; a feasible point found is checked as a witness
  (assembled student, residual, stability where required); out of time, the trial stays undecided. Lifted problems
  of more than :attr:`BranchAndBound.root_only` unknowns get SCIP's root node only (presolve, propagation and the
  root LP): measured on the worm (greedy 276 under Dale and under Fenyves' signs, spread-rows 1,004; 880-1,608
  unknowns) and the V1 E/I circuit (860), every proof SCIP gave came at the root (0 or 1 node, at most 0.91 s CPU),
  and every run that branched (109-338 nodes) ran out of its 20 s without a verdict. The root alone, where it
  decides nothing, took 2.4-2.7 s CPU on the worm's greedy allocations but 8.5-9.6 s on V1 and 14 s on a
  spread-rows trial, past SCIP's time limit: 6.1 of V1's 6.9 s were the NLP heuristics (``subnlp``,
  ``multistart``: Ipopt runs looking for a feasible point, which found none on any large problem measured and
  prove nothing), so a root-only run turns them off (V1's root: 0.8 s) and has its own CPU cap,
  :attr:`BranchAndBound.root_seconds` (3 s). Small problems keep the whole search, heuristics included: there
  SCIP's verdicts can need branching (65-335 nodes on an 11-unknown circuit of the tests) or come from those
  heuristics (witnesses at the root there; after 5 s on ``circuits/ei_isn.toml``'s 76 unknowns). The default 500
  lies between the two kinds of measured problems.
  Stability is not encoded (no exact polynomial form fits), so a trial whose only matches are unstable and that
  has no proof stays undecided.
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import torch

from .._schema import (BRANCH_AND_BOUND_DECISION, INFEASIBLE, MATCHED, PROVEN_MATCH, PROVEN_NO_MATCH,
                       SIGN_CONE_DECISION, STALLED, UNDECIDED)
from ..dynamics.blocks import block_matrix
from .biological import batch_box
from .lifted import _layout, _residuals, lifting_applicable
from .options import LevenbergMarquardt

if TYPE_CHECKING:
    from .chain import Batch, Decided, Problem

__all__ = ["BranchAndBound", "SignConeLP", "farkas_certificate", "highs_available", "scip_available"]

_SLACK = 1e-9  # relative slack added to every eps of the row LPs (floating-point error of the pinned rates)


def highs_available() -> bool:
    """Whether ``highspy`` imports (the optional ``highs`` extra)."""
    try:
        import highspy  # noqa: F401
    except ImportError:
        return False
    return True


def scip_available() -> bool:
    """Whether ``pyscipopt`` imports (the optional ``scip`` extra)."""
    try:
        import pyscipopt  # noqa: F401
    except ImportError:
        return False
    return True


def farkas_certificate(a: np.ndarray, c: np.ndarray, lower: np.ndarray, upper: np.ndarray, y: np.ndarray) -> bool:
    """Check, in exact rational arithmetic, that ``y`` proves ``{theta : A theta <= c, lower <= theta <= upper}``
    empty.

    Parameters
    ----------
    a : numpy.ndarray
        ``(rows, M)`` float64 constraint matrix (each float is an exact rational).
    c : numpy.ndarray
        ``(rows,)`` right-hand sides.
    lower, upper : numpy.ndarray
        ``(M,)`` finite bounds.
    y : numpy.ndarray
        ``(rows,)`` candidate multipliers (negative entries are set to 0; each float taken exactly).

    Returns
    -------
    bool
        True iff ``min over the box of (y^T A) theta > y^T c`` holds exactly: then every ``theta`` in the box has
        ``y^T A theta > y^T c``, while ``A theta <= c`` with ``y >= 0`` would give ``<=``.
    """
    if not (np.isfinite(lower).all() and np.isfinite(upper).all() and np.isfinite(a).all() and np.isfinite(c).all()):
        return False
    ys = [Fraction(float(v)) if v > 0 else Fraction(0) for v in y]
    if not any(ys):
        return False
    g = [sum((ys[r] * Fraction(float(a[r, k])) for r in range(a.shape[0]) if ys[r]), Fraction(0))
         for k in range(a.shape[1])]
    low = sum((gk * Fraction(float(lower[k])) if gk > 0 else gk * Fraction(float(upper[k]))
               for k, gk in enumerate(g)), Fraction(0))
    rhs = sum((ys[r] * Fraction(float(c[r])) for r in range(len(ys)) if ys[r]), Fraction(0))
    return low > rhs


def _highs_ray(a: np.ndarray, c: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> tuple[bool, np.ndarray | None]:
    """HiGHS on ``A theta <= c`` in the box: ``(feasible, dual ray or None)``."""
    import highspy

    h = highspy.Highs()
    h.silent()
    h.setOptionValue("output_flag", False)
    h.setOptionValue("presolve", "off")  # a ray of the original problem, not of the presolved one
    inf = highspy.kHighsInf
    lp = highspy.HighsLp()
    lp.num_col_, lp.num_row_ = a.shape[1], a.shape[0]
    lp.col_cost_ = np.zeros(a.shape[1])
    lp.col_lower_, lp.col_upper_ = lower.astype(float), upper.astype(float)
    lp.row_lower_, lp.row_upper_ = np.full(a.shape[0], -inf), c.astype(float)
    cols = [np.flatnonzero(a[:, k]) for k in range(a.shape[1])]
    lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    lp.a_matrix_.start_ = np.concatenate([[0], np.cumsum([len(ix) for ix in cols])]).astype(np.int32)
    lp.a_matrix_.index_ = np.concatenate(cols).astype(np.int32) if cols else np.zeros(0, np.int32)
    lp.a_matrix_.value_ = np.concatenate([a[ix, k] for k, ix in enumerate(cols)]) if cols else np.zeros(0)
    h.passModel(lp)
    h.run()
    status = h.getModelStatus()
    if status == highspy.HighsModelStatus.kOptimal:
        return True, None
    if status != highspy.HighsModelStatus.kInfeasible:
        return False, None
    _, has, ray = h.getDualRay()
    if not has:
        return False, None
    return False, np.asarray(ray, dtype=float)  # its sign convention is checked both ways by farkas_certificate


@dataclass(frozen=True)
class _RowLP:
    """One pinned row's LP ``A theta_S <= c`` over the plastic values ``ks`` of that row."""

    ks: np.ndarray
    a: np.ndarray
    c: np.ndarray


def _pinned_rows(lay, a: np.ndarray, b: np.ndarray, x: np.ndarray, y: np.ndarray, hi_abs: np.ndarray, tol: float
                 ) -> list[_RowLP]:
    """The row LPs of one trial: rows whose own and presynaptic cells the necessary equations pin.

    ``a`` ``(N, N)``, ``b`` ``(N, n_in)`` frozen weights; ``x`` ``(n_in, m)``; ``y`` ``(n_out, m)`` teacher outputs;
    ``hi_abs`` ``(M,)`` the largest ``|theta_k|`` the box allows.
    """
    n, m = a.shape[0], x.shape[1]
    hidden, outputs = lay.hidden, lay.outputs
    full = np.hstack([a, b])
    tau = tol * float(np.linalg.norm(y))
    # equations of the rows without plastic synapses, linear in (u = hidden rates, e = output errors):
    # row i: R_i - W0_i R - U0_i X = 0, with output rates Y + e
    rows = lay.fixed
    coef = -full[rows, :n]
    coef[np.arange(rows.size), rows] += 1.0
    k_u = np.kron(coef[:, hidden], np.eye(m))
    k_e = np.kron(coef[:, outputs], np.eye(m))  # e enters like the outputs' rates
    k_0 = -(coef[:, outputs] @ y - full[rows, n:] @ x).reshape(-1)  # K_u u + K_e e = k_0
    known = np.zeros(n + x.shape[0], dtype=bool)
    known[n:], known[outputs] = True, True
    value = np.zeros((n + x.shape[0], m))  # pinned rates (e = 0) and their sensitivity bound per probe
    value[outputs], value[n:] = y, x
    spread = np.zeros((n + x.shape[0], m))
    spread[outputs] = tau  # |e_oj| <= ||e|| <= tau
    if k_u.shape[0]:
        pinv = np.linalg.pinv(k_u)
        u0 = pinv @ k_0
        if np.linalg.norm(k_u @ u0 - k_0) > 1e-9 * max(1.0, np.linalg.norm(k_0)) + np.linalg.norm(k_e, 2) * tau:
            return []  # inconsistent beyond what e can explain: the lifted decider's business, not handled here
        null = np.eye(k_u.shape[1]) - pinv @ k_u
        pinned = (np.abs(null) < 1e-10).all(axis=1)
        sens = np.linalg.norm(pinv @ k_e, axis=1) * tau  # |delta u_c| <= ||(K_u^+ K_e)_c|| ||e||
        cell = pinned.reshape(-1, m).all(axis=1)
        known[hidden[cell]] = True
        value[hidden] = u0.reshape(-1, m)
        spread[hidden] = sens.reshape(-1, m)
    out = []
    for r in np.unique(lay.rows):
        ks = np.flatnonzero(lay.rows == r)
        pre = np.flatnonzero(full[r] != 0.0)
        if not (known[r] and known[lay.cols[ks]].all() and known[pre].all()):
            continue
        zs = value[lay.cols[ks]]  # (|S|, m)
        rhs = value[r] - full[r] @ value  # (m,)
        eps = spread[r] + np.abs(full[r]) @ spread + hi_abs[ks] @ spread[lay.cols[ks]]
        eps = eps + _SLACK * (1.0 + np.abs(rhs) + np.abs(full[r]) @ np.abs(value) + hi_abs[ks] @ np.abs(zs))
        out.append(_RowLP(ks, np.vstack([zs.T, -zs.T]), np.concatenate([rhs + eps, -rhs + eps])))
    return out


def _linear_steady(problem: Problem) -> bool:
    circuit, alloc = problem.circuit, problem.alloc
    return alloc.size > 0 and not problem.zero and lifting_applicable(circuit, alloc, LevenbergMarquardt()) is not None


def _arrays(batch: Batch, fmap, targets):
    """Per-trial numpy arrays of the lifted problem: frozen ``a (trial, N, N)``, ``b (trial, N, n_in)``, probes
    ``x (trial, n_in, m)``, teacher outputs ``y (trial, n_out, m)``."""
    circuit = batch.problem.circuit
    neurons, inputs = list(circuit.slices(("hidden", "output"))), list(circuit.slices("input"))
    n, m = targets.shape[0], fmap.probes.shape[1]
    a_all = block_matrix(circuit, fmap.frozen, neurons, neurons).numpy()
    b_all = block_matrix(circuit, fmap.frozen, neurons, inputs).numpy()
    y_all = targets.reshape(n, m, -1).transpose(-1, -2).numpy()
    x_all = fmap.probes.transpose(-1, -2).numpy()
    return a_all, b_all, x_all, y_all


def _none(batch: Batch, open_: np.ndarray, decision: int) -> Decided:
    from .chain import Decided, _on

    fmap, targets, own = _on(batch, open_)
    n = open_.size
    return Decided(own.clone(), torch.full((n,), float("nan"), dtype=targets.dtype),
                   np.full(n, STALLED, dtype=np.int8), np.full(n, decision, dtype=np.int8),
                   np.full(n, UNDECIDED, dtype=np.int8), np.zeros(n, dtype=np.int64))


@dataclass(frozen=True)
class SignConeLP:
    """Per-row sign-cone LPs with pinned presynaptic rates, infeasibility proven by a rationally checked Farkas ray
    (module doc). Runs where the sign box binds or stability is required (the biological setting); a trial it
    refutes is ``proven_no_match`` within the plausibility box (decision ``sign_cone_lp``)."""

    name: ClassVar[str] = "sign_cone_lp"
    final: ClassVar[bool] = False
    records: ClassVar[bool] = False

    @classmethod
    def build(cls, lm: LevenbergMarquardt, dale: bool) -> SignConeLP:
        return cls()

    def recorded(self, problem: Problem) -> None:
        return None

    def applicable(self, problem: Problem) -> bool:
        return _linear_steady(problem) and highs_available()

    def decide(self, batch: Batch, open_: np.ndarray) -> Decided:
        from .chain import Decided, _on

        if batch.bounds is None and batch.admissible is None:
            return _none(batch, open_, SIGN_CONE_DECISION)
        fmap, targets, own = _on(batch, open_)
        n, m = open_.size, fmap.probes.shape[1]
        lay = _layout(batch.problem.circuit, batch.alloc, m)
        a_all, b_all, x_all, y_all = _arrays(batch, fmap, targets)
        lo, hi = batch_box(batch)
        hi_abs = np.maximum(np.abs(lo), np.abs(hi))
        proved = np.zeros(n, dtype=bool)
        for p in range(n):
            for row in _pinned_rows(lay, a_all[p], b_all[p], x_all[p], y_all[p], hi_abs, batch.tol):
                feasible, ray = _highs_ray(row.a, row.c, lo[row.ks], hi[row.ks])
                if feasible or ray is None:
                    continue
                if any(farkas_certificate(row.a, row.c, lo[row.ks], hi[row.ks], s * ray) for s in (1.0, -1.0)):
                    proved[p] = True
                    break
        status = np.where(proved, INFEASIBLE, STALLED).astype(np.int8)
        outcome = np.where(proved, PROVEN_NO_MATCH, UNDECIDED).astype(np.int8)
        return Decided(own.clone(), _residuals(fmap, own, targets), status,
                       np.full(n, SIGN_CONE_DECISION, dtype=np.int8), outcome, np.zeros(n, dtype=np.int64))


def _scip_trial(lay, a: np.ndarray, b: np.ndarray, x: np.ndarray, y: np.ndarray, lo: np.ndarray, hi: np.ndarray,
                tol: float, seconds: float, seed: int, start: np.ndarray | None, nodes: int | None = None
                ) -> tuple[str, np.ndarray | None]:
    """SCIP on one trial's lifted problem: ``("infeasible" | "feasible" | "unknown", theta or None)``; ``nodes``:
    SCIP's node limit (1: the root node only, without the NLP heuristics, module doc), None for none. An error
    inside SCIP is ``"unknown"`` (no proof), not an exception that ends the fit."""
    import pyscipopt

    n, m = a.shape[0], x.shape[1]
    full = np.hstack([a, b])
    tau = tol * float(np.linalg.norm(y))
    model = pyscipopt.Model()
    model.hideOutput()
    model.setParam("limits/time", float(seconds))
    model.setParam("timing/clocktype", 1)  # CPU seconds, not wall: on a shared machine the others' load would decide
    model.setParam("randomization/randomseedshift", int(seed) % 2**31)
    model.setParam("constraints/nonlinear/tightenlpfeastol", False)  # SoPlex without GMP refuses < 1e-10 (noise)
    model.setParam("limits/solutions", 1)  # a feasible point ends the search (it is checked as a witness after)
    if nodes is not None:
        model.setParam("limits/nodes", int(nodes))
        # the local NLP searches for a feasible point (Ipopt) took 6.1 of 6.9 s of V1's root and run past the time
        # limit; they prove nothing, and found no point on any large problem measured (the LM searches locally)
        model.setParam("heuristics/subnlp/freq", -1)
        model.setParam("heuristics/multistart/freq", -1)
    theta = [model.addVar(lb=float(lo[k]), ub=float(hi[k]), name=f"t{k}") for k in range(lo.size)]
    rate = {}
    for i in lay.hidden:
        for j in range(m):
            rate[i, j] = model.addVar(lb=None, ub=None, name=f"r{i}_{j}")
    err = {}
    for q, o in enumerate(lay.outputs):
        for j in range(m):
            err[o, j] = model.addVar(lb=-tau, ub=tau, name=f"e{o}_{j}")
            rate[o, j] = y[q, j] + err[o, j]
    model.addCons(pyscipopt.quicksum(v * v for v in err.values()) <= tau * tau)

    def z(c, j):
        return rate[c, j] if c < n else float(x[c - n, j])

    for i in range(n):
        ks = np.flatnonzero(lay.rows == i)
        pre = np.flatnonzero(full[i])
        for j in range(m):
            expr = rate[i, j] - pyscipopt.quicksum(float(full[i, c]) * z(c, j) for c in pre)
            expr = expr - pyscipopt.quicksum(theta[k] * z(lay.cols[k], j) for k in ks)
            model.addCons(expr == 0.0)
    if start is not None:  # seed: the best point found (its rates from the assembled student)
        own = full.copy()
        np.add.at(own, (lay.rows, lay.cols), start)
        try:
            r0 = np.linalg.solve(np.eye(n) - own[:, :n], own[:, n:] @ x)
            sol = model.createSol()
            for k, v in enumerate(theta):
                model.setSolVal(sol, v, float(start[k]))
            for i in lay.hidden:
                for j in range(m):
                    model.setSolVal(sol, rate[i, j], float(r0[i, j]))
            for q, o in enumerate(lay.outputs):
                for j in range(m):
                    model.setSolVal(sol, err[o, j], float(np.clip(r0[o, j] - y[q, j], -tau, tau)))
            model.addSol(sol, free=True)
        except (np.linalg.LinAlgError, Exception):  # a bad seed is only a missed hint
            pass
    try:
        model.optimize()
    except Exception:  # noqa: BLE001 -- pyscipopt raises a bare Exception for SCIP's own errors
        # SCIP stopped on an internal error (TINY, 3 E->E values, K = 0.5: "cannot change upper bound of variable
        # to minus infinity" in its conflict analysis): it proved nothing, the trial stays open
        return "unknown", None
    status = model.getStatus()
    if status == "infeasible":
        return "infeasible", None
    if model.getNSols() > 0:
        best = model.getBestSol()
        return "feasible", np.array([model.getSolVal(best, v) for v in theta])
    return "unknown", None


@dataclass(frozen=True)
class BranchAndBound:
    """SCIP's spatial branch and bound on the lifted bilinear problem inside the K box (module doc): a proof of no
    match within K (decision ``branch_and_bound``), or a feasible point checked as a witness, or undecided when its
    per-trial ``seconds`` (CPU) run out. Applies where ``pyscipopt`` imports and the biological setting holds (signs
    binding or stability required).

    The lifted problem has ``N_hidden m`` rates and ``M`` plastic values as unknowns. Above ``max_unknowns`` SCIP
    is not tried; above ``root_only`` it gets its root node only (SCIP's node limit 1) within ``root_seconds``
    (CPU, at most ``seconds``), where every proof it gave on large problems came (module doc); a trial the root
    leaves open stays undecided, as one out of time (fit status ``stalled``, decision ``branch_and_bound``,
    outcome ``undecided``, for the deciders after it). ``root_only=None``: every problem up to ``max_unknowns``
    gets the whole search.
    """

    seconds: float = 20.0
    max_unknowns: int = 2000  # rates x probes + plastic values beyond which SCIP is not tried (undecided)
    root_only: int | None = 500  # rates x probes + plastic values beyond which SCIP runs its root node only
    root_seconds: float = 3.0  # CPU cap of a root-only run (the slowest root proof measured: 0.91 s)
    name: ClassVar[str] = "branch_and_bound"
    final: ClassVar[bool] = False
    records: ClassVar[bool] = False

    @classmethod
    def build(cls, lm: LevenbergMarquardt, dale: bool) -> BranchAndBound:
        return cls()

    def recorded(self, problem: Problem) -> None:
        return None

    def applicable(self, problem: Problem) -> bool:
        return _linear_steady(problem) and scip_available()

    def decide(self, batch: Batch, open_: np.ndarray) -> Decided:
        from .chain import Decided, _on

        if batch.bounds is None and batch.admissible is None:
            return _none(batch, open_, BRANCH_AND_BOUND_DECISION)
        fmap, targets, own = _on(batch, open_)
        n, m = open_.size, fmap.probes.shape[1]
        circuit = batch.problem.circuit
        lay = _layout(circuit, batch.alloc, m)
        unknowns = lay.hidden.size * m + batch.alloc.size
        if unknowns > self.max_unknowns:
            return _none(batch, open_, BRANCH_AND_BOUND_DECISION)
        nodes = 1 if self.root_only is not None and unknowns > self.root_only else None
        seconds = self.seconds if nodes is None else min(self.seconds, self.root_seconds)
        a_all, b_all, x_all, y_all = _arrays(batch, fmap, targets)
        lo, hi = batch_box(batch)
        theta = own.numpy().copy()
        status = np.full(n, STALLED, dtype=np.int8)
        found = np.zeros(n, dtype=bool)
        start = np.clip(theta, lo, hi)
        for p in range(n):
            verdict, point = _scip_trial(lay, a_all[p], b_all[p], x_all[p], y_all[p], lo, hi, batch.tol,
                                         seconds, batch.seed + int(batch.first + open_[p]), start[p], nodes)
            if verdict == "infeasible":
                status[p] = INFEASIBLE
            elif verdict == "feasible":
                theta[p], found[p] = point, True
        theta_t = torch.as_tensor(theta, dtype=targets.dtype)
        resid = _residuals(fmap, theta_t, targets)
        ok = found & (resid.numpy() < batch.tol)
        if ok.any() and batch.admissible is not None:
            hit = torch.as_tensor(np.flatnonzero(ok))
            ok[hit.numpy()] = np.asarray(batch.admissible(fmap.subset(hit), theta_t[hit]), dtype=bool)
        status[ok] = MATCHED
        outcome = np.full(n, UNDECIDED, dtype=np.int8)
        outcome[ok], outcome[status == INFEASIBLE] = PROVEN_MATCH, PROVEN_NO_MATCH
        return Decided(theta_t, resid, status, np.full(n, BRANCH_AND_BOUND_DECISION, dtype=np.int8), outcome,
                       np.zeros(n, dtype=np.int64))
