"""The lifted-rates decider for linear steady circuits (``solver="lifted"``) against independent derivations.

References: closed forms of a two-neuron loop worked out on paper (the steady output is a Mobius function of the
one plastic value), the steady state solved here with numpy (``np.linalg.solve(I - W, U x)``), the LM as a second
method and the rank certificate; ``multistart``'s ``trial_ids`` against a full batch; ``skip_zero``'s default.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

import neurosubset as ns
from neurosubset._schema import CERTIFICATE_DECISION, LIFTED_DECISION, MATCHED, NO_SOLUTION
from neurosubset.draws import draw_trials
from neurosubset.dynamics import PlasticMap, forward, torch_threads
from neurosubset.solvers.multistart import multistart
from neurosubset.solvers.lifted import solve_lifted

TOL = 1e-8  # the package's match tolerance (benchmark.DEFAULT_TOL)
FREE = {"dale": False, "stable": False}  # the plain question: no sign box, no stability requirement


def _loop(n_out: int = 1, fixed_in: bool = False) -> ns.Circuit:
    """x (2 inputs) -> a <-> b -> y: one hidden loop of two neurons, ``n_out`` outputs reading b.

    Steady: ``r_a = u . x + w_ba r_b``, ``r_b = w_ab r_a``, ``y = v r_b``. With ``fixed_in`` the input weights
    ``u = (0.7, -0.4)`` are given (teacher and student share them), else drawn per teacher and student.
    """
    regions = (ns.Region("x", 2, "input"), ns.Region("a", 1), ns.Region("b", 1), ns.Region("y", n_out, "output"))
    counts = {"a->b": np.ones((1, 1)), "b->a": np.ones((1, 1)), "b->y": np.ones((n_out, 1))}
    given = (ns.Projection("x", "a", weights=((0, 0, 0.7), (0, 1, -0.4))),) if fixed_in else ()
    if not fixed_in:
        counts["x->a"] = np.ones((1, 2))
    return ns.Circuit.from_connectivity(regions, counts, gain=0.8, projections=given, name="loop", seed=0)


def _plastic(circuit: ns.Circuit, *names: str) -> ns.Allocation:
    return ns.Allocation.from_masks(circuit, {n: circuit.structure[n] for n in names})


def _loop_terms(w: dict, probes: np.ndarray):
    """``s = u . x`` ``(trial, m)``, ``w_ab``, ``w_ba``, ``v`` ``(trial,)`` (first output) of the loop's weights."""
    s = np.einsum("ti,tmi->tm", w["x->a"][:, 0, :], probes)
    return s, w["a->b"][:, 0, 0], w["b->a"][:, 0, 0], w["b->y"][:, 0, 0]


def _loop_output(w: dict, probes: np.ndarray) -> np.ndarray:
    """``y = v w_ab s / (1 - w_ba w_ab)`` ``(trial, m)``: the loop solved by hand."""
    s, w_ab, w_ba, v = _loop_terms(w, probes)
    return (v * w_ab / (1 - w_ba * w_ab))[:, None] * s


def _mobius_root(student: dict, probes: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The one ``w_ab = t`` with ``v t s / (1 - w_ba t) = y`` (first probe): ``t = y / (v s + w_ba y)``."""
    s, _, w_ba, v = _loop_terms(student, probes)
    return y[:, 0] / (v * s[:, 0] + w_ba * y[:, 0])


def test_one_plastic_synapse_in_a_loop_matches_one_probe_at_the_mobius_root():
    circuit = _loop()
    res = ns.fit(circuit, _plastic(circuit, "a->b"), m=1, trials=12, seed=1, solver="lifted", **FREE)
    t = res.trials
    y = _loop_output(t.teacher, t.probes)
    assert res.solver == "lifted" and res.exact
    assert (res.decision == LIFTED_DECISION).all() and (res.status == MATCHED).all(), res.status
    np.testing.assert_allclose(res.theta[:, 0], _mobius_root(t.student_init, t.probes, y), rtol=1e-9)


def test_two_probes_match_iff_teacher_and_student_see_the_input_along_the_same_direction():
    # m = 2 generic probes: the student's y is a multiple of u_S . x, the teacher's of u_T . x, so a match needs
    # u_T parallel to u_S. Drawn input weights: never (cross product != 0) -> no_solution, proven. Shared (fixed)
    # input weights: always, at the Mobius root of either probe.
    drawn = _loop()
    res = ns.fit(drawn, _plastic(drawn, "a->b"), m=2, trials=12, seed=2, solver="lifted", **FREE)
    u_t, u_s = res.trials.teacher["x->a"][:, 0], res.trials.student_init["x->a"][:, 0]
    cross = u_t[:, 0] * u_s[:, 1] - u_t[:, 1] * u_s[:, 0]
    assert (np.abs(cross) > 1e-6).all()
    assert (res.decision == LIFTED_DECISION).all() and (res.status == NO_SOLUTION).all(), res.status
    assert res.exact and not res.matched.any()

    shared = _loop(fixed_in=True)
    res = ns.fit(shared, _plastic(shared, "a->b"), m=2, trials=12, seed=2, solver="lifted", **FREE)
    t = res.trials
    y = _loop_output(t.teacher, t.probes)
    assert (res.decision == LIFTED_DECISION).all() and (res.status == MATCHED).all(), res.status
    np.testing.assert_allclose(res.theta[:, 0], _mobius_root(t.student_init, t.probes, y), rtol=1e-9)
    np.testing.assert_allclose(res.theta[:, 0], _mobius_root(t.student_init, t.probes[:, ::-1], y[:, ::-1]),
                               rtol=1e-9)


def test_two_read_outs_of_one_neuron_pin_its_rate_inconsistently_so_mp_is_zero():
    # y1 = v1 r_b, y2 = v2 r_b with frozen read-outs: the student's y1 / y2 is v1_S / v2_S whatever its plastic
    # values, the teacher's v1_T / v2_T; different ratios -> no plastic values match (both loop synapses plastic).
    circuit = _loop(n_out=2)
    res = ns.fit(circuit, _plastic(circuit, "a->b", "b->a"), m=1, trials=12, seed=3, solver="lifted", **FREE)
    v_t, v_s = res.trials.teacher["b->y"][:, :, 0], res.trials.student_init["b->y"][:, :, 0]
    assert (np.abs(v_t[:, 0] * v_s[:, 1] - v_t[:, 1] * v_s[:, 0]) > 1e-6).all()
    assert (res.decision == LIFTED_DECISION).all() and (res.status == NO_SOLUTION).all(), res.status


@pytest.mark.parametrize("c", [-1.0, 0.5, 0.999, 2.0])
def test_designed_targets_around_the_value_the_mobius_map_never_takes_are_matched_at_their_root(c):
    # y(t) = v s t / (1 - w_ba t) takes every value but y_inf = -v s / w_ba (its limit as t -> inf): a target
    # y = c y_inf (c != 1) is matched at t = y / (v s + w_ba y) = -c / (w_ba (1 - c)), however close to y_inf
    # (c = 0.999: |t| ~ 1e3 / |w_ba|). y_inf itself is not tested: |t| > 1e8 reproduces it within the relative
    # tolerance, so calling it matched is right in floating point.
    circuit = _loop()
    alloc = _plastic(circuit, "a->b")
    draws = draw_trials(circuit, 1, 8, 4)
    fmap = PlasticMap(circuit, alloc, {k: torch.as_tensor(v) for k, v in draws.student_init.items()},
                      torch.as_tensor(draws.probes))
    s, w_ab, w_ba, v = _loop_terms(draws.student_init, draws.probes)
    y = c * (-v[:, None] * s / w_ba[:, None])
    theta, resid, status = solve_lifted(fmap, torch.as_tensor(y), torch.as_tensor(w_ab[:, None]), alloc, None,
                                        tol=TOL)
    assert (status == MATCHED).all() and (resid.numpy() < TOL).all(), (status, resid)
    np.testing.assert_allclose(theta[:, 0].numpy(), _mobius_root(draws.student_init, draws.probes, y), rtol=1e-8)


def _numpy_outputs(circuit: ns.Circuit, weights: dict, probes: np.ndarray) -> np.ndarray:
    """``(trial, m, n_out)``: ``r = solve(I - W, U x)`` over the non-input neurons, per trial, written here."""
    start, n = {}, 0
    for reg in circuit.regions:
        if reg.role != "input":
            start[reg.name], n = n, n + reg.size
    inputs = [reg for reg in circuit.regions if reg.role == "input"]
    assert len(inputs) == 1  # the circuits used here have one input region
    n_in = inputs[0].size
    outs = np.concatenate([np.arange(start[r.name], start[r.name] + r.size)
                           for r in circuit.regions if r.role == "output"])
    trials = probes.shape[0]
    w_rec, u_in = np.zeros((trials, n, n)), np.zeros((trials, n, n_in))
    for name, w in weights.items():
        proj = circuit.projection[name]
        post = slice(start[proj.post], start[proj.post] + w.shape[1])
        if proj.pre == inputs[0].name:
            u_in[:, post] += w
        else:
            w_rec[:, post, start[proj.pre]:start[proj.pre] + w.shape[2]] += w
    rates = np.stack([np.linalg.solve(np.eye(n) - w_rec[i], u_in[i] @ probes[i].T) for i in range(trials)])
    return rates[:, outs, :].transpose(0, 2, 1)


CASES = [("ei_isn", 1, 20, "random"), ("ei_isn", 3, 110, "spread-rows"),
         ("ca3_ca1", 1, 20, "random"), ("ca3_ca1", 3, 60, "spread-rows")]


@pytest.mark.parametrize("name, m, budget, strategy", CASES)
def test_every_lifted_match_reproduces_the_teacher_in_a_numpy_steady_solve(name, m, budget, strategy):
    circuit = ns.Circuit.from_toml(f"circuits/{name}.toml")
    alloc = ns.allocate(circuit, budget, strategy=strategy, seed=0)
    res = ns.fit(circuit, alloc, m=m, trials=5, seed=2, solver="lifted", **FREE)
    witness = (res.decision == LIFTED_DECISION) & (res.status == MATCHED)
    assert witness.sum() >= 3, (res.status, res.decision)  # lifting decides most trials here
    t = res.trials
    y_teacher = _numpy_outputs(circuit, t.teacher, t.probes)
    y_student = _numpy_outputs(circuit, res.student, t.probes)
    err = np.linalg.norm((y_student - y_teacher).reshape(len(witness), -1), axis=1)
    rel = err / np.linalg.norm(y_teacher.reshape(len(witness), -1), axis=1)
    assert (rel[witness] < TOL).all(), rel[witness]
    for k in circuit.weight_names:  # only the plastic entries moved, and they hold theta
        mask = alloc.masks[k]
        np.testing.assert_array_equal(res.student[k][:, ~mask], t.student_init[k][:, ~mask])
    theta = np.concatenate([res.student[k][:, alloc.masks[k]] for k in circuit.weight_names], axis=1)
    np.testing.assert_array_equal(theta, res.theta)


AGREE = [("ei_isn", 1, 20, "random"), ("ei_isn", 3, 40, "concentrated-rows"),
         ("ca3_ca1", 3, 60, "spread-rows"), ("ca3_ca1", 3, 40, "concentrated-rows")]


@pytest.mark.parametrize("name, m, budget, strategy", AGREE)
def test_lifted_proofs_agree_with_the_lm_and_the_rank_certificate(name, m, budget, strategy):
    # Asserted: an LM match is never a lifted no_solution; a lifted no_solution is never an LM match; where the
    # certificate says "zero", every trial is a lifted no_solution and the LM matches none; where lifting
    # proves every trial unmatchable, the certificate does not say "one".
    circuit = ns.Circuit.from_toml(f"circuits/{name}.toml")
    alloc = ns.allocate(circuit, budget, strategy=strategy, seed=0)
    lifted = ns.fit(circuit, alloc, m=m, trials=4, seed=5, solver="lifted", **FREE)
    lm = ns.fit(circuit, alloc, m=m, trials=4, seed=5, solver=ns.LevenbergMarquardt(), **FREE)
    for k in circuit.weight_names:  # same seed: the same draws
        np.testing.assert_array_equal(lifted.trials.teacher[k], lm.trials.teacher[k])
    proof = (lifted.status == NO_SOLUTION) & (lifted.decision == LIFTED_DECISION)
    assert not (lm.matched & proof).any(), (lm.status, lifted.status)
    verdict = ns.certify(circuit, alloc, m=m, seed=5, **FREE).verdict
    if verdict == "zero":
        assert proof.all() and not lm.matched.any() and not lifted.matched.any()
    if proof.all():
        assert verdict != "one"
    # each case decides one way: concentrated rows leave rows without plastic synapses that the teacher's outputs
    # cannot satisfy (MP = 0); the others are matched by both methods
    if strategy == "concentrated-rows":
        assert verdict == "zero" and proof.all()
    else:
        assert lm.matched.all() and lifted.matched.all()


def test_multistart_on_a_subset_with_trial_ids_equals_those_rows_of_the_full_batch():
    circuit = ns.Circuit.from_toml("circuits/ei_isn.toml")
    alloc = ns.allocate(circuit, 60, strategy="spread-rows", seed=0)
    draws = draw_trials(circuit, 3, 6, 7)
    fmap = PlasticMap(circuit, alloc, {k: torch.as_tensor(v) for k, v in draws.student_init.items()},
                      torch.as_tensor(draws.probes))
    targets = forward(circuit, {k: torch.as_tensor(v) for k, v in draws.teacher.items()}, fmap.probes).flatten(-2)
    sigma, solver = circuit.init_scale(alloc), ns.LevenbergMarquardt(restarts=2, max_rounds=2)
    ids = np.array([1, 4, 5])
    sel = torch.as_tensor(ids)
    with torch_threads(1):  # as fit runs it (two threads spin on a loaded machine)
        full = multistart(fmap, targets, sigma, solver, seed=3, tol=TOL)
        part = multistart(fmap.subset(sel), targets[sel], sigma, solver, seed=3, tol=TOL, trial_ids=ids)
        plain = multistart(fmap.subset(sel), targets[sel], sigma, solver, seed=3, tol=TOL)
    assert torch.equal(part.theta, full.theta[sel])  # bitwise
    # the residual is recomputed by a batched steady solve, whose rounding depends on the batch (issue 16: within
    # 1e-12 on steady circuits)
    torch.testing.assert_close(part.residual, full.residual[sel], rtol=0, atol=1e-12)
    np.testing.assert_array_equal(part.status, full.status[ids])
    np.testing.assert_array_equal(part.restarts, full.restarts[ids])
    # the ids are what makes it so: the same rows as trials 0, 1, 2 start elsewhere
    assert not torch.equal(plain.theta, full.theta[sel])


def _large_random_circuit() -> ns.Circuit:
    """3 inputs -> 128 recurrent hidden neurons (sparse) -> 2 outputs, from count matrices."""
    rng = np.random.default_rng(0)
    regions = (ns.Region("x", 3, "input"), ns.Region("h", 128), ns.Region("y", 2, "output"))
    counts = {"x->h": (rng.random((128, 3)) < 0.5).astype(float), "h->h": (rng.random((128, 128)) < 0.03) * 1.0,
              "h->y": (rng.random((2, 128)) < 0.3).astype(float)}
    for c in counts.values():
        c[0, 0] = 1.0
    return ns.Circuit.from_connectivity(regions, counts, gain=0.3, name="random128", seed=0)


def test_skip_zero_is_on_by_default_from_128_hidden_neurons_only():
    # One plastic synapse, m = 2 probes, 2 outputs: the student's outputs trace a curve (one parameter) in R^4, a
    # generic teacher lies off it -> MP = 0, and the certificate says "zero" on both circuits.
    large = _large_random_circuit()
    assert large.n_neurons("hidden") == 128
    mask = np.zeros((128, 128), dtype=bool)
    mask[0, 0] = True  # a recurrent synapse: the outputs are not affine in it
    one = ns.Allocation.from_masks(large, {"h->h": mask})
    assert one.size == 1 and ns.certify(large, one, m=2, seed=0, **FREE).verdict == "zero"
    res = ns.fit(large, one, m=2, trials=3, seed=0, **FREE)
    assert (res.decision == CERTIFICATE_DECISION).all() and (res.status == NO_SOLUTION).all()
    assert not res.matched.any() and (res.restarts == 0).all()
    # fitted after all (skip_zero=False): Auto lifts on a circuit this large, and proves every trial unmatchable too
    fitted = ns.fit(large, one, m=2, trials=2, seed=0, skip_zero=False, **FREE)
    assert fitted.solver == "lifted" and (fitted.decision == LIFTED_DECISION).all()
    assert (fitted.status == NO_SOLUTION).all(), fitted.status

    small = _loop()
    alloc = _plastic(small, "a->b")
    assert ns.certify(small, alloc, m=2, seed=0, **FREE).verdict == "zero"
    res = ns.fit(small, alloc, m=2, trials=3, seed=0, **FREE)
    assert (res.decision != CERTIFICATE_DECISION).all() and not res.matched.any()
    assert res.solver != "lifted"  # below 128 hidden neurons Auto does not lift either


def test_under_dale_lifted_witnesses_keep_their_signs_and_open_trials_get_the_lms_own_fit():
    # ei_isn's E sends only excitatory, I only inhibitory synapses. The lifted witnesses (BVLS inside the sign box)
    # must keep those signs; the trials lifting leaves open are fitted by the LM with their own restart seeds,
    # exactly as a plain LM run of the same seed fits them.
    circuit = ns.Circuit.from_toml("circuits/ei_isn.toml")
    alloc = ns.allocate(circuit, 20, strategy="random", seed=0)
    lifted = ns.fit(circuit, alloc, m=1, trials=6, seed=2, solver="lifted", dale=True, stable=False)
    lm = ns.fit(circuit, alloc, m=1, trials=6, seed=2, solver=ns.LevenbergMarquardt(), dale=True, stable=False)
    by_lift = lifted.decision == LIFTED_DECISION
    assert by_lift.any() and not by_lift.all(), lifted.decision  # a mix: both paths run
    assert not lifted.exact
    sign = {r.name: r.sign for r in circuit.regions}
    want = np.concatenate([np.full(alloc.counts[k], sign[circuit.projection[k].pre] or 0)
                           for k in circuit.weight_names])
    assert (want != 0).sum() >= 10  # X is unsigned, E and I signed
    assert (lifted.theta[by_lift] * want >= 0).all()
    np.testing.assert_array_equal(lifted.theta[~by_lift], lm.theta[~by_lift])
    np.testing.assert_array_equal(lifted.status[~by_lift], lm.status[~by_lift])
    np.testing.assert_array_equal(lifted.restarts[~by_lift], lm.restarts[~by_lift])
    # in chunks of 4 trials (the LM's open trials are then 'first + rest' of the second chunk): the same fits
    chunked = ns.fit(circuit, alloc, m=1, trials=6, seed=2, solver="lifted", dale=True, stable=False, chunk=4)
    np.testing.assert_array_equal(chunked.theta, lifted.theta)
    np.testing.assert_array_equal(chunked.decision, lifted.decision)
    np.testing.assert_array_equal(chunked.status, lifted.status)


def test_lifted_on_an_empty_allocation_is_least_squares_and_is_refused_off_steady_circuits():
    ei = ns.Circuit.from_toml("circuits/ei_isn.toml")
    res = ns.fit(ei, ns.allocate(ei, 0), m=2, trials=3, seed=0, solver="lifted", dale=False, stable=False)
    # nothing plastic: the student is its own draw, which differs from the teacher's on every trial
    assert res.solver == "lstsq" and not res.matched.any() and (res.status == NO_SOLUTION).all()
    ff = ns.feedforward([4, 3, 2])
    with pytest.raises(ns.ParameterError, match="needs a linear steady circuit.*one of 'auto', 'lstsq', 'lm'"):
        ns.fit(ff, ns.allocate(ff, 3), m=2, trials=2, solver="lifted")


def test_a_witness_without_a_steady_state_leaves_its_trial_open_instead_of_raising():
    from neurosubset.solvers.lifted import _residuals

    text = """name = "pair"\ndynamics = "steady"\nseed = 0
[regions.X]\nsize = 1\nrole = "input"\n[regions.A]\nsize = 2\nrole = "hidden"\n[regions.O]\nsize = 1\nrole = "output"
[[projections]]\npre = "X"\npost = "A"\np = 1.0\n[[projections]]\npre = "A"\npost = "A"\np = 1.0
[[projections]]\npre = "A"\npost = "O"\np = 1.0\n"""
    c = ns.Circuit.from_toml_text(text)
    alloc = ns.Allocation.from_masks(c, {"A->A": c.structure["A->A"]})
    assert alloc.size == 4  # w00, w01, w10, w11 (row-major; autapses included)
    d = draw_trials(c, 1, 2, 0)
    t = (lambda v: torch.as_tensor(v, dtype=torch.float64))
    fmap = PlasticMap(c, alloc, {k: t(v) for k, v in d.student_init.items()}, t(d.probes))
    targets = forward(c, {k: t(v) for k, v in d.teacher.items()}, fmap.probes).flatten(-2)
    # trial 0 at w01 = w10 = 1: I - W_AA = [[1, -1], [-1, 1]] is singular; trial 1 at 0.5 has a steady state
    theta = t(np.array([[0.0, 1.0, 1.0, 0.0], [0.0, 0.5, 0.5, 0.0]]))
    out = fmap(theta)  # a singular I - W gives non-finite outputs for that trial (lu_factor_ex), not a raise
    assert not torch.isfinite(out[0]).all() and torch.isfinite(out[1]).all(), out
    resid = _residuals(fmap, theta, targets)
    assert torch.isinf(resid[0]) and torch.isfinite(resid[1])
    a = np.array([[1.0, -0.5], [-0.5, 1.0]])  # I - W_AA of trial 1, by hand
    w_in, w_out = d.student_init["X->A"][1], d.student_init["A->O"][1]
    y = w_out @ np.linalg.solve(a, w_in @ d.probes[1].T)
    want = np.linalg.norm(y.T.ravel() - targets[1].numpy()) / np.linalg.norm(targets[1].numpy())
    np.testing.assert_allclose(float(resid[1]), want, rtol=1e-12)
