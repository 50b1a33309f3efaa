"""neurosubset.responses.atlas_compare: the common measurement set, the neuropeptide groups, the ranking's order."""
from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

import numpy as np
import pytest

from neurosubset.datasets import pooled_noise, randi2023
from neurosubset.responses.atlas import atlas_anatomy, atlas_data
from neurosubset.responses.atlas_compare import common_measured, neuropeptide_groups


@pytest.fixture(scope="module")
def both():
    an = atlas_anatomy()
    return an, {s: atlas_data(pooled_noise(randi2023(s)), an, sd="sd_floor") for s in ("wt", "unc31")}


@pytest.mark.slow  # the anatomy and the atlas load in ~8 s
def test_common_measured_is_the_intersection(both):
    """Counted here from the two Datasets directly: the issue's ~8,150 pairs over 105 stimulations (AWC merged and
    the neurons outside the anatomy dropped change a few)."""
    an, data = both
    wt, unc = common_measured(data["wt"], data["unc31"])
    np.testing.assert_array_equal(wt.stimulated, unc.stimulated)
    np.testing.assert_array_equal(wt.mask, unc.mask)
    a, b = randi2023("wt"), randi2023("unc31")
    ma, mb = np.isfinite(a["response"].values), np.isfinite(b["response"].values)
    names = list(a["responding"].values)
    inside = np.array([n in an.names for n in names])
    both_m = ma & mb & inside[:, None] & inside[None, :]
    assert int(wt.mask.sum()) == int(both_m.sum())
    assert wt.stimulated.size == int(both_m.any(0).sum())
    assert abs(int(wt.mask.sum()) - 8150) < 100 and abs(wt.stimulated.size - 105) <= 2


@pytest.mark.slow  # the anatomy and the atlas load in ~8 s
def test_peptide_groups_from_the_edge_list(both):
    an, _ = both
    groups = neuropeptide_groups(an, min_edges=1)
    path = Path(importlib.util.find_spec("cect").submodule_search_locations[0]) / "data" / "edgelist_NP.csv"
    index = {n: i for i, n in enumerate(an.names)}
    expected: dict[str, set] = {}
    with open(path) as f:
        for pre, post, peptide, _ in csv.reader(f):
            pre, post = ("AWC" if pre in ("AWCL", "AWCR") else pre), ("AWC" if post in ("AWCL", "AWCR") else post)
            if pre in index and post in index and pre != post:
                expected.setdefault(peptide.split("-")[0], set()).add((index[post], index[pre]))
    assert set(groups) == set(expected)
    for k, v in groups.items():
        assert set(map(tuple, v.tolist())) == expected[k]
