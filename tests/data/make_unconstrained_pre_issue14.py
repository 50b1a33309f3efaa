"""Unconstrained reference numbers for tests/test_benchmark_constraints.py, computed by the code before issue 14.

Run from a worktree of the pre-issue commit: python make_ref.py ROOT OUT.json (ROOT's neurosubset is imported).
"""
import inspect
import json
import sys

sys.path.insert(0, sys.argv[1])
import neurosubset as ns  # noqa: E402

assert ns.__file__.startswith(sys.argv[1]), ns.__file__
kw = {"dale": False, "stable": False} if "dale" in inspect.signature(ns.match_probability).parameters else {}
EI = """
name = "ei_weak"
dynamics = "steady"
seed = 1
[regions.X]
size = 5
role = "input"
[regions.E]
size = 12
sign = 1
[regions.I]
size = 4
sign = -1
[regions.OUT]
size = 2
role = "output"
[[projections]]
pre = "X"
post = "E"
[[projections]]
pre = "E"
post = "E"
p = 0.5
gain = 0.2
[[projections]]
pre = "E"
post = "I"
gain = 0.3
[[projections]]
pre = "I"
post = "E"
gain = 0.3
[[projections]]
pre = "E"
post = "OUT"
"""
steady = ns.Circuit.from_toml_text(EI)
discrete = ns.Circuit.from_toml_text(EI.replace('dynamics = "steady"', 'dynamics = "discrete"\nsteps = 3'))
ca = ns.Circuit.from_toml(sys.argv[1] + "/circuits/ca3_ca1.toml")
lm = ns.LevenbergMarquardt(restarts=3, max_rounds=3, iterations=100)
work = {
    "ca3_ca1_lm": (ca, ns.allocate(ca, 24, strategy="spread-rows", fractions={"CA3->CA3": 0.5, "CA3->CA1": 0.5},
                                   seed=0), 4, 12),
    "ca3_ca1_readout": (ca, ns.allocate(ca, 24, strategy="spread-rows", within=["CA1->OUT"], seed=0), 5, 24),
    "ei_steady_lm": (steady, ns.allocate(steady, 16, strategy="spread-rows", within=["E->E", "I->E"], seed=0), 3, 16),
    "ei_steady_readout": (steady, ns.allocate(steady, 8, strategy="spread-rows", within=["E->OUT"], seed=0), 3, 24),
    "ei_discrete_lm": (discrete, ns.allocate(discrete, 16, strategy="random", within=["E->E", "I->E", "E->OUT"],
                                             seed=0), 3, 16),
}
out = {"EI": EI}
for name, (c, a, m, t) in work.items():
    ds = ns.match_probability(c, a, m=m, trials=t, seed=0, solver=ns.Auto(**{f: getattr(lm, f) for f in
                              ("restarts", "max_rounds", "iterations")}), return_weights=True, **kw)
    meanings = ds.fit_status.attrs["flag_meanings"].split()
    out[name] = {"mp": float(ds.mp), "config_hash": ds.attrs["config_hash"],
                 "verdict": ds.attrs["certificate_verdict"],
                 "fit_status": [meanings[int(v)] for v in ds.fit_status.values],
                 **{v: ds[v].values.tolist() for v in ("matched", "residual", "restarts", "mp_by_round", "theta")}}
    print(name, out[name]["mp"], out[name]["verdict"], flush=True)
json.dump(out, open(sys.argv[2], "w"), indent=0)
