"""Compare a re-run of the analysis scripts with the shipped ``data/*.nc``: exact decisions per point, LM flips.

For every script whose re-run file exists (``RERUN/NAME.nc``), the points of the shipped file and of the re-run are
matched by their coordinate labels, and

- every **exact decision** must be identical: a point is exact where its result says so (``decision_kind``
  "exact"; files written before that variable: ``mp_estimate``, or an exact solver in ``solver``: least squares,
  ReLU LPs, roots, lifted rates, the rank certificate) in both files; its ``mp`` must agree,
  as must every certificate value (``verdict``, ``plastic_rank``, ``full_rank``) and the exact outputs of the
  certificate-only scripts (``scaling``: ``m_critical``; ``celegans_allocations``: ranks, verdicts, budgets;
  ``localize_demo``: the exactly decided candidates' ``matched`` and Jacobian ``rank``);
- a point exact in one file and a lower bound in the other is listed with both values (same seeds, same trials:
  an exact MP below the other run's lower bound counts as a differing exact decision);
- every **lower-bound (LM) point whose count of matched trials moved** is listed with the matched trials and the
  residuals of both runs (median log10 relative residual, or median residual; the analysis files store no per-trial
  values, so a flip is seen as the change of ``n_matched`` at its point: at least that many trials flipped);
- scripts without exact decisions (``digits_allocations``: trained accuracies) report their largest change.

Run: ``python analysis/compare_rerun.py RERUN [--data DIR] [--md FILE]``. Exit status 1 if an exact decision differs
in any compared script, else 0. Prints a Markdown report (also written to ``--md``).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import xarray as xr

REPO = Path(__file__).resolve().parents[1]
NAMES = ("lffn_allocations", "lrnn_allocations", "relu_allocations", "digits_allocations", "heuristic_accuracy",
         "theory_vs_empirics", "scaling", "celegans_allocations", "celegans_mp", "continuous_allocations",
         "ei_allocations", "localize_demo", "localize_demo_worm")
EXACT_SOLVERS = {"lstsq", "relu_lp", "roots", "lifted", "none (certificate)", "rank_certificate"}
CERTIFICATE = ("verdict", "plastic_rank", "full_rank")
EXACT_VARIABLES = {"scaling": ("m_critical", "q", "verdict"),
                   "celegans_allocations": ("plastic_rank", "full_rank", "verdict", "n_plastic", "budget",
                                            "block_plastic", "stage_plastic_rank", "stage_full_rank",
                                            "stage_minimal_budget", "stage_optimal_onto_motor", "stage_neurons",
                                            "stage_chemical")}


def _open(path: Path) -> xr.Dataset:
    with xr.open_dataset(path, engine="h5netcdf") as ds:
        return ds.load()


def _text(values: np.ndarray) -> np.ndarray:
    return np.char.strip(np.asarray(values).astype(str))


def exact_mask(ds: xr.Dataset) -> xr.DataArray:
    """Where a point's MP is an exact decision (see the module docstring), broadcast to ``mp``'s dims."""
    if "decision_kind" in ds:
        flag = xr.DataArray(_text(ds.decision_kind.values) == "exact", dims=ds.decision_kind.dims)
    elif "mp_estimate" in ds:
        flag = xr.DataArray(_text(ds.mp_estimate.values) == "exact", dims=ds.mp_estimate.dims)
    else:
        flag = xr.DataArray(np.isin(_text(ds.solver.values), list(EXACT_SOLVERS)), dims=ds.solver.dims)
    flag = flag.assign_coords({d: ds[d] for d in flag.dims if d in ds.coords})
    return flag.broadcast_like(ds.mp) & ds.mp.notnull()


def _same(a: xr.DataArray, b: xr.DataArray) -> xr.DataArray:
    if a.dtype.kind in "fiu" and b.dtype.kind in "fiu":
        x, y = a.astype(float), b.astype(float)
        return (x == y) | (x.isnull() & y.isnull())
    return xr.DataArray(_text(a.values) == _text(b.values), dims=a.dims, coords=a.coords)


def _label(point: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in point.items())


def _points(mask: xr.DataArray) -> list[dict]:
    idx = np.argwhere(np.asarray(mask.values))
    return [{d: (mask[d].values[i].item() if d in mask.coords else int(i)) for d, i in zip(mask.dims, row)}
            for row in idx]


def compare(name: str, shipped: xr.Dataset, rerun: xr.Dataset) -> tuple[list[str], int, dict]:
    """Markdown lines for one script, the number of differing exact decisions, and counts for the summary."""
    lines: list[str] = []
    bad = 0
    dims = [d for d in shipped.dims if d in rerun.dims]
    old, new = xr.align(shipped, rerun, join="inner", exclude=[d for d in shipped.dims if d not in dims])
    for d in dims:
        gone = sorted(set(map(str, shipped[d].values)) - set(map(str, new[d].values))) if d in shipped.coords else []
        added = sorted(set(map(str, rerun[d].values)) - set(map(str, old[d].values))) if d in rerun.coords else []
        if gone or added:
            lines.append(f"- coordinate `{d}`: only shipped {gone[:6]}, only re-run {added[:6]}")
    counts = {"exact": 0, "lower_bound": 0, "flipped_points": 0}
    if "mp" in old and "mp" in new:
        ex_old, ex_new = exact_mask(old), exact_mask(new)
        both = ex_old & ex_new
        counts["exact"] = int(both.sum())
        differ = both & ~_same(old.mp, new.mp)
        for p in _points(differ):
            bad += 1
            lines.append(f"- **exact MP differs** at {_label(p)}: {float(old.mp.sel(p)):.4g} -> "
                         f"{float(new.mp.sel(p)):.4g}")
        for p in _points(ex_old ^ ex_new):
            # same seeds, same trials: an exact decision matches every trial a local solver matched, so an exact
            # MP below the other run's lower bound is a contradiction
            was_exact = bool(ex_old.sel(p))
            exact_mp, bound = (old.mp.sel(p), new.mp.sel(p)) if was_exact else (new.mp.sel(p), old.mp.sel(p))
            clash = float(exact_mp) < float(bound)
            bad += clash
            lines.append(f"- {'**exact below a lower bound**' if clash else 'exactness changed'} at {_label(p)}: "
                         f"shipped {'exact' if was_exact else 'LB'} MP {float(old.mp.sel(p)):.4g}, re-run "
                         f"{'exact' if bool(ex_new.sel(p)) else 'LB'} MP {float(new.mp.sel(p)):.4g}")
        lower = ~ex_old & ~ex_new & old.mp.notnull() & new.mp.notnull()
        counts["lower_bound"] = int(lower.sum())
        count = "n_matched" if "n_matched" in old and "n_matched" in new else "mp"
        moved = lower & ~_same(old[count], new[count])
        for p in _points(moved):
            counts["flipped_points"] += 1
            res = next((v for v in ("median_log10_residual", "median_residual") if v in old and v in new), None)
            tail = "" if res is None else (f"; {res} {float(old[res].sel(p)):.3g} -> {float(new[res].sel(p)):.3g}")
            lines.append(f"- LM point moved at {_label(p)}: matched {old[count].sel(p).item():g} -> "
                         f"{new[count].sel(p).item():g} of {new.trials.sel(p).item() if 'trials' in new else '?'}"
                         f" (MP {float(old.mp.sel(p)):.3g} -> {float(new.mp.sel(p)):.3g}){tail}")
    checked = [v for v in CERTIFICATE + EXACT_VARIABLES.get(name, ()) if v in old and v in new]
    counts["certificate_values"] = 0
    for var in dict.fromkeys(checked):
        a, b = old[var], new[var]
        counts["certificate_values"] += int(a.size)
        if name == "lrnn_allocations" and var in CERTIFICATE:  # compare where both computed it
            keep = a.notnull() & b.notnull() if a.dtype.kind == "f" else (_text(a.values) != "") & (
                _text(b.values) != "")
            a, b = a.where(keep), b.where(keep)
        differ = ~_same(a, b)
        for p in _points(differ):
            bad += 1
            lines.append(f"- **{var} differs** at {_label(p)}: {a.sel(p).values} -> {b.sel(p).values}")
    if name.startswith("localize_demo") and "exact" in old and "exact" in new:
        both = (old.exact.astype(bool) & new.exact.astype(bool))
        counts["exact"] = int(both.sum())
        for var in ("matched", "rank"):
            for p in _points(both & ~_same(old[var], new[var])):
                bad += 1
                lines.append(f"- **{var} differs** (exact candidate) at {_label(p)}: {old[var].sel(p).item()} -> "
                             f"{new[var].sel(p).item()}")
        lb = ~both
        for var in ("matched", "place"):
            for p in _points(lb & ~_same(old[var], new[var])):
                lines.append(f"- LM candidate {var} moved at {_label(p)}: {old[var].sel(p).item()} -> "
                             f"{new[var].sel(p).item()}")
    if name.endswith("_worm"):
        for var in ("matched", "place", "rank"):
            if var in old and var in new:
                for p in _points(~_same(old[var], new[var])):
                    lines.append(f"- LM candidate {var} moved at {_label(p)}: {old[var].sel(p).item()} -> "
                                 f"{new[var].sel(p).item()}")
    if name == "digits_allocations":
        for var in ("test_accuracy", "train_accuracy"):
            diff = np.nanmax(np.abs(old[var].values - new[var].values))
            lines.append(f"- no exact decisions; largest |change| of {var}: {diff:.3g}")
    return lines, bad, counts


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rerun", type=Path, help="folder of the re-run's NAME.nc files")
    parser.add_argument("--data", type=Path, default=REPO / "data", help="the shipped files (default: data/)")
    parser.add_argument("--md", type=Path, default=None, help="also write the report to this Markdown file")
    args = parser.parse_args(argv)
    out = [f"# Re-run {args.rerun} vs shipped {args.data}", ""]
    failed = []
    for name in NAMES:
        new_path, old_path = args.rerun / f"{name}.nc", args.data / f"{name}.nc"
        if not new_path.is_file():
            out += [f"## {name}: no re-run file (not finished)", ""]
            continue
        lines, bad, counts = compare(name, _open(old_path), _open(new_path))
        verdict = "EXACT DECISIONS DIFFER" if bad else "exact decisions identical"
        runtime = _open(new_path).attrs.get("runtime_s", "?")
        out += [f"## {name}: {verdict} ({counts['exact']} exact MP points, {counts['certificate_values']} "
                f"certificate / exact values, {counts['lower_bound']} lower-bound points, "
                f"{counts['flipped_points']} of them moved; re-run {runtime} s)", ""] + (lines or ["- no change"])
        out.append("")
        if bad:
            failed.append(name)
    out.append(f"Scripts with a differing exact decision: {failed or 'none'}")
    text = "\n".join(out)
    print(text)
    if args.md is not None:
        args.md.write_text(text + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
