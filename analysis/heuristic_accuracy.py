"""How well the closed-form heuristic (``ns.heuristic``, the paper's effective-count principle) predicts measured MP
over many random allocations; the exact certificate (``ns.certify``, carried by ``match_probability``) is shown as
the reference.

Claim tested (paper abstract): for sub-optimal allocations heuristic principles estimate expressivity, and they
extend to shallow ReLU nets. The paper presents them as estimates; this script gives our agreement numbers.

Random allocations: for each circuit family, draw m uniformly in 1..m_max, a strategy uniformly from
``ns.STRATEGIES``, a random non-empty subset of the weights as ``within``, and a budget uniformly between about
half and twice the number of output equations ``E = m * n_out`` (where the 0/1 transition lives), capped by the
eligible synapses. MP is measured with ``ns.match_probability``. Measured class: "zero" if no trial matched, "one"
if every trial matched, "in-between" otherwise.

Run: ``python analysis/heuristic_accuracy.py [--quick] [--out DIR]``.
"""
from __future__ import annotations

import time

import numpy as np
from scipy.stats import spearmanr

import neurosubset as ns

if __package__ in (None, ""):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import base_attrs, figure, lm_attrs, lm_settings, mp_record, parse_args, records_to_dataset, save

NAME = "heuristic_accuracy"
CLASSES = ("zero", "in-between", "one")


def families(quick: bool):
    """(label, circuit, m_max, number of random allocations)."""
    if quick:
        return [("linear 1 layer 6-4", ns.feedforward([6, 4]), 6, 5),
                ("linear 2 layers 5-3-4", ns.feedforward([5, 3, 4]), 4, 2)]
    return [("linear 1 layer 6-4", ns.feedforward([6, 4]), 6, 60),
            ("linear 2 layers 5-3-4 (bottleneck)", ns.feedforward([5, 3, 4]), 5, 40),
            ("linear 2 layers 4-5-3", ns.feedforward([4, 5, 3]), 4, 40),
            ("linear RNN n=5 T=3", ns.linear_rnn(5, 2, 2, steps=3), 6, 50),
            ("ReLU 4-6-1", ns.feedforward([4, 6, 1], "relu"), 8, 40)]


def random_allocation(circuit: ns.Circuit, m_max: int, rng: np.random.Generator):
    """One random (allocation, m) draw as described in the module docstring."""
    m = int(rng.integers(1, m_max + 1))
    names = list(circuit.weight_names)
    within = [w for w in names if rng.random() < 0.6] or [names[rng.integers(len(names))]]
    eligible = int(sum(circuit.structure[w].sum() for w in within))
    e = m * circuit.n_out
    low, high = max(1, e // 2), max(1, min(eligible, 2 * e))
    budget = int(rng.integers(min(low, high), high + 1))
    strategy = str(rng.choice(ns.STRATEGIES))
    alloc = ns.allocate(circuit, budget, strategy=strategy, within=within,
                        seed=int(rng.integers(2**31)))
    return alloc, m, within


def measured_class(n_matched: int, trials: int) -> str:
    return "zero" if n_matched == 0 else "one" if n_matched == trials else "in-between"


def main(argv=None) -> None:
    args = parse_args(__doc__.splitlines()[0], argv)
    started = time.perf_counter()
    quick = args.quick
    lm = lm_settings(quick, restarts=3, max_rounds=2, steps=100)  # default size: the library defaults
    trials = 20 if quick else 100
    records = []
    for f, (label, circuit, m_max, count) in enumerate(families(quick)):
        for i in range(count):
            rng = np.random.default_rng(np.random.SeedSequence(args.seed, spawn_key=(f, i)))
            alloc, m, within = random_allocation(circuit, m_max, rng)
            tick = time.perf_counter()
            rec = mp_record(circuit, alloc, m, trials=trials, seed=args.seed + i, **lm)
            h = ns.heuristic(circuit, alloc, m=m)
            rec.update(allocation=len(records), family=label, m=m, strategy=alloc.strategy, within=",".join(within),
                       counts=str(alloc.counts), heuristic_mp=float(h.mp), heuristic_verdict=str(h.verdict),
                       heuristic_effective=int(h.effective), heuristic_required=int(h.required),
                       measured=measured_class(rec["n_matched"], rec["trials"]))
            records.append(rec)
            print(f"{label:36s} m={m} M={alloc.size:3d} {alloc.strategy:17s} MP={rec['mp']:.2f} heuristic "
                  f"{h.verdict}/{h.mp:.2f} (eff {h.effective}/{h.required}) certificate {rec.get('verdict', '?')} "
                  f"({rec['solver']}, {time.perf_counter() - tick:.1f} s)", flush=True)

    ds = records_to_dataset(records, ["allocation"], NAME)

    # ---- agreement numbers (overall and per family) as attrs
    summary = {}

    def agreement(sub, key):
        n = sub.sizes["allocation"]
        stats = {}
        # "in-between" predicts MP > 0 only (heuristic_mp NaN): rank correlation and error over the 0/1 predictions
        fin = np.isfinite(sub.heuristic_mp.values)
        h_fin, mp_fin = sub.heuristic_mp.values[fin], sub.mp.values[fin]
        if fin.sum() >= 3 and np.ptp(mp_fin) > 0 and np.ptp(h_fin) > 0:
            stats["spearman"] = float(spearmanr(h_fin, mp_fin).statistic)
        else:
            stats["spearman"] = float("nan")
        pred = sub.heuristic_verdict.values
        meas = sub.measured.values
        stats["class_agreement"] = float(np.mean(pred == meas))
        for c in ("zero", "one"):
            said = pred == c
            stats[f"{c}_precision"] = float(np.mean(meas[said] == c)) if said.any() else float("nan")
            stats[f"{c}_recall"] = float(np.mean(pred[meas == c] == c)) if (meas == c).any() else float("nan")
        stats["mean_abs_error"] = float(np.mean(np.abs(h_fin - mp_fin))) if fin.any() else float("nan")
        between = pred == "in-between"
        stats["in_between_positive"] = float(np.mean(sub.mp.values[between] > 0)) if between.any() else float("nan")
        stats["n"] = int(n)
        for k, v in stats.items():
            summary[f"{key}_{k}"] = v
        return stats

    overall = agreement(ds, "all")
    linear = ds.where(~ds.family.str.startswith("ReLU"), drop=True) if not quick else ds
    agreement(linear, "linear")
    for label, *_ in families(quick):
        sub = ds.where(ds.family == label, drop=True)
        agreement(sub, label.split(" (")[0].replace(" ", "_").replace("=", ""))
    if "verdict" in ds:
        cert = ds.verdict.values
        meas = ds.measured.values
        proven = np.isin(cert, ("zero", "one", "positive"))
        ok = ((cert == "zero") & (meas == "zero")) | ((cert == "one") & (meas == "one")) | \
             ((cert == "positive") & (meas != "zero"))
        summary["certificate_agreement_on_proven"] = float(ok[proven].mean()) if proven.any() else float("nan")
        summary["certificate_n_proven"] = int(proven.sum())
    ds.attrs.update(base_attrs(
        NAME, args, claim="heuristic principles estimate expressivity of sub-optimal allocations (also ReLU)",
        families=str([(lab, c.name, mm, n) for lab, c, mm, n in families(quick)]), trials=trials,
        **lm_attrs(lm),
        tolerance=ns.DEFAULT_TOL, **summary))
    print({k: round(v, 3) if isinstance(v, float) else v for k, v in summary.items()})

    # ---- figure: measured vs predicted MP; confusion tables for the heuristic and the certificate
    fig, axes = figure(3, width=4.4)
    ax = axes[0][0]
    fams = list(dict.fromkeys(ds.family.values))
    jitter = np.random.default_rng(0).uniform(-0.03, 0.03, ds.sizes["allocation"])
    for fam in fams:
        sel = ds.family.values == fam
        x = np.where(np.isfinite(ds.heuristic_mp.values), ds.heuristic_mp.values, 0.5)  # in-between drawn at 0.5
        ax.errorbar(x[sel] + jitter[sel], ds.mp.values[sel],
                    yerr=np.clip([ds.mp.values[sel] - ds.mp_low.values[sel],
                                  ds.mp_high.values[sel] - ds.mp.values[sel]], 0, None),
                    fmt="o", ms=3, elinewidth=0.6, alpha=0.8, label=fam)
    ax.plot([0, 1], [0, 1], color="k", lw=0.6, ls="--", label="identity")
    ax.set_xlabel("heuristic predicted MP (fraction; in-between = MP > 0 drawn at 0.5; jittered +/-0.03)")
    ax.set_ylabel("measured MP (fraction of trials), 95% Wilson bars")
    ax.set_title(f"heuristic vs measured: Spearman {overall['spearman']:.2f}, n = {overall['n']}")
    ax.legend(frameon=False, fontsize=6)
    tables = [("heuristic verdict", ds.heuristic_verdict.values, CLASSES)]
    if "verdict" in ds:
        tables.append(("certificate verdict", ds.verdict.values, ("zero", "positive", "one", "unproven")))
    for ax, (title, pred, rows) in zip(axes[0][1:], tables):
        table = np.array([[np.sum((pred == r) & (ds.measured.values == c)) for c in CLASSES] for r in rows])
        ax.imshow(table, cmap="Blues")
        for (i, j), v in np.ndenumerate(table):
            ax.text(j, i, str(v), ha="center", va="center", fontsize=9)
        ax.set_xticks(range(len(CLASSES)), CLASSES)
        ax.set_yticks(range(len(rows)), rows)
        ax.set_xlabel("measured class (count of allocations)")
        ax.set_ylabel(f"{title} (count of allocations)")
        ax.set_title(f"{title} vs measured")
        ax.grid(False)
    if len(tables) == 1:
        axes[0][2].set_visible(False)
    save(ds, fig, args, NAME, started)


if __name__ == "__main__":
    main()
