"""Exact deciders (neurosubset.solvers.exact) against references written here.

- ReLU cone criterion: for a 6-12-1 net with two whole rows of W1 plastic and m <= d_in, the plastic units'
  pre-activations are free, so trial i is solvable iff every probe's residual r_j (teacher minus the frozen units)
  is 0 or has the sign of some plastic unit's read-out weight (the cone of scalars w2_u, d_out = 1).
- Activation patterns: an LP per pattern over all 2^(P m) patterns (no pruning), scipy linprog, written here.
- Univariate roots: polynomials with known real roots against numpy.roots; the RNN output polynomial against
  numpy.polyfit of the forward map.
"""
from __future__ import annotations

import itertools
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.optimize import linprog

import neurosubset as ns
from neurosubset.benchmark import draw_trials
from neurosubset.dynamics import DTYPE, forward
from neurosubset.solvers import exact

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "analysis"))


def _two_rows(net, rows):
    mask = np.zeros(net.shape("W1"), dtype=bool)
    mask[list(rows)] = True
    return ns.Allocation.from_masks(net, {"W1": mask}, strategy="rows")


def _relu_residuals(net, alloc, draws):
    mask = alloc.masks["W1"]
    plastic = mask.any(axis=1)
    x = draws.probes  # (trial, m, d_in)
    t1, t2 = draws.teacher["W1"], draws.teacher["W2"]
    s1, s2 = draws.student_init["W1"], draws.student_init["W2"]
    y_t = np.einsum("toh,tmh->tmo", t2, np.maximum(np.einsum("thd,tmd->tmh", t1, x), 0))
    frozen = np.maximum(np.einsum("thd,tmd->tmh", s1, x), 0) * ~plastic
    return y_t - np.einsum("toh,tmh->tmo", s2, frozen), s2[:, 0, plastic]


def test_relu_cone_decision_equals_the_sign_criterion():
    net = ns.feedforward([6, 12, 1], "relu")
    alloc = _two_rows(net, [3, 7])
    m, trials = 6, 100
    ds = ns.match_probability(net, alloc, m=m, trials=trials, seed=0, certificate=False)
    draws = draw_trials(net, m, trials, 0)
    r, w = _relu_residuals(net, alloc, draws)
    r = r[..., 0]
    ok = np.all((np.abs(r) < 1e-12) | ((r[..., None] * w[:, None, :]) > 0).any(-1), axis=1)
    assert ds.attrs["decision_kind"] == "exact" and set(ds.decision.values) == {2}  # cone_lp
    assert np.array_equal(ds.matched.values, ok), f"library {int(ds.matched.sum())}, criterion {int(ok.sum())}"
    assert 0 < ok.sum() < trials


def _pattern_reference(x, s1, s2, mask, r):
    """Brute force over every activation pattern: one LP each (variables: all plastic values)."""
    plastic = np.flatnonzero(mask.any(axis=1))
    cols = [np.flatnonzero(mask[u]) for u in plastic]
    off = np.cumsum([0] + [c.size for c in cols])
    base = x @ np.where(mask, 0, s1)[plastic].T
    m = x.shape[0]
    for pattern in itertools.product((0, 1), repeat=plastic.size * m):
        pat = np.array(pattern).reshape(plastic.size, m)
        a_ub, b_ub, a_eq, b_eq = [], [], np.zeros((m, off[-1])), r.copy()
        for i, c in enumerate(cols):
            blk = np.zeros((m, off[-1]))
            blk[:, off[i]:off[i + 1]] = x[:, c]
            sgn = np.where(pat[i] == 1, -1.0, 1.0)
            a_ub.append(sgn[:, None] * blk)
            b_ub.append(-sgn * base[:, i])
            a_eq += s2[0, plastic[i]] * pat[i][:, None] * blk
            b_eq -= s2[0, plastic[i]] * pat[i] * base[:, i]
        res = linprog(np.zeros(off[-1]), A_ub=np.concatenate(a_ub), b_ub=np.concatenate(b_ub), A_eq=a_eq,
                      b_eq=b_eq, bounds=[(None, None)] * off[-1], method="highs")
        if res.status == 0:
            return True
    return False


@pytest.mark.slow
def test_relu_pattern_enumeration_equals_brute_force():
    net = ns.feedforward([2, 3, 1], "relu")
    alloc = _two_rows(net, [1])  # one unit, 2 plastic synapses, m = 3 > 2: pre-activations not free
    m, trials = 3, 30
    assert isinstance(exact.relu_applicable(net, alloc, m, False), exact.ReluFeasibility)
    ds = ns.match_probability(net, alloc, m=m, trials=trials, seed=1, certificate=False)
    assert set(ds.decision.values) == {3} and ds.attrs["decision_kind"] == "exact"  # activation_patterns
    draws = draw_trials(net, m, trials, 1)
    r, _ = _relu_residuals(net, alloc, draws)
    ref = np.array([_pattern_reference(draws.probes[i], draws.student_init["W1"][i], draws.student_init["W2"][i],
                                       alloc.masks["W1"], r[i, :, 0]) for i in range(trials)])
    assert np.array_equal(ds.matched.values, ref), (ds.matched.values.astype(int), ref.astype(int))
    assert 0 < ref.sum() < trials


@pytest.mark.parametrize("roots, quadratics", [([1.0], []), ([-2.0, 0.5, 3.0], [1.0]), ([], [2.0, 0.3]),
                                               ([-1.0, -0.9, 4.0, 7.5], [0.5])])
def test_real_roots_match_numpy_roots(roots, quadratics):
    poly = np.array([1.0])  # descending, numpy convention
    for r in roots:
        poly = np.polymul(poly, [1.0, -r])
    for q in quadratics:  # x^2 + q, no real root
        poly = np.polymul(poly, [1.0, 0.0, q])
    got = exact.real_roots(2.5 * poly[::-1])
    ref = np.roots(poly)
    ref = np.sort(ref[np.abs(ref.imag) < 1e-9].real)
    assert got.size == len(roots) == ref.size, (got, ref)
    np.testing.assert_allclose(got, np.sort(roots), atol=1e-9)
    np.testing.assert_allclose(got, ref, atol=1e-9)


def test_univariate_decider_on_one_rnn_synapse():
    rnn = ns.linear_rnn(3, 1, 1, steps=4)
    mask = {k: np.zeros(rnn.shape(k), dtype=bool) for k in rnn.weight_names}
    mask["W"][1, 2] = True
    alloc = ns.Allocation.from_masks(rnn, mask, strategy="one")
    m, trials = 1, 60  # E = 1 = dim V: a univariate polynomial equation per trial
    ds = ns.match_probability(rnn, alloc, m=m, trials=trials, seed=2, certificate=False)
    assert set(ds.decision.values) == {4} and ds.attrs["decision_kind"] == "exact"
    draws = draw_trials(rnn, m, trials, 2)
    ref = []
    for i in range(trials):  # the output as a polynomial of degree <= 3 in the value: numpy.polyfit at 6 points
        grid = np.linspace(-2, 2, 6)
        w = {k: np.repeat(draws.student_init[k][i][None], grid.size, 0).copy() for k in rnn.weight_names}
        w["W"][:, 1, 2] = grid
        y = forward(rnn, {k: torch.as_tensor(v, dtype=DTYPE) for k, v in w.items()},
                    torch.as_tensor(np.repeat(draws.probes[i][None], grid.size, 0), dtype=DTYPE))[:, 0, 0].numpy()
        y_t = forward(rnn, {k: torch.as_tensor(v[i], dtype=DTYPE) for k, v in draws.teacher.items()},
                      torch.as_tensor(draws.probes[i], dtype=DTYPE))[0, 0].item()
        coef = np.polyfit(grid, y, 3)
        coef[-1] -= y_t
        while abs(coef[0]) < 1e-10 * np.abs(coef).max():  # an off-diagonal entry: the cubic term vanishes exactly
            coef = coef[1:]
        roots = np.roots(coef)
        ref.append(bool((np.abs(roots.imag) < 1e-9).any()))
    assert np.array_equal(ds.matched.values, np.array(ref)), (ds.matched.values.astype(int), np.array(ref, int))
    assert 0 < sum(ref) < trials  # degree 2 here: the teacher must lie on the reachable side of the extremum
