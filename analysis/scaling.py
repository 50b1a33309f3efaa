"""MP transition in m as n grows, by exact certificate: spread vs concentrated allocations (LFFN and LRNN).

Question: does the critical probe count ``m_c`` (the largest m at which the plastic rank reaches dim V, so MP > 0;
MP = 0 beyond, exactly) of an allocation scale with the circuit size, i.e. does ``m_c / n`` converge, and to what,
for spread and for concentrated allocations of the same budget?

Families (budget M = n plastic synapses in every case):

- LFFN ``n -> n -> 2`` (linear), plastic synapses in W1 only (affine: verdicts one / zero). dim V = 2 min(m, n).
- LRNN ``linear_rnn(n, 2, 2, steps=n / 8)``, plastic synapses in W only (polynomial: verdicts positive / zero).
  dim V = 2 min(m, 2T) here (4 T Markov parameters, T <= 2n).

Allocations: ``spread-rows``, ``spread-cols``, ``random``, ``concentrated-rows`` (one full row), ``concentrated-cols``
(one full column). Ranks are exact over GF(p) (neurosubset.theory.modular_ranks): one Jacobian per (family, n) at a
random point of GF(p) with ``m_top`` probes; since the rows for the first m probes are a prefix, every m is a row
prefix of the same matrix (the certificate at every m from one evaluation). A verdict is wrong with probability at
most the Schwartz-Zippel bound ``r d / p`` (recorded: attr ``max_error_bound``, ~1e-15).

Run: ``python analysis/scaling.py [--quick] [--out DIR]``.
"""
from __future__ import annotations

import time

import numpy as np

import neurosubset as ns
from neurosubset.theory import modular_ranks as exact

if __package__ in (None, ""):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import base_attrs, describe, figure, parse_args, save

NAME = "scaling"
STRATEGIES = ("spread-rows", "spread-cols", "random", "concentrated-rows", "concentrated-cols")


def _columns(circuit, alloc):
    from neurosubset._internal import rank_columns as cols

    return cols(circuit, dict(alloc.masks))


def _family(kind: str, n: int):
    if kind == "LFFN":
        return ns.feedforward([n, n, 2]), "W1", n  # q = n_in = n
    steps = max(2, n // 8)
    return ns.linear_rnn(n, 2, 2, steps=steps), "W", 2 * steps  # q = n_in T


def _grid(q: int) -> list[int]:
    """Probe counts: every m up to 8, then about 24 values up to q + 1 (beyond q no rank changes)."""
    dense = list(range(1, min(q + 1, 8) + 1))
    coarse = np.unique(np.round(np.linspace(1, q + 1, 24)).astype(int)).tolist()
    return sorted(set(dense + coarse))


def run_family(kind: str, n: int, seed: int) -> tuple[list[dict], dict[str, int]]:
    """Verdicts on the m grid and the exact critical m (bisection: rank equality holds at every m below m_c)."""
    circuit, weight, q = _family(kind, n)
    grid = _grid(q)
    top = max(grid)
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0x5CA1, n, kind == "LRNN")))
    p = exact.random_prime(rng)
    weights, probes = exact.mod_point(circuit, top, p, rng)
    jac = exact.mod_jacobian(circuit, weights, probes, p)
    n_out, deg = circuit.n_out, exact.entry_degree(circuit)
    allocs = {s: ns.allocate(circuit, n, strategy=s, within=[weight], seed=seed) for s in STRATEGIES}
    cols = {s: _columns(circuit, a) for s, a in allocs.items()}
    union = np.unique(np.concatenate(list(cols.values())))
    full_cache: dict[int, int] = {}

    def full(m: int) -> int:
        # dim V <= n_out min(m, q) (outputs are linear in the q stacked inputs); a column subset's rank is a lower
        # bound, so where the union of the allocations reaches that cap it is dim V; otherwise the full rank
        if m not in full_cache:
            cap = n_out * min(m, q)
            lower = exact.gf_rank(jac[:m * n_out][:, union], p)
            full_cache[m] = cap if lower == cap else exact.gf_rank(jac[:m * n_out], p)
        return full_cache[m]

    def plastic(s: str, m: int) -> int:
        return exact.gf_rank(jac[:m * n_out][:, cols[s]], p)

    out, crit = [], {}
    for s in STRATEGIES:
        affine = ns.dynamics.is_affine(circuit, allocs[s], seed=seed)
        for m in grid:
            r = plastic(s, m)
            verdict = "zero" if r < full(m) else ("one" if affine else "positive")
            out.append({"family": kind, "n": n, "strategy": s, "m": m, "plastic_rank": r, "full_rank": full(m),
                        "verdict": verdict, "error_bound": min(m * n_out, jac.shape[1]) * deg / p})
        lo, hi = 0, top  # invariant: equality at lo (m = 0 trivially), not beyond hi
        if plastic(s, top) == full(top):
            lo = top
        while hi - lo > 1 and lo < top:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if plastic(s, mid) == full(mid) else (lo, mid)
        crit[s] = lo
    return out, crit


def main(argv=None) -> None:
    args = parse_args(__doc__.splitlines()[0], argv)
    started = time.perf_counter()
    ns_list = [8, 16] if args.quick else [8, 16, 32, 64, 128, 256]
    records, crits = [], {}
    for kind in ("LFFN", "LRNN"):
        for n in ns_list:
            tick = time.perf_counter()
            recs, crit = run_family(kind, n, args.seed)
            records += recs
            crits[(kind, n)] = crit
            print(f"{kind} n={n:4d}: m_c = {crit} ({time.perf_counter() - tick:.1f} s)", flush=True)
    import xarray as xr

    families, sizes = ["LFFN", "LRNN"], ns_list
    m_c = np.array([[[crits[(k, n)][s] for s in STRATEGIES] for n in sizes] for k in families], dtype=np.int64)
    grid_m = sorted({r["m"] for r in records})
    verdict = np.full((2, len(sizes), len(STRATEGIES), len(grid_m)), "", dtype=object)
    for r in records:
        verdict[families.index(r["family"]), sizes.index(r["n"]), STRATEGIES.index(r["strategy"]),
                grid_m.index(r["m"])] = r["verdict"]
    q = np.array([[_family(k, n)[2] for n in sizes] for k in families])
    ds = xr.Dataset(
        {"m_critical": (("family", "n", "strategy"), m_c), "q": (("family", "n"), q),
         "verdict": (("family", "n", "strategy", "m"), verdict.astype(str))},
        coords={"family": families, "n": sizes, "strategy": list(STRATEGIES), "m": grid_m},
        attrs=base_attrs(NAME, args, claim="does the critical m/n of spread vs concentrated allocations sharpen or "
                                           "shift as n grows (exact GF(p) certificates)", budget="M = n",
                         lffn="feedforward([n, n, 2]), plastic in W1", lrnn="linear_rnn(n, 2, 2, steps=n // 8 "
                         "(>= 2)), plastic in W", max_error_bound=float(max(r["error_bound"] for r in records))))
    ds["m_critical_over_n"] = ds.m_critical / ds.n
    describe(ds, NAME)

    fig, axes = figure(2)
    for ax, fam in zip(axes[0], families):
        for s in STRATEGIES:
            ax.plot(sizes, ds.m_critical_over_n.sel(family=fam, strategy=s), marker="o", label=s)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("neurons n (log2 scale)")
        ax.set_ylabel("critical probes per neuron m_c / n (1)")
        ax.set_title(f"{fam}: M = n plastic ({'W1 of n-n-2' if fam == 'LFFN' else 'W, T = n/8'})")
        ax.legend(frameon=False)
    save(ds, fig, args, NAME, started)


if __name__ == "__main__":
    main()
