"""Continuous-time dynamics: exact linear solutions, RK4 order, Jacobians, specs, refusals, and the benchmark stages.

References are independent of the package: the closed forms with ``scipy.linalg.expm``, ``scipy.integrate.solve_ivp``
(DOP853) for the nonlinear trajectories, the Frechet derivative ``scipy.linalg.expm_frechet`` and central finite
differences for the Jacobians, the single-layer rank theorem (SCIENCE.md) for read-out allocations, and numpy
eigenvalues of ``T^-1 (W - I)`` for stability.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import scipy.integrate
import scipy.linalg
import torch
import xarray as xr

import neurosubset as ns
from neurosubset.dynamics import continuous as _continuous
from neurosubset.dynamics.stability import max_real_eig
from neurosubset.benchmark import draw_trials
from neurosubset.circuit import Circuit, Projection, Region
from neurosubset.cli import main
from neurosubset.dynamics import DTYPE, PlasticMap, forward, torch_threads
from neurosubset.spiking import SpikingSettings, SpikingSettingsError, spikecheck, spiking_check
from neurosubset.spiking.checks import _rate_circuit, continuous_kernel_tau

EXACT_RTOL = 1e-11  # expm products vs scipy's expm: both at rounding level (~1e-14) on these well-conditioned cases
REF_RTOL = 1e-12  # solve_ivp (DOP853) tolerances of the RK4 reference, far below the RK4 errors measured (>1e-9)
FD_STEP = 1e-6  # central differences: truncation ~1e-12, rounding ~1e-10 relative on these outputs
FD_RTOL = 1e-6


def rnn(nonlinearity="linear", *, tau=0.02, duration=0.1, dt=0.005, steps=1, readout=None, n=6, n_in=2, n_out=2,
        gain=0.7, direct=False):
    """in -> rec (recurrent) -> out, optionally in -> out."""
    regions = (Region("in", n_in, "input"), Region("rec", n), Region("out", n_out, "output"))
    projections = [Projection("in", "rec", name="B"), Projection("rec", "rec", gain=gain, name="W"),
                   Projection("rec", "out", name="C")]
    if direct:
        projections.append(Projection("in", "out", name="D"))
    return Circuit(regions, tuple(projections), dynamics="continuous", nonlinearity=nonlinearity, tau=tau,
                   duration=duration, dt=dt, steps=steps, readout=readout, name=f"rnn_{nonlinearity}")


def ei(nonlinearity="linear", *, tau_e=0.02, tau_i=0.005, **kw):
    """in -> E <-> I -> out: two hidden regions with their own time constants."""
    regions = (Region("in", 2, "input"), Region("E", 4), Region("I", 3), Region("out", 2, "output"))
    projections = (Projection("in", "E"), Projection("E", "E", gain=0.6), Projection("I", "E", gain=0.6),
                   Projection("E", "I", gain=0.6), Projection("I", "I", gain=0.6), Projection("E", "out"))
    return Circuit(regions, projections, dynamics="continuous", nonlinearity=nonlinearity,
                   tau={"E": tau_e, "I": tau_i}, duration=kw.pop("duration", 0.1), dt=kw.pop("dt", 0.005), **kw)


def draw(circuit, m, seed=0):
    rng = np.random.default_rng(seed)
    return circuit.sample_weights(rng), circuit.sample_probes(m, rng)


def torch_weights(w):
    return {k: torch.as_tensor(v, dtype=DTYPE) for k, v in w.items()}


def run(circuit, w, x):
    return forward(circuit, torch_weights(w), torch.as_tensor(x, dtype=DTYPE)).numpy()


# ---------------------------------------------------------------------------------------------- exact linear
def test_linear_one_tau_equals_closed_form():
    times = [0.004, 0.03, 0.1]
    c = rnn(tau=0.02, readout=times, dt=0.002)
    w, x = draw(c, m=3)
    y = run(c, w, x).reshape(3, len(times), 2)  # (probe, time, out): time-major output vector
    eye = np.eye(6)
    for k, t in enumerate(times):
        h = np.linalg.solve(eye - w["W"], eye - scipy.linalg.expm(-(eye - w["W"]) * t / 0.02)) @ w["B"] @ x[:, 0].T
        expected = (w["C"] @ h).T
        np.testing.assert_allclose(y[:, k], expected, rtol=EXACT_RTOL, atol=1e-14,
                                   err_msg=f"t = {t}: max diff {np.abs(y[:, k] - expected).max():.2e}")


def test_linear_per_region_tau_equals_closed_form_batched_over_trials():
    c = ei(tau_e=0.02, tau_i=0.005, readout=[0.01, 0.1])
    trials = [draw(c, m=2, seed=s) for s in range(3)]
    w = {k: np.stack([t[0][k] for t in trials]) for k in c.weight_names}
    x = np.stack([t[1] for t in trials])
    y = run(c, w, x).reshape(3, 2, 2, 2)
    taus = np.r_[np.full(4, 0.02), np.full(3, 0.005)]
    for p, (wp, xp) in enumerate(trials):
        rec = np.block([[wp["E->E"], wp["I->E"]], [wp["E->I"], wp["I->I"]]])
        b = np.vstack([wp["in->E"], np.zeros((3, 2))])
        a = np.diag(1 / taus) @ (np.eye(7) - rec)
        for k, t in enumerate((0.01, 0.1)):
            h = np.linalg.solve(a, np.eye(7) - scipy.linalg.expm(-a * t)) @ np.diag(1 / taus) @ b @ xp[:, 0].T
            expected = (wp["E->out"] @ h[:4]).T
            np.testing.assert_allclose(y[p, :, k], expected, rtol=EXACT_RTOL, atol=1e-14)


def test_piecewise_input_exact_vs_rk4_limit_and_direct_projection():
    """Exact expm path against RK4 on the same linear system (a second method): RK4's error falls as dt^4."""
    c = rnn(steps=4, dt=0.001, direct=True, readout=[0.025, 0.06, 0.1])
    w, x = draw(c, m=3)
    exact = run(c, w, x)
    wt, xt = torch_weights(w), torch.as_tensor(x, dtype=DTYPE)
    idx = _continuous.time_index(c)
    h = _continuous._rk4("linear", wt["W"], wt["B"], _continuous.neuron_taus(c), xt, c.dt, 25, list(idx))
    xs = xt[:, [(i - 1) // 25 for i in idx], :]
    y = (h @ wt["C"].T + xs @ wt["D"].T).flatten(-2).numpy()
    np.testing.assert_allclose(y, exact, rtol=1e-6, atol=1e-9)  # RK4 at dt/tau = 0.05: measured 2e-7 relative
    # exact integration has no step error: a finer grid gives the same outputs
    np.testing.assert_allclose(run(dataclasses.replace(c, dt=0.0005), w, x), exact, rtol=1e-12, atol=1e-14)


# ---------------------------------------------------------------------------------------------- RK4 order
def reference(c, w, x):
    """solve_ivp (DOP853) over each input interval of the read-out at the end, ``(probe, n_out)``."""
    phi = {"tanh": np.tanh, "softplus": lambda z: np.logaddexp(0.0, z)}[c.nonlinearity]
    length = c.duration / c.steps
    out = []
    for probe in x:
        h = np.zeros(w["W"].shape[0])
        for k in range(c.steps):
            drive = w["B"] @ probe[k]
            sol = scipy.integrate.solve_ivp(lambda t, v: (phi(w["W"] @ v + drive) - v) / c.tau, (0, length), h,
                                            method="DOP853", rtol=REF_RTOL, atol=REF_RTOL)
            h = sol.y[:, -1]
        out.append(w["C"] @ h)
    return np.array(out)


@pytest.mark.parametrize("nonlinearity", ["tanh", "softplus"])
def test_rk4_converges_at_fourth_order(nonlinearity):
    base = rnn(nonlinearity, steps=4, gain=1.5, dt=0.005)
    w, x = draw(base, m=2, seed=3)
    x = 2 * x  # into the nonlinear range of tanh
    ref = reference(base, w, x)
    dts = [0.005, 0.0025, 0.00125]
    errors = [np.abs(run(dataclasses.replace(base, dt=dt), w, x) - ref).max() for dt in dts]
    slopes = np.diff(np.log(errors)) / np.diff(np.log(dts))
    assert np.all((slopes > 3.7) & (slopes < 4.3)), f"errors {errors}, slopes {slopes} (expected 4)"
    assert errors[-1] < 1e-6, errors


# ---------------------------------------------------------------------------------------------- Jacobians
def _fd(fn, theta):
    cols = []
    for j in range(theta.shape[-1]):  # every problem's entry j at once (problems are independent)
        e = torch.zeros_like(theta)
        e[..., j] = FD_STEP
        cols.append((fn(theta + e) - fn(theta - e)) / (2 * FD_STEP))
    return torch.stack(cols, dim=-1)


@pytest.mark.parametrize("nonlinearity,budget,direct", [("linear", 5, False), ("tanh", 5, True), ("tanh", 20, False),
                                                         ("softplus", 9, True), ("relu", 7, False)])
def test_jacobian_equals_autograd_and_finite_differences(nonlinearity, budget, direct):
    c = rnn(nonlinearity, steps=2, gain=1.2, dt=0.01, readout=[0.05, 0.1], n=5, direct=direct)
    alloc = ns.allocate(c, budget, strategy="random", seed=1)  # every block kind: B, W, C (and D)
    trials = [draw(c, m=2, seed=s) for s in range(2)]
    frozen = {k: torch.as_tensor(np.stack([t[0][k] for t in trials]), dtype=DTYPE) for k in c.weight_names}
    probes = torch.as_tensor(np.stack([t[1] for t in trials]), dtype=DTYPE)
    fmap = PlasticMap(c, alloc, frozen, probes)
    theta = torch.as_tensor(np.random.default_rng(2).standard_normal((2, budget)) * 0.3, dtype=DTYPE)
    with torch_threads(1):  # as fit does: two threads on a loaded 2-core machine made matrix_exp's JVP 100x slower
        _check_jacobian(fmap, theta, budget)


def _check_jacobian(fmap, theta, budget):
    jac = fmap.jacobian(theta)  # nonlinear: RK4 forward sensitivities; linear: autograd through matrix_exp
    assert jac.shape == (2, 8, budget)
    # torch.func (forward mode when M <= E = 8, reverse mode otherwise), and the outputs beside the Jacobian
    torch.testing.assert_close(jac, fmap.jacobian(theta, method="autograd"), rtol=1e-10, atol=1e-13)
    value, jac2 = fmap.value_and_jacobian(theta)
    torch.testing.assert_close(value, fmap(theta), rtol=1e-13, atol=1e-15)
    torch.testing.assert_close(jac2, jac, rtol=1e-13, atol=1e-15)
    for p in range(2):
        auto = torch.autograd.functional.jacobian(lambda t: fmap(t.unsqueeze(0), torch.tensor([p]))[0], theta[p])
        torch.testing.assert_close(jac[p], auto, rtol=1e-10, atol=1e-13)
    fd = _fd(fmap, theta)
    torch.testing.assert_close(jac, fd, rtol=FD_RTOL, atol=1e-8)


def test_linear_jacobian_equals_expm_frechet():
    """dy/dW_ij of a linear circuit, constant input: the Frechet derivative of expm of the augmented generator."""
    c = rnn(tau=0.02, duration=0.05, dt=0.005, n=4)
    w, x = draw(c, m=2)
    alloc = ns.Allocation.from_masks(c, {"B": np.zeros((4, 2), bool), "W": np.ones((4, 4), bool),
                                         "C": np.zeros((2, 4), bool)})
    fmap = PlasticMap(c, alloc, {k: torch.as_tensor(v, dtype=DTYPE)[None] for k, v in w.items()},
                      torch.as_tensor(x, dtype=DTYPE)[None])
    jac = fmap.jacobian(torch.as_tensor(w["W"].ravel(), dtype=DTYPE)[None])[0].numpy()  # (m * n_out, 16)
    gen = np.zeros((6, 6))
    gen[:4, :4], gen[:4, 4:] = (w["W"] - np.eye(4)) / 0.02, w["B"] / 0.02
    expected = np.zeros_like(jac)
    for k in range(16):
        d = np.zeros((6, 6))
        d[k // 4, k % 4] = 0.05 / 0.02
        frechet = scipy.linalg.expm_frechet(gen * 0.05, d, compute_expm=False)
        expected[:, k] = (w["C"] @ frechet[:4, 4:] @ x[:, 0].T).T.ravel()
    np.testing.assert_allclose(jac, expected, rtol=1e-9, atol=1e-13)



@pytest.mark.parametrize("nonlinearity", ["linear", "tanh", "softplus"])
def test_reverse_mode_jacobians_equal_forward_sensitivities_autograd_and_finite_differences(nonlinearity):
    """Two hidden regions with their own taus, three input intervals, read-outs inside and at the end of
    intervals, plastic synapses in every block kind, three problems batched: the reverse-mode Jacobian
    (tangents: through the exact solution, or the RK4 scheme's discrete adjoint) against torch.func
    (autograd through matrix_exp / the scheme), the RK4 forward sensitivities and central differences."""
    c = ei(nonlinearity, tau_e=0.03, tau_i=0.004, duration=0.12, dt=0.002, steps=3, readout=[0.03, 0.04, 0.12])
    alloc = ns.allocate(c, 14, fractions={"in->E": 0.3, "E->E": 0.2, "I->E": 0.2, "E->I": 0.1, "E->out": 0.2},
                        seed=3)
    assert all(alloc.counts[w] for w in ("in->E", "E->E", "I->E", "E->I", "E->out"))
    trials = [draw(c, m=2, seed=s) for s in range(3)]
    frozen = {k: torch.as_tensor(np.stack([t[0][k] for t in trials]), dtype=DTYPE) for k in c.weight_names}
    probes = torch.as_tensor(np.stack([t[1] for t in trials]), dtype=DTYPE)
    fmap = PlasticMap(c, alloc, frozen, probes)
    theta = torch.as_tensor(np.random.default_rng(4).standard_normal((3, alloc.size)) * 0.3, dtype=DTYPE)
    with torch_threads(1):
        value, jac = fmap.value_and_jacobian(theta)  # the reverse-mode path the solvers take
        torch.testing.assert_close(value, fmap(theta), rtol=0, atol=0)  # the outputs are forward()'s, bit for bit
        torch.testing.assert_close(jac, fmap.jacobian(theta, method="autograd"), rtol=1e-10, atol=1e-12)
        if nonlinearity != "linear":
            weights = fmap.weights(theta)
            _, sens = _continuous.rk4_jacobian(c, weights, probes, fmap.index, alloc.size)
            torch.testing.assert_close(jac, sens, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(jac, _fd(fmap, theta), rtol=FD_RTOL, atol=1e-8)


def test_each_problem_integrates_with_its_own_panels_beside_a_far_one():
    """Three problems batched, one with its plastic values 10x out (more quadrature panels per segment than
    problem 0, outputs ~1e9): each problem's outputs and Jacobian equal the ones it has alone and autograd's through
    matrix_exp, and the far one no longer sets the panel count of the others (it is integrated in a group of its
    own)."""
    c = ei(tau_e=0.03, tau_i=0.004, duration=0.12, dt=0.002, steps=3, readout=[0.04, 0.12])
    alloc = ns.allocate(c, 10, fractions={"in->E": 0.2, "E->E": 0.4, "I->E": 0.2, "E->I": 0.2}, seed=3)
    trials = [draw(c, m=2, seed=s) for s in range(3)]
    frozen = {k: torch.as_tensor(np.stack([t[0][k] for t in trials]), dtype=DTYPE) for k in c.weight_names}
    fmap = PlasticMap(c, alloc, frozen, torch.as_tensor(np.stack([t[1] for t in trials]), dtype=DTYPE))
    theta = torch.as_tensor(np.random.default_rng(4).standard_normal((3, alloc.size)) * 0.3, dtype=DTYPE)
    theta[1] *= 10.0
    groups = _continuous._panel_groups(c, fmap.weights(theta), fmap.probes)
    group_of = {p: g for g, sel in enumerate(groups or []) for p in sel.tolist()}
    assert groups is not None and group_of[0] != group_of[1], groups  # the far one apart from problem 0
    with torch_threads(1):
        value, jac = fmap.value_and_jacobian(theta)
        torch.testing.assert_close(value, fmap(theta), rtol=0, atol=0)
        for p in range(3):
            alone_value, alone_jac = fmap.subset(torch.tensor([p])).value_and_jacobian(theta[p:p + 1])
            torch.testing.assert_close(value[p:p + 1], alone_value, rtol=1e-13, atol=0)
            torch.testing.assert_close(jac[p:p + 1], alone_jac, rtol=1e-12, atol=1e-12 * float(jac[p].abs().max()))
        auto = fmap.jacobian(theta, method="autograd")
        for p in range(3):
            torch.testing.assert_close(jac[p], auto[p], rtol=1e-9, atol=1e-10 * float(auto[p].abs().max()))


def test_linear_reverse_mode_over_many_panels_equals_expm_frechet():
    """A segment 60 taus long (fast I cells, strong recurrence: dozens of quadrature panels) against the Frechet
    derivative of the augmented generator's expm (scipy), every recurrent and input synapse plastic."""
    c = ei(tau_e=0.01, tau_i=0.002, duration=0.12, dt=0.004)
    w, x = draw(c, m=2, seed=5)
    masks = {k: c.structure[k] & (c.projection[k].post != "out") for k in c.weight_names}
    alloc = ns.Allocation.from_masks(c, masks)
    fmap = PlasticMap(c, alloc, {k: torch.as_tensor(v, dtype=DTYPE)[None] for k, v in w.items()},
                      torch.as_tensor(x, dtype=DTYPE)[None])
    theta = torch.cat([torch.as_tensor(w[k].ravel()[alloc.indices[k]], dtype=DTYPE) for k in c.weight_names])[None]
    with torch_threads(1):
        jac = fmap.value_and_jacobian(theta)[1][0].numpy()
    taus = np.array([0.01] * 4 + [0.002] * 3)
    w_rec = np.block([[w["E->E"], w["I->E"]], [w["E->I"], w["I->I"]]])
    w_in = np.vstack([w["in->E"], np.zeros((3, 2))])
    w_out = np.hstack([w["E->out"], np.zeros((2, 3))])
    gen = np.zeros((9, 9))
    gen[:7, :7], gen[:7, 7:] = (w_rec - np.eye(7)) / taus[:, None], w_in / taus[:, None]
    expected = []
    for name in c.weight_names:
        for flat in alloc.indices[name]:
            i, j = divmod(int(flat), c.shape(name)[1])
            d = np.zeros((9, 9))
            row = i + (4 if c.projection[name].post == "I" else 0)
            col = j + {"in": 7, "E": 0, "I": 4}[c.projection[name].pre]
            d[row, col] = 0.12 / taus[row]
            frechet = scipy.linalg.expm_frechet(gen * 0.12, d, compute_expm=False)
            expected.append((w_out @ frechet[:7, 7:] @ x[:, 0].T).T.ravel())
    np.testing.assert_allclose(jac, np.stack(expected, axis=1), rtol=1e-9, atol=1e-12 * np.abs(jac).max())


# ---------------------------------------------------------------------------------------------- specs
@pytest.mark.parametrize("make", [lambda: rnn("tanh", steps=2, readout=[0.05, 0.1]), lambda: ei("softplus"),
                                  lambda: ei("linear", steps=5, tau_e=0.03, tau_i=0.01)])
def test_toml_round_trip(make, tmp_path):
    c = make()
    again = Circuit.from_toml_text(c.to_toml())
    assert again == c, (again, c)
    path = tmp_path / "c.toml"
    path.write_text(c.to_toml())
    assert Circuit.from_toml(path).to_dict() == {**c.to_dict(), "name": c.name}


def test_shipped_example_loads_and_simulates():
    c = Circuit.from_toml(f"{__file__.rsplit('/tests/', 1)[0]}/circuits/ei_continuous.toml")
    assert c.dynamics.name == "continuous" and isinstance(c.tau, tuple)
    w, x = draw(c, m=2)
    ds = ns.simulate(c, w, x, times="all", hidden=True)
    assert ds.time.attrs["units"] == "s" and ds.time.size == _continuous.n_dt(c)
    assert ds.output.dims == ("probe", "time", "neuron") and np.isfinite(ds.output).all()
    np.testing.assert_allclose(ds.output.isel(time=-1).values.ravel(), run(c, w, x)[:, -c.n_neurons("output"):]
                               .ravel(), rtol=1e-12)


@pytest.mark.parametrize("change,field", [
    ({"tau": 0.0}, "'tau'"), ({"tau": -0.01}, "'tau'"), ({"dt": 0.2}, "'dt'"), ({"dt": 0.003}, "'duration'"),
    ({"steps": 3}, "'steps'"), ({"nonlinearity": "sigmoid"}, "'nonlinearity'"), ({"readout": [0.0123]}, "'readout'"),
    ({"readout": [0.1, 0.05]}, "'readout'"), ({"duration": None}, "'duration'"),
])
def test_bad_input_refused_in_one_line(change, field):
    kw = {"tau": 0.02, "duration": 0.1, "dt": 0.005, "steps": 2, "nonlinearity": "tanh", "readout": None, **change}
    regions = (Region("in", 2, "input"), Region("rec", 3), Region("out", 1, "output"))
    projections = (Projection("in", "rec"), Projection("rec", "rec"), Projection("rec", "out"))
    with pytest.raises(ns.CircuitSpecError) as info:
        Circuit(regions, projections, dynamics="continuous", **kw)
    assert field in str(info.value) and "\n" not in str(info.value), str(info.value)


def test_per_region_and_foreign_fields_refused():
    with pytest.raises(ns.CircuitSpecError, match=r"'tau\.I' parameter must be > 0") as info:
        ei(tau_i=-1.0)
    assert "\n" not in str(info.value)
    with pytest.raises(ns.CircuitSpecError, match="'tau' parameter lacks hidden regions"):
        dataclasses.replace(ei(), tau={"E": 0.02})
    with pytest.raises(ns.CircuitSpecError, match="'tau' parameter applies to dynamics 'continuous' only"):
        base = ns.linear_rnn(3, 1, 1, steps=2)
        Circuit(base.regions, base.projections, dynamics="discrete", steps=2, tau=0.1)
    with pytest.raises(ns.CircuitSpecError, match="'nonlinearity' parameter 'tanh' needs dynamics 'continuous'"):
        ns.feedforward([2, 3, 1], "tanh")


# ---------------------------------------------------------------------------------------------- stability
def test_slow_inhibition_destabilises_and_stable_draws_use_the_continuous_criterion():
    regions = (Region("in", 1, "input"), Region("E", 1, sign=1), Region("I", 1, sign=-1), Region("out", 1, "output"))
    projections = (Projection("in", "E"), Projection("E", "E"), Projection("I", "E"), Projection("E", "I"),
                   Projection("I", "I"), Projection("E", "out"))
    w = {"in->E": np.ones((1, 1)), "E->E": np.full((1, 1), 2.0), "I->E": np.full((1, 1), -2.0),
         "E->I": np.full((1, 1), 2.0), "I->I": np.full((1, 1), -0.5), "E->out": np.ones((1, 1))}
    make = (lambda ti: Circuit(regions, projections, dynamics="continuous", tau={"E": 0.01, "I": ti}, duration=0.1,
                               dt=0.01))
    rec = np.array([[2.0, -2.0], [2.0, -0.5]])
    for tau_i, stable in ((0.01, True), (0.04, False)):
        gen = np.diag([1 / 0.01, 1 / tau_i]) @ (rec - np.eye(2))
        assert (np.linalg.eigvals(gen).real.max() < 0) == stable
        assert (max_real_eig(make(tau_i), w) < 1.0) == stable
    # equal taus: the reported value is max Re(eig W) itself (0.75 here)
    assert abs(max_real_eig(make(0.01), w) - np.linalg.eigvals(rec).real.max()) < 1e-12
    # draws conditioned on stability: a spec with ~a third of its draws unstable, every kept teacher stable
    c = dataclasses.replace(ei(tau_e=0.01, tau_i=0.03), projections=tuple(
        dataclasses.replace(p, gain=0.9) if p.pre in ("E", "I") and p.post in ("E", "I") else p
        for p in ei().projections))
    drawn = draw_trials(c, m=1, trials=12, seed=0, stable=True)
    taus = np.r_[np.full(4, 0.01), np.full(3, 0.03)]
    for t in range(12):
        rec = np.block([[drawn.teacher["E->E"][t], drawn.teacher["I->E"][t]],
                        [drawn.teacher["E->I"][t], drawn.teacher["I->I"][t]]])
        assert np.linalg.eigvals((rec - np.eye(7)) / taus[:, None]).real.max() < 0
    assert drawn.teacher_rejected.sum() + drawn.student_rejected.sum() > 0, "no draw was rejected: weak test"


# ---------------------------------------------------------------------------------------------- benchmark stages
def test_match_probability_readout_allocations_follow_the_rank_theorem():
    """C plastic: row i matches iff k_i >= min(m, n_hidden, n_in * steps) (single-layer theorem), MP 1 or 0."""
    c = rnn("tanh", steps=2, n=6)
    m = 3  # min(3, 6, 4) = 3 plastic synapses needed per output row
    spread = ns.allocate(c, 6, strategy="spread-rows", within=["C"])
    single = ns.allocate(c, 6, strategy="concentrated-rows", within=["C"])
    ds = ns.match_probability(c, spread, m=m, trials=6, dale=False)
    assert float(ds.mp) == 1.0 and ds.attrs["decision_kind"] == "exact", float(ds.mp)
    assert ds.attrs["certificate_verdict"] == "positive"
    ds = ns.match_probability(c, single, m=m, trials=6, dale=False)
    assert float(ds.mp) == 0.0 and ds.attrs["certificate_verdict"] == "zero", float(ds.mp)


def test_fit_levenberg_marquardt_on_an_underdetermined_tanh_circuit():
    c = rnn("tanh", steps=2, n=4, dt=0.01, duration=0.06)
    lm = ns.LevenbergMarquardt(restarts=2, max_rounds=1, iterations=100)  # MP < 1 is real here (tanh saturates)
    res = ns.fit(c, ns.allocate(c, 8, within=["B"]), m=1, trials=3, dale=False, solver=lm)
    assert res.solver == "lm" and res.matched.sum() >= 2, res.residual  # 8 unknowns, 2 equations
    for t in np.flatnonzero(res.matched):  # the fitted student, simulated on its own, reproduces the teacher
        one = (lambda w: {k: v[t] for k, v in w.items()})
        student = ns.simulate(c, one(res.student), res.trials.probes[t]).output.values
        teacher = ns.simulate(c, one(res.trials.teacher), res.trials.probes[t]).output.values
        np.testing.assert_allclose(student, teacher, rtol=1e-7, atol=1e-9)


@pytest.mark.slow
def test_fit_reports_final_state_stability_of_nonlinear_students():
    """Per trial max_real_eig = max(0, 1 + tau_max max_p max Re eig J_p), J_p = T^-1 (-I + diag(phi'(z)) W) at
    probe p's final state: against numpy's eigenvalues, the final state from solve_ivp and the fitted weights."""
    c = ei("tanh", tau_e=0.02, tau_i=0.01, steps=2, duration=0.06, dt=0.0005)
    lm = ns.LevenbergMarquardt(restarts=1, max_rounds=1, iterations=30)
    alloc = ns.allocate(c, 6, within=["in->E", "I->E"], seed=0)
    res = ns.fit(c, alloc, m=2, trials=2, seed=0, dale=False, solver=lm)
    taus = np.r_[np.full(4, 0.02), np.full(3, 0.01)]
    expected = []
    for t in range(2):
        w = {k: v[t] for k, v in res.student.items()}
        rec = np.block([[w["E->E"], w["I->E"]], [w["E->I"], w["I->I"]]])
        worst = -np.inf
        for x in res.trials.probes[t]:
            h = np.zeros(7)
            for k in range(c.steps):
                drive = np.r_[w["in->E"] @ x[k], np.zeros(3)]
                h = scipy.integrate.solve_ivp(lambda _, v: (np.tanh(rec @ v + drive) - v) / taus, (0, 0.03), h,
                                              method="DOP853", rtol=REF_RTOL, atol=REF_RTOL).y[:, -1]
            jac = (np.diag(1 - np.tanh(rec @ h + drive) ** 2) @ rec - np.eye(7)) / taus[:, None]
            worst = max(worst, np.linalg.eigvals(jac).real.max())
        expected.append(max(0.0, 1 + 0.02 * worst))
    np.testing.assert_allclose(res.max_real_eig, expected, rtol=0, atol=1e-7)  # RK4 at dt/tau = 0.05
    assert res.student_stable.tolist() == [e < 1 for e in expected]
    ds = ns.results.fit_dataset(c, alloc, res, m=2, seed=0)
    np.testing.assert_array_equal(ds.max_real_eig.values, res.max_real_eig)
    assert "steady scale" in ds.max_real_eig.attrs["long_name"] + ds.max_real_eig.attrs["comment"]
    # stable=True does not act on it: the same fit with stable=False matches the same trials
    loose = ns.fit(c, alloc, m=2, trials=2, seed=0, dale=False, solver=lm, stable=False)
    np.testing.assert_array_equal(loose.matched, res.matched)


@pytest.mark.parametrize("nonlinearity", ["linear", "tanh", "relu"])
def test_certify_continuous(nonlinearity):
    c = rnn(nonlinearity, steps=2, n=6)
    m = 3
    for strategy, k_rows in (("spread-rows", [3, 3]), ("concentrated-rows", [6, 0])):
        cert = ns.certify(c, ns.allocate(c, 6, strategy=strategy, within=["C"]), m=m)
        assert cert.plastic_rank == sum(min(k, m, 6, 2 * 2) for k in k_rows), cert
        assert cert.method == "autograd" and not cert.exact
        expected = "unproven" if nonlinearity == "relu" else "positive" if strategy == "spread-rows" else "zero"
        assert cert.verdict == expected, (strategy, cert.verdict)
    with pytest.raises(ns.TheoryError, match="'exact' needs polynomial or rational outputs"):
        ns.certify(c, ns.allocate(c, 6, within=["C"]), m=m, method="exact")


def test_sweep_accepts_a_continuous_circuit():
    c = rnn("linear", steps=2, n=6)
    ds = ns.sweep(c, budget=[6], m=[3], strategy=["spread-rows", "concentrated-rows"], within=["C"], trials=4,
                  dale=False)
    mp = ds.mp.squeeze().values
    np.testing.assert_array_equal(mp, [1.0, 0.0])


# ---------------------------------------------------------------------------------------------- spiking, simulate
def test_spiking_check_maps_only_linear_circuits_with_the_kernel_tau():
    cfg = SpikingSettings(tau=0.02)
    w, _ = draw(rnn(tau=0.02, n=4), m=1)
    for bad in (rnn("tanh", tau=0.02, n=4), rnn(tau=0.03, n=4)):
        with pytest.raises(SpikingSettingsError, match="continuous circuits only when linear with tau") as info:
            spiking_check(bad, w, np.zeros((1, 2)), settings=cfg)
        assert "\n" not in str(info.value)
    # the twin's fixed point is the continuous circuit's long-time limit (constant input, t = 5 s >> tau)
    long = rnn(tau=0.02, n=4, gain=0.5, duration=5.0, dt=0.05)
    x = np.random.default_rng(0).standard_normal((3, 2))
    twin, _ = _rate_circuit(long, cfg, x)
    assert twin.dynamics.name == "steady"
    np.testing.assert_allclose(run(long, w, x[:, None, :]), run(twin, w, x), rtol=1e-9, atol=1e-12)


@pytest.mark.requires_brian2
@pytest.mark.slow
def test_spikecheck_takes_the_circuit_tau_and_refuses_what_it_cannot_map(tmp_path, capsys):
    """Fit then compare on a linear continuous circuit (duration 50 tau, so its read-out is at the fixed point to
    e^-25): the kernel tau is the circuit's, the teacher's stationary rate model is numpy's C (I - W)^-1 B x, and
    the fitted student's stationary rates equal the teacher's."""
    c = rnn(tau=0.02, n=3, n_in=2, n_out=2, gain=0.5, duration=1.0, dt=0.02)
    alloc = ns.allocate(c, 6, within=["C"], seed=0)
    ds = spikecheck(c, alloc, 2, seed=1, settings=SpikingSettings(tau=0.02, duration=0.3, repeats=2))
    assert float(ds["tau"]) == 0.02 and ds.attrs["matched"] == 1 and ds.attrs["duration_over_tau"] == 50.0
    res = ns.fit(c, alloc, 2, trials=1, seed=1)  # the same draw
    w = {k: v[0] for k, v in res.trials.teacher.items()}
    x = res.trials.probes[0][:, 0, :]
    y = w["C"] @ np.linalg.solve(np.eye(3) - w["W"], w["B"] @ x.T)  # (n_out, probe), rate-model units
    r0 = float(ds["rate_unit"])
    np.testing.assert_allclose(ds.rate_model_teacher.values[1] - ds.rate_model_teacher.values[0],
                               r0 * (y[:, 1] - y[:, 0]), rtol=1e-9)
    fitted = ds.rate_model_difference.sel(student="fitted").values
    assert np.abs(fitted).max() < 1e-6 * r0, fitted
    # refusals, each one line naming what cannot be mapped (before any fit)
    cases = [(rnn("tanh", tau=0.02), "its nonlinearity 'tanh'"), (ei(), "per-region tau"),
             (rnn(tau=0.02, steps=2, dt=0.01), "changes over 2 intervals")]
    for bad, message in cases:
        with pytest.raises(SpikingSettingsError, match=message) as info:
            spikecheck(bad, ns.allocate(bad, 2, seed=0), 1)
        assert "\n" not in str(info.value)
    # an explicit tau other than the circuit's is refused (the mapping holds only at the circuit's tau; the default,
    # tau=None, takes the circuit's)
    with pytest.raises(SpikingSettingsError, match=r"'tau' setting \(0.05 s\) must equal the tau") as info:
        spikecheck(c, alloc, 2, settings=SpikingSettings(tau=0.05))
    assert "\n" not in str(info.value)
    assert continuous_kernel_tau(ei(tau_e=0.03, tau_i=0.03)) == 0.03  # equal per-region taus map
    # the CLI takes the circuit's tau when --tau is not given
    spec = tmp_path / "c.toml"
    spec.write_text(c.to_toml())
    out = tmp_path / "s.nc"
    code = main(["spikecheck", str(spec), "--budget", "6", "--within", "C", "--m", "2", "--seed", "1",
                 "--duration", "0.3", "--repeats", "2", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    with xr.open_dataset(out) as back:
        assert float(back["tau"]) == 0.02


def test_simulate_refuses_bad_arguments():
    c = rnn("tanh")
    w, x = draw(c, m=2)
    with pytest.raises(ns.ParameterError, match="'times' parameter must be increasing times on the dt grid"):
        ns.simulate(c, w, x, times=[0.0123])
    with pytest.raises(ns.ParameterError, match="'probes' parameter must have shape"):
        ns.simulate(c, w, x[:, 0])
    with pytest.raises(ns.ParameterError, match=r"Weight 'B' must have shape \(3, 1\)"):
        ns.simulate(ns.linear_rnn(3, 1, 1, steps=2), w, x)  # every dynamics simulates; these are not its weights


def test_final_jacobian_and_theory_helpers():
    """max_real_jacobian against numpy on the returned hidden rates; optimal allocation and exact refusals."""
    c = ei("tanh", tau_e=0.02, tau_i=0.01, steps=2)
    w, x = draw(c, m=2)
    ds = ns.simulate(c, w, x, hidden=True)
    rec = np.block([[w["E->E"], w["I->E"]], [w["E->I"], w["I->I"]]])
    taus = np.r_[np.full(4, 0.02), np.full(3, 0.01)]
    for p in range(2):
        h = ds.hidden_rate.values[p, -1]
        z = rec @ h + np.r_[w["in->E"] @ x[p, -1], np.zeros(3)]
        jac = (np.diag(1 - np.tanh(z) ** 2) @ rec - np.eye(7)) / taus[:, None]
        assert abs(ds.max_real_jacobian.values[p] - np.linalg.eigvals(jac).real.max()) < 1e-9
    # linear continuous: the greedy optimum of 6 read-out synapses at m = 3 gives each output row 3 (MP = 1)
    lin = rnn(steps=2, n=6)
    best = ns.optimal_allocation(lin, 6, m=3, within=["C"])
    assert sorted(best.masks["C"].sum(axis=1).tolist()) == [3, 3], best.masks["C"]
    from neurosubset.theory.modular_ranks import mod_jacobian
    with pytest.raises(ns.TheoryError, match="continuous circuit 'rnn_linear' has none"):
        mod_jacobian(lin, *draw(lin, m=2), 2**31 - 1)
