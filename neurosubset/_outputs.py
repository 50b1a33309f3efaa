"""Where results are written: the rules every writer follows so that no result is lost by a later command.

- The suffix decides the format: ``.nc`` is netCDF-4 (h5netcdf), ``.zarr`` a Zarr directory. A writer that takes
  only one of them refuses the other (``sweep --out s.nc``).
- The parent folder must exist (a typo in a folder name is an error, not a new folder).
- An existing file is never replaced unless the caller asks (``overwrite=True``, the CLI's ``--overwrite``); a sweep
  store (a Zarr directory with a ``sweep_config`` attribute), or any path inside one, is never replaced by a
  single-result writer (``mp``, ``spikecheck``, ``export``), even with ``overwrite=True``.
- Files are written next to their final path under a temporary name, fsync'ed, then renamed into place, so that a
  kill or a full disk leaves the old file (or nothing), never half a file.
- netCDF files are written CF-clean (:func:`neurosubset._schema.cf_encoding`: strings as char arrays, coordinates
  without ``_FillValue``; ``flag_values`` of the stored type), whatever store the Dataset was read from.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ._checks import NeurosubsetError

FORMATS = {".nc": "netCDF-4", ".zarr": "Zarr"}


class OutputError(NeurosubsetError):
    """An output path that would lose results: an existing file without ``overwrite``, a sweep store, a suffix
    that does not match the format, or a missing parent folder."""


def is_sweep_store(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a neurosubset sweep store (a Zarr directory whose attrs hold ``sweep_config``)."""
    path = Path(path)
    if not path.is_dir():
        return False
    for name in (".zattrs", "zarr.json"):
        try:
            attrs = json.loads((path / name).read_text())
        except (OSError, ValueError):
            continue
        attrs = attrs.get("attributes", attrs)
        if isinstance(attrs, dict) and "sweep_config" in attrs:
            return True
    return False


def inside_sweep_store(path: str | os.PathLike) -> Path | None:
    """The sweep store that ``path`` is (or lies inside), or None."""
    real = Path(path).resolve()
    for candidate in (real, *real.parents):
        if is_sweep_store(candidate):
            return candidate
    return None


def check_output(path: str | os.PathLike, *, formats: Sequence[str] = (".nc", ".zarr"), overwrite: bool = False,
                 what: str = "output", store_ok: bool = False) -> Path:
    """Check that results may be written at ``path``; return it as a Path (nothing is written).

    Parameters
    ----------
    path : path
        The output file or Zarr directory.
    formats : sequence of str
        The suffixes this writer accepts (each decides its format, see :data:`FORMATS`).
    overwrite : bool
        Replace an existing file (never a sweep store unless ``store_ok``).
    what : str
        How the message names the output (``"--out"``, ``"the export file"``).
    store_ok : bool
        The writer is the sweep itself (it may replace a sweep store under its lock).

    Raises
    ------
    OutputError
        The suffix is not one of ``formats``, the parent folder does not exist, the path is (inside) a sweep store
        that this writer may not replace, or it exists and ``overwrite`` is False.
    """
    path = Path(path)
    allowed = ", ".join(f"{s} ({FORMATS[s]})" for s in formats)
    if path.suffix not in formats:
        raise OutputError(f"{what} {str(path)!r}: the suffix decides the format and must be {allowed}. Got "
                          f"{path.suffix or 'no suffix'!r}.")
    parent = path.resolve().parent
    if not parent.is_dir():
        raise OutputError(f"{what} {str(path)!r}: the folder {str(path.parent)!r} does not exist. Create it first "
                          f"(outputs never create folders, so that a mistyped path is not silently accepted).")
    store = inside_sweep_store(path)
    if store is not None and not (store_ok and store == path.resolve()):
        raise OutputError(f"{what} {str(path)!r} is {'' if store == path.resolve() else 'inside '}the sweep store "
                          f"{str(store)!r}; a single result never replaces or writes into a sweep store, even with "
                          f"--overwrite. Choose another path.")
    if (path.exists() or path.is_symlink()) and not overwrite:
        raise OutputError(f"{what} {str(path)!r} already exists. Refusing to overwrite it: choose another path, or "
                          f"pass --overwrite (overwrite=True in Python) to replace it.")
    if path.is_dir() and not path.is_symlink() and path.suffix != ".zarr":
        raise OutputError(f"{what} {str(path)!r} is a folder; refusing to replace it. Choose another path.")
    return path


def check_writable(path: str | os.PathLike) -> None:
    """Raise the OSError that writing next to ``path`` would raise (read-only folder, no space), before computing."""
    folder = Path(path).resolve().parent
    with tempfile.NamedTemporaryFile(dir=folder, prefix=f".{Path(path).name}.probe-") as probe:
        probe.write(b"\0" * 4096)
        probe.flush()
        os.fsync(probe.fileno())


def fsync_tree(path: str | os.PathLike) -> None:
    """fsync every file under ``path`` (a file or a directory), then the directories themselves."""
    path = Path(path)
    entries = list(path.rglob("*")) if path.is_dir() else []  # one walk of the tree for files and folders
    files = [path] if path.is_file() else [p for p in entries if p.is_file()]
    for f in files:
        fsync_file(f)
    dirs = [path, *(p for p in entries if p.is_dir())] if path.is_dir() else []
    for d in [*dirs, path.resolve().parent]:
        fsync_dir(d)


def fsync_file(path: str | os.PathLike) -> None:
    """fsync one file (makes its contents durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str | os.PathLike) -> None:
    """fsync a directory (makes renames and new entries in it durable): the same call as on a file."""
    fsync_file(path)


def write_dataset(ds: Any, path: str | os.PathLike, *, overwrite: bool = False, what: str = "output",
                  formats: Sequence[str] = (".nc", ".zarr")) -> Path:
    """Write an xarray Dataset to ``path`` (format from the suffix) by the rules above, atomically.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    path = check_output(path, formats=formats, overwrite=overwrite, what=what)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        if path.suffix == ".zarr":
            ds.to_zarr(tmp, mode="w-", zarr_format=2)
        else:
            from ._schema import cf_attrs, cf_encoding

            encoding = cf_encoding(ds)
            cf_attrs(ds, encoding).to_netcdf(tmp, engine="h5netcdf", encoding=encoding)
        fsync_tree(tmp)
        if path.is_dir() and not path.is_symlink():  # overwrite=True on a (non-sweep) Zarr directory
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
        fsync_dir(path.resolve().parent)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()
    return path
