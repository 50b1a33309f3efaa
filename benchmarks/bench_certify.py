"""Scale benchmark of :func:`neurosubset.certify`: 10^4 plastic synapses, 2,000 output equations.

Circuit: the paper's linear RNN with n = 100 recurrent neurons (W: 10,000 synapses, all plastic), n_in = 10,
n_out = 20, T = 5 steps; m = 100 probes, so E = m * n_out = 2,000 equations and N = 13,000 weights in all.
Target: < 60 s on 2 CPU cores for each method. ``both`` runs the float ranks (``adjoint``: the closed-form
Jacobian in float64, SVD ranks) and the exact ranks (``exact``: the Jacobian evaluated exactly at a random point
of GF(p), p < 2^62, ranks by python-flint) side by side; ``auto`` is what ``certify`` does by default (float where
the gaps are decisive, else exact). Prints the wall time and the process CPU time of each method: on a machine
shared with other jobs the wall time overstates the cost (flint runs on one thread, torch on ``--threads``).

Usage: python benchmarks/bench_certify.py [--method auto|exact|autograd|adjoint|sketch|both] [--threads K]
"""
from __future__ import annotations

import argparse
import time

import torch

import neurosubset as ns


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", choices=["auto", "exact", "autograd", "adjoint", "sketch", "both"],
                        default="both", help="both = adjoint (float) and exact (GF(p)) side by side; sketch = the "
                                             "matrix-free randomised estimate")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)  # a script, not the library: setting threads here is deliberate
    rnn = ns.linear_rnn(100, 10, 20, steps=5)
    alloc = ns.allocate(rnn, 10_000, within=["W"])
    m = 100
    methods = ["adjoint", "exact"] if args.method == "both" else [args.method]
    print(f"circuit {rnn.name}: N = {rnn.n_synapses} weights, M = {alloc.size} plastic, E = {m * rnn.n_out}")
    for method in methods:
        start, cpu0 = time.perf_counter(), time.process_time()
        cert = ns.certify(rnn, alloc, m=m, seed=0, method=method)
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu0
        print(f"{method:>8}: wall {wall:6.1f} s, process CPU {cpu:6.1f} s  plastic_rank={cert.plastic_rank} "
              f"full_rank={cert.full_rank} verdict={cert.verdict} "
              f"gaps(plastic, full)=({cert.plastic_gap:.3g}, {cert.full_gap:.3g}) "
              f"points={cert.points} rtol={cert.rtol:g} ranks_by={cert.method} decisive={cert.decisive} "
              f"error_bound={cert.error_bound:.2g}")


if __name__ == "__main__":
    main()
