"""Batched solvers against a second method: numpy's lstsq per problem, and known solutions."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import neurosubset as ns
from neurosubset.benchmark import draw_trials
from neurosubset.dynamics import PlasticMap, forward
from neurosubset.solvers import (SteadyLifting, as_solver, levenberg_marquardt, relative_residual, solve_affine,
                                 solver_from_attrs)
from neurosubset.solvers.lm import _marquardt_step

# the LM stop criterion is 1e-11 relative; matched problems must end below it
LM_STOP = 1e-11
# two float64 solves of the same well-conditioned (cond < 1e4) linear system agree to ~1e-12 relative
SOLVE = 1e-10


def _problem(circuit, alloc, m, trials, seed=0):
    draws = draw_trials(circuit, m, trials, seed)
    fmap = PlasticMap(circuit, alloc, {k: torch.as_tensor(v) for k, v in draws.student_init.items()},
                      torch.as_tensor(draws.probes))
    targets = forward(circuit, {k: torch.as_tensor(v) for k, v in draws.teacher.items()}, fmap.probes).flatten(-2)
    return draws, fmap, targets


def test_solve_affine_equals_numpy_lstsq_per_trial():
    c = ns.feedforward([6, 5, 3])
    alloc = ns.allocate(c, 9, within=["W2"], seed=1)  # y = W2 W1 x is affine in W2
    _, fmap, targets = _problem(c, alloc, m=4, trials=5)
    theta = solve_affine(fmap, targets).numpy()
    zero = torch.zeros(5, alloc.size, dtype=torch.float64)
    jac, offset = fmap.jacobian(zero, method="autograd").numpy(), fmap(zero).numpy()
    for i in range(5):
        ref, *_ = np.linalg.lstsq(jac[i], targets[i].numpy() - offset[i], rcond=None)
        np.testing.assert_allclose(theta[i], ref, rtol=1e-9, atol=1e-12)


def test_lm_reaches_the_lstsq_optimum_on_an_affine_problem():
    c = ns.feedforward([6, 4])
    alloc = ns.allocate(c, 8, strategy="spread-rows", seed=0)  # 2 per row, m = 3 > 2: no exact solution
    _, fmap, targets = _problem(c, alloc, m=3, trials=6)
    exact = relative_residual(fmap(solve_affine(fmap, targets)), targets)
    res = levenberg_marquardt(fmap, torch.arange(6), targets, torch.zeros(6, alloc.size, dtype=torch.float64),
                              steps=100)
    np.testing.assert_allclose(res.residual.numpy(), exact.numpy(), rtol=1e-6)
    assert (exact > 1e-3).all()


def test_lm_finds_a_planted_solution_of_a_polynomial_problem():
    # teacher = student with the plastic entries replaced: a solution exists by construction
    c = ns.linear_rnn(6, 2, 2, steps=4, gain=0.9)
    alloc = ns.allocate(c, 12, strategy="spread-rows", within=["W"], seed=0)
    draws, fmap, _ = _problem(c, alloc, m=3, trials=8)
    rng = np.random.default_rng(5)
    planted = torch.as_tensor(rng.normal(0, c.init_std["W"], (8, alloc.size)))
    targets = fmap(planted)
    start = planted + torch.as_tensor(rng.normal(0, 0.1 * c.init_std["W"], (8, alloc.size)))
    res = levenberg_marquardt(fmap, torch.arange(8), targets, start, steps=200, stop=LM_STOP)
    assert (res.residual < LM_STOP).all(), res.residual


def test_lm_problems_do_not_depend_on_their_batch():
    c = ns.linear_rnn(6, 2, 2, steps=3, gain=0.9)
    alloc = ns.allocate(c, 10, within=["W"], seed=0)
    _, fmap, targets = _problem(c, alloc, m=4, trials=6)
    start = torch.as_tensor(np.random.default_rng(0).normal(0, 0.4, (6, alloc.size)))
    whole = levenberg_marquardt(fmap, torch.arange(6), targets, start, steps=60)
    for i in (0, 4):
        alone = levenberg_marquardt(fmap, torch.tensor([i]), targets[i:i + 1], start[i:i + 1], steps=60)
        assert torch.equal(alone.theta[0], whole.theta[i]) and alone.iterations[0] == whole.iterations[i]


@pytest.mark.parametrize("size, n_eq", [(9, 4), (4, 9)], ids=["push-through M>E", "normal equations M<=E"])
def test_marquardt_step_solves_the_damped_normal_equations(size, n_eq):
    # reference: numpy's solve of (J^T J + mu diag(J^T J)) delta = -J^T r, the textbook Marquardt step
    rng = np.random.default_rng(4)
    jac, r, mu = rng.normal(size=(3, n_eq, size)), rng.normal(size=(3, n_eq)), np.array([1e-2, 1.0, 30.0])
    got = _marquardt_step(torch.as_tensor(jac), torch.as_tensor(r), torch.as_tensor(mu)).numpy()
    for i in range(3):
        jtj = jac[i].T @ jac[i]
        want = -np.linalg.solve(jtj + mu[i] * np.diag(np.diag(jtj)), jac[i].T @ r[i])
        np.testing.assert_allclose(got[i], want, rtol=SOLVE, err_msg=f"problem {i}, mu {mu[i]}")


def test_a_capped_problem_continued_follows_its_uninterrupted_trajectory():
    # fit() continues restarts that hit a round's cap in the next round; continuing from the returned state
    # (theta, mu, nu) must be the same run as one without the break (split at a multiple of the 25-iteration
    # stall window, which restarts with every call)
    c = ns.linear_rnn(16, 2, 2, steps=5, gain=1.0)  # the benchmark's RNN: restarts take hundreds of iterations
    alloc = ns.allocate(c, 24, strategy="spread-rows", within=["W"], seed=0)
    _, fmap, targets = _problem(c, alloc, m=8, trials=8)
    start = torch.as_tensor(np.random.default_rng(1).normal(0, c.init_std["W"], (8, alloc.size)))
    owner = torch.arange(8)
    whole = levenberg_marquardt(fmap, owner, targets, start, steps=100)
    first = levenberg_marquardt(fmap, owner, targets, start, steps=50)
    capped = torch.nonzero(first.capped).flatten()
    assert capped.numel() >= 2, f"only {capped.numel()} problems ran into the cap: the test checks nothing"
    assert (first.iterations[capped] == 50).all()
    rest = levenberg_marquardt(fmap, owner[capped], targets[capped], first.theta[capped], steps=50,
                               mu0=first.mu[capped], nu0=first.nu[capped])
    assert torch.equal(rest.theta, whole.theta[capped])
    assert torch.equal(rest.residual, whole.residual[capped])
    np.testing.assert_array_equal((50 + rest.iterations).numpy(), whole.iterations[capped].numpy())


@pytest.mark.parametrize("solver", [ns.Auto(), ns.LeastSquares(), ns.LevenbergMarquardt(restarts=2, widen=3.0),
                                    ns.Auto(max_rounds=3, iterations=50)])
def test_solver_objects_round_trip_through_plain_attrs(solver):
    attrs = solver.to_attrs()
    assert all(isinstance(v, (str, int, float)) for v in attrs.values()), attrs
    assert solver_from_attrs(attrs) == solver


@pytest.mark.parametrize("kwargs, field", [({"restarts": 0}, "restarts"), ({"max_rounds": 1.5}, "max_rounds"),
                                           ({"iterations": -3}, "iterations"), ({"widen": 0.5}, "widen")])
def test_solver_objects_validate_their_fields(kwargs, field):
    with pytest.raises(ns.NeurosubsetError, match=f"'{field}' parameter"):
        ns.LevenbergMarquardt(**kwargs)


def test_as_solver_takes_strings_and_refuses_unknown_ones():
    assert as_solver("auto") == ns.Auto() and as_solver("lstsq") == ns.LeastSquares()
    assert as_solver("lm") == ns.LevenbergMarquardt()
    assert as_solver("lifted") == SteadyLifting() and SteadyLifting().name == "lifted"
    assert as_solver(ns.LevenbergMarquardt(restarts=3)) == ns.LevenbergMarquardt(restarts=3)
    with pytest.raises(ns.NeurosubsetError, match=r"must be one of \['auto', 'lstsq', 'lm', 'lifted'\]"):
        as_solver("adam")
    with pytest.raises(ns.NeurosubsetError, match="not both"):
        as_solver("lm", steps=3, iterations=4)
    with pytest.warns(FutureWarning, match="pass solver=LevenbergMarquardt"):
        assert as_solver("lm", restarts=2) == ns.LevenbergMarquardt(restarts=2)


def test_boxed_lm_reaches_the_bounded_least_squares_optimum_of_an_affine_problem():
    """With a box, the projected LM on an affine problem ends at scipy's bounded least squares optimum (BVLS, an
    independent method) in a few dozen iterations, where several values sit on a bound (the step re-solved for the
    free values once the clipped ones are on their bounds)."""
    from scipy.optimize import lsq_linear

    c = ns.feedforward([6, 4])
    alloc = ns.allocate(c, 16, strategy="spread-rows", seed=0)  # 4 per row, m = 3: solvable without the box
    _, fmap, targets = _problem(c, alloc, m=3, trials=6)
    lower = torch.zeros(alloc.size, dtype=torch.float64)  # all >= 0, at most 0.2: binds in every trial
    upper = torch.full((alloc.size,), 0.2, dtype=torch.float64)
    zero = torch.zeros(6, alloc.size, dtype=torch.float64)
    jac, offset = fmap.jacobian(zero, method="autograd").numpy(), fmap(zero).numpy()
    res = levenberg_marquardt(fmap, torch.arange(6), targets, torch.full((6, alloc.size), 0.1, dtype=torch.float64),
                              steps=60, lower=lower, upper=upper)
    on_bound = 0
    for i in range(6):
        ref = lsq_linear(jac[i], targets[i].numpy() - offset[i], bounds=(0.0, 0.2), method="bvls", tol=1e-14)
        want = np.linalg.norm(jac[i] @ ref.x + offset[i] - targets[i].numpy()) / np.linalg.norm(targets[i].numpy())
        assert res.residual[i].item() == pytest.approx(want, rel=1e-6, abs=1e-12)
        on_bound += int(((ref.x <= 1e-12) | (ref.x >= 0.2 - 1e-12)).sum())
    assert on_bound > 6 and (res.iterations <= 60).all()
    assert ((res.theta >= lower) & (res.theta <= upper)).all()
