"""Throughput of match_probability against what users write by hand, on identical trials.

(a) naive: one trial at a time, the full weight matrices as torch parameters, the gradient masked to the plastic
    synapses (PsychRNN / nn4n style), Adam (lr 1e-3, their default) until loss < tol^2 or 5000 steps;
(b) neurosubset.fit (what match_probability runs): all trials batched, exact least squares where affine,
    Levenberg-Marquardt with restarts otherwise;
(c) careful: one trial at a time, scipy.optimize.least_squares (TRF, ftol = xtol = gtol = 1e-15, exact
    Jacobian from torch autograd), up to 4 random restarts until matched.

Workloads (from the issue): linear RNN n=16, T=5, n_in=2, n_out=2, 24 plastic synapses in W spread over rows,
m=8, 64 trials; a 64x64 single linear layer with 256 plastic synapses (spread over rows), m=4, 256 trials.
(a) and (c) run on the first --naive-trials / --scipy-trials trials; throughput is trials per second of wall time.
Each method first runs once, untimed, on one trial of another seed, so that no side pays for first-call costs
(library loading, LAPACK/MKL initialisation) in its timing. Each side runs with its natural torch threading:
(a) and (c) with torch's default, (b) with fit's default of one intra-op thread.

Usage: python benchmarks/bench_mp.py [--quick] [--json results.json]
"""
from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np
import scipy.optimize
import torch

import neurosubset as ns
from neurosubset.benchmark import draw_trials
from neurosubset.dynamics import forward

TOL = ns.DEFAULT_TOL


def _weights(draw, i):
    return {k: torch.as_tensor(v[i]) for k, v in draw.items()}


def naive_adam(circuit, alloc, trials, n, *, steps=5000, lr=1e-3):
    """Per-trial masked-gradient Adam. Returns matched flags and relative residuals."""
    matched, resid = [], []
    masks = {k: torch.as_tensor(v.copy()) for k, v in alloc.masks.items()}
    for i in range(n):
        params = {k: w.clone().requires_grad_(True) for k, w in _weights(trials.student_init, i).items()}
        probes = torch.as_tensor(trials.probes[i])
        target = forward(circuit, _weights(trials.teacher, i), probes)
        norm = (target**2).sum()
        opt = torch.optim.Adam(params.values(), lr=lr)
        for _ in range(steps):
            opt.zero_grad()
            loss = ((forward(circuit, params, probes) - target) ** 2).sum() / norm
            if loss.item() < TOL**2:
                break
            loss.backward()
            for k, p in params.items():
                p.grad.mul_(masks[k])
            opt.step()
        with torch.no_grad():
            r = float(torch.sqrt(((forward(circuit, params, probes) - target) ** 2).sum() / norm))
        matched.append(r < TOL)
        resid.append(r)
    return np.array(matched), np.array(resid)


def careful_scipy(circuit, alloc, trials, n, *, restarts=4, seed=0):
    """Per-trial scipy least_squares (TRF, tight tolerances, autograd Jacobian, random restarts)."""
    index = {k: torch.as_tensor(v) for k, v in alloc.indices.items()}
    sigma = circuit.init_scale(alloc)
    matched, resid = [], []
    for i in range(n):
        frozen = {k: w.masked_fill(torch.as_tensor(alloc.masks[k].copy()), 0.0)
                  for k, w in _weights(trials.student_init, i).items()}
        probes = torch.as_tensor(trials.probes[i])
        target = forward(circuit, _weights(trials.teacher, i), probes).flatten()
        norm = float(torch.linalg.vector_norm(target))

        def f(theta):
            return ns.dynamics.assemble(frozen, index, theta)

        def residual(x):
            return (forward(circuit, f(torch.as_tensor(x)), probes).flatten() - target).numpy()

        def jac(x):
            return torch.func.jacrev(lambda t: forward(circuit, f(t), probes).flatten())(torch.as_tensor(x)).numpy()

        rng = np.random.default_rng([seed, i])
        best = np.inf
        for _ in range(restarts):
            x0 = rng.standard_normal(alloc.size) * sigma
            sol = scipy.optimize.least_squares(residual, x0, jac=jac, method="trf", ftol=1e-15, xtol=1e-15,
                                               gtol=1e-15)
            best = min(best, float(np.linalg.norm(sol.fun)) / norm)
            if best < TOL:
                break
        matched.append(best < TOL)
        resid.append(best)
    return np.array(matched), np.array(resid)


def run(name, circuit, alloc, m, trials, naive_n, scipy_n, seed=0):
    draws = draw_trials(circuit, m, trials, seed)
    # untimed warm-up of all three on one trial of another seed (library loading, first-call allocations)
    warm = draw_trials(circuit, m, 1, seed + 1)
    ns.fit(circuit, alloc, m, 1, seed + 1)
    naive_adam(circuit, alloc, warm, 1, steps=20)
    careful_scipy(circuit, alloc, warm, 1, restarts=1, seed=seed + 1)
    t0 = time.perf_counter()
    res = ns.fit(circuit, alloc, m, trials, seed)
    t_ns = time.perf_counter() - t0
    t0 = time.perf_counter()
    naive_matched, _ = naive_adam(circuit, alloc, draws, naive_n)
    t_naive = time.perf_counter() - t0
    t0 = time.perf_counter()
    sp_matched, sp_resid = careful_scipy(circuit, alloc, draws, scipy_n, seed=seed)
    t_sp = time.perf_counter() - t0
    out = {
        "workload": name, "trials": trials, "M": alloc.size, "m": m, "solver": res.solver,
        "neurosubset": {"trials": trials, "seconds": t_ns, "trials_per_s": trials / t_ns,
                        "mp": float(res.matched.mean()), "mp_first_round": float(res.mp_by_round[0])},
        "naive_adam": {"trials": naive_n, "seconds": t_naive, "trials_per_s": naive_n / t_naive,
                       "mp": float(naive_matched.mean())},
        "scipy_trf": {"trials": scipy_n, "seconds": t_sp, "trials_per_s": scipy_n / t_sp,
                      "mp": float(sp_matched.mean())},
    }
    out["speedup_vs_naive"] = out["neurosubset"]["trials_per_s"] / out["naive_adam"]["trials_per_s"]
    out["speedup_vs_scipy"] = out["neurosubset"]["trials_per_s"] / out["scipy_trf"]["trials_per_s"]
    ours = res.matched[:scipy_n]
    out["agreement_with_scipy"] = float((ours == sp_matched).mean())
    out["only_neurosubset_matched"] = int((ours & ~sp_matched).sum())
    out["only_scipy_matched"] = int((~ours & sp_matched).sum())
    out["mp_neurosubset_on_scipy_trials"] = float(ours.mean())
    out["scipy_unmatched_best_residuals"] = sorted(float(r) for r in sp_resid[~sp_matched])[:8]
    out["neurosubset_unmatched_residuals"] = sorted(float(r) for r in res.residual[~res.matched])[:8]
    out["agreement_with_naive"] = float((res.matched[:naive_n] == naive_matched).mean())
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer trials (a smoke run)")
    parser.add_argument("--naive-trials", type=int, default=8)
    parser.add_argument("--scipy-trials", type=int, default=64)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    scale = 8 if args.quick else 1
    rnn = ns.linear_rnn(16, 2, 2, steps=5, gain=1.0)
    rnn_alloc = ns.allocate(rnn, 24, strategy="spread-rows", within=["W"], seed=0)
    layer = ns.feedforward([64, 64])
    layer_alloc = ns.allocate(layer, 256, strategy="spread-rows", seed=0)
    naive_n = max(1, args.naive_trials // scale)
    scipy_n = max(1, args.scipy_trials // scale)
    results = [
        run("linear RNN n=16 T=5, 24 plastic in W (spread-rows), m=8", rnn, rnn_alloc, 8, 64 // scale, naive_n,
            scipy_n),
        run("64x64 linear layer, 256 plastic (spread-rows), m=4", layer, layer_alloc, 4, 256 // scale, naive_n,
            scipy_n),
    ]
    meta = {"date": time.strftime("%Y-%m-%d"), "machine": platform.processor() or platform.machine(),
            "cpus": torch.get_num_threads(), "torch": torch.__version__}
    for r in results:
        print(f"\n== {r['workload']}  (solver: {r['solver']})")
        for key in ("naive_adam", "scipy_trf", "neurosubset"):
            v = r[key]
            print(f"  {key:12s} {v['trials']:4d} trials in {v['seconds']:8.2f} s = {v['trials_per_s']:8.2f} trials/s"
                  f"   MP {v['mp']:.3f}")
        print(f"  speed-up: {r['speedup_vs_naive']:.0f}x vs naive Adam, {r['speedup_vs_scipy']:.1f}x vs scipy TRF")
        print(f"  decisions on the {r['neurosubset']['trials'] and r['scipy_trf']['trials']} scipy trials: "
              f"agreement {r['agreement_with_scipy']:.3f}, only neurosubset matched {r['only_neurosubset_matched']},"
              f" only scipy matched {r['only_scipy_matched']}; neurosubset MP there "
              f"{r['mp_neurosubset_on_scipy_trials']:.3f}")
        print(f"  unmatched residuals: scipy {r['scipy_unmatched_best_residuals'][:4]}, "
              f"neurosubset {r['neurosubset_unmatched_residuals'][:4]}")
    print(f"\n{meta}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"meta": meta, "results": results}, fh, indent=2)


if __name__ == "__main__":
    main()
