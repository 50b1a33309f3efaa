"""Every writer's Dataset follows its declared layout (:mod:`neurosubset.schema`), and the validator catches what
breaks one.

Each writer runs on a tiny circuit (``ns.feedforward([3, 4, 2])``, ``circuits/lffn.toml``, a small signed steady
circuit, a small continuous one; a few trials), and :func:`neurosubset.validate_dataset` must pass on what it returns
(and on its file or store, read back); every variable and coordinate it writes must be declared. The negative tests
break a valid Dataset in one way (a variable dropped, a dim renamed, an attr removed) and check that the one
message names each problem. The files in ``tests/data/`` (written by earlier versions) conform with ``legacy=True``.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import neurosubset as ns
from neurosubset import _schema, schema
from neurosubset.cli import main
from neurosubset.responses.files import responses_dataset, weights_dataset
from neurosubset.sweeps import open_sweep
from neurosubset.theory import Certificate

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data"
# the kinds (certificate: attrs of an mp result) and the localize input files
KINDS = ("mp", "sweep", "certificate", "spiking_check", "spiking_compare", "localize", "fit_responses", "simulate",
         "responses", "weights")
SPIKING = {"duration": 0.5, "repeats": 2}  # layout only: the rates need not be accurate


def tiny() -> ns.Circuit:
    return ns.feedforward([3, 4, 2])


def lffn() -> ns.Circuit:
    return ns.Circuit.from_toml(ROOT / "circuits" / "lffn.toml")


def signed_steady() -> ns.Circuit:
    """A small steady circuit with an excitatory recurrent region: stability, rejection and sign variables."""
    return ns.Circuit((ns.Region("in", 3, "input"), ns.Region("E", 4, "hidden", sign=1),
                       ns.Region("out", 2, "output")),
                      (ns.Projection("in", "E"), ns.Projection("E", "E", p=0.5, gain=0.3), ns.Projection("E", "out")),
                      dynamics="steady", name="tiny_steady")


def continuous() -> ns.Circuit:
    return ns.Circuit.from_toml_text(
        'name = "tiny_continuous"\ndynamics = "continuous"\nnonlinearity = "linear"\nsteps = 2\nseed = 1\n'
        "tau = 0.02\nduration = 0.06\ndt = 0.01\nreadout = [0.03, 0.06]\n"
        '[regions.X]\nsize = 3\nrole = "input"\n[regions.A]\nsize = 4\nrole = "hidden"\n'
        '[regions.OUT]\nsize = 2\nrole = "output"\n'
        '[[projections]]\npre = "X"\npost = "A"\n[[projections]]\npre = "A"\npost = "A"\ngain = 0.5\n'
        '[[projections]]\npre = "A"\npost = "OUT"\n')


def assert_declared(ds: xr.Dataset, kind: str) -> None:
    """Every variable and coordinate of ``ds`` is declared in the layout (writers add nothing undeclared)."""
    layout = schema.LAYOUTS[kind]
    undeclared = []
    for name in ds.variables:
        try:
            layout.variable(str(name))
        except KeyError:
            if name not in ds.dims and name not in ds.indexes:  # plain dim indexes and a sweep's point index
                undeclared.append(str(name))
    assert not undeclared, f"{kind}: variables not in the layout: {undeclared}"


def check(ds: xr.Dataset, kind: str) -> None:
    assert ns.validate_dataset(ds) == kind  # inferred
    assert ns.validate_dataset(ds, kind) == kind
    assert_declared(ds, kind)


# ------------------------------------------------------------------------------------------------ declarations
def test_every_kind_is_declared_with_attrs_from_the_one_schema():
    assert set(KINDS) == set(schema.KINDS), schema.KINDS
    for kind, layout in schema.LAYOUTS.items():
        assert layout.kind == kind and layout.variables, kind
        for var in (*layout.variables, *layout.coords):
            assert var.need in (schema.REQUIRED, schema.CURRENT, schema.OPTIONAL), (kind, var)
            if var.meta is not None:  # the attrs are _schema's, not a copy
                assert var.attrs == _schema.meta(var.meta), (kind, var.name)
    mp = schema.LAYOUTS["mp"]
    assert mp.variable("fit_status").attrs["flag_meanings"] == " ".join(_schema.FIT_STATUS.meanings)
    assert mp.variable("outcome").attrs["flag_meanings"] == " ".join(_schema.OUTCOME.meanings)
    assert mp.variable("student_init_W1").name == "student_init_{stem}"  # not student_{stem} with stem init_W1
    assert {"trial", "round", "synapse"} <= set(mp.dims), mp.dims


def test_new_outcome_and_bracket_variables_are_optional_in_mp_and_sweep():
    for kind in ("mp", "sweep"):
        layout = schema.LAYOUTS[kind]
        for name, dims in (("outcome", ("trial",)), ("mp_lower", ()), ("mp_upper", ())):
            var = layout.variable(name)
            assert var.need == schema.OPTIONAL and var.dims == (dims,), (kind, var)


def test_certificate_attrs_are_the_certificate_fields():
    fields = {f"certificate_{f.name}" for f in dataclasses.fields(Certificate)}
    assert set(schema.CERTIFICATE_ATTRS) == fields, set(schema.CERTIFICATE_ATTRS) ^ fields
    cert = ns.certify(tiny(), ns.allocate(tiny(), 4, within=["W2"], seed=0), m=2)
    assert set(cert.to_attrs()) == fields


def test_version_attrs_are_those_every_writer_writes():
    layout = schema.LAYOUTS["mp"]
    assert set(_schema.versions()) <= set(layout.attrs), set(_schema.versions()) - set(layout.attrs)


# ------------------------------------------------------------------------------------------------ mp
@pytest.mark.parametrize("make,budget,weights", [(tiny, 4, False), (tiny, 6, True), (lffn, 10, False),
                                                 (signed_steady, 4, True)])
def test_match_probability_follows_the_mp_layout(make, budget, weights):
    circuit = make()
    within = [circuit.weight_names[-1]] if budget == 4 else None
    ds = ns.match_probability(circuit, ns.allocate(circuit, budget, within=within, seed=0), m=2, trials=3,
                              return_weights=weights)
    check(ds, "mp")
    ns.validate_dataset(ds, "certificate")
    if make is signed_steady:  # the optional constraint variables are there and conform
        assert {"stable", "max_real_eig", "teacher_rejected", "sign_violations"} <= set(ds.data_vars), list(ds)


def test_mp_file_from_the_cli_follows_the_mp_layout(tmp_path):
    out = tmp_path / "mp.nc"
    assert main(["mp", str(ROOT / "circuits" / "lffn.toml"), "--budget", "10", "--strategy", "spread-rows", "--m",
                 "2", "--trials", "3", "--quiet", "--out", str(out)]) == 0
    with xr.open_dataset(out) as ds:
        check(ds, "mp")


def test_mp_without_certificate_has_no_certificate_to_check():
    ds = ns.match_probability(tiny(), ns.allocate(tiny(), 4, seed=0), m=2, trials=2, certificate=False)
    check(ds, "mp")
    with pytest.raises(ns.LayoutError, match="missing variable 'plastic_rank'.*missing attr 'certificate_verdict'"):
        ns.validate_dataset(ds, "certificate")


# ------------------------------------------------------------------------------------------------ sweep
@pytest.mark.slow
def test_sweep_in_memory_and_its_store_follow_the_sweep_layout(tmp_path):
    store = tmp_path / "s.zarr"
    kwargs = {"budget": [2, 4], "m": [1, 2], "trials": 2, "fractions": ns.simplex_grid(["W1", "W2"], step=0.5),
              "seed": 1}
    memory = ns.sweep(tiny(), **kwargs)
    check(memory, "sweep")
    stored = ns.sweep(tiny(), store=store, **kwargs)
    check(stored, "sweep")
    with xr.open_zarr(store, chunks=None) as raw:  # the store itself: plain point coords and point_checksum
        assert "point_checksum" in raw.data_vars
        check(raw, "sweep")
    check(open_sweep(store), "sweep")


def test_sweep_with_swept_flags_and_a_density_grid_follows_the_sweep_layout():
    check(ns.sweep(signed_steady(), budget=3, m=1, trials=2, within=["E->out"], dale=[True, False]), "sweep")
    check(ns.sweep(tiny(), m=1, trials=2, fractions=ns.density_grid({"W1": [0.25], "W2": [0.5]})), "sweep")


def test_sweep_with_no_computable_point_still_has_the_full_layout():
    with pytest.warns(UserWarning, match="cannot be allocated"):
        ds = ns.sweep(tiny(), budget=100, m=1, trials=2)
    assert (ds.status.values == _schema.INFEASIBLE_BUDGET).all()
    check(ds, "sweep")


def test_sweep_variables_do_not_depend_on_which_point_ran_first():
    # first point: every plastic synapse in in->E (unsigned); later points also in E->out (E is excitatory)
    ds = ns.sweep(signed_steady(), budget=4, m=1, trials=2, fractions=ns.simplex_grid(["E->out", "in->E"], step=0.5))
    assert "sign_violations" in ds.data_vars
    check(ds, "sweep")


def test_a_swept_stable_flag_whose_first_value_is_off_keeps_the_rejection_counts():
    # the first point runs with stable=False (no rejection counts); the stable=True points have them
    ds = ns.sweep(signed_steady(), budget=3, m=1, trials=2, within=["E->out"], stable=[False, True])
    assert {"teacher_rejected", "student_rejected", "sign_violations"} <= set(ds.data_vars), list(ds)
    assert (ds.teacher_rejected.sel(stable_required=False) == 0).all()  # nothing rejected where not required
    check(ds, "sweep")


def test_sweep_attrs_record_the_fit_options_as_every_writer_does():
    ds = ns.sweep(tiny(), budget=2, m=1, trials=2, solver="lstsq", tol=1e-6, certificate=False)
    written = ns.FitOptions(solver="lstsq", tol=1e-6, certificate=False).to_attrs()
    # dale and stable: 1 only where they can act (tiny has no signs); K (plausibility_bound) recorded only there
    for key in set(written) - {"dale", "stable", "plausibility_bound"}:
        assert ds.attrs[key] == written[key] and type(ds.attrs[key]) is type(written[key]), key
    assert (ds.attrs["dale"], ds.attrs["stable"]) == (0, 0) and "plausibility_bound" not in ds.attrs


def continuous_tanh() -> ns.Circuit:
    """The small continuous circuit with a tanh nonlinearity: no stability rule, local stability reported."""
    return ns.Circuit.from_toml_text(continuous().to_toml().replace('nonlinearity = "linear"', 'nonlinearity = "tanh"'))


# (circuit, weights made plastic (None: all), certificate, stable): signed and unsigned allocations of a steady
# circuit with an excitatory region, a feed-forward circuit, a nonlinear continuous one; each option on and off
RULE_CASES = [(signed_steady, None, True, True), (signed_steady, ["in->E"], False, False),
              (signed_steady, ["in->E"], False, True), (tiny, None, True, True), (tiny, None, False, False),
              (continuous_tanh, None, False, True), (continuous_tanh, None, True, False)]
# the LM's effort does not change which variables a point writes: the nonlinear circuit fits with 1 restart, 2 rounds
# of 20 iterations (the default effort took about 20 s of CPU per case for the same variables)
SMALL_LM = ns.Auto(restarts=1, max_rounds=2, iterations=20)


@pytest.mark.parametrize("make,within,certificate,stable", RULE_CASES)
def test_declared_point_variables_are_what_match_probability_writes(make, within, certificate, stable):
    from neurosubset.sweeps.point import point_conditions, point_values

    circuit = make()
    alloc = ns.allocate(circuit, 3, within=within, seed=0)
    options = ns.FitOptions(certificate=certificate, stable=stable,
                            **({"solver": SMALL_LM} if make is continuous_tanh else {}))
    ds = ns.match_probability(circuit, alloc, m=1, trials=2, options=options)
    conditions = point_conditions(circuit, alloc, options)
    declared = {var.name: var for var in schema.sweep_point_variables(conditions)}
    written = point_values(ds, rounds=ds.sizes["round"])
    assert set(written) == set(declared), (conditions, set(written) ^ set(declared))
    for name, value in written.items():  # each value fits its declared dtype
        dtype = np.dtype(declared[name].dtype)
        if name in ds.data_vars:
            assert ds[name].dtype == dtype or (ds[name].ndim == 0 and dtype == np.float64), (name, ds[name].dtype)
        np.testing.assert_array_equal(np.asarray(value).astype(dtype), np.asarray(value),  # NaN equals NaN
                                      err_msg=f"{name}: {value} does not fit {dtype}")
    # the condition names the rules: signed_plastic exactly where the allocation has a signed plastic synapse
    assert conditions["signed_plastic"] == (make is signed_steady and within is None), conditions


def test_a_sweep_stores_an_absent_value_where_a_point_writes_no_sign_violations(tmp_path):
    grid = ns.simplex_grid(["in->E", "E->out"], step=0.5)  # E->out only, both, in->E only (unsigned)
    memory = ns.sweep(signed_steady(), budget=4, m=1, trials=2, fractions=grid)
    stored = ns.sweep(signed_steady(), budget=4, m=1, trials=2, fractions=grid, store=tmp_path / "s.zarr")
    for ds in (memory, stored, open_sweep(tmp_path / "s.zarr")):
        violations = ds.sign_violations.squeeze(("budget", "strategy", "m")).values  # (point, trial)
        unsigned = ds["in_to_E"].values == 1.0
        assert (violations[unsigned] == -1).all() and (violations[~unsigned] >= 0).all(), violations
        assert ds.sign_violations.attrs["absent_value"] == -1
    xr.testing.assert_identical(memory, stored)


# ------------------------------------------------------------------------------------------------ simulate, responses
@pytest.mark.parametrize("make,times", [(lffn, None), (continuous, "all")])
def test_simulate_follows_the_simulate_layout(make, times):
    circuit = make()
    rng = np.random.default_rng(0)
    ds = ns.simulate(circuit, circuit.sample_weights(rng), circuit.sample_probes(2, rng), times=times,
                     hidden=make is continuous)
    check(ds, "simulate")


def _recording(circuit, noisy=False):
    rng = np.random.default_rng(3)
    w0 = circuit.sample_weights(rng)
    probes = circuit.sample_probes(8, rng)
    sim = ns.simulate(circuit, w0, probes)
    rec = {r: sim[f"rate_{_schema.var_name(r)}"].values for r in ("L1", "L2")}
    noise = 0.01 if noisy else None
    return w0, probes, rec, noise


def test_responses_and_weights_files_follow_their_layouts(tmp_path):
    circuit = lffn()
    w0, probes, rec, _ = _recording(circuit)
    for kind, ds in (("responses", responses_dataset(circuit, probes, rec, noise={"L1": 0.1, "L2": 0.1})),
                     ("weights", weights_dataset(circuit, w0))):
        check(ds, kind)
        ds.to_netcdf(tmp_path / f"{kind}.nc", engine="h5netcdf")
        with xr.open_dataset(tmp_path / f"{kind}.nc", engine="h5netcdf") as back:
            check(back, kind)


@pytest.mark.parametrize("noisy", [False, True])
def test_localize_and_fit_responses_follow_their_layouts(noisy):
    circuit = lffn()
    w0, probes, rec, noise = _recording(circuit, noisy)
    ds = ns.localize(circuit, w0, probes, rec, ns.projection_candidates(circuit), noise=noise, holdout=2)
    check(ds, "localize")
    one = ns.fit_responses(circuit, ns.allocate(circuit, 6, within=["L1->L2"], seed=0), probes, rec, w0, noise=noise)
    check(one, "fit_responses")


# ------------------------------------------------------------------------------------------------ spiking
@pytest.mark.requires_brian2
@pytest.mark.slow
def test_spiking_check_follows_its_layout():
    circuit = tiny()
    rng = np.random.default_rng(0)
    ds = ns.spiking_check(circuit, circuit.sample_weights(rng), circuit.sample_probes(2, rng), seed=1, **SPIKING)
    check(ds, "spiking_check")


@pytest.mark.requires_brian2
@pytest.mark.slow
def test_spikecheck_and_one_student_compare_follow_the_compare_layout():
    circuit = tiny()
    ds = ns.spikecheck(circuit, ns.allocate(circuit, 4, within=["W2"], seed=0), m=2, seed=1,
                       settings=ns.SpikingSettings(**SPIKING))
    check(ds, "spiking_compare")
    rng = np.random.default_rng(0)
    w = circuit.sample_weights(rng)
    one = ns.spiking_compare(circuit, w, w, circuit.sample_probes(2, rng), seed=1, **SPIKING)  # student squeezed
    check(one, "spiking_compare")


# ------------------------------------------------------------------------------------------------ earlier files
def test_shipped_files_of_earlier_versions_conform_as_legacy():
    with xr.open_dataset(DATA / "mp_lffn.nc") as ds:
        assert ns.validate_dataset(ds, legacy=True) == "mp"
        assert_declared(ds, "mp")
        # written before fit_status, the synapse dim and the CF attrs: named, not silently accepted
        with pytest.raises(ns.LayoutError, match="missing variable 'fit_status'.*missing variable 'mask_synapse'"):
            ns.validate_dataset(ds)
    with xr.open_zarr(DATA / "sweep_ca3_ca1.zarr", chunks=None) as ds:  # store format 1: a dim per fraction key
        assert ns.validate_dataset(ds, legacy=True) == "sweep"
        assert_declared(ds, "sweep")
        with pytest.raises(ns.LayoutError, match=r"missing variable 'fit_status' \(budget, CA3->CA3, CA3->CA1, "):
            ns.validate_dataset(ds)


# ------------------------------------------------------------------------------------------------ negative
@pytest.fixture(scope="module")
def mp_ds():
    return ns.match_probability(tiny(), ns.allocate(tiny(), 4, within=["W2"], seed=0), m=2, trials=3)


def test_a_dropped_variable_is_named(mp_ds):
    with pytest.raises(ns.LayoutError, match=r"'mp' layout.*missing variable 'residual' \(trial\)"):
        ns.validate_dataset(mp_ds.drop_vars("residual"))


def test_a_renamed_dim_names_every_variable_on_it(mp_ds):
    bad = mp_ds.rename_dims(trial="draw")
    with pytest.raises(ns.LayoutError) as err:
        ns.validate_dataset(bad, "mp")
    message = str(err.value)
    for name in ("matched", "residual", "restarts", "fit_status", "decision"):
        assert f"variable {name!r} has dims ('draw',), expected (trial)" in message, message
    assert "\n" not in message


def test_every_problem_is_listed_in_one_message(mp_ds):
    bad = mp_ds.drop_vars(["mp", "mp_by_round"])
    del bad.attrs["config_hash"]
    del bad.attrs["certificate_verdict"]
    bad["outcome"] = ("round", np.zeros(bad.sizes["round"], np.int8))  # an optional variable, wrong dims
    with pytest.raises(ns.LayoutError) as err:
        ns.validate_dataset(bad, "mp")
    message = str(err.value)
    for part in ("missing variable 'mp' ()", "missing variable 'mp_by_round' (round)", "missing attr 'config_hash'",
                 "variable 'outcome' has dims ('round',), expected (trial)"):
        assert part in message, message
    assert isinstance(err.value, ns.NeurosubsetError) and isinstance(err.value, ValueError)


def test_optional_new_variables_pass_where_present(mp_ds):
    ds = mp_ds.assign(outcome=("trial", np.zeros(mp_ds.sizes["trial"], np.int8), _schema.meta("outcome")),
                      mp_lower=((), 0.0, _schema.meta("mp_lower")), mp_upper=((), 1.0, _schema.meta("mp_upper")))
    check(ds, "mp")


def test_a_sweep_variable_without_its_point_dims_is_named():
    ds = ns.sweep(tiny(), budget=[2, 4], m=1, trials=2)
    bad = ds.assign(mp=ds.mp.isel(budget=0, drop=True))
    with pytest.raises(ns.LayoutError, match=r"variable 'mp' has dims \('strategy', 'm'\), expected "
                                             r"\(budget, strategy, m\)"):
        ns.validate_dataset(bad)
    broken = ds.rename_vars(mask_W1="mask_W1x").rename_dims(W1_post="rows")
    with pytest.raises(ns.LayoutError, match=r"variable 'mask_W1x' has dims .*expected \(<allocation dims>, "
                                             r"W1x_post, W1x_pre\)"):
        ns.validate_dataset(broken)


def test_unknown_or_uninferable_kind_is_refused(mp_ds):
    with pytest.raises(ns.LayoutError, match=r"The 'kind' parameter must be one of \['mp', "):
        ns.validate_dataset(mp_ds, "table")
    with pytest.raises(ns.LayoutError, match="Cannot tell the kind of the Dataset: no kind fit"):
        ns.validate_dataset(xr.Dataset({"x": ("a", [1.0])}))
