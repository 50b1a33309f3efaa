"""The lifted decider on sparse rows (:class:`~neurosubset.solvers.chain.LiftedRates` for the sparse weights layout).

The dense lifted decider (:mod:`neurosubset.solvers.lifted`) takes the rates ``R`` on the ``m`` probes as unknowns
beside the plastic values and solves the necessary linear equations of the fixed rows by a dense SVD over all hidden
rates: ``(N_hidden m)^2`` memory, out of reach at ``10^4`` neurons. On sparse rows it keeps the part that needs no
dense algebra, the witness of *free read-out rows*:

1. the hidden rates follow from the hidden rows at the student's own plastic values ``theta_0`` and the teacher's
   outputs ``Y`` as the output rates: ``(I - A_hh) R_h = A_ho Y + B_h X`` (one sparse solve per probe, splu or
   GMRES as :class:`~neurosubset.dynamics.sparse_map.SparseSteady`), so every hidden row holds;
2. each output row with plastic synapses then needs ``Y_r = w_r [R; X]``: least squares in its plastic values,
   closest to ``theta_0`` (BVLS inside Dale's box where that leaves it). A *free* row (plastic synapses from at
   least ``m`` distinct presynaptic cells, whose rates have rank ``m``) always solves;
3. the student assembled from those values is checked by the sparse forward map: below ``tol`` it is a witness
   (``matched``, exact). Otherwise the trial stays undecided (``stalled``) for the LM: this decider finds
   solutions and never refutes (the necessary-equation refutations of the dense decider need its dense SVD).

This decides every trial of a read-out allocation with rows free at ``m`` (e.g. circuits/balanced_ei.toml, read-out
plus an E->E allocation, ``m = 4``): ``O(m)`` sparse solves per trial instead of LM iterations.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse
import scipy.sparse.linalg
import torch

from .._schema import MATCHED, STALLED
from ..dynamics.sparse import GMRES_RTOL, gmres_columns
from .lm import relative_residual

__all__ = ["solve_lifted_sparse"]


def _hidden_rates(system, values: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """All rates ``(N, m)`` with the outputs held at ``y`` ``(n_out, m)`` and the hidden rows solved."""
    full, b = system.matrices(values)  # I - A, B
    n = system.n
    out = system.out_idx
    hidden = np.setdiff1d(np.arange(n), out)
    rates = np.empty((n, x.shape[0]))
    rates[out] = y
    if hidden.size:
        rhs = np.asarray(b[hidden] @ x.T) - np.asarray(full[hidden][:, out] @ y)  # A_ho Y + B_h X
        sub = full[hidden][:, hidden].tocsr()
        if system.method == "gmres":
            rates[hidden] = gmres_columns(sub, rhs, GMRES_RTOL)
        else:
            try:
                rates[hidden] = scipy.sparse.linalg.splu(sub.tocsc()).solve(rhs)
            except RuntimeError:
                rates[hidden] = np.nan
    return rates


def _trial(system, values: np.ndarray, x: np.ndarray, y: np.ndarray, theta0: np.ndarray,
           lower: np.ndarray | None, upper: np.ndarray | None) -> np.ndarray:
    """Plastic values ``(M,)`` of the free-read-out construction (``theta_0`` on every row but the outputs')."""
    from scipy.optimize import lsq_linear

    theta = theta0.copy()
    rates = _hidden_rates(system, values, x, y)
    if not np.isfinite(rates).all():
        return theta
    z = np.concatenate([rates, x.T], axis=0)  # presynaptic activity (N + n_in, m)
    full, b = system.matrices(values)  # frozen values (plastic ones at theta_0 are added below per row)
    post, pre = system.post, system.pre
    for row_pos, r in enumerate(system.out_idx):
        ks = np.flatnonzero(post == r)
        if not ks.size:
            continue
        g = z[pre[ks]].T  # (m, |ks|)
        # the row's drive from everything but its plastic synapses: frozen recurrent and input weights
        rest = -(full[r] @ rates).ravel() + rates[r] + np.asarray(b[r] @ x.T).ravel()
        rest = rest - g @ theta0[ks]  # `values` holds theta_0 at the plastic entries
        need = y[row_pos] - rest
        theta[ks] = theta0[ks] + np.linalg.lstsq(g, need - g @ theta0[ks], rcond=None)[0]
        if lower is not None and ((theta[ks] < lower[ks]).any() or (theta[ks] > upper[ks]).any()):
            theta[ks] = lsq_linear(g, need, bounds=(lower[ks], upper[ks]), method="bvls").x
    return theta


def solve_lifted_sparse(fmap, targets: torch.Tensor, theta0: torch.Tensor, alloc, bounds, *, tol: float
                        ) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """The free-read-out witness on every trial of a :class:`~neurosubset.dynamics.sparse_map.SparsePlasticMap`.

    Parameters
    ----------
    fmap : SparsePlasticMap
    targets : torch.Tensor
        ``(trial, m * n_out)`` teacher outputs, probe-major.
    theta0 : torch.Tensor
        ``(trial, M)`` the students' own plastic values.
    alloc : Allocation
    bounds : Bounds or None
        Dale's box (None: free).
    tol : float

    Returns
    -------
    tuple
        ``theta (trial, M)``, ``residual (trial,)`` recomputed by the sparse forward map, ``status (trial,)`` int8
        matched (a witness) or stalled (undecided: handed on).
    """
    system = fmap.system
    trials, m = fmap.probes.shape[:2]
    lower = upper = None
    th0 = theta0.detach().cpu().numpy().copy()
    if bounds is not None and bounds.active:
        lower, upper = bounds.lower, bounds.upper
        th0 = np.clip(th0, lower, upper)
    values = fmap.values(torch.as_tensor(th0))
    x_all = fmap.probes.detach().cpu().numpy()
    y_all = targets.detach().cpu().numpy().reshape(trials, m, -1).transpose(0, 2, 1)  # (trial, n_out, m)
    theta = np.stack([_trial(system, values[p], x_all[p], y_all[p], th0[p], lower, upper) for p in range(trials)]) \
        if trials else th0
    theta_t = torch.as_tensor(theta, dtype=targets.dtype)
    resid = relative_residual(fmap(theta_t), targets).nan_to_num(float("inf"))
    status = np.where(resid.numpy() < tol, MATCHED, STALLED).astype(np.int8)
    return theta_t, resid, status
