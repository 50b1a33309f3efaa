"""Where a sweep's points go: in memory or a resumable Zarr store guarded by a lock file; reading stores back.

A Zarr store (format 2, one chunk per point so points never share a chunk) is created, complete, when the first
point is done: the template (skeleton + every point variable + ``point_checksum``, nothing computed) is written to a
temporary directory, fsync'ed and renamed into place, so a kill leaves no store or a whole one. Its variables and
attrs stay those of the run that created it (a store made before match_probability reported ``fit_status``
resumes without it). Each finished point is then written into its own chunks, then its ``point_checksum``
(blake2b-64 of the point's index and stored bytes), then its ``status`` flag (the commit record); the point's chunk
files and folders are fsync'ed before the next point is written. A done point that is recomputed (its checksum
failed) is first set back to pending. Resuming and reading verify every done point against its checksum: a damaged
or deleted chunk is recomputed by a resume and refused (naming the point and the variable) by a reader. Readers
read ``status`` first and only trust points that were done then (a consistent snapshot while a writer runs).

A store made by a different configuration is refused, naming the fields; extending a finished sweep along ``m``,
``budget`` or ``strategy`` is not supported (use a new store). ``<store>.lock`` (``fcntl.flock`` on the real path,
symlinks resolved, released by the kernel when the process dies) makes a second writer fail at once; a writer
removes it when it finishes (a lock file left by a killed writer is harmless: the next writer takes it over).
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
from collections.abc import Iterator, Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from .._checks import NeurosubsetError
from .._outputs import check_output, fsync_dir, fsync_tree, write_dataset
from .._schema import DONE, PENDING, meta

CHECKSUM = "point_checksum"  # store-only variable: not part of the Dataset a sweep returns or a reader loads


class SweepStoreError(NeurosubsetError):
    """A sweep store cannot be used: another configuration, another writer, damage, or not a sweep store."""


def store_versions() -> dict[str, str]:
    """The version attr of the store's format library: ``zarr_version``."""
    try:
        return {"zarr_version": metadata.version("zarr")}
    except metadata.PackageNotFoundError:  # pragma: no cover
        return {"zarr_version": "not installed"}


def _encoding(ds: xr.Dataset, point_dims: Sequence[str]) -> dict[str, dict[str, Any]]:
    """One chunk per point (size 1 along every swept dim, whole along trial / round / neurons)."""
    return {name: {"chunks": tuple(1 if d in point_dims else ds.sizes[d] for d in var.dims)}
            for name, var in ds.data_vars.items()}


def _point_names(ds: xr.Dataset, dims: Sequence[str]) -> list[str]:
    """The per-point variables of a store (point dims in front), sorted: what a point's checksum covers."""
    n = len(dims)
    return sorted(str(k) for k, v in ds.data_vars.items()
                  if tuple(v.dims[:n]) == tuple(dims) and k not in ("status", CHECKSUM))


def checksum(index: tuple[int, ...], values: Sequence[np.ndarray]) -> int:
    """blake2b-64 of a point's index and the bytes of its stored values (in :func:`_point_names` order), as int64
    (never 0, the fill of points without one)."""
    h = hashlib.blake2b(digest_size=8)
    h.update(np.asarray(index, np.int64).tobytes())
    for value in values:
        h.update(np.ascontiguousarray(value).tobytes())
    out = int.from_bytes(h.digest(), "little", signed=True)
    return out or 1


def _chunk_key(index: tuple[int, ...], ndim: int) -> str:
    return ".".join(map(str, (*index, *[0] * (ndim - len(index)))))


class MemoryTarget:
    """Results kept in memory (``store=None``)."""

    def __init__(self, skeleton: xr.Dataset) -> None:
        self.ds = skeleton
        self.has_layout = False  # the point variables are not there yet

    def done(self) -> np.ndarray:
        return self.ds["status"].values == DONE

    def ensure(self, variables: Mapping[str, xr.Variable]) -> None:
        """Add the point variables (once: every point has the same)."""
        if not self.has_layout:
            self.ds = self.ds.assign(dict(variables))
            self.has_layout = True

    def write(self, index: tuple[int, ...], values: Mapping[str, Any]) -> None:
        for name, value in values.items():
            self.ds[name].values[index] = value
        self.ds["status"].values[index] = DONE

    def result(self) -> xr.Dataset:
        return self.ds


class ZarrTarget:
    """Results written into a Zarr store as they arrive: one region write per point, checksum, status last.

    Parameters
    ----------
    path : Path
        The store (the caller holds its lock).
    skeleton : xarray.Dataset
        The sweep-level template (:func:`neurosubset.sweeps.template.skeleton`).
    dims : tuple of str
        The point dims.
    overwrite : bool
        Start over: an existing store (or file) at ``path`` is removed first.
    durable : bool
        fsync each point's chunks before the next point is written (see the module docstring).
    """

    def __init__(self, path: Path, skeleton: xr.Dataset, dims: tuple[str, ...], *, overwrite: bool = False,
                 durable: bool = True) -> None:
        self.path, self.dims, self.skeleton, self.durable = path, dims, skeleton, durable
        self._group: Any = None
        self._arrays: dict[str, Any] = {}
        self.dtypes: dict[str, np.dtype] = {}
        self.names: list[str] = []
        self.attrs = dict(skeleton.attrs)
        self.damaged: list[str] = []  # one line per done point whose values failed their checksum (recomputed)
        self._redo: set[tuple[int, ...]] = set()
        for stale in path.parent.glob(f"{path.name}.tmp-*"):  # a creation killed half-way (we hold the lock)
            shutil.rmtree(stale, ignore_errors=True)
        if overwrite and (path.exists() or path.is_symlink()):
            _remove(path)
        self.has_layout = path.exists()
        if not self.has_layout:
            self._done = np.zeros(skeleton["status"].shape, bool)
            return
        try:
            stored = xr.open_zarr(path, chunks=None)
        except Exception as exc:
            raise SweepStoreError(f"{str(path)!r} exists but is not a readable sweep store ({_one_line(exc)}). "
                                  f"Delete it, choose another store path, or pass overwrite=True (--overwrite)."
                                  ) from None
        with stored:
            _check_same_config(path, stored.attrs, skeleton.attrs)
            self.dtypes = {str(k): v.dtype for k, v in stored.data_vars.items()}
            self.names = _point_names(stored, dims)
            self.attrs = dict(stored.attrs)  # those of the run that created the store (versions included)
            expected = skeleton["status"].values
            status = _read_status(path, expected)
            done = (status == DONE) & (expected == PENDING)
            bad = _verify(path, dims, self.names, done, self.dtypes) if CHECKSUM in self.dtypes else {}
        for index, reason in bad.items():
            done[index] = False
            self._redo.add(index)
            self.damaged.append(f"point {_point_label(stored, dims, index)}: {reason}")
        self._done = done

    def done(self) -> np.ndarray:
        return self._done

    def ensure(self, variables: Mapping[str, xr.Variable]) -> None:
        """Create the store from the skeleton and the point ``variables`` (once; an existing store keeps its own)."""
        if self.has_layout:
            return
        template = self.skeleton.assign(dict(variables))
        status = template["status"]
        template[CHECKSUM] = xr.Variable(status.dims, np.zeros(status.shape, np.int64), meta(CHECKSUM))
        tmp = self.path.with_name(f"{self.path.name}.tmp-{os.getpid()}")
        template.to_zarr(tmp, mode="w-", encoding=_encoding(template, self.dims), zarr_format=2, consolidated=True)
        if self.durable:
            fsync_tree(tmp)
        os.replace(tmp, self.path)  # the store appears complete or not at all
        if self.durable:
            fsync_dir(self.path.parent)
        self.dtypes = {str(k): v.dtype for k, v in template.data_vars.items()}
        self.names = _point_names(template, self.dims)
        self.has_layout = True

    def write(self, index: tuple[int, ...], values: Mapping[str, Any]) -> None:
        # straight into the point's own chunks with zarr: the layout and dtypes were fixed by xarray when the
        # template was written (no CF encoding is involved for these dtypes), and one open group serves all writes
        has_checksum = CHECKSUM in self.dtypes
        if index in self._redo:  # a damaged done point: pending again before any of its values change
            self._array("status")[index] = np.int8(PENDING)
            if has_checksum:
                self._array(CHECKSUM)[index] = np.int64(0)
            self._sync(index, ["status", CHECKSUM] if has_checksum else ["status"])
        stored = {}
        for name in self.names:  # a store keeps the variables of the run that made it (older: no fit_status)
            if name in values:
                stored[name] = np.asarray(values[name], dtype=self.dtypes[name])  # '<U5' -> the store's '<U8'
                self._array(name)[index] = stored[name]
        if has_checksum:
            self._array(CHECKSUM)[index] = np.int64(checksum(index, [stored[n] for n in sorted(stored)]))
        self._sync(index, [*stored, CHECKSUM] if has_checksum else list(stored))
        # the status flag is the commit record: written only after every value of the point is on disk
        self._array("status")[index] = np.int8(DONE)
        self._sync(index, ["status"])
        self._redo.discard(index)

    def _sync(self, index: tuple[int, ...], names: Sequence[str]) -> None:
        """fsync the chunk files of ``index`` in ``names`` and their folders (no-op unless ``durable``)."""
        if not self.durable:
            return
        for name in names:
            folder = self.path / name
            chunk = folder / _chunk_key(index, len(self._array(name).shape))
            if chunk.exists():  # a chunk equal to the fill value is not stored
                fd = os.open(chunk, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            fsync_dir(folder)

    def _array(self, name: str) -> Any:
        if name not in self._arrays:
            import zarr

            if self._group is None:
                self._group = zarr.open_group(str(self.path), mode="r+", zarr_format=2)
            self._arrays[name] = self._group[name]
        return self._arrays[name]

    def result(self) -> xr.Dataset:
        with xr.open_zarr(self.path, chunks=None) as ds:  # no dask graph over per-point chunks: 4x faster
            return ds.drop_vars(CHECKSUM, errors="ignore").load()


def _remove(path: Path) -> None:
    """Remove what ``overwrite=True`` replaces: a sweep store or a file (never another kind of folder)."""
    from .._outputs import is_sweep_store

    if path.is_symlink() or path.is_file():
        path.unlink()
    elif is_sweep_store(path):
        shutil.rmtree(path)
    else:
        raise SweepStoreError(f"{str(path)!r} is a folder but not a sweep store; overwrite=True replaces only a "
                              f"sweep store or a file. Remove it yourself or choose another store path.")


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:200]}"


def _point_label(ds: xr.Dataset, dims: Sequence[str], index: tuple[int, ...]) -> str:
    """``(budget=9, A->O=0.5, B->O=0.5, strategy='spread-rows', m=2)``."""
    parts = []
    for d, i in zip(dims, index):
        value = ds[d].values[i] if d in ds.coords else i
        parts.append(f"{d}={value.item() if hasattr(value, 'item') else value!r}")
    return "(" + ", ".join(parts) + ")"


def _toml_differences(old: str, new: str) -> str:
    """The fields in which two circuit specs (TOML text) differ: ``regions.CA3.size: stored 100, requested 120``."""
    import tomllib

    try:
        a, b = tomllib.loads(old), tomllib.loads(new)
    except tomllib.TOMLDecodeError:  # pragma: no cover - both were written by Circuit.to_toml
        return "their TOML text"
    out: list[str] = []

    def walk(x: Any, y: Any, where: str) -> None:
        if isinstance(x, dict) and isinstance(y, dict):
            for k in sorted(set(x) | set(y), key=str):
                walk(x.get(k, "<absent>"), y.get(k, "<absent>"), f"{where}.{k}" if where else str(k))
        elif x != y:
            out.append(f"{where}: stored {x!r}, requested {y!r}")

    walk(a, b, "")
    return "; ".join(out[:5]) + (f"; and {len(out) - 5} more" if len(out) > 5 else "") if out else "formatting only"


def _read_status(path: Path, expected: np.ndarray) -> np.ndarray:
    """The stored point status; a status chunk that cannot be read (a killed write) counts as pending."""
    import zarr

    arr = zarr.open_array(str(path / "status"), mode="r", zarr_format=2)
    try:
        return np.asarray(arr[...])
    except Exception:
        status = np.full(arr.shape, PENDING, np.int8)
        for index in zip(*np.nonzero(expected > 0)):
            with contextlib.suppress(Exception):
                status[index] = arr[index]
        return status


def _verify(path: Path, dims: Sequence[str], names: Sequence[str], done: np.ndarray,
            dtypes: Mapping[str, np.dtype]) -> dict[tuple[int, ...], str]:
    """Check every ``done`` point's values against its checksum; point index -> why it failed."""
    import zarr

    group = zarr.open_group(str(path), mode="r", zarr_format=2)
    indices = [tuple(int(i) for i in idx) for idx in zip(*np.nonzero(done))]
    bad: dict[tuple[int, ...], str] = {}
    if not indices:
        return bad
    data: dict[str, Any] = {}
    for name in (*names, CHECKSUM):
        arr = group[name]
        try:
            data[name] = np.asarray(arr[...])
        except Exception:  # find the point chunks that cannot be decoded
            data[name] = None
            for index in indices:
                try:
                    arr[index]
                except Exception as exc:
                    bad.setdefault(index, f"variable {name!r}: its chunk {name}/{_chunk_key(index, arr.ndim)} "
                                          f"cannot be decoded ({_one_line(exc)})")
            data[name] = arr
    for index in indices:
        if index in bad:
            continue
        values = [np.asarray(data[n][index], dtype=dtypes[n]) for n in names]
        stored = int(np.asarray(data[CHECKSUM][index]))
        if stored != checksum(index, values):
            missing = [n for n in names if not (path / n / _chunk_key(index, len(group[n].shape))).exists()]
            bad[index] = (f"its values do not match its checksum (a chunk was changed or deleted"
                          f"{'; no chunk file for ' + ', '.join(repr(n) for n in missing) if missing else ''})")
    return bad


def _check_same_config(path: Path, stored: Mapping[str, Any], new: Mapping[str, Any]) -> None:
    if "config_hash" not in stored or "sweep_config" not in stored:
        raise SweepStoreError(f"{str(path)!r} is not a neurosubset sweep store (no 'config_hash' attribute). "
                              f"Choose another store path.")
    if stored["config_hash"] == new["config_hash"]:
        return
    old_cfg, new_cfg = json.loads(stored["sweep_config"]), json.loads(new["sweep_config"])
    differ = sorted(k for k in set(old_cfg) | set(new_cfg) if old_cfg.get(k) != new_cfg.get(k))
    shown = "; ".join(f"{k}: stored {old_cfg.get(k)!r}, requested {new_cfg.get(k)!r}"
                      for k in differ if k != "circuit")
    if "circuit" in differ:
        fields = _toml_differences(old_cfg.get("circuit", ""), new_cfg.get("circuit", ""))
        shown = f"circuit: the circuit specs differ in {fields}" + ("; " + shown if shown else "")
    raise SweepStoreError(f"The store {str(path)!r} holds a sweep with another configuration (config hash "
                          f"{stored['config_hash']}, requested {new['config_hash']}); it differs in {differ} ({shown})."
                          f" Refusing to mix results: use another store path, or delete the store to start over.")


def lock_path(path: str | os.PathLike) -> Path:
    """``<store>.lock`` beside the store's real path (symlinks resolved: every alias of a store shares one lock)."""
    real = Path(path).resolve()
    return real.with_name(real.name + ".lock")


@contextlib.contextmanager
def store_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive ``fcntl.flock`` on ``<store>.lock`` (the kernel drops it if the process dies).

    The lock file is removed when the writer finishes (while still locked; a writer that opened the old file then
    sees it is no longer the file at that path and retries, so two writers never hold two different lock files).
    """
    lock = lock_path(path)
    if not lock.parent.is_dir():
        raise SweepStoreError(f"The folder {str(Path(path).parent)!r} of the sweep store {str(path)!r} does not "
                              f"exist. Create it first.")
    for _ in range(100):
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise SweepStoreError(f"Another process is writing the sweep store {str(path)!r} (it holds "
                                  f"{str(lock)!r}). Wait for it to finish, or use another store path.") from None
        try:
            same = os.stat(lock).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the previous writer removed that file after we opened it: take the new one
    else:  # pragma: no cover
        raise SweepStoreError(f"Cannot take the lock {str(lock)!r} of the sweep store {str(path)!r}.")
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(lock)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def writer_running(path: str | os.PathLike) -> bool:
    """Whether a process holds the store's lock now (a reader's question; it never creates the lock file)."""
    try:
        fd = os.open(lock_path(path), os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops a shared lock we took
    return False


def open_sweep(store: str | os.PathLike) -> xr.Dataset:
    """Load a sweep store (``.zarr``) or an exported netCDF file into memory.

    A store is read as a consistent snapshot: ``status`` first, then the values; only points done when the
    status was read count as done (later ones read as pending, their values blanked), and each done point's values
    are checked against its checksum. A point that fails is one being recomputed if a writer holds the store's lock
    (read as pending) and damage otherwise: :class:`SweepStoreError`, naming the point and the variable (rerun the
    sweep to recompute it).
    """
    path = Path(store)
    if not path.exists():
        raise FileNotFoundError(f"No sweep store or file at {str(path)!r}.")
    if not path.is_dir():
        with xr.open_dataset(path, engine="h5netcdf") as ds:
            return ds.load()
    from .._outputs import is_sweep_store

    if not is_sweep_store(path):  # a Zarr result of `mp --out x.zarr`
        with xr.open_zarr(path, chunks=None) as ds:
            return ds.load()
    with xr.open_zarr(path, chunks=None) as lazy:
        dims = tuple(lazy["status"].dims)
        names = _point_names(lazy, dims)
        dtypes = {str(k): v.dtype for k, v in lazy.data_vars.items()}
        status = _read_status(path, np.ones(lazy["status"].shape, np.int8))  # read first: the snapshot
        try:
            ds = lazy.drop_vars(CHECKSUM, errors="ignore").load()
        except Exception:
            bad = _verify(path, dims, names, status == DONE, dtypes)
            first = next(iter(bad.items()), None)
            detail = f"point {_point_label(lazy, dims, first[0])}: {first[1]}" if first else "a chunk is unreadable"
            raise SweepStoreError(f"The sweep store {str(path)!r} is damaged: {detail}. Rerun the sweep command to "
                                  f"recompute the damaged point(s).") from None
        bad = _verify(path, dims, names, status == DONE, dtypes) if CHECKSUM in dtypes else {}
        if bad and not writer_running(path):
            index, reason = next(iter(bad.items()))
            raise SweepStoreError(f"The sweep store {str(path)!r} is damaged: {len(bad)} done point(s) fail their "
                                  f"checksum, e.g. point {_point_label(lazy, dims, index)}: {reason}. Rerun the "
                                  f"sweep command to recompute them.")
    for index in bad:
        status[index] = PENDING
    ds["status"].values[...] = status
    pending = status == PENDING
    if pending.any():
        for name in names:
            var = ds[name]
            var.values[pending] = _fill(var.dtype)
    return ds


def _fill(dtype: np.dtype) -> Any:
    if dtype.kind == "f":
        return np.nan
    if dtype.kind == "b":
        return False
    if dtype.kind in "iu":
        return 0
    return ""


def export(store: str | os.PathLike, out: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write a Zarr sweep store (or any Dataset file) as one netCDF-4 file via h5netcdf.

    The store is read as a consistent snapshot (see :func:`open_sweep`); the file is written under a temporary name
    and renamed into place.

    Parameters
    ----------
    store : path
        The ``.zarr`` store.
    out : path
        The ``.nc`` file to write; its folder must exist.
    overwrite : bool
        Replace an existing file (never a sweep store, nor a path inside one).

    Returns
    -------
    pathlib.Path
        ``out``.

    Raises
    ------
    neurosubset._outputs.OutputError
        ``out`` exists (without ``overwrite``), is not ``.nc``, lies in a missing folder or in a sweep store.
    """
    check_output(out, formats=(".nc",), overwrite=overwrite, what="the export file")
    return write_dataset(open_sweep(store), out, overwrite=overwrite, what="the export file", formats=(".nc",))
