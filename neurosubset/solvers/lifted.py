"""Exact decisions for linear steady circuits by lifting the rates (:class:`SteadyLifting`).

A linear steady circuit has rates ``r = W r + U x`` over its non-input neurons; the outputs are the rates of the
output neurons. With the rates ``R`` ``(N, m)`` on the ``m`` probes as unknowns beside the plastic values, every
equation is bilinear: row ``i`` reads ``R_i - W0_i R - U0_i X = theta_Si Z_Si`` with ``W0, U0`` the frozen
weights, ``S_i`` the row's plastic synapses and ``Z = [R; X]`` the presynaptic activity. The outputs' rows of
``R`` are the teacher's outputs ``Y``. Three kinds of rows:

- *free* rows (plastic synapses from ``>= m`` distinct presynaptic neurons or inputs): wherever ``Z_Si`` has rank
  ``m`` (a generic ``R``), ``theta_Si`` solves the row for any right-hand side, so the row constrains nothing;
- *fixed* rows (no plastic synapse): linear equations in ``R``;
- *short* rows (plastic synapses from 1 .. m-1 distinct presynaptic cells): once the necessary equations pin
  those cells' rates (outputs, inputs, neurons fixed by them), the row's right-hand side must lie in the span of
  known rates, a linear condition ("exact" short rows); the others stay bilinear.

The fixed and exact short rows are linear equations ``K u = k`` in the hidden rates ``u`` (solved with one thin SVD,
closest to the student's own rates ``R_0``), and they are necessary conditions: if they are inconsistent, no plastic
values exist whatever their signs. The bilinear short rows are then solved by minimum-norm Gauss-Newton in the null
space of ``K`` and their own values, from the student's own values ``theta_0`` (:func:`_newton`: a local method, so
it finds solutions but refutes none), and each free or exact row's values follow by least squares closest to
``theta_0`` (bounded least squares, BVLS, inside Dale's box where that leaves it). Per trial:

- **matched** where the student assembled from those values reproduces the teacher (relative residual recomputed
  from its weights below ``tol``): a witness, exact;
- **no_solution** where the necessary linear equations are inconsistent (relative least-squares residual above
  ``tol``), exact;
- otherwise undecided: the decider chain (:mod:`neurosubset.solvers.chain`) hands those trials to the LM (a lower
  bound), as it does matches the stability requirement refuses.

The linear algebra per trial is a few SVDs of at most ``N m x N_hidden m`` (worm, m = 2: 856 x 604) plus one small
least-squares problem per row: under a second per worm trial where the LM needs minutes.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from .._schema import MATCHED, NO_SOLUTION, STALLED
from ..dynamics import Steady
from ..dynamics.blocks import block_matrix
from .lm import relative_residual
from .options import LevenbergMarquardt, SteadyLifting

__all__ = ["SteadyLifting", "lifting_applicable", "solve_lifted"]


def lifting_applicable(circuit, alloc, solver: LevenbergMarquardt) -> SteadyLifting | None:
    """:class:`SteadyLifting` with ``solver``'s LM fields for a linear steady circuit (an empty allocation goes to
    least squares in ``fit`` before any decider)."""
    if not isinstance(circuit.dynamics, Steady) or circuit.nonlinearity != "linear":
        return None
    return SteadyLifting(solver.restarts, solver.max_rounds, solver.iterations, solver.widen, solver.patience)


@dataclass(frozen=True)
class _Layout:
    """Where the plastic values sit in ``[W | U]`` and which rows are free or short (same for every trial)."""

    rows: np.ndarray  # (M,) postsynaptic position among the N non-input neurons
    cols: np.ndarray  # (M,) presynaptic position in [neurons; inputs]
    free: list[tuple[int, np.ndarray]]  # (row, plastic indices) of the free rows
    short: list[tuple[int, np.ndarray]]  # (row, plastic indices) of the short rows
    fixed: np.ndarray  # rows without plastic synapses: linear equations in R
    hidden: np.ndarray  # positions of the hidden neurons (the unknown rates)
    outputs: np.ndarray  # positions of the output neurons, in output order


def _layout(circuit, alloc, m: int) -> _Layout:
    neurons = circuit.slices(("hidden", "output"))
    n = circuit.n_neurons(("hidden", "output"))
    # the adjoint's indexing: rows over neurons, columns [neurons; inputs]
    where = circuit.dynamics.adjoint_layout(circuit, alloc)
    rows, cols = where["post"].numpy(), where["pre"].numpy()
    free, short = [], []
    for r in np.unique(rows).tolist():
        ks = np.flatnonzero(rows == r)
        (free if np.unique(cols[ks]).size >= m else short).append((r, ks))
    fixed = np.setdiff1d(np.arange(n), np.unique(rows))
    outputs = np.concatenate([np.arange(neurons[r].start, neurons[r].stop) for r in circuit.output_regions])
    return _Layout(rows, cols, free, short, fixed, np.setdiff1d(np.arange(n), outputs), outputs)


class _Rows:
    """Row equations ``R_i - w_i [R; X] = 0`` of one trial as linear equations in ``u = vec(R_hidden)``.

    ``u`` is neuron-major (``u[l m + j]`` is hidden neuron ``l``'s rate on probe ``j``); output rates are ``y``.
    """

    def __init__(self, lay: _Layout, x: np.ndarray, y: np.ndarray):
        self.lay, self.x, self.y, self.m = lay, x, y, x.shape[1]
        self.n = lay.hidden.size + lay.outputs.size

    def equations(self, rows: np.ndarray, w: np.ndarray, basis: np.ndarray | None = None
                  ) -> tuple[np.ndarray, np.ndarray]:
        """``(K, k)`` with ``K u = k`` the equations of ``rows`` (weights ``w`` ``(len(rows), N + n_in)``); with
        ``basis`` ``(m, q)`` only their components along it (one row at a time)."""
        n, m = self.n, self.m
        coef = -w[:, :n]
        coef[np.arange(rows.size), rows] += 1.0
        const = coef[:, self.lay.outputs] @ self.y - w[:, n:] @ self.x  # (rows, m)
        if basis is None:
            return np.kron(coef[:, self.lay.hidden], np.eye(m)), -const.reshape(-1)
        return np.kron(coef[:, self.lay.hidden], basis.T), -(const @ basis).reshape(-1)

    def rates(self, u: np.ndarray) -> np.ndarray:
        """All rates ``(N, m)`` for ``u``."""
        out = np.empty((self.n, self.m))
        out[self.lay.hidden], out[self.lay.outputs] = u.reshape(-1, self.m), self.y
        return out


def _solve(k_mat: np.ndarray, k_vec: np.ndarray, u0: np.ndarray) -> tuple[np.ndarray, float, np.ndarray]:
    """The solution of ``K u = k`` closest to ``u0`` (one thin SVD), its relative residual, and the coordinates
    it fixes (those with no component in the null space of ``K``)."""
    if k_mat.shape[0] == 0:
        return u0, 0.0, np.zeros(u0.size, dtype=bool)
    left, sv, vt = np.linalg.svd(k_mat, full_matrices=False)
    rank = int((sv > sv[0] * max(k_mat.shape) * np.finfo(float).eps).sum()) if sv[0] > 0 else 0
    u = u0 + vt[:rank].T @ ((left[:, :rank].T @ (k_vec - k_mat @ u0)) / sv[:rank])
    scale = np.linalg.norm(k_vec)
    resid = float(np.linalg.norm(k_mat @ u - k_vec) / scale) if scale > 0 else 0.0
    return u, resid, 1.0 - (vt[:rank] ** 2).sum(axis=0) < 1e-10  # squared norm of the null-space component


_NEWTON_STEPS = 100  # damped Gauss-Newton iterations on the held short rows (a local search: finds, never refutes)
_NEWTON_MAX_UNKNOWNS = 3000  # hidden rates x probes beyond which the null space is not formed (then theta_0 held)


def _newton(eq: _Rows, lay: _Layout, full: np.ndarray, k_mat: np.ndarray, u: np.ndarray, theta0: np.ndarray,
            held: list, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rates ``u`` (still solving ``K u = k``) and plastic values where the held short rows hold too, if found.

    Unknowns: ``c`` in ``u = u_p + N c`` (``N`` the null space of the necessary equations ``K``) and the held rows'
    values; residual ``(G - T(theta)) Z(u)`` with ``G`` the rows' ``e_r - w_r`` and ``T`` their plastic values. Each
    step is the minimum-norm Gauss-Newton step, halved until the residual falls. Starts at the student's own
    values, with ``c`` fitting the held rows at those values in least squares.
    """
    m, n = eq.m, eq.n
    theta = theta0.copy()
    if u.size > _NEWTON_MAX_UNKNOWNS:
        return u, theta
    if k_mat.shape[0]:
        _, sv, vt = np.linalg.svd(k_mat, full_matrices=True)
        rank = int((sv > sv[0] * max(k_mat.shape) * np.finfo(float).eps).sum()) if sv[0] > 0 else 0
        null = vt[rank:].T  # (nh m, d)
    else:
        null = np.eye(u.size)
    rows = np.array([r for r, _ in held])
    g = -full[rows]
    g[np.arange(rows.size), rows] += 1.0  # (h, N + n_in)
    ks = np.concatenate([k for _, k in held])
    owner = np.concatenate([np.full(k.size, i) for i, (_, k) in enumerate(held)])
    basis = null.reshape(lay.hidden.size, m, -1)  # (nh, m, d)

    def residual(u_now, th):
        z = np.vstack([eq.rates(u_now), x])
        t = np.zeros_like(g)
        np.add.at(t, (owner, lay.cols[ks]), th[ks])
        return (g - t) @ z, z, t

    def jacobian(z, t):
        j_c = np.einsum("hl,lmd->hmd", (g - t)[:, lay.hidden], basis).reshape(rows.size * m, -1)
        j_t = np.zeros((rows.size, m, ks.size))
        j_t[owner, :, np.arange(ks.size)] = -z[lay.cols[ks]]
        return np.hstack([j_c, j_t.reshape(rows.size * m, -1)])

    res, z, t = residual(u, theta)  # start: the rates that fit the held rows at theta_0 best
    u = u + null @ np.linalg.lstsq(jacobian(z, t)[:, :null.shape[1]], -res.reshape(-1), rcond=None)[0]
    res, z, t = residual(u, theta)
    scale = max(np.linalg.norm(g[:, :n] @ z[:n]), np.finfo(float).tiny)
    mu = 1e-3 * max(np.linalg.norm(jacobian(z, t)) ** 2 / max(ks.size + null.shape[1], 1), np.finfo(float).tiny)
    for _ in range(_NEWTON_STEPS):
        size = np.linalg.norm(res)
        if size <= 1e-14 * scale:
            break
        jac = jacobian(z, t)
        eye = np.sqrt(mu) * np.eye(jac.shape[1])
        step = np.linalg.lstsq(np.vstack([jac, eye]), np.concatenate([-res.reshape(-1), np.zeros(jac.shape[1])]),
                               rcond=None)[0]
        u_try, th_try = u + null @ step[:null.shape[1]], theta.copy()
        th_try[ks] += step[null.shape[1]:]
        res_try, z_try, t_try = residual(u_try, th_try)
        if np.linalg.norm(res_try) < size:  # accept, trust more (Nielsen-style damping)
            u, theta, res, z, t, mu = u_try, th_try, res_try, z_try, t_try, mu / 3
        else:
            mu *= 4
            if mu > 1e20:
                break
    return u, theta


def _trial(lay: _Layout, a: np.ndarray, b: np.ndarray, x: np.ndarray, y: np.ndarray, theta0: np.ndarray,
           lower: np.ndarray | None, upper: np.ndarray | None, tol: float) -> tuple[np.ndarray, float]:
    """Plastic values ``(M,)`` from the lifted system and the relative residual of its linear part (necessary
    conditions only: above ``tol`` it proves that no plastic values exist, and nothing more is solved).

    ``a`` ``(N, N)`` and ``b`` ``(N, n_in)`` frozen weights (zero at plastic entries), ``x`` ``(n_in, m)`` probes,
    ``y`` ``(n_out, m)`` teacher outputs, ``theta0`` ``(M,)`` the student's own values (inside the box).

    A short row whose plastic synapses all come from cells with rates fixed by the necessary equations (outputs,
    inputs, neurons pinned by them) is exact: its right-hand side must lie in the span of those known rates, a
    linear condition (the components orthogonal to the span vanish). The others are bilinear: :func:`_newton`.
    """
    from scipy.optimize import lsq_linear

    n, m = a.shape[0], x.shape[1]
    full = np.hstack([a, b])  # (N, N + n_in)
    own = full.copy()
    np.add.at(own, (lay.rows, lay.cols), theta0)
    u0 = np.linalg.lstsq(np.eye(n) - own[:, :n], own[:, n:] @ x, rcond=None)[0][lay.hidden].reshape(-1)
    eq = _Rows(lay, x, y)
    k_mat, k_vec = eq.equations(lay.fixed, full[lay.fixed])
    known_cell = np.ones(n + x.shape[0], dtype=bool)  # inputs and outputs always; hidden ones once pinned
    held, exact = list(lay.short), []
    while True:
        u, resid, pinned = _solve(k_mat, k_vec, u0)
        known_cell[lay.hidden] = pinned.reshape(-1, m).all(axis=1)
        ready = [(r, ks) for r, ks in held if known_cell[lay.cols[ks]].all()]
        if not ready:
            break
        z = np.vstack([eq.rates(u), x])
        for r, ks in ready:
            held.remove((r, ks))
            exact.append((r, ks))
            _, sv, vt = np.linalg.svd(z[lay.cols[ks]], full_matrices=True)
            rank = int((sv > sv[0] * m * np.finfo(float).eps).sum()) if sv.size and sv[0] > 0 else 0
            if rank < m:  # the right-hand side has no component outside the span of the presynaptic rates
                km, kv = eq.equations(np.array([r]), full[[r]], basis=vt[rank:].T)
                k_mat, k_vec = np.vstack([k_mat, km]), np.concatenate([k_vec, kv])
    theta = theta0.copy()
    if resid > tol:  # refuted: no rates satisfy the necessary equations
        return theta0.copy(), resid
    if held:  # the other short rows are bilinear: Gauss-Newton from the student's own values (finds, never refutes)
        u, theta = _newton(eq, lay, full, k_mat, u, theta0, held, x)
        if lower is not None:
            theta = np.clip(theta, lower, upper)
    z = np.vstack([eq.rates(u), x])  # presynaptic activity (N + n_in, m)
    for r, ks in lay.free + exact:
        g = z[lay.cols[ks]].T  # (m, |ks|)
        need = z[r] - full[r] @ z
        theta[ks] = theta0[ks] + np.linalg.lstsq(g, need - g @ theta0[ks], rcond=None)[0]
        if lower is not None and ((theta[ks] < lower[ks]).any() or (theta[ks] > upper[ks]).any()):
            theta[ks] = lsq_linear(g, need, bounds=(lower[ks], upper[ks]), method="bvls").x
    return theta, resid


def solve_lifted(fmap, targets: torch.Tensor, theta0: torch.Tensor, alloc, bounds, *, tol: float
                 ) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """Run the lifted decider on every trial of ``fmap``: ``(theta, residual, status)``.

    Parameters
    ----------
    fmap : PlasticMap
        The students (a linear steady circuit), on the CPU.
    targets : torch.Tensor
        ``(trial, m * n_out)`` teacher outputs, probe-major.
    theta0 : torch.Tensor
        ``(trial, M)`` the students' own plastic values (held in short rows, the centre of the least squares).
    alloc : Allocation
    bounds : Bounds or None
        Dale's box on the plastic values (None: free).
    tol : float
        Match tolerance on the relative residual.

    Returns
    -------
    tuple
        ``theta (trial, M)``, ``residual (trial,)`` recomputed from the assembled weights, ``status (trial,)`` int8
        matched / no_solution (both exact) or stalled (undecided).
    """
    circuit = fmap.circuit
    trials, m = fmap.probes.shape[:2]
    lay = _layout(circuit, alloc, m)
    neurons, inputs = list(circuit.slices(("hidden", "output"))), list(circuit.slices("input"))
    a_all = block_matrix(circuit, fmap.frozen, neurons, neurons).numpy()
    b_all = block_matrix(circuit, fmap.frozen, neurons, inputs).numpy()
    lower = upper = None
    th0 = theta0.numpy().copy()
    if bounds is not None and bounds.active:
        lower, upper = bounds.lower, bounds.upper
        th0 = np.clip(th0, lower, upper)
    y_all = targets.reshape(trials, m, -1).transpose(-1, -2).numpy()
    x_all = fmap.probes.transpose(-1, -2).numpy()
    theta, lin = np.empty_like(th0), np.empty(trials)
    # numpy's BLAS on torch's thread count (fit's `threads`): its SVDs are 14x slower on 2 threads than on 1 when
    # the machine is loaded (270 x 604, load average 5: 0.35 s vs 0.025 s)
    with threadpool_limits(limits=torch.get_num_threads(), user_api="blas"):
        for p in range(trials):
            theta[p], lin[p] = _trial(lay, a_all[p], b_all[p], x_all[p], y_all[p], th0[p], lower, upper, tol)
    theta_t = torch.as_tensor(theta, dtype=targets.dtype)
    resid = _residuals(fmap, theta_t, targets)
    res = resid.numpy()
    status = np.where(res < tol, MATCHED, STALLED).astype(np.int8)
    # the linear part holds only necessary conditions: inconsistent, it proves that no plastic values exist
    status[(status != MATCHED) & (lin > tol)] = NO_SOLUTION
    return theta_t, resid, status


def _residuals(fmap, theta: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Relative residuals of the assembled students; inf where ``I - W`` is exactly singular (no steady state: a
    bounded least-squares witness can land there, e.g. on the worm under Dale's box), so that trial stays open."""
    try:
        return relative_residual(fmap(theta), targets)
    except RuntimeError:  # torch.linalg.lu_factor refuses a singular batch element: judge the trials one by one
        out = torch.full((theta.shape[0],), torch.inf, dtype=targets.dtype)
        for p in range(theta.shape[0]):
            sel = torch.tensor([p])
            try:
                out[p] = relative_residual(fmap(theta[sel], select=sel), targets[sel])[0]
            except RuntimeError:
                pass
        return out
