"""Scale (issue 16): trials in chunks decide exactly as in one batch, ``device=``, the certificate's "zero" skip."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import xarray as xr

import neurosubset as ns
from neurosubset._memory import chunk_trials, per_trial_bytes
from neurosubset.benchmark import draw_trials
from neurosubset.circuit import Circuit, Projection, Region

# steady circuits solve I - W by batched LU, whose last bit can depend on a matrix's place in the batch
# (neurosubset/solvers/lm.py); residuals of matched trials sit near 1e-15, so 1e-12 separates rounding from a change
STEADY_RTOL = 1e-12


def _layer():
    layer = ns.feedforward([8, 5])
    return layer, ns.allocate(layer, 16, strategy="spread-rows", seed=3)  # >= 3 per row: MP = 1 at m = 3


def _rnn():
    rnn = ns.linear_rnn(6, 2, 2, steps=3, gain=1.0)
    return rnn, ns.allocate(rnn, 10, strategy="spread-rows", within=["W"], seed=0)


def _steady():
    regions = (Region("X", 3, "input"), Region("H", 8), Region("O", 2, "output"))
    projections = (Projection("X", "H", 0.6, 1.0), Projection("H", "H", 0.4, 0.5), Projection("H", "O", 1.0, 1.0))
    circuit = Circuit(regions, projections, dynamics="steady", name="small_steady")
    return circuit, ns.allocate(circuit, 8, strategy="spread-rows", within=["H->H"], seed=1)


@pytest.mark.parametrize("make, m, trials", [(_layer, 3, 7), (_rnn, 2, 5)])
def test_chunked_trials_give_the_identical_dataset(make, m, trials):
    # feed-forward (exact least squares) and discrete (LM with restarts): bit for bit, whatever the chunk size
    circuit, alloc = make()
    whole = ns.match_probability(circuit, alloc, m=m, trials=trials, seed=4, return_weights=True)
    assert int(whole.matched.sum()) > 0, whole.residual.values
    for chunk in (1, 2, trials - 1):
        parts = ns.match_probability(circuit, alloc, m=m, trials=trials, seed=4, return_weights=True, chunk=chunk)
        xr.testing.assert_identical(parts, whole)


def test_chunked_lm_restarts_use_the_global_trial_seeds():
    # the LM's restarts of trial i come from SeedSequence(seed, (i, 1, round)): a chunk starting at trial 3 must
    # reproduce trials 3.. of the whole batch (a chunk-local index would give trial 0's restarts to trial 3)
    circuit, alloc = _rnn()
    solver = ns.LevenbergMarquardt(restarts=2, max_rounds=2, iterations=5)  # too few iterations to converge
    whole = ns.fit(circuit, alloc, 2, 6, seed=1, solver=solver)
    parts = ns.fit(circuit, alloc, 2, 6, seed=1, solver=solver, chunk=3)
    np.testing.assert_array_equal(parts.theta, whole.theta)
    np.testing.assert_array_equal(parts.mp_by_round, whole.mp_by_round)
    assert not np.array_equal(whole.theta[:3], whole.theta[3:])


def test_chunked_steady_trials_agree_to_rounding():
    circuit, alloc = _steady()
    kw = dict(dale=False, stable=False, solver=ns.LevenbergMarquardt(restarts=2, max_rounds=2))
    whole = ns.fit(circuit, alloc, 2, 6, seed=2, **kw)
    for chunk in (1, 4):
        parts = ns.fit(circuit, alloc, 2, 6, seed=2, chunk=chunk, **kw)
        np.testing.assert_array_equal(parts.matched, whole.matched)
        np.testing.assert_array_equal(parts.status, whole.status)
        np.testing.assert_allclose(parts.residual, whole.residual, rtol=0, atol=STEADY_RTOL)
        for k in circuit.weight_names:  # the draws themselves never depend on the chunk
            np.testing.assert_array_equal(parts.trials.teacher[k], whole.trials.teacher[k])
    assert whole.matched.sum() >= 3, whole.residual  # a non-trivial comparison: most trials match


def test_chunk_size_follows_the_memory_budget():
    circuit, alloc = _layer()
    one = per_trial_bytes(circuit, alloc.size, 3)
    # feed-forward 8 -> 5, one problem per trial: draws (3 weight copies, probes, outputs), activity, Jacobian
    weights, equations = 8 * 5, 3 * 5
    expected = 8 * (3 * weights + 3 * 8 + 2 * equations) + int(8 * 4.0 * 3 * 13) + int(8 * 2.0 * equations * 16)
    assert one == expected, (one, expected)
    assert chunk_trials(circuit, alloc, 3, 100, max_memory=3.5 * one) == 3
    assert chunk_trials(circuit, alloc, 3, 100, max_memory=one / 10) == 1  # never below one trial
    assert chunk_trials(circuit, alloc, 3, 100, available=10 ** 12) == 100
    assert chunk_trials(circuit, alloc, 3, 10 ** 6, available=10 ** 12) == 2 ** 30 // one  # default cap: 1 GiB
    assert chunk_trials(circuit, alloc, 3, 100, chunk=7) == 7
    with pytest.raises(ns.ParameterError, match="'chunk' parameter must be >= 1"):
        chunk_trials(circuit, alloc, 3, 100, chunk=0)
    with pytest.raises(ns.ParameterError, match="one trial at a time.*only 'm' helps"):
        chunk_trials(circuit, alloc, 3, 100, available=one // 2)
    ds = ns.match_probability(circuit, alloc, m=3, trials=7, seed=4, max_memory=2.5 * one, certificate=False)
    xr.testing.assert_identical(ds, ns.match_probability(circuit, alloc, m=3, trials=7, seed=4, certificate=False))


def test_without_return_weights_no_weights_are_kept_between_chunks():
    from neurosubset.benchmark import _fit_trials

    circuit, alloc = _layer()
    res = _fit_trials(circuit, alloc, 3, 5, 0, options=ns.FitOptions(dale=False, stable=False, chunk=2),
                      progress=False, cert=None, keep_weights=False)
    assert res.student == {} and res.trials.teacher == {} and res.trials.probes.size == 0
    assert res.theta.shape == (5, alloc.size) and res.matched.shape == (5,)


def test_device_cpu_is_the_default_and_unknown_devices_are_refused():
    circuit, alloc = _rnn()
    base = ns.fit(circuit, alloc, 2, 3, seed=0)
    same = ns.fit(circuit, alloc, 2, 3, seed=0, device=torch.device("cpu"))
    np.testing.assert_array_equal(same.theta, base.theta)
    with pytest.raises(ns.ParameterError, match="'device' parameter of fit must be 'cpu' or 'cuda' .*Got 'tpu'"):
        ns.fit(circuit, alloc, 2, 3, device="tpu")
    if not torch.cuda.is_available():  # this machine: one line saying why
        with pytest.raises(ns.ParameterError, match="sees no CUDA GPU"):
            ns.match_probability(circuit, alloc, m=2, trials=3, device="cuda")
    else:  # a GPU machine: the same decisions, residuals to rounding
        gpu = ns.fit(circuit, alloc, 2, 3, seed=0, device="cuda")
        np.testing.assert_array_equal(gpu.matched, base.matched)
        np.testing.assert_allclose(gpu.residual, base.residual, rtol=0, atol=1e-10)



def test_continuous_circuits_are_refused_off_the_cpu(monkeypatch):
    from pathlib import Path

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # as on a GPU machine: refused for the circuit

    cont = ns.Circuit.from_toml(Path(__file__).resolve().parents[1] / "circuits" / "ei_continuous.toml")
    alloc = ns.allocate(cont, 4, strategy="spread-rows", seed=0)
    with pytest.raises(ns.ParameterError, match="'device' parameter of fit must be 'cpu' for continuous circuits"):
        ns.fit(cont, alloc, 2, 2, device="cuda")

def test_skip_zero_records_the_certificate_per_trial_and_fits_nothing():
    # y = W x with 5 outputs, m = 3 probes: row i is solvable iff it has >= 3 plastic synapses (SCIENCE.md); two
    # plastic per row leaves every row short, so the rank deficit proves MP = 0 (the certificate says "zero")
    layer = ns.feedforward([8, 5])
    mask = np.zeros((5, 8), dtype=bool)
    mask[:, :2] = True
    alloc = ns.Allocation.from_masks(layer, {"W1": mask})
    fitted = ns.match_probability(layer, alloc, m=3, trials=6, seed=0)
    skipped = ns.match_probability(layer, alloc, m=3, trials=6, seed=0, skip_zero=True, return_weights=True)
    assert fitted.attrs["certificate_verdict"] == skipped.attrs["certificate_verdict"] == "zero"
    assert not fitted.matched.any() and not skipped.matched.any()
    assert (skipped.restarts == 0).all()
    flags = dict(zip(skipped.decision.attrs["flag_meanings"].split(), skipped.decision.attrs["flag_values"]))
    assert (skipped.decision == flags["rank_certificate"]).all()
    status = dict(zip(skipped.fit_status.attrs["flag_meanings"].split(), skipped.fit_status.attrs["flag_values"]))
    assert (skipped.fit_status == status["no_solution"]).all()
    # the recorded residual is the unfitted student's, recomputed here with numpy: y = W x on every probe
    draws = draw_trials(layer, 3, 6, 0)
    for i in range(6):
        y_t = draws.probes[i] @ draws.teacher["W1"][i].T
        y_s = draws.probes[i] @ draws.student_init["W1"][i].T
        expect = np.linalg.norm(y_s - y_t) / np.linalg.norm(y_t)
        assert abs(float(skipped.residual[i]) - expect) <= 1e-12 * expect
        assert float(skipped.residual[i]) >= float(fitted.residual[i])  # fitting can only lower it
    np.testing.assert_array_equal(ns.student_weights(skipped)["W1"], draws.student_init["W1"])  # never moved


def test_large_steady_circuits_factor_the_hidden_block_only_and_agree_with_autograd():
    # >= 128 hidden neurons: the adjoint goes through I - W_hidden alone (outputs are sinks); reference: torch.func
    # forward-mode derivatives of forward(), which factors I - W over all non-input neurons
    from neurosubset.dynamics import PlasticMap, forward

    regions = (Region("X", 4, "input"), Region("A", 70), Region("B", 60), Region("O", 5, "output"))
    links = (("X", "A", 0.3, 1.0), ("A", "A", 0.05, 0.5), ("A", "B", 0.05, 0.5), ("B", "A", 0.05, 0.5),
             ("B", "O", 0.2, 1.0), ("X", "O", 0.5, 1.0))
    circuit = Circuit(regions, tuple(Projection(*x) for x in links), dynamics="steady", name="big_steady")
    alloc = ns.allocate(circuit, 40, strategy="spread-rows", seed=2)
    draws = draw_trials(circuit, 3, 2, 0)
    frozen = {k: torch.as_tensor(v) for k, v in draws.student_init.items()}
    fmap = PlasticMap(circuit, alloc, frozen, torch.as_tensor(draws.probes))
    assert fmap._layout.get("split")
    theta = torch.as_tensor(np.random.default_rng(0).standard_normal((2, alloc.size)) * 0.05)
    out, jac = fmap.value_and_jacobian(theta)
    ref = fmap.jacobian(theta, method="autograd")
    np.testing.assert_allclose(jac.numpy(), ref.numpy(), rtol=0, atol=1e-12 * float(ref.abs().max()))
    full = forward(circuit, fmap.weights(theta), fmap.probes).flatten(-2)
    np.testing.assert_allclose(out.numpy(), full.numpy(), rtol=0, atol=1e-12 * float(full.abs().max()))


def test_separable_least_squares_equals_the_full_minimum_norm_solution():
    # a single layer's Jacobian splits into one block per output row; reference: numpy's lstsq (minimum-norm) over
    # the whole Jacobian of each trial
    from neurosubset.dynamics import PlasticMap
    from neurosubset.solvers.lm import _SEPARATE_MIN, _separable, solve_affine

    layer = ns.feedforward([40, 8])
    alloc = ns.allocate(layer, _SEPARATE_MIN + 12, strategy="random", seed=5)  # uneven rows of 8..27 values
    draws = draw_trials(layer, 20, 4, 0)  # m = 20: some rows under-, some overdetermined
    fmap = PlasticMap(layer, alloc, {k: torch.as_tensor(v) for k, v in draws.student_init.items()},
                      torch.as_tensor(draws.probes))
    targets = torch.as_tensor(np.einsum("tmi,toi->tmo", draws.probes, draws.teacher["W1"]).reshape(4, -1))
    zero = torch.zeros((4, alloc.size), dtype=torch.float64)
    jac = fmap.jacobian(zero)
    assert _separable(jac) is not None and len(_separable(jac)) >= 2  # several block shapes, batched by shape
    theta = solve_affine(fmap, targets).numpy()
    for i in range(4):
        ref = np.linalg.lstsq(jac[i].numpy(), (targets[i] - fmap(zero)[i]).numpy(), rcond=None)[0]
        np.testing.assert_allclose(theta[i], ref, rtol=0, atol=1e-12 * max(1.0, np.abs(ref).max()))
    rows = ns.Allocation.from_masks(layer, {"W1": np.eye(8, 40, dtype=bool) | np.eye(8, 40, k=1, dtype=bool)})
    one = ns.Allocation.from_masks(layer, {"W1": np.zeros((8, 40), dtype=bool) | (np.arange(8)[:, None] == 0)})
    for a, split in ((rows, True), (one, False)):  # one row holds every value: no block of <= M / 2 values
        f = PlasticMap(layer, a, fmap.frozen, fmap.probes)
        assert (_separable(f.jacobian(torch.zeros((4, a.size), dtype=torch.float64))) is not None) == split
