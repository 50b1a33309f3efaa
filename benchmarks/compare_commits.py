"""Compare two source trees of neurosubset: per-trial decisions, iteration-0 outputs and interleaved timings.

A refactor that must not change any result is checked against the commit before it: the neurosubset side of the
workloads of ``benchmarks/bench_mp.py`` (``ns.fit`` on a linear RNN and a 64x64 layer) and the nine LM workloads of
``benchmarks/bench_lm_workloads.py`` run on both trees, in subprocesses with ``PYTHONPATH`` set to each tree (and
the tree as working directory), one BLAS/OpenMP thread and one torch thread.

Usage
-----
::

    git worktree add /tmp/ns_base <base commit>          # a pristine copy of the commit before the change
    python benchmarks/compare_commits.py --base /tmp/ns_base --new . [--rounds 3] [--json compare.json]

Options: ``--rounds K`` interleaved rounds (default 3), ``--only SUBSTRING`` restricts the workloads (repeatable),
``--python`` the interpreter of the subprocesses (default: this one), ``--keep DIR`` keeps the per-run files.

What it does
------------
1. Lists the workloads of each tree (``--list`` in a subprocess per tree; this also shows which ``neurosubset``
   each subprocess imports, refusing a tree whose import resolves elsewhere) and a fingerprint of each workload
   (circuit weight names and shapes, allocation masks, ``m``, trials, seed): the two trees must build the same
   workloads.
2. Runs ``K`` interleaved rounds: in each round, for each workload, one subprocess on the base tree, then one on
   the new tree. Each subprocess runs an untimed warm-up fit (one trial of seed + 1, as bench_mp.py does) and then
   the timed ``ns.fit(circuit, alloc, m, trials, seed)`` with the library defaults (what both benchmarks time).
   Times recorded: the fit itself inside the subprocess (``fit``: ``time.perf_counter`` wall and
   ``getrusage(RUSAGE_SELF)`` user + sys CPU) and the whole subprocess from outside (``proc``: wall and
   ``getrusage(RUSAGE_CHILDREN)`` user + sys CPU, import of torch and the warm-up included).
3. Per trial it records ``matched``, the fit status (``FitResult.status``, with ``ns.FIT_STATUS`` names), the
   decider (``FitResult.decision``, names where the tree has them), the decision kind (``FitResult.exact``:
   "exact" / "lower bound", as ``match_probability`` writes ``decision_kind``), the relative residual, and
   outputs on the trial's probes (``neurosubset.dynamics.forward``, found elsewhere in the package if the module
   moved): of the teacher (the targets), of the student as drawn, and, where the LM ran, of each restart's start
   of round 0 -- the point at which LM iteration 0 evaluates ``F``. The solver options have no zero-iteration
   setting (``iterations >= 1``), so the starts are rebuilt from the documented multi-start policy:
   ``SeedSequence(seed, spawn_key=(i, 1, 0))``, ``restarts`` standard normal rows times
   ``circuit.init_scale(alloc)`` (round 0: every start at the init scale), folded into the Dale's-law box by sign
   (``|z|`` for synapses from ``sign = +1`` regions, ``-|z|`` for ``-1``) when ``dale`` is on; the plastic entries
   of the student's draw are replaced by them.
4. Prints (and writes with ``--json``): per workload the number of trials whose decision changed (matched,
   status, decider or decision kind; each changed trial with both residuals and ``tol``), differences of the
   residuals, the largest absolute difference of each kind of output, whether a tree gave different answers in
   different rounds, the medians of the times per side and their ratio new / base, and the machine (nproc, load
   average before and after, date, torch and neurosubset versions, git commit and dirty state of each tree).

The workloads come from each tree's ``benchmarks/bench_lm_workloads.py`` (its ``workloads()`` generator,
imported by path) where it exists, else from a copy below; bench_mp.py builds its workloads inside ``main()``,
so they are replicated here exactly (``linear_rnn(16, 2, 2, steps=5, gain=1.0)``, 24 plastic in ``W``
spread-rows, allocation seed 0, ``m = 8``, 64 trials; ``feedforward([64, 64])``, 256 plastic spread-rows,
allocation seed 0, ``m = 4``, 256 trials; fit seed 0 and warm-up seed 1 for both).
Only public API is used for the workloads and the fits (``ns.fit``, ``ns.allocate``, ``ns.linear_rnn``,
``ns.feedforward``, ``ns.Circuit.from_toml``, ``FitResult`` fields), so both sides of a refactor run it.
"""
from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

THREAD_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
              "VECLIB_MAXIMUM_THREADS": "1", "NUMEXPR_NUM_THREADS": "1"}
MP_SEED = 0      # bench_mp.run(..., seed=0); its warm-up uses seed + 1
LM_SEED = 0      # bench_lm_workloads.run: ns.fit(circuit, alloc, m, trials, 0)
TIME_TOLERANCE = 0.10  # the refactor's bound on the new / base ratio of the median times
MIN_TIMED = 0.5  # seconds: shorter fits are reported but not judged against TIME_TOLERANCE


# ---------------------------------------------------------------------------------------------------------------
# worker side: runs inside a subprocess whose `import neurosubset` is the tree under test
# ---------------------------------------------------------------------------------------------------------------

def _import_tree(tree: Path):
    import torch

    torch.set_num_threads(1)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set
        pass
    import neurosubset as ns

    where = Path(ns.__file__).resolve()
    if tree.resolve() not in where.parents:
        raise SystemExit(f"compare_commits: `import neurosubset` gave {where}, not the tree {tree}: "
                         f"is PYTHONPATH={os.environ.get('PYTHONPATH')!r} shadowed?")
    return ns


def _mp_workloads(ns):
    """bench_mp.py's two workloads, as its main() builds them (not importable from there)."""
    rnn = ns.linear_rnn(16, 2, 2, steps=5, gain=1.0)
    rnn_alloc = ns.allocate(rnn, 24, strategy="spread-rows", within=["W"], seed=0)
    yield ("mp: linear RNN n=16 T=5, 24 plastic in W (spread-rows), m=8", rnn, rnn_alloc, 8, 64, MP_SEED)
    layer = ns.feedforward([64, 64])
    layer_alloc = ns.allocate(layer, 256, strategy="spread-rows", seed=0)
    yield ("mp: 64x64 linear layer, 256 plastic (spread-rows), m=4", layer, layer_alloc, 4, 256, MP_SEED)


def _lm_workloads(ns, tree: Path):
    """(name, circuit, alloc, m, trials, seed) of the tree's own bench_lm_workloads.py (both trees need one)."""
    path = tree / "benchmarks" / "bench_lm_workloads.py"
    if not path.is_file():
        raise SystemExit(f"{tree} has no benchmarks/bench_lm_workloads.py: compare trees that both have it.")
    spec = importlib.util.spec_from_file_location("_compare_bench_lm_workloads", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    gen, source = module.workloads(), str(path)
    return [("lm: " + name, circuit, alloc, m, trials, LM_SEED) for name, circuit, alloc, m, trials in gen], source


def _all_workloads(ns, tree: Path):
    lm, source = _lm_workloads(ns, tree)
    return list(_mp_workloads(ns)) + lm, source


def _fingerprint(circuit, alloc, m: int, trials: int, seed: int) -> str:
    """Hash of what defines a workload's draws and fit: weight names and shapes, allocation masks, m, trials, seed.

    The circuit's own parameters (gains, init scales, signs) enter through the draws, which the output check
    compares bit for bit.
    """
    import numpy as np

    h = hashlib.sha256()
    h.update(repr((getattr(circuit, "name", None), m, trials, seed)).encode())
    for name in circuit.weight_names:
        mask = np.asarray(alloc.masks[name], dtype=bool)
        h.update(repr((name, mask.shape)).encode())
        h.update(np.packbits(mask).tobytes())
    return h.hexdigest()[:16]


def _find_forward(ns):
    """``forward(circuit, weights, probes)`` of the tree: neurosubset.dynamics (a module or a package re-exporting
    it), its plastic_map module, else any submodule that has one (not a dynamics-specific integrator's)."""
    import importlib
    import inspect
    import pkgutil

    def usable(fn):
        try:
            return callable(fn) and list(inspect.signature(fn).parameters)[:3] == ["circuit", "weights", "probes"]
        except (TypeError, ValueError):
            return False

    for mod in ("neurosubset.dynamics", "neurosubset.dynamics.plastic_map"):
        try:
            fn = getattr(importlib.import_module(mod), "forward", None)
        except ImportError:
            continue
        if usable(fn):
            return fn, f"{mod}.forward"
    for info in pkgutil.walk_packages(ns.__path__, "neurosubset."):
        if any(part in info.name for part in (".plot", ".spiking", ".cli", "continuous", "steady", "discrete")):
            continue
        try:
            fn = getattr(importlib.import_module(info.name), "forward", None)
        except Exception:  # noqa: BLE001 -- optional extras may be missing
            continue
        if usable(fn):
            return fn, f"{info.name}.forward"
    return None, None


def _names(flags) -> list[str] | None:
    meanings = getattr(flags, "meanings", None)
    return list(meanings) if meanings is not None else None


def _decision_names() -> list[str] | None:
    import importlib

    for mod in ("neurosubset._schema", "neurosubset.schema", "neurosubset.results"):
        try:
            names = _names(getattr(importlib.import_module(mod), "DECISION", None))
        except ImportError:
            continue
        if names:
            return names
    return None


def _sign_box(circuit, alloc):
    """Per plastic synapse (theta order) the Dale's-law sign of its presynaptic region (+1, -1 or 0: free)."""
    import numpy as np

    out = []
    for name in circuit.weight_names:
        sign = circuit.region[circuit.projection[name].pre].sign
        out.append(np.full(int(alloc.counts[name]), 0 if sign is None else int(sign)))
    return np.concatenate(out) if out else np.zeros(0, dtype=int)


def _assemble(circuit, alloc, student_init: dict, theta):
    """Student weights with the plastic entries replaced by ``theta`` ``(trial, k, M)`` -> ``(trial, k, post, pre)``."""
    import numpy as np

    out, start = {}, 0
    lead = theta.shape[:-1]
    for name in circuit.weight_names:
        w = np.asarray(student_init[name])
        flat = np.broadcast_to(w.reshape(w.shape[0], 1, -1), lead + (w.shape[-2] * w.shape[-1],)).copy()
        idx = np.asarray(alloc.indices[name])
        flat[..., idx] = theta[..., start:start + idx.size]
        start += idx.size
        out[name] = flat.reshape(lead + w.shape[-2:])
    return out


def _outputs(ns, circuit, alloc, res, seed: int, forward) -> tuple[dict, dict]:
    """Outputs of teacher, student as drawn and (LM) round-0 starts on each trial's probes, and notes."""
    import numpy as np
    import torch

    draws = res.trials
    t = (lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float64))
    probes = t(draws.probes)
    out, notes = {}, {}
    with torch.no_grad():
        out["teacher"] = forward(circuit, {k: t(v) for k, v in draws.teacher.items()}, probes).numpy()
        out["student_init"] = forward(circuit, {k: t(v) for k, v in draws.student_init.items()}, probes).numpy()
        if res.solver == "lm" and alloc.size:
            try:
                out["lm_start"], notes["lm_start"] = _lm_start(circuit, alloc, res, seed, forward, probes)
            except Exception as exc:  # noqa: BLE001 -- reported; the decisions are still compared
                notes["lm_start_error"] = f"{type(exc).__name__}: {exc}"
    return out, notes


def _lm_start(circuit, alloc, res, seed: int, forward, probes):
    """F at each restart's start of round 0 (what LM iteration 0 evaluates), ``(trial, restart, m, n_out)``."""
    import numpy as np
    import torch

    draws = res.trials
    t = (lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float64))
    restarts = int(getattr(res.options, "restarts", 4))
    sigma = np.asarray(circuit.init_scale(alloc), dtype=np.float64)
    trials = probes.shape[0]
    starts = np.stack([np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(i, 1, 0)))
                       .standard_normal((restarts, alloc.size)) * sigma for i in range(trials)])
    if res.dale:
        sign = _sign_box(circuit, alloc)
        starts = np.where(sign > 0, np.abs(starts), starts)
        starts = np.where(sign < 0, -np.abs(starts), starts)
    weights = _assemble(circuit, alloc, draws.student_init, starts)
    rep = probes.unsqueeze(1).expand((trials, restarts) + tuple(probes.shape[1:]))
    return (forward(circuit, {k: t(v) for k, v in weights.items()}, rep).numpy(),
            f"F at the round-0 starts ({restarts} per trial; dale={bool(res.dale)}): what LM iteration 0 "
            f"evaluates")


def worker_list(tree: Path, out: Path) -> None:
    """Write the tree's workloads (names, fingerprints) and its versions."""
    ns = _import_tree(tree)
    import torch

    workloads, source = _all_workloads(ns, tree)
    _, fwd = _find_forward(ns)
    info = {"neurosubset_file": str(Path(ns.__file__).resolve()), "version": getattr(ns, "__version__", None),
            "torch": torch.__version__, "python": platform.python_version(), "lm_workloads_source": source,
            "forward": fwd,
            "workloads": [{"name": w[0], "m": w[3], "trials": w[4], "seed": w[5], "M": int(w[2].size),
                           "fingerprint": _fingerprint(w[1], w[2], w[3], w[4], w[5])} for w in workloads]}
    out.write_text(json.dumps(info, indent=1))


def worker_run(tree: Path, name: str, out: Path, warmup: bool) -> None:
    """Fit one workload (after an untimed one-trial warm-up) and write the per-trial results and outputs."""
    ns = _import_tree(tree)
    import numpy as np

    workloads, _ = _all_workloads(ns, tree)
    match = [w for w in workloads if w[0] == name]
    if not match:
        raise SystemExit(f"compare_commits: no workload {name!r} in {tree}")
    _, circuit, alloc, m, trials, seed = match[0]
    if warmup:
        ns.fit(circuit, alloc, m, 1, seed + 1)
    ru0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    res = ns.fit(circuit, alloc, m, trials, seed)
    wall = time.perf_counter() - t0
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    status_names, decision_names = _names(getattr(ns, "FIT_STATUS", None)), _decision_names()
    status = np.asarray(res.status).astype(int).tolist()
    decision = getattr(res, "decision", None)
    decision = None if decision is None else np.asarray(decision).astype(int).tolist()
    exact = getattr(res, "exact", None)
    forward, fwd_name = _find_forward(ns)
    outputs, notes = _outputs(ns, circuit, alloc, res, seed, forward) if forward is not None else ({}, {})
    np.savez(out.with_suffix(".npz"), residual=np.asarray(res.residual, dtype=np.float64), **outputs)
    record = {
        "name": name, "fit_wall": wall, "fit_cpu": cpu, "solver": res.solver, "tol": float(res.tol),
        "mp": float(np.mean(res.matched)), "mp_by_round": [float(x) for x in res.mp_by_round],
        "matched": np.asarray(res.matched).astype(bool).tolist(), "status": status,
        "status_name": [status_names[s] for s in status] if status_names else None,
        "decision": decision,
        "decision_name": ([decision_names[d] for d in decision] if decision is not None and decision_names
                          else None),
        "decision_kind": None if exact is None else ("exact" if exact else "lower bound"),
        "restarts": np.asarray(res.restarts).astype(int).tolist(),
        "forward": fwd_name, "output_notes": notes, "fingerprint": _fingerprint(circuit, alloc, m, trials, seed),
    }
    out.write_text(json.dumps(record))


# ---------------------------------------------------------------------------------------------------------------
# driver side: no neurosubset import here
# ---------------------------------------------------------------------------------------------------------------

def _env(tree: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONSTARTUP")}
    env.update(THREAD_ENV)
    env["PYTHONPATH"] = str(tree)
    env["PYTHONHASHSEED"] = "0"
    return env


def _child(python: str, tree: Path, args: list[str]) -> tuple[float, float]:
    """Run this file as a worker on ``tree``; return (wall, CPU of the child: user + sys)."""
    ru0, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    proc = subprocess.run([python, str(Path(__file__).resolve()), "--tree", str(tree), *args], cwd=tree,
                          env=_env(tree), capture_output=True, text=True)
    wall = time.perf_counter() - t0
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode:
        raise SystemExit(f"compare_commits: worker on {tree} failed ({' '.join(args[:3])}):\n{proc.stderr[-4000:]}")
    return wall, (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)


def _git(tree: Path) -> dict:
    def run(*cmd):
        try:
            p = subprocess.run(["git", "-C", str(tree), *cmd], capture_output=True, text=True, timeout=30)
            return p.stdout.strip() if p.returncode == 0 else None
        except (OSError, subprocess.SubprocessError):
            return None

    status = run("status", "--porcelain", "--untracked-files=no")
    return {"commit": run("rev-parse", "HEAD"), "dirty": None if status is None else bool(status)}


def _machine() -> dict:
    return {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "nproc": os.cpu_count(),
            "nproc_available": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            "loadavg_start": list(os.getloadavg()), "host": platform.node(), "machine": platform.machine(),
            "processor": platform.processor(), "python": platform.python_version(), "threads_env": THREAD_ENV}


def _maxabs(a, b) -> float | None:
    """Largest |a - b| over the entries (inf where finiteness or NaN-ness differs, 0 where both are NaN)."""
    import numpy as np

    if a.shape != b.shape:
        return None
    same_nan = np.isnan(a) & np.isnan(b)
    with np.errstate(invalid="ignore"):
        d = np.abs(a - b)
    d = np.where(same_nan | (a == b), 0.0, d)  # equal infinities give nan above
    d = np.where(np.isnan(d), np.inf, d)
    return float(d.max(initial=0.0))


def _compare_runs(a: dict, b: dict, a_npz, b_npz) -> dict:
    """Decisions and outputs of run ``a`` (base) against run ``b`` (new) of one workload."""
    import numpy as np

    n = len(a["matched"])
    out = {"trials": n, "same_trial_count": n == len(b["matched"]), "solver": [a["solver"], b["solver"]],
           "tol": [a["tol"], b["tol"]], "fingerprint_equal": a["fingerprint"] == b["fingerprint"]}
    if n != len(b["matched"]):
        out["flipped"] = out["matched_flipped"] = n
        return out

    def field(key, names):
        if a.get(names) is not None and b.get(names) is not None:  # compare by name where both trees name them
            return a[names], b[names]
        return a.get(key) or [None] * n, b.get(key) or [None] * n

    cols = {"matched": ("matched", "matched"), "status": ("status", "status_name"),
            "decision": ("decision", "decision_name")}
    per = {k: field(*v) for k, v in cols.items()}
    ra, rb = a_npz["residual"], b_npz["residual"]
    changed = []
    for i in range(n):
        diff = [k for k, (x, y) in per.items() if x[i] != y[i]]
        if diff:
            changed.append({"trial": i, "fields": diff,
                            **{f"{k}_base": per[k][0][i] for k in diff}, **{f"{k}_new": per[k][1][i] for k in diff},
                            "residual_base": float(ra[i]), "residual_new": float(rb[i]), "tol": a["tol"],
                            "tol_new": b["tol"]})
    out["flipped"] = len(changed)
    out["matched_flipped"] = sum(x != y for x, y in zip(*per["matched"]))
    out["changed_trials"] = changed
    out["decision_kind"] = [a["decision_kind"], b["decision_kind"]]
    out["solver_equal"] = a["solver"] == b["solver"]
    out["mp"] = [a["mp"], b["mp"]]
    out["mp_by_round_equal"] = a["mp_by_round"] == b["mp_by_round"]
    out["restarts_equal"] = a["restarts"] == b["restarts"]
    with np.errstate(invalid="ignore", divide="ignore"):
        rel = np.abs(ra - rb) / np.maximum(np.abs(ra), np.finfo(float).tiny)
    out["residual_bitwise_equal"] = bool(np.array_equal(ra, rb, equal_nan=True))
    out["residual_max_abs_diff"] = _maxabs(ra, rb)
    out["residual_max_rel_diff"] = float(np.nan_to_num(rel, nan=0.0).max(initial=0.0))
    outs = {}
    for key in sorted((set(a_npz.files) | set(b_npz.files)) - {"residual"}):
        if key in a_npz.files and key in b_npz.files:
            x, y = a_npz[key], b_npz[key]
            outs[key] = {"max_abs_diff": _maxabs(x, y), "bitwise_equal": bool(np.array_equal(x, y, equal_nan=True)),
                         "shape": list(x.shape), "max_abs": float(np.nan_to_num(np.abs(x), posinf=0).max(initial=0))}
        else:
            outs[key] = {"missing_on": "new" if key in a_npz.files else "base"}
    out["outputs"] = outs
    out["output_notes"] = {"base": a.get("output_notes"), "new": b.get("output_notes")}
    return out


def _median(xs):
    return statistics.median(xs) if xs else None


def _ratio(new, base):
    return None if not base or new is None else new / base


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", type=Path, help="source tree of the reference commit (e.g. a git worktree)")
    parser.add_argument("--new", type=Path, help="source tree of the changed code")
    parser.add_argument("--rounds", "-K", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--only", action="append", default=[], help="run only workloads whose name contains this")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--python", default=sys.executable, help="interpreter of the subprocesses")
    parser.add_argument("--keep", type=Path, help="keep the per-run files in this directory")
    parser.add_argument("--no-warmup", action="store_true", help="skip the untimed one-trial warm-up fit")
    # worker mode (internal)
    parser.add_argument("--tree", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--list", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--run", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.tree is not None:  # worker
        if args.list is not None:
            worker_list(args.tree, args.list)
        else:
            worker_run(args.tree, args.run, args.out, warmup=not args.no_warmup)
        return 0

    if args.base is None or args.new is None:
        parser.error("--base and --new are required")
    if args.rounds < 1:
        parser.error("--rounds must be >= 1")
    import numpy as np

    base, new = args.base.resolve(), args.new.resolve()
    sides = {"base": base, "new": new}
    machine = _machine()
    work = Path(tempfile.mkdtemp(prefix="compare_commits_")) if args.keep is None else args.keep
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    trees = {}
    for side, tree in sides.items():
        _child(args.python, tree, ["--list", str(work / f"list_{side}.json")])
        trees[side] = {"path": str(tree), **_git(tree), **json.loads((work / f"list_{side}.json").read_text())}
        print(f"{side}: {tree}  commit {trees[side]['commit']}  dirty {trees[side]['dirty']}  "
              f"imports {trees[side]['neurosubset_file']}  (neurosubset {trees[side]['version']}, "
              f"torch {trees[side]['torch']}, forward {trees[side]['forward']})", flush=True)
    names_base = [w["name"] for w in trees["base"]["workloads"]]
    names_new = [w["name"] for w in trees["new"]["workloads"]]
    fp = {s: {w["name"]: w["fingerprint"] for w in trees[s]["workloads"]} for s in sides}
    names = [n for n in names_base if n in names_new and (not args.only or any(o in n for o in args.only))]
    workload_issues = {"only_base": [n for n in names_base if n not in names_new],
                       "only_new": [n for n in names_new if n not in names_base],
                       "fingerprint_differs": [n for n in names if fp["base"][n] != fp["new"][n]]}
    if any(workload_issues.values()):
        print(f"WARNING: the trees build different workloads: {workload_issues}", flush=True)

    runs = {n: {s: [] for s in sides} for n in names}
    round_seconds = []
    for k in range(args.rounds):
        t_round = time.perf_counter()
        side_seconds = {s: 0.0 for s in sides}
        for n, name in enumerate(names):
            for side, tree in sides.items():  # base, then new: interleaved within every workload
                stem = work / f"r{k}_w{n}_{side}"
                extra = ["--no-warmup"] if args.no_warmup else []
                wall, cpu = _child(args.python, tree, ["--run", name, "--out", str(stem.with_suffix(".json")),
                                                       *extra])
                side_seconds[side] += wall
                rec = json.loads(stem.with_suffix(".json").read_text())
                rec.update(proc_wall=wall, proc_cpu=cpu, stem=str(stem))
                runs[name][side].append(rec)
                print(f"  round {k + 1}/{args.rounds} {side:4s} {name:66s} fit {rec['fit_wall']:7.2f} s wall "
                      f"{rec['fit_cpu']:7.2f} s CPU | process {wall:6.2f} s wall {cpu:6.2f} s CPU  "
                      f"MP {rec['mp']:.3f}", flush=True)
        round_seconds.append({"total": time.perf_counter() - t_round, **side_seconds})
        print(f"round {k + 1}: {round_seconds[-1]['total']:.1f} s (base {side_seconds['base']:.1f} s, "
              f"new {side_seconds['new']:.1f} s of subprocess wall)", flush=True)

    results = []
    for name in names:
        b0, n0 = runs[name]["base"][0], runs[name]["new"][0]
        with np.load(b0["stem"] + ".npz") as bz, np.load(n0["stem"] + ".npz") as nz:
            cmp = _compare_runs(b0, n0, bz, nz)
        # each side against its own first round: answers that vary between runs make the comparison moot
        varies = {}
        for side in sides:
            first = runs[name][side][0]
            bad = []
            for k, rec in enumerate(runs[name][side][1:], start=1):
                with np.load(first["stem"] + ".npz") as x, np.load(rec["stem"] + ".npz") as y:
                    c = _compare_runs(first, rec, x, y)
                if c["flipped"] or not c.get("residual_bitwise_equal", False) or any(
                        not v.get("bitwise_equal", False) for v in c.get("outputs", {}).values()):
                    bad.append(k)
            varies[side] = bad
        cmp["rounds_differing_from_round_1"] = varies
        timing = {}
        for key in ("fit_wall", "fit_cpu", "proc_wall", "proc_cpu"):
            med = {s: _median([r[key] for r in runs[name][s]]) for s in sides}
            timing[key] = {"base": med["base"], "new": med["new"], "ratio": _ratio(med["new"], med["base"]),
                           "base_all": [r[key] for r in runs[name]["base"]],
                           "new_all": [r[key] for r in runs[name]["new"]]}
        results.append({"workload": name, "fingerprint": [fp["base"][name], fp["new"][name]], **cmp,
                        "timing": timing})

    totals = {}
    for key in ("fit_wall", "fit_cpu", "proc_wall", "proc_cpu"):
        t = {s: sum(r["timing"][key][s] for r in results) for s in sides}
        totals[key] = {**t, "ratio": _ratio(t["new"], t["base"])}
    machine["loadavg_end"] = list(os.getloadavg())
    machine["elapsed_s"] = time.perf_counter() - started

    print(f"\n{'workload':66s} {'flips':>5s} {'matched':>7s} {'resid':>9s} {'outputs max|d|':>15s} "
          f"{'fit wall b/n (ratio)':>24s} {'fit CPU b/n (ratio)':>24s}")
    for r in results:
        outs = r.get("outputs", {})
        dmax = [v.get("max_abs_diff") for v in outs.values()]
        dmax = ("missing" if any(d is None for d in dmax) else f"{max(dmax, default=0.0):.3g}") if outs else "-"
        tw, tc = r["timing"]["fit_wall"], r["timing"]["fit_cpu"]
        resid = "equal" if r.get("residual_bitwise_equal") else f"{r.get('residual_max_rel_diff', float('nan')):.1e}"
        print(f"{r['workload']:66s} {r['flipped']:5d} {r['matched_flipped']:7d} {resid:>9s} {dmax:>15s} "
              f"{tw['base']:7.2f}/{tw['new']:7.2f} ({tw['ratio']:.3f}) {tc['base']:7.2f}/{tc['new']:7.2f} "
              f"({tc['ratio']:.3f})")
        for c in r.get("changed_trials", []):
            print(f"    trial {c['trial']:4d} changed {c['fields']}: "
                  + ", ".join(f"{f} {c[f + '_base']} -> {c[f + '_new']}" for f in c["fields"])
                  + f"; residual base {c['residual_base']:.3e}, new {c['residual_new']:.3e}, tol {c['tol']:g}")
        if r.get("decision_kind") and r["decision_kind"][0] != r["decision_kind"][1]:
            print(f"    decision kind {r['decision_kind'][0]!r} -> {r['decision_kind'][1]!r}")
        if not r.get("solver_equal", True):
            print(f"    solver {r['solver'][0]!r} -> {r['solver'][1]!r}")
        for key, v in outs.items():
            if "missing_on" in v:
                print(f"    outputs {key!r} missing on {v['missing_on']}")
        for side, notes in (r.get("output_notes") or {}).items():
            if notes and "lm_start_error" in notes:
                print(f"    {side}: iteration-0 outputs not computed: {notes['lm_start_error']}")
        for side, bad in r["rounds_differing_from_round_1"].items():
            if bad:
                print(f"    WARNING: {side} gave different answers in rounds {[k + 1 for k in bad]} than in round 1")
    print(f"\nmedian times over {args.rounds} round(s), summed over workloads (new / base; bound 1 +- "
          f"{TIME_TOLERANCE:.0%}):")
    for key, label in (("fit_wall", "fit wall"), ("fit_cpu", "fit CPU"), ("proc_wall", "process wall"),
                       ("proc_cpu", "process CPU")):
        t = totals[key]
        print(f"  {label:13s} base {t['base']:8.2f} s  new {t['new']:8.2f} s  ratio {t['ratio']:.3f}")
    flips = sum(r["flipped"] for r in results)
    out_diff = max((v.get("max_abs_diff") or 0.0 for r in results for v in r.get("outputs", {}).values()),
                   default=0.0)
    # fits under MIN_TIMED seconds are listed apart: their ratios are noise (timer, scheduler), not the code
    slow = [r["workload"] for r in results
            if r["timing"]["fit_wall"]["base"] >= MIN_TIMED
            and any(r["timing"][k]["ratio"] is not None and abs(r["timing"][k]["ratio"] - 1) > TIME_TOLERANCE
                    for k in ("fit_wall", "fit_cpu"))]
    short = [r["workload"] for r in results if r["timing"]["fit_wall"]["base"] < MIN_TIMED]
    same_kind = all(r.get("decision_kind", [0, 0])[0] == r.get("decision_kind", [0, 0])[1]
                    and r.get("solver_equal", False) and r["same_trial_count"] for r in results)
    summary = {"identical_decisions": flips == 0 and same_kind and not any(workload_issues.values()),
               "flipped_trials": flips,
               "max_abs_output_diff": out_diff, "workload_issues": workload_issues,
               "fit_time_ratio_outside_10pct": slow, "too_short_to_time": short, "round_seconds": round_seconds,
               "loaded": max(machine["loadavg_start"][0], machine["loadavg_end"][0]) > (machine["nproc"] or 1)}
    print(f"\nidentical decisions: {summary['identical_decisions']} ({flips} changed trials); largest output "
          f"difference {out_diff:.3g}; workloads with a fit-time ratio outside 1 +- {TIME_TOLERANCE:.0%}: "
          f"{slow or 'none'} (fits under {MIN_TIMED} s not judged: {len(short)})")
    if summary["loaded"]:
        print(f"WARNING: load average above nproc ({machine['nproc']}): wall times are shared with other jobs; "
              f"trust the CPU ratios and the medians of more rounds")
    print(f"machine: nproc {machine['nproc']} (available {machine['nproc_available']}), load average "
          f"{machine['loadavg_start']} -> {machine['loadavg_end']}, {machine['date']}, "
          f"elapsed {machine['elapsed_s']:.0f} s")
    if args.json:
        args.json.write_text(json.dumps({"machine": machine, "trees": trees, "rounds": args.rounds,
                                         "summary": summary, "totals": totals, "workloads": results}, indent=1))
    if args.keep is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if summary["identical_decisions"] and out_diff == 0.0 else 1


if __name__ == "__main__":
    sys.exit(main())
