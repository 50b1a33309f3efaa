"""The :func:`sweep` verb: validate the grid, allocate every point, compute the pending ones, store each result.

Flow: arguments -> :class:`~neurosubset.sweeps.config.SweepConfig` -> allocations (infeasible ones flagged) ->
skeleton template -> store / memory target -> :class:`~neurosubset.sweeps.point.PointTask` per pending point ->
executor -> the first result completes the template, every result is stored as it arrives.
"""
from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from .._checks import AllocationError, ParameterError, check_choice, check_int, check_real
from .._memory import check_memory, estimate_fit
from .._outputs import check_output
from .._schema import INFEASIBLE_BUDGET, INFEASIBLE_SHARE, PENDING
from ..allocation import STRATEGIES, Allocation, allocate, check_fractions
from ..benchmark import DEFAULT_TOL
from .._stability import stability_applies
from ..circuit import Circuit
from ..solvers import Auto, Solver, as_solver
from .config import SweepConfig, point_seed
from .executors import completed, point_executor
from .grid import FractionGrid
from .point import PointTask, point_values, point_variables, run_point
from .store import MemoryTarget, ZarrTarget, store_lock, store_versions
from .template import levels, skeleton

_RESERVED = ("budget", "strategy", "m", "trial", "round", "status")  # dims and variables a fraction key may not name


def sweep(circuit: Circuit, *, budget: int | Sequence[int], m: int | Sequence[int],
          fractions: FractionGrid | Sequence[Mapping[str, float]] | None = None,
          strategy: str | Sequence[str] = "random", trials: int = 100, seed: int = 0,
          store: str | os.PathLike | None = None, overwrite: bool = False, workers: int = 1, scheduler: Any = None,
          within: Sequence[str] | None = None, solver: Solver | str = Auto(), tol: float = DEFAULT_TOL,
          certificate: bool = True, progress: bool = False, dale: bool = True, stable: bool = True,
          restarts: int | None = None, max_rounds: int | None = None, steps: int | None = None) -> xr.Dataset:
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
        A ``.zarr`` directory written as the sweep goes (see :mod:`neurosubset.sweeps`): rerunning the same call
        resumes (done points are verified against their checksums; damaged ones are recomputed, with a warning
        naming them), a different configuration is refused (:class:`SweepStoreError`), a second concurrent writer
        is refused (also through a symlink). The suffix must be ``.zarr`` and the folder must exist.
    overwrite : bool
        Start the store over: after taking its lock (never while another sweep writes it), an existing sweep store
        (or file) at ``store`` is removed. Without it an existing store is resumed.
    workers : int
        Local worker processes (1 = compute in this process).
    scheduler : str or distributed.Client, optional
        A dask.distributed scheduler address (``"tcp://host:8786"``) or client; points become dask tasks.
        Overrides ``workers``. Workers should run one thread each (``dask worker ADDR --nthreads 1``).
    within
        Passed to :func:`neurosubset.allocate`.
    solver : Auto, LeastSquares, LevenbergMarquardt or str
        The solver of every point (``"auto"``, ``"lstsq"`` and ``"lm"`` name the defaults), and ``tol`` its match
        tolerance, as in :func:`neurosubset.match_probability`.
    certificate : bool
        Also store the exact certificate's ``plastic_rank``, ``full_rank`` and ``verdict`` per point.
    progress : bool
        Show a progress bar (points done / total, ETA).
    dale, stable : bool
        As in :func:`neurosubset.match_probability`: Dale's law kept while fitting, and only stable students of
        steady circuits count. They enter the configuration hash only where they can act (signed regions; steady
        dynamics), so a store written before they existed (unconstrained) resumes with ``dale=False`` /
        ``stable=False`` there and is refused otherwise, naming the field.
    restarts, max_rounds, steps
        Deprecated (FutureWarning): fields of the solver object (``steps`` is its ``iterations``).

    Returns
    -------
    xarray.Dataset
        Dims ``budget``, one per fraction key, ``strategy``, ``m`` (+ ``trial``, ``round`` and the mask dims).
        ``status`` (flags), every variable of :func:`~neurosubset.match_probability` with the point dims in front
        (``mp``, ``mp_low``, ``mp_high`` (95% Wilson), ``mp_first_round``, ``mp_by_round (..., round)``, per-trial
        ``matched``, ``residual``, ``restarts``, ``fit_status (..., trial)``, ``plastic_rank``, ``full_rank``),
        ``last_round_gain``, ``solver`` and ``verdict`` per point, and
        ``mask_<weight> (budget, fractions..., strategy, post, pre)``. Points not computed hold NaN, False or 0.
        Attrs: the configuration, package versions, ``config_hash``. Identical for any ``workers``/``scheduler``
        and after resuming.

    Examples
    --------
    >>> ds = sweep(ca, budget=[100, 200], fractions=simplex_grid(["CA3->CA3", "CA3->CA1"], step=0.25),
    ...            strategy=["random", "spread-rows"], m=[5, 10], trials=100, store="data/ca3.zarr",
    ...            workers=2)                                                              # doctest: +SKIP
    >>> ds["mp"].sel(strategy="spread-rows").plot()                                        # doctest: +SKIP
    """
    if not isinstance(circuit, Circuit):
        raise ParameterError(f"The 'circuit' parameter must be a Circuit. Got {type(circuit).__name__}.")
    budgets = tuple(check_int("budget", b, minimum=0) for b in _as_list("budget", budget))
    ms = tuple(check_int("m", v, minimum=1) for v in _as_list("m", m))
    strategies = tuple(_as_list("strategy", strategy))
    for s in strategies:
        check_choice("strategy", s, STRATEGIES, error=AllocationError)
    trials = check_int("trials", trials, minimum=1)
    seed = check_int("seed", seed, minimum=0)
    workers = check_int("workers", workers, minimum=1)
    tol = check_real("tol", tol, low=0.0, low_open=True)
    solver = as_solver(solver, where="sweep", restarts=restarts, max_rounds=max_rounds, steps=steps)
    if isinstance(within, str):
        raise AllocationError(f"The 'within' parameter must be a list of weight names. Got the string {within!r}.")
    names = list(circuit.weight_names) if within is None else list(within)
    grid = _grid(circuit, fractions, names)
    cfg = SweepConfig(circuit_toml=circuit.to_toml(), budgets=budgets, keys=grid.keys if grid else (),
                      points=grid.points if grid else ((),), strategies=strategies, ms=ms, trials=trials, seed=seed,
                      within=None if within is None else tuple(within), tol=tol, solver=solver,
                      certificate=bool(certificate), dale=bool(dale), stable=bool(stable),
                      dale_acts=any(r.sign is not None for r in circuit.regions),
                      stable_acts=stability_applies(circuit))
    path = None
    if store is not None:
        path = check_output(store, formats=(".zarr",), overwrite=True, what="the sweep store", store_ok=True)
    return _run(cfg, circuit, names, path, workers, scheduler, progress, bool(overwrite))


def _as_list(field: str, value: Any) -> list:
    if isinstance(value, (str, int, np.integer)):
        return [value]
    try:
        out = list(value)
    except TypeError:
        raise ParameterError(f"The {field!r} parameter must be a value or a list of values. Got {value!r}.") from None
    if not out:
        raise ParameterError(f"The {field!r} parameter needs at least one value. Got an empty list.")
    if len(set(out)) != len(out):
        raise ParameterError(f"The {field!r} parameter repeats a value: {out}. Each value may appear once.")
    return out


def _grid(circuit: Circuit, fractions: Any, names: list[str]) -> FractionGrid | None:
    """The fraction grid, each point checked against the circuit (unknown names, negative, sum != 1, overlaps)."""
    if fractions is None:
        return None
    if isinstance(fractions, FractionGrid):
        grid = fractions
    elif isinstance(fractions, Mapping):
        raise AllocationError("The 'fractions' parameter of sweep takes a grid of points (simplex_grid(...) or a list "
                              f"of {{name: fraction}} mappings), not one mapping. Got {dict(fractions)!r}; wrap it "
                              f"in a list.")
    else:
        grid = FractionGrid.from_points(fractions)
    for point in grid:
        check_fractions(circuit, point, names)
    clash = set(_RESERVED).intersection(grid.keys)
    if clash:
        raise AllocationError(f"Fraction keys {sorted(clash)} clash with the sweep's own dimensions.")
    return grid


def _allocations(cfg: SweepConfig, circuit: Circuit, names: list[str]
                 ) -> tuple[np.ndarray, dict[str, np.ndarray], list[tuple[tuple[int, ...], int, Allocation]], list[str]]:
    """Allocate every ``(budget, fractions, strategy)``: statuses, masks, the feasible ones, why others are not.

    Returns ``status`` (point dims), ``masks`` (weight -> (allocation dims, post, pre)), a list of
    ``(index without m, trial seed, Allocation)`` and one message per infeasible allocation.
    """
    fraction_levels = levels(cfg)
    shape = (len(cfg.budgets), *(len(v) for v in fraction_levels), len(cfg.strategies), len(cfg.ms))
    status = np.zeros(shape, np.int8)
    masks = {w: np.zeros(shape[:-1] + circuit.shape(w), bool) for w in circuit.weight_names}
    eligible = sum(int(circuit.structure[w].sum()) for w in names)
    feasible, infeasible = [], []
    for ib, b in enumerate(cfg.budgets):
        for point in cfg.points:
            fidx = tuple(lv.index(v) for lv, v in zip(fraction_levels, point))
            for js, strat in enumerate(cfg.strategies):
                index = (ib, *fidx, js)
                fr = dict(zip(cfg.keys, point)) if cfg.keys else None
                try:
                    alloc = allocate(circuit, b, strategy=strat, fractions=fr, within=names,
                                     seed=point_seed(cfg.seed, "allocation", b, point, strat))
                except AllocationError as exc:
                    status[index] = INFEASIBLE_BUDGET if b > eligible else INFEASIBLE_SHARE
                    infeasible.append(f"budget={b}, fractions={fr}, strategy={strat!r}: {exc}")
                    continue
                status[index] = PENDING
                for w in circuit.weight_names:
                    masks[w][index] = alloc.masks[w]
                feasible.append((index, point_seed(cfg.seed, "trials", b, point, strat), alloc))
    return status, masks, feasible, infeasible


def _run(cfg: SweepConfig, circuit: Circuit, names: list[str], path: Path | None, workers: int, scheduler: Any,
         progress: bool, overwrite: bool) -> xr.Dataset:
    status, masks, feasible, infeasible = _allocations(cfg, circuit, names)
    base = skeleton(cfg, circuit, status, masks, store_versions())
    if infeasible:
        warnings.warn(f"{len(infeasible)} sweep point(s) cannot be allocated and are recorded as NaN with an "
                      f"'infeasible_*' status, e.g. {infeasible[0]}", UserWarning, stacklevel=3)
    if feasible:  # refuse up front (one line) what the largest point times the points computed at once cannot hold
        biggest = estimate_fit(circuit, max(a.size for _, _, a in feasible), max(cfg.ms), cfg.trials)
        at_once = 1 if scheduler is not None else min(workers, len(feasible) * len(cfg.ms))
        check_memory(f"sweep (largest point M={max(a.size for _, _, a in feasible)}, m={max(cfg.ms)}, "
                     f"trials={cfg.trials}; {at_once} point(s) at once)",
                     {k: v * at_once for k, v in biggest.items()}, lower="'trials', 'm' or 'workers'")
    with contextlib.nullcontext() if path is None else store_lock(path):
        target = MemoryTarget(base) if path is None else ZarrTarget(path, base, cfg.dims, overwrite=overwrite)
        if getattr(target, "damaged", None):
            warnings.warn(f"{len(target.damaged)} done point(s) of {str(path)!r} failed verification and are "
                          f"recomputed: {'; '.join(target.damaged[:3])}", UserWarning, stacklevel=3)
        done = target.done()
        tasks = []
        for index, trial_seed, alloc in feasible:
            for jm, mm in enumerate(cfg.ms):
                if not done[(*index, jm)]:
                    tasks.append(PointTask(index=(*index, jm), circuit_toml=cfg.circuit_toml, alloc=alloc,
                                           m=mm, trials=cfg.trials, seed=trial_seed, tol=cfg.tol,
                                           solver=cfg.solver, certificate=cfg.certificate, dale=cfg.dale,
                                           stable=cfg.stable))
        sizes = {"trial": cfg.trials, "round": cfg.max_rounds}
        total = int((status == PENDING).sum())
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=total, initial=total - len(tasks), desc="sweep points", unit="point")
        try:
            with point_executor(workers, scheduler, len(tasks)) as (executor, in_flight):
                for task, ds in completed(executor, run_point, tasks, in_flight):
                    if not target.has_layout:  # the first result: template variables from its Dataset
                        target.ensure(point_variables(ds, cfg.dims, status.shape, sizes))
                    target.write(task.index, point_values(ds, cfg.max_rounds))
                    if bar is not None:
                        bar.update(1)
        finally:
            if bar is not None:
                bar.close()
        if not target.has_layout:  # no point was computable: the layout of a point on an empty allocation
            ds = run_point(PointTask(index=(), circuit_toml=cfg.circuit_toml, alloc=allocate(circuit, 0),
                                     m=cfg.ms[0], trials=1, seed=0, tol=cfg.tol, solver=cfg.solver,
                                     certificate=cfg.certificate, dale=cfg.dale, stable=cfg.stable))
            target.ensure(point_variables(ds, cfg.dims, status.shape, sizes))
        return target.result()
