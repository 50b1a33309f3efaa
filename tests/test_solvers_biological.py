"""Stable witnesses (neurosubset.solvers.biological): the smoothed abscissa, the Lyapunov certificate, and the
witnesses the chain reports on circuits/ei_isn.toml, each re-checked here by an independent numpy solve.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import steady_outputs

import neurosubset as ns
from neurosubset import _schema
from neurosubset.benchmark import draw_trials
from neurosubset.solvers.biological import (_lm_step, _null_projection, batch_box, lyapunov_certificate,
                                            smoothed_abscissa)

ROOT = Path(__file__).resolve().parents[1]
EI_ISN = ROOT / "circuits" / "ei_isn.toml"
RECURRENT = ["E->E", "E->I", "I->E", "I->I"]
TOL = 1e-8  # the toolkit's default match tolerance
FD_STEP, FD_RTOL = 1e-6, 1e-5  # central differences of a smooth function: error O(h^2) against O(eps / h) rounding


def test_the_lyapunov_certificate_agrees_with_the_eigenvalues():
    rng = np.random.default_rng(0)
    agree = 0
    for _ in range(200):
        n = int(rng.integers(2, 12))
        w = rng.normal(size=(n, n)) * rng.uniform(0.1, 0.6)
        top = np.linalg.eigvals(w).real.max()
        if abs(top - 1.0) < 1e-3:  # too close to the boundary for either test to be meaningful
            continue
        assert lyapunov_certificate(w) == (top < 1.0), top
        agree += 1
    assert agree > 150


def test_the_smoothed_abscissa_bounds_the_maximum_and_its_gradient_is_exact():
    rng = np.random.default_rng(1)
    n, beta = 9, 20.0
    w = rng.normal(size=(n, n)) * 0.4
    loops = [np.arange(6), np.arange(6, 9)]
    w[6:, :6] = 0.0  # block triangular: the loops {0..5} and {6..8} carry the eigenvalues
    rows, cols = rng.integers(0, 6, 5), rng.integers(0, 6, 5)
    rows, cols = np.append(rows, [7, 2]), np.append(cols, [8, 7])  # one in the second loop, one between loops
    value, top, grad = smoothed_abscissa(w, loops, rows, cols, beta)
    re = np.concatenate([np.linalg.eigvals(w[np.ix_(i, i)]).real for i in loops])
    assert re.max() <= value <= re.max() + np.log(re.size) / beta
    assert top == max(re.max(), 0.0)
    for k in range(rows.size):
        up, down = w.copy(), w.copy()
        up[rows[k], cols[k]] += FD_STEP
        down[rows[k], cols[k]] -= FD_STEP
        fd = (smoothed_abscissa(up, loops, rows, cols, beta)[0] - smoothed_abscissa(down, loops, rows, cols, beta)[0]
              ) / (2 * FD_STEP)
        assert abs(fd - grad[k]) <= FD_RTOL * max(1.0, abs(fd)), (k, fd, grad[k])
    assert grad[-1] == 0.0  # a synapse between loops moves no eigenvalue (block triangular)


@pytest.mark.parametrize(("rows", "cols", "rank"), [(6, 40, 6), (6, 40, 3), (8, 5, 5), (12, 20, 12)])
def test_the_descent_direction_is_the_projection_onto_the_null_space(rows, cols, rank):
    """The abscissa step's direction (row-space basis from J J^T for wide J, thin SVD otherwise) equals the
    projection onto the null space spanned by scipy's null_space, also for rank-deficient Jacobians."""
    import scipy.linalg

    rng = np.random.default_rng(rows * cols + rank)
    jac = rng.normal(size=(rows, rank)) @ rng.normal(size=(rank, cols))
    g = rng.normal(size=cols)
    null = scipy.linalg.null_space(jac)
    want = null @ (null.T @ g)
    np.testing.assert_allclose(_null_projection(jac, g), want, atol=1e-9 * np.linalg.norm(g))
    assert np.abs(jac @ _null_projection(jac, g)).max() <= 1e-9 * np.abs(jac).max() * np.linalg.norm(g)


@pytest.mark.slow
def test_every_stable_witness_on_ei_isn_holds_an_independent_check():
    circuit = ns.Circuit.from_toml(EI_ISN)
    checked = 0
    for budget, trials in ((12, 4), (24, 4)):
        alloc = ns.allocate(circuit, budget, strategy="spread-rows", within=RECURRENT, seed=0)
        res = ns.fit(circuit, alloc, m=2, trials=trials, seed=0)
        draws = draw_trials(circuit, 2, trials, 0, stable=True)
        sigma = circuit.init_scale(alloc)
        for i in np.flatnonzero(res.outcome == _schema.PROVEN_MATCH):
            student = {k: v[i] for k, v in res.student.items()}
            y_s, w = steady_outputs(circuit, student, draws.probes[i])
            y_t, _ = steady_outputs(circuit, {k: v[i] for k, v in draws.teacher.items()}, draws.probes[i])
            rel = np.linalg.norm(y_s - y_t) / np.linalg.norm(y_t)
            assert rel < TOL, f"budget {budget} trial {i}: residual {rel:.2e}"
            assert np.linalg.eigvals(w).real.max() < 1.0, np.linalg.eigvals(w).real.max()
            for k in circuit.weight_names:  # Dale: every synapse keeps its presynaptic region's sign
                sign = circuit.region[circuit.projection[k].pre].sign
                if sign is not None:
                    assert (sign * student[k] >= 0).all(), k
            scale = np.max(np.abs(res.theta[i]) / sigma)
            assert res.witness_scale[i] == pytest.approx(scale, rel=1e-12)
            assert res.proof_kind[i] == _schema.LYAPUNOV_PROOF
            checked += 1
        assert np.isnan(res.witness_scale[res.outcome != _schema.PROVEN_MATCH]).all()
    assert checked >= 3, checked


def _v1_trial_batch(trial: int, stem: str = "v1_four_class", budget: int = 60, m: int = 8):
    """V1 steady (circuits/v1_four_class.toml, the 60-synapse four-projection allocation of
    benchmarks/bench_realistic.py, m = 8, seed 0) trial ``trial`` alone, as the fit's chain sees it: Dale's sign box
    and the stability requirement; ``(circuit, batch, teacher weights, probes)``. ``stem``, ``budget``, ``m``: another
    circuit file and its allocation of the same four-projection rule (the continuous version: 40 synapses,
    m = 2)."""
    import torch

    from neurosubset.dynamics import PlasticMap, forward
    from neurosubset.dynamics.stability import loops, max_real_eig
    from neurosubset.solvers.bounded import sign_bounds
    from neurosubset.solvers.chain import Batch, Problem

    circuit = ns.Circuit.from_toml(ROOT / "circuits" / f"{stem}.toml")
    alloc = ns.allocate(circuit, budget, fractions={"E->E": 0.25, "PV->E": 0.25, "SST->E": 0.25, "E->OUT": 0.25},
                        seed=0)
    d = draw_trials(circuit, m, trial + 1, 0, stable=True)  # paired draws: trial k is the same in every batch
    t = (lambda a: torch.as_tensor(a[trial:trial + 1], dtype=torch.float64))
    fmap = PlasticMap(circuit, alloc, {k: t(v) for k, v in d.student_init.items()}, t(d.probes))
    targets = forward(circuit, {k: t(v) for k, v in d.teacher.items()}, fmap.probes).flatten(-2)
    own = t(np.concatenate([d.student_init[k].reshape(trial + 1, -1)[:, alloc.indices[k]]
                            for k in circuit.weight_names], -1))
    found = loops(circuit)
    admissible = (lambda work, th: max_real_eig(circuit, {k: v.cpu() for k, v in work.weights(th).items()},
                                                found) < 1.0)
    batch = Batch(Problem(circuit, alloc, m, 1, affine=False, signed=True), fmap, lambda: fmap, targets, own, alloc,
                  circuit.init_scale(alloc), sign_bounds(circuit, alloc), admissible, TOL, 0, trial)
    return circuit, batch, {k: v[trial] for k, v in d.teacher.items()}, d.probes[trial]


def _signed_witness_in_the_box(circuit, batch, got):
    """A one-trial decider result that is a stable witness (``proven_match``, decision ``stable_witness``), checked
    here: every plastic value within K init SDs, every synapse of the assembled student with its presynaptic
    region's sign (Dale's law); the student's weights (name -> array)."""
    assert got.outcome[0] == _schema.PROVEN_MATCH and got.decision[0] == _schema.STABLE_WITNESS_DECISION
    theta = got.theta[0].numpy()
    assert (np.abs(theta) <= batch.plausibility_bound * batch.sigma * (1 + 1e-12)).all()
    student = {k: v[0].numpy() for k, v in batch.fmap.weights(got.theta).items()}
    for k in circuit.weight_names:
        sign = circuit.region[circuit.projection[k].pre].sign
        if sign is not None:
            assert (sign * student[k] >= 0).all(), k
    return student


def _assert_a_stable_steady_match(circuit, student, teacher, probes):
    """The student's steady outputs (solved here in numpy) reproduce the teacher's within ``TOL``, and its fixed
    point is stable (``max Re eig W < 1``)."""
    y_s, w = steady_outputs(circuit, student, probes)
    y_t, _ = steady_outputs(circuit, teacher, probes)
    assert np.linalg.norm(y_s - y_t) / np.linalg.norm(y_t) < TOL
    assert np.linalg.eigvals(w).real.max() < 1.0


@pytest.mark.slow
def test_the_lm_inside_the_plausibility_box_gives_v1_a_stable_witness_the_old_chain_left_open():
    # V1 steady trial 1: the numpy manifold search finds no stable match and the LM in the sign box alone (the
    # chain's last decider before it searched within K too) ends on an exact match that is unstable, 586 init SDs
    # out (refused: fit status unstable, the trial open). The LM inside the sign box and K init SDs
    # (StableWitness's first step, and now the chain's last LM where stability is required) ends on a stable match
    # there, Lyapunov-certified.
    from neurosubset.solvers.biological import StableWitness
    from neurosubset.solvers.chain import LevenbergMarquardtRounds
    from neurosubset.solvers.multistart import multistart

    circuit, batch, teacher, probes = _v1_trial_batch(1)
    one = np.array([0])
    free = multistart(batch.fmap, batch.targets, batch.sigma, ns.LevenbergMarquardt(), seed=batch.seed,
                      tol=batch.tol, bounds=batch.bounds, admissible=batch.admissible, first=batch.first)
    assert free.status[0] == _schema.UNSTABLE, free.status
    last = LevenbergMarquardtRounds(ns.LevenbergMarquardt()).decide(batch, one)
    assert last.outcome[0] == _schema.PROVEN_MATCH
    assert (np.abs(last.theta[0].numpy()) <= batch.plausibility_bound * batch.sigma * (1 + 1e-12)).all()
    got = StableWitness.build(ns.LevenbergMarquardt(), True).decide(batch, one)  # as the chain builds it
    assert StableWitness(box_lm=None).decide(batch, one).outcome[0] == _schema.UNDECIDED  # the numpy search alone
    # independent re-check in numpy: the box, the signs, the eigenvalues, the outputs against the teacher's
    _assert_a_stable_steady_match(circuit, _signed_witness_in_the_box(circuit, batch, got), teacher, probes)


def test_a_manifold_step_that_meets_a_face_lets_the_other_values_finish_it():
    # F(theta) = theta_1 + theta_2 = 3 from (0.5, 0.5) in the box [0, 1] x [0, 10]. The minimum-norm Gauss-Newton
    # step (1, 1) carries theta_1 through its face; clipping it alone gives (1, 1.5), residual 0.5 (what the manifold
    # search did before, and why it crept on V1). Putting theta_1 on the face and solving for theta_2 around it
    # gives (1, 2), on the manifold in one step (nearly undamped: mu = 1e-12)
    jac, theta = np.array([[1.0, 1.0]]), np.array([0.5, 0.5])
    lo, hi = np.array([0.0, 0.0]), np.array([1.0, 10.0])
    res = jac @ theta - 3.0
    new = theta + _lm_step(res, jac, 1e-12, theta, lo, hi)
    np.testing.assert_allclose(new, [1.0, 2.0], rtol=1e-10)
    # nothing at a face: the plain damped minimum-norm step -J^T (J J^T + mu s)^-1 r, s the mean squared column norm
    mu = 0.3
    step = _lm_step(np.array([-1.0]), jac, mu, theta, lo, hi)
    np.testing.assert_allclose(step, jac[0] * 1.0 / (2.0 + mu * 1.0), rtol=1e-12)


def _linear_continuous_ei():
    """A linear continuous E/I circuit with unequal taus (E 20 ms, I 10 ms, Dale's law): X(3) -> E(5), I(3) ->
    OUT(2), read out at 50 and 100 ms."""
    regions = (ns.Region("X", 3, "input"), ns.Region("E", 5, sign=1), ns.Region("I", 3, sign=-1),
               ns.Region("OUT", 2, "output"))
    projections = (ns.Projection("X", "E"), ns.Projection("X", "I"), ns.Projection("E", "E", gain=0.4),
                   ns.Projection("E", "I", gain=0.6), ns.Projection("I", "E", gain=0.6),
                   ns.Projection("I", "I", gain=0.3), ns.Projection("E", "OUT"))
    return ns.Circuit(regions, projections, dynamics="continuous", nonlinearity="linear", tau={"E": 0.02, "I": 0.01},
                      duration=0.1, dt=0.001, steps=2, readout=[0.05, 0.1], name="linear_continuous_ei")


def test_the_stability_objects_smoothed_abscissa_is_exact_for_steady_and_continuous_rules():
    """Stability.smoothed_abscissa: for a steady circuit it equals the numpy-index implementation used on steady
    students; for a continuous one with unequal taus its value lies within log(n) / beta above the largest
    ``1 + tau_max Re eig(T^-1 (W - I))`` computed here, and its gradient equals central differences."""
    beta = 20.0
    rng = np.random.default_rng(5)
    steady = ns.Circuit.from_toml(EI_ISN)
    w = {k: rng.normal(size=steady.shape(k)) * 0.1 for k in steady.weight_names}
    value, top, grad = steady.dynamics.stability(steady).smoothed_abscissa(w, beta)
    neurons = [r.name for r in steady.regions if r.role != "input"]
    pos = dict(zip(neurons, np.cumsum([0] + [steady.region[r].size for r in neurons])[:-1]))
    n = sum(steady.region[r].size for r in neurons)
    full, rows, cols, where = np.zeros((n, n)), [], [], []
    for p in steady.projections:
        if p.pre in pos:
            full[pos[p.post]:pos[p.post] + steady.region[p.post].size,
                 pos[p.pre]:pos[p.pre] + steady.region[p.pre].size] = w[p.name]
            if p.name in RECURRENT:
                i, j = np.unravel_index(np.arange(w[p.name].size), w[p.name].shape)
                rows.append(pos[p.post] + i), cols.append(pos[p.pre] + j), where.append((p.name, i, j))
    loop = [np.concatenate([np.arange(pos[r], pos[r] + steady.region[r].size) for r in ("E", "I")])]
    ref_value, ref_top, ref_grad = smoothed_abscissa(full, loop, np.concatenate(rows), np.concatenate(cols), beta)
    assert value == pytest.approx(ref_value, rel=1e-12) and top == pytest.approx(ref_top, rel=1e-12)
    np.testing.assert_allclose(np.concatenate([grad[k][i, j] for k, i, j in where]), ref_grad, atol=1e-12)

    circuit = _linear_continuous_ei()
    stab = circuit.dynamics.stability(circuit)
    w = {k: np.abs(rng.normal(size=circuit.shape(k))) * 0.5 for k in circuit.weight_names}
    taus = np.r_[np.full(5, 0.02), np.full(3, 0.01)]
    block = np.block([[w["E->E"], -w["I->E"]], [w["E->I"], -w["I->I"]]])  # signed as the circuit draws them
    w["I->E"], w["I->I"] = -w["I->E"], -w["I->I"]
    vals = 1.0 + taus.max() * np.linalg.eigvals((block - np.eye(8)) / taus[:, None]).real
    value, top, grad = stab.smoothed_abscissa(w, beta)
    assert vals.max() <= value <= vals.max() + np.log(vals.size) / beta
    assert top == pytest.approx(max(vals.max(), 0.0), rel=1e-12)
    for k in ("E->E", "I->E", "E->I", "I->I"):
        for i, j in ((0, 0), (1, 2)):
            up, down = dict(w), dict(w)
            up[k], down[k] = w[k].copy(), w[k].copy()
            up[k][i, j] += FD_STEP
            down[k][i, j] -= FD_STEP
            fd = (stab.smoothed_abscissa(up, beta)[0] - stab.smoothed_abscissa(down, beta)[0]) / (2 * FD_STEP)
            assert abs(fd - grad[k][i, j]) <= FD_RTOL * max(1.0, abs(fd)), (k, i, j, fd, grad[k][i, j])
    assert not grad["X->E"].any() and not grad["E->OUT"].any()  # inputs and read-outs move no eigenvalue
    gens = stab.generators(w)  # the certificate's matrix: T^-1 (W - I) itself for continuous circuits
    assert len(gens) == 1
    np.testing.assert_allclose(stab.hurwitz(gens[0]), (block - np.eye(8)) / taus[:, None], atol=1e-15)


def _continuous_outputs(circuit, weights, probes):
    """Outputs of a linear continuous circuit integrated here, exactly: ``T dh/dt = -h + W h + B x_k`` on each of
    the ``steps`` input intervals (one matrix exponential of the system augmented by its constant drive), read out
    at the circuit's read-out times; ``(y (m, readouts, n_out), A = T^-1 (W - I))``."""
    import scipy.linalg

    hidden = [r.name for r in circuit.regions if r.role == "hidden"]
    inputs = [r.name for r in circuit.regions if r.role == "input"]
    outputs = [r.name for r in circuit.regions if r.role == "output"]

    def offsets(names):
        sizes = [circuit.region[r].size for r in names]
        return dict(zip(names, np.cumsum([0] + sizes)[:-1])), sum(sizes)

    (ph, nh), (pi, ni), (po, no) = offsets(hidden), offsets(inputs), offsets(outputs)
    w, b, c = np.zeros((nh, nh)), np.zeros((nh, ni)), np.zeros((no, nh))
    for p in circuit.projections:
        size_post, size_pre = circuit.region[p.post].size, circuit.region[p.pre].size
        target = w if p.post in ph and p.pre in ph else b if p.post in ph else c
        rows = (ph if p.post in ph else po)[p.post]
        cols = (ph if p.pre in ph else pi)[p.pre]
        target[rows:rows + size_post, cols:cols + size_pre] += weights[p.name]
    tau = dict(circuit.tau) if isinstance(circuit.tau, tuple) else {r: circuit.tau for r in hidden}
    taus = np.concatenate([np.full(circuit.region[r].size, tau[r]) for r in hidden])
    a = (w - np.eye(nh)) / taus[:, None]
    length = circuit.duration / circuit.steps
    reads = np.round(np.asarray(circuit.readout or (circuit.duration,)) / length).astype(int)
    ys = []
    for probe in probes:  # (steps, n_in)
        h, out = np.zeros(nh), []
        for k in range(circuit.steps):
            aug = np.zeros((nh + 1, nh + 1))
            aug[:nh, :nh], aug[:nh, nh] = a, (b @ probe[k]) / taus
            h = (scipy.linalg.expm(aug * length) @ np.append(h, 1.0))[:nh]
            if k + 1 in reads:
                out.append(c @ h)
        ys.append(out)
    return np.asarray(ys), a


@pytest.mark.slow
def test_the_lm_descends_from_an_unstable_continuous_match_to_a_certified_stable_one():
    # V1 continuous trial 9: the LM's rounds inside the sign box and K init SDs end on exact matches that are all
    # unstable (status unstable: before, the trial stayed undecided). The outputs at the read-out times are entire
    # in the weights, so the matched manifold goes on through the stability boundary: the descent along it from
    # the refused match ends on a stable match, certified by a Lyapunov solve (decision stable_witness).
    from neurosubset.solvers.bounded import Bounds
    from neurosubset.solvers.chain import LevenbergMarquardtRounds
    from neurosubset.solvers.multistart import multistart

    circuit, batch, teacher, probes = _v1_trial_batch(9, "v1_four_class_continuous", 40, 2)
    box = Bounds(*batch_box(batch))
    rounds = multistart(batch.fmap, batch.targets, batch.sigma, ns.LevenbergMarquardt(), seed=batch.seed,
                        tol=batch.tol, bounds=box, admissible=batch.admissible, first=batch.first)
    assert rounds.status[0] == _schema.UNSTABLE, rounds.status
    got = LevenbergMarquardtRounds(ns.LevenbergMarquardt()).decide(batch, np.array([0]))
    student = _signed_witness_in_the_box(circuit, batch, got)
    y_s, a = _continuous_outputs(circuit, student, probes)
    y_t, a_t = _continuous_outputs(circuit, teacher, probes)
    assert np.linalg.norm(y_s - y_t) / np.linalg.norm(y_t) < TOL
    assert np.linalg.eigvals(a).real.max() < 0.0 < np.linalg.eigvals(
        _continuous_outputs(circuit, {k: v[0].numpy() for k, v in batch.fmap.weights(rounds.theta).items()},
                            probes)[1]).real.max()  # stable now; the LM's refused match was not
    assert np.linalg.eigvals(a_t).real.max() < 0.0


def test_a_continuous_students_residual_jacobian_and_certificate_are_exact():
    """_MapStudent (the descent's view of a linear continuous trial): its residual against outputs integrated here,
    its Jacobian against central differences of them, its certificate against the eigenvalues."""
    import torch

    from neurosubset.dynamics import PlasticMap
    from neurosubset.solvers.biological import _MapStudent

    circuit = _linear_continuous_ei()
    alloc = ns.allocate(circuit, 8, strategy="spread-rows", within=RECURRENT, seed=0)
    d = draw_trials(circuit, 2, 1, 0)
    t = (lambda a: torch.as_tensor(a, dtype=torch.float64))
    fmap = PlasticMap(circuit, alloc, {k: t(v) for k, v in d.student_init.items()}, t(d.probes))
    y_t, _ = _continuous_outputs(circuit, {k: v[0] for k, v in d.teacher.items()}, d.probes[0])
    y = y_t.reshape(2, -1).T  # (n_out, m), each probe's read-outs in the map's order
    st = _MapStudent(fmap, circuit.dynamics.stability(circuit), y)
    rng = np.random.default_rng(2)
    theta = np.abs(rng.normal(size=alloc.size)) * circuit.init_scale(alloc)
    signs = np.concatenate([np.full(alloc.indices[k].size, circuit.region[circuit.projection[k].pre].sign or 1.0)
                            for k in circuit.weight_names])
    theta *= signs

    def outputs(values):
        w = {k: v[0].copy() for k, v in d.student_init.items()}
        start = 0
        for k in circuit.weight_names:
            idx = alloc.indices[k]
            flat = w[k].reshape(-1)
            flat[idx] = values[start:start + idx.size]
            start += idx.size
        return _continuous_outputs(circuit, w, d.probes[0])

    y_s, a = outputs(theta)
    res, jac, rel = st.evaluate(theta)
    np.testing.assert_allclose(res, (y_s - y_t).reshape(-1), atol=1e-10 * np.abs(y_t).max())
    assert rel == pytest.approx(np.linalg.norm(y_s - y_t) / np.linalg.norm(y_t), rel=1e-8)
    for k in range(alloc.size):
        up, down = theta.copy(), theta.copy()
        up[k] += FD_STEP
        down[k] -= FD_STEP
        fd = (outputs(up)[0] - outputs(down)[0]).reshape(-1) / (2 * FD_STEP)
        np.testing.assert_allclose(jac[:, k], fd, atol=FD_RTOL * max(1.0, np.abs(fd).max()))
    assert st.certified(theta) == (np.linalg.eigvals(a).real.max() < 0.0)
    hot = theta * 1.0
    hot[:] = 0.0
    ee = slice(0, alloc.indices["E->E"].size)
    hot[ee] = 40.0 * circuit.init_scale(alloc)[ee]  # strong recurrent excitation: unstable
    assert np.linalg.eigvals(outputs(hot)[1]).real.max() > 0.0 and not st.certified(hot)


@pytest.mark.slow
def test_the_box_lms_extra_restarts_give_v1_a_stable_witness_that_four_restarts_missed():
    # V1 steady trial 12 (a 10x-effort reference run found only unstable matches on it): the stable-witness search's
    # LM inside the box with the requested solver's 4 restarts x 2 rounds (the default before) ends without a match;
    # with 3x the restarts (12 x 3 rounds, as the chain builds it now) it ends on a stable one, certified.
    from neurosubset.solvers.biological import BOX_STREAM, StableWitness
    from neurosubset.solvers.bounded import Bounds
    from neurosubset.solvers.multistart import multistart

    circuit, batch, teacher, probes = _v1_trial_batch(12)
    before = multistart(batch.fmap, batch.targets, batch.sigma, ns.LevenbergMarquardt(max_rounds=2),
                        seed=batch.seed, tol=batch.tol, bounds=Bounds(*batch_box(batch)),
                        admissible=batch.admissible, trial_ids=np.array([12]), stream=BOX_STREAM)
    assert before.status[0] != _schema.MATCHED and before.residual[0] > 1e-3, before.status
    search = StableWitness.build(ns.LevenbergMarquardt(), True)
    assert (search.box_lm.restarts, search.box_lm.max_rounds) == (12, 3)
    got = search.decide(batch, np.array([0]))
    _assert_a_stable_steady_match(circuit, _signed_witness_in_the_box(circuit, batch, got), teacher, probes)


def test_a_descent_whose_abscissa_has_stopped_falling_gives_up():
    """_on_manifold on a student whose abscissa falls by a hair per step (F = theta_1 + theta_2 = 1 in
    [-1000, 1000]^2, abscissa 2 + 1e-9 atan(theta_1): each step along the manifold lowers it by less than 1e-9,
    never towards 1) gives up after STALL_STEPS descent steps (without the rule: 66 steps, until the search leaves
    the box's interior; V1 continuous trial 4's descent, held at the box's face, ran 30 s to its cap so)."""
    from neurosubset.solvers.biological import STALL_DROP, STALL_STEPS, _on_manifold, _Search

    class Student:
        y, scale, calls = np.array([[1.0]]), 1.0, 0

        def evaluate(self, theta):
            res = np.array([theta[0] + theta[1] - self.y[0, 0]])
            return res, np.array([[1.0, 1.0]]), float(abs(res[0]))

        def abscissa(self, theta, beta):
            self.calls += 1
            value = 2.0 + 1e-9 * np.arctan(theta[0])
            return value, value, np.array([1e-9 / (1.0 + theta[0] ** 2), 0.0])

    st = Student()
    assert 1e-9 < STALL_DROP and 2 * STALL_STEPS < 66
    got = _on_manifold(st, np.array([0.5, 0.5]), np.full(2, -1e3), np.full(2, 1e3), np.ones(2),
                       _Search(200, 0.02, 20.0, 1e-8))
    assert got is None
    assert st.calls <= 2 * (STALL_STEPS + 1) + 1, st.calls  # two abscissa evaluations per descent step, plus the first
