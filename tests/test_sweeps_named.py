"""ns.sweep_allocations (neurosubset/sweeps/named.py): named explicit allocations over m.

References: each point against its own direct :func:`neurosubset.match_probability` call (the second method the
helper must reproduce value for value), the single-layer closed form (a row matches iff it holds >= m plastic
synapses), and the same sweep with worker processes.
"""
from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from conftest import named_circuit

import neurosubset as ns

LM = ns.Auto(restarts=2, max_rounds=2, iterations=40)


def _allocations():
    c = named_circuit("lffn_2layer")  # 4-4-3 linear
    return c, {"W2 rows": ns.allocate(c, 9, within=["W2"], strategy="spread-rows", seed=0),
               "both layers": ns.allocate(c, 9, strategy="random", seed=0)}


@pytest.mark.slow
def test_every_point_equals_its_match_probability_call():
    c, allocs = _allocations()
    ds = ns.sweep_allocations(c, allocs, m=[1, 3], trials=6, seed=5, solver=LM)
    assert list(ds.allocation.values) == list(allocs) and list(ds.m.values) == [1, 3]
    for name, alloc in allocs.items():
        for m in (1, 3):
            ref = ns.match_probability(c, alloc, m, 6, 5, solver=LM)
            point = ds.sel(allocation=name, m=m)
            np.testing.assert_array_equal(point.residual.values, ref.residual.values)
            np.testing.assert_array_equal(point.matched.values, ref.matched.values)
            assert float(point.mp) == float(ref.mp) and str(point.decision_kind.values) == ref.attrs["decision_kind"]
            rounds = int(point.rounds)
            np.testing.assert_array_equal(point.mp_by_round.values[:rounds], ref.mp_by_round.values)
            assert (point.mp_by_round.values[rounds:] == float(ref.mp_by_round.values[-1])).all()  # padded
        assert int(ds.budget.sel(allocation=name)) == alloc.size
    # W2 holds 3 plastic synapses per output row: y = (W2 + D) h, h of rank min(m, 4) -> MP = 1 for m <= 3 (exact)
    w2 = ds.sel(allocation="W2 rows")
    assert (w2.mp == 1).all() and (w2.decision_kind == "exact").all()


@pytest.mark.slow
def test_workers_give_the_same_dataset():
    c, allocs = _allocations()
    one = ns.sweep_allocations(c, allocs, m=[2, 3], trials=4, seed=1, solver=LM)
    two = ns.sweep_allocations(c, allocs, m=[2, 3], trials=4, seed=1, solver=LM, workers=2)
    xr.testing.assert_identical(one, two)


@pytest.mark.parametrize("kwargs,match", [
    (dict(allocations={}), "'allocations' parameter must be a non-empty dict"),
    (dict(allocations=["x"]), "'allocations' parameter must be a non-empty dict"),
    (dict(m=[2, 2]), "'m' parameter must be one or more distinct probe counts"),
    (dict(m=0), "'m'"),
    (dict(trials=0), "'trials'"),
])
def test_bad_input_is_one_line_naming_the_field(kwargs, match):
    c, allocs = _allocations()
    args = dict(allocations=allocs, m=[2], trials=2)
    args.update(kwargs)
    with pytest.raises(ns.NeurosubsetError, match=match) as info:
        ns.sweep_allocations(c, args.pop("allocations"), **args)
    assert "\n" not in str(info.value)


def test_an_allocation_of_another_circuit_is_refused():
    c, _ = _allocations()
    other = named_circuit("lffn_1layer")
    with pytest.raises(ns.ParameterError, match="has masks for"):
        ns.sweep_allocations(c, {"x": ns.allocate(other, 3, seed=0)}, m=2, trials=2)
