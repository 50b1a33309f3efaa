"""Stable witnesses of a match: searched on the matched manifold, certified by a Lyapunov solve.

A linear steady student has rates ``r = (I - W)^{-1} U x`` over its non-input neurons; its fixed point is stable
iff ``max Re eig(W) < 1`` (:mod:`neurosubset.dynamics.stability`). Filtering the matches a local solver finds by
stability (the LM's ``admissible``) keeps only those that happen to be stable; on small recurrent allocations of
an E/I circuit almost all are not. :class:`StableWitness` searches for a stable match instead:

1. **Onto the matched manifold** ``{theta : F(theta) = Y}``: projected Levenberg-Marquardt on the residual
   ``F(theta) - Y`` inside the box ``B`` (Dale's sign box intersected with the plausibility box
   ``|theta_k| <= K sigma_k``), from the student's own values and a few random draws of the init.
2. **Along it, down a smoothed spectral abscissa**: ``a_beta(W) = (1 / beta) log sum_i exp(beta Re lambda_i)``
   over the eigenvalues of the circuit's recurrent loops (:meth:`neurosubset.dynamics.stability.Stability.loops`;
   ``a_beta >= max Re lambda``, within ``log(n) / beta``), whose exact gradient is the softmax-weighted sum of the
   eigenvalue derivatives ``d lambda_i = u_i^H dW v_i / u_i^H v_i`` (the formula of
   :meth:`~neurosubset.dynamics.stability.Stability.abscissa`, for every eigenvalue). Each step moves along the
   gradient projected onto the null space of the residual Jacobian (restricted to the values not held at a face of
   the box), sized to bring the abscissa below ``1 - margin`` to first order within a trust radius, and is followed
   by Levenberg-Marquardt corrections back onto the manifold. No step is refused for being unstable (a barrier
   that refuses steps found fewer stable matches at 4x the cost); the trust radius shrinks where a step overshot.
3. **Certified**: the assembled student's Jacobian ``A = -I + W`` (of ``tau dr/dt = -r + W r + U x``) is Hurwitz iff
   ``A^T P + P A = -I`` has a positive definite solution ``P`` (Lyapunov): ``scipy.linalg.solve_continuous_lyapunov``
   solves it, and a Cholesky factorisation of ``P`` (with the equation's residual) checks it. A trial is
   ``proven_match`` only with that certificate, the residual recomputed by the toolkit's own forward map below
   ``tol``, and the fit's stability requirement (``admissible``) agreeing.

0. **First, the toolkit's own LM inside the box** ``B`` (restart rounds of batched Levenberg-Marquardt,
   :func:`~neurosubset.solvers.multistart.multistart`, bounded by ``B``, with the fit's stability requirement):
   its stable matches go straight to the certificate (step 3), its refused (unstable) matches inside ``B`` start
   the descent of step 2. Measured on V1 steady (``benchmarks/bench_realistic.py`` ``v1_steady``, 20 trials, K =
   100): the numpy projected LM of step 1 reached the matched manifold from none of 16 box starts on any trial
   tried (best relative residual 0.1-0.2, at K, 10 K and 100 K alike), while the batched LM inside ``B`` found
   stable matches on 7 of 20 trials (and unstable ones inside ``B`` on 5 more) in 61 s CPU; the LM at the end of
   the chain, then unbounded (it searches ``B`` too since 4241636), matched only at 157 to 6e5 init SDs, where the
   descent from its unstable matches never moved the abscissa (its corrections do not return to the manifold near
   the pole of ``(I - W)^{-1}``). Since the manifold LM solves its step again around the values it puts on a face
   (:func:`_lm_step`), StableWitness decides 7 of those 20 trials instead of 4 (the chain 10 instead of 9, in
   118 s CPU instead of 143 s, one run each, interleaved).

A search, not a proof: a trial it does not match stays undecided (the chain's next deciders get it).

**Linear continuous circuits** (:func:`descend_refused`, called by the chain's LM): the search reads a student
only through ``evaluate`` (residual and Jacobian), ``abscissa`` (smoothed, with its gradient) and ``certified``, so
step 2 runs as well on :class:`_MapStudent`: the toolkit's plastic map (reverse-mode Jacobians of the exact
solution) and the dynamics' stability rule ``max Re eig(T^-1 (W - I)) < 0`` on the steady scale
(:meth:`~neurosubset.dynamics.stability.Stability.smoothed_abscissa`). Their outputs at the read-out times are
entire in the weights, so the matched manifold crosses the stability boundary without a pole, and the descent
from an unstable match can reach a stable one.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import scipy.linalg
import torch
from threadpoolctl import threadpool_limits

from .._schema import MATCHED, PROVEN_MATCH, STALLED, STABLE_WITNESS_DECISION, UNDECIDED, UNSTABLE
from ..dynamics.blocks import block_matrix
from ..dynamics.stability import log_sum_exp_abscissa, plastic_in_loops
from .lifted import _layout, _residuals, lifting_applicable
from .lifted import _trial as _lifted_trial
from .bounded import Bounds
from .multistart import multistart
from .options import LevenbergMarquardt

if TYPE_CHECKING:
    from .chain import Batch, Decided, Problem

__all__ = ["StableWitness", "batch_box", "hurwitz_certificate", "lyapunov_certificate", "plausibility_box",
           "smoothed_abscissa"]

SEED_KEY = 0x5AB1E  # spawn key of the random starts (with the fit's seed and the global trial index)
_LM_GAIN, _LM_SHRINK = 10.0, 3.0  # damping up after a refused LM step, down after an accepted one
BOX_ROUNDS = 3  # restart rounds of StableWitness's LM inside the plausibility box (StableWitness.box_lm)
BOX_RESTARTS = 3  # its restarts per round, per restart of the requested solver
BOX_STREAM = 2  # its restart seeds' stream (multistart's ``stream``; the LM decider's is 1)
STALL_STEPS, STALL_DROP = 20, 1e-6  # a descent along the manifold gives up after this many steps that did not bring
# the abscissa down by this much


def plausibility_box(lower: np.ndarray | None, upper: np.ndarray | None, sigma: np.ndarray, k: float
                     ) -> tuple[np.ndarray, np.ndarray]:
    """The box the witnesses and proofs of the biological deciders live in: the sign box intersected with
    ``|theta| <= k sigma``.

    Parameters
    ----------
    lower, upper : numpy.ndarray or None
        ``(M,)`` the sign box (None: free).
    sigma : numpy.ndarray
        ``(M,)`` init SD of each plastic synapse.
    k : float
        The plausibility bound in init SDs.

    Returns
    -------
    tuple of numpy.ndarray
        ``(lower, upper)`` ``(M,)``, finite.
    """
    lo, hi = -k * np.asarray(sigma, dtype=float), k * np.asarray(sigma, dtype=float)
    if lower is not None:
        lo, hi = np.maximum(lo, lower), np.minimum(hi, upper)
    return lo, hi


def batch_box(batch: Batch, k: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """:func:`plausibility_box` of a chain batch: its sign box (``batch.bounds``, None: free) within ``k`` init SDs
    (default the batch's ``plausibility_bound``); ``(lower, upper)`` ``(M,)``."""
    bounds = batch.bounds
    return plausibility_box(None if bounds is None else bounds.lower, None if bounds is None else bounds.upper,
                            batch.sigma, batch.plausibility_bound if k is None else k)


def lyapunov_certificate(w: np.ndarray) -> bool:
    """Whether the fixed point of ``tau dr/dt = -r + W r + input`` is certified stable by a Lyapunov solve.

    Parameters
    ----------
    w : numpy.ndarray
        ``(N, N)`` the recurrent weights over the non-input neurons (the assembled student).

    Returns
    -------
    bool
        :func:`hurwitz_certificate` of ``A = W - I``.
    """
    return hurwitz_certificate(np.asarray(w, dtype=np.float64) - np.eye(w.shape[0]))


def hurwitz_certificate(a: np.ndarray) -> bool:
    """Whether ``dx/dt = A x`` is certified asymptotically stable by a Lyapunov solve.

    Parameters
    ----------
    a : numpy.ndarray
        ``(N, N)``.

    Returns
    -------
    bool
        True iff ``P`` solving ``A^T P + P A = -I`` is finite, satisfies the equation to ``1e-8`` relative to
        ``||P||``, and its symmetric part has a Cholesky factor (positive definite).
    """
    a = np.asarray(a, dtype=np.float64)
    try:
        p = scipy.linalg.solve_continuous_lyapunov(a.T, -np.eye(a.shape[0]))
    except (ValueError, np.linalg.LinAlgError, scipy.linalg.LinAlgError):
        return False
    if not np.isfinite(p).all():
        return False
    p = 0.5 * (p + p.T)
    resid = np.linalg.norm(a.T @ p + p @ a + np.eye(a.shape[0]))
    if resid > 1e-8 * max(1.0, np.linalg.norm(p)):
        return False
    try:
        np.linalg.cholesky(p)
    except np.linalg.LinAlgError:
        return False
    return True


def smoothed_abscissa(w: np.ndarray, loop_index: list[np.ndarray], rows: np.ndarray, cols: np.ndarray,
                      beta: float) -> tuple[float, float, np.ndarray]:
    """The log-sum-exp abscissa of the loops' eigenvalues and its exact gradient in the plastic values.

    Parameters
    ----------
    w : numpy.ndarray
        ``(N, N)`` recurrent weights over the non-input neurons.
    loop_index : list of numpy.ndarray
        The neuron positions of each recurrent loop.
    rows, cols : numpy.ndarray
        ``(M,)`` each plastic synapse's postsynaptic position and presynaptic position in ``[neurons; inputs]``.
    beta : float
        Softness (1 / the width over which eigenvalues share the weight).

    Returns
    -------
    value : float
        ``(1 / beta) log sum_i exp(beta Re lambda_i)`` over the loops' eigenvalues.
    top : float
        ``max Re lambda_i``, floored at 0 (the toolkit's ``max_real_eig``: read-outs carry zero eigenvalues).
    gradient : numpy.ndarray
        ``(M,)`` d value / d theta (zero for synapses outside a loop: inputs, read-outs, between loops).
    """
    grad = np.zeros(rows.size)
    if not loop_index:
        return 0.0, 0.0, grad
    value, top, ds = log_sum_exp_abscissa([(w[np.ix_(idx, idx)], 0.0, 1.0) for idx in loop_index], beta)
    for idx, d in zip(loop_index, ds):  # d: d value / d block entry (post, pre)
        where = -np.ones(w.shape[0] + 1, dtype=np.int64)
        where[idx] = np.arange(idx.size)
        cr = np.where(cols < w.shape[0], cols, w.shape[0])  # input synapses move no eigenvalue
        inside = (where[rows] >= 0) & (where[cr] >= 0)
        grad[inside] += d[where[rows[inside]], where[cr[inside]]]
    return value, max(top, 0.0), grad


class _Student:
    """One trial's linear steady student: outputs, residual Jacobian and recurrent matrix for plastic values.

    The search reads a student through :meth:`evaluate`, :meth:`abscissa`, :meth:`certified` and its targets
    ``y`` ``(n_out, m)`` (which the continuation in the targets moves); :class:`_MapStudent` is the same for
    other dynamics."""

    def __init__(self, lay, a: np.ndarray, b: np.ndarray, x: np.ndarray, y: np.ndarray,
                 loop_index: list[np.ndarray]):
        self.lay, self.n = lay, a.shape[0]
        self.full = np.hstack([a, b])  # (N, N + n_in), zero at plastic entries
        self.x, self.y = x, y  # (n_in, m), (n_out, m)
        self.scale = float(np.linalg.norm(y))
        self.loop_index = loop_index

    def abscissa(self, theta: np.ndarray, beta: float) -> tuple[float, float, np.ndarray]:
        """:func:`smoothed_abscissa` at ``theta``: ``(value, top, gradient (M,))``."""
        return smoothed_abscissa(self.recurrent(theta)[:, :self.n], self.loop_index, self.lay.rows, self.lay.cols,
                                 beta)

    def certified(self, theta: np.ndarray) -> bool:
        """:func:`lyapunov_certificate` of the assembled student."""
        return lyapunov_certificate(self.recurrent(theta)[:, :self.n])

    def recurrent(self, theta: np.ndarray) -> np.ndarray:
        full = self.full.copy()
        np.add.at(full, (self.lay.rows, self.lay.cols), theta)
        return full

    def evaluate(self, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        """``(residual (m n_out,), jacobian (m n_out, M), relative residual)``, probe-major like the targets."""
        full, n, lay = self.recurrent(theta), self.n, self.lay
        mat = np.eye(n) - full[:, :n]
        try:
            lu = scipy.linalg.lu_factor(mat, check_finite=False)
            r = scipy.linalg.lu_solve(lu, full[:, n:] @ self.x)
            sel = np.zeros((n, lay.outputs.size))
            sel[lay.outputs, np.arange(lay.outputs.size)] = 1.0
            g_out = scipy.linalg.lu_solve(lu, sel, trans=1).T  # (n_out, N): rows of (I - W)^{-1}
        except (ValueError, np.linalg.LinAlgError, scipy.linalg.LinAlgError):
            return np.full(self.y.size, np.inf), np.zeros((self.y.size, lay.rows.size)), np.inf
        if not (np.isfinite(r).all() and np.isfinite(g_out).all()):
            return np.full(self.y.size, np.inf), np.zeros((self.y.size, lay.rows.size)), np.inf
        z = np.vstack([r, self.x])
        res = (r[lay.outputs] - self.y).T.reshape(-1)
        jac = (g_out[:, lay.rows][None, :, :] * z[lay.cols].T[:, None, :]).reshape(-1, lay.rows.size)
        return res, jac, float(np.linalg.norm(res) / self.scale) if self.scale > 0 else float(np.linalg.norm(res))


class _MapStudent:
    """One trial's student of a dynamics without the steady closed form (linear continuous circuits): outputs and
    residual Jacobian from the toolkit's plastic map (reverse mode), the abscissa and its gradient from the
    dynamics' :class:`~neurosubset.dynamics.stability.Stability` (``T^-1 (W - I)`` per loop, on the steady scale),
    the certificate a Lyapunov solve per loop. The interface of :class:`_Student`.

    Parameters
    ----------
    fmap : PlasticMap
        The map over this one trial (one problem).
    stability : Stability
    y : numpy.ndarray
        ``(n_out, m)`` the teacher's outputs (probe-major once flattened, as the map's).
    """

    def __init__(self, fmap, stability, y: np.ndarray):
        self.fmap, self.stability, self.y = fmap, stability, y
        self.scale = float(np.linalg.norm(y))
        circuit = fmap.circuit
        self.index = [(name, fmap.index[name].numpy()) for name in circuit.weight_names]

    def _weights(self, theta: np.ndarray) -> dict[str, np.ndarray]:
        got = self.fmap.weights(torch.as_tensor(theta, dtype=torch.float64)[None])
        return {k: v[0].numpy() for k, v in got.items()}

    def evaluate(self, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        """``(residual (m n_out,), jacobian (m n_out, M), relative residual)``, probe-major like the targets."""
        out, jac = self.fmap.value_and_jacobian(torch.as_tensor(theta, dtype=torch.float64)[None])
        out, jac = out[0].numpy(), jac[0].numpy()
        res = out - self.y.T.reshape(-1)
        if not (np.isfinite(res).all() and np.isfinite(jac).all()):
            return np.full(self.y.size, np.inf), np.zeros_like(jac), np.inf
        return res, jac, float(np.linalg.norm(res) / self.scale) if self.scale > 0 else float(np.linalg.norm(res))

    def abscissa(self, theta: np.ndarray, beta: float) -> tuple[float, float, np.ndarray]:
        """:meth:`Stability.smoothed_abscissa <neurosubset.dynamics.stability.Stability.smoothed_abscissa>` at
        ``theta``: ``(value, top, gradient (M,))``."""
        value, top, grad = self.stability.smoothed_abscissa(self._weights(theta), beta)
        return value, top, np.concatenate([grad[name].reshape(-1)[idx] for name, idx in self.index])

    def certified(self, theta: np.ndarray) -> bool:
        """Every loop's matrix Hurwitz, each by :func:`hurwitz_certificate`."""
        stab = self.stability
        return all(hurwitz_certificate(stab.hurwitz(gen)) for gen in stab.generators(self._weights(theta)))


def _null_projection(jac: np.ndarray, g: np.ndarray) -> np.ndarray:
    """``g`` ``(M,)`` minus its component in the row space of ``jac`` ``(E, M)`` (the directions that move the
    outputs to first order), by an orthonormal basis of that row space.

    Wide Jacobians (``M > 4 E``, the worm's 252 x 3,709) take the basis from the eigenvectors of ``J J^T``
    (``E x E``; singular values below ``1e-6`` of the largest count as zero: the correction steps absorb what they
    move); the others from a thin SVD (rank cut at machine precision). Never the full ``M x M`` basis of the
    null space (16 s per step on the worm).
    """
    if jac.shape[0] == 0 or not np.isfinite(jac).all():
        return g.copy()
    if jac.shape[1] > 4 * jac.shape[0]:
        lam, u = np.linalg.eigh(jac @ jac.T)
        keep = lam > lam[-1] * 1e-12 if lam[-1] > 0 else np.zeros(lam.size, dtype=bool)
        basis = (jac.T @ u[:, keep]) / np.sqrt(lam[keep])  # (M, r) orthonormal
        return g - basis @ (basis.T @ g)
    _, sv, vt = np.linalg.svd(jac, full_matrices=False)
    rank = int((sv > sv[0] * max(jac.shape) * np.finfo(float).eps).sum()) if sv.size and sv[0] > 0 else 0
    return g - vt[:rank].T @ (vt[:rank] @ g)


def _free(theta: np.ndarray, step: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Values not held at a face of the box by ``step`` (those at a face that the step pushes outwards are held)."""
    return ~(((theta <= lo) & (step < 0)) | ((theta >= hi) & (step > 0)))


def _lm_step(res: np.ndarray, jac: np.ndarray, mu: float, theta: np.ndarray, lo: np.ndarray, hi: np.ndarray
             ) -> np.ndarray:
    """One projected Levenberg step on the values the box leaves free, then clipped into it.

    Values the step would carry through a face are put on it and the step of the other free values is solved
    again with those moves in the residual (``r + J d_fixed``), as the chain's LM does
    (:func:`neurosubset.solvers.lm._projected_step`); clipping the first step alone left the remainder undone.
    The damping stays Levenberg's (uniform, not Marquardt's per-column scaling): with Marquardt's the worm's
    witnesses moved out to the box's face (12-58 -> 100 init SDs on Dale + gap junctions, all 3,709 synapses,
    8 trials) and two of its eight were lost, at 3x the CPU.

    Underdetermined (more free values than residuals, the matched manifold's case) it is the damped minimum-norm
    Gauss-Newton step ``-J^T (J J^T + mu s I)^{-1} r`` (quadratic convergence as ``mu -> 0``); otherwise
    ``-(J^T J + mu s I)^{-1} J^T r``; ``s`` the mean squared column norm of ``J``.
    """

    def solve(free):
        jf = jac[:, free]
        scale = max(float((jf ** 2).sum()) / max(jf.shape[1], 1), 1e-300)
        try:
            if jf.shape[1] >= jf.shape[0]:
                return -jf.T @ np.linalg.solve(jf @ jf.T + mu * scale * np.eye(jf.shape[0]), res)
            return -np.linalg.solve(jf.T @ jf + mu * scale * np.eye(jf.shape[1]), jf.T @ res)
        except np.linalg.LinAlgError:
            return -np.linalg.lstsq(jf, res, rcond=None)[0]

    step = solve(np.ones(theta.size, dtype=bool))
    free = _free(theta, step, lo, hi)
    if not free.all():
        step = np.zeros_like(theta)
        if free.any():
            step[free] = solve(free)
    new = theta + step
    out = ((new < lo) | (new > hi)) & free
    if out.any():  # values the step carries through a face go onto it; the others are solved again around them
        step = np.where(out, np.clip(new, lo, hi) - theta, 0.0)
        rest = free & ~out
        if rest.any():
            res = res + jac @ step  # ``solve`` reads it
            step[rest] = solve(rest)
    return np.clip(theta + step, lo, hi) - theta


@dataclass(frozen=True)
class _Search:
    """Knobs of the search on one trial (see :class:`StableWitness`)."""

    iterations: int
    margin: float
    beta: float
    tol: float
    deadline: float = float("inf")  # time.process_time() after which the search gives up (the trial's cap)

    def late(self) -> bool:
        return time.process_time() > self.deadline


def _correct(st: _Student, theta: np.ndarray, lo, hi, target: float, steps: int, mu: float
             ) -> tuple[np.ndarray, float, float]:
    """Projected LM from ``theta`` until the relative residual is below ``target`` (at most ``steps``):
    ``(theta, relative residual, damping)``."""
    res, jac, rel = st.evaluate(theta)
    for _ in range(steps):
        if rel < target or not np.isfinite(rel):
            break
        step = _lm_step(res, jac, mu, theta, lo, hi)
        new = theta + step
        res_n, jac_n, rel_n = st.evaluate(new)
        if rel_n < rel:
            theta, res, jac, rel, mu = new, res_n, jac_n, rel_n, max(mu / _LM_SHRINK, 1e-12)
        else:
            mu *= _LM_GAIN
            if mu > 1e12:
                break
    return theta, rel, mu


def _outputs(st: _Student, theta: np.ndarray) -> np.ndarray | None:
    """The student's outputs ``(n_out, m)`` at ``theta`` (None where ``I - W`` is singular)."""
    keep = st.y
    st.y = np.zeros_like(keep)
    res, _, _ = st.evaluate(theta)
    st.y = keep
    return None if not np.isfinite(res).all() else res.reshape(keep.shape[1], -1).T


def _descend(st: _Student, theta: np.ndarray, lo, hi, knobs: _Search, radius: float, inner: float,
             mu: float) -> tuple[np.ndarray, float, float, float]:
    """One step down the smoothed abscissa along the manifold ``F = st.y`` (null space of the free Jacobian), then
    LM corrections back onto it: ``(theta, top, radius, damping)``; ``theta`` unchanged where the corrected point
    falls off the manifold (the radius halves)."""
    value, top, grad = st.abscissa(theta, knobs.beta)
    _, jac, _ = st.evaluate(theta)
    free = _free(theta, -grad, lo, hi)
    if not free.any():
        return theta, top, 0.0, mu
    proj = _null_projection(jac[:, free], grad[free])  # directions that keep the outputs to first order
    norm = float(np.sqrt(proj @ proj))
    if norm <= 1e-12 * float(np.sqrt(grad @ grad)):  # the gradient lies in the row space: no descent direction
        return theta, top, 0.0, mu
    step = np.zeros_like(theta)
    step[free] = -min((value - (1.0 - knobs.margin) + knobs.margin) / norm, radius) * proj / norm
    new, rel, mu = _correct(st, np.clip(theta + step, lo, hi), lo, hi, inner, 20, mu)
    if not rel < inner:
        return theta, top, radius * 0.5, mu
    _, top_new, _ = st.abscissa(new, knobs.beta)
    if top < 1.0 <= top_new:  # crossed the pole of (I - W)^{-1}: the other side is another branch
        return theta, top, radius * 0.5, mu
    if top >= 1.0 and not top_new < top:  # from an unstable point (a lifted witness) only downhill steps
        return theta, top, radius * 0.5, mu
    return new, top_new, radius * (1.5 if top_new < top else 0.5), mu


def _search(st: _Student, start: np.ndarray, lo, hi, sigma: np.ndarray, knobs: _Search
            ) -> np.ndarray | None:
    """A stable match from a stable ``start``, or None.

    Continuation in the targets: ``start`` matches its own outputs ``Y0``; the targets move from ``Y0`` to the
    teacher's ``Y`` in steps, each predicted by the minimum-norm Gauss-Newton step and corrected by LM onto the
    manifold ``F = Y0 + t (Y - Y0)``, with the smoothed abscissa pushed down along that manifold whenever it
    rises above ``1 - margin``. A step whose corrected point falls off the manifold or crosses ``max Re = 1`` (the
    pole of ``(I - W)^{-1}``) is retried shorter. At ``t = 1``: abscissa descent until ``max Re < 1 - margin``.
    Where the straight path fails (it leaves the box, or meets a fold), LM goes straight to the teacher's
    manifold from ``start`` and descends the abscissa there (:func:`_on_manifold`). Gives up (None) once
    ``knobs.deadline`` has passed.
    """
    goal = 1.0 - knobs.margin
    theta = np.clip(start, lo, hi)
    own = _outputs(st, theta)
    if own is None:
        return None
    _, top, _ = st.abscissa(theta, knobs.beta)
    if not top < 1.0:
        return None
    teacher, inner = st.y, knobs.tol * 1e-1
    radius, mu, t, dt, used = 0.1 * float(np.linalg.norm(sigma)), 1e-6, 0.0, 0.25, 0
    try:
        while used < knobs.iterations and not knobs.late():
            used += 1
            if t >= 1.0:
                if top < goal:
                    return theta
                theta, top, radius, mu = _descend(st, theta, lo, hi, knobs, radius, inner, mu)
                if radius < 1e-10:
                    return None
                continue
            t_new = min(1.0, t + dt)
            st.y = own + t_new * (teacher - own)
            new, rel, mu_new = _correct(st, theta, lo, hi, inner, 12, mu)
            ok = rel < inner
            if ok:
                _, top_new, _ = st.abscissa(new, knobs.beta)
                ok = top_new < 1.0
            if not ok:
                dt *= 0.5
                if dt < 1e-6:
                    return None
                continue
            theta, top, t, mu, dt = new, top_new, t_new, mu_new, min(2.0 * dt, 1.0)
            while top >= goal and used < knobs.iterations and not knobs.late():  # keep away from the pole
                used += 1
                theta, top, radius, mu = _descend(st, theta, lo, hi, knobs, radius, inner, mu)
                if radius < 1e-10:
                    break
    finally:
        st.y = teacher
    if knobs.late():
        return None
    # the straight path left the box or met a fold: LM straight onto the teacher's manifold, then descend there
    return _on_manifold(st, start, lo, hi, sigma, knobs)


def _on_manifold(st: _Student, start: np.ndarray, lo, hi, sigma: np.ndarray, knobs: _Search
                 ) -> np.ndarray | None:
    """LM from ``start`` onto the teacher's manifold, then down the smoothed abscissa along it until
    ``max Re < 1 - margin`` (None where LM does not reach the manifold, the descent stalls, or the deadline
    passes). ``start`` may be unstable (a lifted witness): from there only downhill steps are taken; a stable point
    never crosses ``max Re = 1``. Stalled: the radius below 1e-10, or :data:`STALL_STEPS` steps in a row that did
    not bring the abscissa below its lowest by :data:`STALL_DROP` (V1 continuous trial 4's refused match sits on
    the K face: its descent crept at 1.544 with radii of 1e-8 to 1e-9 until the 30 s cap; it now gives up after
    7.7 s, and V1 steady, ei_isn_12 and the worm with gap junctions are bit-identical)."""
    inner = knobs.tol * 1e-1
    theta, rel, mu = _correct(st, np.clip(start, lo, hi), lo, hi, inner, knobs.iterations, 1e-6)
    if not rel < inner:
        return None
    _, top, _ = st.abscissa(theta, knobs.beta)
    radius = 0.1 * float(np.linalg.norm(sigma))
    best, flat = top, 0
    for _ in range(knobs.iterations):
        if top < 1.0 - knobs.margin:
            return theta
        if knobs.late():
            return None
        theta, top, radius, mu = _descend(st, theta, lo, hi, knobs, radius, inner, mu)
        if radius < 1e-10:
            return None
        flat = 0 if top < best - STALL_DROP else flat + 1
        best = min(best, top)
        if flat >= STALL_STEPS:  # the abscissa has stopped falling (e.g. held at a face of the box)
            return None
    return None


def linear_continuous(circuit) -> bool:
    """Whether ``circuit`` is linear continuous (stability ``max Re eig(T^-1 (W - I)) < 0``, Jacobians from the
    map's reverse mode): the circuits :func:`descend_refused` serves (linear steady ones have :class:`StableWitness`
    before the LM instead) and whose witnesses are Lyapunov-certified per loop."""
    from ..dynamics.continuous import Continuous

    return isinstance(circuit.dynamics, Continuous) and circuit.nonlinearity == "linear"


def descend_refused(batch: Batch, open_: np.ndarray, theta: np.ndarray, status: np.ndarray,
                    search: StableWitness | None = None) -> np.ndarray:
    """Stable matches found down the smoothed abscissa from the LM's refused (unstable) matches inside the box.

    The LM last in the chain ends a trial whose every match was unstable with its best refused match inside the
    box ``B`` (status ``unstable``). On a linear continuous circuit the outputs at the read-out times are entire in
    the weights (no pole at ``max Re = 1`` as a steady circuit's ``(I - W)^{-1}``), so the matched manifold goes on
    through the stability boundary: from such a match, steps along the manifold down the smoothed abscissa
    (:func:`_on_manifold`, downhill only) reach a stable match where the manifold within ``B`` holds one. Each one
    found is certified by a Lyapunov solve per loop (:meth:`_MapStudent.certified`).

    Parameters
    ----------
    batch : Batch
    open_ : numpy.ndarray
        ``(n,)`` the batch positions of the LM's trials.
    theta : numpy.ndarray
        ``(n, M)`` the LM's plastic values; updated in place where a stable match is found.
    status : numpy.ndarray
        ``(n,)`` the LM's fit status; the search starts from the ``unstable`` ones.
    search : StableWitness, optional
        Its ``iterations``, ``margin``, ``beta`` and ``seconds`` (the cap per trial, CPU); default
        ``StableWitness()``.

    Returns
    -------
    numpy.ndarray
        ``(n,)`` bool: a certified stable match was put in ``theta`` (its residual is the caller's to recompute).
    """
    from .chain import _on  # the chain imports this module to list its deciders

    search = StableWitness() if search is None else search
    found = np.zeros(status.shape, dtype=bool)
    start = np.flatnonzero(status == UNSTABLE)
    if start.size == 0:
        return found
    fmap, targets, _ = _on(batch, open_)
    circuit, n, m = batch.problem.circuit, open_.size, fmap.probes.shape[1]
    y_all = targets.reshape(n, m, -1).transpose(-1, -2).numpy()
    stability = circuit.dynamics.stability(circuit)
    lo, hi = batch_box(batch)
    with threadpool_limits(limits=max(1, torch.get_num_threads()), user_api="blas"):
        for p in start:
            st = _MapStudent(fmap.subset(torch.tensor([int(p)])), stability, y_all[p])
            knobs = _Search(search.iterations, search.margin, search.beta, batch.tol,
                            time.process_time() + search.seconds)
            got = _on_manifold(st, theta[p], lo, hi, batch.sigma, knobs)
            if got is not None and st.certified(got):
                theta[p], found[p] = got, True
    return found


@dataclass(frozen=True)
class StableWitness:
    """Stable matches of linear steady circuits, searched on the matched manifold and certified (module doc).

    Runs where the fit requires stability (the batch's ``admissible``) and plastic synapses sit in a recurrent
    loop (elsewhere no plastic value moves an eigenvalue and the LM's own check is the whole story). Before the
    LM in the chain: the trials it matches are ``proven_match`` (decision ``stable_witness``), the others stay
    open for the deciders after it.

    Attributes
    ----------
    box_lm : LevenbergMarquardt or None
        First, the toolkit's LM with these restart rounds inside the box ``B`` (sign box and ``K`` init SDs), all
        open trials batched: its stable matches are certified, its unstable matches inside ``B`` descended from
        (module doc, step 0); None: skipped. Its cost is bounded by its rounds, not by ``seconds``. The chain
        builds it with the requested solver's LM fields, :data:`BOX_RESTARTS` times its restarts per round and at
        most :data:`BOX_ROUNDS` rounds. More restarts in the box pay more than more rounds: each is another basin
        (V1 steady, 20 trials, restarts x rounds, two runs at a time, CPU for the whole chain: 4 x 2 (the default
        before), 10 decided, 151 s; 8 x 2, 11, 133 s; 8 x 3, 13, 134 s; 8 x 4, 13, 133 s; 12 x 3, 14, 142 s; 16 x 3,
        13, 192 s; 24 x 3, 13, 240 s; alone: 4 x 2, 10, 118 s; 12 x 3, 14, 117 s; earlier, 1 to 8 rounds of 4
        restarts decided 8 to 10). Where the box LM decides every trial anyway its extra restarts are spent for
        nothing (the worm with gap junctions and every chemical synapse plastic, 8 trials, restarts 1 -> 3: the
        same witnesses at 1.9 x the CPU; Fenyves signs without gap junctions, the same at 1.4 x). A second pass
        with the extra restarts on the trials the first left open cost more on V1 (alone: 4 x 2 then 12 x 3, 13
        decided, 170 s; 4 x 1 then 12 x 3, 12, 197 s).
    starts : int
        Then starts per trial: the student's own values (continuation in the targets), then the lifted witness
        (:mod:`~neurosubset.solvers.lifted`, the rates as unknowns; where it is unstable the abscissa is descended
        from it along the manifold, downhill only), then ``starts - 1`` random draws of the init moved into the box.
    box_starts : int
        Then starts spread over the box (uniform in it, or 3 init SDs wide, alternately): LM onto the manifold and
        downhill along it (on ei_isn with 12 recurrent synapses, stable matches that no continuation reached).
    iterations : int
        Manifold steps per start (and LM steps to reach the manifold).
    margin : float
        The search stops at ``max Re eig W < 1 - margin`` (room for the Lyapunov certificate).
    beta : float
        Softness of the smoothed abscissa.
    seconds : float
        Cap per trial in CPU seconds of the process (``time.process_time``: on a shared machine a wall-clock cap
        would make verdicts depend on the others' load), checked inside each start's steps. As SCIP's time limit,
        it makes a trial's verdict depend on the machine where it binds; a trial it cuts short stays open, never
        a guess. 30 s: the worm's certified witnesses took 8-60 s of wall time on the loaded 2-core machine; a
        trial it could not match cost 120-260 s before the cap was checked inside the steps.
    """

    box_lm: LevenbergMarquardt | None = field(default_factory=lambda: LevenbergMarquardt(
        restarts=BOX_RESTARTS * LevenbergMarquardt().restarts, max_rounds=BOX_ROUNDS))
    starts: int = 4
    box_starts: int = 16
    iterations: int = 200
    margin: float = 0.02
    beta: float = 20.0
    seconds: float = 30.0
    name: ClassVar[str] = "stable_witness"
    final: ClassVar[bool] = False
    records: ClassVar[bool] = False  # the result records the solver that would have run without it

    @classmethod
    def build(cls, lm: LevenbergMarquardt, dale: bool) -> StableWitness:
        return cls(box_lm=replace(lm, restarts=BOX_RESTARTS * lm.restarts,
                                  max_rounds=min(lm.max_rounds, BOX_ROUNDS)))

    def recorded(self, problem: Problem) -> None:
        return None

    def applicable(self, problem: Problem) -> bool:
        circuit, alloc = problem.circuit, problem.alloc
        if alloc.size == 0 or problem.zero or not lifting_applicable(circuit, alloc, LevenbergMarquardt()):
            return False
        return plastic_in_loops(circuit, alloc.counts)

    def decide(self, batch: Batch, open_: np.ndarray) -> Decided:
        from .chain import Decided, _on  # the chain imports this module to list it (the protocol: chain.Decider)

        fmap, targets, own = _on(batch, open_)
        n = open_.size
        theta, status = own.clone(), np.full(n, STALLED, dtype=np.int8)
        outcome = np.full(n, UNDECIDED, dtype=np.int8)
        decision = np.full(n, STABLE_WITNESS_DECISION, dtype=np.int8)
        if batch.admissible is None:  # no stability asked for: nothing to add to the LM's search
            return Decided(theta, torch.full((n,), float("nan"), dtype=targets.dtype), status, decision, outcome,
                           np.zeros(n, dtype=np.int64))
        alloc, bounds = batch.alloc, batch.bounds
        student, lifted_start = self._students(batch, fmap, targets)
        lo, hi = batch_box(batch)
        own_np, found = own.numpy(), np.zeros(n, dtype=bool)
        out = own_np.copy()
        boxed, boxed_status = self._box_lm(batch, open_, targets, lo, hi)
        with threadpool_limits(limits=max(1, torch.get_num_threads()), user_api="blas"):
            for p in range(n):
                st = student(p)
                rng = np.random.default_rng(np.random.SeedSequence(batch.seed,
                                                                   spawn_key=(SEED_KEY, int(batch.first + open_[p]))))
                began = time.process_time()
                knobs = _Search(self.iterations, self.margin, self.beta, batch.tol, began + self.seconds)
                if boxed is not None and boxed_status[p] in (MATCHED, UNSTABLE):  # the LM's match inside B
                    got = (boxed[p] if boxed_status[p] == MATCHED else
                           _on_manifold(st, boxed[p], lo, hi, batch.sigma, knobs))
                    if got is not None and st.certified(got):
                        out[p], found[p] = got, True
                        continue
                for s in range(self.starts + 1 + self.box_starts):
                    if s and knobs.late():
                        break
                    if s == 0:
                        got = _search(st, own_np[p], lo, hi, batch.sigma, knobs)
                    elif s == 1:  # the lifted witness (rates as unknowns; often unstable): descend from it
                        lifted = lifted_start(p, np.clip(own_np[p], lo, hi), lo, hi)
                        got = None if lifted is None else _on_manifold(st, lifted, lo, hi, batch.sigma, knobs)
                    elif s <= self.starts:
                        start = rng.normal(size=alloc.size) * batch.sigma
                        if bounds is not None:
                            start = bounds.inside(start)
                        got = _search(st, start, lo, hi, batch.sigma, knobs)
                    else:  # spread over the box: uniform, or 3 init SDs wide (alternately); LM, then downhill
                        wide = rng.uniform(lo, hi) if s % 2 else np.clip(rng.normal(size=alloc.size) * 3.0
                                                                         * batch.sigma, lo, hi)
                        got = _on_manifold(st, wide, lo, hi, batch.sigma, knobs)
                    if got is not None and st.certified(got):
                        out[p], found[p] = got, True
                        break
        out[~found] = own_np[~found]  # an open trial leaves with its own values
        theta = torch.as_tensor(out, dtype=targets.dtype)
        resid = _residuals(fmap, theta, targets)  # the toolkit's forward map on the assembled students
        ok = found & (resid.numpy() < batch.tol)
        if ok.any():
            hit = torch.as_tensor(np.flatnonzero(ok))
            ok[hit.numpy()] = np.asarray(batch.admissible(fmap.subset(hit), theta[hit]), dtype=bool)
        status[ok], outcome[ok] = MATCHED, PROVEN_MATCH
        return Decided(theta, resid, status, decision, outcome, np.zeros(n, dtype=np.int64))

    @staticmethod
    def _students(batch: Batch, fmap, targets: torch.Tensor):
        """``(student(p), lifted_start(p, start, lo, hi))`` over the open trials' map ``fmap``: each trial's
        :class:`_Student` and its lifted witness (the rates as unknowns, from ``start``; None where it does not
        match)."""
        circuit, alloc = batch.problem.circuit, batch.alloc
        n, m = targets.shape[0], fmap.probes.shape[1]
        y_all = targets.reshape(n, m, -1).transpose(-1, -2).numpy()
        stability = circuit.dynamics.stability(circuit)
        lay = _layout(circuit, alloc, m)
        neurons, inputs = list(circuit.slices(("hidden", "output"))), list(circuit.slices("input"))
        pos = circuit.slices(("hidden", "output"))
        loop_index = [np.concatenate([np.arange(pos[r].start, pos[r].stop) for r in loop.regions])
                      for loop in stability.loops()]
        a_all = block_matrix(circuit, fmap.frozen, neurons, neurons).numpy()
        b_all = block_matrix(circuit, fmap.frozen, neurons, inputs).numpy()
        x_all = fmap.probes.transpose(-1, -2).numpy()

        def lifted_start(p, start, lo, hi):
            lifted, lin = _lifted_trial(lay, a_all[p], b_all[p], x_all[p], y_all[p], start, lo, hi, batch.tol)
            return lifted if lin <= batch.tol and np.isfinite(lifted).all() else None

        return (lambda p: _Student(lay, a_all[p], b_all[p], x_all[p], y_all[p], loop_index)), lifted_start

    def _box_lm(self, batch: Batch, open_: np.ndarray, targets: torch.Tensor, lo: np.ndarray, hi: np.ndarray
                ) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Step 0 (module doc): the LM's restart rounds inside ``[lo, hi]`` on the open trials, with the fit's
        stability requirement: ``(theta (n, M), status (n,))`` (``matched``: an admissible match; ``unstable``: the
        best refused match inside the box), or ``(None, None)`` where :attr:`box_lm` is None."""
        if self.box_lm is None:
            return None, None
        work = batch.work()
        if open_.size < batch.trials:
            work = work.subset(torch.as_tensor(open_).to(batch.device))
        # its own restart stream: the chain's last LM searches the same box from stream 1 (4241636), and would
        # otherwise repeat these rounds start for start
        fit = multistart(work, targets.to(batch.device), batch.sigma, self.box_lm, seed=batch.seed, tol=batch.tol,
                         bounds=Bounds(lo, hi), admissible=batch.admissible, trial_ids=batch.first + open_,
                         stream=BOX_STREAM)
        return fit.theta.cpu().numpy(), np.asarray(fit.status)
