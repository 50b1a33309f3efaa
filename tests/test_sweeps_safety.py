"""Results are never lost or silently wrong (issue 12): damaged stores, kills mid-write, readers during a write,
symlinked writers, orphan worker processes, overwrite rules, guards.

Everything runs on real Zarr / netCDF files and, where a process boundary matters (kills, locks, orphans, readers
racing a writer), in real subprocesses; every subprocess is waited for with a bounded timeout and killed in a
``finally``. The independent reference of a store's values is always the same sweep computed in memory.
"""
from __future__ import annotations

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
from neurosubset._schema import DONE, PENDING
from neurosubset.circuit import Circuit, Projection, Region
from neurosubset.sweeps import export, open_sweep

ROOT = Path(__file__).resolve().parents[1]
WAIT_S = 120  # bound on any subprocess of this module (they take seconds)


def two_inputs() -> Circuit:
    """y = W_A x_A + W_B x_B (affine: exact least squares, milliseconds per point)."""
    return Circuit((Region("A", 4, "input"), Region("B", 3, "input"), Region("O", 3, "output")),
                   (Projection("A", "O"), Projection("B", "O")), name="two_inputs")


KW = dict(budget=[6, 9], fractions=ns.simplex_grid(["A->O", "B->O"], step=0.5), strategy="spread-rows", m=[2, 3],
          trials=4, seed=2)
TWO_INPUTS = ("from neurosubset.circuit import Circuit, Projection, Region\n"
              "two = Circuit((Region('A', 4, 'input'), Region('B', 3, 'input'), Region('O', 3, 'output')),\n"
              "              (Projection('A', 'O'), Projection('B', 'O')), name='two_inputs')\n")
KW_TEXT = ("dict(budget=[6, 9], fractions=ns.simplex_grid(['A->O', 'B->O'], step=0.5), strategy='spread-rows', "
           "m=[2, 3], trials=4, seed=2)")


def _python(code: str, *args: str, **popen) -> subprocess.Popen:
    """A Python subprocess running ``code`` (dedented) after TWO_INPUTS (which defines ``two``)."""
    return subprocess.Popen([sys.executable, "-c", TWO_INPUTS + textwrap.dedent(code), *args], cwd=ROOT, **popen)


def _finish(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=WAIT_S)


@pytest.fixture(scope="module")
def fresh() -> xr.Dataset:
    return ns.sweep(two_inputs(), **KW)


def _chunk(store: Path, name: str, index: tuple[int, ...]) -> Path:
    import zarr

    ndim = zarr.open_array(str(store / name), mode="r").ndim
    return store / name / ".".join(map(str, (*index, *[0] * (ndim - len(index)))))


def _done_indices(ds: xr.Dataset) -> list[tuple[int, ...]]:
    return [tuple(int(i) for i in idx) for idx in np.argwhere(ds["status"].values == DONE)]


# ------------------------------------------------------------------------------------------------ damaged stores
@pytest.mark.slow
def test_a_deleted_chunk_is_refused_by_readers_and_recomputed_by_resume(tmp_path, fresh):
    store = tmp_path / "s.zarr"
    ns.sweep(two_inputs(), **KW, store=store)
    index = _done_indices(fresh)[1]
    _chunk(store, "residual", index).unlink()  # the point's status still says done
    stamps = {p.name: p.stat().st_mtime_ns for p in (store / "residual").iterdir()}
    with pytest.raises(ns.SweepStoreError, match=r"damaged.*point \(budget=6.*do not match its checksum.*"
                                                 r"absent chunk files: .*residual/"):
        open_sweep(store)
    with pytest.raises(ns.SweepStoreError, match="damaged"):
        export(store, tmp_path / "s.nc")
    assert not (tmp_path / "s.nc").exists()
    with pytest.warns(UserWarning, match=r"1 done point\(s\).*failed verification and are recomputed"):
        resumed = ns.sweep(two_inputs(), **KW, store=store)
    xr.testing.assert_identical(resumed, fresh)
    xr.testing.assert_identical(open_sweep(store), fresh)
    changed = {p.name for p in (store / "residual").iterdir() if p.stat().st_mtime_ns != stamps.get(p.name)}
    assert changed == {_chunk(store, "residual", index).name}, changed  # only the damaged point was recomputed


@pytest.mark.slow
def test_an_undecodable_chunk_is_named_in_one_line(tmp_path, fresh):
    store = tmp_path / "s.zarr"
    ns.sweep(two_inputs(), **KW, store=store)
    index = _done_indices(fresh)[0]
    _chunk(store, "mp", index).write_bytes(b"not a blosc chunk")
    proc = subprocess.run([sys.executable, "-m", "neurosubset.cli", "export", str(store), str(tmp_path / "s.nc")],
                          capture_output=True, text=True, cwd=ROOT, timeout=WAIT_S)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "'mp'" in lines[0] and "cannot be decoded" in lines[0] and "budget=6" in lines[0], \
        proc.stderr
    with pytest.warns(UserWarning, match="'mp'.*cannot be decoded"):
        resumed = ns.sweep(two_inputs(), **KW, store=store)
    xr.testing.assert_identical(resumed, fresh)


@pytest.mark.slow
def test_a_point_being_recomputed_is_pending_before_its_values_change(tmp_path, fresh):
    # a resume killed while it rewrites a damaged point must not leave that point marked done with mixed values
    store = tmp_path / "s.zarr"
    ns.sweep(two_inputs(), **KW, store=store)
    index = _done_indices(fresh)[2]
    _chunk(store, "residual", index).unlink()
    proc = _python(f"""
        import os, signal, sys, warnings
        import neurosubset as ns
        from neurosubset.sweeps import store as st
        real = st.ZarrTarget._array
        def killing(self, name):
            if name == "residual":
                os.kill(os.getpid(), signal.SIGKILL)   # after the status went back to pending, before any value
            return real(self, name)
        st.ZarrTarget._array = killing
        warnings.simplefilter("ignore")
        ns.sweep(two, **{KW_TEXT}, store=sys.argv[1])
    """, str(store))
    try:
        proc.wait(timeout=WAIT_S)
    finally:
        _finish(proc)
    assert proc.returncode == -signal.SIGKILL
    assert int(open_sweep(store)["status"].values[index]) == PENDING  # a reader sees it as not done
    with _no_damage_warning():  # it was pending, not damaged: recomputed without a damage warning
        resumed = ns.sweep(two_inputs(), **KW, store=store)
    xr.testing.assert_identical(resumed, fresh)


class _no_damage_warning:
    def __enter__(self):
        import warnings

        self._ctx = warnings.catch_warnings(record=True)
        self.caught = self._ctx.__enter__()
        warnings.simplefilter("always")
        return self

    def __exit__(self, *exc):
        self._ctx.__exit__(*exc)
        assert not [w for w in self.caught if "failed verification" in str(w.message)], \
            [str(w.message) for w in self.caught]
        return False


# ------------------------------------------------------------------------------------------------ kills mid-write
@pytest.mark.parametrize("where", ["template", "first point"])
@pytest.mark.slow
def test_a_kill_during_the_template_or_the_first_point_leaves_a_resumable_store(tmp_path, fresh, where):
    store = tmp_path / "s.zarr"
    trap = {"template": """
        real = os.replace
        def killing(src, dst, *a, **k):
            if str(dst) == sys.argv[1]:
                os.kill(os.getpid(), signal.SIGKILL)   # the template is written but not renamed into place
            return real(src, dst, *a, **k)
        st.os.replace = killing
    """, "first point": """
        real = st.ZarrTarget._array
        seen = []
        def killing(self, name):
            seen.append(name)
            if len(seen) == 4:   # the first point is half written (status, its checksum not yet)
                os.kill(os.getpid(), signal.SIGKILL)
            return real(self, name)
        st.ZarrTarget._array = killing
    """}[where]
    proc = _python(textwrap.dedent("""
        import os, signal, sys
        import neurosubset as ns
        from neurosubset.sweeps import store as st
    """) + textwrap.dedent(trap) + f"ns.sweep(two, **{KW_TEXT}, store=sys.argv[1])\n", str(store))
    try:
        proc.wait(timeout=WAIT_S)
    finally:
        _finish(proc)
    assert proc.returncode == -signal.SIGKILL
    assert store.exists() == (where == "first point")
    resumed = ns.sweep(two_inputs(), **KW, store=store)
    xr.testing.assert_identical(resumed, fresh)
    assert not list(tmp_path.glob("s.zarr.tmp-*")) and not (tmp_path / "s.zarr.lock").exists()


# ------------------------------------------------------------------------------------------------ readers, writers
WRITER = """
    import sys, time
    import neurosubset as ns
    from neurosubset.sweeps import store as st
    real = st.ZarrTarget.write
    def slow(self, index, values):   # the point's values land; the reader may look before its status does
        real(self, index, values)
        time.sleep(0.002)
    st.ZarrTarget.write = slow
    ns.sweep(two, budget=list(range(6, 22)), strategy=["spread-rows"], m=[1, 2, 3], trials=3, seed=4,
             certificate=False, store=sys.argv[1])
"""


@pytest.mark.slow
def test_export_during_a_write_is_a_consistent_snapshot(tmp_path):
    store = tmp_path / "s.zarr"
    proc = _python(WRITER, str(store))
    snapshots, done_seen = 0, []
    try:
        deadline = time.monotonic() + WAIT_S
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                ds = open_sweep(store)
            except (FileNotFoundError, ns.SweepStoreError) as exc:
                assert "damaged" not in str(exc), exc
                continue
            done = ds["status"].values == DONE
            # every point a snapshot calls done holds its values; every other point holds none
            assert np.isfinite(ds["mp"].values[done]).all(), "a done point without values"
            assert np.isfinite(ds["residual"].values[done]).all(), "a done point without residuals"
            assert np.isnan(ds["mp"].values[~done]).all(), "values of a point that is not done"
            snapshots += 1
            done_seen.append(int(done.sum()))
    finally:
        _finish(proc)
    assert proc.returncode == 0
    assert snapshots >= 3 and len(set(done_seen)) >= 2, (snapshots, done_seen)  # reads really raced the writer
    final = open_sweep(store)
    assert (final["status"].values == DONE).all()


@pytest.mark.slow
def test_a_second_writer_through_a_symlink_is_refused(tmp_path):
    store = tmp_path / "real.zarr"
    ns.sweep(two_inputs(), **KW, store=store)
    alias = tmp_path / "alias.zarr"
    alias.symlink_to(store, target_is_directory=True)
    holder = _python("""
        import sys, time
        from pathlib import Path
        from neurosubset.sweeps.store import store_lock
        with store_lock(Path(sys.argv[1])):
            print("locked", flush=True)
            time.sleep(60)
    """, str(store), stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(ns.SweepStoreError, match="Another process is writing"):
            ns.sweep(two_inputs(), **KW, store=alias)
        with pytest.raises(ns.SweepStoreError, match="Another process is writing"):
            ns.sweep(two_inputs(), **KW, store=alias, overwrite=True)  # --overwrite takes the lock first
    finally:
        _finish(holder)
    xr.testing.assert_identical(open_sweep(alias), open_sweep(store))


@pytest.mark.slow
def test_a_finished_sweep_leaves_no_lock_file_and_overwrite_starts_over(tmp_path, fresh):
    store = tmp_path / "s.zarr"
    ns.sweep(two_inputs(), **KW, store=store)
    assert not (tmp_path / "s.zarr.lock").exists()
    # fewer trials would drop stored ones, and more trials do not excuse another change: both refused, store kept
    with pytest.raises(ns.SweepStoreError, match=r"differs in \['trials'\]"):
        ns.sweep(two_inputs(), **{**KW, "trials": 3}, store=store)
    with pytest.raises(ns.SweepStoreError, match=r"differs in \[.*'seed'"):
        ns.sweep(two_inputs(), **{**KW, "trials": 5, "seed": 3}, store=store)
    assert not (tmp_path / "s.zarr.lock").exists()
    xr.testing.assert_identical(open_sweep(store), fresh)
    # more trials alone extend the finished sweep (issue 29): the stored trials kept, no lock left
    extended = ns.sweep(two_inputs(), **{**KW, "trials": 5}, store=store)
    assert extended.sizes["trial"] == 5 and open_sweep(store).sizes["trial"] == 5
    assert not (tmp_path / "s.zarr.lock").exists()
    kept = [n for n in fresh.data_vars if "trial" in fresh[n].dims]
    assert kept, list(fresh.data_vars)
    for name in kept:  # the per-trial values of the stored trials, unchanged (the attrs name 5 trials now)
        xr.testing.assert_identical(extended[name].isel(trial=slice(0, 4)), fresh[name])
    # overwrite starts over, fewer trials included
    other = ns.sweep(two_inputs(), **{**KW, "trials": 3}, store=store, overwrite=True)
    assert other.sizes["trial"] == 3 and open_sweep(store).sizes["trial"] == 3


@pytest.mark.slow
def test_a_changed_circuit_file_names_the_fields(tmp_path):
    store = tmp_path / "s.zarr"
    ns.sweep(ns.feedforward([7, 3]), budget=[6], m=[2], trials=2, store=store)
    with pytest.raises(ns.SweepStoreError, match=r"regions\.L1\.size: stored 3, requested 4"):
        ns.sweep(ns.feedforward([7, 4]), budget=[6], m=[2], trials=2, store=store)


# ------------------------------------------------------------------------------------------------ orphans
def _children() -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            out.setdefault(ppid, []).append(int(entry.name))
    return out


def _descendants(pid: int) -> list[int]:
    children, todo, out = _children(), [pid], []
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


SLOW_SWEEP = """
    import sys, neurosubset as ns
    ff = ns.feedforward([6, 4, 3])
    ns.sweep(ff, budget=[10], fractions=ns.simplex_grid(["W1", "W2"], step=0.25),
             strategy=["spread-rows", "concentrated-rows"], m=[2, 3], trials=40, seed=1,
             solver=ns.Auto(max_rounds=3, iterations=150), store=sys.argv[1], workers=2)
"""


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process trees from /proc (Linux)")
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT])
@pytest.mark.slow
def test_workers_die_with_their_parent(tmp_path, sig):
    store = tmp_path / "s.zarr"
    proc = _python(SLOW_SWEEP, str(store), stderr=subprocess.DEVNULL)
    family: list[int] = []
    try:
        deadline = time.monotonic() + WAIT_S
        while len(family) < 4 and proc.poll() is None and time.monotonic() < deadline:  # a hung-subprocess guard
            family = _descendants(proc.pid)  # resource tracker, forkserver, two workers
            time.sleep(0.05)
        assert proc.poll() is None and len(family) >= 4, "the sweep ended before its workers started"
        time.sleep(0.5)
        family = _descendants(proc.pid)
        os.kill(proc.pid, sig)
        proc.wait(timeout=30)  # Ctrl-C (SIGINT) stops the sweep promptly too
        deadline = time.monotonic() + 10
        while any(_alive(p) for p in family) and time.monotonic() < deadline:
            time.sleep(0.1)
        left = [p for p in family if _alive(p)]
        assert not left, f"processes outlived their sweep (signal {sig.name}): {left}"
    finally:
        _finish(proc)
        for pid in family:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
    if sig == signal.SIGINT and store.exists():  # finished points are kept and the store resumes
        assert open_sweep(store)["status"].values.max() <= DONE


# ------------------------------------------------------------------------------------------------ overwrite rules
def _mp(out: Path, *extra: str) -> list[str]:
    return ["mp", "lffn:4-2", "--budget", "4", "--m", "2", "--trials", "2", "--quiet", "--out", str(out), *extra]


def _one_line_error(capsys, *needles: str) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and all(n in lines[0] for n in needles), lines
    return lines[0]


@pytest.fixture
def no_compute(monkeypatch):
    """match_probability must not run: the output is refused first. (Narrower than conftest's fixture: these tests
    build their sweep stores with the fixture active, so sweep points must still run.)"""
    import neurosubset.benchmark

    def refuse(*args, **kwargs):
        raise AssertionError("computed before checking the output")

    monkeypatch.setattr(neurosubset.benchmark, "match_probability", refuse)


def test_mp_never_overwrites_without_overwrite(tmp_path, capsys, no_compute):
    text = tmp_path / "notes.nc"
    text.write_text("my notes")
    assert cli.main(_mp(text)) == 2
    _one_line_error(capsys, "already exists", "--overwrite")
    assert text.read_text() == "my notes"
    zarr_dir = tmp_path / "old.zarr"
    zarr_dir.mkdir()
    assert cli.main(_mp(zarr_dir)) == 2
    _one_line_error(capsys, "already exists")


@pytest.mark.slow
def test_mp_overwrite_replaces_a_file(tmp_path, capsys):
    out = tmp_path / "mp.nc"
    out.write_text("old")
    assert cli.main(_mp(out, "--overwrite")) == 0
    with xr.open_dataset(out, engine="h5netcdf") as ds:
        assert ds.sizes["trial"] == 2
    zout = tmp_path / "mp.zarr"
    assert cli.main(_mp(zout)) == 0 and cli.main(_mp(zout, "--overwrite")) == 0
    assert open_sweep(zout).sizes["trial"] == 2


@pytest.mark.slow
def test_single_results_never_touch_a_sweep_store(tmp_path, capsys, no_compute):
    store = tmp_path / "s.zarr"
    ns.sweep(two_inputs(), **KW, store=store)
    before = open_sweep(store)
    for args in (_mp(store), _mp(store, "--overwrite"), _mp(store / "mp" / "x.nc", "--overwrite")):
        assert cli.main(args) == 2
        _one_line_error(capsys, "sweep store")
    assert cli.main(_mp(store / "mp" / "x.nc")) == 2  # s.zarr/mp is the folder of the store's 'mp' variable
    _one_line_error(capsys, "inside the sweep store")
    assert cli.main(["spikecheck", "lffn:4-2", "--budget", "4", "--m", "2", "--out", str(store), "--overwrite"]) == 2
    _one_line_error(capsys, "sweep store")
    assert cli.main(["export", str(store), str(store / "mp" / "s.nc")]) == 2
    _one_line_error(capsys, "inside the sweep store")
    xr.testing.assert_identical(open_sweep(store), before)


@pytest.mark.slow
def test_export_rules(tmp_path, capsys, fresh):
    store = tmp_path / "s.zarr"
    ns.sweep(two_inputs(), **KW, store=store)
    out = tmp_path / "s.nc"
    out.write_text("keep me")
    assert cli.main(["export", str(store), str(out)]) == 2
    _one_line_error(capsys, "already exists")
    assert out.read_text() == "keep me"
    with pytest.raises(ns.NeurosubsetError, match="already exists"):  # OutputError
        export(store, out)
    assert cli.main(["export", str(store), str(out), "--overwrite"]) == 0
    xr.testing.assert_identical(open_sweep(out), fresh)
    assert cli.main(["export", str(store), str(tmp_path / "s.zarr2")]) == 2
    _one_line_error(capsys, "suffix decides the format", ".nc")
    assert cli.main(["export", str(store), str(tmp_path / "missing" / "s.nc")]) == 2
    _one_line_error(capsys, "does not exist")
    assert not (tmp_path / "missing").exists()


def test_suffix_and_folder_rules(tmp_path, capsys, no_compute):
    assert cli.main(_mp(tmp_path / "mp.txt")) == 2
    _one_line_error(capsys, "suffix decides the format")
    assert cli.main(_mp(tmp_path / "missing" / "mp.nc")) == 2
    _one_line_error(capsys, "does not exist")
    assert not (tmp_path / "missing").exists()
    sweep = ["sweep", "lffn:4-2", "--budget", "4", "--m", "2", "--trials", "2", "--quiet", "--out"]
    assert cli.main([*sweep, str(tmp_path / "s.nc")]) == 2
    _one_line_error(capsys, "must be .zarr")
    assert cli.main([*sweep, str(tmp_path / "missing" / "s.zarr")]) == 2
    _one_line_error(capsys, "does not exist")
    assert not (tmp_path / "missing").exists()
    assert cli.main([*sweep, str(tmp_path / "s.zarr"), "--workers", "0"]) == 2
    _one_line_error(capsys, "--workers must be >= 1")
    with pytest.raises(ns.ParameterError, match="'workers'"):
        ns.sweep(two_inputs(), budget=6, m=2, trials=2, workers=0)


def test_a_sweep_never_replaces_a_non_store_without_overwrite(tmp_path):
    text = tmp_path / "s.zarr"
    text.write_text("not a store")
    with pytest.raises(ns.SweepStoreError, match="not a readable sweep store"):
        ns.sweep(two_inputs(), budget=[6], m=[2], trials=2, store=text)
    assert text.read_text() == "not a store"
    folder = tmp_path / "f.zarr"
    folder.mkdir()
    (folder / "mine.txt").write_text("x")
    with pytest.raises(ns.SweepStoreError, match="not a sweep store"):
        ns.sweep(two_inputs(), budget=[6], m=[2], trials=2, store=folder, overwrite=True)
    assert (folder / "mine.txt").exists()


def test_mp_checks_it_can_write_before_computing(tmp_path, capsys, no_compute):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        if os.access(folder, os.W_OK):  # root ignores permission bits: sysfs refuses new files even to root
            folder = Path("/sys/kernel")
        assert cli.main(_mp(folder / "mp.nc")) == 2
        _one_line_error(capsys, "Permission denied")
    finally:
        (tmp_path / "ro").chmod(0o700)


@pytest.mark.slow
def test_quick_analysis_runs_never_write_into_data(tmp_path):
    shipped = ROOT / "data" / "lffn_allocations.nc"
    stamp = shipped.stat().st_mtime_ns if shipped.exists() else None
    proc = subprocess.run([sys.executable, str(ROOT / "analysis" / "lffn_allocations.py"), "--quick", "--out",
                           str(ROOT / "data")], capture_output=True, text=True, cwd=ROOT, timeout=WAIT_S)
    assert proc.returncode == 2 and "never writes into" in proc.stderr, proc.stderr
    code = ("import sys; sys.path.insert(0, 'analysis'); import common; "
            "print(common.parse_args('q', ['--quick']).out, common.parse_args('d', []).out)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=WAIT_S)
    quick, default = proc.stdout.split()[-2:]
    assert Path(default) == ROOT / "data" and Path(quick).resolve() != (ROOT / "data").resolve(), proc.stdout
    Path(quick).rmdir()
    assert (shipped.stat().st_mtime_ns if shipped.exists() else None) == stamp


# ------------------------------------------------------------------------------------------------ messages
def test_a_binary_toml_names_the_file(tmp_path, capsys):
    bad = tmp_path / "binary.toml"
    bad.write_bytes(b"\xff\xfe\x00\x01 binary")
    assert cli.main(["mp", str(bad), "--budget", "1", "--m", "1"]) == 2
    _one_line_error(capsys, str(bad), "not UTF-8")


@pytest.mark.parametrize(("spec", "needle"), [
    ("lrnn:6,1,1", "takes 4 or 5 comma-separated fields. Got 3 (T missing)"),
    ("lrnn:6,x,1,3", "field N_IN must be an integer. Got 'x'"),
    ("lrnn:6,1,1,3,big", "field GAIN must be a number. Got 'big'"),
    ("lffn:8-x-3", "field size 2"),
])
def test_builtin_strings_name_the_field(spec, needle, capsys):
    assert cli.main(["mp", spec, "--budget", "1", "--m", "1"]) == 2
    _one_line_error(capsys, needle)


def test_an_unreachable_scheduler_leaves_nothing_behind(tmp_path, monkeypatch):
    import distributed

    class Unreachable(distributed.Client):
        def __init__(self, *args, **kwargs):  # what Client raises when no scheduler answers within its timeout
            raise OSError("Timed out trying to connect to tcp://127.0.0.1:9 after 20 s")

    monkeypatch.setattr(distributed, "Client", Unreachable)
    store = tmp_path / "s.zarr"
    with pytest.raises(ns.ParameterError, match="Cannot reach the dask scheduler"):
        ns.sweep(two_inputs(), **KW, store=store, scheduler="tcp://127.0.0.1:9")
    assert sorted(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------------ memory guard
MEMORY_SCRIPT = """
    import json
    import neurosubset as ns
    from neurosubset._memory import estimate_fit
    c = ns.feedforward([50, 20])
    a = ns.allocate(c, 400, strategy="spread-rows", seed=0)
    def status(key):  # kB -> bytes, from the kernel's accounting of this process
        line = next(l for l in open("/proc/self/status") if l.startswith(key + ":"))
        return int(line.split()[1]) * 1024
    ns.fit(c, a, m=2, trials=2)  # libraries loaded and first-call costs paid before any baseline
    out = []
    for m in (40, 80, 160):
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset the peak resident set size (VmHWM) to the current one
        base = status("VmRSS")
        ns.fit(c, a, m=m, trials=20)
        out.append((m, estimate_fit(c, a.size, m, 20)["total"], status("VmHWM") - base))
    print(json.dumps(out))
"""


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="resets the peak RSS through /proc (Linux)")
@pytest.mark.slow
def test_the_memory_estimate_is_within_2x_of_the_measured_peak_at_three_sizes():
    # independent reference: the kernel's peak resident set size (VmHWM, reset before each fit) above the RSS before
    import json

    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(MEMORY_SCRIPT)], capture_output=True, text=True,
                          cwd=ROOT, timeout=WAIT_S)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout.strip().splitlines()[-1])
    for m, estimate, measured in rows:
        assert 0.5 <= estimate / measured <= 2.0, f"m={m}: estimate {estimate / 1e6:.0f} MB, " \
                                                  f"measured peak {measured / 1e6:.0f} MB"
    assert rows[-1][2] > 3 * rows[0][2], rows  # the sizes really differ (the fits' arrays dominate the peak)


def _capped(*args: str) -> subprocess.CompletedProcess:
    """The CLI in a subprocess whose address space is capped at 6 GiB: a request that is not refused up front fails
    there with a MemoryError instead of taking the machine's memory (what it did before the guard)."""
    import resource

    cap = 6 * 2 ** 30
    return subprocess.run([sys.executable, "-m", "neurosubset.cli", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=WAIT_S, preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (cap, cap)))


@pytest.mark.slow
def test_requests_beyond_the_machine_are_refused_in_one_line(tmp_path):
    proc = _capped("mp", "lffn:8-6-3", "--budget", "9", "--m", "100000000", "--quiet")
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-2000:]
    assert all(n in lines[0] for n in ("needs about", "GB of memory", "available on this machine",
                                        "with one trial at a time", "Lower 'restarts'",
                                        "'m' (of 'trials' or 'm'")), lines
    proc = _capped("sweep", "lffn:8-6-3", "--budget", "9", "--m", "10000000", "--quiet", "--out",
                   str(tmp_path / "never.zarr"), "--workers", "2")
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "sweep point" in lines[0], proc.stderr[-2000:]
    assert "Lower 'restarts'" in lines[0] and "'m' (of 'trials' or 'm'" in lines[0], lines
    assert not list(tmp_path.iterdir())
    with pytest.raises(ns.CircuitSpecError, match="needs about .* Lower the region sizes"):
        Circuit((Region("A", 4, "input"), Region("H", 10 ** 6), Region("O", 3, "output")),
                (Projection("A", "H"), Projection("H", "H"), Projection("H", "O")), dynamics="steady")
    # refused before anything large was allocated: a 10^6 x 10^6 structure would be a MemoryError, not this refusal


def test_a_circuit_without_an_input_output_path_is_refused():
    with pytest.raises(ns.CircuitSpecError, match="Output region 'O' has no path from any input region"):
        Circuit((Region("A", 4, "input"), Region("H", 3), Region("O", 3, "output")),
                (Projection("H", "H"), Projection("H", "O")), dynamics="discrete", steps=2)


def test_outputs_that_overflow_are_flagged_per_trial_and_refused_with_a_certificate(capsys):
    # gain 30 over 400 steps: |h_T| ~ 30^400 overflows float64 (independent of the solver)
    rnn = ns.linear_rnn(6, 2, 2, steps=400, gain=30.0)
    alloc = ns.allocate(rnn, 12, within=["W"], strategy="spread-rows", seed=0)
    with pytest.warns(ns.NonFiniteOutputWarning, match="overflowed"):
        ds = ns.match_probability(rnn, alloc, m=2, trials=3, certificate=False,
                                  solver=ns.LevenbergMarquardt(max_rounds=1, iterations=5))
    from neurosubset._schema import NON_FINITE

    assert (ds["fit_status"].values == NON_FINITE).all(), ds["fit_status"].values
    assert cli.main(["mp", "lrnn:6,2,2,400,30", "--budget", "12", "--within", "W", "--m", "2", "--trials", "3",
                     "--solver", "lm", "--max-rounds", "1", "--iterations", "5", "--quiet"]) == 2
    _one_line_error(capsys, "overflow to inf/NaN", "no certificate exists")


# ------------------------------------------------------------------------------------------------ extending a sweep
@pytest.mark.slow
def test_extending_a_finished_sweep_computes_only_the_new_points(tmp_path, monkeypatch):
    from neurosubset.sweeps import core

    store = tmp_path / "s.zarr"
    small = dict(KW, budget=[6], m=[2])
    ns.sweep(two_inputs(), **small, store=store)
    computed = []
    real = core.run_point

    def counting(task):
        computed.append(task.index)
        return real(task)

    monkeypatch.setattr(core, "run_point", counting)
    wider = dict(KW, budget=[6, 9], m=[2, 3], strategy=["spread-rows", "random"])
    extended = ns.sweep(two_inputs(), **wider, store=store)
    monkeypatch.setattr(core, "run_point", real)
    fresh = ns.sweep(two_inputs(), **wider)  # the independent reference: the whole grid at once
    xr.testing.assert_identical(extended, fresh)
    xr.testing.assert_identical(open_sweep(store), fresh)
    old_points = int((ns.sweep(two_inputs(), **small)["status"].values == DONE).sum())
    assert len(computed) == int((fresh["status"].values == DONE).sum()) - old_points > 0, computed
    with pytest.raises(ns.SweepStoreError, match=r"differs in \['m', 'trials'\]"):  # anything else: refused
        ns.sweep(two_inputs(), **{**wider, "m": [2, 3, 4], "trials": 5}, store=store)


@pytest.mark.slow
@pytest.mark.parametrize("make, kw", [
    (two_inputs, dict(KW)),  # exact least squares
    (lambda: ns.feedforward([4, 3, 2]), dict(budget=[10], strategy="random", m=[2, 3], seed=1)),  # the LM
], ids=["exact", "lm"])
def test_rerunning_a_finished_sweep_with_more_trials_extends_it_and_fits_only_the_new_trials(tmp_path, monkeypatch,
                                                                                              make, kw):
    import neurosubset.benchmark as benchmark

    store = tmp_path / "s.zarr"
    ns.sweep(make(), **{**kw, "trials": 3}, store=store)
    firsts = []
    real = benchmark.draw_trials

    def recording(circuit, m, trials, seed, *, first=0, stable=False):  # the real draws, their trial range noted
        firsts.append((first, trials))
        return real(circuit, m, trials, seed, first=first, stable=stable)

    monkeypatch.setattr(benchmark, "draw_trials", recording)
    extended = ns.sweep(make(), **{**kw, "trials": 5}, store=store)
    monkeypatch.setattr(benchmark, "draw_trials", real)
    assert firsts and all(first >= 3 and first + n <= 5 for first, n in firsts), firsts  # trials 3 and 4 only
    fresh = ns.sweep(make(), **{**kw, "trials": 5})  # the reference: a fresh sweep of five trials
    for got in (extended, open_sweep(store)):
        assert got.sizes["trial"] == 5 and got.attrs["trials"] == 5
        for name, var in fresh.data_vars.items():
            if name == "residual":  # LAPACK's last bit may differ between batch sizes
                np.testing.assert_allclose(got[name].values, var.values, rtol=1e-6, atol=1e-12)
            else:
                assert got[name].equals(var), name
    with pytest.raises(ns.SweepStoreError, match=r"differs in \['trials'\]"):  # fewer trials: refused
        ns.sweep(make(), **{**kw, "trials": 4}, store=store)

@pytest.mark.slow
def test_plot_never_overwrites_figures_without_overwrite(tmp_path, capsys):
    store = tmp_path / "s.zarr"
    ns.sweep(two_inputs(), **KW, store=store)
    prefix = tmp_path / "fig"
    assert cli.main(["plot", str(store), "--out", str(prefix)]) == 0
    made = sorted(tmp_path.glob("fig_*.png"))
    assert made, list(tmp_path.iterdir())
    made[0].write_bytes(b"my edited figure")
    assert cli.main(["plot", str(store), "--out", str(prefix)]) == 2
    _one_line_error(capsys, "already exist", "--overwrite")
    assert made[0].read_bytes() == b"my edited figure"
    assert cli.main(["plot", str(store), "--out", str(prefix), "--overwrite"]) == 0
    assert made[0].stat().st_size > 1000
    assert cli.main(["plot", str(store), "--out", str(tmp_path / "missing" / "fig")]) == 2
    _one_line_error(capsys, "does not exist")
    assert cli.main(["plot", str(store), "--out", str(store / "fig")]) == 2
    _one_line_error(capsys, "inside the sweep store")
    assert not list(tmp_path.glob(".plot-*"))
