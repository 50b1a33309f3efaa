"""The worm workload of issue 16: certify and match_probability on the C. elegans connectome, beside scipy.

Circuit: ``ns.celegans()`` (Cook 2019 hermaphrodite: 302 neurons, steady linear dynamics, fixed one-to-one probe
and read-out projections); a worm-sized random stand-in (``--standin``) where cect is missing. Allocation:
spread-rows at ``1.1 x minimal_budget(worm, m=2)`` (``--budget`` skips the minimal-budget computation, which takes
minutes). Measured, each with its wall time and its peak resident memory above the process's memory before it
(``VmHWM`` reset through ``/proc/self/clear_refs`` on Linux; ``ru_maxrss`` of the process elsewhere):

(a) ``certify(worm, alloc, m=2)``;
(b) where the verdict is "zero": ``match_probability(..., trials=32)`` with the defaults (Dale, stability, and
    ``skip_zero`` on for a circuit this large): no trial is fitted;
(c) where it is "positive": ``match_probability(..., dale=False, stable=False)`` (the unconstrained benchmark: the
    lifted-rates decider of :mod:`neurosubset.solvers.lifted`, exact where it decides) on ``--trials`` trials, and
    with Dale and stability (lifted where its witness is admissible, a bounded LM otherwise: a lower bound) on
    ``--lm-trials``;
(d) the LM alone on the same problem (``solver=LevenbergMarquardt(max_rounds=--lm-rounds)``, no skip) on
    ``--lm-trials`` trials: the code before the certificate skip and the lifted decider;
(e) per-trial ``scipy.optimize.least_squares`` (TRF, exact closed-form Jacobian of the same PlasticMap, Dale's box
    as bounds on the "zero" budget, unbounded on the "positive" one) on the first ``--scipy-trials`` trials, one
    start each, ``max_nfev = --scipy-nfev``.
``--positive BUDGET`` adds a budget whose certificate is "positive".

Usage: python benchmarks/bench_connectome.py [--budget 251] [--json out.json] [--threads 1]
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import time
from pathlib import Path

import numpy as np
import scipy.optimize
import torch

import neurosubset as ns
from neurosubset.benchmark import draw_trials
from neurosubset.dynamics import PlasticMap, forward
from neurosubset.solvers.bounded import sign_bounds

_CLEAR = Path("/proc/self/clear_refs")
PEAKS: list[tuple[str, int]] = []  # (what, peak resident bytes of the process during it)


def _rss(key: str) -> int:
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    return 0


def measured(fn, *args, **kwargs):
    """``(result, seconds, peak bytes above the memory before)`` of ``fn(*args, **kwargs)``; the process's own peak
    resident set during the call (``VmHWM``, what the 4 GB limit is about) goes to :data:`PEAKS`."""
    if _CLEAR.exists():
        _CLEAR.write_text("5")  # reset VmHWM to the current resident set
        base = _rss("VmRSS")
    else:  # pragma: no cover - not Linux: the process's peak so far
        base = 0
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    seconds = time.perf_counter() - t0
    total = _rss("VmHWM") if _CLEAR.exists() else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    PEAKS.append((getattr(fn, "__name__", str(fn)), total))
    return out, seconds, (total - base)


def standin() -> ns.Circuit:
    """295 hidden neurons in sensory / inter / motor regions, ~2,600 synapses, steady linear, read-out of motor."""
    from neurosubset.circuit import Circuit, Projection, Region

    regions = (Region("X", 80, "input"), Region("S", 80), Region("I", 100), Region("Mo", 115),
               Region("OUT", 115, "output"))
    links = [("X", "S", 1.5 / 80, 1.0), ("S", "S", 0.02, 0.5), ("S", "I", 0.06, 0.6), ("I", "I", 0.04, 0.5),
             ("I", "Mo", 0.05, 0.6), ("Mo", "Mo", 0.03, 0.5), ("Mo", "I", 0.02, 0.4), ("S", "Mo", 0.02, 0.4),
             ("Mo", "OUT", 1.5 / 115, 1.0)]
    return Circuit(regions, tuple(Projection(*x) for x in links), dynamics="steady", name="worm_standin", seed=1)


def scipy_trials(circuit, alloc, m, n, seed, *, nfev, dale=True):
    """Per-trial TRF from the student's own draw (bounded by Dale's box with ``dale``, stable draws alike); returns
    matched, residuals, seconds."""
    draws = draw_trials(circuit, m, n, seed, stable=dale)
    box = sign_bounds(circuit, alloc)
    lower, upper = (box.lower, box.upper) if dale else (np.full(alloc.size, -np.inf), np.full(alloc.size, np.inf))
    matched, resid = [], []
    t0 = time.perf_counter()
    for i in range(n):
        frozen = {k: torch.as_tensor(v[i:i + 1]) for k, v in draws.student_init.items()}
        probes = torch.as_tensor(draws.probes[i:i + 1])
        fmap = PlasticMap(circuit, alloc, frozen, probes)
        target = forward(circuit, {k: torch.as_tensor(v[i:i + 1]) for k, v in draws.teacher.items()},
                         probes).flatten(-2)[0]
        norm = float(torch.linalg.vector_norm(target))
        x0 = np.concatenate([draws.student_init[k][i].ravel()[alloc.indices[k]] for k in circuit.weight_names])
        x0 = np.clip(x0, lower, upper)

        def fun(x, fmap=fmap, target=target):
            return (fmap(torch.as_tensor(x[None]))[0] - target).numpy()

        def jac(x, fmap=fmap):
            return fmap.jacobian(torch.as_tensor(x[None]))[0].numpy()

        sol = scipy.optimize.least_squares(fun, x0, jac=jac, bounds=(lower, upper), method="trf", ftol=1e-15,
                                           xtol=1e-15, gtol=1e-15, max_nfev=nfev)
        r = float(np.linalg.norm(sol.fun)) / norm
        resid.append(r)
        matched.append(r < ns.DEFAULT_TOL)
    return np.array(matched), np.array(resid), time.perf_counter() - t0


def _mp(out, key, label, args, circuit, alloc, trials, **kwargs):
    """``match_probability`` measured; its MP, decisions, statuses and residuals recorded under ``out[key]``."""
    ds, sec, peak = measured(ns.match_probability, circuit, alloc, m=2, trials=trials, seed=0, threads=args.threads,
                             **kwargs)
    out[key] = {"trials": trials, "seconds": sec, "peak_bytes": peak, "mp": float(ds.mp),
                "mp_low": float(ds.mp_low), "mp_high": float(ds.mp_high), "decision_kind": ds.attrs["decision_kind"],
                "fit_status": np.bincount(ds.fit_status.values, minlength=9).tolist(),
                "decision": np.bincount(ds.decision.values, minlength=8).tolist(),
                "residual": ds.residual.values.tolist(), "seconds_per_trial": sec / trials,
                "options": {k: str(v) for k, v in kwargs.items()}}
    print(f"[{label}] {key} ({trials} trials): {sec:.1f} s, peak {peak / 1e6:.0f} MB, MP {float(ds.mp):.3f} "
          f"[{float(ds.mp_low):.3f}, {float(ds.mp_high):.3f}] ({ds.attrs['decision_kind']}), decisions "
          f"{out[key]['decision']}", flush=True)


def workload(circuit, budget, args, label):
    alloc = ns.allocate(circuit, budget, strategy="spread-rows", seed=0)
    out = {"label": label, "budget": budget, "M": alloc.size}
    cert, out["certify_s"], out["certify_peak_bytes"] = measured(ns.certify, circuit, alloc, m=2)
    out["verdict"] = cert.verdict
    out["plastic_rank"], out["full_rank"] = cert.plastic_rank, cert.full_rank
    print(f"[{label}] budget {budget}: certify {out['certify_s']:.1f} s, peak {out['certify_peak_bytes'] / 1e6:.0f} MB,"
          f" verdict {cert.verdict} ({cert.plastic_rank}/{cert.full_rank})", flush=True)
    rounds = ns.Auto(restarts=2, max_rounds=args.lm_rounds, iterations=200)  # a bounded LM where it runs
    if cert.verdict == "zero":  # the defaults (Dale, stable; skip_zero on for a circuit this large)
        _mp(out, "mp_default", label, args, circuit, alloc, args.trials)
    else:  # unconstrained: the lifted decider (exact where it decides); Dale + stable: a lower bound
        _mp(out, "mp_unconstrained", label, args, circuit, alloc, args.trials, dale=False, stable=False,
            solver=rounds)
        if args.lm_trials:
            _mp(out, "mp_dale_stable", label, args, circuit, alloc, args.lm_trials, solver=rounds)
    if args.lm_trials:  # the LM alone on the same problem (the code before the lifted decider)
        dale = cert.verdict == "zero"
        _mp(out, "mp_lm", label, args, circuit, alloc, args.lm_trials, dale=dale, stable=dale, certificate=False,
            skip_zero=False, solver=ns.LevenbergMarquardt(max_rounds=args.lm_rounds))
    if args.scipy_trials:
        dale = cert.verdict == "zero"
        (matched, resid, sec), _, peak = measured(scipy_trials, circuit, alloc, 2, args.scipy_trials, 0,
                                                  nfev=args.scipy_nfev, dale=dale)
        out["scipy_trf"] = {"trials": args.scipy_trials, "max_nfev": args.scipy_nfev, "seconds": sec, "dale": dale,
                            "peak_bytes": peak, "mp": float(matched.mean()), "residual": resid.tolist(),
                            "seconds_per_trial": sec / args.scipy_trials}
        print(f"[{label}] scipy least_squares ({args.scipy_trials} trials, max_nfev {args.scipy_nfev}, dale {dale}): "
              f"{sec:.1f} s, peak {peak / 1e6:.0f} MB, MP {matched.mean():.3f}, residuals "
              f"{np.round(resid, 6).tolist()}", flush=True)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--standin", action="store_true", help="the random stand-in instead of ns.celegans()")
    parser.add_argument("--budget", type=int, help="minimal_budget(worm, m=2) if known (skips computing it)")
    parser.add_argument("--trials", type=int, default=32)
    parser.add_argument("--lm-trials", type=int, default=2)
    parser.add_argument("--lm-rounds", type=int, default=1)
    parser.add_argument("--scipy-trials", type=int, default=2)
    parser.add_argument("--scipy-nfev", type=int, default=100)
    parser.add_argument("--positive", type=int, help="also a budget whose certificate is 'positive'")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    circuit = standin() if args.standin or not hasattr(ns, "celegans") else ns.celegans()
    meta = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": platform.processor() or platform.machine(),
            "threads": args.threads, "torch": torch.__version__, "circuit": circuit.name,
            "neurons": circuit.n_neurons(("hidden", "output")), "synapses": circuit.n_synapses,
            "n_in": circuit.n_in, "n_out": circuit.n_out}
    print(meta, flush=True)
    if args.budget is None:
        mb, sec, peak = measured(ns.minimal_budget, circuit, m=2)
        meta.update(minimal_budget=int(mb), minimal_budget_s=sec, minimal_budget_peak_bytes=peak)
        print(f"minimal_budget(m=2) = {int(mb)} in {sec:.1f} s, peak {peak / 1e6:.0f} MB", flush=True)
    else:
        meta["minimal_budget"] = args.budget
    results = []
    budgets = [(int(round(1.1 * meta["minimal_budget"])), "1.1 x minimal budget")]
    for budget, label in budgets + ([(args.positive, "positive")] if args.positive else []):
        results.append(workload(circuit, budget, args, label))
        if args.json:  # after each workload: a stopped run keeps what it measured
            Path(args.json).write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    meta["process_peak_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    meta["peaks"] = PEAKS
    print("peak resident memory of the process during each call (MB):",
          [(k, round(v / 1e6)) for k, v in PEAKS], flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"meta": meta, "results": results}, indent=2))


if __name__ == "__main__":
    main()
