"""Shallow ReLU net ``y = W2 relu(W1 x)``: MP vs m when M plastic input synapses (in W1) are spread over k hidden
neurons, from concentrated (few neurons, full rows) to spread (one synapse per neuron); a linear net with the same
allocations is the control.

Claim tested (paper abstract): the heuristic principles extend to shallow ReLU nets, and a more widespread
allocation enhances expressive power. The mechanism the heuristic names: a hidden ReLU neuron only passes a change
of its input weights on the probes where it is active, so plastic synapses concentrated in a few neurons reach
only the probes those neurons are active on; in the linear control every neuron is always "active".

Allocations: ``k`` hidden neurons chosen at random, ``M / k`` plastic synapses each, presynaptic inputs dealt
round-robin so every input is used equally often (k = M / d_in is "concentrated": full rows; k = M is
"spread-rows"), plus ``ns.allocate(..., strategy="random")``. Only W1 is plastic; W2 is frozen.

Run: ``python analysis/relu_allocations.py [--quick] [--out DIR]``.
"""
from __future__ import annotations

import time

import numpy as np

import neurosubset as ns

if __package__ in (None, ""):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (band_note, base_attrs, describe, figure, lm_attrs, lm_settings, mp_axes, mp_records, parse_args,
                    plot_mp, records_to_dataset, save)

NAME = "relu_allocations"


def over_k_neurons(circuit: ns.Circuit, budget: int, k: int, seed: int) -> ns.Allocation:
    """``budget`` plastic W1 synapses on ``k`` random hidden neurons, ``budget // k`` each, inputs round-robin."""
    n_hidden, d_in = circuit.shape("W1")
    if budget % k or budget // k > d_in:
        raise ValueError(f"k = {k} must divide the budget {budget} with at most {d_in} synapses per neuron.")
    rng = np.random.default_rng(seed)
    mask = np.zeros((n_hidden, d_in), dtype=bool)
    inputs = rng.permutation(d_in)
    slot = 0
    for row in rng.choice(n_hidden, size=k, replace=False):
        for _ in range(budget // k):
            mask[row, inputs[slot % d_in]] = True
            slot += 1
    return ns.Allocation.from_masks(circuit, {"W1": mask}, strategy=f"{k} neurons")


def main(argv=None) -> None:
    args = parse_args(__doc__.splitlines()[0], argv)
    started = time.perf_counter()
    quick = args.quick
    sizes = [3, 6, 1] if quick else [6, 12, 1]
    budget = 6 if quick else 12
    ks = [2, 6] if quick else [2, 3, 6, 12]
    ms = [2, 4] if quick else [2, 4, 6, 8, 10, 12]
    lm = lm_settings(quick, restarts=3, max_rounds=2, steps=100)  # default size: the library defaults
    trials_relu = 12 if quick else 100
    trials_linear = 40 if quick else 200
    records = []
    for nonlinearity in ("relu", "linear"):
        net = ns.feedforward(sizes, nonlinearity)
        allocs = [over_k_neurons(net, budget, k, args.seed) for k in ks]
        if not quick:
            allocs.append(ns.allocate(net, budget, strategy="random", within=["W1"], seed=args.seed))
        trials = trials_relu if nonlinearity == "relu" else trials_linear
        tick = time.perf_counter()
        points = mp_records(net, {alloc.strategy: alloc for alloc in allocs}, ms, trials=trials, seed=args.seed,
                            **lm)
        for alloc in allocs:
            k = int((alloc.rows("W1") > 0).sum())
            for m in ms:
                rec = dict(points[alloc.strategy, m])
                rec.update(nonlinearity=nonlinearity, allocation=alloc.strategy, m=m, neurons=k,
                           max_per_neuron=int(alloc.rows("W1").max()))
                records.append(rec)
                print(f"{nonlinearity:6s} {alloc.strategy:10s} m={m:2d} MP={rec['mp']:.2f} [{rec['mp_low']:.2f}, "
                      f"{rec['mp_high']:.2f}] first round {rec['mp_first_round']:.2f} ({rec['solver']}, "
                      f"{rec['decision_kind']})", flush=True)
        print(f"{nonlinearity}: {len(allocs) * len(ms)} points in {time.perf_counter() - tick:.1f} s", flush=True)

    ds = records_to_dataset(records, ["nonlinearity", "allocation", "m"], NAME, base_attrs(
        NAME, args, claim="shallow ReLU: spreading plastic synapses over hidden neurons enhances MP",
        sizes=str(sizes), budget=budget, plastic_weight="W1", trials_relu=trials_relu, trials_linear=trials_linear,
        **lm_attrs(lm),
        tolerance=ns.DEFAULT_TOL))
    for name in ("neurons", "max_per_neuron"):
        ds[name] = ds[name].max(["m", "nonlinearity"])
    describe(ds, NAME)

    # ---- figure: ReLU and linear MP vs m; ReLU MP vs k at each m
    fig, axes = figure(3)
    order = sorted(ds.allocation.values, key=lambda a: (str(a) == "random", int(ds.neurons.sel(allocation=a))))
    for ax, nonlinearity in zip(axes[0][:2], ("relu", "linear")):
        for i, a in enumerate(order):
            sub = ds.sel(nonlinearity=nonlinearity, allocation=a)
            label = f"{a}" if a == "random" else f"{int(ds.neurons.sel(allocation=a))} neurons x " \
                                                 f"{int(ds.max_per_neuron.sel(allocation=a))} synapses"
            plot_mp(ax, ds.m, sub.mp, sub.mp_low, sub.mp_high, label=label, offset=0.1 * (i - len(order) / 2))
        mp_axes(ax, title=f"{nonlinearity} {'-'.join(map(str, sizes))}, M = {budget} plastic in W1")
    ax = axes[0][2]
    fixed = [a for a in order if a != "random"]
    neurons = np.array([int(ds.neurons.sel(allocation=a)) for a in fixed])
    for m in ds.m.values:
        sub = ds.sel(nonlinearity="relu", allocation=fixed, m=m)
        plot_mp(ax, neurons, sub.mp, sub.mp_low, sub.mp_high, label=f"m = {int(m)}")
    mp_axes(ax, xlabel="hidden neurons sharing the budget k (neurons)", title="ReLU: MP vs spread")
    ax.set_xscale("log", base=2)
    band_note(fig)
    save(ds, fig, args, NAME, started)


if __name__ == "__main__":
    main()
