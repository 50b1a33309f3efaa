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
from neurosubset._internal import VARIABLES, meta

REPO = Path(__file__).resolve().parents[1]
MAX_NC_BYTES = 2_000_000  # keep every dataset in data/ small enough to commit

# certificate fields that match_probability may carry (theory issue); copied into records when present
_CERT_FIELDS = ("plastic_rank", "full_rank", "verdict")


def parse_args(description: str, argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line shared by all analysis scripts."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true",
                        help="a tiny configuration for the smoke test (seconds, not minutes)")
    parser.add_argument("--out", type=Path, default=None,
                        help="output directory for the .nc and .png files (default: data/; with --quick a new "
                             "temporary folder: a quick run never overwrites the shipped results in data/)")
    parser.add_argument("--seed", type=int, default=0, help="base seed of all random draws (default: 0)")
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


def mp_record(circuit: ns.Circuit, alloc: ns.Allocation, m: int, *, trials: int, seed: int,
              **solver: Any) -> dict[str, Any]:
    """One MP estimate as a flat record (scalars only) from :func:`neurosubset.match_probability`."""
    ds = ns.match_probability(circuit, alloc, m=m, trials=trials, seed=seed, **solver)
    rec: dict[str, Any] = {
        "mp": float(ds.mp), "mp_low": float(ds.mp_low), "mp_high": float(ds.mp_high),
        "n_matched": int(ds.matched.sum()), "trials": int(trials),
        "mp_first_round": float(ds.mp_first_round),
        "mp_by_round": json.dumps([round(float(v), 4) for v in ds.mp_by_round.values]),
        "last_round_gain": float(ds.attrs.get("last_round_gain", 0.0)),
        "median_log10_residual": float(np.median(np.log10(np.maximum(ds.residual.values, 1e-300)))),
        "solver": str(ds.attrs["solver"]),
        "budget": int(alloc.size),
    }
    for key in _CERT_FIELDS:  # the certificate, when match_probability provides it (as variable or attr)
        if key in ds.data_vars:
            rec[key] = ds[key].values.item()
        elif f"certificate_{key}" in ds.attrs:
            rec[key] = ds.attrs[f"certificate_{key}"]
    for key in ("plastic_rank", "full_rank"):
        if key in rec:
            rec[key] = int(rec[key])
    if "verdict" in rec:
        rec["verdict"] = str(rec["verdict"])
    return rec


# analysis-only record fields; the result variables the library also writes (mp, mp_low, mp_high, mp_first_round,
# last_round_gain, budget, plastic_rank, full_rank, verdict, solver) take their attrs from neurosubset._schema
_VAR_META = {
    "n_matched": ("trials in which the fitted student matched the teacher", "1"),
    "trials": ("teacher/student/probe draws", "1"),
    "mp_by_round": ("MP after each solver restart round, JSON list (levels off or still rising)", ""),
    "median_log10_residual": ("median over trials of log10 relative residual", "1"),
    "mp_closed_form": ("closed-form MP (single linear layer: 1 iff every row has >= min(m, d_in))", "1"),
}


def records_to_dataset(records: Iterable[Mapping[str, Any]], index: Sequence[str],
                       attrs: Mapping[str, Any] | None = None) -> xr.Dataset:
    """Records (one dict per estimate) -> a Dataset with dims ``index`` and CF-style variable attrs."""
    frame = pd.DataFrame(list(records))
    ds = frame.set_index(list(index)).sort_index().to_xarray()
    for name, var in ds.variables.items():
        if name in _VAR_META:
            var.attrs["long_name"], var.attrs["units"] = _VAR_META[name]
        elif name in VARIABLES and name != "mp_by_round":  # the analyses store mp_by_round as JSON text
            var.attrs.update(meta(str(name)))
        if var.dtype == object:  # netCDF wants fixed string types; missing entries become ""
            ds[name] = var.fillna("").astype(str)
            ds[name].attrs.update(var.attrs)
    ds.attrs.update(plain_attrs(attrs or {}))
    return ds


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


def save(ds: xr.Dataset, fig: Any, out: Path, name: str, started: float) -> tuple[Path, Path]:
    """Write ``out/name.nc`` and ``out/name.png``; record the runtime; refuse oversized datasets."""
    import matplotlib.pyplot as plt

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ds.attrs["runtime_s"] = round(time.perf_counter() - started, 1)
    nc, png = out / f"{name}.nc", out / f"{name}.png"
    ds.to_netcdf(nc, engine="h5netcdf")
    size = nc.stat().st_size
    if size > MAX_NC_BYTES:
        raise RuntimeError(f"{nc} is {size} bytes, over the {MAX_NC_BYTES}-byte limit for data/; store less.")
    fig.savefig(png, dpi=120, bbox_inches="tight")
    plt.close(fig)
    print(f"wrote {nc} ({size / 1e3:.0f} kB) and {png} in {ds.attrs['runtime_s']} s")
    return nc, png


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
