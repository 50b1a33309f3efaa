"""Shared helpers for the analysis scripts: command line, MP records -> Dataset, netCDF output, figure style.

Every script in ``analysis/`` is run as ``python analysis/NAME.py [--quick] [--out DIR] [--seed S]`` and writes
``DIR/NAME.nc`` (the numbers behind the figure, configuration in attrs) and ``DIR/NAME.png``. ``DIR`` is ``data/``
(the shipped results) by default; a ``--quick`` run never writes there: without ``--out`` it writes into a new
temporary folder (printed), and ``--quick --out data/`` is refused.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

import neurosubset as ns
from neurosubset._internal import analysis_meta, write_figure

REPO = Path(__file__).resolve().parents[1]
MAX_NC_BYTES = 2_000_000  # keep every dataset in data/ small enough to commit


def parse_args(description: str, argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line shared by all analysis scripts."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true",
                        help="a tiny configuration for the smoke test (seconds, not minutes)")
    parser.add_argument("--out", type=Path, default=None,
                        help="output directory for the .nc and .png files (default: data/; with --quick a new "
                             "temporary folder: a quick run never overwrites the shipped results in data/)")
    parser.add_argument("--seed", type=int, default=0, help="base seed of all random draws (default: 0)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace NAME.nc / NAME.png in --out (never the shipped files in data/)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads (default 1: the problems are small and batched, and the "
                             "machine is shared)")
    args = parser.parse_args(argv)
    shipped = REPO / "data"
    if args.out is None:
        args.out = Path(tempfile.mkdtemp(prefix="neurosubset-quick-")) if args.quick else shipped
        if args.quick:
            print(f"--quick: writing into {args.out} (data/ holds the shipped results)")
    elif args.quick and args.out.resolve() == shipped.resolve():
        parser.error(f"--quick never writes into {shipped} (the shipped results); give --out another folder")
    import torch

    torch.set_num_threads(args.threads)  # a script-level choice; the library never touches global state
    return args


def lm_settings(quick: bool, **quick_overrides: Any) -> dict[str, Any]:
    """Solver keyword arguments for :func:`neurosubset.match_probability`: none at default size (the library's
    default solver), with ``--quick`` a ``solver=Auto(...)`` with ``quick_overrides`` (``restarts``,
    ``max_rounds``, ``iterations``; ``steps`` is read as ``iterations``)."""
    if not quick:
        return {}
    fields = {("iterations" if k == "steps" else k): v for k, v in quick_overrides.items()}
    return {"solver": ns.Auto(**fields)}


def lm_attrs(lm: Mapping[str, Any]) -> dict[str, Any]:
    """The LM settings actually used (the solver object's fields, library defaults when none), as dataset attrs."""
    solver = lm.get("solver", ns.Auto())
    return {"lm_restarts": solver.restarts, "lm_max_rounds": solver.max_rounds, "lm_steps": solver.iterations,
            "lm_settings": "library defaults" if not lm else "quick overrides"}


def mp_records(circuit: ns.Circuit, allocations: Mapping[str, ns.Allocation], ms: Sequence[int], *, trials: int,
               seed: int, **solver: Any) -> dict[tuple[str, int], dict[str, Any]]:
    """MP of named allocations at every ``m`` by :func:`neurosubset.sweep_allocations` (each point equals
    :func:`neurosubset.match_probability` ``(circuit, alloc, m, trials, seed)``): ``(name, m)`` -> a flat record.

    ``solver`` holds :func:`lm_settings`' keywords (and any other option of ``sweep_allocations``: ``dale``,
    ``stable``, ``certificate``, ``skip_zero``).
    """
    ds = ns.sweep_allocations(circuit, dict(allocations), m=list(ms), trials=trials, seed=seed, **solver)
    return {(str(a), int(mm)): point_record(ds.sel(allocation=a, m=mm))
            for a in ds.allocation.values for mm in ds.m.values}


def mp_record(circuit: ns.Circuit, alloc: ns.Allocation, m: int, *, trials: int, seed: int,
              **solver: Any) -> dict[str, Any]:
    """One MP estimate as a flat record (:func:`mp_records` of one allocation at one ``m``)."""
    return mp_records(circuit, {alloc.strategy: alloc}, [m], trials=trials, seed=seed, **solver)[alloc.strategy, m]


def point_record(point: xr.Dataset) -> dict[str, Any]:
    """One point of a :func:`neurosubset.sweep_allocations` Dataset as a flat record of scalars.

    ``mp_by_round`` becomes JSON text of the rounds the point ran.
    """
    rounds = [round(float(v), 4) for v in point.mp_by_round.values[:int(point.rounds)]]
    residual = point.residual.values
    rec: dict[str, Any] = {
        "mp": float(point.mp), "mp_low": float(point.mp_low), "mp_high": float(point.mp_high),
        "n_matched": int(point.matched.sum()), "trials": int(point.sizes["trial"]),
        "mp_first_round": float(point.mp_first_round), "mp_by_round": json.dumps(rounds),
        "last_round_gain": float(point.last_round_gain) if "last_round_gain" in point else 0.0,
        "median_log10_residual": float(np.median(np.log10(np.maximum(residual, 1e-300)))),
        "solver": str(point.solver.values), "decision_kind": str(point.decision_kind.values),
        "budget": int(point.budget),
    }
    if "plastic_rank" in point and np.isfinite(float(point.plastic_rank)):  # the certificate, when computed
        rec.update(plastic_rank=int(point.plastic_rank), full_rank=int(point.full_rank),
                   verdict=str(point.verdict.values))
    return rec


def describe(ds: xr.Dataset, script: str) -> xr.Dataset:
    """Give every variable and coordinate of ``ds`` its attrs from the schema (:func:`analysis_meta`: the
    script's own variables first, then the package's result variables); a name the schema lacks is an error."""
    for name, var in ds.variables.items():
        var.attrs.update(analysis_meta(str(name), script))
    return ds


def records_to_dataset(records: Iterable[Mapping[str, Any]], index: Sequence[str], script: str,
                       attrs: Mapping[str, Any] | None = None) -> xr.Dataset:
    """Records (one dict per estimate) -> a Dataset with dims ``index`` and the schema's variable attrs."""
    frame = pd.DataFrame(list(records))
    ds = frame.set_index(list(index)).sort_index().to_xarray()
    for name, var in list(ds.variables.items()):
        if var.dtype == object:  # netCDF wants fixed string types; missing entries become ""
            ds[name] = var.fillna("").astype(str)
    ds.attrs.update(plain_attrs(attrs or {}))
    return describe(ds, script)


def plain_attrs(attrs: Mapping[str, Any]) -> dict[str, str | int | float]:
    """Attrs as netCDF-safe plain types; lists and dicts become JSON text."""
    out: dict[str, str | int | float] = {}
    for key, value in attrs.items():
        if isinstance(value, (bool, np.bool_)):
            out[key] = int(value)
        elif isinstance(value, (int, np.integer)):
            out[key] = int(value)
        elif isinstance(value, (float, np.floating)):
            out[key] = float(value)
        elif isinstance(value, str):
            out[key] = value
        else:
            out[key] = json.dumps(value)
    return out


def base_attrs(script: str, args: argparse.Namespace, **config: Any) -> dict[str, Any]:
    """The configuration every dataset records: script, command, mode, seed, versions, plus ``config``."""
    import torch

    return {"script": f"analysis/{script}.py", "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
            "mode": "quick" if args.quick else "default", "seed": int(args.seed), "threads": int(args.threads),
            "neurosubset_version": ns.__version__, "torch_version": str(torch.__version__),
            "numpy_version": np.__version__, "xarray_version": xr.__version__, **config}


def save(ds: xr.Dataset, fig: Any, args: argparse.Namespace, name: str, started: float) -> tuple[Path, Path]:
    """Write ``args.out/name.nc`` and ``.png`` through the one write path (:func:`neurosubset.write`: CF encoding,
    atomic; an existing file is replaced only with ``--overwrite``, the shipped ``data/`` files never); record the
    runtime; refuse oversized datasets."""
    import matplotlib.pyplot as plt

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ds.attrs["runtime_s"] = round(time.perf_counter() - started, 1)
    nc, png = out / f"{name}.nc", out / f"{name}.png"
    ns.write(ds, nc, overwrite=args.overwrite)
    size = nc.stat().st_size
    if size > MAX_NC_BYTES:
        raise RuntimeError(f"{nc} is {size} bytes, over the {MAX_NC_BYTES}-byte limit for data/; store less.")
    write_figure(fig, png, overwrite=args.overwrite, bbox_inches="tight")
    plt.close(fig)
    print(f"wrote {nc} ({size / 1e3:.0f} kB) and {png} in {ds.attrs['runtime_s']} s")
    return nc, png


# ------------------------------------------------------------------------------------------------ the worm
WORM_SPLIT = ("sensory->inter", "inter->inter", "inter->motor")  # the three-way split of celegans_allocations


def cell_type_blocks(worm: ns.Circuit) -> dict[str, list[str]]:
    """Cell-type block ``"PRE->POST"`` (sensory / inter / motor) -> the chemical projections between those types
    (fixed ones, such as gap junctions, excluded)."""
    out: dict[str, list[str]] = {}
    for p in worm.projections:
        if not p.fixed:
            out.setdefault(f"{p.pre.split('_')[0]}->{p.post.split('_')[0]}", []).append(p.name)
    return out


def projection_groups(blocks: Mapping[str, list[str]]) -> dict[str, list[str]]:
    """Named sets of projections a budget may be confined to, from :func:`cell_type_blocks`."""
    into_motor = [w for k, ws in blocks.items() if k.endswith("->motor") for w in ws]
    out = {k: blocks[k] for k in ("sensory->inter", "inter->inter", "inter->motor", "motor->motor") if k in blocks}
    out["into motor"] = into_motor
    out["all but motor->motor"] = [w for k, ws in blocks.items() if k != "motor->motor" for w in ws]
    out["all chemical"] = [w for ws in blocks.values() for w in ws]
    return out


def eligible_count(worm: ns.Circuit, names: Sequence[str]) -> int:
    """Plastic-eligible synapses of the projections ``names``."""
    return sum(int(worm.eligible[w].sum()) for w in names)


def certify_record(circuit: ns.Circuit, alloc: ns.Allocation, m: int, seed: int) -> dict[str, Any]:
    """:func:`neurosubset.certify` as a record: ``plastic_rank``, ``full_rank``, ``verdict`` and its wall time
    ``certify_s`` (s)."""
    t = time.perf_counter()
    cert = ns.certify(circuit, alloc, m=m, seed=seed)
    return {"plastic_rank": cert.plastic_rank, "full_rank": cert.full_rank, "verdict": cert.verdict,
            "certify_s": time.perf_counter() - t}


def split_allocation(worm: ns.Circuit, groups: Mapping[str, list[str]], budget: int, strategy: str, seed: int,
                     split: Sequence[str] = WORM_SPLIT) -> ns.Allocation:
    """The budget split evenly (largest remainder) over the ``split`` groups, each allocated with ``strategy``
    (seed ``seed + k`` for the k-th group)."""
    shares = [budget // len(split) + (k < budget % len(split)) for k in range(len(split))]
    masks = {w: np.zeros(worm.shape(w), dtype=bool) for w in worm.weight_names}
    for k, (key, share) in enumerate(zip(split, shares)):
        part = ns.allocate(worm, share, strategy=strategy, within=groups[key], seed=seed + k)
        for w in groups[key]:
            masks[w] |= part.masks[w]
    return ns.Allocation.from_masks(worm, masks, strategy=strategy)


# ------------------------------------------------------------------------------------------------ figures
def figure(ncols: int, nrows: int = 1, *, width: float = 4.2, height: float = 3.4):
    """A figure with the shared style (Agg backend, no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 9, "axes.titlesize": 9, "legend.fontsize": 7, "axes.grid": True,
                         "grid.alpha": 0.3})
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=False,
                             layout="constrained")
    return fig, axes


def plot_mp(ax, x, mp, low, high, *, label: str, offset: float = 0.0, **kw) -> None:
    """MP vs ``x`` with its 95% Wilson band; ``offset`` shifts x slightly so overlapping 0/1 curves stay visible."""
    x = np.asarray(x, dtype=float) + offset
    ok = np.isfinite(np.asarray(mp, dtype=float))
    line, = ax.plot(x[ok], np.asarray(mp)[ok], marker="o", ms=3.5, label=label, **kw)
    ax.fill_between(x[ok], np.asarray(low)[ok], np.asarray(high)[ok], color=line.get_color(), alpha=0.18, lw=0)


def mp_axes(ax, *, xlabel: str = "probes m (count)", title: str = "") -> None:
    """Axis labels and limits for an MP panel."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel("match probability MP (fraction of trials)")
    ax.set_ylim(-0.05, 1.05)
    if title:
        ax.set_title(title)
    ax.legend(loc="best", frameon=False)


def band_note(fig) -> None:
    """The caption line every MP figure carries."""
    fig.text(0.01, -0.01, "bands: 95% Wilson score intervals over trials; curves offset slightly in m for "
             "visibility", fontsize=7, ha="left", va="top")
