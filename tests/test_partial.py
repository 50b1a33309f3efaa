"""An interrupted ``mp`` (neurosubset._partial): a real subprocess, a real signal, a rerun that completes it.

Reference: an uninterrupted ``match_probability`` of the same request in this process (one batch of all trials,
no chunks): the completed result must hold the same per-trial decisions and the same MP, interval and bracket.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import neurosubset as ns
from neurosubset import _partial
from neurosubset.cli import load_circuit

ROOT = Path(__file__).resolve().parents[1]
SPEC = "lffn:6-4-3"  # a linear 6-4-3 net, 14 plastic synapses over both layers: bilinear, so the LM runs
# 4 chunks of 1,000 trials (0.1-0.2 s of fitting each): the signal, sent once the second chunk's bar shows, finds the
# run still going (with 40 trials, chunks of ~10 ms, an idle machine finished the whole run before the parent had
# read its way to that bar)
TRIALS = 4000
ARGS = ["mp", SPEC, "--budget", "14", "--m", "3", "--trials", str(TRIALS), "--seed", "3"]


def _run_until_second_chunk(out: Path, sig: int) -> tuple[int, str]:
    """Start ``mp`` with progress bars, send ``sig`` once the second chunk's bar appears (the first chunk of
    trials is then finished), and return the exit code and stderr."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen([sys.executable, "-m", "neurosubset.cli", *ARGS, "--out", str(out)], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    seen = b""
    while seen.count(b"restart rounds:   0%") < 2:
        got = os.read(proc.stderr.fileno(), 1 << 16)  # what the pipe holds, not a byte at a time
        if not got:  # the run ended on its own before a second chunk began
            break
        seen += got
    proc.send_signal(sig)
    _, rest = proc.communicate(timeout=600)
    return proc.returncode, (seen + rest).decode(errors="replace")


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupted_mp_writes_a_partial_result_that_a_rerun_completes(tmp_path, sig):
    out = tmp_path / "mp.nc"
    code, err = _run_until_second_chunk(out, sig)
    assert code == 130, err[-2000:]
    with xr.open_dataset(out, engine="h5netcdf") as part:
        assert part.attrs["partial"] == 1 and part.attrs["trials_requested"] == TRIALS
        done = int(part.attrs["trials_done"])
        assert 1 <= done < TRIALS and part.sizes["trial"] == done
        part_matched = part["matched"].values.copy()
    assert _partial.resume_path(out).is_file()

    rerun = subprocess.run([sys.executable, "-m", "neurosubset.cli", *ARGS, "--out", str(out), "--quiet"], cwd=ROOT,
                           env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"},
                           capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert f"resuming {out}: {done} of {TRIALS} trials done" in rerun.stdout
    assert not _partial.resume_path(out).exists()

    circuit = load_circuit(SPEC)
    alloc = ns.allocate(circuit, 14, seed=3)
    fresh = ns.match_probability(circuit, alloc, m=3, trials=TRIALS, seed=3)  # one batch, no chunks
    with xr.open_dataset(out, engine="h5netcdf") as full:
        assert "partial" not in full.attrs and full.sizes["trial"] == TRIALS
        np.testing.assert_array_equal(full["matched"].values[:done], part_matched)  # the kept trials are kept
        for name in ("matched", "outcome", "fit_status", "restarts", "mp_by_round"):
            np.testing.assert_array_equal(full[name].values, fresh[name].values, err_msg=name)
        for name in ("mp", "mp_low", "mp_high", "mp_lower", "mp_upper", "mp_first_round"):
            assert float(full[name]) == float(fresh[name]), name
        np.testing.assert_allclose(full["residual"].values, fresh["residual"].values, rtol=1e-6, atol=1e-14)
        assert full.attrs["config_hash"] == fresh.attrs["config_hash"]


def test_a_partial_result_of_another_request_is_an_existing_file(tmp_path):
    circuit = load_circuit(SPEC)
    alloc = ns.allocate(circuit, 14, seed=3)
    options = ns.FitOptions()
    key = _partial.request_key(circuit, alloc, 3, 40, 3, options)
    assert key != _partial.request_key(circuit, alloc, 3, 41, 3, options)  # trials
    assert key != _partial.request_key(circuit, alloc, 4, 40, 3, options)  # m
    assert key != _partial.request_key(circuit, ns.allocate(circuit, 14, seed=4), 3, 40, 3, options)
    assert key != _partial.request_key(circuit, alloc, 3, 40, 3, ns.FitOptions(dale=False))
    assert _partial.load(tmp_path / "absent.nc", key) is None
