"""Exact per-trial deciders beyond least squares, chosen by :class:`~neurosubset.solvers.Auto` where they apply.

- :class:`ReluFeasibility`: a shallow ReLU net ``y = W2 relu(W1 x)`` whose plastic synapses are all in ``W1`` (the
  read-out ``W2`` frozen, no sign bounds on them). Hidden unit ``u`` with plastic set ``A_u`` has pre-activations
  ``p_u = X w_u^0 + X_{A_u} delta_u`` on the probes. The residual each probe leaves after the frozen units is
  ``r_j = y*_j - sum_{u frozen} W2[:, u] relu(p_{u j})``.

  * ``"cone"`` (every plastic unit has ``|A_u| >= m`` synapses, so ``X_{A_u}`` has rank ``m`` and ``p_u`` is free
    in ``R^m``): solvable iff every ``r_j`` lies in the cone of the plastic units' read-out columns ``W2[:, P]``,
    one LP per probe (HiGHS).
  * ``"patterns"``: otherwise, every activation pattern ``s in {0, 1}^(P x m)`` that each unit's affine space of
    pre-activations can realise (each unit's realisable patterns found by LPs first) gives one LP in ``delta``
    (``p_{uj} >= 0`` where active, ``<= 0`` where not, ``sum_u W2[:, u] s_{uj} p_{uj} = r_j``); applied only where
    a bound on the LP count (:func:`pattern_bound`) is at most :data:`MAX_LPS` per trial and
  :data:`MAX_TOTAL_LPS` over the call's trials.

  A trial is matched only if plastic values built from the LP solution reproduce the teacher with the relative
  residual recomputed from the assembled student weights below ``tol``; an infeasible LP system proves
  ``no_solution``.
- :class:`UnivariateRoots`: one plastic synapse of a discrete linear circuit: the outputs are polynomials in the
  value ``theta`` (degree <= T + 1), their coefficients propagated exactly through the recursion; the candidates are
  the real roots of one non-constant equation (:func:`real_roots`), each judged by the recomputed residual.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from math import comb
from typing import Any, ClassVar

import numpy as np
import torch

from .._schema import CONE_DECISION, MATCHED, NO_SOLUTION, PATTERN_DECISION, ROOTS_DECISION, STALLED
from ..dynamics import Discrete, Feedforward
from ..dynamics.blocks import block_matrix
from .lm import relative_residual

MAX_LPS = 10_000  # LPs per trial the pattern enumeration may need (the bound for an exact decision)
# ... and per call, over all trials: a HiGHS LP costs ~1-3 ms here, so 5e4 LPs bound a call at about two minutes
MAX_TOTAL_LPS = 50_000

__all__ = ["ReluFeasibility", "UnivariateRoots", "MAX_LPS", "relu_applicable", "roots_applicable", "real_roots",
           "pattern_bound", "exact_decider", "solve_decider", "solve_relu", "solve_roots", "output_polynomials"]


@dataclass(frozen=True)
class ReluFeasibility:
    """Exact feasibility of a shallow ReLU net with plastic synapses feeding units with a frozen read-out.

    Parameters
    ----------
    mode : {"cone", "patterns"}
        The cone LP (plastic pre-activations free on the ``m`` probes) or the activation-pattern enumeration.
    """

    mode: str = "cone"
    name: ClassVar[str] = "relu_lp"

    def to_attrs(self) -> dict[str, Any]:
        """Plain attrs: ``solver`` and ``mode``."""
        return {"solver": self.name, "mode": self.mode}


@dataclass(frozen=True)
class UnivariateRoots:
    """Exact decision for one plastic synapse of a discrete linear circuit: the real roots of a polynomial."""

    name: ClassVar[str] = "roots"

    def to_attrs(self) -> dict[str, Any]:
        """Plain attrs: ``{"solver": "roots"}``."""
        return {"solver": self.name}


# ---------------------------------------------------------------------------------------------- applicability
def _shallow(circuit) -> tuple[str, str] | None:
    """``(W1, W2)`` names of a single-hidden-layer ReLU chain, else None."""
    if (not isinstance(circuit.dynamics, Feedforward) or circuit.nonlinearity != "relu"
            or len(circuit.weight_names) != 2):
        return None
    first, second = (circuit.projection[w] for w in circuit.weight_names)
    roles = [circuit.region[r].role for r in (first.pre, first.post, second.post)]
    if roles != ["input", "hidden", "output"] or second.pre != first.post or len(circuit.regions) != 3:
        return None
    return first.name, second.name


def pattern_bound(k: np.ndarray, m: int) -> int:
    """Upper bound on the LPs of the pattern enumeration: per unit, the realisability LPs ``2^m`` plus, over units,
    the product of the sign patterns an affine space of dimension ``k_u`` can realise,
    ``sum_{i <= k_u} C(m, i)`` (hyperplane-arrangement count)."""
    per = [sum(comb(m, i) for i in range(min(int(ku), m) + 1)) for ku in k]
    return int(len(per) * 2**m + np.prod(per, dtype=float))


def relu_applicable(circuit, alloc, m: int, signed: bool, trials: int = 1) -> ReluFeasibility | None:
    """The ReLU decider for this allocation and ``m``, or None where none applies (or the LP bound exceeds
    :data:`MAX_LPS` per trial or :data:`MAX_TOTAL_LPS` over ``trials``)."""
    names = _shallow(circuit)
    if names is None or signed or alloc.counts[names[1]] or alloc.size == 0:
        return None
    k = alloc.masks[names[0]].sum(axis=1)
    k = k[k > 0]
    if (k >= m).all():
        return ReluFeasibility("cone")
    if m <= 20 and pattern_bound(k, m) <= MAX_LPS and trials * pattern_bound(k, m) <= MAX_TOTAL_LPS:
        return ReluFeasibility("patterns")
    return None


def roots_applicable(circuit, alloc) -> UnivariateRoots | None:
    """The univariate decider: one plastic synapse of a discrete linear circuit."""
    if alloc.size == 1 and isinstance(circuit.dynamics, Discrete) and circuit.nonlinearity == "linear":
        return UnivariateRoots()
    return None


def exact_decider(circuit, alloc, m: int, signed: bool, trials: int = 1):
    """The exact decider :class:`Auto` picks for a non-affine allocation, or None (then the LM runs)."""
    return relu_applicable(circuit, alloc, m, signed, trials) or (None if signed else roots_applicable(circuit, alloc))


# ---------------------------------------------------------------------------------------------- ReLU
def _lp_feasible(a_eq, b_eq, a_ub=None, b_ub=None, bounds=None) -> np.ndarray | None:
    from scipy.optimize import linprog

    n = a_eq.shape[1] if a_eq is not None else a_ub.shape[1]
    res = linprog(np.zeros(n), A_ub=a_ub, b_ub=b_ub, A_eq=a_eq, b_eq=b_eq, bounds=bounds, method="highs")
    return res.x if res.status == 0 else None


def _relu_trial(x: np.ndarray, w1: np.ndarray, w2: np.ndarray, mask: np.ndarray, target: np.ndarray, mode: str
                ) -> np.ndarray | None:
    """Plastic values (row-major over ``mask``) reproducing ``target`` ``(m, d_out)``, or None if infeasible."""
    plastic = np.flatnonzero(mask.any(axis=1))
    frozen_units = np.setdiff1d(np.arange(w1.shape[0]), plastic)
    w1 = np.where(mask, 0.0, w1)
    resid = target - np.maximum(x @ w1[frozen_units].T, 0.0) @ w2[:, frozen_units].T  # (m, d_out)
    base = x @ w1[plastic].T  # (m, P) pre-activations at delta = 0
    cols = [np.flatnonzero(mask[u]) for u in plastic]
    m, n_p = x.shape[0], plastic.size
    if mode == "cone":
        pre = np.empty((m, n_p))
        for j in range(m):
            z = _lp_feasible(w2[:, plastic], resid[j], bounds=[(0, None)] * n_p)
            if z is None:
                return None
            pre[j] = np.where(z > 0, z, -1.0)  # inactive units get a negative pre-activation
        deltas = [np.linalg.lstsq(x[:, c], pre[:, i] - base[:, i], rcond=None)[0] for i, c in enumerate(cols)]
        return _scatter(mask, plastic, deltas)
    # patterns: the realisable sign patterns of each unit, then one LP per combination
    offsets = np.cumsum([0] + [c.size for c in cols])
    per_unit = []
    for i, c in enumerate(cols):
        ok = []
        for s in itertools.product((0, 1), repeat=m):
            sign = np.where(np.array(s) == 1, -1.0, 1.0)  # active: -p <= 0; inactive: p <= 0
            a_ub = sign[:, None] * x[:, c]
            if _lp_feasible(None, None, a_ub, -sign * base[:, i], bounds=[(None, None)] * c.size) is not None:
                ok.append(np.array(s))
        per_unit.append(ok)
    n_var = int(offsets[-1])
    for combo in itertools.product(*per_unit):
        a_ub, b_ub = [], []
        a_eq = np.zeros((m * w2.shape[0], n_var))
        b_eq = resid.reshape(-1).copy()
        for i, (c, s) in enumerate(zip(cols, combo)):
            blk = np.zeros((m, n_var))
            blk[:, offsets[i]:offsets[i + 1]] = x[:, c]
            sign = np.where(s == 1, -1.0, 1.0)
            a_ub.append(sign[:, None] * blk)
            b_ub.append(-sign * base[:, i])
            for o in range(w2.shape[0]):  # sum_u W2[o, u] s_uj (base_uj + x_j delta_u) = r_jo
                a_eq[o::w2.shape[0]] += w2[o, plastic[i]] * s[:, None] * blk
                b_eq[o::w2.shape[0]] -= w2[o, plastic[i]] * s * base[:, i]
        sol = _lp_feasible(a_eq, b_eq, np.concatenate(a_ub), np.concatenate(b_ub), [(None, None)] * n_var)
        if sol is not None:
            return _scatter(mask, plastic, [sol[offsets[i]:offsets[i + 1]] for i in range(n_p)])
    return None


def _scatter(mask, plastic, deltas) -> np.ndarray:
    full = np.zeros(mask.shape)
    for u, d in zip(plastic, deltas):
        full[u, mask[u]] = d
    return full[mask]


def solve_relu(fmap, targets: torch.Tensor, decider: ReluFeasibility, names: tuple[str, str], mask: np.ndarray,
               *, tol: float) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """Per trial: ``(theta, residual, status)`` of the ReLU feasibility decider (see the module docstring)."""
    w1 = fmap.frozen[names[0]].numpy()
    w2 = fmap.frozen[names[1]].numpy()
    x = fmap.probes.numpy()
    tgt = targets.numpy().reshape(x.shape[0], x.shape[1], -1)
    n = x.shape[0]
    theta = np.zeros((n, fmap.size))
    feasible = np.zeros(n, dtype=bool)
    for i in range(n):
        sol = _relu_trial(x[i], w1[i], w2[i], mask, tgt[i], decider.mode)
        if sol is not None:
            theta[i], feasible[i] = sol, True
    th = torch.as_tensor(theta, dtype=targets.dtype)
    resid = relative_residual(fmap(th), targets)
    # feasible by the LP but not reproduced from the constructed values: undecided, counted unmatched (stalled)
    status = np.where(resid.numpy() < tol, MATCHED, np.where(feasible, STALLED, NO_SOLUTION)).astype(np.int8)
    return th, resid, status


# ---------------------------------------------------------------------------------------------- univariate roots
def real_roots(coeffs: np.ndarray, *, imag_tol: float = 1e-7) -> np.ndarray:
    """Real roots of ``sum_d coeffs[d] theta^d`` (ascending coefficients): eigenvalues of the companion matrix,
    those within ``imag_tol (1 + |z|)`` of the real axis, polished by Newton steps on the real line."""
    c = np.trim_zeros(np.asarray(coeffs, dtype=float), "b")
    scale = np.abs(c).max() if c.size else 0.0
    while c.size and abs(c[-1]) <= 1e-14 * scale:
        c = c[:-1]
    if c.size <= 1:
        return np.zeros(0)
    deg = c.size - 1
    comp = np.zeros((deg, deg))
    comp[0, :] = -c[-2::-1] / c[-1]
    comp[1:, :-1] = np.eye(deg - 1)
    z = np.linalg.eigvals(comp)
    r = z.real[np.abs(z.imag) <= imag_tol * (1 + np.abs(z))]
    dc = c[1:] * np.arange(1, c.size)
    for _ in range(4):
        val, der = np.polyval(c[::-1], r), np.polyval(dc[::-1], r)
        step = np.where(der != 0, val / np.where(der != 0, der, 1.0), 0.0)
        r = r - step
    return np.sort(r)


def output_polynomials(fmap, targets: torch.Tensor, steps: int) -> np.ndarray:
    """``(trial, E, D + 1)`` ascending coefficients of ``F(theta) - target`` for one plastic synapse (discrete)."""
    circuit = fmap.circuit
    n = targets.shape[0]
    w0 = fmap.weights(targets.new_zeros((n, 1)))
    w1 = fmap.weights(targets.new_ones((n, 1)))
    hid, inp, out = ([r.name for r in circuit.regions if r.role == role] for role in ("hidden", "input", "output"))
    blk = {}  # block -> (value at theta = 0, its derivative in theta): every block is affine in one synapse
    for key, rows, cols in (("a", hid, hid), ("b", hid, inp), ("c", out, hid), ("d", out, inp)):
        lo = block_matrix(circuit, w0, rows, cols)
        blk[key] = (lo, block_matrix(circuit, w1, rows, cols) - lo)
    x = fmap.probes  # (n, m, T, n_in)
    deg = steps + 2
    h = x.new_zeros((n, deg, blk["a"][0].shape[-1], x.shape[1]))  # (trial, degree, N_h, m)

    def mul(pair, poly):  # (A0 + theta A1) poly, poly (n, deg, r, m)
        a0, a1 = pair
        res = a0.unsqueeze(1) @ poly
        res[:, 1:] += (a1.unsqueeze(1) @ poly)[:, :-1]
        return res

    for t in range(steps):
        xt = x[:, :, t, :].transpose(-1, -2).unsqueeze(1)  # (n, 1, n_in, m)
        drive = x.new_zeros(h.shape)
        drive[:, :1] = blk["b"][0].unsqueeze(1) @ xt
        drive[:, 1:2] = blk["b"][1].unsqueeze(1) @ xt
        h = mul(blk["a"], h) + drive
    y = mul(blk["c"], h)
    xt = x[:, :, -1, :].transpose(-1, -2).unsqueeze(1)  # read-outs may also see the last step's inputs
    y[:, :1] += blk["d"][0].unsqueeze(1) @ xt
    y[:, 1:2] += blk["d"][1].unsqueeze(1) @ xt
    coef = y.permute(0, 3, 2, 1).reshape(n, -1, deg).clone()  # (n, m * n_out, deg), probe-major
    coef[:, :, 0] -= targets
    return coef.numpy()


def solve_roots(fmap, targets: torch.Tensor, *, tol: float, bounds=None) -> tuple[torch.Tensor, torch.Tensor,
                                                                               np.ndarray]:
    """Per trial: the real root (of the equation with the largest coefficients) that best reproduces the teacher,
    judged by the recomputed residual; ``no_solution`` where no real root does."""
    coef = output_polynomials(fmap, targets, fmap.circuit.steps)
    n = coef.shape[0]
    best = np.zeros(n)
    for i in range(n):
        varying = np.abs(coef[i, :, 1:]).max(axis=1)
        e = int(np.argmax(varying))
        cand = real_roots(coef[i, e]) if varying[e] > 0 else np.zeros(1)
        if bounds is not None:
            cand = cand[(cand >= bounds.lower[0]) & (cand <= bounds.upper[0])]
        if cand.size == 0:
            best[i] = np.nan
            continue
        sel = torch.full((cand.size,), i, dtype=torch.long)
        res = relative_residual(fmap.subset(sel)(torch.as_tensor(cand[:, None], dtype=targets.dtype)),
                                targets[sel]).numpy()
        best[i] = cand[int(np.argmin(res))]
    th = torch.as_tensor(np.nan_to_num(best)[:, None], dtype=targets.dtype)
    resid = relative_residual(fmap(th), targets)
    status = np.where(resid.numpy() < tol, MATCHED, NO_SOLUTION).astype(np.int8)
    return th, resid, status


def solve_decider(decider, fmap, targets: torch.Tensor, alloc, bounds, *, tol: float
                  ) -> tuple[torch.Tensor, torch.Tensor, np.ndarray, int]:
    """Run an exact decider on every trial: ``(theta, residual, status, decision)`` (``decision`` a
    :data:`neurosubset._schema.DECISION` number)."""
    if isinstance(decider, ReluFeasibility):
        names = tuple(fmap.circuit.weight_names)
        out = solve_relu(fmap, targets, decider, names, alloc.masks[names[0]], tol=tol)
        return (*out, CONE_DECISION if decider.mode == "cone" else PATTERN_DECISION)
    return (*solve_roots(fmap, targets, tol=tol, bounds=bounds), ROOTS_DECISION)
