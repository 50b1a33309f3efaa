"""Realistic circuits at the defaults (Dale + stability), this tree beside another commit: issue 29's workloads.

Workloads (``match_probability`` with the library defaults, one torch thread):

- ``v1_steady``: ``circuits/v1_four_class.toml`` (80 E, 10 PV, 6 SST, 4 VIP, Dale, L4 input, 5 read-outs), 60
  plastic synapses, 25% each over E->E, PV->E, SST->E and the read-out E->OUT, ``m = 8``;
- ``v1_continuous``: ``circuits/v1_four_class_continuous.toml`` (taus 10-30 ms, read-outs at 100 and 200 ms), the
  same allocation rule with 40 plastic synapses, ``m = 2``;
- ``worm``: ``ns.celegans()`` (302 neurons, steady linear), ``--worm-budget`` plastic synapses spread over rows,
  ``m = 2``;
- ``worm_greedy``: the worm's greedy optimal allocation of 276 chemical synapses (``analysis/celegans_biological.py``),
  ``m = 2``;
- ``ei_isn_12`` / ``ei_isn_24``: ``circuits/ei_isn.toml``, 12 or 24 plastic synapses spread over the rows of the
  recurrent projections (E->E, E->I, I->E, I->I), ``m = 2`` (issue 28's recurrent allocations).

``--solver auto`` (default) fits with the decider chain (``ns.Auto()``), ``--solver lm`` with the LM alone
(``ns.LevenbergMarquardt()``), both at their default effort; ``--solver auto --solver lm`` runs both, interleaved,
on each tree (issue 28's "LM-only vs the chain" as trials decided per minute). Decided per CPU minute is printed beside
decided per wall minute (the machine is shared).

Each run is a subprocess with ``PYTHONPATH`` set to its tree (the circuit files are always read from this tree, so
both sides fit the same circuits), one BLAS/OpenMP and torch thread, and a wall-clock limit (``--limit`` s; a run
that hits it is reported as not finished). Rounds interleave the trees (base, then new, per workload). Printed per
run: wall and process CPU time of the ``match_probability`` call, trials, matched, trials decided (a witness or a
proof: ``outcome`` != undecided where the tree records it; on a tree without ``outcome`` the exact decisions),
those decided within the plausibility bound K (a proof, or a witness with ``witness_scale <= K``: what the bracket
counts from 5f69557 on), decided per minute of wall time, MP and its bracket ``[mp_lower, mp_upper]`` where the
tree writes it (else ``[mp, 1]``: a lower bound). MP from a local optimiser is a lower bound unless the bracket closes.

Usage: python benchmarks/bench_realistic.py --base /tmp/ns_base [--new .] [--rounds 1] [--trials-steady 20]
       [--trials-continuous 10] [--trials-worm 8] [--trials-ei 8] [--limit 600] [--only v1_steady]
       [--solver auto|lm ...]
       (``git worktree add /tmp/ns_base 84b0098`` makes the base tree.)
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
FRACTIONS = {"E->E": 0.25, "PV->E": 0.25, "SST->E": 0.25, "E->OUT": 0.25}


def _workload(ns, name: str, args):
    if name == "v1_steady":
        c = ns.Circuit.from_toml(HERE / "circuits" / "v1_four_class.toml")
        return c, ns.allocate(c, 60, fractions=FRACTIONS, seed=0), 8, args.trials_steady
    if name == "v1_continuous":
        c = ns.Circuit.from_toml(HERE / "circuits" / "v1_four_class_continuous.toml")
        return c, ns.allocate(c, 40, fractions=FRACTIONS, seed=0), 2, args.trials_continuous
    if name == "worm":
        c = ns.celegans()
        return c, ns.allocate(c, args.worm_budget, strategy="spread-rows", seed=0), 2, args.trials_worm
    if name == "worm_greedy":
        sys.path.insert(0, str(HERE / "analysis"))
        from celegans_biological import _allocation

        c = ns.celegans()
        return c, _allocation(c, "greedy-276", 0), 2, args.trials_worm
    if name in ("ei_isn_12", "ei_isn_24"):
        c = ns.Circuit.from_toml(HERE / "circuits" / "ei_isn.toml")
        alloc = ns.allocate(c, int(name.rsplit("_", 1)[1]), strategy="spread-rows",
                            within=["E->E", "E->I", "I->E", "I->I"], seed=0)
        return c, alloc, 2, args.trials_ei
    raise ValueError(name)


def worker(name: str, out: Path, args) -> None:
    """Run one workload in this process (the tree on PYTHONPATH) with ``args.solver[0]`` and write its numbers to
    ``out``."""
    import numpy as np
    import torch

    import neurosubset as ns

    torch.set_num_threads(1)
    circuit, alloc, m, trials = _workload(ns, name, args)
    w0, c0 = time.perf_counter(), time.process_time()
    solver = ns.LevenbergMarquardt() if args.solver[0] == "lm" else ns.Auto()
    ds = ns.match_probability(circuit, alloc, m=m, trials=trials, seed=0, solver=solver)
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    matched = int(ds["matched"].values.sum())
    if "outcome" in ds:
        decided = int((ds["outcome"].values != 0).sum())
    else:  # before the per-trial outcome: exact decisions decide every trial, a local solver only its matches
        decided = trials if ds.attrs.get("decision_kind", ds.attrs.get("mp_estimate")) == "exact" else matched
    within_k = decided  # decided within the plausibility bound K: proofs, and witnesses with every value within K
    if "witness_scale" in ds:
        k = float(ds.attrs.get("plausibility_bound", 100.0))
        outcome, scale = ds["outcome"].values, ds["witness_scale"].values
        within_k = int(((outcome == 1) & (scale <= k * (1 + 1e-9))).sum() + (outcome == 2).sum())
    lower = float(ds["mp_lower"]) if "mp_lower" in ds else float(ds["mp"])
    upper = float(ds["mp_upper"]) if "mp_upper" in ds else 1.0
    out.write_text(json.dumps({"wall": wall, "cpu": cpu, "trials": trials, "matched": matched, "decided": decided,
                               "within_k": within_k,
                               "mp": float(ds["mp"]), "lower": lower, "upper": upper,
                               "neurosubset": str(Path(ns.__file__).resolve().parents[1]),
                               "by_round": np.asarray(ds["mp_by_round"].values).round(3).tolist()}))


def _run(tree: Path, name: str, args, solver: str = "auto") -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.json"
        env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
               "OPENBLAS_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", name, "--out", str(out),
               "--trials-steady", str(args.trials_steady), "--trials-continuous", str(args.trials_continuous),
               "--trials-worm", str(args.trials_worm), "--worm-budget", str(args.worm_budget),
               "--trials-ei", str(args.trials_ei), "--solver", solver]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        try:
            proc = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True, timeout=args.limit)
        except subprocess.TimeoutExpired:
            return {"error": f"not finished in {args.limit} s"}
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if proc.returncode != 0:
            return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"rc {proc.returncode}"}
        res = json.loads(out.read_text())
        res["proc_wall"] = time.perf_counter() - start
        res["proc_cpu"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        return res


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, help="the other tree (e.g. a worktree of 84b0098)")
    parser.add_argument("--new", type=Path, default=HERE)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--trials-steady", type=int, default=20)
    parser.add_argument("--trials-continuous", type=int, default=10)
    parser.add_argument("--trials-worm", type=int, default=8)
    parser.add_argument("--worm-budget", type=int, default=400)
    parser.add_argument("--trials-ei", type=int, default=8)
    parser.add_argument("--solver", action="append", choices=("auto", "lm"),
                        help="auto: the decider chain; lm: the LM alone (repeatable; default auto)")
    parser.add_argument("--limit", type=float, default=600.0, help="wall-clock limit per run (s)")
    parser.add_argument("--only", action="append", help="run only these workloads (repeatable)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.solver = args.solver or ["auto"]
    if args.worker:
        worker(args.worker, args.out, args)
        return
    names = args.only or ["v1_steady", "v1_continuous", "worm"]
    trees = ([("base", args.base.resolve())] if args.base else []) + [("new", args.new.resolve())]
    print(f"load average {os.getloadavg()}, nproc {os.cpu_count()}", flush=True)
    for rnd in range(args.rounds):
        for name in names:
            for side, tree in trees:
                for solver in args.solver:
                    label = f"{side} {solver}"
                    r = _run(tree, name, args, solver)
                    if "error" in r:
                        print(f"round {rnd} {name:14s} {label:9s}: {r['error']}", flush=True)
                        continue
                    per_min, per_cpu_min = r["decided"] / (r["wall"] / 60.0), r["decided"] / (r["cpu"] / 60.0)
                    print(f"round {rnd} {name:14s} {label:9s}: wall {r['wall']:7.1f} s cpu {r['cpu']:7.1f} s (process "
                          f"{r['proc_wall']:.1f} / {r['proc_cpu']:.1f} s) trials {r['trials']} matched {r['matched']} "
                          f"decided {r['decided']} (within K {r.get('within_k', r['decided'])}; "
                          f"{per_min:.1f}/wall min, "
                          f"{per_cpu_min:.1f}/CPU min) MP "
                          f"{r['mp']:.3f} bracket [{r['lower']:.3f}, {r['upper']:.3f}] mp_by_round {r['by_round']}",
                          flush=True)
    print(f"load average {os.getloadavg()}", flush=True)


if __name__ == "__main__":
    main()
