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


class Seen:
    """The real map, recording every point the LM evaluates (its starts first) in ``log``."""

    def __init__(self, inner, log):
        self.inner, self.log = inner, log

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def __call__(self, theta):
        return self.inner(theta)

    def subset(self, sel):
        return Seen(self.inner.subset(sel), self.log)

    def value_and_jacobian(self, theta):
        self.log.append(theta.clone())
        return self.inner.value_and_jacobian(theta)


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


def test_restarts_draw_from_the_stream_they_are_given():
    # round 0's starts, seen at the LM's first evaluation, rebuilt here from the documented policy: restart j of
    # trial i draws SeedSequence(seed, spawn_key=(i, stream, 0)) normals times the init SD (round 0: every start at
    # the init scale), folded into Dale's box by sign. Stream 1 is the default (the LM decider's), and
    # StableWitness's box LM takes stream 2, so the two never repeat each other's starts
    from test_solvers_proofs import _tiny_batch

    from neurosubset.solvers.biological import BOX_STREAM
    from neurosubset.solvers.multistart import multistart

    batch = _tiny_batch(3, 1, 2)
    solver = ns.LevenbergMarquardt(restarts=3, max_rounds=1, iterations=1)
    starts = {}
    for stream in (None, 1, BOX_STREAM):
        log = []
        kw = {} if stream is None else {"stream": stream}
        multistart(Seen(batch.fmap, log), batch.targets, batch.sigma, solver, seed=5, tol=batch.tol,
                   bounds=batch.bounds, **kw)
        starts[stream] = log[0].numpy()
    for stream in (1, BOX_STREAM):
        ref = np.concatenate([np.abs(np.random.default_rng(np.random.SeedSequence(5, spawn_key=(i, stream, 0)))
                                     .standard_normal((3, 3)) * batch.sigma) for i in range(2)])  # E->E: sign +1
        np.testing.assert_array_equal(starts[stream], ref)
    np.testing.assert_array_equal(starts[None], starts[1])
    assert BOX_STREAM != 1 and not np.allclose(starts[1], starts[BOX_STREAM])


def test_the_start_ladder_stops_at_a_finite_box_reach():
    # restart j of round r starts at widen^(r j / (restarts - 1)) init SDs; inside a box that reaches K init SDs the
    # scale stops at K: a start drawn wider would sit on the box's faces, the widest ones on its corner (the same
    # start every round). Rebuilt here from the documented policy (SeedSequence(seed, spawn_key=(i, 1, r)) normals
    # times the init SD times min(scale, K), folded into the sign box, clipped to it); a sign box alone keeps the
    # whole ladder
    from test_solvers_proofs import _tiny_batch

    from neurosubset.solvers.bounded import Bounds
    from neurosubset.solvers.multistart import multistart

    batch = _tiny_batch(3, 1, 2)  # E->E: sign +1, so the sign box is [0, inf)
    k, widen = 2.0, 1e3  # round 1: restarts at 1 and 1000 init SDs
    solver = ns.LevenbergMarquardt(restarts=2, max_rounds=2, iterations=1, widen=widen, patience=0)
    far = (np.random.default_rng(np.random.SeedSequence(5, spawn_key=(0, 1, 1))).standard_normal((2, 3))
           * batch.sigma)[1]  # trial 0, round 1, restart 1 before its scale
    for upper, scale in ((k * batch.sigma, k), (np.full(3, np.inf), widen)):
        log = []
        multistart(Seen(batch.fmap, log), batch.targets, batch.sigma, solver, seed=5, tol=0.0,
                   bounds=Bounds(np.zeros(3), upper), admissible=None)
        want = np.clip(np.abs(far) * scale, 0.0, upper)
        rows = [t.numpy()[1] for t in log if t.shape[0] > 4]  # round 1: 4 fresh starts, then the 4 carried on
        np.testing.assert_array_equal(rows[0], want)
    assert (want > k * batch.sigma).all()  # the sign box alone: the wide start, far beyond K
