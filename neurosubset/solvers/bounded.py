"""Sign bounds on the plastic values (Dale's law) and the exact bounded decider for affine outputs.

A plastic synapse from a region with ``sign = s`` keeps ``s * w >= 0`` while it is fitted: its value lies in
``[0, inf)`` for ``s = +1``, ``(-inf, 0]`` for ``s = -1`` and is free for ``sign = None`` (:func:`sign_bounds`).

- Affine outputs, ``F(theta) = F(0) + J theta`` exactly: :func:`solve_bounded` solves, per trial, the bounded
  least-squares problem ``min ||J theta - (target - F(0))||`` over the box (scipy ``lsq_linear``, BVLS). The
  problem is convex, so its minimum decides the trial: matched iff the relative residual recomputed from the
  assembled student weights is below ``tol``. Where BVLS stops above ``tol``, a HiGHS LP feasibility solve of
  ``J theta = rhs`` inside the box proposes a second candidate, judged the same way: the LP's own tolerances never
  decide.
- Other outputs: the Levenberg-Marquardt of :mod:`.lm` takes the box (``lower``/``upper``) and projects its steps
  onto it; the restarts of :mod:`.multistart` are drawn inside it (:meth:`Bounds.inside`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..allocation import Allocation
from ..circuit import Circuit
from ..dynamics import PlasticMap
from .._schema import INFEASIBLE, NO_SOLUTION
from .lm import relative_residual, solve_affine, trial_status

__all__ = ["Bounds", "sign_bounds", "solve_bounded", "solve_exact"]


@dataclass(frozen=True)
class Bounds:
    """A box ``lower <= theta <= upper`` on the plastic values.

    Attributes
    ----------
    lower, upper : numpy.ndarray
        ``(M,)`` float64; ``-inf`` / ``inf`` where a value is free.
    """

    lower: np.ndarray
    upper: np.ndarray

    @property
    def active(self) -> bool:
        """Whether any value is bounded (an inactive box leaves every solver on its unconstrained path)."""
        return bool(np.isfinite(self.lower).any() or np.isfinite(self.upper).any())

    def tensors(self, dtype: torch.dtype, device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(lower, upper)`` as torch tensors ``(M,)`` (on ``device``, default the CPU)."""
        return (torch.as_tensor(self.lower, dtype=dtype, device=device),
                torch.as_tensor(self.upper, dtype=dtype, device=device))

    def inside(self, starts: np.ndarray) -> np.ndarray:
        """Random starts ``(..., M)`` moved into the box by sign: ``|z|`` on ``[0, inf)``, ``-|z|`` on ``(-inf, 0]``,
        then onto its nearest face where a finite bound is passed (the plausibility box: the LM needs its start
        inside; a sign box alone is left as the sign moved it).

        A start drawn ``N(0, s^2)`` becomes a half-normal draw of the same scale, which is how the circuit's own
        init draws a signed synapse.
        """
        out = np.where(self.lower >= 0, np.abs(starts), starts)
        return np.clip(np.where(self.upper <= 0, -np.abs(out), out), self.lower, self.upper)

    def reach(self, sigma: np.ndarray) -> np.ndarray:
        """``(M,)`` how far the box reaches from 0 along each value, in units of ``sigma`` ``(M,)`` (the init
        SDs): ``max(|lower|, |upper|) / sigma``, ``inf`` where a side is unbounded."""
        return np.maximum(np.abs(self.lower), np.abs(self.upper)) / sigma

    def violations(self, theta: np.ndarray) -> np.ndarray:
        """``(...)`` int64: how many values of ``theta`` ``(..., M)`` lie outside the box."""
        return ((theta < self.lower) | (theta > self.upper)).sum(-1).astype(np.int64)


def sign_bounds(circuit: Circuit, alloc: Allocation) -> Bounds:
    """The Dale's-law box of ``alloc``'s plastic values, in the order of ``theta`` (weights in declaration order).

    Returns
    -------
    Bounds
        Per plastic synapse: ``[0, inf)`` if its presynaptic region has ``sign = +1``, ``(-inf, 0]`` for ``-1``,
        free for ``None``; a projection's per-synapse signs (``Projection.signs``, from data) the same way.
    """
    from ..distribution import synapse_signs

    lower, upper = [], []
    for name in circuit.weight_names:
        proj = circuit.projection[name]
        sign = circuit.region[proj.pre].sign
        n = alloc.counts[name]
        each = np.full(n, 0 if sign is None else sign)
        if proj.signs:  # per-synapse signs from data, in the order of theta (row-major plastic entries)
            each = synapse_signs(proj, circuit.shape(name)).reshape(-1)[alloc.indices[name]]
        lower.append(np.where(each == 1, 0.0, -np.inf))
        upper.append(np.where(each == -1, 0.0, np.inf))
    return Bounds(np.concatenate(lower), np.concatenate(upper))


def solve_bounded(fmap: PlasticMap, targets: torch.Tensor, bounds: Bounds, *, tol: float) -> torch.Tensor:
    """Per-trial bounded least squares for an affine ``F``: ``argmin ||F(theta) - target||`` over the box.

    Parameters
    ----------
    fmap : PlasticMap
        Over ``trial`` problems, affine in ``theta``.
    targets : torch.Tensor
        ``(trial, E)``.
    bounds : Bounds
    tol : float
        Match tolerance on the relative residual: a trial whose BVLS solution stays at or above it also gets an LP
        feasibility candidate, kept if its recomputed residual is lower.

    Returns
    -------
    torch.Tensor
        ``(trial, M)`` plastic values inside the box (values are put back on their bound only where the solver left
        them outside by round-off, see :func:`_onto`; the residual is recomputed from these values).
    """
    from scipy.optimize import linprog, lsq_linear

    n = targets.shape[0]
    zero = targets.new_zeros((n, fmap.size))
    if fmap.size == 0:
        return zero
    jac = fmap.jacobian(zero).numpy()
    rhs = (targets - fmap(zero)).numpy()
    box = (bounds.lower, bounds.upper)
    theta = np.stack([lsq_linear(jac[i], rhs[i], bounds=box, method="bvls", tol=1e-14).x for i in range(n)])
    theta = _onto(theta, bounds)
    resid = relative_residual(fmap(torch.as_tensor(theta, dtype=targets.dtype)), targets).numpy()
    lp_bounds = [(None if np.isinf(lo) else lo, None if np.isinf(hi) else hi) for lo, hi in zip(*box)]
    for i in np.flatnonzero(~(resid < tol)):
        lp = linprog(np.zeros(fmap.size), A_eq=jac[i], b_eq=rhs[i], bounds=lp_bounds, method="highs")
        if lp.status != 0:  # infeasible (2) or failed: BVLS's minimum stands
            continue
        cand = _onto(lp.x[None], bounds)
        sel = torch.tensor([i])
        rel = float(relative_residual(fmap.subset(sel)(torch.as_tensor(cand, dtype=targets.dtype)), targets[sel]))
        if rel < resid[i]:
            theta[i], resid[i] = cand[0], rel
    return torch.as_tensor(theta, dtype=targets.dtype)


def solve_exact(fmap: PlasticMap, targets: torch.Tensor, bounds: Bounds | None, *,
                tol: float) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """The exact decider for affine outputs: ``(theta, residual, status)`` per trial.

    Without ``bounds``: least squares (:func:`~neurosubset.solvers.lm.solve_affine`), unmatched trials
    ``no_solution``. With ``bounds``: :func:`solve_bounded`; an unmatched trial is ``infeasible`` where the
    unbounded least squares matches (solvable, but not with these signs) and ``no_solution`` where even that fails.
    The residual is recomputed from the assembled student weights.
    """
    theta = solve_affine(fmap, targets)
    resid = relative_residual(fmap(theta), targets)
    if bounds is None:
        return theta, resid, trial_status(resid, tol, unmatched=NO_SOLUTION)
    free = resid.numpy() < tol
    theta = solve_bounded(fmap, targets, bounds, tol=tol)
    resid = relative_residual(fmap(theta), targets)
    return theta, resid, trial_status(resid, tol, unmatched=np.where(free, INFEASIBLE, NO_SOLUTION).astype(np.int8))


_ROUNDOFF = 1e-9  # relative to the largest |value| of the trial; measured BVLS overshoots: <= 1.1e-16


def _onto(theta: np.ndarray, bounds: Bounds) -> np.ndarray:
    """Put values that BVLS / HiGHS left outside the box by round-off back on their bound.

    Both solvers keep bounded values at the bound or inside up to rounding (measured on the E/I read-out workloads:
    at most 1.1e-16 of the trial's largest value); anything larger would be a solver failure, not round-off, and
    raises instead of being clipped.
    """
    out = np.clip(theta, bounds.lower, bounds.upper)
    scale = np.maximum(np.abs(theta).max(-1, keepdims=True), 1.0)
    if (np.abs(out - theta) > _ROUNDOFF * scale).any():
        raise RuntimeError("A bounded least-squares solution left the sign box by more than round-off; this is a "
                           "solver failure, please report it.")
    return out
