"""Linear RNN ``h_t = W h_{t-1} + B x_t``, ``y = C h_T``: MP vs m for M = n plastic synapses under different
allocations.

Claim tested (paper abstract): there are maximal and minimal allocations for LRNNs; a more widespread allocation
enhances expressive power. Inside W, ``n`` plastic synapses are spread over rows (one per row), spread over
columns, random, or all in a single row / a single column (``concentrated-rows`` / ``-cols`` with M = n fill
exactly one row / column). The reference panel puts the same budget in B, in C, or a third each in W, B, C.

Outputs are polynomials of degree T - 1 in W, so W allocations are fitted by Levenberg-Marquardt (T = 2 is affine
and solved exactly); the certificate's verdict (zero / one / positive) is stored next to every estimate.

Certified zeros are not fitted. A W-only allocation fitted by LM is estimated with the library's ``skip_zero``:
``ns.certify`` runs first, and where its verdict is "zero" (plastic rank < dim V, an exact theorem for linear
nets: the student's output set has lower dimension than the teacher's, so MP = 0) every trial is decided by the
rank certificate and nothing is fitted; the record says ``fitted = 0`` and ``source = "certificate"`` (the Wilson
interval over the trials, no fit diagnostics: NaN). Every other point is fitted (``fitted = 1``,
``source = "fit"``). The figure draws certified points with open markers.

Run: ``python analysis/lrnn_allocations.py [--quick] [--out DIR]``.
"""
from __future__ import annotations

import time

import neurosubset as ns
from neurosubset._internal import DECISION

if __package__ in (None, ""):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent))
import numpy as np
from common import (band_note, base_attrs, figure, lm_attrs, lm_settings, mp_axes, parse_args, plot_mp, point_record,
                    records_to_dataset, save)

NAME = "lrnn_allocations"
N_IN, N_OUT = 2, 2
W_STRATEGIES = ("spread-rows", "spread-cols", "random", "concentrated-rows", "concentrated-cols")


STRATEGY_LABEL = {"spread-rows": "W: spread over rows", "spread-cols": "W: spread over columns",
                  "random": "W: random", "concentrated-rows": "W: single row",
                  "concentrated-cols": "W: single column"}


def main(argv=None) -> None:
    args = parse_args(__doc__.splitlines()[0], argv)
    started = time.perf_counter()
    quick = args.quick
    lm = lm_settings(quick, restarts=4, max_rounds=3, steps=150)  # default size: the library defaults
    trials_affine = 40 if quick else 200
    trials_lm = 16 if quick else 100
    # (n, T, m values); the W-only plastic rank is capped by (T - 1) * n_in * n_out, so MP vanishes beyond
    # m = 2 (T - 1) for every W allocation and the m ranges stop just past that
    configs = [(5, 2, [1, 2, 3])] if quick else [(8, 2, [1, 2, 3, 4]), (8, 3, [1, 2, 3, 4, 5]),
                                                   (8, 4, [1, 2, 3, 4, 5, 6, 7]), (12, 3, [1, 2, 3, 4, 5])]
    strategies = ("spread-rows", "concentrated-rows") if quick else W_STRATEGIES
    base = configs[0] if quick else configs[1]
    records = []

    def run(case, n, steps, where, alloc, ms, circuit):
        tick = time.perf_counter()
        affine = alloc.counts["W"] == 0 or steps <= 2
        w_only = alloc.counts["W"] == alloc.size
        # W-only LM points: the library's skip_zero certifies first and fits nothing where the verdict is "zero"
        points = ns.sweep_allocations(circuit, {case: alloc}, m=ms, trials=trials_affine if affine else trials_lm,
                                      seed=args.seed, skip_zero=w_only and not affine, **lm)
        for m in ms:
            point = points.sel(allocation=case, m=m)
            rec = point_record(point)
            if (point.decision.values == DECISION["rank_certificate"]).all():  # MP = 0 proven, nothing fitted
                rec.update(fitted=0, source="certificate", solver="none (certificate)", mp_first_round=np.nan,
                           mp_by_round="", last_round_gain=np.nan, median_log10_residual=np.nan)
            else:
                rec.update(fitted=1, source="fit")
            rec.update(config=f"n={n}, T={steps}", case=case, n=n, steps=steps, where=where,
                       strategy=alloc.strategy, m=m, counts=str(alloc.counts))
            records.append(rec)
            print(f"n={n:2d} T={steps} {case:26s} m={m} MP={rec['mp']:.2f} [{rec['mp_low']:.2f}, "
                  f"{rec['mp_high']:.2f}] ({rec['source']}, {rec['solver']}, {rec.get('verdict', '?')})", flush=True)
        print(f"{case}: {len(ms)} points in {time.perf_counter() - tick:.1f} s", flush=True)

    for n, steps, ms in configs:
        rnn = ns.linear_rnn(n, N_IN, N_OUT, steps=steps)
        for strategy in strategies:
            alloc = ns.allocate(rnn, n, strategy=strategy, within=["W"], seed=args.seed)
            run(STRATEGY_LABEL[strategy], n, steps, "W", alloc, ms, rnn)
        if (n, steps, ms) == base:
            for where, kw in (("B", dict(within=["B"])), ("C", dict(within=["C"])),
                              ("W+B+C", dict(fractions={"W": 1 / 3, "B": 1 / 3, "C": 1 / 3}))):
                if quick and where != "C":
                    continue
                alloc = ns.allocate(rnn, n, strategy="spread-rows", seed=args.seed, **kw)
                run(f"{where}: spread over rows", n, steps, where, alloc, ms, rnn)

    ds = records_to_dataset(records, ["config", "case", "m"], NAME, base_attrs(
        NAME, args, claim="LRNN: spread allocations of W are maximal, a single row/column is minimal",
        n_in=N_IN, n_out=N_OUT, budget="M = n plastic synapses", configs=str([c[:2] for c in configs]),
        trials_affine=trials_affine, trials_lm=trials_lm, **lm_attrs(lm),
        tolerance=ns.DEFAULT_TOL,
        certified_points=int(sum(r["fitted"] == 0 for r in records)),
        certified_rule="W-only LM points are estimated with skip_zero=True: where the ns.certify verdict is 'zero' "
                       "(plastic rank < dim V) every trial is decided by the rank certificate (MP = 0, nothing "
                       "fitted: fitted = 0, source = 'certificate', the Wilson interval over the trials, no fit "
                       "diagnostics); all other points are fitted (fitted = 1, source = 'fit')"))

    def mark_certified(ax, sub, offset):
        """Open markers on the points whose MP = 0 comes from the certificate, not from a fit."""
        cert_pts = (sub.fitted == 0).values
        if cert_pts.any():
            color = ax.lines[-1].get_color()
            ax.plot(ds.m.values[cert_pts] + offset, sub.mp.values[cert_pts], ls="none", marker="o", ms=5,
                    color=color, mfc="white", mec=color, zorder=3)

    # ---- figure: one panel per (n, T) with the W strategies, one with W vs B vs C at the base config
    fig, axes = figure(3, 2 if not quick else 1)
    axes = axes.ravel()
    for ax, (n, steps, ms) in zip(axes, configs):
        config = f"n={n}, T={steps}"
        cases = [STRATEGY_LABEL[s] for s in strategies]
        for k, case in enumerate(cases):
            sub = ds.sel(config=config, case=case)
            plot_mp(ax, ds.m, sub.mp, sub.mp_low, sub.mp_high, label=case.replace("W: ", ""),
                    offset=0.05 * (k - len(cases) / 2))
            mark_certified(ax, sub, 0.05 * (k - len(cases) / 2))
        mp_axes(ax, title=f"plastic in W: n = {n}, T = {steps}, M = {n}")
    ax = axes[len(configs)]
    config = f"n={base[0]}, T={base[1]}"
    for k, case in enumerate([c for c in ds.case.values if ds.sel(config=config, case=c).mp.notnull().any()
                              and ("spread over rows" in str(c) or "single row" in str(c))]):
        sub = ds.sel(config=config, case=case)
        plot_mp(ax, ds.m, sub.mp, sub.mp_low, sub.mp_high, label=str(case), offset=0.05 * (k - 2))
        mark_certified(ax, sub, 0.05 * (k - 2))
    mp_axes(ax, title=f"where: n = {base[0]}, T = {base[1]}, M = {base[0]}")
    for ax in axes[len(configs) + 1:]:
        ax.set_visible(False)
    band_note(fig)
    fig.text(0.01, -0.035, "open markers: MP = 0 proven by the exact certificate (verdict zero, plastic rank < "
             "dim V), recorded without fitting", fontsize=7, ha="left", va="top")
    save(ds, fig, args, NAME, started)


if __name__ == "__main__":
    main()
