"""The C. elegans signal-propagation atlas of Randi et al. 2023 (Nature) as an xarray Dataset.

Two-photon optogenetic stimulation of one neuron at a time; the calcium response (dF/F) of the others. The data
ship with the ``wormneuroatlas`` package (which ``cect``, the ``connectome`` extra, installs) as
``wormneuroatlas/data/funatlas.h5``: root ``neuron_ids`` (300 names), groups ``wt`` and ``unc31`` (``unc-31``
mutants: no dense-core-vesicle, i.e. neuropeptide, release), each with ``dFF`` ``(responding, stimulated)`` the mean
response of the row neuron to stimulation of the column neuron, ``dFF_all`` the per-trial amplitudes (an object
array; its finite count is the trial count, ``occ1`` is not), ``q`` the false discovery rates and ``kernels``.

The file is read with h5py only: ``wormneuroatlas.NeuroAtlas()`` contacts WormBase when it starts and fails offline,
and the package itself is never imported (only located).

Names follow :func:`neurosubset.celegans` (cect's names). The file's ``AWCON`` / ``AWCOF`` (AWC-ON and AWC-OFF)
cannot be mapped onto ``AWCL`` / ``AWCR`` (which side is ON is random per animal), so by default (``awc="merge"``)
they are merged into one neuron ``AWC`` (the anatomy's ``AWCL`` + ``AWCR``): the trials of both are pooled per pair;
the pairs between AWC-ON and AWC-OFF (one stimulated, the other responding) are dropped (neither a self-response nor
a pair of the merged neuron). ``awc="split"`` keeps the file's 300 neurons (``AWCON``, ``AWCOFF``).
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import xarray as xr

from .._checks import MissingExtraError, check_choice
from ._schema import meta

__all__ = ["randi2023", "funatlas_path", "STRAINS", "CITATION"]

STRAINS = ("wt", "unc31")
"""The strains of the atlas: wild type and ``unc-31`` mutants (no neuropeptide release)."""
AWC_MODES = ("merge", "split")
CITATION = ("Randi F, Sharma AK, Dvali S, Leifer AM (2023). Neural signal propagation atlas of Caenorhabditis "
            "elegans. Nature 623, 406-414. doi:10.1038/s41586-023-06683-4")
"""The reference to cite for every file written from the atlas."""
_FILE_NAMES = {"AWCOF": "AWCOFF"}  # the file stores AWC-OFF truncated to five characters


def funatlas_path() -> Path:
    """Path of ``funatlas.h5`` inside the installed ``wormneuroatlas`` package (located, not imported).

    Raises
    ------
    MissingExtraError
        ``wormneuroatlas`` is not installed (one line naming the extra to install).
    """
    spec = importlib.util.find_spec("wormneuroatlas")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in locations:
        path = Path(folder) / "data" / "funatlas.h5"
        if path.is_file():
            return path
    raise MissingExtraError("neurosubset.datasets.randi2023 needs the wormneuroatlas package (installed by the "
                            "optional extra 'connectome'): pip install 'neurosubset[connectome]'.")


def _read(strain: str) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Names ``(300,)``, the per-trial amplitudes ``(300, 300, trial)`` (NaN-padded, finite values first) and ``q``."""
    import h5py

    with h5py.File(funatlas_path(), "r") as f:
        names = [x.decode() if isinstance(x, bytes) else str(x) for x in f["neuron_ids"][()]]
        cells = f[strain]["dFF_all"][()]
        q = np.asarray(f[strain]["q"][()], dtype=np.float64)
    finite = [[np.asarray(x, dtype=np.float64)[np.isfinite(np.asarray(x, dtype=np.float64))] for x in row]
              for row in cells]
    depth = max(1, max(v.size for row in finite for v in row))
    trials = np.full((len(names), len(names), depth), np.nan)
    for i, row in enumerate(finite):
        for j, v in enumerate(row):
            trials[i, j, :v.size] = v
    return names, trials, q


def _merge_awc(names: list[str], trials: np.ndarray, q: np.ndarray) -> tuple[list[str], np.ndarray, np.ndarray,
                                                                            int]:
    """Merge AWCON and AWCOF into AWC (module docstring): trials pooled, ON<->OFF pairs dropped.

    ``q`` of a merged pair measured in both is ``min(1, 2 min(q_on, q_off))`` (Bonferroni over the two), else the
    measured one's. Returns the names, trials, q and the number of measured ON<->OFF trials dropped.
    """
    on, off = names.index("AWCON"), names.index("AWCOF")
    dropped = int(np.isfinite(trials[on, off]).sum() + np.isfinite(trials[off, on]).sum())
    keep = [k for k in range(len(names)) if k != on]
    groups = [[on, off] if k == off else [k] for k in keep]
    depth = trials.shape[-1]
    out = np.full((len(keep), len(keep), 2 * depth), np.nan)
    out[..., :depth] = trials[np.ix_(keep, keep)]
    qq = q[np.ix_(keep, keep)].copy()
    a = keep.index(off)
    for b in range(len(keep)):
        for row, col in ((a, b), (b, a)):
            pairs = [(r, s) for r in groups[row] for s in groups[col] if {r, s} != {on, off}]
            values = np.concatenate([trials[r, s] for r, s in pairs])
            values = values[np.isfinite(values)]
            out[row, col] = np.nan
            out[row, col, :values.size] = values
            qs = np.array([q[r, s] for r, s in pairs if np.isfinite(trials[r, s]).any()])
            qs = qs[np.isfinite(qs)]
            qq[row, col] = np.nan if not qs.size else qs[0] if qs.size == 1 else min(1.0, qs.size * qs.min())
    names = [names[k] for k in keep]
    names[a] = "AWC"
    used = max(1, int(np.isfinite(out).sum(-1).max()))
    return names, out[..., :used], qq, dropped


def randi2023(strain: str = "wt", *, awc: str = "merge") -> xr.Dataset:
    """The signal-propagation atlas of Randi et al. 2023 for one strain (module docstring).

    Parameters
    ----------
    strain : {"wt", "unc31"}
        Wild type or ``unc-31`` mutants (no neuropeptide release).
    awc : {"merge", "split"}
        Merge AWC-ON and AWC-OFF into ``AWC`` (as :func:`neurosubset.celegans` merges ``AWCL``/``AWCR``), or keep
        them as ``AWCON`` / ``AWCOFF``.

    Returns
    -------
    xarray.Dataset
        Dims ``responding``, ``stimulated`` (neuron names, the same list in the same order; 299 merged, 300 split)
        and ``trial``:

        - ``response (responding, stimulated)``: mean dF/F over the pair's trials (dimensionless); NaN where the
          pair was not measured and on the diagonal (the stimulated neuron itself: ``self_response``);
        - ``self_response (stimulated)``: the stimulated neuron's own mean response (NaN where not measured);
        - ``n_trials (responding, stimulated)``: finite per-trial amplitudes (0 where unmeasured), diagonal
          included;
        - ``trial_sd (responding, stimulated)``: SD across trials (ddof 1) where ``n_trials >= 2``, NaN elsewhere;
        - ``q (responding, stimulated)``: the atlas's false discovery rate of the pair's response;
        - ``trials (responding, stimulated, trial)``: the per-trial amplitudes, NaN-padded.

        Attrs: ``strain``, ``awc``, ``source`` (the file), ``references`` (:data:`CITATION`), ``title``.

    Raises
    ------
    ParameterError
        An unknown ``strain`` or ``awc`` (one line listing the allowed values).
    MissingExtraError
        ``wormneuroatlas`` is not installed.

    Examples
    --------
    >>> import neurosubset as ns
    >>> ds = ns.datasets.randi2023("wt")
    >>> ds.sizes["responding"], int(ds.response.notnull().sum())
    (299, 23696)
    """
    check_choice("strain", strain, STRAINS)
    check_choice("awc", awc, AWC_MODES)
    names, trials, q = _read(strain)
    dropped = 0
    if awc == "merge":
        names, trials, q, dropped = _merge_awc(names, trials, q)
    names = [_FILE_NAMES.get(n, n) for n in names]
    n = np.isfinite(trials).sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(n > 0, np.nansum(trials, -1) / np.maximum(n, 1), np.nan)
        var = np.nansum((trials - mean[..., None]) ** 2, -1) / np.maximum(n - 1, 1)
    sd = np.where(n >= 2, np.sqrt(var), np.nan)
    diag = np.eye(len(names), dtype=bool)
    self_response = np.diag(mean).copy()
    response = np.where(diag, np.nan, mean)
    q = np.where(n > 0, q, np.nan)
    pair = ("responding", "stimulated")
    data = {name: (dims, values, meta(name)) for name, dims, values in (
        ("response", pair, response), ("self_response", ("stimulated",), self_response),
        ("n_trials", pair, n.astype(np.int64)), ("trial_sd", pair, sd), ("q", pair, q),
        ("trials", pair + ("trial",), trials))}
    coords = {dim: (dim, np.array(names, dtype=str), meta(dim)) for dim in pair}
    attrs = {"title": f"C. elegans signal-propagation atlas ({strain})", "strain": strain, "awc": awc,
             "source": f"wormneuroatlas data/funatlas.h5, group {strain!r} (read with h5py)",
             "references": CITATION,
             "awc_note": ("AWCON and AWCOF merged into AWC (trials pooled; ON<->OFF pairs dropped: "
                          f"{dropped} trials); q of a pair measured in both: min(1, 2 min q)") if awc == "merge"
             else "AWCON and AWCOFF kept as in the file"}
    return xr.Dataset(data, coords=coords, attrs=attrs)
