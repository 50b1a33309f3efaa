"""Batched solvers for ``F(theta) = target`` over many independent problems at once.

- :func:`solve_affine`: exact batched least squares when ``F`` is affine in ``theta``.
- :func:`levenberg_marquardt`: batched damped Gauss-Newton for the general (polynomial / rational) case.

Problems never interact: each row of every tensor is one problem, and a problem's trajectory does not depend on
which other problems share the batch.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .dynamics import PlasticMap

_LAMBDA_MIN, _LAMBDA_MAX = 1e-15, 1e10  # damping range (relative to diag(J^T J)); at the top: no descent left
# A problem whose cost fell by less than this fraction over a window of iterations sits at a non-zero minimum:
# converging problems measured on the benchmark workloads fall by >= 10% per 25 iterations even when creeping.
_STALL_WINDOW, _STALL_DECREASE = 25, 1e-6


def relative_residual(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``||outputs - targets|| / ||targets||`` per problem, shapes ``(problem, E) -> (problem,)``."""
    return torch.linalg.vector_norm(outputs - targets, dim=-1) / torch.linalg.vector_norm(targets, dim=-1).clamp_min(
        torch.finfo(targets.dtype).tiny)


def solve_affine(fmap: PlasticMap, targets: torch.Tensor) -> torch.Tensor:
    """Least-squares plastic values for an affine ``F``: ``theta = argmin ||F(0) + J theta - target||``.

    Parameters
    ----------
    fmap : PlasticMap
        Over ``problem`` problems, affine in ``theta`` (``F(theta) = F(0) + J theta`` exactly).
    targets : torch.Tensor
        ``(problem, E)``.

    Returns
    -------
    torch.Tensor
        ``(problem, M)``: the minimum-norm least-squares solution (SVD-based LAPACK ``gelsd``).
    """
    n = targets.shape[0]
    zero = targets.new_zeros((n, fmap.size))
    if fmap.size == 0:
        return zero
    jac = fmap.jacobian(zero)
    rhs = (targets - fmap(zero)).unsqueeze(-1)
    # gelsd (SVD), not gelsy: torch 2.13's gelsy returns wrong solutions on structured sparse Jacobians
    # (a single layer's, e.g.), while gelsd, gelss and scipy's gelsy agree (tests/test_benchmark.py)
    return torch.linalg.lstsq(jac, rhs, driver="gelsd").solution.squeeze(-1)


@dataclass(frozen=True)
class LMResult:
    """Outcome of one batched Levenberg-Marquardt run.

    Attributes
    ----------
    theta : torch.Tensor
        ``(problem, M)`` final plastic values.
    residual : torch.Tensor
        ``(problem,)`` relative residual ``||F(theta) - target|| / ||target||``.
    iterations : torch.Tensor
        ``(problem,)`` iterations each problem ran before it converged, stalled or hit the cap.
    """

    theta: torch.Tensor
    residual: torch.Tensor
    iterations: torch.Tensor


def levenberg_marquardt(fmap: PlasticMap, owner: torch.Tensor, targets: torch.Tensor, theta0: torch.Tensor, *,
                        steps: int = 200, stop: float = 1e-11) -> LMResult:
    """Batched Levenberg-Marquardt: minimise ``||F(theta) - target||^2`` for each problem independently.

    Parameters
    ----------
    fmap : PlasticMap
        The map over ``trial`` problems (frozen weights and probes of each trial).
    owner : torch.Tensor
        ``(problem,)`` long: which trial of ``fmap`` each problem (a restart) belongs to.
    targets : torch.Tensor
        ``(problem, E)`` teacher outputs.
    theta0 : torch.Tensor
        ``(problem, M)`` starting points.
    steps : int
        Maximum iterations.
    stop : float
        A problem stops once its relative residual is below this (well under the match tolerance, so matched
        residuals sit at rounding level); so do the other restarts of its trial. A problem also stops when its
        damping hits the ceiling (no descent direction left) or its cost fell by less than a 1e-6 fraction over
        the last 25 iterations (stalled at a non-zero minimum).

    Returns
    -------
    LMResult

    Notes
    -----
    Marquardt's scaled step ``delta = -(J^T J + mu D)^{-1} J^T r`` with ``D = diag(J^T J)``, and Nielsen's
    damping update: after an accepted step ``mu *= max(1/3, 1 - (2 rho - 1)^3)`` (``rho`` = actual / predicted
    decrease), after a rejected one ``mu *= nu, nu *= 2``. On the linear-RNN benchmark workload this matched
    0.95 of trials in one round of 4 restarts, against 0.88 for an unscaled ``mu I`` damping with a fixed update.
    """
    theta = theta0.clone()
    n, size = theta.shape
    tiny = torch.finfo(theta.dtype).tiny
    norm_t = torch.linalg.vector_norm(targets, dim=-1).clamp_min(tiny)
    resid = fmap(theta, owner) - targets
    cost = (resid**2).sum(-1)
    mu = torch.full((n,), 1e-3, dtype=theta.dtype)
    nu = torch.full((n,), 2.0, dtype=theta.dtype)
    iters = torch.zeros(n, dtype=torch.long)
    active = torch.arange(n)
    checkpoint = cost.clone()  # cost at the last stall check
    done_trial = torch.zeros(int(owner.max()) + 1 if n else 0, dtype=torch.bool)
    for it in range(steps):
        rel = cost[active].sqrt() / norm_t[active]
        done_trial[owner[active[rel <= stop]]] = True
        keep = (rel > stop) & (mu[active] < _LAMBDA_MAX) & torch.isfinite(rel) & ~done_trial[owner[active]]
        if it and it % _STALL_WINDOW == 0:
            # stalled at a non-zero minimum: less than a 1e-6 relative decrease of the cost over the window
            keep &= cost[active] < (1 - _STALL_DECREASE) * checkpoint[active]
            checkpoint[active] = cost[active]
        active = active[keep]
        if active.numel() == 0:
            break
        th, r, c = theta[active], resid[active], cost[active]
        jac = fmap.jacobian(th, owner[active])
        jtj = jac.transpose(-1, -2) @ jac
        grad = (jac.transpose(-1, -2) @ r.unsqueeze(-1)).squeeze(-1)
        diag = jtj.diagonal(dim1=-2, dim2=-1)
        scale = diag.clamp_min(1e-12 * diag.amax(-1, keepdim=True).clamp_min(tiny))
        mat = jtj + torch.diag_embed(mu[active].unsqueeze(-1) * scale)
        delta = -torch.linalg.solve_ex(mat, grad.unsqueeze(-1))[0].squeeze(-1)
        th_new = th + delta
        r_new = fmap(th_new, owner[active]) - targets[active]
        c_new = (r_new**2).sum(-1)
        predicted = c - ((r + (jac @ delta.unsqueeze(-1)).squeeze(-1)) ** 2).sum(-1)
        rho = (c - c_new) / predicted.clamp_min(tiny)
        accept = torch.isfinite(c_new) & (c_new < c)
        a_idx = active[accept]
        theta[a_idx] = th_new[accept]
        resid[a_idx] = r_new[accept]
        cost[a_idx] = c_new[accept]
        mu_a, nu_a = mu[active], nu[active]
        shrink = torch.clamp(1 - (2 * rho - 1) ** 3, min=1 / 3).nan_to_num(1 / 3)
        mu[active] = torch.where(accept, (mu_a * shrink).clamp_min(_LAMBDA_MIN), mu_a * nu_a)
        nu[active] = torch.where(accept, torch.full_like(nu_a, 2.0), nu_a * 2)
        iters[active] += 1
    return LMResult(theta, cost.sqrt() / norm_t, iters)
