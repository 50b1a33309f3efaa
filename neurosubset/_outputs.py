"""Where results are written: the rules every writer follows so that no result is lost by a later command.

- The suffix decides the format: ``.nc`` is netCDF-4 (h5netcdf), ``.zarr`` a Zarr directory, ``.png`` / ``.pdf`` /
  ``.svg`` a figure. A writer that takes only some of them refuses the others (``sweep --out s.nc``), before it
  computes anything.
- The parent folder must exist (a typo in a folder name is an error, not a new folder).
- An existing file is never replaced unless the caller asks (``overwrite=True``, the CLI's ``--overwrite``); a sweep
  store (a Zarr directory with a ``sweep_config`` attribute), or any path inside one, is never replaced by a
  single-result writer (``mp``, ``spikecheck``, ``export``, figures), even with ``overwrite=True``. A Zarr
  directory is replaced only if the toolkit recognisably wrote it (root attrs with ``neurosubset_version``, nothing
  in it but Zarr arrays and metadata); a folder with other content, or one whose root attrs are missing, is refused.
- The files shipped with a source checkout (``data/`` beside the package, except the ``demo_*`` and
  ``quickstart_*`` files that ``make demo`` and the README regenerate) are never replaced, even with ``overwrite``.
- Before a Dataset is written, the free space of the folder is checked against its size; a full disk while writing
  is one line (:class:`OutputError`), and the old file is kept. Temporary files left by a killed writer
  (``.NAME.tmp-PID`` whose process is gone) are removed by the next write of the same path.
- Files are written next to their final path under a temporary name, fsync'ed, then renamed into place, so that a
  kill or a full disk leaves the old file (or nothing), never half a file.
- netCDF files are written CF-clean (:func:`neurosubset._schema.cf_encoding`: strings as char arrays, coordinates
  without ``_FillValue``; ``flag_values`` of the stored type), whatever store the Dataset was read from. This is
  the one place where CF encoding happens: the Datasets the toolkit returns hold values and their attrs only, no
  netCDF encoding, so a plain ``ds.to_netcdf(path)`` writes netCDF-4 strings and 64-bit integers that the CF
  checkers refuse. :func:`write` (``neurosubset.write``) and the command line's ``--out`` are the CF path.
"""
from __future__ import annotations

import errno
import glob
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ._checks import NeurosubsetError

FORMATS = {".nc": "netCDF-4", ".zarr": "Zarr", ".png": "PNG", ".pdf": "PDF", ".svg": "SVG"}
FIGURE_FORMATS = (".png", ".pdf", ".svg")
_REGENERATED = ("demo_", "quickstart_")  # files in data/ that `make demo` and the README quick start write
_ZARR_META = {".zattrs", ".zgroup", ".zmetadata", "zarr.json"}


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


def toolkit_kind(path: str | os.PathLike) -> tuple[str | None, str]:
    """What the toolkit wrote at the Zarr directory ``path``: ``("sweep", "")``, ``("result", "")``, or
    ``(None, why)`` when it cannot be recognised (root attrs missing, unreadable or without
    ``neurosubset_version`` / ``sweep_config``; or content that is not a Zarr array or its metadata)."""
    path = Path(path)
    try:
        attrs = json.loads((path / ".zattrs").read_text())
    except FileNotFoundError:
        return None, "no root attributes (.zattrs)"
    except (OSError, ValueError) as exc:
        return None, f"its root attributes (.zattrs) cannot be read: {type(exc).__name__}"
    if not isinstance(attrs, dict) or not ({"sweep_config", "neurosubset_version"} & set(attrs)):
        return None, "its root attributes (.zattrs) name no neurosubset version or sweep configuration"
    for entry in path.iterdir():
        if entry.name in _ZARR_META:
            continue
        if not (entry.is_dir() and not entry.is_symlink() and
                ((entry / ".zarray").is_file() or (entry / "zarr.json").is_file())):
            return None, f"it holds {entry.name!r}, which is not a Zarr array of a result"
    return ("sweep" if "sweep_config" in attrs else "result"), ""


def shipped(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a file shipped with the source checkout this package runs from (``data/``)."""
    repo = Path(__file__).resolve().parents[1]
    if not (repo / "pyproject.toml").is_file():  # an installed package ships no data/
        return False
    path = Path(path)
    return (path.exists() and path.resolve().parent == (repo / "data").resolve()
            and not path.name.startswith(_REGENERATED))


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
        raise OutputError(f"{what} {str(path)!r}: the folder {_missing_folder(path)} does not exist. Create it first "
                          f"(outputs never create folders, so that a mistyped path is not silently accepted).")
    store = inside_sweep_store(path)
    if store is not None and not (store_ok and store == path.resolve()):
        raise OutputError(f"{what} {str(path)!r} is {'' if store == path.resolve() else 'inside '}the sweep store "
                          f"{str(store)!r}; a single result never replaces or writes into a sweep store, even with "
                          f"--overwrite. Choose another path.")
    if shipped(path):
        raise OutputError(f"{what} {str(path)!r} is a result shipped with neurosubset (data/); it is never replaced, "
                          f"even with --overwrite. Choose another path.")
    if (path.exists() or path.is_symlink()) and not overwrite:
        raise OutputError(f"{what} {str(path)!r} already exists. Refusing to overwrite it: choose another path, or "
                          f"pass --overwrite (overwrite=True in Python) to replace it.")
    if path.is_dir() and not path.is_symlink() and path.suffix != ".zarr":
        raise OutputError(f"{what} {str(path)!r} is a folder; refusing to replace it. Choose another path.")
    if path.is_dir() and not path.is_symlink() and not store_ok:
        kind, why = toolkit_kind(path)
        if kind != "result":
            raise OutputError(f"{what} {str(path)!r} is a folder that neurosubset did not recognisably write ({why}); "
                              f"--overwrite replaces only a result the toolkit wrote. Remove it yourself or choose "
                              f"another path.")
    return path


def _missing_folder(path: Path) -> str:
    """The folder a write to ``path`` needs, quoted, naming the symlink it is reached through (if any)."""
    parent = path.resolve().parent
    if parent == path.parent.absolute():
        return repr(str(path.parent))
    link = next((p for p in (path, *path.parents) if p.is_symlink()), None)
    via = f" (where the symlink {str(link)!r} points)" if link is not None else ""
    return f"{str(parent)!r}{via}"


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


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_stale(path: str | os.PathLike, pattern: str = ".{name}.tmp-*") -> None:
    """Remove the temporary files of ``path`` (``pattern``, ending in a PID) left by writers that died."""
    path = Path(path)
    for stale in path.parent.glob(pattern.format(name=glob.escape(path.name))):
        pid = stale.name.rpartition("-")[2]
        if not pid.isdigit() or _pid_alive(int(pid)):
            continue
        if stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)


def _disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` (or an exception it was raised from) says the disk or the quota is full."""
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if "No space left on device" in str(exc) or "errno = 28" in str(exc):  # h5py's wording
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _free_bytes(folder: Path) -> int:
    return shutil.disk_usage(folder).free


def check_space(path: str | os.PathLike, size: int, what: str = "output") -> None:
    """Refuse (:class:`OutputError`) to write about ``size`` bytes next to ``path`` when the disk has less free."""
    folder = Path(path).resolve().parent
    need = int(size) + 2 ** 16  # the file's own metadata
    free = _free_bytes(folder)
    if free < need:
        raise OutputError(f"{what} {str(path)!r}: needs about {need / 1e6:.1f} MB but only {free / 1e6:.1f} MB are "
                          f"free in {str(folder)!r}. Nothing was written; free some space or choose another folder.")


def write_dataset(ds: Any, path: str | os.PathLike, *, overwrite: bool = False, what: str = "output",
                  formats: Sequence[str] = (".nc", ".zarr")) -> Path:
    """Write an xarray Dataset to ``path`` (format from the suffix) by the rules above, atomically.

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    OutputError
        By :func:`check_output`'s rules; too little free space for the Dataset; the disk filled while writing
        (nothing replaced, the temporary file removed).
    """
    path = check_output(path, formats=formats, overwrite=overwrite, what=what)
    remove_stale(path)
    check_space(path, ds.nbytes, what)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        _write_tmp(ds, path, tmp)
    except Exception as exc:
        _cleanup(tmp)
        if _disk_full(exc):
            raise OutputError(f"{what} {str(path)!r}: the disk is full (No space left on device) while writing it. "
                              f"Nothing was replaced{' (the old file is kept)' if path.exists() else ''}; free some "
                              f"space or choose another folder.") from None
        raise
    return path


def write(ds: Any, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write a result Dataset to a CF-clean netCDF-4 file (``.nc``) or a Zarr directory (``.zarr``), atomically.

    The toolkit's writer, the one the command line's ``--out`` uses: the Datasets that
    :func:`neurosubset.match_probability`, :func:`neurosubset.localize`, :func:`neurosubset.fit_responses`,
    :func:`neurosubset.simulate`, :func:`neurosubset.spiking_check` and the others return carry no netCDF encoding,
    and this is where they get it (strings as char arrays, integers as int32 where they fit,
    coordinates without ``_FillValue``, ``flag_values`` of the stored type: CF-1.8, as cfchecker and the IOOS
    compliance-checker read it). A plain ``ds.to_netcdf(path)`` writes the same values, but netCDF-4 strings and
    64-bit integers, which CF-1.8 does not admit. Results are never lost by a write: see
    :mod:`neurosubset._outputs` for the rules (an existing file is replaced only with ``overwrite``; sweep stores
    and the shipped ``data/`` files never; the parent folder must exist; the free space is checked first).

    Parameters
    ----------
    ds : xarray.Dataset
        The Dataset to write (a result of the toolkit, or any Dataset with plain attrs).
    path : str or path-like
        The output; its suffix decides the format: ``.nc`` (netCDF-4, h5netcdf) or ``.zarr`` (Zarr v2).
    overwrite : bool
        Replace an existing file (or a Zarr directory the toolkit wrote).

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    OutputError
        A suffix other than ``.nc`` / ``.zarr``, a missing parent folder, an existing output without
        ``overwrite``, a sweep store or a shipped file, too little free space, or a disk that filled while writing
        (nothing replaced). A :class:`neurosubset.NeurosubsetError` (a ValueError).

    Examples
    --------
    >>> import tempfile, pathlib, xarray as xr
    >>> import neurosubset as ns
    >>> ff = ns.feedforward([4, 3])
    >>> ds = ns.match_probability(ff, ns.allocate(ff, 6, seed=0), m=2, trials=3)
    >>> out = ns.write(ds, pathlib.Path(tempfile.mkdtemp()) / "mp.nc")
    >>> with xr.open_dataset(out, engine="h5netcdf") as back:
    ...     float(back.mp) == float(ds.mp)
    True
    """
    return write_dataset(ds, path, overwrite=overwrite)


def _cleanup(tmp: Path) -> None:
    if tmp.is_dir():
        shutil.rmtree(tmp, ignore_errors=True)
    elif tmp.exists():
        tmp.unlink()


def _write_tmp(ds: Any, path: Path, tmp: Path) -> None:
    """Write ``ds`` to ``tmp``, fsync it and rename it onto ``path`` (:func:`write_dataset`'s body)."""
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
        _cleanup(tmp)


def write_figure(fig: Any, path: str | os.PathLike, *, dpi: int = 120, overwrite: bool = False,
                 what: str = "the figure", bbox_inches: str | None = None) -> Path:
    """Save a matplotlib figure to ``path`` (``.png``, ``.pdf``, ``.svg``) by the rules above, atomically
    (``bbox_inches="tight"``: the saved area grows to hold text placed outside the axes).

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    path = check_output(path, formats=FIGURE_FORMATS, overwrite=overwrite, what=what)
    remove_stale(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        fig.savefig(tmp, dpi=dpi, format=path.suffix[1:], bbox_inches=bbox_inches)
        fsync_file(tmp)
        os.replace(tmp, path)
        fsync_dir(path.resolve().parent)
    except Exception as exc:
        _cleanup(tmp)
        if _disk_full(exc):
            raise OutputError(f"{what} {str(path)!r}: the disk is full (No space left on device) while writing it. "
                              f"Nothing was replaced; free some space or choose another folder.") from None
        raise
    return path
