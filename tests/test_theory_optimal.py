"""optimal_allocation over all m and minimal_budget against brute force over every allocation of small nets.

Reference (written here, independent of the GF(p) code): float64 Jacobians by torch autograd of the forward map at
a Gaussian point, ranks by numpy.linalg.matrix_rank, the objective spelt out (largest m* with plastic rank = dim V
and rank <= budget, then the ranks at m* + 1, ..., then affine first), affine read off the structure (one layer of a
chain; B or C alone in an RNN).
"""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

import neurosubset as ns
from neurosubset.dynamics import DTYPE, forward


def _reference_jacobian(circuit, m, seed=11):
    rng = np.random.default_rng(seed)
    weights = circuit.sample_weights(rng)
    probes = torch.as_tensor(circuit.sample_probes(m, rng), dtype=DTYPE)
    names = list(circuit.weight_names)
    present = {w: np.flatnonzero(circuit.structure[w]) for w in names}
    theta0 = torch.as_tensor(np.concatenate([weights[w].ravel()[present[w]] for w in names]), dtype=DTYPE)

    def f(theta):
        out, start = {}, 0
        for w in names:
            flat = torch.zeros(int(np.prod(circuit.shape(w))), dtype=DTYPE)
            flat = flat.index_put((torch.as_tensor(present[w]),), theta[start:start + present[w].size])
            out[w] = flat.reshape(circuit.shape(w))
            start += present[w].size
        return forward(circuit, out, probes).reshape(-1)

    return torch.func.jacrev(f)(theta0).numpy()


def _profile(jac, n_out, cols, top):
    return tuple(int(np.linalg.matrix_rank(jac[:k * n_out][:, list(cols)])) if len(cols) else 0
                 for k in range(1, top + 1))


def _key(jac, n_out, cols, top, budget, affine):
    prof, full = _profile(jac, n_out, cols, top), _profile(jac, n_out, range(jac.shape[1]), top)
    m_star = max([k for k in range(1, top + 1) if prof[k - 1] == full[k - 1] <= budget], default=0)
    return (m_star, prof[m_star:], affine)


def _columns_of(alloc, circuit):
    out, start = [], 0
    for w in circuit.weight_names:
        present = np.flatnonzero(circuit.structure[w])
        chosen = set(np.flatnonzero(alloc.masks[w]).tolist())
        out += [start + i for i, idx in enumerate(present) if idx in chosen]
        start += present.size
    return out


def _owner(circuit):
    return [w for w in circuit.weight_names for _ in range(int(circuit.structure[w].sum()))]


def _affine_chain(circuit, cols):
    owners = {_owner(circuit)[c] for c in cols}
    if circuit.dynamics.name == "discrete":
        return "W" not in owners and not {"B", "C"} <= owners
    return len(owners) <= 1


@pytest.mark.parametrize("circuit, budgets", [
    (ns.feedforward([2, 2, 2]), [2, 3, 4, 5]),
    (ns.feedforward([3, 2, 2]), [3, 4, 5]),
    (ns.linear_rnn(2, 1, 1, steps=3), [2, 3, 4]),
], ids=lambda x: getattr(x, "name", str(x)))
def test_optimal_allocation_equals_brute_force(circuit, budgets):
    top = circuit.n_in * (circuit.steps if circuit.dynamics.name == "discrete" else 1)
    jac = _reference_jacobian(circuit, top)
    n = jac.shape[1]
    for budget in budgets:
        keys = [_key(jac, circuit.n_out, cols, top, budget, _affine_chain(circuit, cols))
                for cols in itertools.combinations(range(n), budget)]
        best = max(keys)
        alloc = ns.optimal_allocation(circuit, budget)
        assert alloc.size == budget and alloc.strategy == "optimal"
        cols = _columns_of(alloc, circuit)
        got = _key(jac, circuit.n_out, cols, top, budget, _affine_chain(circuit, cols))
        assert got == best, f"budget {budget}: optimal_allocation {got}, brute force {best}"


def test_issue_example_prefers_the_affine_allocation():
    # 6-6-4, budget 16: dim V = 4 min(m, 6), 16 at m = 4. All 16 in W2 (4 per output row) has MP = 1 up to m = 4;
    # so has a W1-only allocation whose columns feed W2 evenly (W2 Delta X reaches rank 4 min(m, 6)); a split over
    # both layers reaches the same ranks but is only "positive". The pick must be one layer (affine), "one" at m = 4.
    net = ns.feedforward([6, 6, 4])
    alloc = ns.optimal_allocation(net, 16)
    assert sorted(alloc.counts.values()) == [0, 16], alloc.counts
    assert ns.certify(net, alloc, m=4).verdict == "one"
    assert ns.certify(net, alloc, m=5).verdict == "zero"  # nothing of 16 reaches dim V = 20


def test_minimal_budget_reports_the_per_projection_requirement():
    # 4-2-3 chain with m = 4: dim V = 2 (3 + 4 - 2) = 10 (rank-2 3x4 matrices). Brute-force reference of the
    # smallest share of each layer over all full-rank allocations of 10 synapses.
    net = ns.feedforward([4, 2, 3])
    m = 4
    res = ns.minimal_budget(net, m=m)
    assert int(res) == 10
    jac = _reference_jacobian(net, m)
    owner = _owner(net)
    share = {w: min(sum(owner[c] == w for c in cols) for cols in itertools.combinations(range(jac.shape[1]), 10)
                    if np.linalg.matrix_rank(jac[:, list(cols)]) == 10) for w in net.weight_names}
    assert res.by_projection == share, (res.by_projection, share)
    assert sum(res.example.values()) == 10
