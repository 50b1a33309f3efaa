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


# ------------------------------------------------------------------------------------------------ files (issue 27 #4)
@pytest.mark.slow
def test_fraction_keys_is_a_list_for_sweeps_in_memory_in_files_and_old_stores(tmp_path):
    import shutil
    from pathlib import Path

    from neurosubset.sweeps import export, open_sweep

    c = ns.feedforward([4, 3, 2])
    ds = ns.sweep(c, budget=[6], fractions=ns.simplex_grid(["W1", "W2"], step=0.5), m=[2], trials=2, seed=0,
                  store=tmp_path / "s.zarr", progress=False)
    assert ns.results.fraction_keys(ds) == ["W1", "W2"]
    assert ns.results.fraction_keys(open_sweep(tmp_path / "s.zarr")) == ["W1", "W2"]
    nc = export(tmp_path / "s.zarr", tmp_path / "s.nc")
    import xarray as xr
    with xr.open_dataset(nc, engine="h5netcdf") as back:
        assert ns.results.fraction_keys(back) == ["W1", "W2"]
    old = tmp_path / "old.zarr"  # tests/data/README.md: swept 'CA3->CA3,CA3->CA1'
    shutil.copytree(Path(__file__).resolve().parent / "data" / "sweep_ca3_ca1.zarr", old)
    assert ns.results.fraction_keys(open_sweep(old)) == ["CA3->CA3", "CA3->CA1"]
    one = ns.match_probability(c, ns.allocate(c, 6, seed=0), m=2, trials=2, seed=0)
    assert ns.results.fraction_keys(one) == []


def test_decode_gives_categorical_views_and_keeps_the_raw_flags(tmp_path, improving):
    import xarray as xr

    path = ns.write(improving, tmp_path / "mp.nc")
    with xr.open_dataset(path, engine="h5netcdf") as back:
        back = back.load()
    for ds in (improving, back):
        decoded = ns.results.decode(ds)
        for name in ("fit_status", "decision", "outcome"):
            raw = decoded[name].values
            np.testing.assert_array_equal(raw, ds[name].values)  # the raw int8 flags stay
            meanings = ds[name].attrs["flag_meanings"].split()  # CF: flag_values 0..n-1 in that order
            assert list(ds[name].attrs["flag_values"]) == list(range(len(meanings)))
            assert decoded[f"{name}_meaning"].values.tolist() == [meanings[int(v)] for v in raw]
        assert set(decoded["decision_meaning"].values) == {"levenberg_marquardt"}  # an LM-only fit
        assert set(decoded["fit_status_meaning"].values) <= set(_schema.FIT_STATUS.meanings)


def test_decode_reads_an_old_sweep_store_status(tmp_path):
    import shutil
    from pathlib import Path

    from neurosubset.sweeps import open_sweep

    shutil.copytree(Path(__file__).resolve().parent / "data" / "sweep_ca3_ca1.zarr", tmp_path / "old.zarr")
    ds = open_sweep(tmp_path / "old.zarr")
    decoded = ns.results.decode(ds)
    # tests/data/README.md: 12 points done, 24 off-grid cells
    assert int((decoded["status_meaning"] == "done").sum()) == 12
    assert int((decoded["status_meaning"] == "off_grid").sum()) == 24
