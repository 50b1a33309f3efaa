"""Scale benchmark of :func:`neurosubset.certify`: 10^4 plastic synapses, 2,000 output equations.

Circuit: the paper's linear RNN with n = 100 recurrent neurons (W: 10,000 synapses, all plastic), n_in = 10,
n_out = 20, T = 5 steps; m = 100 probes, so E = m * n_out = 2,000 equations and N = 13,000 weights in all.
Target: < 60 s on 2 CPU cores for the default (autograd) Jacobian. Prints the wall time and the process CPU
time of each method: on a machine shared with other jobs the wall time overstates the cost, while CPU time / 2
is the wall time on 2 free cores (the work runs on 2 threads).

Usage: python benchmarks/bench_certify.py [--method autograd|adjoint|both] [--threads K]
"""
from __future__ import annotations

import argparse
import time

import torch

import neurosubset as ns


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", choices=["autograd", "adjoint", "sketch", "both"], default="both",
                        help="both = autograd and adjoint; sketch = the matrix-free randomised estimate")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)  # a script, not the library: setting threads here is deliberate
    rnn = ns.linear_rnn(100, 10, 20, steps=5)
    alloc = ns.allocate(rnn, 10_000, within=["W"])
    m = 100
    methods = ["autograd", "adjoint"] if args.method == "both" else [args.method]
    print(f"circuit {rnn.name}: N = {rnn.n_synapses} weights, M = {alloc.size} plastic, E = {m * rnn.n_out}")
    for method in methods:
        start, cpu0 = time.perf_counter(), time.process_time()
        cert = ns.certify(rnn, alloc, m=m, seed=0, method=method)
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu0
        print(f"{method:>8}: wall {wall:6.1f} s, process CPU {cpu:6.1f} s  plastic_rank={cert.plastic_rank} "
              f"full_rank={cert.full_rank} verdict={cert.verdict} gaps(plastic, full)=({cert.plastic_gap:.3g}, {cert.full_gap:.3g}) "
              f"points={cert.points} rtol={cert.rtol:g}")


if __name__ == "__main__":
    main()
