"""Proofs of no match within the sign box and the plausibility box (neurosubset.solvers.proofs).

References are independent of the code under test: a brute-force grid (plus a bounded local refinement) of the
relative residual over the plausibility box, computed from a dense numpy solve of the fixed point assembled in numpy
(conftest.steady_outputs); and closed-form LPs for the rational Farkas check.
"""
from __future__ import annotations

import numpy as np
import pytest
from conftest import steady_outputs
from scipy.optimize import minimize

import neurosubset as ns
from neurosubset import _schema
from neurosubset.benchmark import draw_trials
from neurosubset.solvers.proofs import farkas_certificate

TOL = 1e-8  # the toolkit's default match tolerance
# a trial proven unmatchable must sit far from tol on the grid: unmatched residuals of these tiny circuits are O(1),
# matched ones at rounding level; 1e-4 leaves four decades on each side
GRID_FLOOR = 1e-4
K = 100.0  # the default plausibility bound

TINY = {"name": "tiny", "dynamics": "steady", "nonlinearity": "linear", "seed": 0,
        "regions": {"X": {"size": 2, "role": "input"}, "E": {"size": 3, "role": "hidden", "sign": 1},
                    "I": {"size": 1, "role": "hidden", "sign": -1}, "OUT": {"size": 1, "role": "output"}},
        "projections": [{"pre": "X", "post": "E", "p": 1.0, "gain": 1.0},
                        {"pre": "E", "post": "E", "p": 1.0, "gain": 0.3},
                        {"pre": "E", "post": "I", "p": 1.0, "gain": 0.5},
                        {"pre": "I", "post": "E", "p": 1.0, "gain": 0.5},
                        {"pre": "E", "post": "OUT", "p": 1.0, "gain": 1.0}]}


def _grid_min(circuit, alloc, draws, i, lo, hi):
    """Smallest relative residual over the box (a grid of 201 points per plastic value, then L-BFGS-B from the
    five best), by the reference fixed-point solve (conftest.steady_outputs)."""
    teacher = {k: v[i] for k, v in draws.teacher.items()}
    y_t, _ = steady_outputs(circuit, teacher, draws.probes[i])
    where = [(k, r, c) for k in circuit.weight_names for r, c in zip(*np.nonzero(alloc.masks[k]))]

    def resid(theta):
        w = {k: v[i].copy() for k, v in draws.student_init.items()}
        for (k, r, c), t in zip(where, theta):
            w[k][r, c] = t
        try:
            y, _ = steady_outputs(circuit, w, draws.probes[i])
        except np.linalg.LinAlgError:
            return np.inf
        return float(np.linalg.norm(y - y_t) / np.linalg.norm(y_t))

    axes = [np.linspace(a, b, 201) for a, b in zip(lo, hi)]
    pts = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, len(axes))
    vals = np.array([resid(t) for t in pts])
    best = min(vals.min(), *[minimize(resid, pts[j], method="L-BFGS-B", bounds=list(zip(lo, hi))).fun
                             for j in np.argsort(vals)[:5]])
    return best


def _box(circuit, alloc):
    sigma = circuit.init_scale(alloc)
    signs = [circuit.region[circuit.projection[k].pre].sign for k in circuit.weight_names
             for _ in range(alloc.counts[k])]
    lo = np.array([0.0 if s == 1 else -K * sg for s, sg in zip(signs, sigma)])
    hi = np.array([0.0 if s == -1 else K * sg for s, sg in zip(signs, sigma)])
    return lo, hi


@pytest.mark.slow
# one plastic value and two probes: two equations in one unknown, generically no match (all 8 proven); two values:
# matches exist (some unstable: those trials stay undecided, stability is not encoded in the proofs)
@pytest.mark.parametrize(("budget", "least"), [(1, 8), (2, 1)])
def test_each_proven_no_match_agrees_with_a_brute_force_grid_within_k(budget, least):
    circuit = ns.Circuit.from_dict(TINY)
    alloc = ns.allocate(circuit, budget, within=["E->E"], seed=1)
    trials, m = 8, 2
    res = ns.fit(circuit, alloc, m=m, trials=trials, seed=0)
    draws = draw_trials(circuit, m, trials, 0, stable=True)
    lo, hi = _box(circuit, alloc)
    proofs = np.flatnonzero(res.outcome == _schema.PROVEN_NO_MATCH)
    assert proofs.size >= least, res.outcome
    for i in proofs:
        assert res.decision[i] in (_schema.SIGN_CONE_DECISION, _schema.BRANCH_AND_BOUND_DECISION), res.decision
        assert res.proof_kind[i] in (_schema.SIGN_CONE_PROOF, _schema.BRANCH_AND_BOUND_PROOF), res.proof_kind
        best = _grid_min(circuit, alloc, draws, i, lo, hi)
        assert best > GRID_FLOOR, f"trial {i}: proven no match, yet the grid reaches residual {best:.2e}"
    for i in np.flatnonzero(res.outcome == _schema.PROVEN_MATCH):  # the witness itself, re-solved here
        _witness_holds(circuit, res, draws, i, lo, hi)


def _witness_holds(circuit, res, draws, i, lo, hi):
    y_t, _ = steady_outputs(circuit, {k: v[i] for k, v in draws.teacher.items()}, draws.probes[i])
    y_s, w = steady_outputs(circuit, {k: v[i] for k, v in res.student.items()}, draws.probes[i])
    rel = np.linalg.norm(y_s - y_t) / np.linalg.norm(y_t)
    assert rel < TOL, f"trial {i}: witness residual {rel:.2e}"
    assert ((res.theta[i] >= lo) & (res.theta[i] <= hi)).all(), (res.theta[i], lo, hi)
    if res.stable:
        assert np.linalg.eigvals(w).real.max() < 1.0


@pytest.mark.slow
def test_every_small_trial_is_decided_and_each_verdict_holds_the_grid():
    # one plastic synapse, one probe: a match exists iff the teacher's output lies on the reachable side; the grid
    # decides it here independently (a univariate residual)
    circuit = ns.Circuit.from_dict(TINY)
    alloc = ns.allocate(circuit, 1, within=["E->E"], seed=1)
    # Dale only: every witness SCIP finds counts (with stability required an unstable one leaves its trial open)
    res = ns.fit(circuit, alloc, m=1, trials=6, seed=3, stable=False)
    draws = draw_trials(circuit, 1, 6, 3, stable=False)
    lo, hi = _box(circuit, alloc)
    for i in range(6):
        best = _grid_min(circuit, alloc, draws, i, lo, hi)
        if res.outcome[i] == _schema.PROVEN_NO_MATCH:
            assert best > GRID_FLOOR, (i, best)
        elif res.outcome[i] == _schema.PROVEN_MATCH:
            assert best < GRID_FLOOR, (i, best)
            _witness_holds(circuit, res, draws, i, lo, hi)
        assert res.outcome[i] != _schema.UNDECIDED, res.outcome  # such a small case is always decided


def test_farkas_certificate_on_closed_form_lps():
    # 0 <= t <= 1 and t >= 2 (-t <= -2): empty; y = 1 proves it (min over the box of -t is -1 > -2)
    a, c = np.array([[-1.0]]), np.array([-2.0])
    assert farkas_certificate(a, c, np.array([0.0]), np.array([1.0]), np.array([1.0]))
    # t >= 0.5 in the same box is feasible: no multiplier proves it empty
    for y in (0.5, 1.0, 3.0):
        assert not farkas_certificate(a, np.array([-0.5]), np.array([0.0]), np.array([1.0]), np.array([y]))
    # x + y <= 1 and x + y >= 3 in [0, 2]^2: empty, y = (1, 1) sums to 0 <= -2 (exact); zero multipliers prove nothing
    a2, c2 = np.array([[1.0, 1.0], [-1.0, -1.0]]), np.array([1.0, -3.0])
    assert farkas_certificate(a2, c2, np.zeros(2), np.full(2, 2.0), np.array([1.0, 1.0]))
    assert not farkas_certificate(a2, c2, np.zeros(2), np.full(2, 2.0), np.zeros(2))
    # exactness: 0.1 + 0.2 > 0.3 in floats but the check must use the floats' exact values (1/10 is not a float):
    # t <= 0.3 and t >= 0.1 + 0.2 with t in [0, 1]; the float 0.1 + 0.2 is 0.30000000000000004 > 0.3: empty exactly
    a3, c3 = np.array([[1.0], [-1.0]]), np.array([0.3, -(0.1 + 0.2)])
    assert farkas_certificate(a3, c3, np.array([0.0]), np.array([1.0]), np.array([1.0, 1.0]))
    a4, c4 = np.array([[1.0], [-1.0]]), np.array([0.3, -0.3])  # t = 0.3 feasible
    assert not farkas_certificate(a4, c4, np.array([0.0]), np.array([1.0]), np.array([1.0, 1.0]))


@pytest.mark.slow
def test_the_row_lps_and_scip_agree_where_the_lps_decide():
    # two plastic values of one row, two probes: the row LP (pinned presynaptic rates) and SCIP on the whole lifted
    # problem are two formulations; every trial the LP refutes SCIP must refute too, and SCIP finds no point there
    from neurosubset.solvers.proofs import BranchAndBound, SignConeLP

    trials = 8
    batch = _tiny_batch(2, 2, trials)
    lp = SignConeLP().decide(batch, np.arange(trials))
    bb = BranchAndBound(seconds=20.0).decide(batch, np.arange(trials))
    refuted = lp.outcome == _schema.PROVEN_NO_MATCH
    assert refuted.any(), lp.outcome
    assert (bb.outcome[refuted] == _schema.PROVEN_NO_MATCH).all(), (lp.outcome, bb.outcome)
    assert not ((bb.outcome == _schema.PROVEN_MATCH) & refuted).any()


def _tiny_batch(budget, m, trials):
    """The decider batch of TINY's first ``trials`` draws (seed 0, Dale's box, no stability requirement)."""
    import torch

    from neurosubset.dynamics import PlasticMap, forward
    from neurosubset.solvers.bounded import sign_bounds
    from neurosubset.solvers.chain import Batch, Problem

    circuit = ns.Circuit.from_dict(TINY)
    alloc = ns.allocate(circuit, budget, within=["E->E"], seed=1)
    d = draw_trials(circuit, m, trials, 0, stable=True)
    t = (lambda a: torch.as_tensor(a, dtype=torch.float64))
    fmap = PlasticMap(circuit, alloc, {k: t(v) for k, v in d.student_init.items()}, t(d.probes))
    targets = forward(circuit, {k: t(v) for k, v in d.teacher.items()}, fmap.probes).flatten(-2)
    own = t(np.concatenate([d.student_init[k].reshape(trials, -1)[:, alloc.indices[k]] for k in circuit.weight_names],
                           -1))
    return Batch(Problem(circuit, alloc, m, trials, affine=False, signed=True), fmap, lambda: fmap, targets, own,
                 alloc, circuit.init_scale(alloc), sign_bounds(circuit, alloc), None, TOL, 0, 0)


@pytest.mark.slow
def test_scip_runs_its_root_node_only_above_root_only_unknowns():
    # TINY, 2 probes: 4 hidden rates x 2 + M unknowns (10 or 11). Below root_only (the default 500) the whole search
    # runs, as with root_only=None; root_only=0 makes every problem "large": SCIP's root node only, without its NLP
    # heuristics. Proofs SCIP gives at the root stay (2 plastic values: trials 0, 5, 7, 1 node each); a proof that
    # needs branching (3 values, trial 7: 65 nodes) and a witness found by an NLP heuristic (trial 2) are left open,
    # recorded as a trial out of time is (stalled, branch_and_bound, undecided)
    from neurosubset.solvers.proofs import BranchAndBound

    for budget, open_, whole_says, root_says in (
            (2, [0, 5, 7], [_schema.PROVEN_NO_MATCH] * 3, [_schema.PROVEN_NO_MATCH] * 3),
            (3, [2, 7], [_schema.PROVEN_MATCH, _schema.PROVEN_NO_MATCH], [_schema.UNDECIDED] * 2)):
        batch = _tiny_batch(budget, 2, 8)
        whole = BranchAndBound(seconds=5.0, root_only=None).decide(batch, np.array(open_))
        default = BranchAndBound(seconds=5.0).decide(batch, np.array(open_))
        root = BranchAndBound(seconds=5.0, root_only=0).decide(batch, np.array(open_))
        assert whole.outcome.tolist() == whole_says, (budget, whole.outcome)
        assert default.outcome.tolist() == whole_says, (budget, default.outcome)
        assert root.outcome.tolist() == root_says, (budget, root.outcome)
        left = root.outcome == _schema.UNDECIDED
        assert (root.status[left] == _schema.STALLED).all()
        assert (root.decision == _schema.BRANCH_AND_BOUND_DECISION).all()


@pytest.mark.slow
def test_a_bracket_with_proofs_within_k_says_so():
    circuit = ns.Circuit.from_dict(TINY)
    alloc = ns.allocate(circuit, 1, within=["E->E"], seed=1)
    ds = ns.match_probability(circuit, alloc, m=2, trials=4, seed=0, certificate=False)
    assert (ds.outcome.values == _schema.PROVEN_NO_MATCH).all()  # one value, two probes: no match (grid test above)
    assert ds.attrs["plausibility_bound"] == K
    assert "within K" in ds.mp_upper.attrs["comment"]
    assert set(ds.proof_kind.values) <= {_schema.SIGN_CONE_PROOF, _schema.BRANCH_AND_BOUND_PROOF}


def test_an_error_inside_scip_leaves_the_trial_open_instead_of_ending_the_fit():
    # TINY, 3 E->E values, 1 probe, K = 0.5: on trial 0 SCIP stops with an internal error ("cannot change upper
    # bound of variable to minus infinity", pyscipopt: "SCIP: error in input data!"), which ended the whole fit
    import dataclasses

    from neurosubset.solvers.proofs import BranchAndBound

    batch = dataclasses.replace(_tiny_batch(3, 1, 2), plausibility_bound=0.5)
    got = BranchAndBound(seconds=5.0).decide(batch, np.array([0, 1]))
    assert got.outcome[0] == _schema.UNDECIDED and got.status[0] == _schema.STALLED  # no proof, no witness
    assert got.decision.tolist() == [_schema.BRANCH_AND_BOUND_DECISION] * 2
    alone = BranchAndBound(seconds=5.0).decide(batch, np.array([1]))  # the other trial's verdict is its own
    assert got.outcome[1] == alone.outcome[0] and got.status[1] == alone.status[0]


def test_the_bracket_counts_only_witnesses_within_the_plausibility_bound():
    # the bracket holds within K: a proven match whose largest plastic value lies beyond K init SDs proves MP > 0
    # (mp counts it) but no match within K, so mp_lower leaves it out; the reference is scipy's Wilson interval
    # (level 0.95, as mp_bracket's one-sided 0.975 limits) of counts made here
    from types import SimpleNamespace

    import scipy.stats

    from neurosubset.results import _bracket_variables

    match, no, open_ = _schema.PROVEN_MATCH, _schema.PROVEN_NO_MATCH, _schema.UNDECIDED
    outcome = np.array([match, match, match, match, no, no, open_, match], dtype=np.int8)
    scale = np.array([3.0, 100.0, 146.4, 99.999999, np.nan, np.nan, np.nan, 1e4])
    kind = np.where(outcome == match, _schema.WITNESS_PROOF,
                    np.where(outcome == no, _schema.SIGN_CONE_PROOF, _schema.NO_PROOF)).astype(np.int8)
    res = SimpleNamespace(outcome=outcome, witness_scale=scale, proof_kind=kind)

    def wilson_low(k, n):
        return scipy.stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson").low

    out = _bracket_variables(res, 100.0)
    within = 3  # 3.0, 100.0 (on the box's face) and 99.999999; not 146.4 nor 1e4
    assert out["mp_lower"][1] == pytest.approx(wilson_low(within, 8), abs=1e-12)
    assert out["mp_upper"][1] == pytest.approx(1 - wilson_low(2, 8), abs=1e-12)
    assert "2 proven matches" in out["mp_lower"][2]["comment"]
    wide = _bracket_variables(res, 1e4)  # every witness within K and nothing open but trial 6
    assert wide["mp_lower"][1] == pytest.approx(wilson_low(5, 8), abs=1e-12)
    assert "comment" not in wide["mp_lower"][2]
    decided = SimpleNamespace(outcome=np.array([match, no], dtype=np.int8), witness_scale=np.array([2.0, np.nan]),
                              proof_kind=np.array([_schema.WITNESS_PROOF, _schema.SIGN_CONE_PROOF], dtype=np.int8))
    ref = scipy.stats.binomtest(1, 2).proportion_ci(confidence_level=0.95, method="wilson")
    both = _bracket_variables(decided, 100.0)  # all decided within K: the two-sided interval
    assert (both["mp_lower"][1], both["mp_upper"][1]) == pytest.approx((ref.low, ref.high), abs=1e-12)
    beyond = _bracket_variables(SimpleNamespace(outcome=decided.outcome, witness_scale=np.array([200.0, np.nan]),
                                                proof_kind=decided.proof_kind), 100.0)
    assert beyond["mp_lower"][1] == 0.0 and beyond["mp_upper"][1] == pytest.approx(1 - wilson_low(1, 2), abs=1e-12)
