"""The restart rounds' effort chosen from the measured convergence (LevenbergMarquardt.patience, issue 29).

Known convergence, on a two-layer linear net (outputs W2 W1 x: bilinear in plastic values of both layers): 4 plastic
values against 4 probes x 2 outputs = 8 equations (the teacher's generic outputs lie off the student's at most
4-dimensional image, so MP = 0 almost surely), and every weight plastic (the teacher's own weights solve it: MP = 1).
The fixed policy (patience 0) is the reference run.
"""
from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

import neurosubset as ns

OVER = ns.feedforward([3, 2, 2])  # W1: 2 x 3, W2: 2 x 2


def _mp(alloc, m, solver, trials=4):
    return ns.match_probability(OVER, alloc, m=m, trials=trials, seed=3, solver=solver, certificate=False,
                                dale=False, stable=False)


@pytest.mark.slow
def test_rounds_stop_where_they_stop_improving_and_the_full_cap_would_have_gained_nothing():
    alloc = ns.allocate(OVER, 4, fractions={"W1": 0.5, "W2": 0.5}, seed=1)  # 8 equations, 4 unknowns
    lm = dict(restarts=2, max_rounds=8, iterations=10)
    early = _mp(alloc, 4, ns.LevenbergMarquardt(**lm, patience=2))
    full = _mp(alloc, 4, ns.LevenbergMarquardt(**lm, patience=0))
    # MP = 0 is known (more equations than plastic values); the fixed policy ran all 8 rounds and found nothing
    assert float(full.mp) == 0.0 and (full.restarts.values == 2 * 8).all()
    # with patience every trial stopped early (rounds = restarts / 2), having lost nothing
    rounds = early.restarts.values // 2
    assert (rounds >= 3).all() and (rounds < 8).all(), rounds
    assert float(early.mp) == 0.0
    assert early.attrs["effort_converged"] == 1 and early.attrs["last_round_gain"] == 0.0
    assert early.attrs["lm_patience"] == 2 and "lm_patience" not in full.attrs
    assert early.attrs["config_hash"] != full.attrs["config_hash"]
    # each stopped trial's best residual is no better than 1% below what the full run reached in the same rounds'
    # worth of starts plus more: the later rounds of the full run could only lower it (never raise it)
    assert (full.residual.values <= early.residual.values * (1 + 1e-9)).all()


def test_a_solvable_problem_converges_and_a_cut_short_one_says_it_did_not():
    alloc = ns.allocate(OVER, 10, seed=0)  # every weight plastic: the teacher's weights are a solution, MP = 1
    done = _mp(alloc, 2, ns.LevenbergMarquardt(restarts=2, max_rounds=4, iterations=200))
    assert float(done.mp) == 1.0 and done.attrs["effort_converged"] == 1
    # one round of 2 iterations: every trial improves in it but none can match yet; the cap cut it short
    cut = _mp(alloc, 2, ns.LevenbergMarquardt(restarts=2, max_rounds=1, iterations=2))
    assert float(cut.mp) < 1.0 and cut.attrs["effort_converged"] == 0


def test_patience_that_cannot_act_changes_nothing():
    # max_rounds <= patience + 1: no trial can stop before the cap, so the result and its hash are the fixed
    # policy's, bit for bit (stores made before patience keep their hashes)
    alloc = ns.allocate(OVER, 4, fractions={"W1": 0.5, "W2": 0.5}, seed=1)
    a = _mp(alloc, 4, ns.LevenbergMarquardt(restarts=2, max_rounds=3, iterations=10, patience=2))
    b = _mp(alloc, 4, ns.LevenbergMarquardt(restarts=2, max_rounds=3, iterations=10, patience=0))
    xr.testing.assert_identical(a, b)
    assert not ns.LevenbergMarquardt(max_rounds=3, patience=2).patience_acts
    assert ns.LevenbergMarquardt().patience_acts and ns.LevenbergMarquardt().patience == 2


def test_patience_is_validated_and_round_trips_through_the_attrs():
    with pytest.raises(ns.ParameterError, match="patience"):
        ns.LevenbergMarquardt(patience=-1)
    opts = ns.FitOptions(solver=ns.Auto(patience=3))
    back = ns.FitOptions.from_attrs(opts.to_attrs())
    assert back.solver == opts.solver
    # attrs without lm_patience (files made before it) read as the fixed policy
    attrs = opts.to_attrs()
    del attrs["lm_patience"]
    assert ns.FitOptions.from_attrs(attrs).solver.patience == 0
    np.testing.assert_equal(ns.LevenbergMarquardt(patience=0).patience_acts, False)


def test_tick_reports_each_trial_once_as_it_matches_or_runs_out_of_rounds():
    import torch

    from neurosubset.benchmark import draw_trials
    from neurosubset.dynamics import PlasticMap, forward
    from neurosubset.solvers.multistart import multistart

    ff = ns.feedforward([3, 2, 2])
    alloc = ns.allocate(ff, 10, seed=0)  # every weight plastic: solvable
    draws = draw_trials(ff, 2, 5, 0)
    fmap = PlasticMap(ff, alloc, {k: torch.as_tensor(v) for k, v in draws.student_init.items()},
                      torch.as_tensor(draws.probes))
    targets = forward(ff, {k: torch.as_tensor(v) for k, v in draws.teacher.items()}, fmap.probes).flatten(-2)
    ticks: list[int] = []
    out = multistart(fmap, targets, ff.init_scale(alloc), ns.LevenbergMarquardt(restarts=2, max_rounds=3,
                                                                               iterations=3),
                     seed=0, tol=1e-8, tick=ticks.append)
    assert sum(ticks) == 5 and all(t >= 0 for t in ticks)
    # after each round but the last: the trials matched so far (no patience acts with 3 rounds)
    matched = np.rint(np.asarray(out.history) * 5).astype(int)
    assert np.cumsum(ticks)[:len(out.history) - 1].tolist() == matched[:-1].tolist()


def test_a_round_keeps_a_trial_going_only_at_a_pace_that_reaches_tol_in_the_rounds_left():
    """``_on_pace`` against the closed form: round r runs 400 * 2**min(r, 3) iterations (8 rounds: 400, 800, 1,600,
    then 3,200 five times); a round that lowered the best residual from b0 to b1 continues, at log(b0 / b1) per its
    iterations, over the iterations of the rounds left."""
    from neurosubset.solvers.multistart import _on_pace

    tol = 1e-9
    # round 0 halved the residual 1e-2 -> 5e-3: 18,400 iterations left at log(2) / 400 each = 31.9 >= log(5e6) = 15.4
    # round 2 took 1e-3 -> 9.8e-4 (2%): 16,000 left at log(1 / 0.98) / 1,600 = 0.20 < log(9.8e5) = 13.8: a crawl
    # the last round (7) leaves no iterations: only a match is on pace
    before = np.array([1e-2, 1e-3, 1e-3, np.inf, 1e-3])
    best = np.array([5e-3, 9.8e-4, 1e-10, 1e-3, 5e-4])
    rounds = [0, 2, 2, 2, 7]
    got = [bool(_on_pace(before[i:i + 1], best[i:i + 1], tol, r, 8, 400)[0]) for i, r in enumerate(rounds)]
    left = [sum(400 * 2 ** min(k, 3) for k in range(r + 1, 8)) for r in rounds]
    expected = [np.log(b1 / tol) <= np.log(b0 / b1) / (400 * 2 ** min(r, 3)) * n if np.isfinite(b0) and b1 >= tol
                else True for b0, b1, r, n in zip(before, best, rounds, left)]
    assert got == expected == [True, False, True, True, False]
