"""Cost of one Levenberg-Marquardt iteration on a continuous-time circuit: today's Jacobian beside reverse mode.

The circuit of issue 29: the four-class V1 circuit of ``circuits/v1_four_class_continuous.toml`` (100 hidden
neurons, taus 10-30 ms) cut to 50 ms at dt = 1 ms with read-outs at 25 and 50 ms, ``m = 2`` probes; plastic
synapses spread 25% each over E->E, PV->E, SST->E and the read-out, 40 of them and then 80. One LM iteration =
outputs and Jacobian at the trial point (``PlasticMap.value_and_jacobian``) plus the damped step
(``solvers.lm._marquardt_step``), on one batch of ``--problems`` problems (trials x restarts).

``old``: what the solvers used before (linear: ``PlasticMap.jacobian(method="autograd")``, torch.func through
``matrix_exp``, beside a forward pass; tanh: ``rk4_jacobian``, forward sensitivities of the RK4 scheme). ``new``:
``Continuous.tangents`` (reverse mode: through the exact solution / the discrete adjoint of RK4). Old and new
alternate, ``--repeats`` times each, one torch thread; the medians of wall and process CPU time are printed, with
the largest difference between the two Jacobians (relative to the largest entry).

Usage: python benchmarks/bench_continuous_lm.py [--problems 8] [--repeats 5] [--nonlinearity linear tanh]
"""
from __future__ import annotations

import argparse
import re
import statistics
import time
from pathlib import Path

import numpy as np
import torch

import neurosubset as ns
from neurosubset.dynamics import DTYPE, PlasticMap
from neurosubset.dynamics import continuous as cont
from neurosubset._internal import marquardt_step

SPEC = Path(__file__).resolve().parents[1] / "circuits" / "v1_four_class_continuous.toml"
FRACTIONS = {"E->E": 0.25, "PV->E": 0.25, "SST->E": 0.25, "E->OUT": 0.25}


def circuit(nonlinearity: str) -> ns.Circuit:
    """The V1 circuit at 50 ms, dt = 1 ms, read-outs at 25 and 50 ms (two input intervals of 25 ms)."""
    text = SPEC.read_text()
    for key, value in (("duration", "0.05"), ("readout", "[0.025, 0.05]"), ("nonlinearity", f'"{nonlinearity}"'),
                       ("name", f'"v1_50ms_{nonlinearity}"')):
        text = re.sub(rf"^{key} = .*$", f"{key} = {value}", text, flags=re.M)
    return ns.Circuit.from_toml_text(text)


def batch(c: ns.Circuit, budget: int, problems: int, m: int = 2, seed: int = 0):
    alloc = ns.allocate(c, budget, fractions=FRACTIONS, seed=seed)
    rng = np.random.default_rng(seed)
    draws = [c.sample_weights(rng) for _ in range(problems)]
    frozen = {k: torch.as_tensor(np.stack([d[k] for d in draws]), dtype=DTYPE) for k in c.weight_names}
    probes = torch.as_tensor(np.stack([c.sample_probes(m, rng) for _ in range(problems)]), dtype=DTYPE)
    fmap = PlasticMap(c, alloc, frozen, probes)
    theta = torch.as_tensor(rng.standard_normal((problems, alloc.size)) * c.init_scale(alloc), dtype=DTYPE)
    target = fmap(torch.as_tensor(rng.standard_normal((problems, alloc.size)) * c.init_scale(alloc), dtype=DTYPE))
    return fmap, theta, target


def old_iteration(fmap: PlasticMap, theta: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    c = fmap.circuit
    if c.nonlinearity == "linear":
        f, jac = fmap(theta), fmap.jacobian(theta, method="autograd")
    else:
        f, jac = cont.rk4_jacobian(c, fmap.weights(theta), fmap.probes, fmap.index, fmap.size)
    marquardt_step(jac, f - target, torch.full((theta.shape[0],), 1e-3, dtype=DTYPE))
    return jac


def new_iteration(fmap: PlasticMap, theta: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    f, jac = fmap.value_and_jacobian(theta)
    marquardt_step(jac, f - target, torch.full((theta.shape[0],), 1e-3, dtype=DTYPE))
    return jac


def timed(fn, *args) -> tuple[float, float, torch.Tensor]:
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn(*args)
    return time.perf_counter() - w0, time.process_time() - c0, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=8, help="problems in the batch (trials x restarts)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--nonlinearity", nargs="+", default=["linear", "tanh"])
    parser.add_argument("--budgets", type=int, nargs="+", default=[40, 80])
    args = parser.parse_args()
    torch.set_num_threads(1)  # a script: one thread, as a fit runs
    for nonlinearity in args.nonlinearity:
        c = circuit(nonlinearity)
        news = {}
        for budget in args.budgets:
            fmap, theta, target = batch(c, budget, args.problems)
            times: dict[str, list[tuple[float, float]]] = {"old": [], "new": []}
            old_iteration(fmap, theta, target), new_iteration(fmap, theta, target)  # warm-up
            for _ in range(args.repeats):
                for name, fn in (("old", old_iteration), ("new", new_iteration)):
                    wall, cpu, jac = timed(fn, fmap, theta, target)
                    times[name].append((wall, cpu))
                    if name == "old":
                        ref = jac
                    else:
                        err = float((jac - ref).abs().max() / ref.abs().max())
            med = {k: (statistics.median(w for w, _ in v), statistics.median(p for _, p in v))
                   for k, v in times.items()}
            news[budget] = med["new"]
            print(f"{c.name} M={fmap.size} problems={args.problems} E/problem={fmap.probes.shape[1] * c.n_out}: "
                  f"old wall {med['old'][0] * 1e3:8.1f} ms cpu {med['old'][1] * 1e3:8.1f} ms | new wall "
                  f"{med['new'][0] * 1e3:7.1f} ms cpu {med['new'][1] * 1e3:7.1f} ms | old/new (cpu) "
                  f"{med['old'][1] / med['new'][1]:6.1f}x | max |J_new - J_old| / max |J_old| = {err:.1e}",
                  flush=True)
        if len(args.budgets) == 2:
            (b0, t0), (b1, t1) = sorted(news.items())
            print(f"{c.name}: new iteration M={b1} / M={b0}: wall {t1[0] / t0[0]:.2f}x, cpu {t1[1] / t0[1]:.2f}x")


if __name__ == "__main__":
    main()
