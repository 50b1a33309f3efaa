"""Exact ranks over GF(p) (neurosubset.theory.modular_ranks) against independent references.

References: the Markov-parameter closed form of a linear RNN (SCIENCE.md, "Exactness": for T >= 2n, m >= T n_in,
n_in, n_out <= n, dim V = n (n_in + n_out) and a W-only allocation reaches n (n_in + n_out) - n_in n_out, since W
cannot move C B); the float adjoint Jacobian at small integer points, where float64 arithmetic is exact (integers
below 2^53), reduced mod p in the test; numpy.linalg.matrix_rank on well-conditioned integer matrices.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

import neurosubset as ns
from neurosubset.dynamics import DTYPE, PlasticMap
from neurosubset.theory import modular_ranks as exact

P_SMALL = 1_000_003  # a prime; the integer test points keep every float64 intermediate exact


def _float_jacobian(circuit, weights, probes):
    full = ns.Allocation.from_masks(circuit, dict(circuit.structure), strategy="full")
    frozen = {k: torch.as_tensor(v, dtype=DTYPE).unsqueeze(0) for k, v in weights.items()}
    fmap = PlasticMap(circuit, full, frozen, torch.as_tensor(probes, dtype=DTYPE).unsqueeze(0))
    theta = torch.as_tensor(np.concatenate([weights[k].ravel()[full.indices[k]] for k in circuit.weight_names]),
                            dtype=DTYPE)
    return fmap.jacobian(theta.unsqueeze(0), method="adjoint")[0].numpy()


def _int_point(circuit, m, rng, low=-3, high=4):
    w = {k: np.where(circuit.structure[k], rng.integers(low, high, size=circuit.shape(k)), 0).astype(np.int64)
         for k in circuit.weight_names}
    return w, rng.integers(low, high, size=circuit.probe_shape(m)).astype(np.int64)


@pytest.mark.parametrize("circuit", [
    ns.linear_rnn(4, 2, 3, steps=3), ns.feedforward([3, 4, 2]), ns.feedforward([3, 4, 4, 2]),
    ns.Circuit.from_toml("circuits/lffn.toml"), ns.Circuit.from_toml("circuits/lrnn.toml")],
    ids=lambda c: c.name)
def test_mod_jacobian_equals_the_float_adjoint_at_integer_points(circuit):
    rng = np.random.default_rng(3)
    weights, probes = _int_point(circuit, 3, rng)
    ref = _float_jacobian(circuit, weights, probes)
    ref_int = np.rint(ref).astype(np.int64)
    assert np.abs(ref - ref_int).max() < 1e-6, "the float reference is not integral: the test point is too large"
    got = exact.mod_jacobian(circuit, weights, probes, P_SMALL)
    assert np.array_equal(got, np.mod(ref_int, P_SMALL)), f"{(got != np.mod(ref_int, P_SMALL)).sum()} entries differ"



@pytest.mark.parametrize("circuit", [ns.linear_rnn(4, 2, 3, steps=3), ns.Circuit.from_toml("circuits/lrnn.toml")],
                         ids=lambda c: c.name)
def test_mod_jacobian_in_blocks_of_postsynaptic_cells_equals_the_float_adjoint(circuit, monkeypatch):
    # one postsynaptic cell per GF(p) product (what bounds the memory at 2,000 neurons), same reference as above
    monkeypatch.setattr(exact, "_BLOCK_ENTRIES", 1)
    rng = np.random.default_rng(5)
    weights, probes = _int_point(circuit, 3, rng)
    ref_int = np.rint(_float_jacobian(circuit, weights, probes)).astype(np.int64)
    assert np.array_equal(exact.mod_jacobian(circuit, weights, probes, P_SMALL), np.mod(ref_int, P_SMALL))


_STEADY = """
name = "tiny_steady"
dynamics = "steady"
nonlinearity = "linear"
seed = 0
[regions.X]
size = 2
role = "input"
[regions.H]
size = 3
role = "hidden"
[regions.OUT]
size = 2
role = "output"
[[projections]]
pre = "X"
post = "H"
p = 1.0
gain = 1.0
[[projections]]
pre = "H"
post = "H"
p = 1.0
gain = 0.3
[[projections]]
pre = "H"
post = "OUT"
p = 1.0
gain = 1.0
"""


def _recurrent(circuit, weights):
    """``W`` over the non-input neurons, assembled here from the layout's block positions (an independent sum)."""
    n = circuit.n_neurons(("hidden", "output"))
    a = np.zeros((n, n))
    for name, (post, pre) in circuit.block_slices(("hidden", "output"), ("hidden", "output")).items():
        a[post, pre] += weights[name]
    return a


@pytest.mark.parametrize("block", [None, 1], ids=["one-block", "one-cell-blocks"])
def test_mod_jacobian_of_a_steady_circuit_is_the_rational_jacobian_mod_p(block, monkeypatch):
    # J = N / det(I - W)^2 with N an integer matrix: det^2 * J from the float adjoint (exact to rounding at this
    # size) equals det^2 * (the GF(p) Jacobian) mod p; also with one postsynaptic cell per GF(p) product
    if block is not None:
        monkeypatch.setattr(exact, "_BLOCK_ENTRIES", block)
    circuit = ns.Circuit.from_toml_text(_STEADY)
    rng = np.random.default_rng(0)
    det = 0
    while det == 0:  # a point where I - W is invertible over Q
        weights, probes = _int_point(circuit, 3, rng, low=-1, high=2)
        a = _recurrent(circuit, weights)
        det = round(float(np.linalg.det(np.eye(a.shape[0]) - a)))
    ref = _float_jacobian(circuit, weights, probes) * det**2
    ref_int = np.rint(ref).astype(np.int64)
    assert np.abs(ref - ref_int).max() < 1e-8, "det^2 J is not integral in the float reference"
    got = exact.mod_jacobian(circuit, weights, probes, P_SMALL).astype(object)
    assert np.array_equal(np.mod(got * (det**2), P_SMALL), np.mod(ref_int, P_SMALL).astype(object))


def test_singular_steady_point_is_refused():
    circuit = ns.Circuit.from_toml_text(_STEADY)
    weights = {k: np.zeros(circuit.shape(k), dtype=np.int64) for k in circuit.weight_names}
    weights["H->H"][0, 0] = 1  # (I - W) has a zero row
    probes = np.ones(circuit.probe_shape(2), dtype=np.int64)
    with pytest.raises(ns.TheoryError, match="det"):
        exact.mod_jacobian(circuit, weights, probes, P_SMALL)


def test_gf_rank_equals_numpy_rank_on_integer_matrices():
    rng = np.random.default_rng(1)
    for rows, cols, rank in [(5, 9, 3), (12, 7, 7), (20, 30, 11)]:
        mat = rng.integers(-5, 6, size=(rows, rank)) @ rng.integers(-5, 6, size=(rank, cols))
        assert exact.gf_rank(mat, exact.random_prime(rng)) == np.linalg.matrix_rank(mat.astype(float))


def test_random_prime_is_prime_and_near_2_62():
    rng = np.random.default_rng(0)
    for _ in range(5):
        p = exact.random_prime(rng)
        assert (1 << 62) - (1 << 54) <= p < (1 << 62)
        assert all(p % d for d in range(2, 2000))


@pytest.mark.parametrize("n, n_in, n_out, gain, steps", [
    (4, 2, 2, 1.0, 8), (6, 1, 3, 0.5, 12), (8, 2, 2, 2.0, 30), (5, 2, 1, 3.0, 40), (3, 3, 3, 2.0, 31)])
def test_linear_rnn_ranks_equal_the_markov_parameter_count(n, n_in, n_out, gain, steps):
    rnn = ns.linear_rnn(n, n_in, n_out, steps=steps, gain=gain)
    m = steps * n_in + 2  # m >= T n_in
    dim_v = n * (n_in + n_out)
    w_only = ns.allocate(rnn, n * n, within=["W"])
    cert = ns.certify(rnn, w_only, m=m)
    assert cert.full_rank == dim_v, f"dim V = {cert.full_rank}, closed form {dim_v}"
    assert cert.plastic_rank == dim_v - n_in * n_out, f"W rank {cert.plastic_rank}, closed form {dim_v - n_in * n_out}"
    assert cert.verdict == "zero" and (cert.exact or cert.decisive)
    if cert.exact:  # Schwartz-Zippel: r (T + 1) / p with p > 2^61
        assert 0 < cert.error_bound < 1e-12, cert.error_bound
    full = ns.Allocation.from_masks(rnn, dict(rnn.structure), strategy="full")
    assert ns.certify(rnn, full, m=m, method="exact").plastic_rank == dim_v


def test_acceptance_gain_2_rnn_is_certified_zero_and_the_float_path_is_not_trusted():
    rnn = ns.linear_rnn(8, 2, 2, steps=30, gain=2.0)
    alloc = ns.allocate(rnn, 64, within=["W"])
    cert = ns.certify(rnn, alloc, m=64)
    assert (cert.plastic_rank, cert.full_rank, cert.verdict, cert.method) == (28, 32, "zero", "exact")
    flt = ns.certify(rnn, alloc, m=64, method="adjoint")
    # the float ranks are wrong here (measured 18/18); they must not carry a verdict
    assert not flt.decisive and flt.verdict == "unproven", (flt.plastic_rank, flt.full_rank, flt.plastic_gap)


def test_probe_reduction_keeps_every_rank():
    rnn = ns.linear_rnn(3, 2, 2, steps=4)
    rng = np.random.default_rng(5)
    p = exact.random_prime(rng)
    weights, probes = exact.mod_point(rnn, 12, p, rng)  # m = 12 > q = n_in T = 8
    kept = exact._reduce_probes(rnn, probes, p)
    assert kept.shape[0] == 8
    jac_all, jac_kept = exact.mod_jacobian(rnn, weights, probes, p), exact.mod_jacobian(rnn, weights, kept, p)
    for cols in [np.arange(jac_all.shape[1]), np.arange(6, 15), np.array([0, 3, 7, 20])]:
        assert exact.gf_rank(jac_all[:, cols], p) == exact.gf_rank(jac_kept[:, cols], p)


def test_decisive_rule():
    assert exact.decisive(float("inf"), 0.0)
    assert exact.decisive(1e7, 1e-13)
    assert not exact.decisive(1e5, 1e-13)  # gap too small
    assert not exact.decisive(1e7, 1e-11)  # discarded value too large to be rounding
    assert not exact.decisive(float("inf"), float("nan"))


def test_relu_exact_is_refused_and_auto_stays_unproven():
    net = ns.feedforward([3, 3, 1], "relu")
    alloc = ns.allocate(net, 3, within=["W2"])
    with pytest.raises(ns.TheoryError, match="linear"):
        ns.certify(net, alloc, m=3, method="exact")
    assert ns.certify(net, alloc, m=3).verdict == "unproven"


def test_plastic_rank_at_the_equation_count_is_certain():
    net = ns.feedforward([4, 3])
    alloc = ns.allocate(net, 12, within=["W1"])
    cert = ns.certify(net, alloc, m=3, method="exact")
    assert cert.plastic_rank == cert.full_rank == 9 and cert.error_bound == 0.0 and cert.verdict == "one"


# ---------------------------------------------------------------------------------------------- the default by cost
def _q_ranks(circuit, alloc, m, points=2, seed=7):
    """Generic ranks over Q of the full and the plastic Jacobian of a linear RNN or feed-forward net, written here
    with sympy (symbolic outputs, exact rational Jacobian at random integer points, the maximum over points)."""
    import sympy as sp

    rng = np.random.default_rng(seed)
    syms = {k: sp.Matrix(*circuit.shape(k), lambda i, j, k=k: sp.Symbol(f"{k}_{i}_{j}") if circuit.structure[k][i, j]
                         else 0) for k in circuit.weight_names}
    present = [s for k in circuit.weight_names for s in syms[k] if s != 0]
    plastic = [syms[k][i, j] for k in circuit.weight_names for i, j in zip(*np.nonzero(alloc.masks[k]))]
    best_full = best_plastic = 0
    for _ in range(points):
        probes = rng.integers(-5, 6, size=circuit.probe_shape(m))
        outs = []
        for x in probes:
            if "W" in syms and "B" in syms:  # linear RNN: h_t = W h_{t-1} + B x_t, y = C h_T
                h = sp.zeros(circuit.shape("W")[0], 1)
                for x_t in x:
                    h = syms["W"] * h + syms["B"] * sp.Matrix(x_t)
                y = syms["C"] * h
            else:  # feed-forward W1, W2, ...: y = W_L ... W_1 x
                y = sp.Matrix(x)
                for k in circuit.weight_names:
                    y = syms[k] * y
            outs.extend(y)
        jac = sp.Matrix(outs).jacobian(present)
        point = {s: int(v) for s, v in zip(present, rng.integers(-9, 10, size=len(present)))}
        at = jac.subs(point)
        best_full = max(best_full, at.rank())
        best_plastic = max(best_plastic, at[:, [present.index(s) for s in plastic]].rank())
    return best_full, best_plastic


@pytest.mark.parametrize("circuit, budget, within, m", [
    # the RNN cases' sympy references take seconds (slow); the feed-forward ones keep the fast lane's check
    pytest.param(ns.linear_rnn(3, 1, 2, steps=3), 5, ["W"], 4, marks=pytest.mark.slow),
    pytest.param(ns.linear_rnn(3, 1, 2, steps=2), 6, ["W", "C"], 5, marks=pytest.mark.slow),
    (ns.feedforward([2, 3, 2]), 4, ["W1"], 3), (ns.feedforward([2, 3, 2]), 6, ["W2"], 3)],
    ids=["rnn-W", "rnn-WC", "ff-W1", "ff-W2"])
def test_default_and_both_methods_give_the_ranks_over_q(circuit, budget, within, m):
    alloc = ns.allocate(circuit, budget, within=within, seed=1)
    full_q, plastic_q = _q_ranks(circuit, alloc, m)
    certs = {method: ns.certify(circuit, alloc, m=m, method=method) for method in ("auto", "exact", "adjoint")}
    for method, cert in certs.items():
        assert (cert.plastic_rank, cert.full_rank) == (plastic_q, full_q), (method, cert)
    assert len({c.verdict for c in certs.values()}) == 1
    assert certs["auto"].method in ("exact", "adjoint")  # what ran is recorded


def test_default_takes_the_exact_path_where_it_is_estimated_cheaper():
    # m = 200 probes of 3 stacked inputs: the probe reduction leaves GF(p) 6 of the 400 equations, the float ranks
    # see all 400 at two points (rank_costs: float ~6e-2 s, exact ~5e-3 s)
    rnn = ns.linear_rnn(30, 1, 2, steps=3)
    alloc = ns.allocate(rnn, 400, within=["W"], seed=0)
    float_s, exact_s = exact.rank_costs(rnn, 200, alloc.size, 2)
    assert exact_s < float_s
    auto = ns.certify(rnn, alloc, m=200)
    assert auto.method == "exact" and auto.exact and np.isnan(auto.plastic_gap)
    flt = ns.certify(rnn, alloc, m=200, method="adjoint")
    ex = ns.certify(rnn, alloc, m=200, method="exact")
    # Markov parameters C W^k B, k = 0..2 (n_out x n_in each): dim V = 6; W cannot move C B: W-only rank 4
    assert (auto.full_rank, auto.plastic_rank) == (flt.full_rank, flt.plastic_rank) == (ex.full_rank,
                                                                                         ex.plastic_rank) == (6, 4)
    assert auto.verdict == flt.verdict == ex.verdict == "zero"


def test_default_keeps_float_ranks_where_they_are_estimated_cheaper():
    ff = ns.feedforward([20, 40, 40, 10])
    alloc = ns.allocate(ff, 800, seed=0)
    float_s, exact_s = exact.rank_costs(ff, 20, alloc.size, 2)
    assert float_s < exact_s
    cert = ns.certify(ff, alloc, m=20)
    assert cert.method == "adjoint" and cert.decisive and not cert.exact


def test_exact_costs_are_infinite_where_gf_p_does_not_apply():
    cont = ns.Circuit.from_toml("circuits/ei_continuous.toml")
    relu = ns.feedforward([3, 4, 2], nonlinearity="relu")
    for circuit in (cont, relu):
        assert not exact.exact_applies(circuit)
        assert exact.rank_costs(circuit, 3, 4, 2)[1] == float("inf")
