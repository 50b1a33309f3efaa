"""Per-synapse signs from data (Projection.signs): drawn weights, the sign box while fitting, the TOML round trip,
the refusals. Expected values are read off the spec written in each test, not from the code's output."""
from __future__ import annotations

import numpy as np
import pytest

import neurosubset as ns
from neurosubset._spec import Projection, Region
from neurosubset.solvers.bounded import sign_bounds

SYN = ((0, 1, 2.0), (1, 0, 1.0), (2, 3, 3.0), (3, 2, 1.0), (1, 2, 1.0))
SIGNS = ((0, 1, 1), (1, 0, -1), (2, 3, -1))  # (1, 2) and (3, 2) stay free


def _circuit(pre_sign=None, signs=SIGNS):
    regions = (Region("X", 2, "input"), Region("H", 4, "hidden", pre_sign), Region("OUT", 1, "output"))
    projs = (Projection("X", "H"), Projection("H", "H", gain=0.5, synapses=SYN, signs=signs), Projection("H", "OUT"))
    return ns.Circuit(regions=regions, projections=projs, dynamics="steady", name="signed")


def test_every_draw_keeps_each_listed_sign_and_leaves_the_others_free():
    c = _circuit()
    rng = np.random.default_rng(0)
    draws = np.stack([c.sample_weights(rng)["H->H"] for _ in range(400)])
    for i, j, s in SIGNS:
        assert (s * draws[:, i, j] > 0).all(), (i, j)
    for i, j in ((1, 2), (3, 2)):  # free: both signs occur
        assert (draws[:, i, j] > 0).any() and (draws[:, i, j] < 0).any(), (i, j)


def test_the_sign_box_follows_the_listed_signs_and_fits_keep_them():
    c = _circuit()
    alloc = ns.allocate(c, 5, within=["H->H"])
    box = sign_bounds(c, alloc)
    # theta runs over the plastic entries row-major: (0,1) +, (1,0) -, (1,2) free, (2,3) -, (3,2) free
    np.testing.assert_array_equal(box.lower, [0.0, -np.inf, -np.inf, -np.inf, -np.inf])
    np.testing.assert_array_equal(box.upper, [np.inf, 0.0, np.inf, 0.0, np.inf])
    res = ns.fit(c, alloc, m=2, trials=4, seed=0)
    assert (res.sign_violations == 0).all()
    for i, j, s in SIGNS:
        assert (s * res.student["H->H"][:, i, j] >= 0).all()


def test_signs_round_trip_through_toml():
    c = _circuit()
    back = ns.Circuit.from_toml_text(c.to_toml())
    assert back.projection["H->H"].signs == SIGNS


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"pre_sign": 1}, "unsigned presynaptic region"),
    ({"signs": ((0, 1, 2),)}, "must be 1 or -1"),
    ({"signs": ((0, 3, 1),)}, "is no synapse of 'synapses'"),
])
def test_bad_signs_are_refused_in_one_line(kwargs, match):
    with pytest.raises(ns.CircuitSpecError, match=match) as err:
        _circuit(**kwargs)
    assert "\n" not in str(err.value)


def test_results_name_the_sign_constraint_as_per_synapse_not_dale():
    c = _circuit()
    ds = ns.match_probability(c, ns.allocate(c, 5, within=["H->H"]), m=2, trials=2, seed=0, certificate=False)
    assert ds.attrs["sign_constraint"] == "per-synapse signs from data"
    unsigned = _circuit(signs=None)
    ds0 = ns.match_probability(unsigned, ns.allocate(unsigned, 5, within=["H->H"]), m=2, trials=2, seed=0,
                               certificate=False)
    assert "sign_constraint" not in ds0.attrs


def test_an_edge_list_sign_column_gives_per_synapse_signs_on_unsigned_regions():
    import pandas as pd

    from neurosubset.connectivity import circuit_arguments

    regions = (Region("X", 2, "input"), Region("H", 3, "hidden", neurons=("a", "b", "c")), Region("OUT", 1, "output"))
    table = pd.DataFrame({"pre": ["a", "b", "c", "a"], "post": ["b", "c", "a", "c"], "count": [2, 1, 3, 1],
                          "sign": [1, -1, 0, float("nan")]})
    fixed = (Projection("X", "H"), Projection("H", "OUT"))
    c = ns.Circuit(**circuit_arguments(regions, table, projections=fixed))
    # (post, pre) indices: b<-a = (1, 0) +1; c<-b = (2, 1) -1; a<-c and c<-a free
    assert c.projection["H->H"].signs == ((1, 0, 1), (2, 1, -1))
    bad = table.assign(sign=[1, -1, 0, 0], pre=["a", "b", "c", "a"], post=["b", "c", "a", "b"])  # b<-a twice: + then 0
    c2 = ns.Circuit(**circuit_arguments(regions, bad, projections=fixed))  # 0 is "free": no contradiction
    assert c2.projection["H->H"].signs == ((1, 0, 1), (2, 1, -1))
