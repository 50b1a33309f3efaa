"""Benchmark (not a test): the spiking check on 1,000 simulated neurons with 10% connectivity, 10 s simulated.

Circuit: 50 Poisson inputs -> 990 recurrent hidden neurons (p = 0.1, gain 0.5) -> 10 output neurons (p = 0.1),
``"steady"`` dynamics, so 1,000 simulated neurons and ~100,000 synapses. One probe, two repeats (the minimum for
a standard error), default operating point. Prints the wall time of ``spiking_check`` (operating point, network
construction, code generation and simulation) and the agreement with the rate model.

Measured on the shared 2-core development machine (brian2 2.9.0, load average ~5 from other jobs): numpy target
6.4 s wall for ``spiking_check`` (2 repeats x 10 s; 16 s under heavier load), cython target 9.5 s after its
first-use compilation (which takes minutes); the circuit construction before it takes 3-8 s (dense eigenvalues
in ``Circuit``). Target: < 60 s.

Usage::

    .venv/bin/python benchmarks/bench_spiking.py [--target numpy|cython] [--duration 10]
"""
from __future__ import annotations

import argparse
import time

import numpy as np

import neurosubset as ns


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="numpy", choices=["numpy", "cython"])
    parser.add_argument("--duration", type=float, default=10.0, help="simulated seconds per repeat")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    start = time.perf_counter()
    circuit = ns.Circuit(
        (ns.Region("in", 50, "input"), ns.Region("rec", 990, "hidden"), ns.Region("out", 10, "output")),
        (ns.Projection("in", "rec", p=0.1), ns.Projection("rec", "rec", p=0.1, gain=0.5),
         ns.Projection("rec", "out", p=0.1)),
        dynamics="steady", name="bench_1000")
    built = time.perf_counter() - start
    rng = np.random.default_rng(0)
    weights = circuit.sample_weights(rng)
    probes = circuit.sample_probes(1, rng)
    start = time.perf_counter()
    chk = ns.spiking_check(circuit, weights, probes, duration=args.duration, repeats=args.repeats, seed=0,
                           target=args.target)
    wall = time.perf_counter() - start
    n_syn = circuit.n_synapses
    print(f"{circuit.n_out + 990} neurons, {n_syn} synapses ({n_syn / 1.05e6:.1%} of all pairs), "
          f"{args.repeats} repeats (independent copies in one network) x {args.duration:g} s simulated, "
          f"dt {chk.attrs['dt'] * 1e3:g} ms, "
          f"codegen target {chk.attrs['codegen_target']!r} (brian2 {chk.attrs['brian2_version']})")
    print(f"spiking_check wall time {wall:.1f} s (circuit construction before it: {built:.1f} s); "
          f"mean output rate {float(chk.rate_spiking.mean()):.0f} Hz; "
          f"agreement with the rate model {chk.attrs['fraction_agree']:.2f}; "
          f"max clipped fraction {chk.attrs['clipped_fraction_all_max']:.4f}")


if __name__ == "__main__":
    main()
