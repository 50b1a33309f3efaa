"""FitOptions: one options object, validated once at every public entry point, serialised to the attrs and hashes
that result files already carry.

Independent references: the refusal message is built here from the one declarative table
(:data:`neurosubset.options.PARAMETER_CONSTRAINTS`) and the documented format, not read from a refusal; the config
hashes are the ones stored in ``tests/data`` by the code before FitOptions existed (commit 661adff, see
``tests/data/README.md``). Every refusal test makes any computation fail loudly, so a refusal that comes after
work has started fails the test.
"""
from __future__ import annotations

import ast
import inspect
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr

import neurosubset as ns
import neurosubset.benchmark as benchmark
import neurosubset.options as options_module
import neurosubset.responses.fitting as fitting
import neurosubset.sweeps.core as sweep_core
from neurosubset.cli import main
from neurosubset.options import (PARAMETER_CONSTRAINTS, FitOptions, config_hash, constraints_act, hashed_config)
from neurosubset.responses import projection_candidates
from neurosubset.spiking import spikecheck

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).parent / "data"
FIELDS = [f for f in FitOptions.__dataclass_fields__]

# one invalid value per field (tol: the meaningless tolerances of issue 26 finding #11 among them)
INVALID = {"solver": "newton", "tol": float("inf"), "dale": "yes", "stable": None, "device": "tpu", "threads": 0,
           "chunk": 0, "max_memory": -1.0, "skip_zero": "auto", "certificate": "no", "plausibility_bound": -1.0,
           "weights_layout": "csr"}
MORE_TOL = [1.0, 5.0, float("nan"), 0.0, -1e-8, True, "1e-8"]


def expected(field: str, value, caller: str) -> str:
    """The one-line message of the one validator, built from its table and the documented format."""
    return f"The {field!r} parameter of {caller} must be {PARAMETER_CONSTRAINTS[field][0]}. Got {value!r} instead."


@pytest.fixture
def no_compute(monkeypatch):
    """Every computation fails loudly: a refusal must come before any of it."""
    def boom(*args, **kwargs):
        raise AssertionError("computed before refusing")

    monkeypatch.setattr(benchmark, "_fit_trials", boom)
    monkeypatch.setattr(benchmark, "certify", boom)
    monkeypatch.setattr(fitting, "check_weights", boom)
    monkeypatch.setattr(fitting, "_fit_all", boom)
    monkeypatch.setattr(sweep_core, "_allocations", boom)
    monkeypatch.setattr(sweep_core, "allocate", boom)


def _tiny():
    c = ns.feedforward([3, 4, 2])
    rng = np.random.default_rng(0)
    weights = {k: rng.normal(size=c.shape(k)) for k in c.weight_names}
    probes = rng.normal(size=(5, 3))
    responses = {"L2": rng.normal(size=(5, 2))}
    return c, weights, probes, responses


def _entry_points():
    """Public entry point -> (function, call taking keywords)."""
    c, weights, probes, responses = _tiny()
    alloc = ns.Allocation.from_masks(c, {"W2": np.ones(c.shape("W2"), bool)}, strategy="test")
    return {
        "fit": (ns.fit, lambda **kw: ns.fit(c, alloc, m=2, trials=2, **kw)),
        "match_probability": (ns.match_probability,
                              lambda **kw: ns.match_probability(c, alloc, m=2, trials=2, **kw)),
        "sweep": (ns.sweep, lambda **kw: ns.sweep(c, budget=3, m=2, trials=2, **kw)),
        "fit_responses": (ns.fit_responses,
                          lambda **kw: ns.fit_responses(c, alloc, probes, responses, weights, **kw)),
        "localize": (ns.localize, lambda **kw: ns.localize(c, weights, probes, responses,
                                                           projection_candidates(c), **kw)),
        # spikecheck takes tol and threads and hands them to fit, whose validator refuses them
        "spikecheck": (spikecheck, lambda **kw: spikecheck(c, alloc, 2, **kw)),
    }


ENTRY_NAMES = ["fit", "match_probability", "sweep", "fit_responses", "localize", "spikecheck"]
VALIDATES_AS = {"spikecheck": "fit"}  # an entry point that passes its keywords to another public one


@pytest.mark.parametrize("entry, field", [(e, f) for e in ENTRY_NAMES for f in FIELDS
                                          if e != "spikecheck" or f in ("tol", "threads")])  # all spikecheck takes
def test_every_invalid_field_through_every_python_entry_point(entry, field, no_compute):
    function, call = _entry_points()[entry]
    value = INVALID[field]
    if field in inspect.signature(function).parameters:
        with pytest.raises(ns.ParameterError) as info:
            call(**{field: value})
        caller = VALIDATES_AS.get(entry, entry)
    else:  # not a keyword of this entry point: the only way in is options=FitOptions(...), refused when built
        assert "options" in inspect.signature(function).parameters, entry
        with pytest.raises(ns.ParameterError) as info:
            call(options=FitOptions(**{field: value}))
        caller = "FitOptions"
    assert str(info.value) == expected(field, value, caller)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("value", MORE_TOL, ids=repr)
@pytest.mark.parametrize("entry", ["fit", "match_probability", "sweep", "localize"])
def test_meaningless_tolerances_are_refused_everywhere(entry, value, no_compute):
    with pytest.raises(ns.ParameterError) as info:
        _entry_points()[entry][1](tol=value)
    assert str(info.value) == expected("tol", value, entry)


def test_options_object_is_taken_as_is_and_clashing_keywords_are_refused(no_compute):
    call = _entry_points()["match_probability"][1]
    with pytest.raises(ns.ParameterError, match=r"give \['tol'\] either as keywords or in options"):
        call(options=FitOptions(tol=1e-6), tol=1e-4)
    with pytest.raises(ns.ParameterError, match="The 'options' parameter of match_probability must be a FitOptions"):
        call(options={"tol": 1e-6})


# CLI: the options each command takes that can hold an invalid value (flags such as --no-dale cannot; --workers is
# the CLI's own option, refused by the CLI naming --workers, tests/test_cli.py)
CLI_CASES = {
    "mp": ["lffn:3-4-2", "--budget", "3", "--m", "2", "--trials", "2", "--quiet"],
    "sweep": ["lffn:3-4-2", "--budget", "3", "--m", "2", "--trials", "2", "--quiet"],
    "localize": ["lffn:3-4-2", "--weights", "missing-W.nc", "--responses", "missing-R.nc"],
}
CLI_FIELDS = {"mp": ["solver", "tol", "device"], "sweep": ["solver", "tol", "device"], "localize": ["solver", "tol"]}
CLI_VALUES = {"solver": "newton", "tol": "inf", "device": "tpu"}


@pytest.mark.parametrize("command, field", [(c, f) for c, fs in CLI_FIELDS.items() for f in fs])
def test_every_invalid_field_through_every_cli_command(command, field, tmp_path, capsys, no_compute):
    out = tmp_path / ("s.zarr" if command == "sweep" else "r.nc")
    rc = main([command, *CLI_CASES[command], f"--{field}", CLI_VALUES[field], "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    value = float(CLI_VALUES[field]) if field == "tol" else CLI_VALUES[field]
    assert rc == 2 and err == [f"neurosubset {command}: error: {expected(field, value, f'neurosubset {command}')}"]
    assert not out.exists()


def test_cli_spikecheck_takes_no_fit_option():
    """spikecheck's fit runs with the defaults: none of its options is a FitOptions field (so nothing to refuse)."""
    from neurosubset.cli import build_parser

    import argparse

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    dests = {a.dest for a in sub.choices["spikecheck"]._actions}
    assert not dests & set(FIELDS), dests & set(FIELDS)


@pytest.mark.parametrize("entry", ["fit", "match_probability", "sweep"])
def test_gpu_device_on_a_cpu_only_circuit_is_refused_before_any_work(entry, monkeypatch, no_compute):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # as on a GPU machine
    c = ns.Circuit.from_toml(ROOT / "circuits" / "ei_continuous.toml")
    assert c.dynamics.cpu_only
    alloc = ns.Allocation.from_masks(c, {k: np.zeros(c.shape(k), bool) for k in c.weight_names}, strategy="none")
    calls = {"fit": lambda: ns.fit(c, alloc, m=2, trials=2, device="cuda"),
             "match_probability": lambda: ns.match_probability(c, alloc, m=2, trials=2, device="cuda"),
             "sweep": lambda: ns.sweep(c, budget=3, m=2, trials=2, device="cuda")}
    with pytest.raises(ns.ParameterError) as info:
        calls[entry]()
    assert str(info.value) == (f"The 'device' parameter of {entry} must be 'cpu' for continuous circuits (their maps "
                               f"run on the CPU only). Got 'cuda' instead.")


def test_device_is_stored_as_a_string():
    assert FitOptions(device=torch.device("cpu")).device == "cpu"


# --- (b) each field is validated once, in one place ---------------------------------------------------------------

@pytest.fixture
def counts(monkeypatch):
    """Field -> how many times the one validator checked it."""
    seen = dict.fromkeys(FIELDS, 0)
    for field, (allowed, check) in list(PARAMETER_CONSTRAINTS.items()):
        def counting(value, _check=check, _field=field):
            seen[_field] += 1
            return _check(value)
        monkeypatch.setitem(PARAMETER_CONSTRAINTS, field, (allowed, counting))
    return seen


def _once(fields):
    return {f: int(f in fields) for f in FIELDS}


def test_each_field_is_validated_once_per_python_call(counts):
    c, weights, probes, responses = _tiny()
    alloc = ns.allocate(c, 3, within=["W2"], seed=0)
    calls = [
        # plausibility_bound and weights_layout are no keywords of theirs (options=FitOptions(...) only)
        (lambda: ns.fit(c, alloc, m=2, trials=2),
         set(FIELDS) - {"certificate", "plausibility_bound", "weights_layout"}),
        (lambda: ns.match_probability(c, alloc, m=2, trials=2),
         set(FIELDS) - {"plausibility_bound", "weights_layout"}),
        # the sweep's points run match_probability with the sweep's options: no second validation
        (lambda: ns.sweep(c, budget=[2, 3], m=[2], trials=2, within=["W2"]),
         {"solver", "tol", "certificate", "device", "dale", "stable"}),
        (lambda: ns.fit_responses(c, alloc, probes, responses, weights),
         {"solver", "tol", "dale", "stable", "threads"}),
        (lambda: ns.localize(c, weights, probes, responses, projection_candidates(c), holdout=0),
         {"solver", "tol", "dale", "stable", "threads"}),
        (lambda: ns.match_probability(c, alloc, m=2, trials=2, options=FitOptions(tol=1e-6)), set(FIELDS)),
    ]
    for call, fields in calls:
        counts.update(dict.fromkeys(FIELDS, 0))
        call()
        assert counts == _once(fields), (fields, counts)


def test_each_field_is_validated_once_per_cli_call(counts, tmp_path):
    rc = main(["mp", "lffn:3-4-2", "--budget", "3", "--m", "2", "--trials", "2", "--quiet"])
    assert rc == 0 and counts == _once({"solver", "tol", "dale", "stable", "threads", "device", "skip_zero"}), counts


# Calls of the package's generic checks on a FitOptions field outside options.py: each names the module, the
# function and why it is still there (none re-checks what a public entry point hands inward; remove an entry when
# its call goes)
_ELSEWHERE = {
    ("_memory.py", "chunk_trials", "chunk"): "chunk_trials is also called directly (benchmarks, sweeps' memory guard)",
    ("_memory.py", "chunk_trials", "max_memory"): "as above",
    ("dynamics/threads.py", "torch_threads", "threads"): "torch_threads is a public context manager of its own",
    ("benchmark.py", "_skips_zero", "skip_zero"): "the decider-chain rewrite owns it (a no-op on validated options)",
    ("solvers/options.py", "as_solver", "solver"): "as_solver is a public helper of its own",
}


def test_no_other_module_validates_the_fit_options():
    found = set()
    for path in sorted((ROOT / "neurosubset").rglob("*.py")):
        rel = path.relative_to(ROOT / "neurosubset").as_posix()
        if rel == "options.py":
            continue
        tree = ast.parse(path.read_text())
        for func in ast.walk(tree):
            if not isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(func):
                if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                        and node.func.id.startswith("check_") and node.args
                        and isinstance(node.args[0], ast.Constant) and node.args[0].value in FIELDS):
                    found.add((rel, func.name, node.args[0].value))
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "check_device":
                    found.add((rel, func.name, "device"))
    assert found == set(_ELSEWHERE), sorted(found ^ set(_ELSEWHERE))


# --- (c) attrs and hashes -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("options", [
    FitOptions(),
    FitOptions(solver=ns.LevenbergMarquardt(restarts=3, max_rounds=5, iterations=70, widen=2.5), tol=1e-6,
               dale=False, stable=True, certificate=False),
    FitOptions(solver="lstsq", dale=True, stable=False),
    FitOptions(solver="lifted", tol=0.5),
], ids=["default", "lm", "lstsq", "lifted"])
def test_attrs_round_trip_through_netcdf(options, tmp_path):
    attrs = options.to_attrs()
    assert all(type(v) in (str, int, float) for v in attrs.values()), attrs
    path = tmp_path / "a.nc"
    xr.Dataset(attrs=attrs).to_netcdf(path, engine="h5netcdf")
    with xr.open_dataset(path, engine="h5netcdf") as back:
        assert FitOptions.from_attrs(back.attrs) == options


def test_attrs_are_those_the_writers_write():
    """For the fields they hold, the attrs of an mp result and of a sweep equal ``to_attrs`` (the mp result records
    the LM fields of the solver that ran; a sweep its constraints as 0 where they cannot act)."""
    c = ns.feedforward([3, 4, 2], "relu")
    opts = FitOptions(solver=ns.LevenbergMarquardt(max_rounds=1, iterations=20), dale=False, stable=False)
    ds = ns.match_probability(c, ns.allocate(c, 3, within=["W2"], seed=0), m=2, trials=2, options=opts)
    mine = opts.to_attrs(ran=ns.LevenbergMarquardt(max_rounds=1, iterations=20))
    mine.pop("certificate")  # an mp result says it with its certificate_* attrs
    assert {k: ds.attrs[k] for k in mine} == mine
    sw = ns.sweep(c, budget=3, m=2, trials=2, within=["W2"], options=opts)
    mine = opts.to_attrs()
    assert {k: sw.attrs[k] for k in mine} == mine


def test_old_sweep_store_hash_is_what_the_one_rule_computes():
    with xr.open_zarr(DATA / "sweep_ca3_ca1.zarr", chunks=None) as stored:
        attrs = dict(stored.attrs)
    config = json.loads(attrs["sweep_config"])
    opts = FitOptions.from_attrs(attrs)
    circuit = ns.Circuit.from_toml_text(config["circuit"])
    dale_acts, stable_acts = constraints_act(circuit)
    rest = {k: v for k, v in config.items() if k not in ("tolerance", "solver", "restarts", "max_rounds", "lm_steps",
                                                          "certificate")}
    new = hashed_config(opts, rest, kind="sweep", dale_acts=dale_acts, stable_acts=stable_acts)
    assert new == config
    assert config_hash(new) == attrs["config_hash"] == "1d9d839e344b2f34"


def test_old_mp_file_hash_is_what_the_one_rule_computes():
    with xr.open_dataset(DATA / "mp_lffn.nc", engine="h5netcdf") as ds:
        attrs = dict(ds.attrs)
    circuit = ns.Circuit.from_toml_text(attrs["circuit"])
    rest = {k: attrs[k] for k in ("circuit", "circuit_name", "allocation_strategy", "allocation_hash",
                                  "allocation_size", "allocation_counts", "m", "trials", "seed")}
    rest = {k: v.item() if isinstance(v, np.generic) else v for k, v in rest.items()}
    opts = FitOptions.from_attrs(attrs)
    dale_acts, stable_acts = constraints_act(circuit)
    ran = ns.LevenbergMarquardt(restarts=4, max_rounds=2, iterations=60)
    new = hashed_config(opts, rest, kind="mp", dale_acts=dale_acts, stable_acts=stable_acts, ran=ran)
    assert config_hash(new) == attrs["config_hash"] == "31e4d03d25e534f2"


def test_a_new_mp_result_hashes_as_the_old_file():
    """The README command that made mp_lffn.nc, run now: the same config_hash (the writer's and the one rule's)."""
    with xr.open_dataset(DATA / "mp_lffn.nc", engine="h5netcdf") as old:
        stored = old.attrs["config_hash"]
    c = ns.feedforward([8, 6, 3])
    alloc = ns.allocate(c, 20, strategy="spread-rows", seed=2)
    ds = ns.match_probability(c, alloc, m=3, trials=8, seed=2,
                              options=FitOptions(solver=ns.Auto(max_rounds=2, iterations=60)))
    assert ds.attrs["config_hash"] == stored


def test_fit_options_is_public():
    assert ns.FitOptions is FitOptions and "FitOptions" in ns.__all__
    assert options_module.DEFAULT_TOL == ns.DEFAULT_TOL


def test_a_weights_layout_member_is_taken_as_its_value():
    """``FitOptions(weights_layout=ns.WeightsLayout.SPARSE)`` is the options of ``"sparse"``: the same field, attrs
    and hash; the enum's values are the field's allowed values besides "auto"."""
    assert {m.value for m in ns.WeightsLayout} | {"auto"} == {"auto", "dense", "sparse"}
    for member in ns.WeightsLayout:
        by_member, by_value = FitOptions(weights_layout=member), FitOptions(weights_layout=member.value)
        assert by_member == by_value and by_member.weights_layout == member.value
        assert by_member.to_attrs() == by_value.to_attrs()
    with pytest.raises(ns.ParameterError, match=r"'weights_layout' parameter of FitOptions must be one of \['auto', "):
        FitOptions(weights_layout="csr")
