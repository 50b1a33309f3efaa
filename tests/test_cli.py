"""The command line: real subprocesses for the exit codes and the one-line errors, main() for the rest."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import xarray as xr

from neurosubset.cli import main

ROOT = Path(__file__).resolve().parents[1]


def _run(*args):
    return subprocess.run([sys.executable, "-m", "neurosubset.cli", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=300)


def test_mp_prints_the_interval_and_writes_the_dataset(tmp_path, capsys):
    out = tmp_path / "mp.nc"
    code = main(["mp", "lffn:6-3", "--budget", "9", "--strategy", "spread-rows", "--m", "3", "--trials", "20",
                 "--seed", "0", "--quiet", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    # 3 plastic synapses per row, m = 3 <= d_in = 6: MP = 1 exactly (every row has >= m), Wilson low = 20/(20+z^2)
    assert "MP = 1.000  95% CI [0.839, 1.000]" in printed and "20/20 matched" in printed
    with xr.open_dataset(out, engine="h5netcdf") as ds:
        assert float(ds.mp) == 1.0 and ds.sizes["trial"] == 20 and ds.attrs["allocation_size"] == 9


def test_mp_on_a_toml_spec_with_fractions(tmp_path, capsys):
    code = main(["mp", str(ROOT / "circuits" / "ca3_ca1.toml"), "--budget", "40", "--strategy", "spread-rows",
                 "--fractions", "CA3->CA3=0.5,CA3->CA1=0.5", "--m", "2", "--trials", "4", "--quiet"])
    assert code == 0 and "M = 40, m = 2" in capsys.readouterr().out
    ds_path = tmp_path / "ca.nc"
    assert main(["mp", str(ROOT / "circuits" / "ca3_ca1.toml"), "--budget", "40", "--fractions",
                 "CA3->CA3=0.5,CA3->CA1=0.5", "--m", "2", "--trials", "4", "--quiet", "--out", str(ds_path)]) == 0
    with xr.open_dataset(ds_path, engine="h5netcdf") as ds:
        assert ds.attrs["allocation_counts"] == '{"EC->CA3": 0, "CA3->CA3": 20, "CA3->CA1": 20, "CA1->OUT": 0}'


@pytest.mark.parametrize("args, message", [
    (["mp", "nowhere.toml", "--budget", "3", "--m", "2"], "is neither a TOML file nor a builtin"),
    (["mp", "lffn:8-6-3", "--budget", "999", "--m", "2"], "The 'budget' parameter of allocate must be <= 66"),
    (["mp", "lffn:8-6-3", "--budget", "9", "--m", "2", "--fractions", "W1=0.5,W2=0.6"],
     "The fractions must sum to 1. Got 1.1"),
    (["mp", "lffn:8-6-3", "--budget", "9", "--m", "2", "--fractions", "W1:0.5"], "--fractions takes NAME=FRACTION"),
    (["mp", "lffn:8-6-3", "--budget", "9", "--m", "0"], "The 'm' parameter must be >= 1. Got 0"),
    (["mp", "lffn:8-x-3", "--budget", "9", "--m", "2"], "Cannot parse builtin circuit"),
    (["mp", "lffn:8-6-3", "--budget", "9", "--m", "2", "--within", "W7"], "Weight 'W7' (in 'within') does not exist"),
])
def test_user_errors_are_one_line_and_exit_2(args, message, capsys):
    assert main(args) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], lines


@pytest.mark.slow
def test_a_real_process_exits_2_with_one_line_and_no_traceback(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[regions.A\n")
    proc = _run("mp", str(bad), "--budget", "1", "--m", "1")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "Malformed TOML" in proc.stderr and "Traceback" not in proc.stderr


def test_solver_options_build_the_solver_object(tmp_path):
    out = tmp_path / "mp.nc"
    assert main(["mp", "lrnn:5,2,1,3", "--budget", "6", "--within", "W", "--m", "2", "--trials", "3", "--quiet",
                 "--solver", "lm", "--restarts", "2", "--max-rounds", "2", "--iterations", "50",
                 "--out", str(out)]) == 0
    with xr.open_dataset(out, engine="h5netcdf") as ds:
        assert (ds.attrs["solver"], ds.attrs["restarts_per_round"], ds.attrs["max_rounds"],
                ds.attrs["lm_steps"]) == ("lm", 2, 2, 50)
        assert "lm_patience" not in ds.attrs  # 2 rounds: the default patience cannot stop a trial early
    out = tmp_path / "mp_patience.nc"
    assert main(["mp", "lrnn:5,2,1,3", "--budget", "6", "--within", "W", "--m", "2", "--trials", "3", "--quiet",
                 "--solver", "lm", "--restarts", "2", "--max-rounds", "4", "--iterations", "20", "--patience", "1",
                 "--out", str(out)]) == 0
    with xr.open_dataset(out, engine="h5netcdf") as ds:
        assert ds.attrs["lm_patience"] == 1 and ds.attrs["effort_converged"] in (0, 1)


def test_an_os_error_is_one_line_and_exit_2(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    assert main(["mp", "lffn:4-2", "--budget", "4", "--m", "2", "--trials", "2", "--quiet",
                 "--out", str(blocker / "mp.nc")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and str(blocker) in lines[0], lines


def test_a_bug_is_not_disguised_as_a_user_error(monkeypatch):
    # only the toolkit's own error classes and OSError are user errors; anything else keeps its traceback
    import neurosubset.benchmark

    def broken(*args, **kwargs):
        raise KeyError("a bug")

    monkeypatch.setattr(neurosubset.benchmark, "match_probability", broken)
    with pytest.raises(KeyError, match="a bug"):
        main(["mp", "lffn:4-2", "--budget", "4", "--m", "2", "--trials", "2", "--quiet"])


def test_sweep_takes_no_dale_and_no_stable(tmp_path):
    ei = str(ROOT / "circuits" / "ei_isn.toml")
    base = ["sweep", ei, "--budget", "12", "--strategy", "spread-rows", "--within", "E->OUT", "--m", "3",
            "--trials", "6", "--quiet"]
    assert main([*base, "--out", str(tmp_path / "kept.zarr")]) == 0
    assert main([*base, "--no-dale", "--no-stable", "--out", str(tmp_path / "free.zarr")]) == 0
    kept, free = (xr.open_zarr(tmp_path / name) for name in ("kept.zarr", "free.zarr"))
    assert (kept.attrs["dale"], kept.attrs["stable"]) == (1, 1)
    assert (free.attrs["dale"], free.attrs["stable"]) == (0, 0)



@pytest.mark.slow
def test_sweep_compares_dale_draws_dirichlet_points_and_unpairs(tmp_path):
    import numpy as np

    ei = str(ROOT / "circuits" / "ei_isn.toml")
    base = ["sweep", ei, "--budget", "12", "--strategy", "spread-rows", "--within", "E->OUT", "--m", "3",
            "--trials", "6", "--quiet", "--no-stable"]
    assert main([*base, "--compare-dale", "--out", str(tmp_path / "both.zarr")]) == 0
    assert main([*base, "--no-dale", "--out", str(tmp_path / "free.zarr")]) == 0
    both, free = (xr.open_zarr(tmp_path / name) for name in ("both.zarr", "free.zarr"))
    assert list(both["dale"].values) == [True, False]
    # paired draws: the dale=False slice is the --no-dale sweep, trial by trial
    np.testing.assert_array_equal(both["residual"].sel(dale=False).values.ravel(), free["residual"].values.ravel())
    ff = ["sweep", "lffn:6-4-3", "--budget", "12", "--m", "2", "--trials", "4", "--quiet"]
    assert main([*ff, "--fractions", "W1,W2", "--dirichlet", "3", "--seed", "5", "--unpaired",
                 "--out", str(tmp_path / "dir.zarr")]) == 0
    with xr.open_zarr(tmp_path / "dir.zarr") as ds:
        drawn = np.random.default_rng(5).dirichlet(np.ones(2), 3)   # the documented draw of dirichlet_grid
        np.testing.assert_allclose(np.c_[ds["W1"].values, ds["W2"].values], drawn, atol=1e-11)
        assert not ds.attrs["paired"]
    assert main([*ff, "--dirichlet", "3", "--out", str(tmp_path / "bad.zarr")]) == 2


@pytest.mark.slow
def test_mp_skip_zero_records_a_rank_deficit_without_fitting(tmp_path):
    # 6 plastic recurrent synapses cannot span the m * n_out = 16 output equations: a rank deficit, MP = 0
    base = ["mp", "lrnn:16,2,2,5", "--budget", "6", "--within", "W", "--strategy", "spread-rows", "--m", "8",
            "--trials", "4", "--quiet"]
    assert main([*base, "--skip-zero", "--out", str(tmp_path / "skip.nc")]) == 0
    assert main([*base, "--out", str(tmp_path / "fit.nc")]) == 0
    with xr.open_dataset(tmp_path / "skip.nc", engine="h5netcdf") as skip, \
            xr.open_dataset(tmp_path / "fit.nc", engine="h5netcdf") as fitted:
        assert skip.attrs["certificate_verdict"] == "zero" and int(skip["plastic_rank"]) <= 6 < 16
        flags = dict(zip(skip["decision"].attrs["flag_values"].tolist(),
                         skip["decision"].attrs["flag_meanings"].split()))
        assert {flags[int(v)] for v in skip["decision"].values} == {"rank_certificate"}
        assert int(skip["restarts"].sum()) == 0 < int(fitted["restarts"].sum())  # nothing fitted vs the LM's starts
        assert float(skip.mp) == float(fitted.mp) == 0.0

def _options(parser):
    """Option string -> (dest, default, action class, required, choices) of one subcommand's parser."""
    return {opt: (a.dest, a.default, type(a).__name__, a.required, a.choices)
            for a in parser._actions for opt in a.option_strings}


def _subparsers():
    import argparse

    from neurosubset.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices


def test_mp_and_sweep_share_option_names_and_defaults():
    parsers = _subparsers()
    mp, sw = _options(parsers["mp"]), _options(parsers["sweep"])
    shared = set(mp) & set(sw)
    # what the issue names, and everything else both have, is one option with one default in both
    assert {"--tol", "--solver", "--workers", "--overwrite", "--seed", "--trials", "--quiet", "--within",
            "--strategy", "--fractions", "--budget", "--m", "--out", "--no-dale", "--no-stable", "--restarts",
            "--max-rounds", "--iterations", "--widen"} <= shared
    for opt in shared:
        assert (mp[opt][0], mp[opt][1], mp[opt][2]) == (sw[opt][0], sw[opt][1], sw[opt][2]), opt
    assert mp["--trials"][1] == 100 and mp["--seed"][1] == 0 and mp["--workers"][1] is None
    # the documented differences only: sweep requires its store; mp takes one strategy (choices), sweep a list
    assert {o for o in shared if mp[o][3] != sw[o][3]} == {"--out"}
    assert {o for o in shared if mp[o][4] != sw[o][4]} == {"--strategy"}
    assert set(mp) - shared == {"--save-weights", "--skip-zero", "--no-skip-zero"}
    assert set(sw) - shared == {"--step", "--scheduler", "--dirichlet", "--unpaired", "--compare-dale",
                                "--compare-stable"}
    # the positional circuit comes first in both
    positional = [[a.dest for a in p._actions if not a.option_strings] for p in (parsers["mp"], parsers["sweep"])]
    assert positional == [["circuit"], ["circuit"]]


def test_mp_workers_are_torch_threads_and_do_not_change_the_numbers(tmp_path, monkeypatch):
    import neurosubset.benchmark as benchmark
    import torch

    seen = []
    real = benchmark._fit

    def spy(*args, **kwargs):  # records the thread count the fit runs with, then runs the real fit
        seen.append(torch.get_num_threads())
        return real(*args, **kwargs)

    monkeypatch.setattr(benchmark, "_fit", spy)
    before = torch.get_num_threads()
    base = ["mp", "lrnn:5,2,1,3", "--budget", "6", "--within", "W", "--m", "2", "--trials", "4", "--quiet",
            "--solver", "lm", "--restarts", "2", "--max-rounds", "2", "--iterations", "60"]
    outs = [tmp_path / f"w{w}.nc" for w in (1, 2)]
    assert main([*base, "--out", str(outs[0])]) == 0 and main([*base, "--workers", "2", "--out", str(outs[1])]) == 0
    assert seen == [1, 2] and torch.get_num_threads() == before
    with xr.open_dataset(outs[0], engine="h5netcdf") as one, xr.open_dataset(outs[1], engine="h5netcdf") as two:
        assert (one.matched.values == two.matched.values).all() and float(one.mp) == float(two.mp)
        assert abs(one.residual.values - two.residual.values).max() <= 1e-6 * max(1.0, one.residual.values.max())


@pytest.mark.parametrize("command", ["mp", "sweep"])
def test_workers_below_one_is_one_line_for_both(command, tmp_path, capsys):
    args = [command, "lffn:4-2", "--budget", "4", "--m", "2", "--trials", "2", "--quiet", "--workers", "0",
            "--out", str(tmp_path / ("x.nc" if command == "mp" else "x.zarr"))]
    assert main(args) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "--workers must be >= 1. Got 0." in lines[0], lines


def test_sweep_prints_mp_with_intervals_per_point(tmp_path, capsys):
    # lffn:6-3, 9 plastic W1 synapses, m = 3: spread-rows puts 3 in every row (each row >= m: MP = 1);
    # concentrated-rows fills row 0 (6) and half of row 1, row 2 gets none (a row with < m: MP = 0).
    # Wilson 95% with n = 20: 20/20 -> low 20 / (20 + z^2) = 0.839; 0/20 -> high z^2 / (20 + z^2) = 0.161
    z2 = 1.959964 ** 2
    assert main(["sweep", "lffn:6-3", "--budget", "9", "--strategy", "spread-rows,concentrated-rows", "--m", "3",
                 "--trials", "20", "--quiet", "--out", str(tmp_path / "s.zarr")]) == 0
    printed = capsys.readouterr().out
    rows = {name: next(line for line in printed.splitlines() if f" {name} " in line)
            for name in ("spread-rows", "concentrated-rows")}
    assert f"1.00 [{20 / (20 + z2):.2f}, 1.00]" in rows["spread-rows"]
    assert f"0.00 [0.00, {z2 / (20 + z2):.2f}]" in rows["concentrated-rows"]


def test_the_readme_quick_start_runs_and_writes_only_data_quickstart(tmp_path, monkeypatch, capsys):
    import shutil

    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Ten lines of Python", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    assert len(code.strip().splitlines()) <= 10
    shutil.copytree(ROOT / "circuits", tmp_path / "circuits")
    (tmp_path / "data").mkdir()
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md quick-start", "exec"), {})
    printed = capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["circuits", "data"]  # nothing in the root
    written = sorted(p.name for p in (tmp_path / "data").iterdir())
    assert written == ["quickstart_concentrated-rows.nc", "quickstart_spread-rows.nc"]
    assert all(name.startswith("quickstart_") for name in written)
    # spread rows: 16 CA1 rows x 3 plastic synapses cover all 4 m = 32 equations (MP = 1); concentrated rows fill
    # 3 rows, whose outputs span 3 of the 4 read-out directions: 3 m = 24 < 32 (MP = 0); 100 trials each
    for name, mp in (("spread-rows", 1.0), ("concentrated-rows", 0.0)):
        with xr.open_dataset(tmp_path / "data" / f"quickstart_{name}.nc", engine="h5netcdf") as ds:
            assert float(ds.mp) == mp and ds.sizes["trial"] == 100
            assert f"{name}: MP = {mp:.2f} [{float(ds.mp_low):.2f}, {float(ds.mp_high):.2f}]" in printed
    assert re.search(r"plastic \(dim S\)\s+24\s", printed) and re.search(r"full \(dim V\)\s+32\s", printed)


_EI_STEADY = """
dynamics = "steady"
[regions.X]
size = 2
role = "input"
[regions.E]
size = 4
sign = 1
[regions.I]
size = 2
sign = -1
[regions.OUT]
size = 1
role = "output"
[[projections]]
pre = "X"
post = "E"
[[projections]]
pre = "E"
post = "I"
gain = 0.5
[[projections]]
pre = "I"
post = "E"
gain = 0.5
[[projections]]
pre = "E"
post = "OUT"
"""


@pytest.mark.slow
def test_compare_dale_says_that_its_dale_false_arm_still_requires_stability(tmp_path, capsys):
    spec = tmp_path / "ei.toml"
    spec.write_text(_EI_STEADY)
    base = ["sweep", str(spec), "--budget", "4", "--within", "E->OUT", "--m", "2", "--trials", "2", "--quiet",
            "--compare-dale"]
    assert main([*base, "--out", str(tmp_path / "a.zarr")]) == 0
    printed = capsys.readouterr().out
    assert "dale=False arm still requires stability" in printed and "--no-stable" in printed, printed
    ds = xr.open_zarr(tmp_path / "a.zarr")
    assert ds.attrs["stable"] == 1 and list(ds["dale"].values) == [True, False]  # what the note says, as stored
    assert main([*base, "--no-stable", "--out", str(tmp_path / "b.zarr")]) == 0  # turned off: no note
    assert "still requires stability" not in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["sweep", "--help"])
    assert "still require stability" in " ".join(capsys.readouterr().out.split())  # and its help says it
