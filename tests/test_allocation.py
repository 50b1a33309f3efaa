"""Allocation strategies, fractions and masks, checked by counting."""
from __future__ import annotations

import numpy as np
import pytest

import neurosubset as ns
from neurosubset import AllocationError


@pytest.fixture
def ff():
    return ns.feedforward([10, 7, 4])


@pytest.fixture
def sparse():
    return ns.Circuit.from_dict({
        "dynamics": "steady",
        "regions": {"EC": {"size": 12, "role": "input"}, "CA3": {"size": 20}, "CA1": {"size": 10},
                    "OUT": {"size": 3, "role": "output"}},
        "projections": [{"pre": "EC", "post": "CA3", "p": 0.5}, {"pre": "CA3", "post": "CA3", "p": 0.3, "gain": 0.5},
                        {"pre": "CA3", "post": "CA1", "p": 0.5}, {"pre": "CA1", "post": "OUT"}]})


def test_spread_rows_counts_differ_by_at_most_one(ff):
    alloc = ns.allocate(ff, 23, strategy="spread-rows", within=["W1"], seed=3)
    rows = alloc.rows("W1")
    assert rows.sum() == 23 and alloc.size == 23
    assert rows.max() - rows.min() <= 1 and sorted(set(rows.tolist())) == [3, 4]  # 23 = 7 * 3 + 2
    assert alloc.counts == {"W1": 23, "W2": 0}


def test_spread_cols_counts_differ_by_at_most_one(ff):
    alloc = ns.allocate(ff, 23, strategy="spread-cols", within=["W1"], seed=3)
    cols = alloc.masks["W1"].sum(axis=0)
    assert cols.sum() == 23 and cols.max() - cols.min() <= 1  # 23 = 10 * 2 + 3


def test_concentrated_rows_fill_as_few_neurons_as_possible(ff):
    alloc = ns.allocate(ff, 23, strategy="concentrated-rows", within=["W1"], seed=0)
    rows = alloc.rows("W1")
    # each row of W1 has 10 synapses: 23 needs ceil(23 / 10) = 3 rows, two of them full
    assert (rows > 0).sum() == 3 and sorted(rows.tolist())[-3:] == [3, 10, 10]
    cols = ns.allocate(ff, 23, strategy="concentrated-cols", within=["W1"], seed=0).masks["W1"].sum(axis=0)
    assert (cols > 0).sum() == 4 and sorted(cols.tolist())[-4:] == [2, 7, 7, 7]  # columns hold 7


def test_spread_rows_over_two_projections_counts_postsynaptic_neurons(sparse):
    # CA3 rows receive EC->CA3 and CA3->CA3: one postsynaptic neuron, counted once
    alloc = ns.allocate(sparse, 40, strategy="spread-rows", within=["EC->CA3", "CA3->CA3"], seed=0)
    per_neuron = alloc.rows("EC->CA3") + alloc.rows("CA3->CA3")
    assert per_neuron.sum() == 40 and per_neuron.max() - per_neuron.min() <= 1


def test_only_structurally_present_synapses_become_plastic(sparse):
    for strategy in ns.STRATEGIES:
        alloc = ns.allocate(sparse, 60, strategy=strategy, seed=1)
        for name, mask in alloc.masks.items():
            assert not (mask & ~sparse.structure[name]).any(), (strategy, name)


def test_random_is_seeded_and_uniform_size(ff):
    a = ns.allocate(ff, 30, seed=5)
    assert a == ns.allocate(ff, 30, seed=5) and a != ns.allocate(ff, 30, seed=6)
    assert a.size == 30 and a.hash == ns.allocate(ff, 30, seed=5).hash


def test_fractions_split_the_budget_by_largest_remainder(sparse):
    alloc = ns.allocate(sparse, 50, fractions={"CA3->CA3": 0.25, "CA3->CA1": 0.75}, strategy="random", seed=0)
    assert alloc.counts == {"EC->CA3": 0, "CA3->CA3": 13, "CA3->CA1": 37, "CA1->OUT": 0}  # 12.5 -> 13, 37.5 -> 37
    # a region key means every projection into it
    region = ns.allocate(sparse, 30, fractions={"CA3": 1.0}, seed=0)
    assert region.counts["EC->CA3"] + region.counts["CA3->CA3"] == 30


def test_from_masks_fills_missing_weights_with_frozen(ff):
    mask = np.zeros((7, 10), dtype=bool)
    mask[0, :3] = True
    alloc = ns.Allocation.from_masks(ff, {"W1": mask})
    assert alloc.size == 3 and not alloc.masks["W2"].any()
    assert list(alloc.indices["W1"]) == [0, 1, 2]


@pytest.mark.parametrize("kwargs, message", [
    ({"budget": 500}, "The 'budget' parameter of allocate must be <= 98 (the plastic-eligible synapses in "
                      "['W1', 'W2']). Got 500 instead."),
    ({"budget": 5, "within": ["W3"]}, "Weight 'W3' (in 'within') does not exist. Expected one of ['W1', 'W2']."),
    ({"budget": 5, "strategy": "greedy"}, "The 'strategy' parameter must be one of"),
    ({"budget": 5, "fractions": {"W1": -0.5, "W2": 1.5}}, "fractions['W1'] must be in [0, 1]. Got -0.5."),
    ({"budget": 5, "fractions": {"W1": 0.5, "W2": 0.4}}, "The fractions must sum to 1. Got 0.9"),
    ({"budget": 5, "fractions": {"W1": 0.5, "V4": 0.5}}, "Projection or region 'V4' (in 'fractions') does not exist."),
    ({"budget": 5, "fractions": {"W1": 0.5, "L1": 0.5}}, "both cover weight 'W1'"),
    ({"budget": 40, "fractions": {"W1": 0.2, "W2": 0.8}},
     "The share of fractions['W2'] is 32 synapses, more than the 28"),
    ({"budget": -1}, "The 'budget' parameter must be >= 0. Got -1"),
])
def test_bad_requests_name_the_field(ff, kwargs, message):
    with pytest.raises(AllocationError) as err:
        ns.allocate(ff, **kwargs)
    assert message in str(err.value)


def test_bad_masks_are_refused(ff, sparse):
    with pytest.raises(AllocationError, match=r"must have shape \(7, 10\)"):
        ns.Allocation.from_masks(ff, {"W1": np.ones((10, 7), dtype=bool)})
    with pytest.raises(AllocationError, match="Weight 'W9' \\(in 'masks'\\) does not exist"):
        ns.Allocation.from_masks(ff, {"W9": np.ones((7, 10), dtype=bool)})
    with pytest.raises(AllocationError, match="absent synapse"):
        ns.Allocation.from_masks(sparse, {"CA3->CA3": np.ones((20, 20), dtype=bool)})


def test_bad_arguments_of_allocations_raise_allocation_errors(ff):
    alloc = ns.allocate(ff, 5, seed=0)
    with pytest.raises(AllocationError, match="Weight 'W7' \\(in 'name'\\) does not exist. Expected one of"):
        alloc.rows("W7")
    with pytest.raises(AllocationError, match="'masks' parameter must be a mapping"):
        ns.Allocation.from_masks(ff, [np.zeros((7, 10), bool)])
    with pytest.raises(AllocationError, match="'masks' parameter must be a mapping"):
        ns.Allocation(None)


def test_pool_numbers_neurons_by_region_in_declaration_order(sparse):
    # EC 0-11, CA3 12-31, CA1 32-41, OUT 42-44 (sizes 12, 20, 10, 3): the global ids spread-rows/-cols group by
    from neurosubset.allocation import _pool
    pool = _pool(sparse, ["CA3->CA1", "CA1->OUT"])
    ca1 = pool["weight"] == sparse.weight_names.index("CA3->CA1")
    assert set(pool["post"][ca1]) <= set(range(32, 42)) and set(pool["pre"][ca1]) <= set(range(12, 32))
    assert set(pool["post"][~ca1]) == set(range(42, 45)) and set(pool["pre"][~ca1]) == set(range(32, 42))
    flat = pool["flat"][ca1]
    assert np.array_equal(pool["post"][ca1], 32 + flat // 20) and np.array_equal(pool["pre"][ca1], 12 + flat % 20)
