"""CF conventions of every file the toolkit writes, checked by the two public checkers, and the one-liners of the
ecosystem (``to_dataframe``) on each result.

The checkers run in this process on real files, each written through the one write path (``neurosubset.write``,
the CLI's ``--out``, ``export``; the returned Datasets carry no netCDF encoding): an ``mp`` CLI result (with and
without weights), a fit Dataset, a sweep ``export``, a ``localize`` and a ``fit_responses`` result, ``simulate``
results, the responses and weights files, a ``spiking_check`` and a ``spikecheck`` CLI result (brian2, short).
cfchecker
cannot download its tables here, so it reads the standard-name table that compliance-checker ships and two
one-entry area-type / region tables written below (our files use neither). Its dependency cfunits needs the
UDUNITS-2 C library: without a system one, the copy bundled in the cf_units wheel is used (see :func:`_cfchecks`).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import importlib.util
import json
import os
from pathlib import Path

import h5netcdf
import numpy as np
import pytest
import torch
import xarray as xr

import neurosubset as ns
from neurosubset import cli
from neurosubset._outputs import write_dataset
from neurosubset._schema import CONVENTIONS, DECISION_KINDS, DONE
from neurosubset.results import decision_kind, stored_masks
from neurosubset.sweeps import export

ROOT = Path(__file__).resolve().parents[1]
_TABLE = ('<?xml version="1.0"?>\n<{root}><version_number>1</version_number><date>2024-01-01</date>'
          '<entry id="global"/></{root}>\n')


def _site(package: str) -> Path:
    return Path(importlib.util.find_spec(package).origin).parent


@pytest.fixture(scope="module")
def cfchecks(tmp_path_factory):
    """A function path -> (errors, messages) running cfchecker 4 on one file (CF version from its Conventions)."""
    folder = tmp_path_factory.mktemp("cf_tables")
    for name, root in (("area.xml", "area_type_table"), ("region.xml", "standardized_region_list")):
        (folder / name).write_text(_TABLE.format(root=root))
    standard = _site("compliance_checker") / "data" / "cf-standard-name-table.xml"
    checker_class = _cfchecks()

    def run(path: Path) -> tuple[int, list[str]]:
        inst = checker_class(cfStandardNamesXML=str(standard), cfAreaTypesXML=str(folder / "area.xml"),
                             cfRegionNamesXML=str(folder / "region.xml"), silent=True)
        inst.checker(str(path))
        totals = inst.get_total_counts()
        return totals["FATAL"] + totals["ERROR"], [m for m in inst.all_messages if m.startswith(("ERROR:", "FATAL:"))]
    return run


def _cfchecks():
    """cfchecker's CFChecker class. cfunits (imported by it) opens ``ctypes.util.find_library("udunits2")``; where
    the system has none, the library bundled in the cf_units wheel (``cf_units.libs/libudunits2-*.so*``) is
    loaded and named to it for the duration of the import, with its XML unit database (UDUNITS2_XML_PATH)."""
    if ctypes.util.find_library("udunits2") is None:
        bundled = sorted((_site("cf_units").parent / "cf_units.libs").glob("libudunits2*.so*"))
        assert bundled, "no udunits2: neither a system library nor the one bundled with cf_units"
        os.environ.setdefault("UDUNITS2_XML_PATH", str(_site("cf_units") / "etc" / "share" / "udunits2.xml"))
        ctypes.CDLL(str(bundled[0]), mode=ctypes.RTLD_GLOBAL)
        find = ctypes.util.find_library
        ctypes.util.find_library = lambda name: str(bundled[0]) if name == "udunits2" else find(name)
        try:
            from cfchecker.cfchecks import CFChecker
        finally:
            ctypes.util.find_library = find
    else:  # pragma: no cover - a machine with UDUNITS-2 installed
        from cfchecker.cfchecks import CFChecker
    return CFChecker


def _compliance(path: Path, tmp_path: Path) -> tuple[int, list[str]]:
    """IOOS compliance-checker ``--test=cf`` (its newest CF suite): the high-priority failures ("Errors")."""
    from compliance_checker.runner import CheckSuite, ComplianceChecker

    CheckSuite.load_all_available_checkers()
    report = tmp_path / f"{path.stem}.cc.json"
    ComplianceChecker.run_checker(str(path), ["cf"], 0, "normal", output_filename=str(report),
                                  output_format="json")
    result = json.loads(report.read_text())["cf"]
    failed = [f"{r['name']}: {m}" for r in result["high_priorities"] if r["value"][0] < r["value"][1]
              for m in r["msgs"] or ["(no message)"]]
    return len(failed), failed


# A simulate result over time has a dim "time" holding the time since the probe's onset (s; steps in discrete
# dynamics): no reference date, so not a CF time coordinate (CF 4.4). The compliance-checker asks every dim named
# "time" for standard_name "time" (its 5.1 check); with it, cfchecker asks for a reference date ("s since ...",
# which xarray would decode as dates). The two checkers cannot both accept the name: this one message is allowed.
_RELATIVE_TIME = "§5.1 Independent Latitude, Longitude, Vertical, and Time Axes: Coordinate variable 'time' should "


def _both(path: Path, tmp_path: Path, cfchecks, allowed: tuple[str, ...] = ()) -> None:
    errors, messages = cfchecks(path)
    assert errors == 0, f"cfchecks: {errors} errors in {path.name}: {messages}"
    errors, messages = _compliance(path, tmp_path)
    messages = [m for m in messages if not m.startswith(allowed)] if allowed else messages
    assert not messages, f"compliance-checker: {errors} errors in {path.name}: {messages}"
    with h5netcdf.File(path, "r") as raw:  # CF-1.8 types: no netCDF-4 strings, no 64-bit integers
        kinds = {name: (v.dtype.kind, v.dtype.itemsize) for name, v in raw.variables.items()}
    assert not [n for n, (kind, size) in kinds.items() if kind == "O" or (kind in "iu" and size == 8)], kinds
    with xr.open_dataset(path, engine="h5netcdf") as ds:
        assert ds.attrs["Conventions"] == CONVENTIONS
        for name, var in ds.variables.items():  # CF 2.3 names; a long_name on every variable and coordinate
            assert str(name)[0].isalpha() and str(name).replace("_", "").isalnum(), name
            assert var.attrs.get("long_name"), f"{path.name}: {name} has no long_name"


@pytest.mark.slow
def test_mp_files_pass_both_checkers_and_keep_their_allocation(tmp_path, cfchecks):
    ca = ns.Circuit.from_toml(ROOT / "circuits" / "ca3_ca1.toml")
    out = tmp_path / "mp_ca3.nc"  # steady: stability variables, rejected draws, decision flags (exact read-out)
    assert cli.main(["mp", str(ROOT / "circuits" / "ca3_ca1.toml"), "--budget", "40", "--strategy", "spread-rows",
                     "--within", "CA1->OUT", "--m", "2", "--trials", "3", "--quiet", "--out", str(out)]) == 0
    _both(out, tmp_path, cfchecks)
    with xr.open_dataset(out, engine="h5netcdf") as ds:
        masks = stored_masks(ds.load())
        # the same allocation drawn again (allocate is deterministic in its seed): the stored masks are it
        alloc = ns.allocate(ca, 40, strategy="spread-rows", within=["CA1->OUT"], seed=0)
        for name in ca.weight_names:
            np.testing.assert_array_equal(masks[name], alloc.masks[name], err_msg=name)
        counts = json.loads(ds.attrs["allocation_counts"])
        assert {k: int(v.sum()) for k, v in masks.items()} == counts
        assert ds.plastic_rank.dtype == np.float64 and ds.attrs["decision_kind"] in DECISION_KINDS
        assert "mp_estimate" not in ds.attrs


def _plain(ds: xr.Dataset) -> xr.Dataset:
    """``ds`` after checking that it carries no netCDF encoding (the write path alone encodes)."""
    encoded = {str(name): var.encoding for name, var in ds.variables.items() if var.encoding}
    assert not encoded, f"a returned Dataset carries netCDF encoding (only the write path may): {encoded}"
    return ds


@pytest.mark.slow
def test_a_fit_dataset_with_weights_written_by_ns_write_passes_both_checkers(tmp_path, cfchecks):
    rnn = ns.linear_rnn(5, 2, 1, steps=3)
    ds = _plain(ns.match_probability(rnn, ns.allocate(rnn, 6, within=["W"], seed=0), m=3, trials=4,
                                     return_weights=True))
    path = ns.write(ds, tmp_path / "fit.nc")
    _both(path, tmp_path, cfchecks)
    with xr.open_dataset(path, engine="h5netcdf") as back:
        xr.testing.assert_identical(back.load(), ds)
    # theta lists the plastic synapses in the order of the synapse dim: the fitted student holds them there
    plastic = ds.mask_synapse.values
    student = ns.student_weights(ds)
    where = zip(ds.synapse_weight.values[plastic], ds.synapse_post.values[plastic], ds.synapse_pre.values[plastic])
    for k, (name, post, pre) in enumerate(where):
        np.testing.assert_array_equal(student[str(name)][:, post, pre], ds.theta.values[:, k])


@pytest.mark.slow
def test_sweep_export_passes_both_checkers(tmp_path, cfchecks):
    ff = ns.feedforward([4, 3, 2])
    store = tmp_path / "s.zarr"
    ns.sweep(ff, budget=[6], fractions=ns.simplex_grid(["W1", "W2"], step=0.5), strategy=["spread-rows"],
             m=[2], trials=3, seed=1, store=store, certificate=False)
    nc = export(store, tmp_path / "s.nc")
    _both(nc, tmp_path, cfchecks)
    with xr.open_dataset(nc, engine="h5netcdf") as ds:
        df = ds[["mp", "mp_low", "mp_high"]].to_dataframe()  # main variables as a table: NaN only where not done
        assert len(df.dropna()) == int((ds.status == DONE).sum()) > 0, df
        for name in ds.coords:
            assert "_FillValue" not in ds[name].encoding, name
        assert ds.status.attrs["flag_values"].dtype == np.int8


def test_localize_result_passes_both_checkers(tmp_path, cfchecks):
    ff = ns.feedforward([4, 3, 2])
    rng = np.random.default_rng(0)
    before, probes = ff.sample_weights(rng), ff.sample_probes(8, rng)
    after = {**before, "W2": before["W2"] + 0.3}  # learning changed W2 only
    y = ns.dynamics.forward(ff, {k: torch.as_tensor(v) for k, v in after.items()}, torch.as_tensor(probes)).numpy()
    ds = _plain(ns.localize(ff, before, probes, {ff.output_regions[0]: y}, ns.projection_candidates(ff)))
    path = write_dataset(ds, tmp_path / "localize.nc")
    _both(path, tmp_path, cfchecks)


def _recording(circuit: ns.Circuit) -> tuple[dict, np.ndarray, dict]:
    """Weights before learning, 8 probes and the rates of every hidden and output region after (W2 changed)."""
    rng = np.random.default_rng(3)
    before, probes = circuit.sample_weights(rng), circuit.sample_probes(8, rng)
    after = {**before, "W2": before["W2"] + 0.3}
    sim = ns.simulate(circuit, after, probes)
    return before, probes, {r: sim[f"rate_{r}"].values for r in ("L1", "L2")}


def test_fit_responses_result_passes_both_checkers(tmp_path, cfchecks):
    ff = ns.feedforward([4, 3, 2])
    before, probes, rec = _recording(ff)
    ds = _plain(ns.fit_responses(ff, ns.allocate(ff, 6, within=["W2"], seed=0), probes, rec, before,
                                 noise={"L1": 0.01, "L2": 0.01}))
    path = ns.write(ds, tmp_path / "fit_responses.nc")
    _both(path, tmp_path, cfchecks)
    with xr.open_dataset(path, engine="h5netcdf") as back:
        xr.testing.assert_identical(back.load(), ds)


def test_responses_and_weights_files_pass_both_checkers(tmp_path, cfchecks):
    from neurosubset.responses.files import responses_dataset, weights_dataset

    ff = ns.feedforward([4, 3, 2])
    before, probes, rec = _recording(ff)
    for name, ds in (("R", responses_dataset(ff, probes, rec, noise={"L1": 0.1, "L2": 0.1})),
                     ("W", weights_dataset(ff, before))):
        path = ns.write(_plain(ds), tmp_path / f"{name}.nc")
        _both(path, tmp_path, cfchecks)
        with xr.open_dataset(path, engine="h5netcdf") as back:
            xr.testing.assert_identical(back.load(), ds)


_CONTINUOUS = ('name = "tiny_continuous"\ndynamics = "continuous"\nnonlinearity = "tanh"\nsteps = 2\nseed = 1\n'
               "tau = 0.02\nduration = 0.06\ndt = 0.01\nreadout = [0.03, 0.06]\n"
               '[regions.X]\nsize = 3\nrole = "input"\n[regions.A]\nsize = 4\nrole = "hidden"\n'
               '[regions.OUT]\nsize = 2\nrole = "output"\n'
               '[[projections]]\npre = "X"\npost = "A"\n[[projections]]\npre = "A"\npost = "A"\ngain = 0.5\n'
               '[[projections]]\npre = "A"\npost = "OUT"\n')


@pytest.mark.parametrize("circuit,times", [(lambda: ns.Circuit.from_toml(ROOT / "circuits" / "ei_isn.toml"), None),
                                           (lambda: ns.Circuit.from_toml_text(_CONTINUOUS), "all"),
                                           (lambda: ns.linear_rnn(4, 2, 1, steps=3), "all")],
                         ids=["steady", "continuous", "discrete"])
def test_simulate_result_passes_both_checkers(circuit, times, tmp_path, cfchecks):
    c = circuit()
    rng = np.random.default_rng(0)
    ds = _plain(ns.simulate(c, c.sample_weights(rng), c.sample_probes(2, rng), times=times, hidden=True))
    path = ns.write(ds, tmp_path / "simulate.nc")
    _both(path, tmp_path, cfchecks, allowed=(_RELATIVE_TIME,) if "time" in ds.dims else ())
    with xr.open_dataset(path, engine="h5netcdf") as back:
        xr.testing.assert_identical(back.load(), ds)


@pytest.mark.requires_brian2
@pytest.mark.slow
def test_spiking_check_written_by_ns_write_passes_both_checkers(tmp_path, cfchecks):
    ff = ns.feedforward([3, 4, 2])
    rng = np.random.default_rng(0)
    ds = _plain(ns.spiking_check(ff, ff.sample_weights(rng), ff.sample_probes(2, rng), seed=1, duration=0.2,
                                 repeats=2, target="numpy"))
    path = ns.write(ds, tmp_path / "spiking_check.nc")
    _both(path, tmp_path, cfchecks)
    with xr.open_dataset(path, engine="h5netcdf") as back:
        xr.testing.assert_identical(back.load(), ds)


@pytest.mark.requires_brian2
@pytest.mark.slow
def test_spikecheck_file_passes_both_checkers_and_carries_its_units(tmp_path, cfchecks):
    out = tmp_path / "spikes.nc"
    assert cli.main(["spikecheck", "lffn:4-6-3", "--budget", "10", "--m", "2", "--duration", "0.2", "--repeats", "2",
                     "--target", "numpy", "--out", str(out)]) == 0
    _both(out, tmp_path, cfchecks)
    with xr.open_dataset(out, engine="h5netcdf") as ds:
        for name in ("tau", "dt", "duration", "warmup"):
            assert ds[name].attrs["units"] == "s" and ds[name].ndim == 0, name
        assert ds.baseline_rate.dims == ("cell",) and ds.baseline_rate.attrs["units"] == "Hz"
        assert not any(isinstance(v, np.ndarray) and v.size > 1 for v in ds.attrs.values())
        # the input rates are nu_0 + rate_unit * probe (SpikingSettings): the scalars say what the array holds
        assert float(ds.tau) in [ns.spiking.DEFAULT_TAU * k for k in ns.spiking.TAU_STEPS]  # automatic (issue 27)
        # main variables as a table: one row per (student, probe, neuron)
        df = ds[["rate_spiking_student", "z", "agree"]].to_dataframe()
        assert len(df) == ds.sizes["student"] * ds.sizes["probe"] * ds.sizes["neuron"] == 2 * 2 * 3


def test_flag_values_have_the_stored_type(tmp_path):
    # CF 3.5: flag_values of the variable's stored type. Booleans are stored as int8; 64-bit integers as int32;
    # flag_values read back from a Zarr store (JSON) are int64 whatever the variable
    ds = xr.Dataset({"ok": ("i", np.array([True, False]), ns._schema.meta("matched")),
                     "state": ("i", np.array([0, 2], np.int64), {"long_name": "state", "flag_values": [0, 1, 2],
                                                                 "flag_meanings": "a b c"})})
    write_dataset(ds, tmp_path / "flags.nc")
    ns._schema.with_cf_encoding(ds).to_netcdf(tmp_path / "plain.nc", engine="h5netcdf")
    for name in ("flags.nc", "plain.nc"):
        with h5netcdf.File(tmp_path / name, "r") as raw:
            for var in ("ok", "state"):
                stored, flags = raw[var].dtype, np.asarray(raw[var].attrs["flag_values"])
                assert stored in (np.int8, np.int32) and flags.dtype == stored, (name, var, stored, flags.dtype)
    with xr.open_dataset(tmp_path / "flags.nc", engine="h5netcdf") as back:  # values and bools survive
        assert back.ok.dtype == bool and list(back.state.values) == [0, 2]


def test_to_dataframe_of_an_mp_result_does_not_broadcast_over_weights():
    ca = ns.Circuit.from_toml(ROOT / "circuits" / "ca3_ca1.toml")
    ds = ns.match_probability(ca, ns.allocate(ca, 20, within=["CA1->OUT"], seed=0), m=2, trials=5)
    df = ds[["mp", "matched", "residual"]].to_dataframe()
    assert len(df) == 5 and list(df.columns[:3]) == ["mp", "matched", "residual"]
    assert (df.mp == ds.mp.item()).all() and df.matched.sum() == int(ds.matched.sum())
    # the whole result: trial x round x synapse rows; synapses = structural entries (structure of each weight)
    synapses = sum(int(np.count_nonzero(ca.structure[w])) for w in ca.weight_names)
    whole = ds.to_dataframe()
    assert len(whole) == 5 * ds.sizes["round"] * synapses, (len(whole), synapses)


def test_decision_kind_is_one_attr_and_old_results_still_say_theirs(tmp_path):
    ff = ns.feedforward([4, 3])
    ds = ns.match_probability(ff, ns.allocate(ff, 6, seed=0), m=2, trials=3)
    assert decision_kind(ds) == ds.attrs["decision_kind"] == "exact" and "mp_estimate" not in ds.attrs
    # a table of many results (as the analysis files are), written and read back: one decision_kind per point.
    # Plastic synapses only in the last layer leave the outputs affine in them (least squares decides exactly);
    # synapses in both layers make them bilinear, where no exact decider applies (the ReLU LPs need a ReLU, the
    # roots a single plastic synapse) and the Levenberg-Marquardt's count is a lower bound
    net = ns.feedforward([3, 4, 2])
    allocs = {"last layer": ns.allocate(net, 6, within=["W2"], seed=0), "both layers": ns.allocate(net, 8, seed=0)}
    assert allocs["last layer"].counts["W1"] == 0 and min(allocs["both layers"].counts.values()) > 0
    table = ns.sweep_allocations(net, allocs, m=[1, 2], trials=3, seed=0,
                                 solver=ns.Auto(restarts=1, max_rounds=1, iterations=30))
    ns.write(table, tmp_path / "table.nc")
    with xr.open_dataset(tmp_path / "table.nc", engine="h5netcdf") as back:
        kinds = decision_kind(back.load()).sel(allocation=["last layer", "both layers"])
    assert [[str(k) for k in row] for row in kinds.values] == [["exact"] * 2, ["lower bound"] * 2]
    assert set(np.unique(kinds.values)) <= set(DECISION_KINDS)
    # files written before the merge (issue 14's E/I table among them) carry an mp_estimate variable spelled
    # "exact" / "lower_bound", and "" where no point was computed
    old = xr.Dataset({"mp_estimate": (("allocation", "m"), np.array([["exact", "lower_bound"], ["", "exact"]]))},
                     coords={"allocation": ["a", "b"], "m": [1, 2]})
    ns.write(old, tmp_path / "pre_merge.nc")
    with xr.open_dataset(tmp_path / "pre_merge.nc", engine="h5netcdf") as back:
        read = decision_kind(back.load())
    assert [[str(k) for k in row] for row in read.values] == [["exact", "lower bound"], ["", "exact"]]
    assert decision_kind(xr.Dataset(attrs={"mp_estimate": "lower_bound"})) == "lower bound"
