"""Sweeps: grid, validation, values against the single-layer rank theorem, determinism, resumable store, dask.

Independent references: the number of simplex points is ``C(n + k - 1, k - 1)`` (stars and bars); for a single
linear layer ``y = W x`` (here two input regions A, B projecting onto one output region O, so
``y = W_A x_A + W_B x_B`` with ``d = 7`` inputs), MP = 1 iff every output row holds ``k_i >= min(m, d)`` plastic
synapses, else 0 (SCIENCE.md), and the plastic rank is ``sum_i min(k_i, min(m, d))``.
"""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import neurosubset as ns
from neurosubset import cli
from neurosubset.circuit import Circuit, Projection, Region
from neurosubset._schema import DONE, INFEASIBLE_BUDGET, INFEASIBLE_SHARE, OFF_GRID
from neurosubset.sweeps import export, flat_points, open_sweep

D_IN = 7  # inputs of the two-input circuit (4 + 3)


def two_inputs() -> Circuit:
    """y = W_A x_A + W_B x_B: affine in every weight (exact solves, fast), rank theorem applies row by row."""
    return Circuit((Region("A", 4, "input"), Region("B", 3, "input"), Region("O", 3, "output")),
                   (Projection("A", "O"), Projection("B", "O")), name="two_inputs")


SMALL = dict(budget=[9, 12], fractions=ns.simplex_grid(["A->O", "B->O"], step=0.5),
             strategy=["spread-rows", "concentrated-rows"], m=[2, 3], trials=6, seed=3)

# a bilinear two-layer net (Levenberg-Marquardt points, a few tenths of a second each) for the kill test
KILL_SCRIPT = textwrap.dedent("""
    import sys, neurosubset as ns
    ff = ns.feedforward([6, 4, 3])
    ns.sweep(ff, budget=[10], fractions=ns.simplex_grid(["W1", "W2"], step=0.25),
             strategy=["spread-rows", "concentrated-rows"], m=[2, 3], trials=40, seed=1,
             solver=ns.Auto(max_rounds=3, iterations=150), store=sys.argv[1])
""")
KILL_KW = dict(budget=[10], fractions=ns.simplex_grid(["W1", "W2"], step=0.25),
               strategy=["spread-rows", "concentrated-rows"], m=[2, 3], trials=40, seed=1,
               solver=ns.Auto(max_rounds=3, iterations=150))


@pytest.fixture(scope="module")
def small() -> xr.Dataset:
    """The SMALL sweep in memory, one process."""
    with pytest.warns(UserWarning, match="infeasible"):
        return ns.sweep(two_inputs(), **SMALL)


# ------------------------------------------------------------------------------------------------- grids and specs
@pytest.mark.parametrize(("k", "step"), [(2, 0.25), (3, 0.1), (4, 0.5), (1, 1.0)])
def test_simplex_grid_counts_and_sums(k, step):
    keys = [f"k{i}" for i in range(k)]
    grid = ns.simplex_grid(keys, step=step)
    n = round(1 / step)
    assert len(grid) == math.comb(n + k - 1, k - 1), len(grid)
    pts = np.array(grid.points)
    np.testing.assert_allclose(pts.sum(axis=1), 1.0, atol=1e-12)
    assert (pts >= 0).all()
    assert len({tuple(p) for p in grid.points}) == len(grid)
    assert set(np.round(pts.ravel() * n, 9)) <= set(range(n + 1))  # every level is i / n


def test_simplex_grid_rejects_bad_step():
    with pytest.raises(ns.AllocationError, match="'step'.*divide 1"):
        ns.simplex_grid(["A->O", "B->O"], step=0.3)
    with pytest.raises(ns.AllocationError, match="'step'"):
        ns.simplex_grid(["A->O", "B->O"], step=0.0)
    with pytest.raises(ns.AllocationError, match="string"):
        ns.simplex_grid("A->O", step=0.5)


@pytest.mark.parametrize(("points", "message"), [
    ([{"A->O": -0.5, "B->O": 1.5}], r"fractions\['A->O'\] must be in \[0, 1\]"),
    ([{"A->O": 0.5, "B->O": 0.4}], "must sum to 1. Got 0.9"),
    ([{"A->X": 0.5, "B->O": 0.5}], "'A->X'.*does not exist"),
    ([{"A->O": 0.5, "B->O": 0.5}, {"B->O": 0.5, "A->O": 0.5}], "same keys in the same order"),
    ({"A->O": 0.5, "B->O": 0.5}, "wrap it in a list"),
])
def test_bad_fraction_specs_are_refused_up_front(points, message, tmp_path):
    store = tmp_path / "bad.zarr"
    with pytest.raises(ns.AllocationError, match=message):
        ns.sweep(two_inputs(), budget=6, fractions=points, m=2, trials=2, store=store)
    assert not store.exists()  # refused before anything was written


def test_bad_scalar_options_name_the_field():
    with pytest.raises(ns.AllocationError, match="'strategy'.*'spread-everywhere'"):
        ns.sweep(two_inputs(), budget=6, m=2, strategy=["spread-everywhere"], trials=2)
    with pytest.raises(ValueError, match="'m'.*>= 1"):
        ns.sweep(two_inputs(), budget=6, m=[0], trials=2)
    with pytest.raises(ValueError, match="'budget' parameter repeats"):
        ns.sweep(two_inputs(), budget=[6, 6], m=2, trials=2)
    c = two_inputs()
    with pytest.raises(ns.AllocationError, match="'nope'.*'within'.*Expected one of"):
        ns.sweep(c, budget=6, m=2, within=[c.weight_names[0], "nope"], trials=2)
    with pytest.raises(ns.ParameterError, match="'device'.*'cpu' or 'cuda'"):
        ns.sweep(c, budget=6, m=2, trials=2, device="tpu")


# ------------------------------------------------------------------------------------------------- the result
def test_result_layout_and_metadata(small):
    ds = small
    assert ds["mp"].dims == ("budget", "point", "strategy", "m")
    assert ds["matched"].dims == ("budget", "point", "strategy", "m", "trial")
    # the fraction keys are coordinates on `point` under CF names (the key in an attr), a MultiIndex when returned
    assert list(ds.indexes["point"].names) == ["A_to_O", "B_to_O"]
    assert (ds["A_to_O"].attrs["fraction_key"], ds["B_to_O"].attrs["fraction_key"]) == ("A->O", "B->O")
    assert ds["residual"].dims[-1] == "trial" and ds.sizes["trial"] == SMALL["trials"]
    assert list(ds["budget"].values) == [9, 12] and list(ds["m"].values) == [2, 3]
    assert list(ds["strategy"].values) == ["spread-rows", "concentrated-rows"]
    np.testing.assert_array_equal(ds["A_to_O"].values, [0.0, 0.5, 1.0])
    np.testing.assert_array_equal(ds["A_to_O"].values + ds["B_to_O"].values, 1.0)  # only simplex points
    for name in ("mp", "mp_low", "mp_high", "residual", "matched", "status", "budget", "m", "A_to_O"):
        assert ds[name].attrs.get("long_name"), name
        assert ds[name].attrs.get("units") == "1", name
    for key, value in ds.attrs.items():
        assert isinstance(value, (str, int, float)), (key, type(value))
    for key in ("circuit", "config_hash", "sweep_config", "neurosubset_version", "torch_version", "xarray_version",
                "zarr_version", "seed", "trials"):
        assert key in ds.attrs, key
    assert Circuit.from_toml_text(ds.attrs["circuit"]) == two_inputs()
    assert ds["status"].attrs["flag_meanings"].split()[DONE] == "done"
    # the example: select a strategy and plot what is left
    import matplotlib

    matplotlib.use("Agg")
    ds["mp"].sel(strategy="spread-rows").plot()
    import matplotlib.pyplot as plt

    plt.close("all")


def test_grid_cells_status_and_infeasible_points(small):
    ds = small
    status = ds["status"]
    # only simplex points are stored: no off-grid cells
    assert not (status == OFF_GRID).any() and ds.sizes["point"] == 3
    # B->O has 3 x 3 = 9 synapses: all 12 of budget 12 on it is infeasible, 9 of budget 9 is fine
    infeasible = status.sel(budget=12, A_to_O=0.0, B_to_O=1.0)
    assert (infeasible == INFEASIBLE_SHARE).all(), infeasible.values
    assert np.isnan(ds["mp"].sel(budget=12, A_to_O=0.0, B_to_O=1.0)).all()
    assert (status.sel(budget=9, A_to_O=0.0, B_to_O=1.0) == DONE).all()
    assert int((status == DONE).sum()) == 2 * 3 * 2 * 2 - 2 * 2  # budgets*points*strategies*m minus infeasible


def test_tidy_layout_nan_only_at_infeasible_points_and_tidy_frames(small):
    ds = small
    for strategy in SMALL["strategy"]:
        for m in SMALL["m"]:
            mp = ds["mp"].sel(strategy=strategy, m=m)
            infeasible = np.isin(ds["status"].sel(strategy=strategy, m=m).values, [INFEASIBLE_SHARE, INFEASIBLE_BUDGET])
            np.testing.assert_array_equal(np.isnan(mp.values), infeasible)
            assert infeasible.sum() == 1  # budget 12 with everything on B->O
    # tidy frames of the main variables: one row per (budget, fractions, strategy, m[, trial]), keys as columns
    frame = ds[["mp", "mp_low", "mp_high"]].to_dataframe().reset_index()
    assert len(frame) == 2 * 3 * 2 * 2
    assert list(frame.columns[:5]) == ["budget", "A_to_O", "B_to_O", "strategy", "m"]
    assert frame["mp"].isna().sum() == 2 * 2  # the infeasible point, for each strategy and m
    np.testing.assert_array_equal(frame["A_to_O"] + frame["B_to_O"], 1.0)
    trials = ds[["matched", "residual"]].to_dataframe()
    assert len(trials) == 2 * 3 * 2 * 2 * SMALL["trials"] and trials.index.names[-1] == "trial"
    # a matched trial has a residual below the tolerance, whichever row it is on
    done = trials["residual"].notna()
    np.testing.assert_array_equal(trials["matched"][done], trials["residual"][done] < ns.DEFAULT_TOL)
    by_hand = trials.groupby(["budget", "A_to_O", "B_to_O", "strategy", "m"])["matched"].mean()
    joined = frame.set_index(["budget", "A_to_O", "B_to_O", "strategy", "m"])["mp"].dropna()
    np.testing.assert_array_equal(by_hand.loc[joined.index].values, joined.values)


def test_budget_above_all_eligible_is_recorded_not_raised():
    with pytest.warns(UserWarning, match="1 sweep point"):
        ds = ns.sweep(two_inputs(), budget=[22], m=[2], trials=2)  # 21 synapses exist
    assert int(ds["status"].item()) == INFEASIBLE_BUDGET and np.isnan(ds["mp"].item())


def test_all_infeasible_store_has_the_full_layout(tmp_path):
    # no point can be computed: the store still holds every point variable (NaN), like a sweep with computed points
    with pytest.warns(UserWarning, match="1 sweep point"):
        ds = ns.sweep(two_inputs(), budget=[22], m=[2], trials=2, store=tmp_path / "none.zarr")
    computed = ns.sweep(two_inputs(), budget=[21], m=[2], trials=2)
    assert set(ds.data_vars) == set(computed.data_vars), set(ds.data_vars) ^ set(computed.data_vars)
    assert int(ds["status"].item()) == INFEASIBLE_BUDGET and np.isnan(ds["mp"].item())
    assert ds.sizes["trial"] == 2 and not ds["matched"].values.any()


# ------------------------------------------------------------------------------------------------- solver options
TINY = dict(budget=[9], m=[2, 3], trials=3, seed=1)


def test_deprecated_effort_keywords_warn_and_equal_the_solver_object():
    with pytest.warns(FutureWarning, match="steps"):
        loose = ns.sweep(two_inputs(), **TINY, restarts=2, max_rounds=3, steps=50)
    with pytest.warns(FutureWarning, match="restarts="):
        loose_no_steps = ns.sweep(two_inputs(), **TINY, restarts=2, max_rounds=3, solver="auto")
    typed = ns.sweep(two_inputs(), **TINY, solver=ns.Auto(restarts=2, max_rounds=3, iterations=50))
    xr.testing.assert_identical(loose, typed)
    assert loose.attrs["config_hash"] == typed.attrs["config_hash"] != loose_no_steps.attrs["config_hash"]
    assert loose.sizes["round"] == 3


def test_solver_names_and_the_hashed_configuration():
    import json

    auto = ns.sweep(two_inputs(), **TINY)
    cfg = json.loads(auto.attrs["sweep_config"])
    # the keys every store since store format 1 hashes, with the defaults of solver="auto"
    assert {k: cfg[k] for k in ("solver", "restarts", "max_rounds", "lm_steps", "tolerance")} == \
        {"solver": "auto", "restarts": 4, "max_rounds": 8, "lm_steps": 400, "tolerance": ns.DEFAULT_TOL}
    assert "widen" not in cfg  # the default widen is not hashed: stores from before it existed still resume
    xr.testing.assert_identical(ns.sweep(two_inputs(), **TINY, solver="auto"), auto)
    lstsq = ns.sweep(two_inputs(), **TINY, solver="lstsq")
    assert json.loads(lstsq.attrs["sweep_config"])["solver"] == "lstsq"
    assert set(lstsq["solver"].values.ravel()) == {"lstsq"}
    np.testing.assert_array_equal(lstsq["residual"].values, auto["residual"].values)  # affine: auto runs lstsq
    wide = ns.sweep(two_inputs(), **TINY, solver=ns.Auto(widen=2.0))
    assert json.loads(wide.attrs["sweep_config"])["widen"] == 2.0
    assert wide.attrs["config_hash"] != auto.attrs["config_hash"]
    with pytest.raises(ns.ParameterError, match="'solver'"):
        ns.sweep(two_inputs(), **TINY, solver="newton")


def test_error_classes():
    assert issubclass(ns.SweepStoreError, ns.NeurosubsetError)
    with pytest.raises(ns.ParameterError, match="'scheduler'"):
        ns.sweep(two_inputs(), **TINY, scheduler=8786)
    with pytest.raises(ns.ParameterError, match="'circuit'"):
        ns.sweep("two_inputs", **TINY)


def test_missing_dask_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)  # `import distributed` now raises ImportError
    with pytest.raises(ns.MissingExtraError, match=r"neurosubset\[distributed\]"):
        ns.sweep(two_inputs(), **TINY, scheduler="tcp://127.0.0.1:8786")


def test_mp_and_plastic_rank_follow_the_rank_theorem(small):
    ds = small
    done = ds["status"] == DONE
    checked = 0
    for idx in zip(*np.nonzero(done.values)):
        cell = ds.isel(dict(zip(ds["mp"].dims, idx)))
        rows = cell["mask_A_to_O"].values.sum(axis=1) + cell["mask_B_to_O"].values.sum(axis=1)
        need = min(int(cell["m"]), D_IN)
        expected = 1.0 if rows.min() >= need else 0.0
        assert float(cell["mp"]) == expected, (idx, rows, float(cell["mp"]))
        assert int(rows.sum()) == int(cell["budget"])
        assert float(cell["plastic_rank"]) == np.minimum(rows, need).sum(), (idx, rows)
        checked += 1
    assert checked == int(done.sum()) > 0
    assert {str(v) for v in ds["verdict"].values[done.values]} <= {"zero", "one"}
    # spreading over rows beats concentrating at the same budget (9 synapses of A->O, m 3: rows 3,3,3 vs 4,4,1)
    point = {"budget": 9, "A_to_O": 1.0, "B_to_O": 0.0, "m": 3}
    assert float(ds["mp"].sel(strategy="spread-rows", **point)) == 1.0
    assert float(ds["mp"].sel(strategy="concentrated-rows", **point)) == 0.0


def test_point_values_depend_only_on_seed_and_coordinates(small):
    # a sub-grid (one budget, one strategy, one m, other fraction points) computes the same values where it overlaps
    # (paired draws: trial i's draws depend on the seed, m and i alone, so the grid around a point cannot matter)
    sub = ns.sweep(two_inputs(), budget=[12], fractions=[{"A->O": 0.5, "B->O": 0.5}, {"A->O": 1.0, "B->O": 0.0}],
                   strategy="concentrated-rows", m=[3], trials=SMALL["trials"], seed=SMALL["seed"])
    for point in ({"A->O": 0.5, "B->O": 0.5}, {"A->O": 1.0, "B->O": 0.0}):
        where = dict(budget=12, strategy="concentrated-rows", m=3, A_to_O=point["A->O"], B_to_O=point["B->O"])
        a, b = small.sel(where), sub.sel(where)
        for name in ("residual", "matched", "mp", "mask_A_to_O", "mask_B_to_O"):
            np.testing.assert_array_equal(a[name].values, b[name].values, err_msg=name)
    other = ns.sweep(two_inputs(), budget=[12], fractions=[{"A->O": 0.5, "B->O": 0.5}],
                     strategy="concentrated-rows", m=[3], trials=SMALL["trials"], seed=SMALL["seed"] + 1)
    assert not np.array_equal(other["residual"].values.ravel(),
                              small.sel(budget=12, strategy="concentrated-rows", m=3, A_to_O=0.5, B_to_O=0.5)
                              ["residual"].values)


@pytest.mark.slow
def test_workers_one_and_two_identical(small):
    with pytest.warns(UserWarning, match="infeasible"):
        two = ns.sweep(two_inputs(), **SMALL, workers=2)
    xr.testing.assert_identical(small, two)


# ------------------------------------------------------------------------------------------------- the store
@pytest.mark.slow
def test_store_matches_memory_and_exports_to_netcdf(small, tmp_path):
    store = tmp_path / "s.zarr"
    with pytest.warns(UserWarning, match="infeasible"):
        stored = ns.sweep(two_inputs(), **SMALL, store=store)
    xr.testing.assert_identical(small, stored)
    with xr.open_zarr(store) as plain:  # plain xarray reads it: plain coordinates on `point` (+ point checksums)
        plain = plain.load().drop_vars("point_checksum")
        assert "point" not in plain.coords and "A_to_O" in plain.coords
        xr.testing.assert_identical(plain, flat_points(stored))
    (tmp_path / "out").mkdir()
    nc = export(store, tmp_path / "out" / "s.nc")
    with xr.open_dataset(nc, engine="h5netcdf") as back:
        xr.testing.assert_identical(back.load(), flat_points(stored))
    xr.testing.assert_identical(open_sweep(nc), stored)  # the library reader indexes `point` again


@pytest.mark.slow
def test_rerun_computes_nothing_and_other_config_is_refused(tmp_path):
    store = tmp_path / "s.zarr"
    kw = dict(budget=[6], fractions=ns.simplex_grid(["A->O", "B->O"], step=0.5), strategy="spread-rows", m=[2, 3],
              trials=4)
    first = ns.sweep(two_inputs(), **kw, store=store)
    chunks = sorted((store / "residual").iterdir())
    stamps = {p.name: p.stat().st_mtime_ns for p in chunks}
    again = ns.sweep(two_inputs(), **kw, store=store)
    xr.testing.assert_identical(first, again)
    assert {p.name: p.stat().st_mtime_ns for p in (store / "residual").iterdir()} == stamps  # nothing rewritten
    # fewer trials: refused (more extend the store: tests/test_sweeps_safety.py, issue 29)
    with pytest.raises(ns.SweepStoreError, match=r"differs in \['trials'\].*stored 4, requested 3"):
        ns.sweep(two_inputs(), **{**kw, "trials": 3}, store=store)
    with pytest.raises(ns.SweepStoreError, match=r"differs in \['m'\]"):  # drops m = 3: not an extension
        ns.sweep(two_inputs(), **{**kw, "m": [2, 4]}, store=store)
    with pytest.raises(ns.SweepStoreError, match="circuit specs differ"):
        ns.sweep(ns.feedforward([7, 3]), budget=[6], m=[2, 3], trials=4, store=store)
    xr.testing.assert_identical(open_sweep(store), first)  # refused runs left the store alone


def test_a_store_made_before_patience_is_refused_with_the_way_back(tmp_path):
    # patience=0 is the fixed policy every store before it used (no patience in its config): the default
    # (patience 2, which can act at max_rounds 8) is another computation, refused with the setting that continues it
    store = tmp_path / "s.zarr"
    kw = dict(budget=[6], strategy="spread-rows", m=[2], trials=2)
    first = ns.sweep(two_inputs(), **kw, store=store, solver=ns.Auto(patience=0))
    assert "patience" not in json.loads(first.attrs["sweep_config"])
    with pytest.raises(ns.SweepStoreError, match=r"differs in \['patience'\].*patience=0 \(--patience 0\)"):
        ns.sweep(two_inputs(), **kw, store=store)
    xr.testing.assert_identical(ns.sweep(two_inputs(), **kw, store=store, solver=ns.Auto(patience=0)), first)


@pytest.mark.slow
def test_second_writer_is_refused(tmp_path):
    store = tmp_path / "s.zarr"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import fcntl, os, sys, time
        fd = os.open({str(store) + '.lock'!r}, os.O_RDWR | os.O_CREAT)
        fcntl.flock(fd, fcntl.LOCK_EX)
        print("locked", flush=True)
        time.sleep(60)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(ns.SweepStoreError, match="Another process is writing"):
            ns.sweep(two_inputs(), budget=[6], m=[2], trials=2, store=store)
        assert not store.exists()
    finally:
        holder.kill()
        holder.wait()
    ns.sweep(two_inputs(), budget=[6], m=[2], trials=2, store=store)  # the kernel released the dead holder's lock


def _done_count(store: Path) -> int:
    try:
        with xr.open_zarr(store) as ds:
            return int((ds["status"] == DONE).sum())
    except Exception:  # not created yet, or a chunk being written
        return 0


@pytest.mark.slow
def test_killed_sweep_resumes_to_the_uninterrupted_result(tmp_path):
    store = tmp_path / "killed.zarr"
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(store)])
    try:
        deadline = time.monotonic() + 120
        while _done_count(store) < 3 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)  # a guard against a hung subprocess, not a speed check
        assert proc.poll() is None, "the sweep ended before it could be killed"
        assert _done_count(store) >= 3, "the sweep made no progress"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    partial = open_sweep(store)
    done_before = partial["status"].values == DONE
    total = int((partial["status"] > OFF_GRID).sum())
    assert 3 <= done_before.sum() < total, (int(done_before.sum()), total)
    stamps = {p.name: p.stat().st_mtime_ns for p in (store / "status").iterdir()}

    resumed = ns.sweep(ns.feedforward([6, 4, 3]), **KILL_KW, store=store, workers=2)
    fresh = ns.sweep(ns.feedforward([6, 4, 3]), **KILL_KW)
    xr.testing.assert_identical(resumed, fresh)
    assert (resumed["status"].values[resumed["status"].values > OFF_GRID] == DONE).all()
    # points finished before the kill were not recomputed: their status chunks are untouched
    names = [".".join(map(str, idx)) for idx in zip(*np.nonzero(done_before))]
    assert all((store / "status" / n).stat().st_mtime_ns == stamps[n] for n in names)


# ------------------------------------------------------------------------------------------------- dask
@pytest.mark.requires_dask
@pytest.mark.slow
def test_dask_local_cluster_identical_to_local(small):
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        with pytest.warns(UserWarning, match="infeasible"):
            via_client = ns.sweep(two_inputs(), **SMALL, scheduler=client)
        with pytest.warns(UserWarning, match="infeasible"):
            via_address = ns.sweep(two_inputs(), **SMALL, scheduler=cluster.scheduler_address)
    xr.testing.assert_identical(small, via_client)
    xr.testing.assert_identical(small, via_address)


# ------------------------------------------------------------------------------------------------- CLI
@pytest.mark.slow
def test_cli_sweep_plot_export(tmp_path, capsys):
    spec = tmp_path / "two.toml"
    spec.write_text(two_inputs().to_toml())
    store = tmp_path / "cli.zarr"
    args = ["sweep", str(spec), "--budget", "9", "--fractions", "A->O,B->O", "--step", "0.5", "--strategy",
            "spread-rows,concentrated-rows", "--m", "2,3", "--trials", "6", "--seed", "3", "--out", str(store),
            "--quiet"]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert "12 points done" in out, out
    ds = open_sweep(store)
    expected = ns.sweep(two_inputs(), **{**SMALL, "budget": [9]})
    for name in ("mp", "residual", "status"):
        xr.testing.assert_identical(ds[name], expected[name])
    assert cli.main(["export", str(store), str(tmp_path / "cli.nc")]) == 0
    (tmp_path / "figs").mkdir()  # outputs never create folders
    assert cli.main(["plot", str(store), "--out", str(tmp_path / "figs" / "cli")]) == 0
    for name in ("curves", "heatmap", "masks"):
        assert (tmp_path / "figs" / f"cli_{name}.png").stat().st_size > 1000
    # errors are one line and exit status 2
    assert cli.main(args[:5] + ["A->O=0.5,B->O=0.5"] + args[6:]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--fractions takes the keys" in err, err
    bad = ["sweep", str(spec), "--budget", "9", "--fractions", "A->O,C->O", "--m", "2", "--out",
           str(tmp_path / "x.zarr"), "--quiet"]
    assert cli.main(bad) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'C->O'" in err, err
    assert cli.main(args[:-1] + ["--trials", "5", "--quiet"]) == 2  # fewer trials (more would extend the store)
    assert "another configuration" in capsys.readouterr().err


def test_sweep_keeps_dale_law_and_hashes_the_flags_only_where_they_act():
    # read-out-only plastic synapses of circuits/ei_isn.toml: affine, so decisions are exact. Sign bounds can only
    # remove solutions, so every trial matched under Dale's law is matched without it, on the same draws.
    ei = ns.Circuit.from_toml(Path(__file__).resolve().parents[1] / "circuits" / "ei_isn.toml")
    kw = dict(budget=[12], strategy=["spread-rows"], m=[3], trials=24, seed=2, within=["E->OUT"], certificate=False)
    kept = ns.sweep(ei, **kw, dale=True, stable=False)
    free = ns.sweep(ei, **kw, dale=False, stable=False)
    matched_kept, matched_free = kept["matched"].values.ravel(), free["matched"].values.ravel()
    assert (matched_free | ~matched_kept).all()
    assert matched_free.sum() > matched_kept.sum(), (matched_free.sum(), matched_kept.sum())  # Dale's law binds
    assert (kept.attrs["dale"], free.attrs["dale"]) == (1, 0)
    assert json.loads(kept.attrs["sweep_config"])["dale"] is True and "dale" not in json.loads(
        free.attrs["sweep_config"])
    # on an unsigned feed-forward circuit neither flag can act: same hash, same values
    ff = ns.feedforward([5, 3])
    a = ns.sweep(ff, budget=[6], m=[2], trials=6, seed=0)
    b = ns.sweep(ff, budget=[6], m=[2], trials=6, seed=0, dale=False, stable=False)
    xr.testing.assert_identical(a, b)


def test_progress_per_trial_inside_points_only_on_a_terminal(capsys, monkeypatch):
    ff = ns.feedforward([4, 3, 2])
    kw = dict(budget=[10], m=[2], trials=3, seed=0, progress=True, certificate=False,
              solver=ns.Auto(restarts=2, max_rounds=2, iterations=30))
    ns.sweep(ff, **kw)
    err = capsys.readouterr().err
    assert "sweep points" in err and "trials:" not in err  # not a terminal: the per-point bar only
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    ns.sweep(ff, **kw)
    err = capsys.readouterr().err
    frames = [f for f in err.replace("\r", "\n").splitlines() if f.startswith("trials:")]
    assert frames and "3/3" in frames[-1] and "sweep points" in err
    assert err.count("estimated cost:") == 1  # the sweep's estimate, none per point


@pytest.mark.slow
def test_a_sweep_records_its_weights_layout_and_resumes_only_in_it(tmp_path):
    from conftest import sparse_ei

    # a small steady E/I circuit (both layouts run it), an affine read-out allocation: exact least squares
    c = sparse_ei(20, 5, n_x=6, n_out=2, p_in=0.5, p_rec=0.2, p_out=0.5, p_ii=0.3, seed=0)
    kw = dict(budget=[4], strategy="spread-rows", within=["E->OUT"], m=[2], trials=2)
    opts = {lay: ns.FitOptions(dale=False, stable=False, certificate=False, weights_layout=lay)
            for lay in ("auto", "sparse")}
    dense = ns.sweep(c, **kw, store=tmp_path / "d.zarr", options=opts["auto"])
    sparse_store = tmp_path / "s.zarr"
    sparse = ns.sweep(c, **kw, store=sparse_store, options=opts["sparse"])
    assert dense.attrs["weights_layout"] == "dense" and sparse.attrs["weights_layout"] == "sparse"
    # dense ("auto" at this size): the configuration of every store made before the field, so they resume
    assert "weights_layout" not in json.loads(dense.attrs["sweep_config"])
    assert json.loads(sparse.attrs["sweep_config"])["weights_layout"] == "sparse"
    np.testing.assert_array_equal(dense["matched"].values, sparse["matched"].values)  # the same exact decisions
    with pytest.raises(ns.SweepStoreError, match=r"differs in \['weights_layout'\]"):
        ns.sweep(c, **kw, store=sparse_store, options=opts["auto"])
    xr.testing.assert_identical(ns.sweep(c, **kw, store=sparse_store, options=opts["sparse"]), sparse)
    named = ns.sweep_allocations(c, {"readout": ns.allocate(c, 4, within=["E->OUT"], seed=0)}, m=[2], trials=2,
                                 options=opts["sparse"])
    assert named.attrs["weights_layout"] == "sparse"
