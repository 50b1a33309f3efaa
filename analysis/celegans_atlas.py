"""The C. elegans signal-propagation atlas fitted on the anatomy: where must it be plastic? (issue 30)

Data: Randi F, Sharma AK, Dvali S, Leifer AM (2023), Neural signal propagation atlas of Caenorhabditis elegans,
Nature 623, 406-414 (``wormneuroatlas``'s ``funatlas.h5``, read by :func:`neurosubset.datasets.randi2023`), wild
type and unc-31; anatomy: Cook et al. 2019 through cect (:func:`neurosubset.responses.atlas.atlas_anatomy`);
neuropeptide edges: Bentley et al. 2016 (cect's ``edgelist_NP.csv``, by peptide family and by receptor) and
Ripoll-Sanchez et al. 2023 (cect, short-range model, by number of pathways).

Steps (every fit cross-validated over stimulated neurons, left/right partners held out together):

1. noise: :func:`neurosubset.datasets.pooled_noise` (SD = a_i + b |mean|, outliers dropped and listed) and the
   noise ceiling: split-half reliability, and the explainable fraction ``cov(half 1, half 2) / var(all means)``
   (the EV that the true means would reach, assuming single-trial pairs carry the same signal variance);
2. model variants (:mod:`neurosubset.responses.atlas`): anatomy with / without gap junctions and Dale signs, the
   stimulated neuron's rate clamped to its self-response (``clamp``) or driven by it, and read-out gains alone (no
   anatomy: predicts no response off the diagonal);
3. the dense all-weights reference: every pair a free weight, ridge over a grid of strengths;
4. budget curves (:mod:`neurosubset.responses.atlas_budget`): spread, concentrated, class, greedy, on the anatomy
   and on degree-preserving rewired anatomies (the null keeps the data);
5. wt -> unc31 (:mod:`neurosubset.responses.atlas_compare`): on what both measured, which group of pairs (class
   projections, neuropeptide families / receptors / pathway counts) must change, each against size-matched random
   groups (99 per size in the full run: empirical p >= 0.01, not corrected for the number of groups), with
   ``localize``'s ambiguity sets (statistical ties and structural equivalence with the first place).

Fits are weighted by ``sd_floor`` (the responding neuron's noise floor / sqrt(trials)); explained variance is
unweighted, ``1 - SS_res / SS_tot`` around the held-out values' mean. Every fit is L-BFGS (a local optimiser): the
explained variances are those of the fits found (lower bounds on what the model class can reach).

Run: ``python analysis/celegans_atlas.py [--quick] [--out DIR]`` (writes ``celegans_atlas.nc`` / ``.png``).
"""
from __future__ import annotations

import time

import numpy as np
import xarray as xr

if __package__ in (None, ""):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import base_attrs, figure, parse_args, plain_attrs, save

import neurosubset as ns
from neurosubset.datasets import CITATION, pooled_noise, split_half
from neurosubset.responses.atlas import atlas_anatomy, atlas_data, atlas_folds, fit_atlas, heldout_scores, rewire
from neurosubset.responses.atlas_budget import (STRATEGIES, CurveSettings, budget_curve, class_blocks,
                                                dense_reference, greedy_ranking)
from neurosubset.responses.atlas_compare import (common_measured, group_change_ranking, neuropeptide_groups,
                                                 ripoll_sanchez_groups)

NAME = "celegans_atlas"
VARIANTS = {"signs+gap": dict(signs=True, gap=True), "signs": dict(signs=True, gap=False),
            "gap (no signs)": dict(signs=False, gap=True), "no signs, no gap": dict(signs=False, gap=False),
            "signs+gap, clamped": dict(signs=True, gap=True, clamp=True)}
REFERENCES = ("Cook SJ et al. (2019) Whole-animal connectomes of both Caenorhabditis elegans sexes. Nature 571, "
              "63-71; Bentley B et al. (2016) The multilayer connectome of Caenorhabditis elegans. PLoS Comput Biol "
              "12, e1005283; Ripoll-Sanchez L et al. (2023) The neuropeptidergic connectome of C. elegans. Neuron "
              "111, 3570-3589; all through cect (OpenWorm C. elegans Connectome Toolbox)")


def config(quick: bool) -> dict:
    if quick:
        return dict(folds=3, iterations=80, refit=40, budgets=(0, 50, 400), class_steps=2, greedy_steps=2,
                    greedy_candidates=2, lams=(1e3,), nulls=1, null_budgets=(0, 400), unc_folds=3, draws=19,
                    class_groups=4, group_iterations=30, variants=("signs+gap", "signs", "signs+gap, clamped"))
    return dict(folds=5, iterations=150, refit=80, budgets=(0, 25, 50, 100, 200, 400, 800, 1600, 3200),
                class_steps=6, greedy_steps=6, greedy_candidates=4, lams=(1e4, 1e3, 1e2), nulls=3,
                null_budgets=(0, 100, 400, 1600), unc_folds=5, draws=99, class_groups=10, group_iterations=30,
                variants=tuple(VARIANTS))


def noise_summary(ds: xr.Dataset, seed: int) -> dict:
    sh = split_half(ds, seed=seed)
    trials = ds["trials"].values
    n = np.isfinite(trials).sum(-1)
    use = (n >= 2) & ~np.eye(n.shape[0], dtype=bool)
    rng = np.random.default_rng(seed)
    h1, h2 = [], []
    for v, k in zip(trials[use], n[use]):
        perm = rng.permutation(v[:k])
        h1.append(perm[:k // 2].mean())
        h2.append(perm[k // 2:].mean())
    signal = float(np.cov(h1, h2)[0, 1])
    m = ds["response"].values
    ok = np.isfinite(m)
    return {"split_half_r": sh["r"], "spearman_brown": sh["spearman_brown"], "split_half_pairs": sh["pairs"],
            "signal_var": signal, "total_var": float(m[ok].var()), "ceiling_ev": signal / float(m[ok].var())}


def main(argv=None) -> None:
    from tqdm import tqdm

    args = parse_args(__doc__.splitlines()[0], argv)
    started = time.perf_counter()
    cfg = config(args.quick)
    bar = tqdm(desc="celegans_atlas", unit="fit")
    def note(label: str) -> None:
        bar.update(1)
        bar.set_postfix_str(label[:40])

    raw = {s: ns.datasets.randi2023(s) for s in ("wt", "unc31")}
    noisy = {s: pooled_noise(raw[s]) for s in raw}
    summary = {s: noise_summary(noisy[s], args.seed) for s in noisy}
    anatomy = atlas_anatomy()
    data = {s: atlas_data(noisy[s], anatomy, sd="sd_floor") for s in noisy}
    wt = data["wt"]
    folds = atlas_folds(wt, anatomy, cfg["folds"], seed=args.seed)
    s_all = np.arange(wt.stimulated.size)
    out: dict = {}

    # 2. model variants and the gains-only baseline
    names = list(cfg["variants"]) + ["gains only"]
    ev = np.full((len(names), len(folds)), np.nan)
    ev0, chi, vals = ev.copy(), ev.copy(), ev.copy()
    a_fit, c_fit = ev.copy(), ev.copy()
    for f, fold in enumerate(folds):
        train, held = wt.columns(np.setdiff1d(s_all, fold)), wt.columns(fold)
        for v, name in enumerate(names):
            kw = VARIANTS.get(name, dict(anatomy_weights=False))
            fit = fit_atlas(train, anatomy, iterations=cfg["iterations"], **kw)
            sc = heldout_scores(fit, held, anatomy)
            ev[v, f], ev0[v, f], chi[v, f], vals[v, f] = sc["ev"], sc["ev_zero"], sc["chi_square"], sc["values"]
            a_fit[v, f], c_fit[v, f] = fit.chem_gain, fit.gap_gain
            note(f"variant {name}")
    out["variant_ev"] = (("variant", "fold"), ev, {"long_name": "held-out explained variance (1 - SS_res/SS_tot)",
                                                    "units": "1"})
    out["variant_ev_zero"] = (("variant", "fold"), ev0, {"long_name": "held-out 1 - SS_res / sum y^2 (against "
                                                                      "predicting no response)", "units": "1"})
    out["variant_chi_square_per_value"] = (("variant", "fold"), chi / vals,
                                           {"long_name": "held-out chi-square per value (sd_floor)", "units": "1"})
    out["variant_chem_gain"] = (("variant", "fold"), a_fit, {"long_name": "fitted global chemical gain a (x count x "
                                                                          "sign / spectral radius)", "units": "1"})
    out["variant_gap_gain"] = (("variant", "fold"), c_fit, {"long_name": "fitted gap-junction gain c", "units": "1"})

    # 3. dense all-weights reference
    ref = dense_reference(wt, anatomy, folds, cfg["lams"], iterations=cfg["iterations"], progress=note)
    out["dense_ev"] = (("lam", "fold"), ref["ev"], {"long_name": "held-out EV of the dense all-weights fit",
                                                   "units": "1"})
    out["dense_chi_square_per_value"] = (("lam", "fold"), ref["chi_square"] / ref["values"],
                                         {"long_name": "held-out chi-square per value, dense fit", "units": "1"})

    # 4. budget curves on the anatomy and on rewired anatomies
    settings = CurveSettings(budgets=cfg["budgets"], class_steps=cfg["class_steps"], greedy_steps=cfg["greedy_steps"],
                             greedy_candidates=cfg["greedy_candidates"], iterations=cfg["iterations"],
                             refit_iterations=cfg["refit"])
    curve = budget_curve(wt, anatomy, folds, settings, progress=note)
    steps = max(len(curve[s]["size"][0]) for s in STRATEGIES)

    def pad(rows, fill=np.nan, dtype=np.float64):
        arr = np.full((len(rows), steps), fill, dtype=dtype)
        for i, r in enumerate(rows):
            arr[i, :len(r)] = r
        return arr

    for key, long in (("ev", "held-out explained variance"), ("ev_zero", "held-out 1 - SS_res / sum y^2"),
                      ("size", "departing entries K"), ("on_anatomy", "fraction of departing entries on a synapse "
                                                                      "or gap junction")):
        out[f"curve_{key}"] = (("strategy", "fold", "step"), np.stack([pad(curve[s][key]) for s in STRATEGIES]),
                               {"long_name": long, "units": "1"})
    out["curve_chosen"] = (("strategy", "fold", "step"),
                           np.stack([pad(curve[s]["chosen"], fill="", dtype=object).astype(str) for s in STRATEGIES]),
                           {"long_name": "class (class) or class projection PRE->POST (greedy) added at the step"})
    out["curve_dropped"] = (("strategy", "fold", "step"),
                            np.stack([pad(curve[s]["dropped"], fill="", dtype=object).astype(str)
                                      for s in STRATEGIES]),
                            {"long_name": "greedy: class projections the backward check removed at the step "
                                          "(removal raised the training chi-square by < chi2.isf(0.01, 1))"})
    ranking = greedy_ranking(wt, anatomy, settings, progress=note)  # on every stimulation: the ranking itself
    out["ranking_chosen"] = ("rank", np.array(ranking["chosen"], dtype=str),
                             {"long_name": "class projection PRE->POST added at each greedy step (all wt "
                                           "stimulations)"})
    out["ranking_chi_square"] = ("rank", ranking["chi_square"][1:], {"long_name": "training chi-square after the "
                                                                                  "step", "units": "1"})
    out["ranking_dropped"] = ("rank", np.array(ranking["dropped"], dtype=str),
                              {"long_name": "class projections the backward check removed at the step"})
    out["ranking_active"] = ("active", np.array(ranking["active"], dtype=str),
                             {"long_name": "class projections of the final greedy fit (all wt stimulations)"})
    out["ranking_factor"] = ("active", ranking["factors"], {"long_name": "fitted factor f of the projection "
                                                                       "(weights x (1 + f))", "units": "1"})
    null_settings = CurveSettings(budgets=cfg["null_budgets"], strategies=("spread", "concentrated"),
                                  iterations=cfg["iterations"], refit_iterations=cfg["refit"])
    null_ev = np.full((cfg["nulls"], 2, len(folds), len(cfg["null_budgets"])), np.nan)
    for r in range(cfg["nulls"]):
        rw = rewire(anatomy, seed=args.seed + 1000 + r, swaps_per_edge=5)
        nc = budget_curve(wt, rw, folds, null_settings, progress=note)
        for k, s in enumerate(("spread", "concentrated")):
            null_ev[r, k] = np.array(nc[s]["ev"])
    out["null_ev"] = (("rewiring", "null_strategy", "fold", "null_budget"), null_ev,
                      {"long_name": "held-out EV on a degree-preserving rewired anatomy (the data kept)",
                       "units": "1"})

    # 5. wt -> unc31 on what both measured
    ref_d, unc_d = common_measured(wt, data["unc31"])
    base = fit_atlas(ref_d, anatomy, iterations=cfg["iterations"])
    note("wt reference")
    # candidates chosen from the anatomy alone (the class projections with the most synapses): choosing them by
    # the unc31 data would leak into the held-out scores and make the random-group null unfair
    blocks = {b: p for b, p in class_blocks(anatomy).items()}
    bnames = sorted(blocks, key=lambda b: (-len(anatomy.synapses(blocks[b])), b))
    groups = {f"{b[0]}->{b[1]}": blocks[b] for b in bnames[:cfg["class_groups"]]}
    groups.update({f"peptide {k}": v for k, v in neuropeptide_groups(anatomy).items()})
    if not args.quick:
        groups.update({f"receptor {k}": v for k, v in neuropeptide_groups(anatomy, by="receptor").items()})
    groups.update(ripoll_sanchez_groups(anatomy))
    rank = group_change_ranking(ref_d, unc_d, anatomy, groups, folds=cfg["unc_folds"], draws=cfg["draws"],
                                seed=args.seed, group_iterations=cfg["group_iterations"], base=base, progress=note)
    g = "group"
    out.update({
        "group_size": (g, rank["size"], {"long_name": "pairs in the group", "units": "1"}),
        "group_score": (g, rank["score"], {"long_name": "held-out unc31 chi-square removed by one shared change "
                                                        "on the group (summed over folds)", "units": "1"}),
        "group_null_mean": (g, rank["null_mean"], {"long_name": "mean score of size-matched random groups",
                                                   "units": "1"}),
        "group_null_sd": (g, rank["null_sd"], {"long_name": "SD of the scores of size-matched random groups",
                                               "units": "1"}),
        "group_null_max": (g, rank["null_max"], {"long_name": "largest score of the size-matched random groups",
                                                 "units": "1"}),
        "group_p_value": (g, rank["p_value"], {"long_name": "empirical p: (1 + #random >= score) / (1 + draws), "
                                                            "one-sided, not corrected for the number of groups",
                                               "units": "1"}),
        "group_value": (g, rank["value"], {"long_name": "shared weight change fitted on every common stimulation",
                                           "units": "1"}),
        "group_place": (g, rank["place"], {"long_name": "place (1: removes the most held-out chi-square)",
                                           "units": "1"}),
        **{f"group_{k}": (g, rank[k].astype(np.int8), {"long_name": long, "flag_values": np.array([0, 1], np.int8),
                                                        "flag_meanings": "false true"})
           for k, long in (("ambiguous", "equally good as the first place (localize's rule): the first place is "
                                         "not unique"),
                           ("statistically_tied", "held-out chi-square within chi2.isf(0.01, 1) = 6.63 of the first "
                                                  "place's"),
                           ("structurally_equivalent", "same Jacobian column as the first place's"))},
    })
    bar.close()

    noise_attrs = {}
    for s in noisy:
        noise_attrs.update({f"{s}_noise_floor": noisy[s].attrs["noise_floor"],
                            f"{s}_noise_slope": noisy[s].attrs["noise_slope"],
                            f"{s}_noise_pairs": noisy[s].attrs["noise_pairs"],
                            f"{s}_outliers": noisy[s].attrs["outliers"],
                            **{f"{s}_{k}": v for k, v in summary[s].items()}})
    coords = {"variant": names, "fold": np.arange(len(folds)), "lam": ref["lam"], "strategy": list(STRATEGIES),
              "step": np.arange(steps), "rewiring": np.arange(cfg["nulls"]),
              "null_strategy": ["spread", "concentrated"], "null_budget": np.array(cfg["null_budgets"]),
              "group": list(rank["names"]), "rank": np.arange(1, len(ranking["chosen"]) + 1),
              "active": np.arange(len(ranking["active"]))}
    attrs = base_attrs(NAME, args, **{k: str(v) for k, v in cfg.items()})
    attrs.update(plain_attrs({
        "title": "C. elegans signal-propagation atlas fitted on the anatomy",
        "references": f"{CITATION}; {REFERENCES}",
        "model": "steady linear: X = (I - W)^-1 diag(u), response g_i X_ij; W = a s C / rho(C) + c L + departures; "
                 "frozen synapses = count x fitted global gain a x Dale sign (unknown sign: +1); read-out gains g "
                 "fitted; unmeasured pairs masked (never filled); AWCL/AWCR merged as AWC",
        "weights": "chi-square with sd_floor = responding neuron's noise floor / sqrt(trials)",
        "decision_kind": "lower bound (L-BFGS, a local optimiser: EVs are those of the fits found)",
        "stimulations_wt": int(wt.stimulated.size), "values_wt": int(wt.mask.sum()),
        "drive_measured_wt": int(wt.measured_drive.sum()),
        "common_stimulations": int(unc_d.stimulated.size), "common_pairs": int(unc_d.mask.sum()),
        "unc31_baseline_chi_square": rank["baseline_chi_square"], "unc31_values": rank["values"],
        "unc31_draws": int(cfg["draws"]), "unc31_equally_good": ",".join(rank["equally_good"]),
        "unc31_tie_rule": rank["tie_rule"],
        "ranking_anatomy_chi_square": float(ranking["chi_square"][0]),
        **noise_attrs}))
    ds = xr.Dataset(out, coords=coords, attrs=attrs)

    fig, axes = figure(2, 2, width=5.0, height=3.6)
    ax = axes[0, 0]
    x = np.arange(len(names))
    ax.errorbar(x, ev.mean(1), yerr=[ev.mean(1) - ev.min(1), ev.max(1) - ev.mean(1)], fmt="o", capsize=3)
    ax.axhline(summary["wt"]["ceiling_ev"], color="k", ls="--", lw=1, label="noise ceiling (split-half)")
    best = np.nanmax(ref["ev"].mean(1))
    ax.axhline(best, color="C3", ls=":", lw=1, label="dense all-weights (best ridge)")
    ax.set_xticks(x, names, rotation=20, fontsize=7)
    ax.set_ylabel("held-out EV (wt)")
    ax.set_title("anatomy fits (folds: min-max)")
    ax.legend()
    ax = axes[0, 1]
    for k, s in enumerate(STRATEGIES):
        size = np.nanmean(ds["curve_size"].values[k], 0)
        e = ds["curve_ev"].values[k]
        ok = np.isfinite(size)
        ax.plot(size[ok] + 1, np.nanmean(e, 0)[ok], "o-", label=s, ms=3)
        ax.fill_between(size[ok] + 1, np.nanmin(e, 0)[ok], np.nanmax(e, 0)[ok], alpha=0.15)
    for k, s in enumerate(("spread", "concentrated")):
        e = null_ev[:, k].mean(1)  # (rewiring, budget)
        ax.plot(np.array(cfg["null_budgets"]) + 1, e.mean(0), "x:", color="gray", label=f"rewired null ({s})")
    ax.axhline(summary["wt"]["ceiling_ev"], color="k", ls="--", lw=1)
    ax.set_xscale("log")
    ax.set_xlabel("departing entries K + 1")
    ax.set_ylabel("held-out EV (wt)")
    ax.set_title("budget curves (folds: min-max)")
    ax.legend(fontsize=6)
    ax = axes[1, 0]
    order = np.argsort(rank["place"])[:15]
    y = np.arange(order.size)
    ax.barh(y, rank["score"][order], color=["C1" if a else "C0" for a in rank["ambiguous"][order]])
    ax.errorbar(rank["null_mean"][order], y, xerr=2 * np.nan_to_num(rank["null_sd"][order]), fmt="|", color="k")
    ax.set_yticks(y, [rank["names"][i] for i in order], fontsize=6)
    ax.invert_yaxis()
    ax.set_xlabel("held-out unc31 chi-square removed")
    ax.set_title("wt -> unc31 (orange: ambiguous with 1st; bars: random +-2 SD)")
    ax = axes[1, 1]
    d = noisy["wt"]
    n = d["n_trials"].values
    use = (n >= 2) & ~np.eye(n.shape[0], dtype=bool)
    m, sd = np.abs(d["response"].values[use]), d["trial_sd"].values[use]
    edges = np.quantile(m, np.linspace(0, 1, 11))
    mid = [np.median(m[(m >= lo) & (m <= hi)]) for lo, hi in zip(edges[:-1], edges[1:])]
    med = [np.median(sd[(m >= lo) & (m <= hi)]) for lo, hi in zip(edges[:-1], edges[1:])]
    ax.plot(mid, med, "o-", label="median trial SD (wt, >= 2 trials)")
    xx = np.linspace(0, max(mid), 50)
    ax.plot(xx, d.attrs["noise_floor"] + d.attrs["noise_slope"] * xx, "k--", label="model a + b |mean|")
    ax.set_xlabel("|mean response| (dF/F)")
    ax.set_ylabel("trial SD (dF/F)")
    ax.set_title("noise model")
    ax.legend()
    fig.suptitle("Randi et al. 2023 atlas on the Cook 2019 anatomy (local fits: lower bounds)", fontsize=9)
    save(ds, fig, args, NAME, started)


if __name__ == "__main__":
    main()
