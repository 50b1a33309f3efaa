"""Linear feed-forward nets (1-3 layers): MP vs number of probes m for one budget under different allocations.

Claim tested (paper abstract; SCIENCE.md "worked result"): in linear feed-forward nets MP is all-or-nothing (0/1)
for generic allocations, spreading the budget over rows is maximal, concentrating it in few rows is minimal.

Panels
------
1. One layer ``y = W1 x`` (d_in = 8, n = 6), M = 24: five strategies; dashed = the closed form
   ``MP = 1 iff min_i k_i >= min(m, d_in)`` computed from the allocation's row counts (independent of the fit).
2. Two layers 6-6-4, M = 16: all in W1, all in W2, split 50/50, random over both, concentrated rows.
3. Three layers 4-4-4-4, M = 12: all in one layer, equal thirds, random, concentrated rows.
4. Two layers 6-6-4, M = 16, spread rows: MP at fixed m vs the share of the budget placed in W1.

Run: ``python analysis/lffn_allocations.py [--quick] [--out DIR]``.
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
from common import (band_note, base_attrs, describe, figure, lm_attrs, lm_settings, mp_axes, mp_records,
                    parse_args, plot_mp, records_to_dataset, save)

NAME = "lffn_allocations"


def closed_form_single_layer(alloc: ns.Allocation, m: int, d_in: int) -> float:
    """MP of one linear layer, derived by hand (SCIENCE.md): 1 iff every row has >= min(m, d_in) plastic entries."""
    return float(alloc.rows("W1").min() >= min(m, d_in))


def main(argv=None) -> None:
    args = parse_args(__doc__.splitlines()[0], argv)
    started = time.perf_counter()
    quick = args.quick
    lm = lm_settings(quick, restarts=4, max_rounds=3, steps=150)  # default size: the library defaults
    trials_affine = 40 if quick else 200
    trials_lm = 16 if quick else 100
    records = []

    def run(case, arch, circuit, alloc, ms, trials, share=np.nan, closed=None):
        tick = time.perf_counter()
        points = mp_records(circuit, {case: alloc}, ms, trials=trials, seed=args.seed, **lm)
        for m in ms:
            rec = dict(points[case, m])
            rec.update(case=case, architecture=arch, strategy=alloc.strategy, m=m, share_first_layer=share,
                       counts=str(alloc.counts))
            rec["mp_closed_form"] = closed(alloc, m) if closed else np.nan
            records.append(rec)
            print(f"{case:45s} m={m:2d} MP={rec['mp']:.2f} [{rec['mp_low']:.2f}, {rec['mp_high']:.2f}] "
                  f"({rec['solver']}, {rec.get('verdict', '?')})", flush=True)
        print(f"{case}: {len(ms)} points in {time.perf_counter() - tick:.1f} s", flush=True)

    # ---- 1. single layer
    d_in, n_out = (6, 4) if quick else (8, 6)
    one = ns.feedforward([d_in, n_out])
    budget1 = 3 * n_out if quick else 4 * n_out
    ms1 = list(range(1, d_in + 1))
    closed = (lambda a, m: closed_form_single_layer(a, m, d_in))
    strategies = ["spread-rows", "concentrated-rows"] if quick else \
        ["spread-rows", "spread-cols", "random", "concentrated-cols", "concentrated-rows"]
    for strategy in strategies:
        alloc = ns.allocate(one, budget1, strategy=strategy, seed=args.seed)
        run(f"1 layer: {strategy}", one.name, one, alloc, ms1, trials_affine, closed=closed)

    # ---- 2. two layers
    two = ns.feedforward([4, 4, 3] if quick else [6, 6, 4])
    budget2 = 9 if quick else 16
    ms2 = [1, 2, 3] if quick else list(range(1, 7))
    cases2 = [("all in W2, spread-rows", dict(strategy="spread-rows", within=["W2"]), 0.0),
              ("split 50/50, spread-rows", dict(strategy="spread-rows", fractions={"W1": 0.5, "W2": 0.5}), 0.5)]
    if not quick:
        cases2 += [("all in W1, spread-rows", dict(strategy="spread-rows", within=["W1"]), 1.0),
                   ("all in W1, concentrated-rows", dict(strategy="concentrated-rows", within=["W1"]), 1.0),
                   ("random over W1+W2", dict(strategy="random"), np.nan),
                   ("concentrated-rows over W1+W2", dict(strategy="concentrated-rows"), np.nan)]
    for label, kw, share in cases2:
        alloc = ns.allocate(two, budget2, seed=args.seed, **kw)
        affine = is_affine(two, alloc)
        run(f"2 layers: {label}", two.name, two, alloc, ms2, trials_affine if affine else trials_lm, share=share)

    # ---- 3. three layers and 4. layer-share sweep (default size only)
    if not quick:
        three = ns.feedforward([4, 4, 4, 4])
        budget3 = 12
        cases3 = [("all in W3, spread-rows", dict(strategy="spread-rows", within=["W3"])),
                  ("all in W1, spread-rows", dict(strategy="spread-rows", within=["W1"])),
                  ("thirds, spread-rows", dict(strategy="spread-rows",
                                               fractions={"W1": 1 / 3, "W2": 1 / 3, "W3": 1 / 3})),
                  ("random over W1-W3", dict(strategy="random")),
                  ("concentrated-rows over W1-W3", dict(strategy="concentrated-rows"))]
        for label, kw in cases3:
            alloc = ns.allocate(three, budget3, seed=args.seed, **kw)
            affine = is_affine(three, alloc)
            run(f"3 layers: {label}", three.name, three, alloc, [1, 2, 3, 4, 5], trials_affine if affine else trials_lm)
        for share in (0.25, 0.75):
            alloc = ns.allocate(two, budget2, strategy="spread-rows", fractions={"W1": share, "W2": 1 - share},
                                seed=args.seed)
            run(f"2 layers: W1 share {share:.2f}, spread-rows", two.name, two, alloc, [3, 4], trials_lm,
                share=share)

    ds = records_to_dataset(records, ["case", "m"], NAME, base_attrs(
        NAME, args, claim="LFFN: spreading over rows is maximal, concentrating minimal; MP is 0/1 in linear nets",
        single_layer=one.name, single_layer_budget=budget1, two_layer=two.name, two_layer_budget=budget2,
        three_layer="feedforward_linear_4-4-4-4" if not quick else "", three_layer_budget=0 if quick else 12,
        trials_affine=trials_affine, trials_lm=trials_lm, **lm_attrs(lm),
        tolerance=ns.DEFAULT_TOL))
    for name in ("share_first_layer", "architecture", "strategy", "counts"):
        ds[name] = ds[name].max("m")
    describe(ds, NAME)

    # ---- figure
    panels = [("1 layer", f"1 layer {d_in}->{n_out}, M = {budget1}"),
              ("2 layers", f"2 layers {'-'.join(map(str, [4, 4, 3] if quick else [6, 6, 4]))}, M = {budget2}")]
    if not quick:
        panels.append(("3 layers", "3 layers 4-4-4-4, M = 12"))
    fig, axes = figure(len(panels) + (0 if quick else 1))
    for ax, (prefix, title) in zip(axes[0], panels):
        cases = [str(c) for c in ds.case.values if str(c).startswith(prefix + ":") and "share" not in str(c)]
        for k, case in enumerate(cases):
            sub = ds.sel(case=case)
            plot_mp(ax, ds.m, sub.mp, sub.mp_low, sub.mp_high, label=case.split(": ", 1)[1],
                    offset=0.06 * (k - len(cases) / 2))
            if prefix == "1 layer":
                ax.plot(ds.m + 0.06 * (k - len(cases) / 2), sub.mp_closed_form, ls="--", lw=0.8, color="k",
                        alpha=0.5, label="closed form" if k == 0 else None)
        mp_axes(ax, title=title)
    if not quick:
        ax = axes[0][-1]
        for m in (3, 4):
            rows = [c for c in ds.case.values if str(c).startswith("2 layers") and "spread-rows" in str(c)
                    and np.isfinite(float(ds.share_first_layer.sel(case=c))) and
                    np.isfinite(float(ds.mp.sel(case=c, m=m)))]
            share = np.array([float(ds.share_first_layer.sel(case=c)) for c in rows])
            order = np.argsort(share)
            sub = ds.sel(case=[rows[i] for i in order], m=m)
            plot_mp(ax, share[order], sub.mp, sub.mp_low, sub.mp_high, label=f"m = {m}")
        mp_axes(ax, xlabel="share of the budget in W1 (fraction)", title="2 layers 6-6-4, M = 16, spread rows")
    band_note(fig)
    save(ds, fig, args, NAME, started)


if __name__ == "__main__":
    main()
