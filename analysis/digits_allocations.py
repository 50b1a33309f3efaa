"""Real data: handwritten digits (scikit-learn's 8x8 set), a 64-64-10 ReLU net trained from a random init with only
a budget of M plastic synapses, under different allocation strategies. Test accuracy vs M, mean +/- s.e.m. over
seeds.

Claim tested (paper abstract; the paper used MNIST): a more widespread allocation generally enhances the network's
expressive power, here measured as what gradient training can reach on a real task.

Student weight = frozen init (plastic entries zeroed) + scatter(plastic values): frozen synapses cannot move
whatever the optimiser does. The network is ``ns.feedforward([64, 64, 10], "relu")`` (no biases), initialised from
the circuit's own distribution (``N(0, 1/n_pre)``), trained full batch with Adam on the cross-entropy.

Strategies: ``spread-rows``, ``concentrated-rows``, ``random`` (over both layers); ``W1 only`` / ``W2 only`` /
``W1:W2 = 50:50`` (spread over rows inside each layer); ``optimal`` (``ns.optimal_allocation``: greedy maximal-rank
selection on the teacher-student Jacobian at random Gaussian probes, a data-free choice). References: M = 0
(nothing plastic) and every synapse plastic.

Run: ``python analysis/digits_allocations.py [--quick] [--out DIR]``.
"""
from __future__ import annotations

import math
import time

import numpy as np
import torch

import neurosubset as ns

if __package__ in (None, ""):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import base_attrs, figure, parse_args, records_to_dataset, save

NAME = "digits_allocations"
SIZES = [64, 64, 10]
TEST_FRACTION = 0.25


def load_data(seed: int):
    """Digits, pixels scaled by the training set's mean and std, stratified train/test split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=TEST_FRACTION, stratify=y, random_state=seed)
    mean, std = x_tr.mean(0), x_tr.std(0) + 1.0  # +1: a few border pixels are constant in the training set
    as_t = (lambda a: torch.as_tensor(a, dtype=torch.float32))
    return (as_t((x_tr - mean) / std), torch.as_tensor(y_tr), as_t((x_te - mean) / std), torch.as_tensor(y_te))


def train(circuit: ns.Circuit, alloc: ns.Allocation, init: dict[str, np.ndarray], data, *, steps: int,
          lr: float) -> dict[str, float]:
    """Train only the plastic synapses of ``alloc`` from ``init``; return final train/test accuracy and loss."""
    x_tr, y_tr, x_te, y_te = data
    frozen, index, theta = {}, {}, []
    for name in circuit.weight_names:
        w0 = torch.as_tensor(init[name], dtype=torch.float32)
        idx = torch.as_tensor(alloc.indices[name], dtype=torch.long)
        frozen[name] = w0.flatten().index_fill(0, idx, 0.0)
        index[name] = idx
        theta.append(w0.flatten()[idx])  # plastic synapses start at their own initial values
    theta = torch.cat(theta).clone().requires_grad_(alloc.size > 0)
    splits = np.cumsum([0] + [alloc.counts[n] for n in circuit.weight_names])

    def weights(t):
        return {n: frozen[n].index_add(0, index[n], t[splits[k]:splits[k + 1]]).view(circuit.shape(n))
                for k, n in enumerate(circuit.weight_names)}

    def logits(x, t):
        w = weights(t)
        return torch.relu(x @ w["W1"].T) @ w["W2"].T

    if alloc.size:
        opt = torch.optim.Adam([theta], lr=lr)
        for _ in range(steps):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(logits(x_tr, theta), y_tr)
            loss.backward()
            opt.step()
    with torch.no_grad():
        out_tr, out_te = logits(x_tr, theta), logits(x_te, theta)
        final = weights(theta)
        moved = {n: int((final[n].numpy() != init[n].astype(np.float32))[~alloc.masks[n]].sum())
                 for n in circuit.weight_names}
    if any(moved.values()):  # the construction guarantees this; checked because the claim rests on it
        raise RuntimeError(f"frozen synapses moved during training: {moved}")
    return {"train_accuracy": float((out_tr.argmax(1) == y_tr).float().mean()),
            "test_accuracy": float((out_te.argmax(1) == y_te).float().mean()),
            "train_loss": float(torch.nn.functional.cross_entropy(out_tr, y_tr)),
            "test_loss": float(torch.nn.functional.cross_entropy(out_te, y_te))}


def strategies(circuit: ns.Circuit, budget: int, seed: int, *, quick: bool) -> dict[str, ns.Allocation]:
    """The allocations compared at one budget (those that cannot hold the budget are left out)."""
    out = {"spread-rows": ns.allocate(circuit, budget, strategy="spread-rows", seed=seed),
           "concentrated-rows": ns.allocate(circuit, budget, strategy="concentrated-rows", seed=seed),
           "random": ns.allocate(circuit, budget, strategy="random", seed=seed)}
    if quick:
        return out
    n1, n2 = (int(circuit.structure[w].sum()) for w in ("W1", "W2"))
    if budget <= n1:
        out["W1 only"] = ns.allocate(circuit, budget, strategy="spread-rows", within=["W1"], seed=seed)
    if budget <= n2:
        out["W2 only"] = ns.allocate(circuit, budget, strategy="spread-rows", within=["W2"], seed=seed)
    if budget // 2 <= n2:
        out["W1:W2 = 50:50"] = ns.allocate(circuit, budget, strategy="spread-rows",
                                           fractions={"W1": 0.5, "W2": 0.5}, seed=seed)
    if hasattr(ns, "optimal_allocation"):
        # probes enough that the output equations (10 per probe) exceed the budget, so the greedy rank can reach M
        m = math.ceil(budget / circuit.n_out) + 1
        out["optimal"] = ns.optimal_allocation(circuit, budget, m=m, seed=seed)
    return out


def main(argv=None) -> None:
    args = parse_args(__doc__.splitlines()[0], argv)
    started = time.perf_counter()
    quick = args.quick
    budgets = [40] if quick else [20, 80, 320, 1280]
    seeds = [args.seed] if quick else [args.seed + s for s in range(5)]
    steps, lr = (60 if quick else 400), 0.02
    net = ns.feedforward(SIZES, "relu")
    data = load_data(args.seed)
    records = []
    for seed in seeds:
        init = net.sample_weights(np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(7,))))
        everything = ns.Allocation.from_masks(net, {w: net.structure[w] for w in net.weight_names}, strategy="all")
        for label, alloc in [("nothing plastic", ns.allocate(net, 0, seed=seed)), ("all plastic", everything)]:
            rec = train(net, alloc, init, data, steps=steps, lr=lr)
            records.append({**rec, "strategy": label, "budget": 0, "seed": seed, "plastic_W1": alloc.counts["W1"],
                            "plastic_W2": alloc.counts["W2"], "rows_touched": int(sum((alloc.rows(w) > 0).sum()
                                                                                   for w in net.weight_names))})
        for budget in budgets:
            for label, alloc in strategies(net, budget, seed, quick=quick).items():
                tick = time.perf_counter()
                rec = train(net, alloc, init, data, steps=steps, lr=lr)
                rows = int(sum((alloc.rows(w) > 0).sum() for w in net.weight_names))
                records.append({**rec, "strategy": label, "budget": budget, "seed": seed,
                                "plastic_W1": alloc.counts["W1"], "plastic_W2": alloc.counts["W2"],
                                "rows_touched": rows})
                print(f"seed {seed} M={budget:4d} {label:18s} test acc {rec['test_accuracy']:.3f} train acc "
                      f"{rec['train_accuracy']:.3f} (W1 {alloc.counts['W1']}, W2 {alloc.counts['W2']}, "
                      f"{rows} neurons, {time.perf_counter() - tick:.1f} s)", flush=True)

    ds = records_to_dataset(records, ["strategy", "budget", "seed"], NAME, base_attrs(
        NAME, args, claim="real data: widespread allocations train to higher accuracy",
        dataset="sklearn.datasets.load_digits (1797 8x8 images, 10 classes)", test_fraction=TEST_FRACTION,
        sizes=str(SIZES), nonlinearity="relu", biases="none", optimizer="Adam, full batch", learning_rate=lr,
        train_steps=steps, budgets=str(budgets), seeds=str(seeds),
        total_synapses=net.n_synapses, references="budget 0 holds the 'nothing plastic' and 'all plastic' runs"))

    # ---- figure: test accuracy vs budget (mean +/- s.e.m. over seeds), and accuracy vs neurons touched
    fig, axes = figure(2, width=5.0)
    ax = axes[0][0]
    main_ = [s for s in ds.strategy.values if s not in ("nothing plastic", "all plastic")]
    for k, s in enumerate(sorted(main_)):
        acc = ds.test_accuracy.sel(strategy=s, budget=budgets)
        mean = acc.mean("seed")
        sem = acc.std("seed", ddof=1) / np.sqrt(acc.count("seed")) if len(seeds) > 1 else 0 * mean
        x = np.array(budgets) * (1 + 0.03 * (k - len(main_) / 2))
        ax.errorbar(x, mean, yerr=sem, marker="o", ms=3.5, capsize=2.5, label=s)
    for ref, ls in (("nothing plastic", ":"), ("all plastic", "--")):
        value = float(ds.test_accuracy.sel(strategy=ref, budget=0).mean())
        ax.axhline(value, color="k", ls=ls, lw=0.8, label=f"{ref} ({value:.2f})")
    ax.set_xscale("log")
    ax.set_xticks(budgets, [str(b) for b in budgets])
    ax.minorticks_off()
    ax.set_xlabel(f"plastic synapses M (synapses, of {net.n_synapses})")
    ax.set_ylabel("test accuracy (fraction correct)")
    ax.set_title(f"digits, ReLU {'-'.join(map(str, SIZES))}: mean +/- s.e.m. over {len(seeds)} seed(s)")
    ax.legend(frameon=False, fontsize=6)
    ax = axes[0][1]
    for budget in budgets:
        sub = ds.sel(budget=budget).dropna("strategy", how="all")
        ax.scatter(sub.rows_touched.mean("seed"), sub.test_accuracy.mean("seed"), s=14, label=f"M = {budget}")
        for s in sub.strategy.values:
            ax.annotate(str(s), (float(sub.rows_touched.sel(strategy=s).mean()),
                                 float(sub.test_accuracy.sel(strategy=s).mean())), fontsize=5)
    ax.set_xlabel("neurons with plastic inputs (neurons, of 74)")
    ax.set_ylabel("test accuracy (fraction correct), mean over seeds")
    ax.set_title("how widespread vs how well it learns")
    ax.legend(frameon=False)
    save(ds, fig, args, NAME, started)


if __name__ == "__main__":
    main()
