"""neurosubset.results: the one-line summary of an mp result (fit statuses counted, lower bounds and
still-improving fits flagged), fraction keys and the CF-decoded views of the int8 flags."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

import neurosubset as ns
from neurosubset import _schema
from neurosubset.cli import main
from neurosubset.results import fit_status_counts, summary

# a linear RNN fitted by the LM with too few iterations: MP grows round by round (0.125, 0.625, 1.0 measured),
# so the last round gains well above the 0.05 flag; all its trials are local-solver decisions (a lower bound)
LRNN = dict(n=6, n_in=1, n_out=1, steps=4)
SHORT_LM = ns.LevenbergMarquardt(restarts=1, max_rounds=3, iterations=4)


@pytest.fixture(scope="module")
def improving():
    c = ns.linear_rnn(**LRNN)
    alloc = ns.allocate(c, 12, within=["W"], strategy="spread-rows", seed=0)
    return ns.match_probability(c, alloc, m=3, trials=16, seed=0, solver=SHORT_LM, dale=False, stable=False)


def test_last_round_gain_above_the_flag_is_flagged_in_attrs_and_summary(improving):
    by_round = improving["mp_by_round"].values
    gain = by_round[-1] - by_round[-2]  # recomputed from the per-round MP, not the attr
    assert gain > 0.05, by_round
    assert improving.attrs["still_improving"] == 1
    line = summary(improving)
    assert "still improving" in line and f"{gain:.2f}" in line, line
    assert "lower bound" in line and "not an upper bound" in line, line


def test_summary_counts_every_fit_status():
    # 16 trials of a too-short LM on a larger RNN: two statuses (iteration_cap, no_descent), counted independently
    c = ns.linear_rnn(8, 1, 1, steps=5)
    alloc = ns.allocate(c, 16, within=["W"], strategy="spread-rows", seed=0)
    ds = ns.match_probability(c, alloc, m=6, trials=16, seed=0, dale=False, stable=False,
                              solver=ns.LevenbergMarquardt(restarts=1, max_rounds=2, iterations=6))
    meanings = ds["fit_status"].attrs["flag_meanings"].split()
    expected = Counter(meanings[int(v)] for v in ds["fit_status"].values)
    assert fit_status_counts(ds) == dict(expected)
    line = summary(ds)
    (top, k), *rest = expected.most_common()
    assert f"{k} of 16 trials {top}" in line, line
    for name, n in rest:
        assert f"{n} {name}" in line, line
    assert ds.attrs["still_improving"] == int(ds["mp_by_round"].values[-1] - ds["mp_by_round"].values[-2] > 0.05)


def test_cli_mp_line_counts_statuses_and_flags_a_still_improving_fit(capsys):
    code = main(["mp", "lrnn:6,1,1,4", "--budget", "12", "--within", "W", "--strategy", "spread-rows", "--m", "3",
                 "--trials", "16", "--solver", "lm", "--restarts", "1", "--max-rounds", "3", "--iterations", "4",
                 "--no-dale", "--no-stable", "--quiet"])
    assert code == 0
    line = [x for x in capsys.readouterr().out.splitlines() if x.startswith("MP = ")]
    assert len(line) == 1, line
    assert "of 16 trials" in line[0] and "still improving" in line[0], line[0]
