"""Where in the worm must plastic synapses be for the sensory -> motor map to be learnable, by fitting? (issue 16)

``celegans_allocations.py`` answers with exact certificates only; this script adds the match probability from
``ns.match_probability`` for a handful of its allocations on ``ns.celegans("cook2019-herm")`` at ``m = 2``:

- **unconstrained** (``dale=False, stable=False``, 32 trials): ``ns.Auto`` uses the exact lifted-rates decider of
  ``neurosubset.solvers.lifted`` (a witness or a proof per trial) and does not fit the allocations certified "zero"
  (their MP = 0 is proven: decision "rank_certificate"). Trials the lifted decider leaves open (rows with fewer
  plastic synapses than m, as in the minimal optimal allocation) go to the LM; ``decision_kind`` says per
  allocation whether every trial was decided exactly; it is read from each result, not assumed.
- **biological** (``dale=True, stable=True``, 8 trials): Dale's signs and stable students.
- Both settings use a bounded LM effort for the trials the exact deciders leave open, ``Auto(restarts=2,
  max_rounds=1, iterations=200)`` (the library default, 4 x 8 rounds of 400 steps, ran > 7 minutes on the optimal
  allocation without finishing 32 trials). Where the LM decides, an unmatched trial is not a proof, so MP there is a
  LOWER BOUND (``decision_kind`` "lower bound"; hollow markers in the figure).

Allocations: budgets relative to ``minimal_budget(worm, m=2) = 251`` (measured by ``celegans_allocations.py``,
68-109 s per call, so not recomputed here; the certificates' ``full_rank`` = dim V = 251 is checked instead):
spread-rows and random over all chemical synapses at 1.1x, 2x, 4x that budget, spread-rows onto motor neurons, all
synapses onto motor neurons, the even three-way split over sensory->inter / inter->inter / inter->motor, the greedy
optimal allocation, and all chemical synapses; then spread-rows at 4x and all chemical synapses again on the worm
with its gap junctions (``ns.celegans(gap_junctions=True)``: a fixed Laplacian, one symmetric conductance per pair,
never plastic, so the budget stays over chemical synapses; dim V there is the certificate's ``full_rank``).

Run: ``python analysis/celegans_mp.py [--quick] [--out DIR]`` (``--quick``: Witvliet 2021 stage 1, m = 1, two
allocations, 4 trials; minimal_budget is computed there, as it is fast).
"""
from __future__ import annotations

import json
import time

import numpy as np
import xarray as xr

import neurosubset as ns
from neurosubset import FIT_STATUS
from neurosubset._internal import DECISION, meta

if __package__ in (None, ""):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (base_attrs, cell_type_blocks, certify_record, describe, figure, parse_args, projection_groups, save,
                    split_allocation)

NAME = "celegans_mp"
MINIMAL_BUDGET_COOK_M2 = 251  # ns.minimal_budget(ns.celegans("cook2019-herm"), m=2): measured 251 (68-109 s)
CONSTRAINTS = ("none", "dale+stable")
TRIALS = {"none": 32, "dale+stable": 8}
QUICK_TRIALS = 4
LM_SOLVER = {"restarts": 2, "max_rounds": 1, "iterations": 200}  # the bounded LM effort (both settings)
COLORS = {"zero": "tab:red", "positive": "tab:green", "one": "tab:blue", "unproven": "tab:gray"}


def _allocations(worm: ns.Circuit, minimal: int, quick: bool, seed: int) -> list[tuple[str, str, ns.Allocation]]:
    """(label, strategy, allocation) for every allocation the script fits."""
    groups = projection_groups(cell_type_blocks(worm))
    chem = groups["all chemical"]

    def alloc(budget, strategy, within):
        return ns.allocate(worm, budget, strategy=strategy, within=within, seed=seed)

    b11 = round(1.1 * minimal)
    if quick:
        return [(f"all chemical, spread-rows, 1.1x ({b11})", "spread-rows", alloc(b11, "spread-rows", chem)),
                ("all chemical synapses", "full", ns.Allocation.from_masks(
                    worm, {w: worm.eligible[w] for w in chem}, strategy="full"))]
    out = []
    for factor in (1.1, 2, 4):
        budget = round(factor * minimal)
        for strategy in ("spread-rows", "random"):
            out.append((f"all chemical, {strategy}, {factor:g}x ({budget})", strategy, alloc(budget, strategy, chem)))
    out.append((f"onto motor, spread-rows, 1.1x ({b11})", "spread-rows", alloc(b11, "spread-rows",
                                                                               groups["into motor"])))
    out.append(("all synapses onto motor", "full", ns.Allocation.from_masks(
        worm, {w: worm.eligible[w] for w in groups["into motor"]}, strategy="full")))
    out.append((f"split S->I / I->I / I->M, spread-rows, 1.1x ({b11})", "spread-rows",
                split_allocation(worm, groups, b11, "spread-rows", seed)))
    t = time.perf_counter()
    opt = ns.optimal_allocation(worm, b11, m=2, within=chem, seed=seed)
    print(f"optimal_allocation: {time.perf_counter() - t:.0f} s", flush=True)
    out.append((f"optimal (greedy basis), 1.1x ({b11})", "optimal", opt))
    out.append(("all chemical synapses", "full", ns.Allocation.from_masks(
        worm, {w: worm.eligible[w] for w in chem}, strategy="full")))
    return out


def _fit(worm, alloc, m, constraint, trials, seed) -> dict:
    kw = {"dale": constraint != "none", "stable": constraint != "none", "solver": ns.Auto(**LM_SOLVER)}
    t = time.perf_counter()
    ds = ns.sweep_allocations(worm, {"allocation": alloc}, m=m, trials=trials, seed=seed, **kw).isel(allocation=0,
                                                                                                     m=0)
    wall = time.perf_counter() - t
    status = np.bincount(ds.fit_status.values.astype(np.int64), minlength=len(FIT_STATUS.meanings))
    decisions = {} if "decision" not in ds else {
        DECISION.meanings[int(k)]: int(v) for k, v in zip(*np.unique(ds.decision.values, return_counts=True))}
    return {"mp": float(ds.mp), "mp_low": float(ds.mp_low), "mp_high": float(ds.mp_high),
            "matched": int(ds.matched.sum()), "trials": trials, "decision_kind": str(ds.decision_kind.values),
            "fit_status": status, "decisions": json.dumps(decisions), "fit_s": wall,
            "solver": str(ds.solver.values), "median_residual": float(np.nanmedian(ds.residual.values))
            if np.isfinite(ds.residual.values).any() else float("nan")}


def run(args) -> xr.Dataset:
    dataset, m = ("witvliet2021-1", 1) if args.quick else ("cook2019-herm", 2)
    worm = ns.celegans(dataset, seed=args.seed)
    if args.quick:
        minimal = int(ns.minimal_budget(worm, m=m, seed=args.seed))
    else:
        minimal = MINIMAL_BUDGET_COOK_M2
    allocs = _allocations(worm, minimal, args.quick, args.seed)
    rows = []
    for label, strategy, alloc in allocs:
        cert = certify_record(worm, alloc, m, args.seed)
        if not args.quick and cert["full_rank"] != minimal:
            raise RuntimeError(f"dim V = {cert['full_rank']} != the recorded minimal budget {minimal}")
        fits = {}
        for constraint in CONSTRAINTS:
            trials = QUICK_TRIALS if args.quick else TRIALS[constraint]
            fits[constraint] = _fit(worm, alloc, m, constraint, trials, args.seed)
            f = fits[constraint]
            print(f"{label:<52} {constraint:<11} rank {cert['plastic_rank']}/{cert['full_rank']} "
                  f"{cert['verdict']:<8} MP {f['mp']:.3f} [{f['mp_low']:.3f}, {f['mp_high']:.3f}] "
                  f"{f['decision_kind']:<11} median residual {f['median_residual']:.1e} "
                  f"status {dict(zip(FIT_STATUS.meanings, f['fit_status'].tolist()))} "
                  f"decisions {f['decisions']} ({f['fit_s']:.0f} s)", flush=True)
        rows.append({"label": label, "strategy": strategy, "budget": alloc.size, **cert, "fits": fits,
                     "gap": False})
    if not args.quick:  # the same chemical allocations with the fixed gap-junction Laplacian in the circuit
        rows += _gap_rows(dataset, m, minimal, args.seed)
    return _dataset(rows, worm, dataset, m, minimal)


def _gap_rows(dataset: str, m: int, minimal: int, seed: int) -> list[dict]:
    """Spread-rows at 4x and all chemical synapses plastic, on ``ns.celegans(gap_junctions=True)`` (gap junctions
    fixed: one symmetric conductance per pair, never plastic; the budget is over chemical synapses only)."""
    worm = ns.celegans(dataset, gap_junctions=True, seed=seed)
    chem = projection_groups(cell_type_blocks(worm))["all chemical"]
    allocs = [(f"all chemical, spread-rows, 4x ({round(4 * minimal)}), + gap junctions", "spread-rows",
               ns.allocate(worm, round(4 * minimal), strategy="spread-rows", within=chem, seed=seed)),
              ("all chemical synapses, + gap junctions", "full",
               ns.Allocation.from_masks(worm, {w: worm.eligible[w] for w in chem}, strategy="full"))]
    rows = []
    for label, strategy, alloc in allocs:
        cert = certify_record(worm, alloc, m, seed)
        fits = {c: _fit(worm, alloc, m, c, TRIALS[c], seed) for c in CONSTRAINTS}
        for c, f in fits.items():
            print(f"{label:<52} {c:<11} rank {cert['plastic_rank']}/{cert['full_rank']} {cert['verdict']:<8} MP "
                  f"{f['mp']:.3f} [{f['mp_low']:.3f}, {f['mp_high']:.3f}] {f['decision_kind']} ({f['fit_s']:.0f} s)",
                  flush=True)
        rows.append({"label": label, "strategy": strategy, "budget": alloc.size, **cert, "fits": fits, "gap": True})
    return rows


def _dataset(rows, worm, dataset, m, minimal) -> xr.Dataset:
    def per(key, dtype=float):
        return np.array([[r["fits"][c][key] for c in CONSTRAINTS] for r in rows], dtype=dtype)

    dims = ("allocation", "constraint")
    one = {"units": "1"}
    lower = ("dale+stable: the LM's unmatched trials are not proofs, so mp / mp_low / mp_high there bound the "
             "solver's match rate and MP itself can be higher (see decision_kind per entry)")
    data = {
        "mp": (dims, per("mp"), meta("mp", comment=lower)),
        "mp_low": (dims, per("mp_low"), meta("mp_low")),
        "mp_high": (dims, per("mp_high"), meta("mp_high", comment=lower)),
        "n_matched": (dims, per("matched", np.int64), one),
        "trials": (dims, per("trials", np.int64), one),
        "decision_kind": (dims, per("decision_kind", object), {"comment": "exact: every trial decided by an exact "
                                                               "decider or the rank certificate; else lower bound"}),
        "decision_counts": (dims, per("decisions", object),
                            {"comment": "JSON: decider that settled the trials -> trials"}),
        "fit_status_count": (dims + ("fit_status",),
                             np.array([[r["fits"][c]["fit_status"] for c in CONSTRAINTS] for r in rows]), one),
        "fit_time": (dims, per("fit_s"), {"units": "s"}),
        "median_residual": (dims, per("median_residual"), meta("residual", comment="median over trials; "
                                "decision rank_certificate: the student as drawn, not fitted")),
        "solver": (dims, per("solver", object), {}),
        "plastic_rank": ("allocation", np.array([r["plastic_rank"] for r in rows]), meta("plastic_rank")),
        "full_rank": ("allocation", np.array([r["full_rank"] for r in rows]), meta("full_rank")),
        "verdict": ("allocation", np.array([r["verdict"] for r in rows], dtype=object), meta("verdict")),
        "certify_time": ("allocation", np.array([r["certify_s"] for r in rows]), {"units": "s"}),
    }
    coords = {"allocation": [r["label"] for r in rows], "constraint": list(CONSTRAINTS),
              "fit_status": list(FIT_STATUS.meanings),
              "strategy": ("allocation", [r["strategy"] for r in rows]),
              "budget": ("allocation", np.array([r["budget"] for r in rows]), one),
              "gap_junctions": ("allocation", np.array([r["gap"] for r in rows]),
                                {"comment": "the circuit has the fixed gap-junction Laplacian (never plastic)"})}
    ds = xr.Dataset(data, coords=coords)
    for name in ("decision_kind", "decision_counts", "solver", "verdict"):
        ds[name] = ds[name].astype(str).assign_attrs(ds[name].attrs)
    ds.attrs.update({"dataset": dataset, "m": m, "minimal_budget": minimal,
                     "minimal_budget_source": "computed" if dataset != "cook2019-herm" else
                     "constant: measured by analysis/celegans_allocations.py (checked = certify full_rank)",
                     "n_neurons": sum(r.size for r in worm.regions if r.role == "hidden"),
                     "constraint_none": "dale=False, stable=False",
                     "constraint_dale_stable": "dale=True, stable=True",
                     "solver": f"ns.Auto({LM_SOLVER}) in both settings: exact deciders first, a bounded LM for the "
                               "rest; MP is a LOWER BOUND wherever decision_kind is 'lower bound'",
                     "mp_interval": "95% Wilson score interval over trials"})
    return ds


def _figure(ds: xr.Dataset):
    from matplotlib.lines import Line2D

    n = ds.sizes["allocation"]
    fig, axes = figure(1, 1, width=9.5, height=0.32 * n + 1.6)
    ax = axes[0, 0]
    y = np.arange(n)
    colors = np.array([COLORS.get(str(v), "tab:gray") for v in ds.verdict.values])
    trials = {c: int(ds.trials.sel(constraint=c).max()) for c in CONSTRAINTS}
    handles = []
    for constraint, marker, dy in zip(CONSTRAINTS, ("o", "s"), (-0.15, 0.15)):
        sub = ds.sel(constraint=constraint)
        mp = sub.mp.values
        err = np.vstack([mp - sub.mp_low.values, sub.mp_high.values - mp])
        lower = np.array([str(v) != "exact" for v in sub.decision_kind.values])
        ax.errorbar(mp, y + dy, xerr=err, fmt="none", ecolor="k", elinewidth=0.8, capsize=2)
        ax.scatter(mp[~lower], (y + dy)[~lower], marker=marker, c=colors[~lower], edgecolors="k", zorder=3)
        ax.scatter(mp[lower], (y + dy)[lower], marker=marker, facecolors="white", edgecolors=colors[lower],
                   linewidths=1.5, zorder=3)
        text = {"none": "unconstrained (dale=False, stable=False)", "dale+stable": "Dale + stable students"}
        handles.append(Line2D([], [], ls="", marker=marker, mfc="tab:gray", mec="k",
                              label=f"{text[constraint]}, {trials[constraint]} trials"))
    handles.append(Line2D([], [], ls="", marker="o", mfc="white", mec="tab:gray", mew=1.5,
                          label="hollow: LOWER BOUND (bounded LM decided some trials)"))
    handles += [Line2D([], [], ls="", marker="o", mfc=c, mec="k", label=f"ns.certify: {v}")
                for v, c in COLORS.items() if v in set(map(str, ds.verdict.values))]
    ax.set_yticks(y, [f"{a} [rank {r}/{f}]" for a, r, f in
                      zip(ds.allocation.values, ds.plastic_rank.values, ds.full_rank.values)])
    ax.invert_yaxis()
    ax.set_xlim(-0.05, 1.05)
    ax.set_xlabel("match probability MP (95% Wilson score intervals over trials)")
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7)
    ax.set_title(f"C. elegans ({ds.attrs['dataset']}), m = {ds.attrs['m']}, dim V = {ds.attrs['minimal_budget']}: "
                 "MP by fitting (colour: certificate verdict)")
    return fig


def main(argv=None) -> None:
    args = parse_args(__doc__.splitlines()[0], argv)
    started = time.perf_counter()
    ds = run(args)
    claim = ("where decided exactly, MP by fitting agrees with the certificates; with Dale's law and stable "
             "students the bounded LM gives lower bounds")
    ds.attrs.update(base_attrs(NAME, args, claim=claim))
    save(describe(ds, NAME), _figure(ds), args, NAME, started)


if __name__ == "__main__":
    main()
