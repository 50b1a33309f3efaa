"""Sweeps: match probability over budgets, plasticity fractions, strategies and probe counts, as one Dataset.

A sweep evaluates :func:`neurosubset.match_probability` at every *point* of the grid
``budget x fractions x strategy x m`` and gathers the results in an :class:`xarray.Dataset` with one dimension
per swept quantity: ``budget``, one dimension per fraction key (named after the key, e.g. ``"CA3->CA1"``),
``strategy`` and ``m``; per-trial variables keep a ``trial`` dimension.

Fraction dimensions are the product of each key's levels, so a simplex grid fills only the cells whose fractions
sum to 1; the other cells are "off grid" (``status == 0``, NaN everywhere).

Seeds
-----
Each allocation ``(budget, fractions, strategy)`` is drawn with a seed hashed from the sweep ``seed`` and those
coordinates, and its teacher/student/probe draws with a second hashed seed that does not depend on ``m``. So a
point's value depends only on the sweep seed and its coordinates (never on worker count, scheduling order or
interruptions), and for one allocation the ``m`` probes are the first ``m`` of a common sequence, giving paired
comparisons across ``m`` (and ``MP`` non-increasing in ``m`` for exact solves).

Store
-----
With ``store="x.zarr"`` the template is written first (Zarr format 2, one chunk per point so points never share a
chunk) and each finished point is written into its own chunks, its ``status`` flag last, before the next result is
taken (written to the operating system, so a killed process loses at most the point it was writing; nothing is
fsync'ed, so a power cut may lose more). Running the same sweep again computes only points whose status is not
"done". A store made by a different configuration is refused; its attrs (package versions included) stay those of the
run that created it. A lock file ``x.zarr.lock`` (``fcntl.flock``, released by the kernel even when the
process is killed) makes a second writer fail at once instead of mixing results.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import sys
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr

from ._checks import AllocationError, check_choice, check_int, check_real
from .allocation import STRATEGIES, Allocation, allocate, check_fractions
from .benchmark import DEFAULT_TOL, check_solver_options, match_probability, var_name, version
from .circuit import Circuit

# status flags of a point (int8); 0 is the zarr fill value so off-grid cells cost no chunk files
OFF_GRID, PENDING, DONE, INFEASIBLE_BUDGET, INFEASIBLE_SHARE = 0, 1, 2, 3, 4
_STATUS_MEANINGS = "off_grid pending done infeasible_budget infeasible_share"
_FRACTION_DIGITS = 12  # fraction levels are rounded to this many decimals (they come from k * step)
_STORE_FORMAT = 1  # bump when the store layout changes; part of the configuration hash
_STRING_WIDTH = 64  # fixed width of carried string fields (e.g. a certificate verdict)
# scalar results of match_probability stored per point; anything else scalar is carried as an extra field
_SCALARS = ("mp", "mp_low", "mp_high", "mp_first_round")
_PER_TRIAL = ("matched", "residual", "restarts")
# certificate fields that match_probability reports as attrs (the ranks come as scalar variables): attr -> variable
_CERT_ATTRS = {"certificate_verdict": "verdict", "verdict": "verdict"}


class SweepStoreError(ValueError):
    """A sweep store cannot be used: another configuration, another writer, or not a sweep store."""


# ---------------------------------------------------------------------------------------------------- fractions
@dataclass(frozen=True)
class FractionGrid:
    """A set of fraction points over fixed keys (projection or region names).

    Parameters
    ----------
    keys : tuple of str
        The fraction keys, one sweep dimension each.
    points : tuple of tuple of float
        One tuple per point, aligned with ``keys``; each point's fractions are non-negative and sum to 1.

    Examples
    --------
    >>> g = simplex_grid(["CA3->CA3", "CA3->CA1"], step=0.5)
    >>> list(g)
    [{'CA3->CA3': 0.0, 'CA3->CA1': 1.0}, {'CA3->CA3': 0.5, 'CA3->CA1': 0.5}, {'CA3->CA3': 1.0, 'CA3->CA1': 0.0}]
    """

    keys: tuple[str, ...]
    points: tuple[tuple[float, ...], ...]

    def __post_init__(self) -> None:
        keys = tuple(self.keys)
        if not keys or any(not isinstance(k, str) or not k for k in keys):
            raise AllocationError(f"The 'fractions' keys must be non-empty projection or region names. Got {keys!r}.")
        if len(set(keys)) != len(keys):
            raise AllocationError(f"The 'fractions' keys must be distinct. Got {list(keys)}.")
        points = []
        for p in self.points:
            p = tuple(p)
            if len(p) != len(keys):
                raise AllocationError(f"Each fraction point needs one value per key {list(keys)}. Got {p!r}.")
            points.append(tuple(_level(v, key) for v, key in zip(p, keys)))
        if not points:
            raise AllocationError("The 'fractions' grid is empty; give at least one point.")
        if len(set(points)) != len(points):
            raise AllocationError("The 'fractions' grid repeats a point; each point may appear once.")
        object.__setattr__(self, "keys", keys)
        object.__setattr__(self, "points", tuple(points))

    def __len__(self) -> int:
        return len(self.points)

    def __iter__(self) -> Iterator[dict[str, float]]:
        return (dict(zip(self.keys, p)) for p in self.points)

    def levels(self, key: str) -> list[float]:
        """The sorted distinct values of ``key`` over the points (the coordinate of its dimension)."""
        i = self.keys.index(key)
        return sorted({p[i] for p in self.points})

    @classmethod
    def from_points(cls, points: Sequence[Mapping[str, float]]) -> FractionGrid:
        """Build a grid from a list of ``{key: fraction}`` mappings that all have the same keys."""
        points = list(points)
        if not points or not all(isinstance(p, Mapping) for p in points):
            raise AllocationError("The 'fractions' parameter must be a simplex_grid(...) or a non-empty list of "
                                  f"{{name: fraction}} mappings. Got {points!r}.")
        keys = tuple(points[0])
        for p in points[1:]:
            if tuple(p) != keys:
                raise AllocationError(f"Every fraction point must have the same keys in the same order. Got "
                                      f"{list(keys)} and {list(p)}.")
        return cls(keys, tuple(tuple(p[k] for k in keys) for p in points))


def _level(value: Any, key: str) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise AllocationError(f"fractions[{key!r}] must be a number in [0, 1]. Got {value!r}.") from None
    return round(out, _FRACTION_DIGITS) + 0.0  # + 0.0 turns -0.0 into 0.0


def simplex_grid(keys: Sequence[str], step: float) -> FractionGrid:
    """All fraction points on the simplex over ``keys`` with spacing ``step``.

    Parameters
    ----------
    keys : list of str
        Projection (``"CA3->CA1"``) or region (``"CA1"``) names; each becomes a sweep dimension.
    step : float
        Grid spacing, in (0, 1]; ``1 / step`` must be an integer ``n``. There are ``C(n + k - 1, k - 1)`` points
        for ``k`` keys (each fraction ``i / n``, summing to 1), zero fractions included.

    Returns
    -------
    FractionGrid

    Examples
    --------
    >>> len(simplex_grid(["CA3->CA3", "CA3->CA1"], step=0.25))
    5
    """
    if isinstance(keys, str):
        raise AllocationError(f"The 'keys' parameter of simplex_grid must be a list of names. Got the string {keys!r}.")
    keys = tuple(keys)
    step = check_real("step", step, low=0.0, low_open=True, high=1.0, error=AllocationError)
    n = round(1.0 / step)
    if abs(n * step - 1.0) > 1e-9:
        raise AllocationError(f"The 'step' parameter of simplex_grid must divide 1 (1 / step an integer). "
                              f"Got {step} (1 / step = {1 / step:g}).")
    if not keys:
        raise AllocationError("The 'keys' parameter of simplex_grid needs at least one name.")

    def compositions(total: int, parts: int) -> Iterator[tuple[int, ...]]:
        if parts == 1:
            yield (total,)
            return
        for first in range(total + 1):
            for rest in compositions(total - first, parts - 1):
                yield (first, *rest)

    points = tuple(tuple(c / n for c in comp) for comp in compositions(n, len(keys)))
    return FractionGrid(keys, points)


# ---------------------------------------------------------------------------------------------------- configuration
@dataclass(frozen=True)
class _Config:
    circuit_toml: str
    budgets: tuple[int, ...]
    keys: tuple[str, ...]
    points: tuple[tuple[float, ...], ...]
    strategies: tuple[str, ...]
    ms: tuple[int, ...]
    trials: int
    seed: int
    within: tuple[str, ...] | None
    tol: float
    solver: str
    restarts: int
    max_rounds: int
    steps: int
    certificate: bool

    def as_dict(self) -> dict[str, Any]:
        return {"store_format": _STORE_FORMAT, "circuit": self.circuit_toml, "budget": list(self.budgets),
                "fraction_keys": list(self.keys), "fraction_points": [list(p) for p in self.points],
                "strategy": list(self.strategies), "m": list(self.ms), "trials": self.trials, "seed": self.seed,
                "within": None if self.within is None else list(self.within), "tolerance": self.tol,
                "solver": self.solver, "restarts": self.restarts, "max_rounds": self.max_rounds,
                "lm_steps": self.steps, "certificate": self.certificate}

    @property
    def json(self) -> str:
        return json.dumps(self.as_dict(), sort_keys=True)

    @property
    def hash(self) -> str:
        return hashlib.sha256(self.json.encode()).hexdigest()[:16]

    @property
    def dims(self) -> tuple[str, ...]:
        return ("budget", *self.keys, "strategy", "m")


def _as_list(field: str, value: Any) -> list:
    if isinstance(value, (str, int, np.integer)):
        return [value]
    try:
        out = list(value)
    except TypeError:
        raise ValueError(f"The {field!r} parameter must be a value or a list of values. Got {value!r}.") from None
    if not out:
        raise ValueError(f"The {field!r} parameter needs at least one value. Got an empty list.")
    if len(set(out)) != len(out):
        raise ValueError(f"The {field!r} parameter repeats a value: {out}. Each value may appear once.")
    return out


def _point_seed(seed: int, purpose: str, budget: int, fracs: tuple[float, ...], strategy: str) -> int:
    """A 63-bit seed hashed from the sweep seed and a point's allocation coordinates (not from ``m``)."""
    text = json.dumps([seed, purpose, budget, [repr(f) for f in fracs], strategy])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


# ---------------------------------------------------------------------------------------------------- one point
@lru_cache(maxsize=8)
def _circuit(toml_text: str) -> Circuit:
    return Circuit.from_toml_text(toml_text)


def _run_point(task: dict[str, Any]) -> dict[str, Any]:
    """Compute one sweep point (runs in a worker process or in the caller). Returns plain numpy values."""
    circuit = _circuit(task["circuit"])
    alloc = Allocation(task["masks"], strategy=task["strategy"], circuit_name=circuit.name)
    # match_probability runs torch on one thread (threads=1): every point computes the same way everywhere
    ds = match_probability(circuit, alloc, m=task["m"], trials=task["trials"], seed=task["seed"], tol=task["tol"],
                           solver=task["solver"], restarts=task["restarts"], max_rounds=task["max_rounds"],
                           steps=task["steps"], certificate=task["certificate"], threads=1)
    rounds = ds["mp_by_round"].values
    values: dict[str, Any] = {name: ds[name].values for name in _PER_TRIAL}
    values.update({name: float(ds[name]) for name in _SCALARS})
    # rounds after the last one run keep the final value (what match_probability itself does for early stops)
    values["mp_by_round"] = np.pad(rounds, (0, task["max_rounds"] - rounds.size), mode="edge")
    values["solver"] = str(ds.attrs["solver"])
    values["last_round_gain"] = float(ds.attrs["last_round_gain"])
    extras: dict[str, tuple[Any, dict[str, Any]]] = {}
    for name, var in ds.data_vars.items():
        name = str(name)
        if var.ndim == 0 and name not in _SCALARS and not name.startswith("mask_"):
            extras[name] = (var.values.item(), dict(var.attrs))
    for attr, name in _CERT_ATTRS.items():
        if attr in ds.attrs and name not in extras:
            extras[name] = (str(ds.attrs[attr]), {"long_name": "certificate verdict (zero, one, positive, unproven: "
                                                               "what the exact rank certificate proves about MP)"})
    values["extras"] = extras
    return values


# ---------------------------------------------------------------------------------------------------- templates
def _versions() -> dict[str, str]:
    out = {"neurosubset_version": version(), "torch_version": str(torch.__version__),
           "numpy_version": str(np.__version__), "xarray_version": str(xr.__version__)}
    try:
        out["zarr_version"] = metadata.version("zarr")
    except metadata.PackageNotFoundError:  # pragma: no cover
        out["zarr_version"] = "not installed"
    return out


def _template(cfg: _Config, circuit: Circuit, status: np.ndarray, masks: dict[str, np.ndarray]) -> xr.Dataset:
    """The full sweep Dataset with nothing computed: NaN / False / 0 fills, statuses and allocation masks."""
    dims = cfg.dims
    shape = status.shape
    n_t, n_r = cfg.trials, cfg.max_rounds
    prob = {"units": "1"}
    data = {
        "status": (dims, status, {"long_name": "state of the sweep point", "units": "1",
                                  "flag_values": [OFF_GRID, PENDING, DONE, INFEASIBLE_BUDGET, INFEASIBLE_SHARE],
                                  "flag_meanings": _STATUS_MEANINGS,
                                  "comment": "infeasible_budget: the budget exceeds the plastic-eligible synapses; "
                                             "infeasible_share: a fraction's share of the budget exceeds the "
                                             "eligible synapses of its projections. Such points hold NaN."}),
        "matched": ((*dims, "trial"), np.zeros((*shape, n_t), bool),
                    {"long_name": "student matches teacher on all probes", "units": "1",
                     "comment": "False where status != done"}),
        "residual": ((*dims, "trial"), np.full((*shape, n_t), np.nan),
                     {"long_name": "relative residual ||y_s - y_t|| / ||y_t||", "units": "1", "tolerance": cfg.tol}),
        "restarts": ((*dims, "trial"), np.zeros((*shape, n_t), np.int64),
                     {"long_name": "random restarts used", "units": "1"}),
        "mp": (dims, np.full(shape, np.nan), {"long_name": "match probability", **prob}),
        "mp_low": (dims, np.full(shape, np.nan), {"long_name": "match probability, 95% Wilson lower bound", **prob}),
        "mp_high": (dims, np.full(shape, np.nan), {"long_name": "match probability, 95% Wilson upper bound", **prob}),
        "mp_first_round": (dims, np.full(shape, np.nan),
                           {"long_name": "match probability after the first restart round", **prob}),
        "mp_by_round": ((*dims, "round"), np.full((*shape, n_r), np.nan),
                        {"long_name": "match probability after each restart round", **prob}),
        "last_round_gain": (dims, np.full(shape, np.nan),
                            {"long_name": "match probability gained in the last restart round", **prob}),
        "solver": (dims, np.full(shape, "", dtype="<U8"),
                   {"long_name": "solver used ('lstsq' exact affine, 'lm' Levenberg-Marquardt)"}),
    }
    alloc_dims = ("budget", *cfg.keys, "strategy")
    for name in circuit.weight_names:
        stem = var_name(name)
        data[f"mask_{stem}"] = ((*alloc_dims, f"{stem}_post", f"{stem}_pre"), masks[name],
                                {"long_name": f"plastic synapses of {name} (False where status is not done)",
                                 "weight": name, "units": "1"})
    coords: dict[str, Any] = {
        "budget": ("budget", np.array(cfg.budgets, np.int64), {"long_name": "plastic synapses M", "units": "1"}),
        "strategy": ("strategy", np.array(cfg.strategies), {"long_name": "allocation strategy"}),
        "m": ("m", np.array(cfg.ms, np.int64), {"long_name": "number of probes", "units": "1"}),
        "trial": ("trial", np.arange(n_t), {"long_name": "teacher/student/probe draw"}),
        "round": ("round", np.arange(n_r), {"long_name": "restart round"}),
    }
    grid = FractionGrid(cfg.keys, cfg.points) if cfg.keys else None
    for key in cfg.keys:
        coords[key] = (key, np.array(grid.levels(key), np.float64),
                       {"long_name": f"fraction of the budget given to {key}", "units": "1"})
    attrs = {
        "title": f"neurosubset sweep of {circuit.name}",
        "circuit": cfg.circuit_toml,
        "circuit_name": circuit.name,
        "fraction_keys": json.dumps(list(cfg.keys)),
        "fraction_points": json.dumps([list(p) for p in cfg.points]),
        "within": json.dumps(None if cfg.within is None else list(cfg.within)),
        "trials": cfg.trials,
        "seed": cfg.seed,
        "tolerance": cfg.tol,
        "solver_requested": cfg.solver,
        "restarts_per_round": cfg.restarts,
        "max_rounds": cfg.max_rounds,
        "lm_steps": cfg.steps,
        "certificate": int(cfg.certificate),
        "seeding": "allocation seed and trial seed per (budget, fractions, strategy): sha256 of the sweep seed and "
                   "those coordinates; the m probes of a trial are the first m of one sequence",
        "sweep_config": cfg.json,
        "config_hash": cfg.hash,
        **_versions(),
    }
    return xr.Dataset(data, coords=coords, attrs=attrs)


def _encoding(ds: xr.Dataset, point_dims: Sequence[str]) -> dict[str, dict[str, Any]]:
    """One chunk per point (size 1 along every swept dim, whole along trial / round / neurons)."""
    return {name: {"chunks": tuple(1 if d in point_dims else ds.sizes[d] for d in var.dims)}
            for name, var in ds.data_vars.items()}


# ---------------------------------------------------------------------------------------------------- targets
class _MemoryTarget:
    """Results kept in memory (``store=None``)."""

    def __init__(self, template: xr.Dataset) -> None:
        self.ds = template

    @property
    def names(self) -> set[str]:
        return {str(k) for k in self.ds.data_vars}

    def done(self) -> np.ndarray:
        return self.ds["status"].values == DONE

    def add(self, name: str, var: xr.Variable) -> None:
        self.ds[name] = var

    def write(self, index: tuple[int, ...], values: dict[str, Any]) -> None:
        for name, value in values.items():
            self.ds[name].values[index] = value

    def result(self) -> xr.Dataset:
        return self.ds


class _ZarrTarget:
    """Results written into a Zarr store as they arrive, one region write per point, status last."""

    def __init__(self, path: Path, template: xr.Dataset, dims: tuple[str, ...]) -> None:
        self.path, self.dims = path, dims
        self._group: Any = None
        self._arrays: dict[str, Any] = {}
        self.dtypes = {str(k): v.dtype for k, v in template.data_vars.items()}
        self.attrs = dict(template.attrs)
        for stale in path.parent.glob(f"{path.name}.tmp-*"):  # a creation killed half-way (we hold the lock)
            shutil.rmtree(stale, ignore_errors=True)
        if not path.exists():
            tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
            template.to_zarr(tmp, mode="w-", encoding=_encoding(template, dims), zarr_format=2, consolidated=True)
            os.replace(tmp, path)  # the store appears complete or not at all
            self._done = np.zeros(template["status"].shape, bool)
            return
        try:
            stored = xr.open_zarr(path, chunks=None)
        except Exception as exc:
            raise SweepStoreError(f"{str(path)!r} exists but is not a readable sweep store ({exc}). Delete it or "
                                  f"choose another store path.") from None
        with stored:
            _check_same_config(path, stored.attrs, template.attrs)
            self.dtypes = {str(k): v.dtype for k, v in stored.data_vars.items()}
            self.attrs = dict(stored.attrs)  # those of the run that created the store (versions included)
            self._done = _read_done(path, stored, template["status"].values)

    @property
    def names(self) -> set[str]:
        return set(self.dtypes)

    def done(self) -> np.ndarray:
        return self._done

    def add(self, name: str, var: xr.Variable) -> None:
        new = xr.Dataset({name: var}, attrs=self.attrs)  # mode "a" replaces the group attrs: keep them
        new.to_zarr(self.path, mode="a", encoding=_encoding(new, self.dims), consolidated=True)
        self.dtypes[name] = var.dtype
        self._group = None  # reopen: the group has a new member

    def write(self, index: tuple[int, ...], values: dict[str, Any]) -> None:
        # straight into the point's own chunks with zarr: the layout and dtypes were fixed by xarray when the
        # template was written (no CF encoding is involved for these dtypes), and one open group serves all writes
        status = values.pop("status")
        for name, value in values.items():
            self._array(name)[index] = np.asarray(value, dtype=self.dtypes[name])  # e.g. '<U5' -> the store's '<U8'
        # the status flag is the commit record: written only after every value of the point is on disk
        self._array("status")[index] = np.int8(status)

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
def _store_lock(path: Path) -> Iterator[None]:
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


# ---------------------------------------------------------------------------------------------------- executors
@contextlib.contextmanager
def _main_not_reimported() -> Iterator[None]:
    """Hide the ``__main__`` script from multiprocessing while workers start.

    spawn / forkserver children re-run the parent's main script unless it is guarded by
    ``if __name__ == "__main__":``; a plain script calling ``sweep(..., workers=2)`` would then start the sweep again in
    every worker. The workers only need :func:`_run_point` and plain data, so they are started without it.
    """
    main = sys.modules.get("__main__")
    if main is None:
        yield
        return
    saved = {k: main.__dict__[k] for k in ("__file__", "__spec__") if k in main.__dict__}
    main.__dict__.pop("__file__", None)
    main.__dict__["__spec__"] = None
    try:
        yield
    finally:
        main.__dict__.pop("__spec__", None)
        main.__dict__.update(saved)


def _results_local(tasks: list[dict[str, Any]], workers: int) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    if workers == 1 or len(tasks) <= 1:  # nothing to share out: no worker processes to start
        for task in tasks:
            yield task, _run_point(task)
        return
    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    # forkserver: clean worker processes (no forked torch thread pools) that share one preloaded import
    method = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
    ctx = mp.get_context(method)
    if method == "forkserver":
        ctx.set_forkserver_preload(["neurosubset.sweep"])
    pool = ProcessPoolExecutor(max_workers=min(workers, max(len(tasks), 1)), mp_context=ctx)
    try:
        with _main_not_reimported():  # worker processes start during the submits
            futures = {pool.submit(_run_point, task): task for task in tasks}
        pending = set(futures)
        while pending:
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in sorted(finished, key=lambda f: futures[f]["order"]):
                yield futures[fut], fut.result()
    finally:
        # on an error or interrupt: drop queued points, let running ones end on their own
        pool.shutdown(wait=False, cancel_futures=True)


def _results_dask(tasks: list[dict[str, Any]], scheduler: Any) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    try:
        from distributed import Client, as_completed
    except ImportError:
        raise ImportError("scheduler=... needs dask.distributed: pip install 'neurosubset[distributed]'.") from None
    own = not isinstance(scheduler, Client)
    if own:
        if not isinstance(scheduler, str):
            raise ValueError(f"The 'scheduler' parameter must be an address such as 'tcp://host:8786' or a "
                             f"distributed.Client. Got {scheduler!r}.")
        try:
            client = Client(scheduler, timeout="20s")
        except OSError as exc:
            raise ValueError(f"Cannot reach the dask scheduler at {scheduler!r} ({exc}). Start one with "
                             f"'dask scheduler' and workers with 'dask worker {scheduler} --nthreads 1'.") from None
    else:
        client = scheduler
    try:
        futures = [client.submit(_run_point, task, pure=False) for task in tasks]
        by_key = {fut.key: task for fut, task in zip(futures, tasks)}
        try:
            for fut, result in as_completed(futures, with_results=True):
                yield by_key[fut.key], result
        finally:
            client.cancel(futures)
    finally:
        if own:
            client.close()


# ---------------------------------------------------------------------------------------------------- sweep
def sweep(circuit: Circuit, *, budget: int | Sequence[int], m: int | Sequence[int],
          fractions: FractionGrid | Sequence[Mapping[str, float]] | None = None,
          strategy: str | Sequence[str] = "random", trials: int = 100, seed: int = 0,
          store: str | os.PathLike | None = None, workers: int = 1, scheduler: Any = None,
          within: Sequence[str] | None = None, tol: float = DEFAULT_TOL, solver: str = "auto", restarts: int = 4,
          max_rounds: int = 8, steps: int = 400, certificate: bool = True, progress: bool = False) -> xr.Dataset:
    """Match probability over a grid of budgets, plasticity fractions, strategies and probe counts.

    Parameters
    ----------
    circuit : Circuit
    budget : int or list of int
        ``M``, plastic synapses per allocation; one ``budget`` coordinate each.
    m : int or list of int
        Numbers of probes; one ``m`` coordinate each.
    fractions : FractionGrid or list of dict, optional
        Share of the budget per projection or region name, e.g. :func:`simplex_grid`. Each key becomes a dimension
        named after it (coordinate: the key's levels, units 1). Checked up front: unknown names, negative values or
        points not summing to 1 raise :class:`~neurosubset.AllocationError` naming the key. A point whose share
        exceeds the eligible synapses of its projections (or a budget above all eligible synapses) is not an
        error: it is recorded with ``status`` ``infeasible_share`` (``infeasible_budget``) and NaN values, and a
        warning says how many there were.
    strategy : str or list of str
        Allocation strategies (see :func:`neurosubset.allocate`).
    trials : int
        Teacher/student/probe draws per point.
    seed : int
        Sweep seed; every point's seeds are hashed from it and the point's coordinates.
    store : str or path, optional
        A ``.zarr`` directory written as the sweep goes (see the module docstring): rerunning the same call resumes,
        a different configuration is refused (:class:`SweepStoreError`), a second concurrent writer is refused.
    workers : int
        Local worker processes (1 = compute in this process).
    scheduler : str or distributed.Client, optional
        A dask.distributed scheduler address (``"tcp://host:8786"``) or client; points become dask tasks.
        Overrides ``workers``. Workers should run one thread each (``dask worker ADDR --nthreads 1``).
    within, tol, solver, restarts, max_rounds, steps, certificate
        Passed to :func:`neurosubset.allocate` / :func:`neurosubset.match_probability` (``certificate``: also
        store the exact certificate's ``plastic_rank``, ``full_rank`` and ``verdict`` per point, when available).
    progress : bool
        Show a progress bar (points done / total, ETA).

    Returns
    -------
    xarray.Dataset
        Dims ``budget``, one per fraction key, ``strategy``, ``m`` (+ ``trial``, ``round`` and the mask dims).
        ``status`` (flags), ``mp``, ``mp_low``, ``mp_high`` (95% Wilson), ``mp_first_round``, ``mp_by_round
        (..., round)``, ``last_round_gain``, ``solver``, per-trial ``matched``, ``residual``, ``restarts (..., trial)``,
        ``mask_<weight> (budget, fractions..., strategy, post, pre)`` and any certificate fields
        ``match_probability`` reports (``plastic_rank``, ``full_rank``, ``verdict``). Attrs: the configuration,
        package versions, ``config_hash``. Identical for any ``workers``/``scheduler`` and after resuming.

    Examples
    --------
    >>> ds = sweep(ca, budget=[100, 200], fractions=simplex_grid(["CA3->CA3", "CA3->CA1"], step=0.25),
    ...            strategy=["random", "spread-rows"], m=[5, 10], trials=100, store="data/ca3.zarr",
    ...            workers=2)                                                              # doctest: +SKIP
    >>> ds["mp"].sel(strategy="spread-rows").plot()                                        # doctest: +SKIP
    """
    if not isinstance(circuit, Circuit):
        raise TypeError(f"The 'circuit' parameter must be a Circuit. Got {type(circuit).__name__}.")
    budgets = tuple(check_int("budget", b, minimum=0) for b in _as_list("budget", budget))
    ms = tuple(check_int("m", v, minimum=1) for v in _as_list("m", m))
    strategies = tuple(_as_list("strategy", strategy))
    for s in strategies:
        check_choice("strategy", s, STRATEGIES, error=AllocationError)
    trials = check_int("trials", trials, minimum=1)
    seed = check_int("seed", seed, minimum=0)
    workers = check_int("workers", workers, minimum=1)
    tol, solver, restarts, max_rounds, steps = check_solver_options(tol, solver, restarts, max_rounds, steps)
    if isinstance(within, str):
        raise AllocationError(f"The 'within' parameter must be a list of weight names. Got the string {within!r}.")
    names = list(circuit.weight_names) if within is None else list(within)
    if fractions is None:
        grid = None
    elif isinstance(fractions, FractionGrid):
        grid = fractions
    elif isinstance(fractions, Mapping):
        raise AllocationError("The 'fractions' parameter of sweep takes a grid of points (simplex_grid(...) or a list "
                              f"of {{name: fraction}} mappings), not one mapping. Got {dict(fractions)!r}; wrap it "
                              f"in a list.")
    else:
        grid = FractionGrid.from_points(fractions)
    if grid is not None:
        for point in grid:
            check_fractions(circuit, point, names)  # unknown names, negative, sum != 1, overlapping keys
        reserved = {"budget", "strategy", "m", "trial", "round", "status"}
        clash = reserved.intersection(grid.keys)
        if clash:
            raise AllocationError(f"Fraction keys {sorted(clash)} clash with the sweep's own dimensions.")
    cfg = _Config(circuit.to_toml(), budgets, grid.keys if grid else (), grid.points if grid else ((),), strategies,
                  ms, trials, seed, None if within is None else tuple(within), tol, solver, restarts, max_rounds,
                  steps, bool(certificate))
    return _run(cfg, circuit, names, store, workers, scheduler, progress)


def _run(cfg: _Config, circuit: Circuit, names: list[str], store: Any, workers: int, scheduler: Any,
         progress: bool) -> xr.Dataset:
    grid = FractionGrid(cfg.keys, cfg.points) if cfg.keys else None
    levels = [grid.levels(k) for k in cfg.keys] if grid else []
    shape = (len(cfg.budgets), *(len(v) for v in levels), len(cfg.strategies), len(cfg.ms))
    status = np.zeros(shape, np.int8)
    masks = {w: np.zeros(shape[:-1] + circuit.shape(w), bool) for w in circuit.weight_names}
    eligible = sum(int(circuit.structure[w].sum()) for w in names)
    allocations = []  # (index without m, budget, fractions, strategy, Allocation | None)
    infeasible = []
    for ib, b in enumerate(cfg.budgets):
        for point in cfg.points:
            fidx = tuple(lv.index(v) for lv, v in zip(levels, point))
            for js, strat in enumerate(cfg.strategies):
                index = (ib, *fidx, js)
                fr = dict(zip(cfg.keys, point)) if cfg.keys else None
                try:
                    alloc = allocate(circuit, b, strategy=strat, fractions=fr, within=names,
                                     seed=_point_seed(cfg.seed, "allocation", b, point, strat))
                except AllocationError as exc:
                    flag = INFEASIBLE_BUDGET if b > eligible else INFEASIBLE_SHARE
                    status[index] = flag
                    infeasible.append(f"budget={b}, fractions={fr}, strategy={strat!r}: {exc}")
                    continue
                status[index] = PENDING
                for w in circuit.weight_names:
                    masks[w][index] = alloc.masks[w]
                allocations.append((index, b, point, strat, alloc))
    template = _template(cfg, circuit, status, masks)
    if infeasible:
        warnings.warn(f"{len(infeasible)} sweep point(s) cannot be allocated and are recorded as NaN with an "
                      f"'infeasible_*' status, e.g. {infeasible[0]}", UserWarning, stacklevel=3)
    path = None if store is None else Path(store)
    lock = contextlib.nullcontext() if path is None else _store_lock(path)
    with lock:
        target = _MemoryTarget(template) if path is None else _ZarrTarget(path, template, cfg.dims)
        done = target.done()
        tasks = []
        for index, b, point, strat, alloc in allocations:
            trial_seed = _point_seed(cfg.seed, "trials", b, point, strat)
            for jm, mm in enumerate(cfg.ms):
                if done[(*index, jm)]:
                    continue
                tasks.append({"order": len(tasks), "index": (*index, jm), "circuit": cfg.circuit_toml,
                              "masks": {k: np.asarray(v) for k, v in alloc.masks.items()}, "strategy": strat,
                              "m": mm, "trials": cfg.trials, "seed": trial_seed, "tol": cfg.tol,
                              "solver": cfg.solver, "restarts": cfg.restarts, "max_rounds": cfg.max_rounds,
                              "steps": cfg.steps, "certificate": cfg.certificate})
        total = int((template["status"].values == PENDING).sum())
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=total, initial=total - len(tasks), desc="sweep points", unit="point")
        try:
            results = _results_dask(tasks, scheduler) if scheduler is not None else _results_local(tasks, workers)
            for task, values in results:
                _store_point(target, cfg, template, task["index"], values)
                if bar is not None:
                    bar.update(1)
        finally:
            if bar is not None:
                bar.close()
        return target.result()


def _store_point(target: Any, cfg: _Config, template: xr.Dataset, index: tuple[int, ...],
                 values: dict[str, Any]) -> None:
    extras = values.pop("extras")
    for name, (value, attrs) in extras.items():
        if name not in target.names:
            target.add(name, _extra_variable(cfg, template["status"].shape, value, attrs))
        values[name] = value if isinstance(value, str) else float(value)
    values["status"] = DONE
    target.write(index, values)


def _extra_variable(cfg: _Config, shape: tuple[int, ...], value: Any, attrs: dict[str, Any]) -> xr.Variable:
    """An all-missing variable for a carried field: strings ('' missing) or float64 (NaN missing)."""
    clean = {k: v for k, v in attrs.items() if isinstance(v, (str, int, float))}
    if isinstance(value, str):
        return xr.Variable(cfg.dims, np.full(shape, "", dtype=f"<U{_STRING_WIDTH}"), clean)
    return xr.Variable(cfg.dims, np.full(shape, np.nan), clean)


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
