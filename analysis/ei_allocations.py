"""An inhibition-stabilized E/I circuit (circuits/ei_isn.toml): how should a budget of plastic synapses be split over
E->E, E->I, I->E, I->I and the read-out, with and without Dale's law and the stability of the student?

Question: the benchmark's answer for a circuit that could exist. With ``dale`` the fitted plastic synapses keep
their region's sign (E excitatory, I inhibitory); with ``stable`` a match counts only if the student's fixed point
is stable (``max Re(eig W) < 1``), and teachers and students are drawn from the init conditioned on stability.
Every allocation is measured under the four combinations on the same trials (same seed), with its certificate
verdict under each. Panel A: one budget split over the projections (single projections, pairs, spread over all).
Panel B: read-out-only allocations (affine: every decision exact, by least squares or BVLS) against the budget,
with and without Dale's law; they show how much the sign constraint alone changes the answer.

Allocations fitted by Levenberg-Marquardt give lower bounds (``decision_kind = "lower bound"`` per point; files
written before the merge with ``mp_estimate`` say "lower_bound", read by ``neurosubset.results.decision_kind``); affine
ones are exact up to sampling. The wall time of each condition is recorded (same run, one torch thread), so the
cost of the constraints is read off beside the unconstrained run.

Run: ``python analysis/ei_allocations.py [--quick] [--out DIR]``.
"""
from __future__ import annotations

import time

import numpy as np

import neurosubset as ns
from neurosubset.dynamics import is_affine

if __package__ in (None, ""):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, band_note, base_attrs, figure, mp_axes, parse_args, plot_mp, records_to_dataset, save

NAME = "ei_allocations"
CONDITIONS = [(False, False), (True, False), (False, True), (True, True)]  # (dale, stable)
LABELS = {(False, False): "unconstrained", (True, False): "Dale", (False, True): "stable",
          (True, True): "Dale + stable"}
SPLITS = {  # name -> fractions of the budget per projection
    "E->E": {"E->E": 1.0},
    "E->I": {"E->I": 1.0},
    "I->E": {"I->E": 1.0},
    "I->I": {"I->I": 1.0},
    "read-out": {"E->OUT": 1.0},
    "E->E + I->E": {"E->E": 0.5, "I->E": 0.5},
    "E->I + I->E": {"E->I": 0.5, "I->E": 0.5},
    "loop (4 x 1/4)": {"E->E": 0.25, "E->I": 0.25, "I->E": 0.25, "I->I": 0.25},
    "read-out + E->E": {"E->OUT": 0.5, "E->E": 0.5},
    "all five": {"E->E": 0.2, "E->I": 0.2, "I->E": 0.2, "I->I": 0.2, "E->OUT": 0.2},
}


def record(circuit, alloc, probes, trials, seed, solver, dale, stable, **keys):
    start = time.perf_counter()
    ds = ns.sweep_allocations(circuit, {"allocation": alloc}, m=probes, trials=trials, seed=seed, solver=solver,
                              dale=dale, stable=stable).isel(allocation=0, m=0)
    seconds = time.perf_counter() - start
    status = ds.fit_status.values
    flags = ns.FIT_STATUS
    rec = {**keys, "dale": int(dale), "stable_required": int(stable),
           "mp": float(ds.mp), "mp_low": float(ds.mp_low), "mp_high": float(ds.mp_high),
           "n_matched": int(ds.matched.sum()), "trials": trials, "budget": alloc.size,
           "solver": str(ds.solver.values), "decision_kind": str(ds.decision_kind.values),
           "verdict": str(ds.verdict.values), "plastic_rank": int(ds.plastic_rank),
           "full_rank": int(ds.full_rank), "seconds": seconds,
           "n_unstable": int((status == flags["unstable"]).sum()),
           "n_infeasible": int((status == flags["infeasible"]).sum()),
           "n_sign_violations": int(ds.sign_violations.sum()) if "sign_violations" in ds else 0,
           "n_matched_unstable": int((ds.matched.values & ~ds.stable.values).sum()),
           "rejected_draws": int(ds.teacher_rejected.sum() + ds.student_rejected.sum())
           if "teacher_rejected" in ds else 0,
           "mp_first_round": float(ds.mp_first_round)}
    print(f"{keys} dale={int(dale)} stable={int(stable)}: MP {rec['mp']:.3f} [{rec['mp_low']:.2f}, "
          f"{rec['mp_high']:.2f}] ({rec['solver']}, {rec['verdict']}) {seconds:.1f} s", flush=True)
    return rec


def main(argv=None) -> None:
    args = parse_args(__doc__.splitlines()[0], argv)
    started = time.perf_counter()
    quick = args.quick
    circuit = ns.Circuit.from_toml(REPO / "circuits" / "ei_isn.toml")
    budget, m = (12, 2) if quick else (24, 4)
    trials_lm, trials_exact = (6, 20) if quick else (40, 200)
    solver = (ns.Auto(restarts=2, max_rounds=2, iterations=80) if quick
              else ns.Auto(restarts=4, max_rounds=4, iterations=300))
    splits = dict(list(SPLITS.items())[:3]) if quick else SPLITS
    records = []
    for name, fractions in splits.items():
        alloc = ns.allocate(circuit, budget, strategy="spread-rows", fractions=fractions, seed=args.seed)
        affine = is_affine(circuit, alloc, seed=args.seed)
        for dale, stable in CONDITIONS:
            records.append(record(circuit, alloc, m, trials_exact if affine else trials_lm, args.seed, solver,
                                  dale, stable, panel="split", allocation=name, m=m))
    per_row = [2, 4, 6] if quick else [2, 3, 4, 5, 6, 8, 10, 12, 16, 20, 24]
    m_ro = 3
    for k in per_row:
        alloc = ns.allocate(circuit, k * circuit.shape("E->OUT")[0], strategy="spread-rows", within=["E->OUT"],
                            seed=args.seed)
        for dale in (False, True):
            records.append(record(circuit, alloc, m_ro, trials_exact, args.seed, solver, dale, True,
                                  panel="readout", allocation=f"read-out {k} per row", m=m_ro))
    ds = records_to_dataset(records, ["panel", "allocation", "dale", "stable_required"], NAME, attrs=base_attrs(
        NAME, args, claim="beyond the paper: how Dale's law and stable students change the best split of a budget "
                          "over an inhibition-stabilized E/I circuit", circuit="circuits/ei_isn.toml",
        circuit_toml=circuit.to_toml(), budget=budget, m_split=m,
        m_readout=m_ro, trials_lm=trials_lm, trials_exact=trials_exact, solver=solver.to_attrs(),
        spec_unstable_fraction=circuit.stability.unstable_fraction,
        note="MP of LM-fitted allocations is a lower bound (decision_kind); affine ones are exact up to sampling"))
    fig = _figure(ds, splits, per_row, circuit)
    save(ds, fig, args, NAME, started)


def _figure(ds, splits, per_row, circuit):
    fig, axes = figure(2, width=5.6, height=3.8)
    ax = axes[0, 0]
    names = list(splits)
    x = np.arange(len(names))
    for j, cond in enumerate(CONDITIONS):
        sel = ds.sel(panel="split", dale=int(cond[0]), stable_required=int(cond[1]))
        mp = np.array([float(sel.mp.sel(allocation=n)) for n in names])
        low = np.array([float(sel.mp_low.sel(allocation=n)) for n in names])
        high = np.array([float(sel.mp_high.sel(allocation=n)) for n in names])
        off = (j - 1.5) * 0.18
        # Wilson bounds are floating point: clip the rounding-level negative arms at MP = 0 or 1
        yerr = np.clip([mp - low, high - mp], 0.0, None)
        ax.errorbar(x + off, mp, yerr=yerr, fmt="o", ms=3.5, capsize=2, label=LABELS[cond])
    ax.set_xticks(x, names, rotation=40, ha="right")
    ax.set_ylabel("match probability MP (fraction of trials)")
    ax.set_ylim(-0.05, 1.05)
    ax.set_title(f"A: budget {int(ds.attrs['budget'])} split over projections, m = {int(ds.attrs['m_split'])}")
    ax.legend(loc="best", frameon=False)
    ax = axes[0, 1]
    rows = circuit.shape("E->OUT")[0]
    budgets = np.array(per_row) * rows
    for dale in (0, 1):
        sel = ds.sel(panel="readout", dale=dale, stable_required=1)
        keys = [f"read-out {k} per row" for k in per_row]
        plot_mp(ax, budgets, [float(sel.mp.sel(allocation=k)) for k in keys],
                [float(sel.mp_low.sel(allocation=k)) for k in keys],
                [float(sel.mp_high.sel(allocation=k)) for k in keys],
                label="Dale's law" if dale else "signs free", offset=0.3 * dale)
    mp_axes(ax, xlabel="plastic read-out synapses E->OUT (count)",
            title=f"B: read-out only (exact), m = {int(ds.attrs['m_readout'])}")
    band_note(fig)
    return fig


if __name__ == "__main__":
    main()
