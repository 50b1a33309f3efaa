"""Does the certificate predict the measured MP? Random allocations over small nets, verdict vs fitted MP.

For every case: a small circuit, a random allocation (random subset of weights, random budget, random strategy),
``ns.certify`` (no fitting) and ``ns.heuristic`` (closed form), and MP measured by fitting with
``ns.match_probability`` (>= 100 trials). Families:

- ``single``: one linear layer (d_in 3..5, d_out 2..3, m 2..6);
- ``two_layer``: linear 4-3-2, 4-2-3 (bottleneck), 3-3-1, 3-4-2;
- ``rnn``: linear RNN, n 3..4, n_in 1..2, n_out 1..2, T 2..5, plastic in W, B, C or mixed;
- ``relu``: shallow ReLU nets 3-3-1, 3-4-2, 4-3-1.

Expected for the linear families: "zero" => MP = 0, "one" => MP = 1, "positive" => MP > 0, without exception.
For ReLU the verdict is "unproven"; reported: how often rank deficiency coincides with MP = 0 and affine full
rank with MP = 1. Output: data/theory_vs_empirics.nc (one row per case) and .png; the tables are printed.

Run: ``python analysis/theory_vs_empirics.py [--quick] [--out DIR] [--seed S]``.
"""
from __future__ import annotations

import json
import time

import numpy as np
from scipy.stats import spearmanr

import neurosubset as ns
from common import base_attrs, figure, lm_attrs, lm_settings, mp_record, parse_args, records_to_dataset, save

NAME = "theory_vs_empirics"
# LM settings for the non-affine cases: the library defaults at default size, a cheaper solver with --quick only
# (a solver cannot fake a match: the residual is recomputed from the assembled weights, so "zero" cases cannot show
# MP > 0 by solver error).
QUICK_SOLVER = {"restarts": 4, "max_rounds": 3, "steps": 150}


def _family_case(family: str, rng: np.random.Generator) -> tuple[ns.Circuit, int, list[str]]:
    """A random circuit of ``family``, a number of probes and the weights the allocation may use."""
    if family == "single":
        net = ns.feedforward([int(rng.integers(3, 6)), int(rng.integers(2, 4))])
        return net, int(rng.integers(2, 7)), ["W1"]
    if family in ("two_layer", "relu"):
        choices = ([[4, 3, 2], [4, 2, 3], [3, 3, 1], [3, 4, 2]] if family == "two_layer"
                   else [[3, 3, 1], [3, 4, 2], [4, 3, 1]])
        sizes = choices[int(rng.integers(len(choices)))]
        net = ns.feedforward(sizes, "linear" if family == "two_layer" else "relu")
        within = [["W1"], ["W2"], ["W1", "W2"]][int(rng.integers(3))]
        return net, int(rng.integers(2, 5)), within
    n, n_in, n_out, steps = (int(rng.integers(3, 5)), int(rng.integers(1, 3)), int(rng.integers(1, 3)),
                             int(rng.integers(2, 6)))
    net = ns.linear_rnn(n, n_in, n_out, steps=steps)
    within = [["W"], ["B"], ["C"], ["W", "C"], ["B", "C"], ["W", "B", "C"]][int(rng.integers(6))]
    return net, int(rng.integers(2, 5)), within


def _case(family: str, index: int, seed: int, trials: int, solver: dict) -> dict:
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(index,)))
    net, m, within = _family_case(family, rng)
    eligible = int(sum(net.structure[w].sum() for w in within))
    budget = int(rng.integers(1, eligible + 1))
    strategy = ns.STRATEGIES[int(rng.integers(len(ns.STRATEGIES)))]
    alloc = ns.allocate(net, budget, strategy=strategy, within=within, seed=index)
    start = time.perf_counter()
    cert = ns.certify(net, alloc, m=m, seed=seed)
    t_cert = time.perf_counter() - start
    heur = ns.heuristic(net, alloc, m=m)
    start = time.perf_counter()
    fit = mp_record(net, alloc, m, trials=trials, seed=seed + 1, certificate=False, **solver)
    t_fit = time.perf_counter() - start
    return {
        "case": index, "family": family, "circuit": net.name, "m": m, "steps": net.steps,
        "within": "+".join(within), "strategy": strategy, "budget": budget,
        "counts": json.dumps(alloc.counts), "n_equations": m * net.n_out,
        "plastic_rank": cert.plastic_rank, "full_rank": cert.full_rank, "affine": int(cert.affine),
        "verdict": cert.verdict, "plastic_gap_log10": float(np.log10(cert.plastic_gap)),
        "full_gap_log10": float(np.log10(cert.full_gap)),
        **{k: fit[k] for k in ("mp", "mp_low", "mp_high", "n_matched", "trials", "solver", "decision_kind",
                               "mp_first_round", "mp_by_round", "last_round_gain")},
        "h_effective": heur.effective, "h_required": heur.required, "h_verdict": heur.verdict, "h_mp": heur.mp,
        "certify_s": t_cert, "fit_s": t_fit,
    }


def _category(mp: np.ndarray) -> np.ndarray:
    return np.where(mp == 0.0, "MP=0", np.where(mp == 1.0, "MP=1", "0<MP<1"))


def summarise(ds) -> dict:
    """Print the verdict-vs-MP tables and the heuristic scores; return the numbers for the attrs."""
    verdict, mp, family = ds.verdict.values.astype(str), ds.mp.values, ds.family.values.astype(str)
    cat = _category(mp)
    linear = family != "relu"
    out: dict = {}
    print("\nverdict vs measured MP (linear families: single, two_layer, rnn)")
    print(f"{'verdict':>10} | {'MP=0':>5} {'0<MP<1':>7} {'MP=1':>5} | expected")
    expected = {"zero": "MP=0", "one": "MP=1", "positive": "MP>0"}
    bad = []
    for v in ("zero", "one", "positive"):
        sel = linear & (verdict == v)
        counts = [int((sel & (cat == c)).sum()) for c in ("MP=0", "0<MP<1", "MP=1")]
        print(f"{v:>10} | {counts[0]:>5} {counts[1]:>7} {counts[2]:>5} | {expected[v]}")
        out[f"table_{v}"] = json.dumps(dict(zip(("MP=0", "0<MP<1", "MP=1"), counts)))
        ok = {"zero": mp == 0.0, "one": mp == 1.0, "positive": mp > 0.0}[v]
        bad.extend(np.flatnonzero(sel & ~ok).tolist())
    agree = 1.0 - len(bad) / max(int(linear.sum()), 1)
    print(f"agreement on {int(linear.sum())} linear cases: {100 * agree:.1f}%  (exceptions: {bad})")
    for i in bad:
        print("  exception:", {k: ds[k].values[i].item() for k in ("family", "circuit", "m", "within", "counts",
                                                                      "plastic_rank", "full_rank", "verdict", "mp",
                                                                      "solver", "mp_first_round", "mp_by_round")})
    out["linear_cases"], out["linear_agreement"], out["exceptions"] = int(linear.sum()), agree, json.dumps(bad)
    relu = ~linear
    if relu.any():
        deficient = relu & (ds.plastic_rank.values < ds.full_rank.values)
        full_aff = relu & (ds.plastic_rank.values == ds.full_rank.values) & (ds.affine.values == 1)
        full_non = relu & (ds.plastic_rank.values == ds.full_rank.values) & (ds.affine.values == 0)
        print(f"\nReLU ({int(relu.sum())} cases, verdict 'unproven'):")
        for label, sel in (("rank-deficient", deficient), ("full rank, affine", full_aff),
                           ("full rank, not affine", full_non)):
            counts = [int((sel & (cat == c)).sum()) for c in ("MP=0", "0<MP<1", "MP=1")]
            print(f"  {label:>22}: MP=0 {counts[0]:>3}, 0<MP<1 {counts[1]:>3}, MP=1 {counts[2]:>3}"
                  + (f"; max MP {mp[sel].max():.3f}" if sel.any() else ""))
            out[f"relu_{label.replace(' ', '_').replace(',', '')}"] = json.dumps(
                dict(zip(("MP=0", "0<MP<1", "MP=1"), counts)))
    # heuristic
    h_mp, h_verdict = ds.h_mp.values, ds.h_verdict.values.astype(str)
    print("\nheuristic vs measured MP")
    for label, sel in (("linear", linear), ("relu", relu), ("all", np.ones_like(linear))):
        if sel.sum() < 3:
            continue
        fin = sel & np.isfinite(h_mp)  # "in-between" predicts MP > 0 only (NaN): correlation over 0/1 predictions
        rho = spearmanr(h_mp[fin], mp[fin]).statistic if fin.sum() >= 3 else float("nan")
        extreme = sel & ((mp == 0.0) | (mp == 1.0))
        right = ((mp == 0.0) & (h_verdict == "zero")) | ((mp == 1.0) & (h_verdict == "one"))
        acc = float(right[extreme].mean()) if extreme.any() else float("nan")
        dim_ok = float((ds.h_required.values[sel] == ds.full_rank.values[sel]).mean())
        print(f"  {label:>6}: Spearman rho {rho:.3f}; zero/one cases right {100 * acc:.1f}% of {int(extreme.sum())};"
              f" required == full_rank in {100 * dim_ok:.1f}% of {int(sel.sum())}")
        out[f"heuristic_spearman_{label}"] = float(rho)
        out[f"heuristic_zero_one_accuracy_{label}"] = acc
        out[f"heuristic_required_equals_full_rank_{label}"] = dim_ok
    for fam in ("single", "two_layer", "rnn", "relu"):
        sel = family == fam
        if sel.any():
            right = ((mp == 0.0) & (h_verdict == "zero")) | ((mp == 1.0) & (h_verdict == "one"))
            extreme = sel & ((mp == 0.0) | (mp == 1.0))
            acc = float(right[extreme].mean()) if extreme.any() else float("nan")
            dim_ok = float((ds.h_required.values[sel] == ds.full_rank.values[sel]).mean())
            print(f"  {fam:>9}: zero/one right {100 * acc:.1f}% of {int(extreme.sum())}; "
                  f"required == full_rank {100 * dim_ok:.1f}%")
    gaps = np.concatenate([ds.plastic_gap_log10.values, ds.full_gap_log10.values])
    finite = gaps[np.isfinite(gaps)]
    if finite.size:
        print(f"\nsmallest rank gap (log10 of s_r / s_(r+1)) over all cases: {finite.min():.1f}")
        out["min_rank_gap_log10"] = float(finite.min())
    return out


def plot(ds):
    fig, axes = figure(2)
    verdict, mp = ds.verdict.values.astype(str), ds.mp.values
    cats = ["MP=0", "0<MP<1", "MP=1"]
    cat = _category(mp)
    ax = axes[0, 0]
    verdicts = ["zero", "one", "positive", "unproven"]
    bottom = np.zeros(len(verdicts))
    for c, color in zip(cats, ("tab:red", "tab:orange", "tab:green")):
        counts = np.array([int(((verdict == v) & (cat == c)).sum()) for v in verdicts])
        ax.bar(verdicts, counts, bottom=bottom, color=color, label=c)
        bottom += counts
    ax.set_xlabel("certificate verdict")
    ax.set_ylabel("allocations (count)")
    ax.set_title("measured MP by verdict (unproven = ReLU)")
    ax.legend(frameon=False)
    ax = axes[0, 1]
    jitter = np.random.default_rng(0).uniform(-0.02, 0.02, mp.size)
    colors = dict(zip(verdicts, ("tab:red", "tab:green", "tab:orange", "tab:gray")))
    for v in ("unproven", "positive", "one", "zero"):  # the exact verdicts on top
        sel, color = verdict == v, colors[v]
        h_x = np.where(np.isfinite(ds.h_mp.values), ds.h_mp.values, 0.5)  # in-between (MP > 0) drawn at 0.5
        ax.scatter(h_x[sel] + jitter[sel], mp[sel], s=10, alpha=0.6, color=color, label=v)
    ax.set_xlabel("heuristic predicted MP (1; in-between = MP > 0, drawn at 0.5)")
    ax.set_ylabel("measured MP (fraction of trials)")
    ax.set_title("heuristic vs measured MP")
    ax.legend(frameon=False, title="verdict")
    return fig


def main(argv=None) -> None:
    args = parse_args(__doc__.splitlines()[0], argv)
    started = time.perf_counter()
    per_family = {"single": 70, "two_layer": 70, "rnn": 90, "relu": 70}
    trials = 100
    if args.quick:
        per_family, trials = {k: 3 for k in per_family}, 20
    solver = lm_settings(args.quick, **QUICK_SOLVER)
    records, index = [], 0
    for family, count in per_family.items():
        t0 = time.perf_counter()
        for _ in range(count):
            records.append(_case(family, index, args.seed, trials, solver))
            index += 1
        print(f"{family}: {count} cases in {time.perf_counter() - t0:.1f} s", flush=True)
    ds = records_to_dataset(records, ["case"], NAME, base_attrs(NAME, args, trials=trials, **lm_attrs(solver),
                                                                rank_rtol=ns.theory.RANK_RTOL))
    ds.attrs.update(summarise(ds))
    save(ds, plot(ds), args, NAME, started)


if __name__ == "__main__":
    main()
