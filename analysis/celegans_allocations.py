"""Where in the worm must plastic synapses be for the sensory -> motor map to be learnable? (issue 16)

Circuit: ``ns.celegans("cook2019-herm")``: all 302 neurons hidden, the 3,709 chemical connections with their synapse
counts, probes onto the 85 sensory neurons through a fixed identity, the 126 motor neurons' rates read out through a
fixed identity, steady linear dynamics, Dale signs from acetylcholine / GABA (regions by cell type, split by sign).
The teacher maps ``m`` probes to motor rates; an allocation is learnable (MP > 0) only if its plastic rank reaches
dim V, and ``ns.certify`` decides that exactly (GF(p) ranks): "zero" proves MP = 0, "positive" proves MP > 0
(these allocations are not affine, so never "one"; Dale's law and stability are reported with it).

Questions, at ``m = 2`` and the issue's budget ``1.1 x minimal_budget``:

1. capacity: the rank of *all* synapses of one block (sensory->inter, inter->inter, inter->motor, into motor, ...)
   plastic: can a block alone ever make the map learnable, at any budget?
2. the budget placed inside one block or split evenly over sensory->inter / inter->inter / inter->motor, each spread
   over postsynaptic neurons (``spread-rows``), concentrated on few (``concentrated-rows``) or random.
3. the same spread allocation over all chemical synapses without Dale signs (rank verdicts do not depend on signs).
4. where the greedy optimal allocation (``ns.optimal_allocation``, a maximal-rank column basis) puts the same budget,
   and how large a spread or random budget over all chemical synapses must be to become learnable (2x .. 8x).
5. the same question over Witvliet et al. 2021's eight developmental stages (L1 to adult; nerve-ring neurons
   only): per stage dim V, the capacity of all synapses onto motor neurons and of all but motor->motor, and where
   the optimal allocation of 1.1 x minimal_budget puts its synapses.

MP by fitting is not computed here (the certificates answer the question exactly where they say "zero"); it is in
``analysis/celegans_mp.py`` (the lifted-rates decider of ``neurosubset/solvers/lifted.py``, exact where it decides).

Run: ``python analysis/celegans_allocations.py [--quick] [--out DIR]`` (``--quick``: Witvliet 2021 stage 1, m = 1).
"""
from __future__ import annotations

import json
import time

import numpy as np
import xarray as xr

import neurosubset as ns
from neurosubset._internal import meta

if __package__ in (None, ""):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (WORM_SPLIT, base_attrs, cell_type_blocks, certify_record, describe, eligible_count, figure,
                    parse_args, projection_groups, save, split_allocation)

NAME = "celegans_allocations"
TYPES = ("sensory", "inter", "motor")
STRATEGIES = ("spread-rows", "concentrated-rows", "random")
SPLIT = WORM_SPLIT  # the three-way split of question 2
COLORS = {"zero": "tab:red", "positive": "tab:green", "one": "tab:blue", "unproven": "tab:gray",
          "infeasible": "white"}


def _record(worm, blocks, label, group, strategy, budget, alloc, m, seed, dale=True):
    counts = alloc.counts
    rec = {"allocation": label, "group": group, "strategy": strategy, "budget": budget, "dale": dale,
           "n_plastic": alloc.size, **certify_record(worm, alloc, m, seed),
           "blocks": {k: sum(counts[w] for w in ws) for k, ws in blocks.items()}}
    print(f"{label:<48} M={alloc.size:4d} rank {rec['plastic_rank']}/{rec['full_rank']} {rec['verdict']:<9} "
          f"({rec['certify_s']:.0f} s)", flush=True)
    return rec


def _infeasible(label, group, strategy, budget, eligible):
    print(f"{label:<48} infeasible: {eligible} eligible synapses < budget {budget}", flush=True)
    return {"allocation": label, "group": group, "strategy": strategy, "budget": budget, "dale": True,
            "n_plastic": 0, "plastic_rank": -1, "full_rank": -1, "verdict": "infeasible", "certify_s": 0.0,
            "blocks": {}}


def run(args) -> xr.Dataset:
    dataset, m = ("witvliet2021-1", 1) if args.quick else ("cook2019-herm", 2)
    worm = ns.celegans(dataset, seed=args.seed)
    blocks = cell_type_blocks(worm)
    groups = projection_groups(blocks)
    t = time.perf_counter()
    minimal = ns.minimal_budget(worm, m=m, seed=args.seed)
    minimal_s = time.perf_counter() - t
    need = {k: int(v) for k, v in minimal.by_projection.items() if v}
    budget = int(round(1.1 * int(minimal)))
    print(f"{dataset}: {sum(r.size for r in worm.regions if r.role == 'hidden')} neurons, "
          f"{eligible_count(worm, groups['all chemical'])} chemical connections; "
          f"minimal_budget(m={m}) = {int(minimal)} "
          f"({minimal_s:.0f} s), needed in every full-rank allocation: {need}; budget {budget}", flush=True)
    records = []
    # 1. capacity of each block alone: every synapse of the group plastic
    for group, names in groups.items():
        if group == "all chemical" and args.quick:
            continue
        alloc = ns.Allocation.from_masks(worm, {w: worm.eligible[w] for w in names}, strategy="full")
        records.append(_record(worm, blocks, f"all of {group}", group, "full", alloc.size, alloc, m, args.seed))
    # 2. the budget inside one group, or split evenly over the three blocks
    for group in ("all chemical", *SPLIT, "into motor"):
        names = groups.get(group, [])
        for strategy in STRATEGIES[:1] if args.quick else STRATEGIES:
            label = f"{group}, {strategy}"
            if eligible_count(worm, names) < budget:
                records.append(_infeasible(label, group, strategy, budget, eligible_count(worm, names)))
                continue
            alloc = ns.allocate(worm, budget, strategy=strategy, within=names, seed=args.seed)
            records.append(_record(worm, blocks, label, group, strategy, budget, alloc, m, args.seed))
    for strategy in STRATEGIES[:2]:
        alloc = split_allocation(worm, groups, budget, strategy, args.seed)
        records.append(_record(worm, blocks, f"split S->I / I->I / I->M, {strategy}", "split", strategy, budget,
                               alloc, m, args.seed))
    # 4. the optimal allocation of the same budget; spread / random at larger budgets
    t = time.perf_counter()
    alloc = ns.optimal_allocation(worm, budget, m=m, within=groups["all chemical"], seed=args.seed)
    print(f"optimal_allocation: {time.perf_counter() - t:.0f} s", flush=True)
    records.append(_record(worm, blocks, "optimal (greedy basis)", "all chemical", "optimal", budget, alloc, m,
                           args.seed))
    for factor in (2, 4) if args.quick else (2, 4, 8):
        for strategy in ("spread-rows", "random"):
            alloc = ns.allocate(worm, factor * budget, strategy=strategy, within=groups["all chemical"],
                                seed=args.seed)
            records.append(_record(worm, blocks, f"all chemical, {strategy}, {factor}x budget", "all chemical",
                                   strategy, factor * budget, alloc, m, args.seed))
    # 3. no Dale signs: a spread allocation of the unsigned worm (its regions differ, so its random choices do too)
    if not args.quick:
        plain = ns.celegans(dataset, dale=False, seed=args.seed)
        names = [w for ws in cell_type_blocks(plain).values() for w in ws]
        alloc = ns.allocate(plain, budget, strategy="spread-rows", within=names, seed=args.seed)
        records.append(_record(plain, cell_type_blocks(plain), "all chemical, spread-rows, no Dale", "all chemical",
                               "spread-rows", budget, alloc, m, args.seed, dale=False))
    ds = _dataset(records, worm, dataset, m, minimal, need, budget, minimal_s)
    return ds.merge(_stages(args, m))


STAGE_ALLOCATIONS = ("all onto motor", "all but motor->motor", "spread-rows, 1.1x minimal", "optimal, 1.1x minimal")


def _stages(args, m: int) -> xr.Dataset:
    """Question 5: per Witvliet 2021 stage, dim V, ranks of four allocations and the optimal one's share onto motor."""
    stages = (1, 8) if args.quick else tuple(range(1, 9))
    rank = np.zeros((len(stages), len(STAGE_ALLOCATIONS)), dtype=np.int64)
    full, minimal, onto_motor, neurons, chemical = (np.zeros(len(stages), dtype=np.int64) for _ in range(5))
    for k, stage in enumerate(stages):
        worm = ns.celegans(f"witvliet2021-{stage}", seed=args.seed)
        groups = projection_groups(cell_type_blocks(worm))
        minimal[k] = int(ns.minimal_budget(worm, m=m, seed=args.seed))
        budget = int(round(1.1 * minimal[k]))
        allocs = [ns.Allocation.from_masks(worm, {w: worm.eligible[w] for w in groups[g]})
                  for g in ("into motor", "all but motor->motor")]
        allocs.append(ns.allocate(worm, budget, strategy="spread-rows", within=groups["all chemical"],
                                  seed=args.seed))
        allocs.append(ns.optimal_allocation(worm, budget, m=m, within=groups["all chemical"], seed=args.seed))
        for j, alloc in enumerate(allocs):
            cert = ns.certify(worm, alloc, m=m, seed=args.seed)
            rank[k, j], full[k] = cert.plastic_rank, cert.full_rank
        onto_motor[k] = sum(allocs[-1].counts[w] for w in groups["into motor"])
        neurons[k] = sum(r.size for r in worm.regions if r.role == "hidden")
        chemical[k] = eligible_count(worm, groups["all chemical"])
        print(f"witvliet2021-{stage}: {neurons[k]} neurons, {chemical[k]} chemical, dim V {full[k]}, ranks "
              f"{dict(zip(STAGE_ALLOCATIONS, rank[k].tolist()))}, optimal onto motor {onto_motor[k]}/{budget}",
              flush=True)
    one = {"units": "1"}
    return xr.Dataset({"stage_plastic_rank": (("stage", "stage_allocation"), rank, meta("plastic_rank")),
                       "stage_full_rank": ("stage", full, meta("full_rank")),
                       "stage_minimal_budget": ("stage", minimal, one),
                       "stage_optimal_onto_motor": ("stage", onto_motor, one),
                       "stage_neurons": ("stage", neurons, one), "stage_chemical": ("stage", chemical, one)},
                      coords={"stage": np.array(stages), "stage_allocation": list(STAGE_ALLOCATIONS)})


def _dataset(records, worm, dataset, m, minimal, need, budget, minimal_s) -> xr.Dataset:
    labels = [r["allocation"] for r in records]
    block_names = sorted({k for r in records for k in r["blocks"]})
    coords = {"allocation": labels, "block": block_names,
              "group": ("allocation", [r["group"] for r in records]),
              "strategy": ("allocation", [r["strategy"] for r in records]),
              "dale": ("allocation", np.array([r["dale"] for r in records], dtype=np.int8))}
    data = {
        "plastic_rank": ("allocation", np.array([r["plastic_rank"] for r in records]), meta("plastic_rank")),
        "full_rank": ("allocation", np.array([r["full_rank"] for r in records]), meta("full_rank")),
        "verdict": ("allocation", np.array([r["verdict"] for r in records], dtype=object), meta("verdict")),
        "n_plastic": ("allocation", np.array([r["n_plastic"] for r in records]), {"units": "1"}),
        "budget": ("allocation", np.array([r["budget"] for r in records]), {"units": "1"}),
        "certify_time": ("allocation", np.array([r["certify_s"] for r in records]), {"units": "s"}),
        "block_plastic": (("allocation", "block"),
                          np.array([[r["blocks"].get(b, 0) for b in block_names] for r in records]), {"units": "1"}),
    }
    ds = xr.Dataset({k: (d, v, a) for k, (d, v, a) in data.items()}, coords=coords)
    ds["dale"].attrs["units"] = "1"
    ds.attrs.update({"dataset": dataset, "m": m, "minimal_budget": int(minimal), "budget": budget,
                     "minimal_budget_time_s": round(minimal_s, 1), "needed_by_projection": json.dumps(need),
                     "n_neurons": sum(r.size for r in worm.regions if r.role == "hidden"),
                     "n_chemical": sum(int(worm.eligible[w].sum()) for w in worm.weight_names),
                     "gain": float(next(p.gain for p in worm.projections if not p.fixed)),
                     "mp": "not computed (worm-size fitting too slow on this machine; certificates only)"})
    return ds


def _figure(ds: xr.Dataset):
    fig, axes = figure(1, 2, width=9.5, height=0.22 * ds.sizes["allocation"] + 1.4)
    _stage_panel(axes[1, 0], ds)
    ax = axes[0, 0]
    y = np.arange(ds.sizes["allocation"])
    full = int(ds.attrs["minimal_budget"])
    ranks = ds.plastic_rank.values
    colors = [COLORS[str(v)] for v in ds.verdict.values]
    ax.barh(y, np.where(ranks >= 0, ranks, 0), color=colors, edgecolor="k", linewidth=0.4)
    ax.axvline(full, color="k", ls="--", lw=0.8)
    ax.set_yticks(y, [f"{a} (M={n})" for a, n in zip(ds.allocation.values, ds.n_plastic.values)])
    ax.invert_yaxis()
    ax.set_xlabel(f"plastic rank (dashed: dim V = {full}; m = {ds.attrs['m']})")
    handles = [__import__("matplotlib.patches", fromlist=["Patch"]).Patch(facecolor=c, edgecolor="k", label=v)
               for v, c in COLORS.items() if v in set(map(str, ds.verdict.values))]
    ax.legend(handles=handles, title="ns.certify", loc="lower right")
    ax.set_title(f"C. elegans ({ds.attrs['dataset']}): where must plastic synapses be? Budget M = "
                 f"{ds.attrs['budget']} (1.1 x minimal) unless stated; exact certificates, MP not fitted")
    return fig


def _stage_panel(ax, ds: xr.Dataset) -> None:
    stages = ds.stage.values
    for j, name in enumerate(ds.stage_allocation.values):
        frac = ds.stage_plastic_rank.values[:, j] / ds.stage_full_rank.values
        ax.plot(stages, frac, marker="os^v"[j % 4], label=str(name))
    ax.plot(stages, ds.stage_optimal_onto_motor.values / np.round(1.1 * ds.stage_minimal_budget.values), "k:",
            label="share of the optimal allocation onto motor neurons")
    ax.set_xlabel("Witvliet 2021 developmental stage (1 = L1 ... 8 = adult)")
    ax.set_ylabel("plastic rank / dim V (1 = learnable); share")
    ax.set_title(f"Developmental stages, m = {ds.attrs['m']}: exact certificates")
    ax.legend(loc="lower left")


def main(argv=None) -> None:
    args = parse_args(__doc__.splitlines()[0], argv)
    started = time.perf_counter()
    ds = run(args)
    ds.attrs.update(base_attrs(NAME, args, claim="the sensory -> motor map of the worm is learnable only with "
                                                 "plastic synapses onto motor neurons"))
    ds["verdict"] = ds.verdict.astype(str)
    save(describe(ds, NAME), _figure(ds), args, NAME, started)


if __name__ == "__main__":
    main()
