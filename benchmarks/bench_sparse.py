"""Issue 32's measurements: circuits/balanced_ei.toml (10^4 neurons) in the sparse weights layout, beside the dense
layout at smaller sizes, and the scaling table of docs/scaling.rst.

Each mode runs in its own process (peak memory = that process's maximum resident set) and prints one JSON line::

    python benchmarks/bench_sparse.py load                    # balanced_ei: load + spec check
    python benchmarks/bench_sparse.py certify [N] [LAYOUT]    # certify, 10^4-synapse spread-rows E->E, m = 4
    python benchmarks/bench_sparse.py mp [N] [LAYOUT] [TRIALS] [stable]  # match_probability, read-out + E->E,
                                                              # unconstrained (stable: stable=True)
    python benchmarks/bench_sparse.py step N LAYOUT [T]       # one LM iteration (value + Jacobian, one problem)
    python benchmarks/bench_sparse.py lifted N LAYOUT         # the lifted decider on one trial
    python benchmarks/bench_sparse.py gfp N [P] [few]         # certify: iterative float ranks vs GF(p) ranks
    python benchmarks/bench_sparse.py eig N                   # max Re(eig W) of one draw (sparse_max_real_eig)

``N`` (default 10120: balanced_ei itself) scales balanced_ei to ``0.8 N`` E and ``0.2 N`` I neurons (100 inputs,
20 outputs, gains as in the file) with the in-degrees of the file held (K_E = 160, K_I = 40: ``p = 160 / N_E``).
``LAYOUT`` is ``sparse`` or ``dense`` (FitOptions.weights_layout). ``gfp ... few``: every E->E synapse onto the
first 5 E cells plastic instead (rank at most 5 m = 20 < E: a rank deficit, verdict "zero"). ``step ... T``: the
same circuit with discrete dynamics over ``T`` steps. Run on the reference machine under ``ulimit -v 8000000``, one
thread (OMP_NUM_THREADS=1), one mode at a time.
"""
from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BALANCED = ROOT / "circuits" / "balanced_ei.toml"


def _circuit(n: int, p: float | None = None, steps: int | None = None):
    import neurosubset as ns

    if n == 10120 and p is None and steps is None:
        return ns.Circuit.from_toml(BALANCED)
    spec = ns.Circuit.from_toml(BALANCED).to_dict()
    if steps is not None:
        spec.update(dynamics="discrete", steps=steps)
    n_e, n_i = int(0.8 * (n - 120)), (n - 120) - int(0.8 * (n - 120))
    p = min(1.0, 160 / n_e) if p is None else p
    spec["regions"]["E"]["size"], spec["regions"]["I"]["size"] = n_e, n_i
    for proj in spec["projections"]:
        if proj["pre"] in ("E", "I") and proj["post"] in ("E", "I", "OUT"):
            proj["p"] = p
    spec["name"] = f"balanced_ei_{n}"
    return ns.Circuit.from_dict(spec)


def _allocs(c, readout: bool):
    import neurosubset as ns

    budget = min(10_000, int(c.eligible["E->E"].sum()) // 2)
    ee = ns.allocate(c, budget, strategy="spread-rows", within=["E->E"], seed=0)
    if not readout:
        return ee
    masks = dict(ee.masks)
    masks["E->OUT"] = c.eligible["E->OUT"]
    return ns.Allocation.from_masks(c, masks, strategy="readout+spread-rows")


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv: list[str], circuit=None) -> dict:
    import torch

    import neurosubset as ns

    torch.set_num_threads(1)
    mode = argv[0]
    n = int(argv[1]) if len(argv) > 1 else 10120
    layout = argv[2] if len(argv) > 2 else "auto"
    out: dict = {"mode": mode, "neurons": n, "layout": layout}
    t0, c0 = time.perf_counter(), time.process_time()
    # gfp N P: connection probability P instead of the in-degrees
    p = float(argv[2]) if mode == "gfp" and len(argv) > 2 and argv[2] != "few" else None
    steps = int(argv[3]) if mode == "step" and len(argv) > 3 and argv[3].isdigit() else None
    c = _circuit(n, p, steps) if circuit is None else circuit
    out.update(load_wall_s=time.perf_counter() - t0, load_cpu_s=time.process_time() - c0,
               check=c.stability.check if hasattr(c.stability, "check") else None,
               synapses=int(sum(r.size for r, _ in ns.dynamics.sparse_map.structure_of(c).values())))
    if mode == "load":
        pass
    elif mode == "eig":
        from neurosubset.dynamics.sparse_map import draw_sparse_weights, sparse_max_real_eig, structure_of

        st = structure_of(c)
        values = draw_sparse_weights(c, np.random.default_rng(0), st)
        t, cpu = time.perf_counter(), time.process_time()
        out.update(max_real_eig=sparse_max_real_eig(c, st, values), wall_s=time.perf_counter() - t,
                   cpu_s=time.process_time() - cpu)
    elif mode in ("certify", "gfp"):
        alloc = _allocs(c, readout=False)
        if mode == "gfp" and argv[-1] == "few":
            masks = {k: np.zeros_like(v) for k, v in c.eligible.items()}
            masks["E->E"][:5] = c.eligible["E->E"][:5]
            alloc = ns.Allocation.from_masks(c, masks, strategy="first-5-rows")
        out["plastic"] = alloc.size
        methods = ("iterative", "exact") if mode == "gfp" else (
            ("iterative",) if layout in ("sparse", "auto") else ("auto",))
        for method in methods:
            t, cpu = time.perf_counter(), time.process_time()
            cert = ns.certify(c, alloc, m=4, method=method, dale=False, stable=False)
            out[method] = {"wall_s": time.perf_counter() - t, "cpu_s": time.process_time() - cpu,
                           "plastic_rank": cert.plastic_rank, "full_rank": cert.full_rank, "verdict": cert.verdict,
                           "method": cert.method, "estimate": cert.estimate, "gap": [cert.plastic_gap, cert.full_gap]}
    elif mode == "mp":
        trials = int(argv[3]) if len(argv) > 3 else 32
        alloc = _allocs(c, readout=True)
        out["plastic"] = alloc.size
        t, cpu = time.perf_counter(), time.process_time()
        stable = argv[-1] == "stable"
        ds = ns.match_probability(c, alloc, m=4, trials=trials, seed=0, options=ns.FitOptions(
            dale=False, stable=stable, weights_layout=layout))
        if stable:
            out.update(stable=True, rejected=int(ds.teacher_rejected.sum() + ds.student_rejected.sum()),
                       max_real_eig=[float(ds.max_real_eig.min()), float(ds.max_real_eig.max())])
        out.update(wall_s=time.perf_counter() - t, cpu_s=time.process_time() - cpu, mp=float(ds.mp),
                   trials=trials, weights_layout=ds.attrs["weights_layout"], solver=ds.attrs["solver"],
                   decision_kind=ds.attrs["decision_kind"], verdict=ds.attrs.get("certificate_verdict"),
                   certificate_method=ds.attrs.get("certificate_method"),
                   decisions=np.unique(ds.decision.values).tolist(), max_residual=float(ds.residual.max()))
    elif mode == "scale":  # the scaling table's row: certify, one LM iteration and the lifted decider, one process
        # the dense lifted decider's SVDs over all hidden rates ((N_hidden m)^2) are not run above 2,000 neurons
        for sub in ("certify", "step", "lifted") if layout == "sparse" or n <= 2000 else ("certify", "step"):
            t, cpu = time.perf_counter(), time.process_time()
            res = main([sub, str(n), layout, "--loaded"], circuit=c)
            out[sub] = {k: res[k] for k in res if k in ("wall_s", "cpu_s", "residual", "status", "iterative", "auto")}
            out[sub].setdefault("cpu_s", time.process_time() - cpu)
            out[sub].setdefault("wall_s", time.perf_counter() - t)
    elif mode in ("step", "lifted"):
        from neurosubset.dynamics import DTYPE, PlasticMap
        from neurosubset.dynamics.sparse_map import (SparsePlasticMap, draw_sparse_trials, plastic_value_positions,
                                                     sparse_system, structure_of)

        alloc = _allocs(c, readout=True)
        out["plastic"] = alloc.size
        st = structure_of(c)
        if layout == "sparse":
            draws = draw_sparse_trials(c, st, 4, 1, 0)
            system = sparse_system(c, st, plastic_value_positions(c, st, alloc))
            fmap = SparsePlasticMap(c, alloc, system, draws.student_init, torch.as_tensor(draws.probes))
            targets = torch.as_tensor(system.solve(draws.teacher[0], draws.probes[0])[0])[None]
            own = torch.as_tensor(draws.student_init[:, system.plastic])
        else:
            from neurosubset.draws import draw_trials

            draws = draw_trials(c, 4, 1, 0)
            fmap = PlasticMap(c, alloc, {k: torch.as_tensor(v, dtype=DTYPE) for k, v in draws.student_init.items()},
                              torch.as_tensor(draws.probes, dtype=DTYPE))
            targets = ns.dynamics.forward(c, {k: torch.as_tensor(v, dtype=DTYPE) for k, v in draws.teacher.items()},
                                          fmap.probes).flatten(-2)
            own = torch.as_tensor(np.concatenate([draws.student_init[k].reshape(1, -1)[:, alloc.indices[k]]
                                                  for k in c.weight_names], axis=-1))
        t, cpu = time.perf_counter(), time.process_time()
        if mode == "step":
            fmap.value_and_jacobian(own)
            out["what"] = "value_and_jacobian, one problem (the work of one LM iteration per restart)"
        else:
            from neurosubset.solvers.lifted import solve_lifted
            from neurosubset.solvers.sparse_lifted import solve_lifted_sparse

            solve = solve_lifted_sparse if layout == "sparse" else solve_lifted
            _, resid, status = solve(fmap, targets, own, alloc, None, tol=1e-8)
            out.update(residual=float(resid[0]), status=int(status[0]))
        out.update(wall_s=time.perf_counter() - t, cpu_s=time.process_time() - cpu)
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    out["peak_rss_mb"] = _peak_mb()
    return out


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1:])), flush=True)
