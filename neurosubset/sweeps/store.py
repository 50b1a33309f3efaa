"""Where a sweep's points go: in memory or a resumable Zarr store guarded by a lock file; reading stores back.

A Zarr store (format 2, one chunk per point so points never share a chunk) is created, complete, when the first
point is done: the template (skeleton + that point's variables, nothing computed) is written to a temporary
directory and renamed into place. Its variables and attrs stay those of the run that created it (a store made
before match_probability reported ``fit_status`` resumes without it). Each finished point is then written into its
own chunks, its ``status`` flag last (written to the operating system, not fsync'ed). A store made by a different
configuration is refused. ``<store>.lock`` (``fcntl.flock``, released by the kernel when the process dies) makes a
second writer fail at once.
"""
from __future__ import annotations

import contextlib
import fcntl
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
from .._schema import DONE, PENDING


class SweepStoreError(NeurosubsetError):
    """A sweep store cannot be used: another configuration, another writer, or not a sweep store."""


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
    """Results written into a Zarr store as they arrive, one region write per point, status last."""

    def __init__(self, path: Path, skeleton: xr.Dataset, dims: tuple[str, ...]) -> None:
        self.path, self.dims, self.skeleton = path, dims, skeleton
        self._group: Any = None
        self._arrays: dict[str, Any] = {}
        self.dtypes: dict[str, np.dtype] = {}
        self.attrs = dict(skeleton.attrs)
        for stale in path.parent.glob(f"{path.name}.tmp-*"):  # a creation killed half-way (we hold the lock)
            shutil.rmtree(stale, ignore_errors=True)
        self.has_layout = path.exists()
        if not self.has_layout:
            self._done = np.zeros(skeleton["status"].shape, bool)
            return
        try:
            stored = xr.open_zarr(path, chunks=None)
        except Exception as exc:
            raise SweepStoreError(f"{str(path)!r} exists but is not a readable sweep store ({exc}). Delete it or "
                                  f"choose another store path.") from None
        with stored:
            _check_same_config(path, stored.attrs, skeleton.attrs)
            self.dtypes = {str(k): v.dtype for k, v in stored.data_vars.items()}
            self.attrs = dict(stored.attrs)  # those of the run that created the store (versions included)
            self._done = _read_done(path, stored, skeleton["status"].values)

    def done(self) -> np.ndarray:
        return self._done

    def ensure(self, variables: Mapping[str, xr.Variable]) -> None:
        """Create the store from the skeleton and the point ``variables`` (once; an existing store keeps its own)."""
        if self.has_layout:
            return
        template = self.skeleton.assign(dict(variables))
        tmp = self.path.with_name(f"{self.path.name}.tmp-{os.getpid()}")
        template.to_zarr(tmp, mode="w-", encoding=_encoding(template, self.dims), zarr_format=2, consolidated=True)
        os.replace(tmp, self.path)  # the store appears complete or not at all
        self.dtypes = {str(k): v.dtype for k, v in template.data_vars.items()}
        self.has_layout = True

    def write(self, index: tuple[int, ...], values: Mapping[str, Any]) -> None:
        # straight into the point's own chunks with zarr: the layout and dtypes were fixed by xarray when the
        # template was written (no CF encoding is involved for these dtypes), and one open group serves all writes
        for name, value in values.items():
            if name in self.dtypes:  # a store keeps the variables of the run that made it (older: no fit_status)
                self._array(name)[index] = np.asarray(value, dtype=self.dtypes[name])  # '<U5' -> the store's '<U8'
        # the status flag is the commit record: written only after every value of the point is on disk
        self._array("status")[index] = np.int8(DONE)

    def _array(self, name: str) -> Any:
        if name not in self._arrays:
            import zarr

            if self._group is None:
                self._group = zarr.open_group(str(self.path), mode="r+", zarr_format=2)
            self._arrays[name] = self._group[name]
        return self._arrays[name]

    def result(self) -> xr.Dataset:
        with xr.open_zarr(self.path, chunks=None) as ds:  # no dask graph over per-point chunks: 4x faster
            return ds.load()


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
        shown = "circuit: the circuit specs differ" + ("; " + shown if shown else "")
    raise SweepStoreError(f"The store {str(path)!r} holds a sweep with another configuration (config hash "
                          f"{stored['config_hash']}, requested {new['config_hash']}); it differs in {differ} ({shown})."
                          f" Refusing to mix results: use another store path, or delete the store to start over.")


def _read_done(path: Path, stored: xr.Dataset, expected: np.ndarray) -> np.ndarray:
    """Which points the store holds as done; a chunk that cannot be read (a killed write) counts as not done."""
    try:
        status = stored["status"].values
    except Exception:
        import zarr

        arr = zarr.open_array(str(path / "status"), mode="r")
        status = np.zeros(arr.shape, np.int8)
        for index in zip(*np.nonzero(expected == PENDING)):
            try:
                status[index] = arr[index]
            except Exception:
                status[index] = PENDING
    return (status == DONE) & (expected == PENDING)


@contextlib.contextmanager
def store_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive ``fcntl.flock`` on ``<store>.lock`` (the kernel drops it if the process dies)."""
    lock_path = path.with_name(path.name + ".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SweepStoreError(f"Another process is writing the sweep store {str(path)!r} (it holds "
                                  f"{str(lock_path)!r}). Wait for it to finish, or use another store path.") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def open_sweep(store: str | os.PathLike) -> xr.Dataset:
    """Load a sweep store (``.zarr``) or an exported netCDF file into memory."""
    path = Path(store)
    if not path.exists():
        raise FileNotFoundError(f"No sweep store or file at {str(path)!r}.")
    if path.is_dir():
        with xr.open_zarr(path, chunks=None) as ds:
            return ds.load()
    with xr.open_dataset(path, engine="h5netcdf") as ds:
        return ds.load()


def export(store: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Write a Zarr sweep store (or any Dataset file) as netCDF-4 via h5netcdf.

    Parameters
    ----------
    store : path
        The ``.zarr`` store.
    out : path
        The ``.nc`` file to write (parent directories are created).

    Returns
    -------
    pathlib.Path
        ``out``.
    """
    ds = open_sweep(store)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    ds.to_netcdf(out, engine="h5netcdf")
    return out
