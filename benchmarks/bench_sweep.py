"""Sweep benchmark: 2 local worker processes vs 1, and the cost of the resumable store per point.

Run: ``.venv/bin/python benchmarks/bench_sweep.py [--trials 32] [--workers 2]``

The sweep is the demo's kind on ``circuits/ca3_ca1.toml``: budget 48 split between CA3->CA3 and CA3->CA1 on a
0.25 simplex grid (5 points) x 2 strategies x m in (6, 8) = 20 points. Both runs write a fresh Zarr store, so the
speed-up is the one a user sees (worker start-up included). Storage overhead = time spent writing points into
the store (measured around each point's write) / time spent computing points, plus the one-off template write
and final load, reported separately. Targets (issue 5): speed-up >= 1.6x, storage < 5% of compute per point.
Timings are wall-clock on a shared machine: the load average is printed with them.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import xarray as xr

import neurosubset as ns
from neurosubset._internal import DONE
from neurosubset.sweeps import core as sweep_core
from neurosubset.sweeps.store import ZarrTarget

ROOT = Path(__file__).resolve().parent.parent


class _TimedZarrTarget(ZarrTarget):
    """The store, timing its per-point writes and its one-off creation (at the first point) + final load."""

    write_seconds: list[float] = []
    create_seconds: list[float] = []

    def __init__(self, *args, **kwargs):
        start = time.perf_counter()
        super().__init__(*args, **kwargs)
        type(self).create_seconds.append(time.perf_counter() - start)

    def ensure(self, variables):
        start = time.perf_counter()
        super().ensure(variables)
        type(self).create_seconds.append(time.perf_counter() - start)

    def write(self, index, values):
        start = time.perf_counter()
        super().write(index, values)
        type(self).write_seconds.append(time.perf_counter() - start)

    def result(self):
        start = time.perf_counter()
        out = super().result()
        type(self).create_seconds.append(time.perf_counter() - start)
        return out


def _burn(n: int) -> int:
    total = 0
    for i in range(n):
        total += i * i
    return total


def parallel_capacity(workers: int, n: int = 5_000_000) -> float:
    """Speed-up of ``workers`` processes on pure-Python work: what the (shared) machine offers right now."""
    from concurrent.futures import ProcessPoolExecutor

    start = time.perf_counter()
    for _ in range(workers):
        _burn(n)
    serial = time.perf_counter() - start
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(_burn, [1] * workers))  # start the processes first
        start = time.perf_counter()
        list(pool.map(_burn, [n] * workers))
        parallel = time.perf_counter() - start
    return serial / parallel


def run(circuit, store: Path, workers: int, trials: int) -> tuple[xr.Dataset, float, list[float], float]:
    _TimedZarrTarget.write_seconds, _TimedZarrTarget.create_seconds = [], []
    start = time.perf_counter()
    ds = ns.sweep(circuit, budget=[48], fractions=ns.simplex_grid(["CA3->CA3", "CA3->CA1"], step=0.25),
                  strategy=["spread-rows", "concentrated-rows"], m=[6, 8], trials=trials, seed=0,
                  solver=ns.Auto(iterations=200), store=store, workers=workers)
    total = time.perf_counter() - start
    return ds, total, list(_TimedZarrTarget.write_seconds), sum(_TimedZarrTarget.create_seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    circuit = ns.Circuit.from_toml(ROOT / "circuits" / "ca3_ca1.toml")
    sweep_core.ZarrTarget = _TimedZarrTarget  # measure the real store's writes in place
    with tempfile.TemporaryDirectory() as tmp:
        print(f"load average before: {os.getloadavg()[0]:.2f} ({os.cpu_count()} cores, shared)", flush=True)
        capacity = parallel_capacity(args.workers)
        print(f"parallel capacity now: {args.workers} pure-Python processes run {capacity:.2f}x faster than one",
              flush=True)
        one, t1, w1, c1 = run(circuit, Path(tmp) / "one.zarr", 1, args.trials)
        many, t2, w2, c2 = run(circuit, Path(tmp) / "many.zarr", args.workers, args.trials)
        print(f"load average after:  {os.getloadavg()[0]:.2f}")
    xr.testing.assert_identical(one, many)
    points = int((one["status"] == DONE).sum())
    compute_per_point = (t1 - sum(w1) - c1) / points  # one worker: the rest of the wall time is computing
    print(f"points: {points} (trials {args.trials} each), results identical for 1 and {args.workers} workers")
    print(f"1 worker : {t1:7.2f} s   {args.workers} workers: {t2:7.2f} s   speed-up {t1 / t2:.2f}x (target >= 1.6x)")
    print(f"  (the machine offered {capacity:.2f}x to pure-Python processes; the {args.workers}-worker time includes "
          f"starting the workers: forkserver + imports, a few seconds)")
    print(f"compute per point (1 worker): {compute_per_point * 1e3:8.1f} ms")
    print(f"store write per point       : {1e3 * sum(w1) / len(w1):8.1f} ms mean, {1e3 * max(w1):.1f} ms max "
          f"-> {100 * sum(w1) / len(w1) / compute_per_point:.2f}% of compute (target < 5%)")
    print(f"one-off: template write + final load {1e3 * c1:.0f} ms, i.e. {1e3 * c1 / points:.1f} ms per point "
          f"({100 * c1 / points / compute_per_point:.2f}% of compute)")


if __name__ == "__main__":
    main()
