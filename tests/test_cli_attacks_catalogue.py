"""Issue 26's attacks as one parametrised table: every finding (items 1-20 and their sub-cases) beside about 40 of
the attacks that held, each run through the public command line (``neurosubset.cli.main``) or the Python API.

``FINDINGS`` is the list of the failing attacks the issue names. A finding that one command line reproduces runs
here (:func:`test_finding_is_refused_in_one_line`: exit 2, one line naming the cause, nothing written); a finding
that needs damage, a kill, an injected full disk or a numerical check names the test of ``tests/test_cli_attacks.py``
that reproduces it, and :func:`test_every_finding_has_a_test` fails if that test is gone (so the table cannot drift
from the tests). ``HELD`` are attacks that held before the fixes and must keep holding, the same way: command lines
run here, the rest referenced in ``tests/test_sweeps_safety.py`` / ``tests/test_outputs.py`` / ``tests/test_cli.py``.
"""
from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

from neurosubset import cli

ROOT = Path(__file__).resolve().parents[1]
LFFN = str(ROOT / "circuits" / "lffn.toml")

SPEC = ('[regions.A]\nsize = 3\nrole = "input"\nneurons = ["a0", "a1", "a2"]\n[regions.O]\nsize = 2\n'
        'role = "output"\nneurons = ["o0", "o1"]\n[[projections]]\npre = "A"\npost = "O"\n')


def _files(tmp: Path, case: str) -> None:
    """Write what a case's command line reads into ``tmp``."""
    edge = "pre,post,count\n"
    csv = {"empty csv": b"", "header-only csv": edge.encode(), "count inf": (edge + "a0,o0,inf\n").encode(),
           "count abc": (edge + "a0,o0,abc\n").encode(), "utf-16 csv": b"\xff\xfe" + edge.encode("utf-16-le"),
           "extra csv fields": (edge + "a0,o0,1,7\n").encode()}
    npz = {"empty npz": None, "truncated npz": b"PK\x03\x04" + b"\0" * 20, "random-bytes npz": bytes(range(256)),
           "npy renamed npz": "npy", "object npz": "object", "all-zero npz": "zero", "complex npz": "complex"}
    if case in csv:
        (tmp / "c.csv").write_bytes(csv[case])
        (tmp / "c.toml").write_text('connectivity = "c.csv"\n' + SPEC)
    elif case in npz:
        path = tmp / "c.npz"
        what = npz[case]
        if what is None:
            np.savez(path)
        elif isinstance(what, bytes):
            path.write_bytes(what)
        elif what == "npy":
            with open(path, "wb") as f:
                np.save(f, np.ones((2, 3)))
        elif what == "object":
            np.savez(path, **{"A->O": np.array([[1, "x", None]] * 2, dtype=object)})
        elif what == "zero":
            np.savez(path, **{"A->O": np.zeros((2, 3))})
        else:
            np.savez(path, **{"A->O": np.ones((2, 3)) * (1 + 1j)})
        (tmp / "c.toml").write_text('connectivity = "c.npz"\n' + SPEC.replace('neurons = ["a0", "a1", "a2"]\n', "")
                                    .replace('neurons = ["o0", "o1"]\n', ""))
    elif case == "p = 1e-9":
        (tmp / "c.toml").write_text('[regions.A]\nsize = 4\nrole = "input"\n[regions.H]\nsize = 3\n'
                                    '[regions.O]\nsize = 3\nrole = "output"\n[[projections]]\npre = "A"\npost = "H"\n'
                                    'p = 1e-9\n[[projections]]\npre = "H"\npost = "O"\n')
    elif case == "tau = inf":
        (tmp / "c.toml").write_text(_continuous("tau = inf"))
    elif case == "tau list":
        (tmp / "c.toml").write_text(_continuous("tau = [0.02, 0.03]"))
    elif case == "rk4 dt = 10 tau":
        (tmp / "c.toml").write_text(_continuous("tau = 0.01", dt=0.1, duration=0.5, nonlinearity="tanh"))
    elif case == "duration 1000 dt 1e-7":
        (tmp / "c.toml").write_text(_continuous("tau = 0.02", dt=1e-7, duration=1000.0, nonlinearity="tanh"))
    elif case == "name collision":
        (tmp / "c.toml").write_text('[regions.A]\nsize = 4\nrole = "input"\n[regions.H]\nsize = 3\nrole = "output"\n'
                                    '[regions.H2]\nsize = 3\nrole = "output"\n[[projections]]\npre = "A"\n'
                                    'post = "H"\n[[projections]]\npre = "A"\npost = "H2"\nname = "A_to_H"\n')
    elif case == "region collision":
        (tmp / "c.toml").write_text('[regions."a b"]\nsize = 2\nrole = "input"\n[regions.a_b]\nsize = 2\n'
                                    'role = "output"\n[[projections]]\npre = "a b"\npost = "a_b"\n')
    elif case == "steps 1e9":
        (tmp / "c.toml").write_text((ROOT / "circuits" / "lrnn.toml").read_text().replace("steps = 5",
                                                                                           "steps = 1000000000"))


def _continuous(tau: str, *, dt: float = 0.01, duration: float = 0.1, nonlinearity: str = "linear") -> str:
    return (f'dynamics = "continuous"\nnonlinearity = "{nonlinearity}"\n{tau}\nduration = {duration}\ndt = {dt}\n'
            '[regions.A]\nsize = 2\nrole = "input"\n[regions.H]\nsize = 3\n[regions.O]\nsize = 2\nrole = "output"\n'
            '[[projections]]\npre = "A"\npost = "H"\n[[projections]]\npre = "H"\npost = "H"\ngain = 0.5\n'
            '[[projections]]\npre = "H"\npost = "O"\n')


def _mp(spec: str, *extra: str) -> list[str]:
    return ["mp", spec, "--budget", "2", "--m", "2", "--trials", "2", "--quiet", *extra]


def _sw(*extra: str) -> list[str]:
    return ["sweep", LFFN, "--budget", "6,12", "--strategy", "random,spread-rows", "--m", "2,4", "--trials", "6",
            "--quiet", *extra]


C = "{tmp}/c.toml"  # the spec _files wrote
# (finding, case, argv, needles of the one-line error): the finding's own command line, refused before computing
RUN = [
    ("5", "p = 1e-9", _mp(C), ["reached by no synapse", "'A->H'"]),
    ("5", "all-zero npz", _mp(C), ["c.npz", "contributes no synapse"]),
    ("5", "tau = inf", _mp(C), ["'tau'", "finite"]),
    ("6", "empty npz", _mp(C), ["c.npz", "contributes no synapse", "'A->O'"]),
    ("6", "header-only csv", _mp(C), ["c.csv", "contributes no synapse"]),
    ("7", "name collision", _mp(C), ["would both be stored as 'A_to_H'"]),
    ("7", "region collision", _mp(C), ["would both be stored as 'a_b'"]),
    ("8", "rk4 dt = 10 tau", _mp(C), ["beyond RK4's stability limit"]),
    ("11", "tol inf", _mp("lffn:4-2", "--tol", "inf"), ["'tol'", "open interval (0, 1)"]),
    ("11", "tol 1", _mp("lffn:4-2", "--tol", "1"), ["'tol'", "open interval (0, 1)"]),
    ("12", "gain 1e300", ["mp", "lrnn:16,2,2,200,1e300", "--budget", "8", "--within", "W", "--m", "2", "--trials",
                          "3", "--quiet"], ["overflow to inf/NaN"]),
    ("13", "complex npz", _mp(C), ["c.npz", "is complex"]),
    ("14", "step 1e-9", _sw("--fractions", "L0->L1,L1->L2", "--step", "1e-9"), ["1,000,000,001 points"]),
    ("14", "dirichlet 1e8", _sw("--fractions", "L0->L1,L1->L2", "--dirichlet", "100000000"),
     ["100,000,000 points"]),
    ("14", "steps 1e9", _mp(C), ["trajectory of one probe", "'steps'"]),
    ("14", "workers 1000", _mp("lffn:4-2", "--workers", "1000"), ["--workers must be an integer from 1 to"]),
    ("14", "duration 1000 dt 1e-7", _mp(C), ["1e+10 RK4 steps", "Raise 'dt'"]),
    ("17", "empty csv", _mp(C), ["c.csv"]),
    ("17", "count inf", _mp(C), ["'count' must be a finite number"]),
    ("17", "count abc", _mp(C), ["'count' must be a finite number"]),
    ("17", "utf-16 csv", _mp(C), ["c.csv"]),
    ("17", "truncated npz", _mp(C), ["c.npz", "not a readable .npz"]),
    ("17", "random-bytes npz", _mp(C), ["c.npz", "not a readable .npz"]),
    ("17", "npy renamed npz", _mp(C), ["c.npz", "not a readable .npz"]),
    ("17", "object npz", _mp(C), ["c.npz"]),
    ("18", "tau list", _mp(C), ["'tau' parameter must be one number"]),
    ("18", "scheduler foo", _sw("--scheduler", "foo"), ["'scheduler'", "scheme://host:port"]),
    ("18", "scheduler http", _sw("--scheduler", "http://x"), ["'scheduler'", "scheme://host:port"]),
    ("19", "extra csv fields", _mp(C), ["c.csv", "row 1 has more fields"]),
]
# findings reproduced by a test of tests/test_cli_attacks.py (damage, kills, injected faults, numbers): that test's name
REFERENCED = {
    "1 non-finite store export / plot / resume":
        "test_a1_nonfinite_trials_store_exports_plots_and_resumes_without_recomputing",
    "1 checksum of what is read back": "test_a1_checksum_hashes_what_is_read_back",
    "2 spikecheck --fig overwrites / default figure / suffix / missing folder":
        "test_a2_spikecheck_figures_follow_the_output_rule_before_simulating",
    "2 spikecheck --fig inside a store": "test_a2_spikecheck_figures_never_go_into_a_store",
    "2 shipped data replaced": "test_a2_shipped_data_is_never_replaced_even_with_overwrite",
    "2 plot checks every figure first": "test_a2_plot_checks_every_figure_before_writing_any",
    "3 mp --overwrite deletes a foreign folder": "test_a3_mp_overwrite_replaces_only_what_the_toolkit_wrote",
    "4 unescaped cleanup glob": "test_a4_cleanup_never_touches_other_stores_files",
    "5 outputs identically zero": "test_5_outputs_identically_zero_are_refused_not_mp_one",
    "6 empty connectivity file": "test_6_an_empty_connectivity_file_is_refused",
    "7 colliding weight file names": "test_7_colliding_weight_file_names_are_refused",
    "8 RK4 beyond its stability limit": "test_8_rk4_beyond_its_stability_limit_is_refused_or_accurate",
    "9 .zmetadata and mp/.zarray deleted": "test_9_a_store_with_damaged_metadata_is_refused_by_readers_and_resume",
    "10 root .zattrs deleted / invalid": "test_10_a_store_without_its_root_attrs_is_refused",
    "10 status chunk deleted": "test_10_a_deleted_status_chunk_is_refused_not_read_as_off_grid",
    "11 meaningless tolerances": "test_11_meaningless_tolerances_are_refused",
    "12 overflowed trials undecided": "test_12_overflowed_trials_are_undecided_never_exact",
    "12 no certificate at gain 1e300": "test_12_a_circuit_overflowing_at_the_init_scale_has_no_certificate",
    "13 localize with another circuit's files": "test_13_localize_refuses_files_written_for_another_circuit",
    "13 simulate NaN probe / inf weight": "test_13_simulate_refuses_non_finite_inputs",
    "13 simulate overflow flagged": "test_13_simulate_flags_rates_that_overflow_from_finite_inputs",
    "13 complex .npz": "test_13_a_complex_npz_connectivity_is_refused_naming_the_file",
    "14 grids counted first": "test_14_four_fraction_keys_at_a_fine_step_are_counted_before_building",
    "14 step / dirichlet under a memory cap": "test_14_sweep_grids_beyond_the_limit_are_refused_up_front",
    "14 discrete steps 1e9": "test_14_a_billion_discrete_steps_are_refused_with_the_memory_estimate",
    "14 continuous 1e10 RK4 steps": "test_14_a_continuous_circuit_of_1e10_rk4_steps_is_refused",
    "14 --workers 1000": "test_14_workers_beyond_four_per_core_are_refused",
    "14 plot --dpi 20000": "test_14_plot_dpi_20000_is_refused_up_front",
    "15 free space checked first": "test_15_too_little_free_space_is_one_line_before_writing",
    "15 disk full while writing": "test_15_a_full_disk_while_writing_is_one_line_and_keeps_the_old_file",
    "16 seed beyond int64": "test_16_a_seed_the_writers_cannot_store_is_refused_before_computing",
    "17 bad connectivity CSVs": "test_17_bad_connectivity_csv_is_one_error",
    "18 list-valued tau": "test_18_a_list_valued_tau_is_one_error",
    "18 plot --dpi 0 / -5": "test_18_plot_dpi_below_one_is_one_line",
    "18 --scheduler foo / http://x": "test_18_a_scheduler_address_dask_cannot_use_is_refused_before_any_work",
    "18 symlinked --out into a missing folder": "test_18_a_symlinked_out_into_a_missing_folder_names_the_link_target",
    "18 sweep --out through a symlink": "test_18_sweep_out_through_a_symlink_to_a_new_store_writes_the_store",
    "18 .zmetadata and mp/.zattrs deleted": "test_9_a_store_with_damaged_metadata_is_refused_by_readers_and_resume",
    "18 invalid JSON in .zattrs": "test_10_a_store_without_its_root_attrs_is_refused",
    "19 truncated .nc": "test_19_a_truncated_nc_names_the_file",
    "19 checksum blames fill-value chunks": "test_19_a_checksum_error_names_the_changed_chunk_not_fill_value_chunks",
    "19 UTF-8 BOM": "test_19_a_utf8_bom_in_a_toml_spec_is_accepted",
    "19 --restarts 1000000 says lower m": "test_19_the_restarts_refusal_says_to_lower_restarts",
    "19 plot --out x.pdf": "test_19_plot_out_pdf_writes_pdf_files",
    "19 advice pass --overwrite then refused": "test_19_sweep_never_advises_an_overwrite_it_would_refuse",
    "19 extra CSV fields": "test_19_extra_csv_fields_are_one_error",
    "19 SIGKILL leftovers .X.nc.tmp-PID": "test_19_temporary_files_of_dead_writers_are_removed",
    "19 SIGKILL leftovers of figures": "test_19_temporary_figures_of_dead_writers_are_removed",
    "19 leaked semaphore warnings": "test_19_killing_a_two_worker_sweep_prints_no_leaked_semaphore_warning",
    "19 missing .zmetadata": "test_9_a_store_with_damaged_metadata_is_refused_by_readers_and_resume",
    "20 one divergent restart": "test_20_one_divergent_restart_does_not_lose_the_call",
    "Must show: the property test": "test_property_no_numerical_fault_escapes_fit_and_each_maps_to_its_status",
}

# attacks that held (one command line each: refused in one line before computing, nothing written)
HELD_RUN = [
    ("mp --budget -1", _mp("lffn:4-2", "--budget", "-1"), ["budget"]),
    ("mp --m 0", _mp("lffn:4-2", "--m", "0"), ["'m'"]),
    ("mp --trials 0", _mp("lffn:4-2", "--trials", "0"), ["'trials'"]),
    ("mp --within Nope", _mp("lffn:4-2", "--within", "Nope"), ["'Nope'"]),
    ("mp --fractions W1=x", _mp("lffn:4-2", "--fractions", "W1=x"), ["W1"]),
    ("mp --workers -2", _mp("lffn:4-2", "--workers", "-2"), ["--workers must be >= 1"]),
    ("mp --tol 0", _mp("lffn:4-2", "--tol", "0"), ["'tol'"]),
    ("mp --tol nan", _mp("lffn:4-2", "--tol", "nan"), ["'tol'"]),
    ("mp missing spec", _mp("{tmp}/missing.toml"), ["missing.toml"]),
    ("mp unknown builtin", _mp("lffn:x"), ["lffn"]),
    ("mp --out .txt", _mp("lffn:4-2", "--out", "{tmp}/mp.txt"), ["mp.txt", "suffix decides the format"]),
    ("mp --out no suffix", _mp("lffn:4-2", "--out", "{tmp}/mp"), ["suffix decides the format"]),
    ("mp --out .NC", _mp("lffn:4-2", "--out", "{tmp}/mp.NC"), ["suffix decides the format"]),
    ("mp --out missing folder", _mp("lffn:4-2", "--out", "{tmp}/missing/mp.nc"), ["does not exist"]),
    ("sweep --out .nc", ["sweep", "lffn:4-2", "--budget", "4", "--m", "2", "--trials", "2", "--quiet", "--out",
                         "{tmp}/s.nc"], ["must be .zarr"]),
    ("sweep --workers 0", ["sweep", "lffn:4-2", "--budget", "4", "--m", "2", "--trials", "2", "--quiet", "--workers",
                           "0", "--out", "{tmp}/s.zarr"], ["--workers must be >= 1"]),
    ("sweep --step 0.3", _sw("--fractions", "L0->L1,L1->L2", "--step", "0.3", "--out", "{tmp}/s.zarr"),
     ["'step'", "must divide 1"]),
    ("sweep --scheduler and --workers", _sw("--scheduler", "tcp://h:1", "--workers", "2", "--out", "{tmp}/s.zarr"),
     ["not both"]),
    ("export missing store", ["export", "{tmp}/missing.zarr", "{tmp}/e.nc"], ["missing.zarr"]),
    ("export missing file", ["export", "{tmp}/missing.nc", "{tmp}/e.nc"], ["missing.nc"]),
    ("plot missing store", ["plot", "{tmp}/missing.zarr", "--out", "{tmp}/f"], ["missing.zarr"]),
    ("spikecheck --fig .txt", ["spikecheck", "lffn:4-2", "--budget", "4", "--m", "2", "--duration", "0.3",
                               "--repeats", "2", "--fig", "{tmp}/f.txt"], ["suffix decides the format"]),
]
# attacks that held, reproduced by the safety tests of other files: file -> test names
HELD_REFERENCED = {
    "test_sweeps_safety.py": [
        "test_a_deleted_chunk_is_refused_by_readers_and_recomputed_by_resume",
        "test_an_undecodable_chunk_is_named_in_one_line",
        "test_a_point_being_recomputed_is_pending_before_its_values_change",
        "test_a_kill_during_the_template_or_the_first_point_leaves_a_resumable_store",
        "test_export_during_a_write_is_a_consistent_snapshot",
        "test_a_second_writer_through_a_symlink_is_refused",
        "test_a_finished_sweep_leaves_no_lock_file_and_overwrite_starts_over",
        "test_a_changed_circuit_file_names_the_fields",
        "test_workers_die_with_their_parent",
        "test_mp_never_overwrites_without_overwrite",
        "test_mp_overwrite_replaces_a_file",
        "test_single_results_never_touch_a_sweep_store",
        "test_export_rules",
        "test_suffix_and_folder_rules",
        "test_a_sweep_never_replaces_a_non_store_without_overwrite",
        "test_mp_checks_it_can_write_before_computing",
        "test_quick_analysis_runs_never_write_into_data",
        "test_a_binary_toml_names_the_file",
        "test_an_unreachable_scheduler_leaves_nothing_behind",
        "test_requests_beyond_the_machine_are_refused_in_one_line",
        "test_extending_a_finished_sweep_computes_only_the_new_points",
        "test_plot_never_overwrites_figures_without_overwrite",
    ],
    "test_cli_attacks.py": [
        "test_held_mp_refuses_bad_out_before_computing",
        "test_held_single_results_never_write_into_a_store",
        "test_held_a_store_never_mixes_configurations",
        "test_held_resume_of_a_finished_store_computes_nothing",
        "test_held_a_second_writer_is_refused",
        "test_held_sweep_never_replaces_a_non_store",
        "test_held_readers_name_a_missing_path",
        "test_held_bad_connectivity_counts_are_refused",
    ],
}


# refused by match_probability's own checks (before any draw, but inside the call the no_compute fixture blocks)
INSIDE = {"gain 1e300", "mp --m 0", "mp --trials 0"}


def _argv(argv: list[str], tmp: Path) -> list[str]:
    return [a.replace("{tmp}", str(tmp)) for a in argv]


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    return err[0]


@pytest.mark.parametrize(("finding", "case", "argv", "needles"), RUN, ids=[f"{f}: {c}" for f, c, _, _ in RUN])
def test_finding_is_refused_in_one_line(tmp_path, capsys, request, finding, case, argv, needles):
    if case not in INSIDE:
        request.getfixturevalue("no_compute")
    _files(tmp_path, case)
    before = sorted(p.name for p in tmp_path.iterdir())
    out = tmp_path / "out.zarr" if argv[0] == "sweep" else tmp_path / "out.nc"
    args = _argv(argv, tmp_path)
    if "--out" not in args:
        args += ["--out", str(out)]
    try:
        code = cli.main(args)
    except SystemExit as exc:  # argparse's own refusals
        code = exc.code
    assert code == 2
    line = _one_line(capsys)
    assert all(n in line for n in needles), (needles, line)
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written


@pytest.mark.parametrize(("case", "argv", "needles"), HELD_RUN, ids=[c for c, _, _ in HELD_RUN])
def test_held_attack_is_refused_in_one_line(tmp_path, capsys, request, case, argv, needles):
    if case not in INSIDE:
        request.getfixturevalue("no_compute")
    try:
        code = cli.main(_argv(argv, tmp_path))
    except SystemExit as exc:
        code = exc.code
    assert code == 2
    line = _one_line(capsys)
    assert all(n in line for n in needles), (needles, line)
    assert not list(tmp_path.iterdir())


def _tests_in(name: str) -> set[str]:
    tree = ast.parse((Path(__file__).parent / name).read_text())
    return {n.name for n in tree.body if isinstance(n, ast.FunctionDef) and n.name.startswith("test_")}


def test_every_finding_has_a_test():
    tests = _tests_in("test_cli_attacks.py")
    missing = {k: v for k, v in REFERENCED.items() if v not in tests}
    assert not missing, missing
    numbers = {k.split()[0] for k in REFERENCED} | {f for f, *_ in RUN}
    assert {str(n) for n in range(1, 21)} <= numbers, sorted(numbers)
    for name, expected in HELD_REFERENCED.items():
        gone = sorted(set(expected) - _tests_in(name))
        assert not gone, (name, gone)
    assert len(HELD_RUN) + sum(map(len, HELD_REFERENCED.values())) >= 40
