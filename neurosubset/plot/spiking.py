"""Spiking-check figures: rates against the rate model and teacher against students."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import xarray as xr
from matplotlib.figure import Figure

from ._common import title

__all__ = ["spike_rates", "spikecheck_figure"]


def spike_rates(ds: xr.Dataset) -> Figure:
    """Two panels: spiking rate vs rate-model prediction; teacher vs student spiking rates (output neurons x probes).

    Parameters
    ----------
    ds : xarray.Dataset
        From :func:`neurosubset.spiking.spiking_compare` or :func:`neurosubset.spiking.spikecheck`, with or
        without a ``student`` dim.
    """
    students = [str(s) for s in ds["student"].values] if "student" in ds.dims else [None]
    pick = (lambda name, s: (ds[name] if s is None else ds[name].sel(student=s)).values.ravel())
    fig = Figure(figsize=(10, 4.5), layout="constrained")
    left, right = fig.subplots(1, 2)
    left.errorbar(ds.rate_model_teacher.values.ravel(), ds.rate_spiking_teacher.values.ravel(),
                  yerr=ds.rate_spiking_se_teacher.values.ravel(), fmt="o", ms=3, color="k", label="teacher")
    everything = [ds.rate_model_teacher.values.ravel(), ds.rate_spiking_teacher.values.ravel()]
    for k, s in enumerate(students):
        label = s or "student"
        left.errorbar(pick("rate_model_student", s), pick("rate_spiking_student", s),
                      yerr=pick("rate_spiking_se_student", s), fmt="o", ms=3, color=f"C{k}", alpha=0.7, label=label)
        z = pick("z", s)
        agree = float(np.mean(pick("agree", s)))
        right.errorbar(ds.rate_spiking_teacher.values.ravel(), pick("rate_spiking_student", s),
                       xerr=ds.rate_spiking_se_teacher.values.ravel(), yerr=pick("rate_spiking_se_student", s),
                       fmt="o", ms=3, color=f"C{k}", alpha=0.7,
                       label=f"{label}: median |z| {np.median(np.abs(z)):.1f}, agree {agree:.0%}")
        everything += [pick("rate_model_student", s), pick("rate_spiking_student", s)]
    lo, hi = float(np.min(np.concatenate(everything))), float(np.max(np.concatenate(everything)))
    pad = 0.05 * (hi - lo + 1.0)
    for ax in (left, right):
        ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="0.6", lw=1, zorder=0)
        ax.set_xlim(lo - pad, hi + pad)
        ax.set_ylim(lo - pad, hi + pad)
        ax.set_aspect("equal")
        ax.legend(fontsize=8, loc="upper left")
    left.set_xlabel("rate-model prediction (Hz)")
    left.set_ylabel("spiking rate (Hz), mean ± s.e.")
    title(left, "linear Poisson network vs rate model", fontsize="large")
    right.set_xlabel("teacher spiking rate (Hz)")
    right.set_ylabel("student spiking rate (Hz)")
    title(right, "teacher vs student in spikes (output neurons × probes)", fontsize="large")
    setting = (lambda k: float(ds[k]) if k in ds else float(ds.attrs[k]))  # variables (s); attrs in older files
    title(fig, f"{ds.attrs.get('circuit_name', '')}: tau {1e3 * setting('tau'):g} ms, "
               f"{ds.attrs['repeats']} x {setting('duration'):g} s, brian2 {ds.attrs['brian2_version']} "
               f"({ds.attrs['codegen_target']})", fontsize=10)
    return fig


def spikecheck_figure(ds: xr.Dataset, path: str | Path) -> Path:
    """Write :func:`spike_rates` of ``ds`` to ``path`` (the suffix picks the format, e.g. ``.png``, ``.pdf``; 120 dpi).

    Returns
    -------
    pathlib.Path
        The written file (its folder is created if needed).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    spike_rates(ds).savefig(path, dpi=120)
    return path
