"""The sweep table and per-point decision kinds (neurosubset.sweeps.table; the decision_kind variable and mp_high's
comment of the sweep template)."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

import neurosubset as ns
from neurosubset import _schema
from neurosubset.cli import main
from neurosubset.sweeps import open_sweep
from neurosubset.sweeps.table import mp_table, point_decision_kind

DATA = Path(__file__).resolve().parent / "data"
SHORT_LM = ns.LevenbergMarquardt(restarts=1, max_rounds=3, iterations=4)


@pytest.fixture(scope="module")
def lm_sweep():
    # a linear RNN (outputs polynomial in W: only the local LM decides) with an LM too short for one round, so the
    # last round still gains MP (0.125 -> 0.625 -> 1.0 at budget 12, m = 3 measured)
    c = ns.linear_rnn(6, 1, 1, steps=4)
    return ns.sweep(c, budget=[12], m=[3], strategy=["spread-rows"], within=["W"], trials=16, seed=0,
                    solver=SHORT_LM, dale=False, stable=False, progress=False)


@pytest.fixture(scope="module")
def exact_sweep():
    # one linear layer: outputs affine in the weights, decided by exact least squares at every point
    c = ns.feedforward([4, 3])
    return ns.sweep(c, budget=[6, 9], m=[2, 3], strategy=["spread-rows"], trials=4, seed=0, progress=False)


def test_sweep_stores_decision_kind_per_point(lm_sweep, exact_sweep):
    assert set(np.unique(lm_sweep["decision_kind"].values)) == {"lower bound"}
    assert set(np.unique(exact_sweep["decision_kind"].values)) == {"exact"}
    # the per-point kind agrees with each point's own mp result (its decision_kind attr)
    c = ns.feedforward([4, 3])
    one = ns.match_probability(c, ns.allocate(c, 6, strategy="spread-rows", seed=0), m=2, trials=2, seed=0)
    assert one.attrs["decision_kind"] == "exact"
    ns.validate_dataset(lm_sweep, "sweep")


def test_sweep_mp_high_says_it_is_not_an_upper_bound_at_lower_bound_points(lm_sweep):
    assert _schema.LOWER_BOUND_COMMENT in lm_sweep["mp_high"].attrs["comment"]
    assert "decision_kind" in lm_sweep["mp_high"].attrs["comment"]


def test_table_marks_lower_bounds_shows_the_bracket_and_still_improving_points(lm_sweep, exact_sweep):
    text = mp_table(lm_sweep)
    lo, hi = float(lm_sweep["mp_lower"].squeeze()), float(lm_sweep["mp_upper"].squeeze())
    assert f"[{lo:.2f}, {hi:.2f}] LB +" in text, text
    gain = lm_sweep["mp_by_round"].values.ravel()
    assert gain[-1] - gain[-2] > 0.05, gain  # the flag's condition, from the per-round MP
    assert "LB: lower bound at 1 of 1 points" in text and "still improving at 1 of 1" in text, text
    exact = mp_table(exact_sweep)
    assert " LB" not in exact and "+" not in exact and "lower bound" not in exact, exact


def test_old_store_without_decision_kind_reads_its_kinds(tmp_path):
    # tests/data/README.md: the CA3->CA3 = 0 points were solved by exact least squares, the others by the LM
    store = tmp_path / "old.zarr"
    shutil.copytree(DATA / "sweep_ca3_ca1.zarr", store)
    ds = open_sweep(store)
    assert "decision_kind" not in ds.data_vars
    kind = point_decision_kind(ds)
    done = ds["mp"].notnull()
    exact_share = ds["CA3->CA3"] == 0.0  # a format-1 store: one dim per key
    assert (kind.where(done & exact_share, "exact") == "exact").all()
    assert (kind.where(done & ~exact_share, "lower bound") == "lower bound").all()
    assert int((kind == "lower bound").sum()) == 8 and int((kind == "exact").sum()) == 4
    assert "LB: lower bound at 8 of 12 points" in mp_table(ds)


@pytest.mark.slow
def test_cli_sweep_prints_the_marked_table(tmp_path, capsys):
    out = tmp_path / "s.zarr"
    assert main(["sweep", "lrnn:6,1,1,4", "--budget", "12", "--within", "W", "--strategy", "spread-rows", "--m", "3",
                 "--trials", "16", "--solver", "lm", "--restarts", "1", "--max-rounds", "3", "--iterations", "4",
                 "--no-dale", "--no-stable", "--quiet", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "LB +" in printed and "MP [bracket]" in printed, printed
