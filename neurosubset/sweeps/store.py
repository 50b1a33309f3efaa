"""Where a sweep's points go: in memory or a resumable Zarr store guarded by a lock file; reading stores back.

A Zarr store (format 2, one chunk per point so points never share a chunk) is created, complete, when the first
point is done: the template (skeleton + every declared point variable + ``point_checksum``, nothing computed) is
written to a temporary directory, fsync'ed and renamed into place, so a kill leaves no store or a whole one. Its
variables and attrs stay those of the run that created it (a store made before match_probability reported
``fit_status`` resumes without it). A computed point that does not write one of them stores the variable's
``absent_value`` attr (``sign_violations``: -1 where the allocation has no signed plastic synapse), or, in stores
without that attr, its not-computed fill. Each finished point is then written into its own chunks, then its
``point_checksum`` (blake2b-64 of the point's index and stored bytes), then its ``status`` flag (the commit record);
the point's chunk files and folders are fsync'ed before the next point is written. A done point that is recomputed
(its checksum failed) is first set back to pending. Resuming and reading verify every done point against its checksum: a
damaged or deleted chunk is recomputed by a resume and refused (naming the point and the variable) by a reader. Readers
read ``status`` first and only trust points that were done then (a consistent snapshot while a writer runs).

A store made by a different configuration is refused, naming the fields, except a grid that only adds values to ``m``,
``budget`` or ``strategy``: the store is then extended (rebuilt beside itself with every done point moved to its new
index, and swapped in), and only the new points are computed (every point's seeds derive from its coordinates, so they
equal a fresh sweep's); and a larger ``trials`` alone: every point keeps its trials and fits only the new ones (trial
``i`` depends on the point's seed and ``i``), equal to a fresh sweep of that many trials. ``<store>.lock``
(``fcntl.flock`` on the real path, symlinks resolved, released by the kernel when the process dies) makes a second
writer fail at once; a writer removes it when it finishes (a lock file left by a killed writer is harmless: the next
writer takes it over).
"""
from __future__ import annotations

import contextlib
import fcntl
import glob
import os
import shutil
from collections.abc import Iterator, Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from .._outputs import check_output, fsync_dir, fsync_file, fsync_tree, write_dataset
from .._schema import DONE, OFF_GRID, PENDING, fill_value, meta
from .integrity import (CHECKSUM, SweepStoreError, _check_metadata, _check_same_config, _chunk_key, _is_extension,
                        _looks_like_sweep_store, _one_line, _point_label, _point_names, _read_status, _verify,
                        checksum)
from .layout import flat_points, index_points


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


def absent_value(var: xr.Variable | xr.DataArray) -> Any:
    """What a computed point that does not write ``var`` stores: its ``absent_value`` attr (declared in
    :mod:`neurosubset.schema`), else its not-computed fill (stores written before the attr existed)."""
    return var.attrs.get("absent_value", fill_value(var.dtype))


def _absent_values(ds: xr.Dataset, names: Sequence[str]) -> dict[str, Any]:
    """The ``absent_value`` attrs of the variables ``names`` that have one."""
    return {n: ds[n].attrs["absent_value"] for n in names if "absent_value" in ds[n].attrs}


class MemoryTarget:
    """Results kept in memory (``store=None``)."""

    def __init__(self, skeleton: xr.Dataset) -> None:
        self.ds = skeleton
        self.names: list[str] = []
        self.has_layout = False  # the point variables are not there yet

    def done(self) -> np.ndarray:
        return self.ds["status"].values == DONE

    def ensure(self, variables: Mapping[str, xr.Variable]) -> None:
        """Add the point variables (once: every point has the same)."""
        if not self.has_layout:
            self.ds = self.ds.assign(dict(variables))
            self.names = list(variables)
            self.has_layout = True

    def write(self, index: tuple[int, ...], values: Mapping[str, Any]) -> None:
        for name in self.names:
            var = self.ds[name]
            var.values[index] = values[name] if name in values else absent_value(var)
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
        if path.is_symlink():  # written through the link (a rename onto the link itself fails: ENOTDIR)
            path = Path(os.path.realpath(path))
        self.path, self.dims, self.skeleton, self.durable = path, dims, skeleton, durable
        self._group: Any = None
        self._arrays: dict[str, Any] = {}
        self.dtypes: dict[str, np.dtype] = {}
        self.absent: dict[str, Any] = {}  # absent_value attrs: what a computed point that does not write one stores
        self.names: list[str] = []
        self.attrs = dict(skeleton.attrs)
        self.damaged: list[str] = []  # one line per done point whose values failed their checksum (recomputed)
        # a store extended to more trials: new point index -> the point's stored values over its old trials (what
        # neurosubset.sweeps.point.resume_result turns into the finished trials the point's rerun keeps)
        self.resumes: dict[tuple[int, ...], dict[str, np.ndarray]] = {}
        self._redo: set[tuple[int, ...]] = set()
        name = glob.escape(path.name)  # 'x*.zarr' is a name, not a pattern: never another store's files
        for stale in path.parent.glob(f"{name}.tmp-*"):  # a creation killed half-way (we hold the lock)
            shutil.rmtree(stale, ignore_errors=True)
        for aside in path.parent.glob(f"{name}.old-*"):  # an extension killed between its two renames
            if path.exists():
                shutil.rmtree(aside, ignore_errors=True)
            else:
                os.replace(aside, path)
        if overwrite and (path.exists() or path.is_symlink()):
            _remove(path)
        self.has_layout = path.exists()
        if not self.has_layout:
            self._done = np.zeros(skeleton["status"].shape, bool)
            return
        if path.is_dir() and _looks_like_sweep_store(path):  # never resume over metadata that cannot be verified
            from .._outputs import is_sweep_store

            _check_metadata(path, "Pass overwrite=True (--overwrite) to start over, or choose another store path."
                            if is_sweep_store(path) else "Delete it yourself, or choose another store path.")
        if path.is_dir() and not _looks_like_sweep_store(path):  # --overwrite would be refused: never advise it
            raise SweepStoreError(f"{str(path)!r} is a folder but not a sweep store; a sweep never writes into or "
                                  f"replaces it (not even with overwrite=True). Remove it yourself or choose another "
                                  f"store path.")
        try:
            stored = xr.open_zarr(path, chunks=None)
        except Exception as exc:
            raise SweepStoreError(f"{str(path)!r} exists but is not a readable sweep store ({_one_line(exc)}). "
                                  f"Delete it, choose another store path, or pass overwrite=True (--overwrite)."
                                  ) from None
        with stored:
            if _is_extension(stored.attrs, skeleton.attrs):
                stored.close()
                self._extend()
                return
            _check_same_config(path, stored.attrs, skeleton.attrs)
            self.dtypes = {str(k): v.dtype for k, v in stored.data_vars.items()}
            self.names = _point_names(stored, dims)
            self.absent = _absent_values(stored, self.names)
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

    def _extend(self) -> None:
        """Rebuild the store for a grid that adds ``m``, ``budget`` or ``strategy`` values: every done point keeps
        its values (verified) at its new index, the new points are pending. Written beside the store and swapped in.

        More ``trials``: every point's old trials are kept in the store's first trials and in :attr:`resumes`, and
        every point is pending, so that its rerun fits only the new trials (until it is written, a point's status is
        pending: an extension interrupted half-way recomputes the points it had not written from scratch)."""
        old = flat_points(open_sweep(self.path))  # verified: a damaged store is refused before it is extended
        new = self.skeleton
        dims = self.dims
        more_trials = new.sizes.get("trial", 0) > old.sizes.get("trial", 0)
        where = []
        for d in dims:  # old position -> new position along each point dim
            new_values = [v.item() if hasattr(v, "item") else v for v in new[d].values]
            where.append(np.array([new_values.index(v.item() if hasattr(v, "item") else v) for v in old[d].values]))
        grid = np.ix_(*where)
        variables: dict[str, Any] = {}
        for name in _point_names(old, dims):
            var = old[name]
            inner = var.dims[len(dims):]
            shape = (*new["status"].shape, *(new.sizes[d] if d == "trial" else var.sizes[d] for d in inner))
            data = np.full(shape, fill_value(var.dtype), var.dtype)
            data[grid + tuple(slice(0, var.sizes[d]) for d in inner)] = var.values
            variables[name] = xr.Variable(var.dims, data, dict(var.attrs))
        status = new["status"].values.copy()
        pending = status == PENDING
        old_done = old["status"].values == DONE
        moved = np.zeros(status.shape, bool)
        moved[grid] = old_done
        if more_trials:  # every point is computed again, from its kept trials on
            for index in zip(*np.nonzero(old_done)):
                at = tuple(int(where[k][i]) for k, i in enumerate(index))
                self.resumes[at] = {n: np.asarray(old[n].values[tuple(int(i) for i in index)])
                                    for n in _point_names(old, dims)}
            moved[:] = False
        status[moved] = DONE
        template = new.assign(variables)
        template["status"] = template["status"].copy(data=status)  # the skeleton's own array stays as it was
        names = _point_names(template, dims)
        template[CHECKSUM] = xr.Variable(new["status"].dims, np.zeros(status.shape, np.int64), meta(CHECKSUM))
        tmp = self.path.with_name(f"{self.path.name}.tmp-{os.getpid()}")
        template.to_zarr(tmp, mode="w-", encoding=_encoding(template, dims), zarr_format=2, consolidated=True)
        import zarr

        group = zarr.open_group(str(tmp), mode="r+", zarr_format=2)  # checksums of the bytes as stored
        raw = {n: np.asarray(group[n][...]) for n in names}
        sums = np.zeros(status.shape, np.int64)
        for index in zip(*np.nonzero(moved)):
            index = tuple(int(i) for i in index)
            sums[index] = checksum(index, [np.asarray(raw[n][index], dtype=raw[n].dtype) for n in names])
        group[CHECKSUM][...] = sums
        if self.durable:
            fsync_tree(tmp)
        aside = self.path.with_name(f"{self.path.name}.old-{os.getpid()}")
        os.replace(self.path, aside)
        os.replace(tmp, self.path)
        if self.durable:
            fsync_dir(self.path.parent)
        shutil.rmtree(aside, ignore_errors=True)
        self.dtypes = {str(k): v.dtype for k, v in template.data_vars.items()}
        self.names = names
        self.absent = _absent_values(template, names)
        self.attrs = dict(template.attrs)
        self.has_layout = True
        self._done = moved & pending

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
        self.absent = _absent_values(template, self.names)
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
            # a variable this point lacks is written as its absent value (the not-computed fill in stores without
            # an absent_value attr), so that the checksum covers every variable
            value = values[name] if name in values else self.absent.get(name, fill_value(self.dtypes[name]))
            stored[name] = np.asarray(value, dtype=self.dtypes[name])  # '<U5' -> the store's '<U8'
            if name not in values:  # one value for the point's whole block (trial, round): its bytes as stored
                stored[name] = np.full(self._array(name).shape[len(index):], stored[name])
            if name in values or index in self._redo or name in self.absent:
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
                fsync_file(chunk)
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
        raise SweepStoreError(f"The folder {str(lock.parent)!r} of the sweep store {str(path)!r} does not "
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
        try:
            ds = xr.open_dataset(path, engine="h5netcdf")
        except (OSError, ValueError) as exc:  # h5py's messages do not name the file
            raise SweepStoreError(f"Cannot read {str(path)!r} as a netCDF-4 result ({_one_line(exc)}); it is "
                                  f"truncated, damaged or not a netCDF-4 file.") from None
        with ds:
            return index_points(ds.load())
    from .._outputs import is_sweep_store

    if not is_sweep_store(path) and not _looks_like_sweep_store(path):  # a Zarr result of `mp --out x.zarr`
        from .._outputs import toolkit_kind

        kind, why = toolkit_kind(path)
        if kind is None:
            raise SweepStoreError(f"{str(path)!r} is not a result that neurosubset wrote ({why}); refusing to read "
                                  f"what cannot be verified.")
        with xr.open_zarr(path, chunks=None) as ds:
            return ds.load()
    _check_metadata(path, "Its values cannot be verified: delete it and rerun the sweep command.")
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
        if CHECKSUM in dtypes:  # an off-grid point is never written: one with a checksum lost its status chunk
            import zarr

            sums = np.asarray(zarr.open_array(str(path / CHECKSUM), mode="r", zarr_format=2)[...])
            for index in zip(*np.nonzero((status == OFF_GRID) & (sums != 0))):
                index = tuple(int(i) for i in index)
                bad.setdefault(index, f"its status reads 'off_grid' but the point was written (its status chunk "
                                      f"status/{_chunk_key(index, status.ndim)} was deleted or changed)")
        if bad and not writer_running(path):
            index, reason = next(iter(bad.items()))
            raise SweepStoreError(f"The sweep store {str(path)!r} is damaged: {len(bad)} done point(s) fail "
                                  f"verification, e.g. point {_point_label(lazy, dims, index)}: {reason}. Rerun the "
                                  f"sweep command to recompute them.")
    for index in bad:
        status[index] = PENDING
    ds["status"].values[...] = status
    pending = status == PENDING
    if pending.any():
        for name in names:
            var = ds[name]
            var.values[pending] = fill_value(var.dtype)
    return index_points(ds)


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
    return write_dataset(flat_points(open_sweep(store)), out, overwrite=overwrite, what="the export file",
                         formats=(".nc",))
