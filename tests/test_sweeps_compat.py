"""Stores and files written before the sweeps package (``tests/data``, see its README) open, plot, export and resume.

Independent reference: the values the pre-refactor code stored (commit 661adff). Resuming an old store with the
same settings must accept its config hash (so the hashed configuration is byte-identical), recompute only the
points marked pending, and reproduce the old stored values bit for bit. The fixtures are copied to ``tmp_path``
before anything touches them.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import neurosubset as ns
from neurosubset._schema import DONE, PENDING
from neurosubset.plot import is_sweep, save_figures
from neurosubset.sweeps import as_points, export, open_sweep

DATA = Path(__file__).parent / "data"
ROOT = Path(__file__).resolve().parent.parent
OLD_STORE = DATA / "sweep_ca3_ca1.zarr"
OLD_MP = DATA / "mp_lffn.nc"
# the settings of the README's `neurosubset sweep` command that made OLD_STORE
OLD_SETTINGS = dict(budget=[24], fractions=ns.simplex_grid(["CA3->CA3", "CA3->CA1"], step=0.5),
                    strategy=["spread-rows", "concentrated-rows"], m=[2, 4], trials=8, seed=5,
                    solver=ns.Auto(max_rounds=2, iterations=60), dale=False, stable=False)
# the old code had no constraints: its stores hold unconstrained points (dale/stable off)


def ca3_ca1() -> ns.Circuit:
    return ns.Circuit.from_toml(ROOT / "circuits" / "ca3_ca1.toml")


@pytest.fixture
def old_store(tmp_path) -> Path:
    """A copy of the old store (the fixture itself is never written)."""
    return Path(shutil.copytree(OLD_STORE, tmp_path / "old.zarr"))


def _reset_to_pending(store: Path, indices: list[tuple[int, ...]]) -> None:
    import zarr

    status = zarr.open_array(str(store / "status"), mode="r+")
    for index in indices:
        status[index] = PENDING


@pytest.mark.slow
def test_old_store_opens_plots_and_exports(old_store, tmp_path):
    ds = open_sweep(old_store)
    assert is_sweep(ds)
    assert int((ds["status"] == DONE).sum()) == 12, ds["status"].values
    paths = save_figures(ds, tmp_path / "figs" / "old")
    assert sorted(p.name for p in paths) == ["old_curves.png", "old_heatmap.png", "old_masks.png"]
    assert all(p.stat().st_size > 1000 for p in paths), [p.stat().st_size for p in paths]
    nc = export(old_store, tmp_path / "old.nc")
    xr.testing.assert_identical(open_sweep(nc), ds)


@pytest.mark.slow
def test_old_store_resumes_with_its_hash_and_reproduces_its_values(old_store):
    original = open_sweep(old_store)
    done = np.argwhere(original["status"].values == DONE)
    solver = original["solver"].values
    # one point of each solver path: exact least squares and Levenberg-Marquardt
    redo = [tuple(next(i for i in done if solver[tuple(i)] == name)) for name in ("lstsq", "lm")]
    _reset_to_pending(old_store, redo)
    stamps = {p.name: p.stat().st_mtime_ns for p in (old_store / "residual").iterdir()}
    resumed = ns.sweep(ca3_ca1(), **OLD_SETTINGS, store=old_store)
    # the whole store, recomputed points included, equals what the old code wrote (values, dtypes, attrs)
    xr.testing.assert_identical(resumed, original)
    assert resumed.attrs["config_hash"] == original.attrs["config_hash"]
    changed = {p.name for p in (old_store / "residual").iterdir() if p.stat().st_mtime_ns != stamps.get(p.name)}
    # only the reset points were computed (a residual chunk is one point's trials: chunk name <index>.0)
    assert changed == {".".join(map(str, (*index, 0))) for index in redo}, changed


@pytest.mark.slow
def test_new_sweep_computes_the_old_values_everywhere():
    # a new sweep (store format 2: points along one dim) with paired=False draws what the old code drew: at every
    # simplex point the values equal the old dense store's cell, selected by the key levels in the old layout
    original = open_sweep(OLD_STORE)
    fresh = ns.sweep(ca3_ca1(), **OLD_SETTINGS, paired=False)
    old_cfg, new_cfg = json.loads(original.attrs["sweep_config"]), json.loads(fresh.attrs["sweep_config"])
    assert (old_cfg["store_format"], new_cfg["store_format"], new_cfg["paired"]) == (1, 2, False)
    assert {k: v for k, v in new_cfg.items() if k not in ("store_format", "paired")} == \
        {k: v for k, v in old_cfg.items() if k != "store_format"}
    points = json.loads(original.attrs["fraction_points"])
    assert fresh.sizes["point"] == len(points) == 3
    for point in points:
        old_cell = original.sel({"CA3->CA3": point[0], "CA3->CA1": point[1]})
        new_cell = fresh.sel(CA3_to_CA3=point[0], CA3_to_CA1=point[1])
        for name, var in old_cell.data_vars.items():
            assert new_cell[name].dtype == var.dtype, (name, new_cell[name].dtype, var.dtype)
            np.testing.assert_array_equal(new_cell[name].values, var.values, err_msg=f"{name} at {point}")
    # variables added since: fit_status; the fitted student's stability (steady circuits, issue 14); decision;
    # the per-trial outcome and the MP bracket (issue 24); the per-point decision_kind (issue 27)
    assert set(fresh.data_vars) - set(original.data_vars) == {"fit_status", "stable", "max_real_eig", "decision",
                                                             "outcome", "mp_lower", "mp_upper", "decision_kind"}


def test_old_store_converts_to_the_point_layout(old_store):
    # as_points of the dense store: the on-grid cells along `point`, NaN only where a point is not done
    ds = open_sweep(old_store)
    tidy = as_points(ds)
    assert tidy["mp"].dims == ("budget", "point", "strategy", "m")
    assert list(tidy.indexes["point"].names) == ["CA3_to_CA3", "CA3_to_CA1"]
    assert tidy["CA3_to_CA3"].attrs["fraction_key"] == "CA3->CA3"
    assert not np.isnan(tidy["mp"].values).any() and (tidy["status"] == DONE).all()
    for p in json.loads(ds.attrs["fraction_points"]):
        np.testing.assert_array_equal(tidy["residual"].sel(CA3_to_CA3=p[0], CA3_to_CA1=p[1]).values,
                                      ds["residual"].sel({"CA3->CA3": p[0], "CA3->CA1": p[1]}).values)
    frame = tidy[["mp", "matched", "residual"]].to_dataframe()
    assert len(frame) == 1 * 3 * 2 * 2 * 8 and not frame["mp"].isna().any()
    # paired draws cannot be mixed into an unpaired store: refused, naming the field
    with pytest.raises(ns.SweepStoreError, match="'paired'"):
        ns.sweep(ca3_ca1(), **OLD_SETTINGS, paired=True, store=old_store)


@pytest.mark.slow
def test_old_mp_file_opens_and_plots(tmp_path):
    ds = open_sweep(shutil.copy(OLD_MP, tmp_path / "mp.nc"))
    assert not is_sweep(ds) and float(ds["mp"]) == 1.0
    paths = save_figures(ds, tmp_path / "mp.png")
    assert [p.name for p in paths] == ["mp.png"] and paths[0].stat().st_size > 1000


def test_old_store_resumed_with_the_new_constraint_defaults_is_refused_naming_the_field(tmp_path):
    # ca3_ca1 is steady, so stable=True (the default) changes its points: mixing them into the old store is refused
    old_store = tmp_path / "old.zarr"
    shutil.copytree(OLD_STORE, old_store)
    settings = {k: v for k, v in OLD_SETTINGS.items() if k != "stable"}
    with pytest.raises(ns.SweepStoreError, match="stable"):
        ns.sweep(ca3_ca1(), **settings, store=old_store)
