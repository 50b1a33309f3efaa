"""Tests of the certificate, the optimal allocation and the heuristic against closed forms derived by hand.

References (derived here, not taken from the code):

- Single linear layer ``Y = W X`` (``W`` d_out x d_in, ``X`` d_in x m generic): row ``i``'s plastic entries act
  through ``X[A_i, :]``, a ``k_i x m`` generic matrix of rank ``min(k_i, m)``; rows are independent blocks, so
  ``plastic_rank = sum_i min(k_i, r)`` with ``r = min(m, d_in)`` (``k_i <= d_in``) and ``full_rank = d_out * r``.
  Equal iff every row has ``k_i >= r``; the map is affine, so MP = 1 then and MP = 0 otherwise.
- Two linear layers ``Y = W2 W1 X``: the teacher's ``P = W2 W1`` ranges over the d2 x d0 matrices of rank
  ``<= d1``, and ``Y = P X``; with ``b = min(m, d0, d1, d2)`` the set of ``Y`` is the rank-``<= b`` matrices
  of size d2 x min(m, d0): dimension ``b (d2 + min(m, d0) - b)``. With only W2 plastic the student reaches
  ``dW2 H`` with ``H = W1 X`` of rank ``min(d1, m, d0)``: ``plastic_rank = d2 * min(d1, m, d0)``.
- Linear RNN ``y = C h_T``: ``h_T`` does not depend on C, so y is linear in C (affine); with C plastic the
  reachable outputs are ``dC H_T`` with ``H_T`` (n x m) of rank ``min(n, m, n_in T)``. With T = 2,
  ``h_2 = W B x_1 + B x_2`` is linear in W; with T = 3, ``h_3`` contains ``W W B x_1`` (quadratic in W).
"""
from __future__ import annotations

import numpy as np
import pytest

import neurosubset as ns
from neurosubset.theory import TheoryError, certify, heuristic, minimal_budget, optimal_allocation


def _rows_alloc(net, name, counts, rng):
    """An allocation of weight ``name`` with ``counts[i]`` plastic synapses in row ``i`` at random columns."""
    n_post, n_pre = net.shape(name)
    mask = np.zeros((n_post, n_pre), dtype=bool)
    for i, k in enumerate(counts):
        mask[i, rng.choice(n_pre, size=k, replace=False)] = True
    return ns.Allocation.from_masks(net, {name: mask})


# ----------------------------------------------------------------------------------- single linear layer
@pytest.mark.parametrize(("d_in", "d_out", "m"), [(4, 3, 3), (3, 2, 5), (5, 2, 5)])
def test_single_layer_rank_theorem(d_in, d_out, m, rng):
    net = ns.feedforward([d_in, d_out])
    r = min(m, d_in)
    for _ in range(6):
        counts = rng.integers(0, d_in + 1, size=d_out)
        cert = certify(net, _rows_alloc(net, "W1", counts, rng), m=m, seed=3)
        expected_plastic = int(np.minimum(counts, r).sum())
        assert cert.full_rank == d_out * r, f"full_rank {cert.full_rank} != {d_out * r}"
        assert cert.plastic_rank == expected_plastic, f"counts {counts}: plastic_rank {cert.plastic_rank}"
        assert cert.affine
        assert cert.verdict == ("one" if (counts >= r).all() else "zero"), f"counts {counts}: {cert.verdict}"


def test_single_layer_boundary_cases(rng):
    net = ns.feedforward([4, 3])
    # m = 3 < d_in: three plastic synapses per row suffice, two in one row do not
    assert certify(net, _rows_alloc(net, "W1", [3, 3, 3], rng), m=3).verdict == "one"
    assert certify(net, _rows_alloc(net, "W1", [4, 4, 2], rng), m=3).verdict == "zero"
    # m = 5 > d_in: each row needs all 4 of its synapses
    assert certify(net, _rows_alloc(net, "W1", [4, 4, 4], rng), m=5).verdict == "one"
    assert certify(net, _rows_alloc(net, "W1", [4, 4, 3], rng), m=5).verdict == "zero"


# ----------------------------------------------------------------------------------- deeper linear nets
def test_two_layer_bottleneck_is_zero():
    d0, d1, d2, m = 4, 2, 3, 4  # bottleneck d1 = 2 < min(d0, m) = 4
    net = ns.feedforward([d0, d1, d2])
    cert = certify(net, ns.allocate(net, d1 * d2, within=["W2"]), m=m)
    b = min(m, d0, d1, d2)
    assert cert.full_rank == b * (d2 + min(m, d0) - b) == 10
    assert cert.plastic_rank == d2 * min(d1, m, d0) == 6
    assert cert.affine and cert.verdict == "zero"


def test_two_layer_one_layer_plastic_can_be_one():
    # 3-3-1, m = 3: dim V = b (1 + 3 - b) with b = 1, i.e. 3 = E; W2 alone: dW2 (W1 X), rank 3; W1 alone:
    # W2 dW1 X, rank(W2) * rank(X) = 1 * 3. Either way affine with full rank => MP = 1.
    net = ns.feedforward([3, 3, 1])
    for w in ("W1", "W2"):
        cert = certify(net, ns.allocate(net, net.structure[w].sum(), within=[w]), m=3)
        assert (cert.plastic_rank, cert.full_rank, cert.verdict) == (3, 3, "one"), (w, cert)


def test_both_layers_plastic_is_not_affine():
    net = ns.feedforward([3, 3, 1])
    masks = {"W1": np.eye(3, dtype=bool), "W2": np.ones((1, 3), dtype=bool)}
    cert = certify(net, ns.Allocation.from_masks(net, masks), m=3)
    assert not cert.affine and cert.verdict == "positive", cert


# ----------------------------------------------------------------------------------- linear RNN
def test_rnn_plastic_only_in_c_is_affine_and_one():
    n, n_in, n_out, steps, m = 4, 2, 1, 3, 3
    rnn = ns.linear_rnn(n, n_in, n_out, steps=steps)
    cert = certify(rnn, ns.allocate(rnn, n * n_out, within=["C"]), m=m)
    assert cert.affine
    assert cert.plastic_rank == n_out * min(n, m, n_in * steps) == 3
    assert cert.full_rank == m * n_out  # E = 3 caps dim V and the plastic rank already reaches it
    assert cert.verdict == "one"


def test_rnn_recurrent_weights_affine_only_for_two_steps():
    for steps, affine in ((2, True), (3, False)):
        rnn = ns.linear_rnn(3, 1, 1, steps=steps)
        cert = certify(rnn, ns.allocate(rnn, 9, within=["W"]), m=2)
        assert cert.affine is affine, (steps, cert)


def test_full_allocation_reaches_full_rank():
    nets = [ns.feedforward([3, 2, 2]), ns.linear_rnn(4, 2, 2, steps=3), ns.feedforward([3, 4, 1], "relu")]
    for net in nets:
        cert = certify(net, ns.Allocation.from_masks(net, dict(net.structure)), m=3)
        assert cert.plastic_rank == cert.full_rank, (net.name, cert)
        assert cert.plastic_rank > 0


def test_relu_is_unproven_with_ranks():
    net = ns.feedforward([3, 3, 1], "relu")
    cert = certify(net, ns.allocate(net, 3, within=["W2"]), m=3)
    assert cert.verdict == "unproven"
    assert cert.affine  # read-out weights act linearly
    assert 0 < cert.plastic_rank <= cert.full_rank <= 3


def test_adjoint_and_autograd_give_the_same_ranks():
    rnn = ns.linear_rnn(5, 2, 2, steps=4)
    alloc = ns.allocate(rnn, 7, within=["W", "B"], seed=1)
    a = certify(rnn, alloc, m=3, method="autograd")
    b = certify(rnn, alloc, m=3, method="adjoint")
    assert (a.plastic_rank, a.full_rank, a.verdict) == (b.plastic_rank, b.full_rank, b.verdict)


def test_certificate_attrs_are_netcdf_types():
    net = ns.feedforward([3, 2])
    attrs = certify(net, ns.allocate(net, 6), m=2).to_attrs()
    assert attrs["certificate_verdict"] == "one" and attrs["certificate_affine"] == 1
    assert all(type(v) in (int, float, str) for v in attrs.values()), attrs


# ----------------------------------------------------------------------------------- optimal allocation
def test_optimal_allocation_single_layer_spreads_over_rows():
    d_in, d_out, m = 5, 3, 3
    net = ns.feedforward([d_in, d_out])
    r = min(m, d_in)
    for budget in (4, 9, 12):
        best = optimal_allocation(net, budget=budget, m=m, within=["W1"])
        assert best.strategy == "optimal" and best.size == budget
        cert = certify(net, best, m=m)
        assert cert.plastic_rank == min(budget, d_out * r), (budget, cert)
        if budget >= d_out * r:
            assert (best.rows("W1") >= r).all(), best.rows("W1")
            assert cert.verdict == "one"


def test_optimal_allocation_reaches_min_budget_allowed_rank():
    rnn = ns.linear_rnn(4, 1, 2, steps=3)
    m = 3
    # W's rows see h_1, h_2 over 3 probes: rank <= min(n, m (T-1), n_in (T-1)) = 2 each (Krylov space of B);
    # columns reach y through C and C W: rank <= min(n, 2 n_out) = 4. Reference: the rank of all of W.
    allowed = certify(rnn, ns.allocate(rnn, 16, within=["W"]), m=m).plastic_rank
    assert allowed <= min(4 * 2, m * 2)  # <= n * 2 and <= E
    for budget in (2, allowed, 10):
        best = optimal_allocation(rnn, budget=budget, m=m, within=["W"])
        assert best.counts == {"B": 0, "W": budget, "C": 0}
        assert certify(rnn, best, m=m).plastic_rank == min(budget, allowed)


def test_minimal_budget():
    net = ns.feedforward([5, 3])
    assert minimal_budget(net, m=3, within=["W1"]) == 3 * 3  # d_out * min(m, d_in)
    deep = ns.feedforward([4, 2, 3])
    with pytest.raises(TheoryError, match="within"):
        minimal_budget(deep, m=4, within=["W2"])  # 6 < dim V = 10 (bottleneck)


# ----------------------------------------------------------------------------------- heuristic
@pytest.mark.parametrize(("d_in", "d_out", "m"), [(4, 3, 3), (3, 3, 5)])
def test_heuristic_exact_for_single_layer(d_in, d_out, m, rng):
    net = ns.feedforward([d_in, d_out])
    r = min(m, d_in)
    for _ in range(10):
        counts = rng.integers(0, d_in + 1, size=d_out)
        h = heuristic(net, _rows_alloc(net, "W1", counts, rng), m=m)
        one = bool((counts >= r).all())
        assert h.required == d_out * r
        assert h.effective == int(np.minimum(counts, r).sum())
        assert (h.verdict, h.mp) == (("one", 1.0) if one else ("zero", 0.0)), (counts, h)


def test_heuristic_required_matches_chain_dimension():
    # dim V = b (d_L + min(m, d_0) - b), b = min(m, d_0..d_L), for linear chains (derived in the module doc)
    for sizes, m in (([4, 2, 3], 4), ([3, 3, 1], 3), ([5, 4, 2, 3], 2)):
        net = ns.feedforward(sizes)
        b = min([m] + sizes)
        h = heuristic(net, ns.allocate(net, 2), m=m)
        assert h.required == b * (sizes[-1] + min(m, sizes[0]) - b), (sizes, h)


def test_heuristic_bottleneck_predicts_zero():
    net = ns.feedforward([4, 2, 3])
    h = heuristic(net, ns.allocate(net, 6, within=["W2"]), m=4)
    assert h.verdict == "zero" and h.mp == 0.0 and h.by_weight["W2"] == 6


# ----------------------------------------------------------------------------------- errors
def test_errors_name_the_field():
    net = ns.feedforward([3, 2])
    other = ns.feedforward([3, 3])
    alloc = ns.allocate(net, 2)
    with pytest.raises(ValueError, match="'m'"):
        certify(net, alloc, m=0)
    with pytest.raises(ValueError, match="'points'"):
        certify(net, alloc, m=2, points=1)
    with pytest.raises(ns.AllocationError, match="'W1' has shape"):
        certify(other, alloc, m=2)
    with pytest.raises(ns.AllocationError, match="does not belong"):
        certify(ns.linear_rnn(2, 1, 1, steps=2), alloc, m=2)
    with pytest.raises(ns.AllocationError, match="'budget'"):
        optimal_allocation(net, budget=7, m=2)
    with pytest.raises(ns.AllocationError, match="'Q'"):
        optimal_allocation(net, budget=2, m=2, within=["Q"])
    relu = ns.feedforward([3, 2, 1], "relu")
    with pytest.raises(TheoryError, match="'adjoint'"):
        certify(relu, ns.allocate(relu, 2), m=2, method="adjoint")


def test_match_probability_carries_the_certificate(tmp_path):
    import xarray as xr

    net = ns.feedforward([4, 2, 3])
    ds = ns.match_probability(net, ns.allocate(net, 6, within=["W2"]), m=4, trials=4, seed=0)
    assert int(ds.plastic_rank) == 6 and int(ds.full_rank) == 10  # see test_two_layer_bottleneck_is_zero
    assert ds.attrs["certificate_verdict"] == "zero" and float(ds.mp) == 0.0
    ds.to_netcdf(tmp_path / "mp.nc", engine="h5netcdf")
    with xr.open_dataset(tmp_path / "mp.nc", engine="h5netcdf") as back:
        xr.testing.assert_identical(back.load(), ds)


def test_rnn_dimension_capped_by_stacked_inputs():
    # n = 3, n_in = 1, n_out = 1, T = 2, m = 3: y_j = C (W B x_j1 + B x_j2) = M xbar_j with M 1 x 2, so the
    # three outputs lie in a space of dimension n_out * min(m, n_in T) = 2; h_2 spans span{B, W B} (2 dims),
    # so C alone (affine) reaches both: MP = 1.
    rnn = ns.linear_rnn(3, 1, 1, steps=2)
    alloc = ns.allocate(rnn, 3, within=["C"])
    cert = certify(rnn, alloc, m=3)
    h = heuristic(rnn, alloc, m=3)
    assert (cert.full_rank, cert.plastic_rank, cert.verdict) == (2, 2, "one"), cert
    assert (h.required, h.effective, h.verdict) == (2, 2, "one"), h


@pytest.mark.parametrize("circuit, alloc_kwargs, m", [
    (ns.feedforward([4, 2, 3]), {"budget": 6, "within": ["W2"]}, 4),          # bottleneck: rank deficit
    (ns.feedforward([6, 4]), {"budget": 12, "strategy": "spread-rows"}, 3),   # single layer, full rank
    (ns.linear_rnn(5, 2, 2, steps=3), {"budget": 9, "within": ["W"]}, 4),   # polynomial, wide
])
def test_sketched_ranks_equal_the_exact_ranks(circuit, alloc_kwargs, m):
    # a second method: the matrix-free Gaussian sketch J @ Omega has the rank of J with probability 1
    alloc = ns.allocate(circuit, seed=0, **alloc_kwargs)
    exact = certify(circuit, alloc, m=m, seed=0)
    sketch = certify(circuit, alloc, m=m, seed=0, method="sketch")
    assert (sketch.plastic_rank, sketch.full_rank, sketch.verdict) == (exact.plastic_rank, exact.full_rank,
                                                                       exact.verdict)
    assert sketch.estimate and not exact.estimate
    assert ns.minimal_budget(circuit, m=m, method="sketch") == exact.full_rank
    with pytest.raises(ValueError, match="'sketch' gives ranks only"):
        ns.optimal_allocation(circuit, budget=3, m=m, method="sketch")


def test_theory_error_is_a_toolkit_error():
    # the CLI maps exactly the NeurosubsetError family to exit status 2
    from neurosubset._checks import NeurosubsetError

    assert issubclass(TheoryError, NeurosubsetError) and issubclass(TheoryError, ValueError)
    with pytest.raises(NeurosubsetError, match="within"):
        minimal_budget(ns.feedforward([4, 2, 3]), m=4, within=["W2"])
