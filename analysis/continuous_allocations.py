"""Continuous-time tanh RNN ``tau dh/dt = -h + tanh(W h + B x(t))``, ``y = C h(D)``: does spreading the plastic
synapses still win, and how does that depend on ``tau`` relative to the duration ``D``?

Circuit: 2 inputs -> 6 recurrent tanh neurons -> 2 linear read-outs, ``D = 0.1 s``, the probe held over 2 input
intervals of 50 ms (a probe is 2 x 2 numbers), read out at ``D``; ``tau / D`` in {0.1, 0.5, 2, 10}. RK4 with
``dt = min(D / 10, tau / 2)`` (the benchmark compares teacher and student under the same scheme).

- Panel W: ``M = 6`` plastic synapses of W (one per row / per column, or one full row / column), ``m = 2`` probes
  (``E = 4`` equations < ``M``). The outputs are not affine in W: the MP values come from Levenberg-Marquardt and
  are lower bounds (a local solver can miss solutions). The certificate (float ranks, analytic maps) is stored
  for each point: a rank deficit proves MP = 0, full rank proves MP > 0 only.
- Panel C (reference): ``M = 6`` read-out synapses, ``m = 3``. Affine, decided exactly by least squares; the
  single-layer theorem says a row matches iff it holds ``>= min(m, n, n_in * steps) = 3`` plastic synapses, so
  spread-rows (3 + 3) has MP = 1 and concentrated-rows (6 + 0) MP = 0 at every tau.

Run: ``python analysis/continuous_allocations.py [--quick] [--out DIR]`` (default run about 4 min on 2 cores).
"""
from __future__ import annotations

import time

import neurosubset as ns

if __package__ in (None, ""):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import band_note, base_attrs, figure, mp_record, parse_args, records_to_dataset, save

NAME = "continuous_allocations"
N, N_IN, N_OUT, DURATION, STEPS = 6, 2, 2, 0.1, 2
W_STRATEGIES = ("spread-rows", "spread-cols", "concentrated-rows", "concentrated-cols")
LABEL = {"spread-rows": "one per row", "spread-cols": "one per column", "concentrated-rows": "one full row",
         "concentrated-cols": "one full column"}


def tanh_rnn(tau: float) -> ns.Circuit:
    """The continuous tanh RNN with time constant ``tau`` (s)."""
    dt = min(DURATION / 10, tau / 2)
    regions = (ns.Region("in", N_IN, "input"), ns.Region("rec", N), ns.Region("out", N_OUT, "output"))
    projections = (ns.Projection("in", "rec", name="B"), ns.Projection("rec", "rec", gain=1.0, name="W"),
                   ns.Projection("rec", "out", name="C"))
    return ns.Circuit(regions, projections, dynamics="continuous", nonlinearity="tanh", tau=tau, duration=DURATION,
                      dt=dt, steps=STEPS, name=f"tanh_rnn_tau{tau:g}")


def main(argv=None) -> None:
    args = parse_args(__doc__.splitlines()[0], argv)
    started = time.perf_counter()
    quick = args.quick
    ratios = [0.1, 10.0] if quick else [0.1, 0.5, 2.0, 10.0]
    strategies = ("spread-rows", "concentrated-rows") if quick else W_STRATEGIES
    trials_lm, trials_exact = (3, 6) if quick else (16, 40)
    # --quick (the smoke test, a few seconds): fewer trials and one LM round of one start
    lm = ns.LevenbergMarquardt(restarts=1, max_rounds=1, iterations=60) if quick else ns.LevenbergMarquardt(
        restarts=2, max_rounds=2, iterations=100)
    records = []
    for ratio in ratios:
        circuit = tanh_rnn(ratio * DURATION)
        cases = [("W", s, 2, trials_lm) for s in strategies] + [("C", s, 3, trials_exact)
                                                                  for s in ("spread-rows", "concentrated-rows")]
        for where, strategy, m, trials in cases:
            tick = time.perf_counter()
            alloc = ns.allocate(circuit, N, strategy=strategy, within=[where], seed=args.seed)
            solver = lm if where == "W" else ns.Auto()
            rec = mp_record(circuit, alloc, m, trials=trials, seed=args.seed, solver=solver, dale=False)
            rec.update(case=f"{where}: {LABEL[strategy]}", tau_ratio=ratio, tau=ratio * DURATION,
                       dt=circuit.dt, where=where, strategy=strategy, m=m, counts=str(alloc.counts))
            records.append(rec)
            print(f"tau/D={ratio:5.1f} {rec['case']:22s} m={m} MP={rec['mp']:.2f} [{rec['mp_low']:.2f}, "
                  f"{rec['mp_high']:.2f}] ({rec['solver']}, {rec['verdict']}, ranks {rec['plastic_rank']}/"
                  f"{rec['full_rank']}, {time.perf_counter() - tick:.1f} s)", flush=True)

    ds = records_to_dataset(records, ["case", "tau_ratio"], NAME, base_attrs(
        NAME, args, claim="continuous-time tanh RNN: spreading W's plastic synapses over rows vs one row, and how "
                          "the answer depends on tau / duration",
        n=N, n_in=N_IN, n_out=N_OUT, duration_s=DURATION, input_intervals=STEPS, budget="M = 6",
        dt_rule="dt = min(duration / 10, tau / 2)", trials_lm=trials_lm, trials_exact=trials_exact,
        lm_restarts=lm.restarts, lm_max_rounds=lm.max_rounds, lm_steps=lm.iterations, tolerance=ns.DEFAULT_TOL,
        lower_bound_note="W points: Levenberg-Marquardt counts, lower bounds on MP (outputs not affine in W); "
                         "C points: exact least-squares decisions (affine)"))

    fig, axes = figure(2)
    for ax, where in zip(axes[0], ("W", "C")):
        cases = [c for c in ds.case.values if str(c).startswith(where)]
        for k, case in enumerate(cases):
            sub = ds.sel(case=case)
            x = ds.tau_ratio.values * (1 + 0.04 * (k - len(cases) / 2))
            line, = ax.plot(x, sub.mp, marker="o", ms=3.5, label=str(case))
            ax.fill_between(x, sub.mp_low, sub.mp_high, color=line.get_color(), alpha=0.18, lw=0)
        ax.set_xscale("log")
        ax.set_xlabel("tau / duration (1)")
        ax.set_ylabel("match probability MP (fraction of trials)")
        ax.set_ylim(-0.05, 1.05)
        ax.legend(loc="best", frameon=False)
        ax.set_title("plastic in W, m = 2 (LM: lower bounds)" if where == "W"
                     else "plastic in C, m = 3 (exact least squares)")
    band_note(fig)
    save(ds, fig, args, NAME, started)


if __name__ == "__main__":
    main()
