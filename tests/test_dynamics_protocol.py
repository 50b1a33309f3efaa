"""A new dynamics is one new class: a toy dynamics defined and registered here runs through ``simulate``,
``match_probability``, ``certify`` (float ranks) and ``sweep`` without any change to the package.

The toy is a leaky discrete map, ``h(t) = (1 - a) h(t-1) + a (W_rec h(t-1) + W_in x(t))`` from ``h(0) = 0``,
``t = 1..T``, read out ``y = W_out h(T)``, ``a = 1/2``. Expected values come from numpy (the same recursion written
out with arrays) and from the single-layer theorem: with only read-out synapses plastic, ``y = C H`` with ``H``
``(n, m)`` of rank ``min(n, m)``, so the plastic rank is ``sum_i min(k_i, m)`` over read-out rows with ``k_i``
plastic synapses, and MP = 1 iff every row has ``k_i >= m`` (else 0).
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import neurosubset as ns
from neurosubset.dynamics import Dynamics, register, unregister
from neurosubset.dynamics.blocks import block_matrix

LEAK = 0.5
N_HIDDEN, N_IN, N_OUT, STEPS = 5, 2, 2, 3


class LeakyDiscrete(Dynamics):
    """``h(t) = (1 - a) h(t-1) + a (W_rec h(t-1) + W_in x(t))``, ``y = W_out h(T)``: a test-only dynamics."""

    name = "leaky_discrete_test"
    sequences = True

    def _hidden(self, circuit, weights, probes):
        w_rec = block_matrix(circuit, weights, "hidden", "hidden")
        w_in = block_matrix(circuit, weights, "hidden", "input")
        h = probes.new_zeros(probes.shape[:-2] + (w_rec.shape[-1],))
        states = []
        for t in range(circuit.steps):
            h = (1 - LEAK) * h + LEAK * (h @ w_rec.mT + probes[..., t, :] @ w_in.mT)
            states.append(h)
        return torch.stack(states, dim=-2)  # (..., m, T, n_hidden)

    def forward(self, circuit, weights, probes):
        h = self._hidden(circuit, weights, probes)[..., -1, :]
        return h @ block_matrix(circuit, weights, "output", "hidden").mT

    def recorded_times(self, circuit):
        return circuit.steps

    def rates(self, circuit, weights, probes, regions, *, time=False):
        h = self._hidden(circuit, weights, probes)
        y = h @ block_matrix(circuit, weights, "output", "hidden").mT.unsqueeze(-3)
        where = {**circuit.slices("hidden"), **circuit.slices("output")}
        out = {r: (h if circuit.region[r].role == "hidden" else y)[..., where[r]] for r in regions}
        return out if time else {r: v[..., -1, :] for r, v in out.items()}


@pytest.fixture(autouse=True, scope="module")
def _registered():
    """The toy is registered while this module's tests run, and removed after (other modules see the built-ins)."""
    register(LeakyDiscrete)
    yield
    unregister(LeakyDiscrete.name)


def _circuit():
    regions = (ns.Region("in", N_IN, "input"), ns.Region("H", N_HIDDEN), ns.Region("out", N_OUT, "output"))
    projections = (ns.Projection("in", "H", name="B"), ns.Projection("H", "H", gain=0.8, name="W"),
                   ns.Projection("H", "out", name="C"))
    return ns.Circuit(regions, projections, dynamics="leaky_discrete_test", steps=STEPS, name="leaky")


def _numpy_run(w, x):
    """The toy's recursion in numpy: ``(m, T, n_hidden)`` hidden rates and ``(m, n_out)`` outputs."""
    h = np.zeros((x.shape[0], N_HIDDEN))
    states = []
    for t in range(STEPS):
        h = (1 - LEAK) * h + LEAK * (h @ w["W"].T + x[:, t] @ w["B"].T)
        states.append(h)
    return np.stack(states, axis=1), h @ w["C"].T


def test_the_toy_is_registered_and_round_trips_through_toml():
    c = _circuit()
    assert isinstance(c.dynamics, LeakyDiscrete) and c.dynamics.name in ns.dynamics.names()
    assert c.probe_shape(4) == (4, STEPS, N_IN) and c.n_out == N_OUT
    back = ns.Circuit.from_toml_text(c.to_toml())
    assert back == c and back.dynamics is c.dynamics
    assert 'dynamics = "leaky_discrete_test"' in c.to_toml()


def test_simulate_runs_the_toy_against_numpy():
    c = _circuit()
    rng = np.random.default_rng(3)
    w, x = c.sample_weights(rng), c.sample_probes(4, rng)
    ds = ns.simulate(c, w, x)
    hidden, y = _numpy_run(w, x)
    assert ds.output.dims == ("probe", "time", "neuron") and ds.time.size == STEPS
    np.testing.assert_allclose(ds.rate_H.values, hidden, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(ds.output.isel(time=-1).values, y, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(ds.output.sel(time=[1.0, 3.0]).values, ns.simulate(c, w, x, times=[1, 3]).output.values)


@pytest.mark.parametrize("per_row,expected_mp", [(3, 1.0), (2, 0.0)])
def test_match_probability_and_certify_follow_the_single_layer_theorem(per_row, expected_mp):
    c, m = _circuit(), 3
    alloc = ns.allocate(c, N_OUT * per_row, within=["C"], strategy="spread-rows", seed=0)
    assert (alloc.masks["C"].sum(axis=1) == per_row).all()
    cert = ns.certify(c, alloc, m=m, seed=1)
    assert cert.plastic_rank == N_OUT * min(per_row, m), cert
    assert cert.method != "exact"  # the toy has no GF(p) adjoint: float ranks
    res = ns.match_probability(c, alloc, m=m, trials=6, seed=2, dale=False, stable=False)
    assert float(res.mp) == expected_mp, res


def test_sweep_runs_the_toy():
    c = _circuit()
    ds = ns.sweep(c, budget=[N_OUT * 3], m=[2, 3], strategy=["spread-rows"], within=["C"], trials=4, seed=0,
                  dale=False, stable=False)
    # k = 3 plastic read-out synapses per row: MP = 1 for m <= 3 (single-layer theorem)
    np.testing.assert_array_equal(ds.mp.values.ravel(), [1.0, 1.0])


def test_comparing_dynamics_with_a_string_still_works_with_a_deprecation_warning():
    c = ns.linear_rnn(3, 1, 1, steps=2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert c.dynamics == "discrete" and c.dynamics != "steady"
    assert any(issubclass(w.category, DeprecationWarning) for w in caught)
    assert c.dynamics == ns.dynamics.Discrete() and c.dynamics.name == "discrete" and str(c.dynamics) == "discrete"


def test_unregister_refuses_built_in_and_unknown_names():
    with pytest.raises(ns.ParameterError, match="'steady' is built in"):
        unregister("steady")
    with pytest.raises(ns.ParameterError, match="'nope' is not registered"):
        unregister("nope")


def test_unknown_dynamics_is_refused_listing_the_registered_ones():
    with pytest.raises(ns.CircuitSpecError, match=r"'dynamics' parameter must be one of \['feedforward', "
                                                  r"'discrete', 'steady', 'continuous'"):
        ns.Circuit(_circuit().regions, _circuit().projections, dynamics="leaky")


@pytest.mark.parametrize("spec", ["ei_isn.toml", "ei_continuous.toml"])
def test_spectral_abscissa_gradient_matches_finite_differences(spec):
    """The stability object's value equals max_real_eig and its gradient central differences (step 1e-6)."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    c = ns.Circuit.from_toml(root / "circuits" / spec)
    if c.nonlinearity != "linear":
        c = ns.Circuit.from_dict({**c.to_dict(), "nonlinearity": "linear"})
    rule = c.dynamics.stability(c)
    w = c.sample_weights(np.random.default_rng(5))
    value, grad = rule.abscissa(w)
    assert value == pytest.approx(float(rule.max_real_eig(w)), rel=1e-12)
    rng = np.random.default_rng(6)
    moved = 0
    for loop in rule.loops():
        for name in loop.projections:
            rows, cols = np.nonzero(c.structure[name])
            for k in rng.choice(rows.size, size=min(4, rows.size), replace=False):
                i, j, h = rows[k], cols[k], 1e-6
                up = {**w, name: w[name].copy()}
                down = {**w, name: w[name].copy()}
                up[name][i, j] += h
                down[name][i, j] -= h
                fd = (float(rule.max_real_eig(up)) - float(rule.max_real_eig(down))) / (2 * h)
                assert grad[name][i, j] == pytest.approx(fd, rel=1e-4, abs=1e-7), (name, i, j, fd)
                moved += abs(fd) > 1e-9
    assert moved, "no sampled synapse moves the abscissa: the check would be vacuous"
