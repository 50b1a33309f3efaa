"""LM workloads for comparing two versions of the solver: per-trial decisions, MP by round and wall time.

Nine non-affine workloads (828 trials): linear RNNs, circuits/ca3_ca1.toml with spread and concentrated rows,
multi-layer linear and shallow ReLU nets. Every workload runs ``ns.fit`` with the library defaults.

Compare the working tree with another checkout, side by side (both on the same load):

    git worktree add /tmp/base <commit>
    PYTHONPATH=/tmp/base python benchmarks/bench_lm_workloads.py --json base.json &
    python benchmarks/bench_lm_workloads.py --json new.json
    python benchmarks/bench_lm_workloads.py --compare base.json new.json

Usage: python benchmarks/bench_lm_workloads.py [--json out.json] [--compare A.json B.json]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import neurosubset as ns

ROOT = Path(__file__).resolve().parent.parent


def workloads():
    """(name, circuit, allocation, m, trials) of each workload."""
    rnn8 = ns.linear_rnn(8, 2, 2, steps=3, gain=1.0)
    yield "lrnn n8 T3, 16 in W spread-rows, m4", rnn8, ns.allocate(rnn8, 16, strategy="spread-rows", within=["W"],
                                                                   seed=0), 4, 100
    rnn16 = ns.linear_rnn(16, 2, 2, steps=5, gain=1.0)
    yield "lrnn n16 T5, 24 in W spread-rows, m8", rnn16, ns.allocate(rnn16, 24, strategy="spread-rows",
                                                                     within=["W"], seed=0), 8, 64
    yield "lrnn n16 T5, 30 in W random, m8", rnn16, ns.allocate(rnn16, 30, within=["W"], seed=3), 8, 64
    ca = ns.Circuit.from_toml(ROOT / "circuits" / "ca3_ca1.toml")
    half = {"CA3->CA3": 0.5, "CA3->CA1": 0.5}
    yield "ca3_ca1 48 concentrated-rows, m8", ca, ns.allocate(ca, 48, strategy="concentrated-rows", fractions=half,
                                                              seed=0), 8, 50
    yield "ca3_ca1 48 spread-rows, m10", ca, ns.allocate(ca, 48, strategy="spread-rows", fractions=half,
                                                         seed=0), 10, 50
    ff = ns.feedforward([8, 6, 3])
    yield "lffn 8-6-3, 20 random, m4", ff, ns.allocate(ff, 20, seed=1), 4, 100
    ff3 = ns.feedforward([6, 6, 6, 2])
    yield "lffn 6-6-6-2, 14 random, m4", ff3, ns.allocate(ff3, 14, seed=2), 4, 100
    relu = ns.feedforward([6, 12, 1], nonlinearity="relu")
    yield "relu 6-12-1, 24 in W1 spread-rows, m6", relu, ns.allocate(relu, 24, strategy="spread-rows",
                                                                      within=["W1"], seed=0), 6, 100
    relu2 = ns.feedforward([8, 6, 3], nonlinearity="relu")
    yield "relu 8-6-3, 20 random, m4", relu2, ns.allocate(relu2, 20, seed=1), 4, 100


def run() -> dict:
    out = {}
    for name, circuit, alloc, m, trials in workloads():
        start = time.perf_counter()
        res = ns.fit(circuit, alloc, m, trials, 0)
        seconds = time.perf_counter() - start
        out[name] = {"mp": float(res.matched.mean()), "mp_by_round": [round(float(x), 3) for x in res.mp_by_round],
                     "seconds": seconds, "solver": res.solver, "matched": res.matched.astype(int).tolist()}
        print(f"{name:40s} MP {out[name]['mp']:.3f}  {seconds:7.2f} s  by round {out[name]['mp_by_round']}",
              flush=True)
    return out


def compare(a: dict, b: dict) -> None:
    for name in a:
        x, y = a[name]["matched"], b[name]["matched"]
        only_a = sum(p and not q for p, q in zip(x, y))
        only_b = sum(q and not p for p, q in zip(x, y))
        print(f"{name:40s} identical decisions: {x == y}  only A {only_a}, only B {only_b}  "
              f"time A {a[name]['seconds']:.2f} s, B {b[name]['seconds']:.2f} s "
              f"(B/A {b[name]['seconds'] / a[name]['seconds']:.2f})")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--compare", nargs=2, metavar=("A", "B"), help="compare two result files and exit")
    args = parser.parse_args(argv)
    if args.compare:
        compare(*(json.loads(Path(p).read_text()) for p in args.compare))
        return
    out = run()
    if args.json:
        Path(args.json).write_text(json.dumps(out))


if __name__ == "__main__":
    main()
