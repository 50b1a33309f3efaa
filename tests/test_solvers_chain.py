"""The decider chain: per-trial outcomes against independent references, the MP bracket against the Wilson formula
written out here, and a new decider registered as one class in a chain.

References: numpy least squares on the affine read-out problem (a trial matches iff the lstsq residual is below tol,
and an affine problem's unmatched trial is a proof); the Wilson score limits computed in this file from their
closed form (z = 1.959963984540054 for level 0.975).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

import neurosubset as ns
from neurosubset import _schema
from neurosubset.benchmark import draw_trials
from neurosubset.dynamics import PlasticMap, forward
from neurosubset.results import mp_bracket
from neurosubset.solvers.chain import (AffineLeastSquares, Batch, Decided, Decider, LevenbergMarquardtRounds,
                                       Problem, decider_chain, run_chain)
from neurosubset.solvers.lm import relative_residual

ROOT = Path(__file__).resolve().parents[1]
Z = 1.959963984540054  # the standard normal's 0.975 quantile


def _wilson_low(k: int, n: int) -> float:
    """Wilson score lower limit at level 0.975 (one-sided), from its closed form."""
    p = k / n
    centre = p + Z**2 / (2 * n)
    half = Z * np.sqrt(p * (1 - p) / n + Z**2 / (4 * n**2))
    return max(0.0, (centre - half) / (1 + Z**2 / n))


@pytest.mark.parametrize("a,b,n", [(3, 4, 10), (0, 0, 8), (5, 0, 5), (0, 7, 7), (2, 6, 8), (12, 3, 20)])
def test_the_bracket_is_the_wilson_limits_of_witnesses_and_proofs(a, b, n):
    lower, upper = mp_bracket(a, b, n)
    assert lower == pytest.approx(_wilson_low(a, n), abs=1e-12)
    assert upper == pytest.approx(1.0 - _wilson_low(b, n), abs=1e-12)
    if a + b == n:  # nothing undecided: today's 95% interval
        assert (lower, upper) == ns.wilson_interval(a, n)
    else:
        assert upper - lower > 0


def test_outcomes_of_an_affine_problem_follow_numpy_least_squares():
    c = ns.Circuit.from_toml(ROOT / "circuits" / "ca3_ca1.toml")
    m, trials = 8, 12
    for strategy, per_row_enough in (("spread-rows", True), ("concentrated-rows", False)):
        alloc = ns.allocate(c, 48, within=["CA3->CA1"], strategy=strategy, seed=0)
        ds = ns.match_probability(c, alloc, m=m, trials=trials, seed=3, dale=False, stable=False,
                                  return_weights=True)
        # independent: each trial's student read-out problem solved with numpy lstsq, row by row of CA3->CA1
        for t in range(trials):
            w = {k: ds[f"student_init_{_schema.var_name(k)}"].values[t] for k in c.weight_names}
            teacher = {k: ds[f"teacher_{_schema.var_name(k)}"].values[t] for k in c.weight_names}
            x = ds.probes.values[t]
            target = forward(c, {k: torch.as_tensor(v) for k, v in teacher.items()}, torch.as_tensor(x)).numpy()
            fmap = PlasticMap(c, alloc, {k: torch.as_tensor(v)[None] for k, v in w.items()}, torch.as_tensor(x)[None])
            zero = torch.zeros(1, alloc.size, dtype=torch.float64)
            base = fmap(zero)[0].numpy()
            jac = fmap.jacobian(zero)[0].numpy()
            theta = np.linalg.lstsq(jac, target.ravel() - base, rcond=None)[0]
            resid = np.linalg.norm(jac @ theta + base - target.ravel()) / np.linalg.norm(target)
            want = _schema.PROVEN_MATCH if resid < ns.DEFAULT_TOL else _schema.PROVEN_NO_MATCH
            assert ds.outcome.values[t] == want, (strategy, t, resid)
        assert (ds.outcome.values == _schema.PROVEN_MATCH).all() == per_row_enough
        assert ds.attrs["decision_kind"] == "exact"
        assert (float(ds.mp_lower), float(ds.mp_upper)) == (float(ds.mp_low), float(ds.mp_high))


def test_lm_witnesses_are_proven_matches_and_misses_undecided():
    c = ns.linear_rnn(6, 2, 2, steps=3)
    alloc = ns.allocate(c, 8, within=["W"], strategy="random", seed=1)
    ds = ns.match_probability(c, alloc, m=4, trials=6, seed=0, solver=ns.LevenbergMarquardt(max_rounds=1,
                                                                                            iterations=20))
    outcome, matched = ds.outcome.values, ds.matched.values
    np.testing.assert_array_equal(outcome == _schema.PROVEN_MATCH, matched)
    assert not (outcome == _schema.PROVEN_NO_MATCH).any()  # a local solver proves no absence
    assert ds.attrs["decision_kind"] == "lower bound"
    a = int(matched.sum())
    assert float(ds.mp_lower) == pytest.approx(_wilson_low(a, 6), abs=1e-12)
    assert float(ds.mp_upper) == 1.0  # no proof of no match: the bracket reaches 1


@dataclass(frozen=True)
class EvenTrialsMatch(Decider):
    """A test-only decider: decides the even trials it receives by numpy least squares (affine problems), leaves
    the odd ones open; records which trials it was given."""

    seen: list = None  # a shared list the test reads (mutable on purpose)
    name = "even_trials_test"

    def applicable(self, problem: Problem) -> bool:
        return problem.affine

    def recorded(self, problem: Problem):
        return ns.LeastSquares()

    def decide(self, batch: Batch, open_: np.ndarray) -> Decided:
        self.seen.append(open_.copy())
        theta = batch.own[open_].clone()
        status = np.full(open_.size, _schema.STALLED, dtype=np.int8)
        outcome = np.full(open_.size, _schema.UNDECIDED, dtype=np.int8)
        even = np.flatnonzero(open_ % 2 == 0)
        if even.size:
            sel = torch.as_tensor(open_[even])
            sub = batch.fmap.subset(sel)
            zero = torch.zeros(even.size, batch.alloc.size, dtype=torch.float64)
            base, jac = sub(zero), sub.jacobian(zero)
            rhs = (batch.targets[sel] - base).numpy()
            sol = torch.as_tensor(np.stack([np.linalg.lstsq(j, r, rcond=None)[0] for j, r in zip(jac.numpy(), rhs)]))
            theta[torch.as_tensor(even)] = sol
            resid = relative_residual(sub(sol), batch.targets[sel]).numpy()
            status[even] = np.where(resid < batch.tol, _schema.MATCHED, _schema.NO_SOLUTION)
            outcome[even] = np.where(resid < batch.tol, _schema.PROVEN_MATCH, _schema.PROVEN_NO_MATCH)
        resid_all = relative_residual(batch.fmap.subset(torch.as_tensor(open_))(theta), batch.targets[open_])
        return Decided(theta, resid_all, status, np.full(open_.size, _schema.LEAST_SQUARES_DECISION, np.int8),
                       outcome, np.zeros(open_.size, dtype=np.int64))


def test_a_new_decider_is_one_class_and_the_next_gets_only_the_open_trials():
    c = ns.feedforward([4, 5, 3])
    alloc = ns.allocate(c, 9, within=["W2"], strategy="spread-rows", seed=0)  # read-out only: affine
    trials, m = 6, 2
    d = draw_trials(c, m, trials, 0)
    t = (lambda a: torch.as_tensor(a, dtype=torch.float64))
    fmap = PlasticMap(c, alloc, {k: t(v) for k, v in d.student_init.items()}, t(d.probes))
    targets = forward(c, {k: t(v) for k, v in d.teacher.items()}, fmap.probes).flatten(-2)
    own = torch.zeros(trials, alloc.size, dtype=torch.float64)
    problem = Problem(c, alloc, m, trials, affine=True)
    batch = Batch(problem, fmap, lambda: fmap, targets, own, alloc, c.init_scale(alloc), None, None,
                  ns.DEFAULT_TOL, 0, 0)
    first, second = EvenTrialsMatch(seen=[]), EvenTrialsMatch(seen=[])
    out = run_chain((first, second, AffineLeastSquares()), batch)
    np.testing.assert_array_equal(first.seen[0], np.arange(trials))
    np.testing.assert_array_equal(second.seen[0], np.arange(1, trials, 2))  # only the trials still open
    # the odd trials reached least squares: 3 plastic per read-out row >= m = 2, so every trial is a witness
    assert (out.outcome == _schema.PROVEN_MATCH).all(), out.outcome
    assert isinstance(out.solver, ns.LeastSquares)


def test_auto_chain_ends_with_the_lm_and_lstsq_alone_for_lstsq():
    chain = decider_chain(ns.Auto(), dale=False)
    assert isinstance(chain[-1], LevenbergMarquardtRounds)
    assert [type(x).__name__ for x in decider_chain(ns.LeastSquares(), dale=False)][-1] == "AffineLeastSquares"


def test_progress_shows_a_bar_over_the_trials_naming_the_decider(capsys):
    ff = ns.feedforward([4, 3, 2])
    alloc = ns.allocate(ff, 10, seed=0)  # bilinear: the LM runs
    ns.match_probability(ff, alloc, m=2, trials=3, seed=0, progress=True, certificate=False,
                         solver=ns.Auto(restarts=2, max_rounds=2, iterations=50))
    err = capsys.readouterr().err
    frames = [f for f in err.replace("\r", "\n").splitlines() if f.startswith("trials:")]
    assert frames and "3/3" in frames[-1], frames[-3:]
    assert any(" lm" in f or "lm]" in f for f in frames), frames[-3:]
    ns.match_probability(ff, alloc, m=2, trials=3, seed=0, certificate=False,
                         solver=ns.Auto(restarts=2, max_rounds=2, iterations=50))
    assert "trials:" not in capsys.readouterr().err  # progress=False: no bar


def test_the_last_lm_searches_within_the_plausibility_bound_where_stability_is_required():
    # TINY (tests/test_solvers_proofs.py), 3 E->E values (E excitatory), 1 probe, 8 trials. With stability required
    # the chain's LM stays inside the box written here, [0, K sigma] for K = 0.5; without it, the sign box alone
    # (multistart called directly on it, bit for bit), where it goes beyond K
    import dataclasses

    from test_solvers_proofs import _tiny_batch

    from neurosubset.dynamics.stability import loops, max_real_eig
    from neurosubset.solvers.chain import LevenbergMarquardtRounds
    from neurosubset.solvers.multistart import multistart

    plain = _tiny_batch(3, 1, 8)
    circuit, alloc, every = plain.problem.circuit, plain.alloc, np.arange(8)
    found = loops(circuit)
    stable = dataclasses.replace(plain, plausibility_bound=0.5, admissible=lambda work, th: max_real_eig(
        circuit, {k: v.cpu() for k, v in work.weights(th).items()}, found) < 1.0)
    sigma = circuit.init_scale(alloc)
    got = LevenbergMarquardtRounds(ns.LevenbergMarquardt()).decide(stable, every)
    theta = got.theta.numpy()
    assert (theta >= 0.0).all() and (theta <= 0.5 * sigma * (1 + 1e-12)).all()
    free = LevenbergMarquardtRounds(ns.LevenbergMarquardt()).decide(plain, every)
    ref = multistart(plain.fmap, plain.targets, plain.sigma, ns.LevenbergMarquardt(), seed=0, tol=plain.tol,
                     bounds=plain.bounds)
    assert torch.equal(free.theta, ref.theta) and (free.status == ref.status).all()
    assert (free.theta.numpy() > 0.5 * sigma).any()  # the bound binds: the sign box alone goes beyond it
