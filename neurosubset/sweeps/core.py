"""The :func:`sweep` verb: validate the grid, allocate every point, compute the pending ones, store each result.

Flow: arguments -> :class:`~neurosubset.sweeps.config.SweepConfig` -> allocations (infeasible ones flagged) ->
template (skeleton and the declared point variables, :mod:`neurosubset.sweeps.template`) -> store / memory target ->
:class:`~neurosubset.sweeps.point.PointTask` per pending point -> executor -> every result is stored as it arrives.
"""
from __future__ import annotations

import contextlib
import os
import sys
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from .._checks import MAX_SEED, AllocationError, ParameterError, check_choice, check_int, check_names
from .._memory import available_bytes, chunk_trials
from .._outputs import check_output
from ..benchmark import cost_estimate
from .._schema import INFEASIBLE_BUDGET, INFEASIBLE_SHARE, PENDING, var_name
from ..allocation import STRATEGIES, Allocation, allocate, check_fractions
from ..circuit import Circuit
from ..dynamics.sparse_map import choose_layout
from ..options import DEFAULT_TOL, FitOptions, constraints_act, fit_options, validate_params
from ..schema import LayoutError
from ..solvers import Auto, Solver, as_solver
from .config import SweepConfig, paired_seed, point_seed
from .executors import check_scheduler, check_workers, completed, point_executor
from .grid import DensityGrid, FractionGrid
from .integrity import _check_metadata
from .point import PointTask, point_values, resume_result, run_point
from .layout import index_points
from .store import MemoryTarget, SweepStoreError, ZarrTarget, store_lock, store_versions
from .template import levels, point_options, point_variables, skeleton

# dims and variables a fraction key may not name
_RESERVED = ("budget", "strategy", "m", "trial", "round", "status", "point", "dale", "stable_required")


def sweep(circuit: Circuit, *, budget: int | Sequence[int] | None = None, m: int | Sequence[int],
          fractions: FractionGrid | DensityGrid | Sequence[Mapping[str, float]] | None = None,
          strategy: str | Sequence[str] = "random", trials: int = 100, seed: int = 0,
          store: str | os.PathLike | None = None, overwrite: bool = False, workers: int = 1, scheduler: Any = None,
          within: Sequence[str] | None = None, solver: Solver | str = Auto(), tol: float = DEFAULT_TOL,
          certificate: bool = True, progress: bool = False, dale: bool | Sequence[bool] = True,
          stable: bool | Sequence[bool] = True, paired: bool | None = None, device: str = "cpu",
          restarts: int | None = None, max_rounds: int | None = None, steps: int | None = None,
          options: FitOptions | None = None) -> xr.Dataset:
    """Match probability over a grid of budgets, plasticity fractions, strategies and probe counts.

    Parameters
    ----------
    circuit : Circuit
    budget : int or list of int
        ``M``, plastic synapses per allocation; one ``budget`` coordinate each. Not given with a
        :func:`density_grid` (each point's budget follows from its densities).
    m : int or list of int
        Numbers of probes; one ``m`` coordinate each.
    fractions : FractionGrid, DensityGrid or list of dict, optional
        Share of the budget per projection or region name, e.g. :func:`simplex_grid` or :func:`dirichlet_grid`, or
        per-key plastic densities (:func:`density_grid`). The points lie along one dim ``point``; each key's share
        is a coordinate on it named :func:`neurosubset._schema.var_name` of the key (``CA3_to_CA1``; attr
        ``fraction_key`` holds ``"CA3->CA1"``), a pandas MultiIndex of the keys in the returned Dataset (plain
        coordinates in the store), so ``ds.mp.sel(strategy=..., m=...)`` holds NaN only at infeasible points and
        ``ds[["mp", "matched"]].to_dataframe()`` is tidy. Checked up front: unknown names, negative values or
        points not summing to 1 raise :class:`~neurosubset.AllocationError` naming the key. A point whose share
        exceeds the eligible synapses of its projections (or a budget above all eligible synapses) is not an
        error: it is recorded with ``status`` ``infeasible_share`` (``infeasible_budget``) and NaN values, and a
        warning says how many there were.
    strategy : str or list of str
        Allocation strategies (see :func:`neurosubset.allocate`).
    trials : int
        Teacher/student/probe draws per point.
    seed : int
        Sweep seed; every allocation's seed is hashed from it and the allocation's coordinates.
    paired : bool, optional
        Paired draws (the default for new sweeps): every point uses the same trial seed, so trial ``i``'s teacher,
        frozen student draw and probes depend only on ``(seed, m, i)``, identical across strategies, fractions,
        budgets and constraint flags (compare allocations with :func:`paired_difference`). ``False``: a trial seed
        per allocation, hashed from its coordinates (the numbers of earlier versions, bit for bit). A store written
        before store format 2 (a dim per fraction key) resumes unpaired; ``paired=True`` is refused there.
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
    dale, stable : bool or list of bool
        As in :func:`neurosubset.match_probability`: Dale's law kept while fitting, and only stable students of
        steady circuits count. A list (``[True, False]``) becomes a sweep dim ``dale`` / ``stable_required`` (the
        draws and allocations do not depend on it). Scalars enter the configuration hash only where they can act
        (signed regions; steady dynamics), so a store written before they existed (unconstrained) resumes with
        ``dale=False`` / ``stable=False`` there and is refused otherwise, naming the field.
    device : {"cpu", "cuda"}
        Where each point's LM runs (:func:`neurosubset.match_probability`); exact deciders stay on the CPU. Not part
        of the configuration hash (decisions are identical to rounding). ``"cuda"`` without a GPU, or on a circuit
        whose dynamics runs on the CPU only (continuous), is refused before any work (ParameterError).
    restarts, max_rounds, steps
        Deprecated (FutureWarning): fields of the solver object (``steps`` is its ``iterations``).
    options : FitOptions, optional
        ``solver``, ``tol``, ``certificate``, scalar ``dale`` / ``stable`` and ``device`` (and ``chunk``,
        ``max_memory``, ``skip_zero``) as one validated object (:class:`neurosubset.FitOptions`), instead of the
        keywords. Points always run on one torch thread (its ``threads`` is not used). ``skip_zero`` enters the
        configuration hash where given (not None).

    Returns
    -------
    xarray.Dataset
        Dims ``budget``, ``point`` (with fractions), ``dale`` / ``stable_required`` (when swept), ``strategy``, ``m``
        (+ ``trial``, ``round`` and the mask dims). A resumed store of format 1 keeps its dense layout (one dim per
        fraction key; :func:`neurosubset.sweeps.as_points` converts it).
        ``status`` (flags), every variable of :func:`~neurosubset.match_probability` with the point dims in front
        (``mp``, ``mp_low``, ``mp_high`` (95% Wilson), ``mp_first_round``, ``mp_by_round (..., round)``, per-trial
        ``matched``, ``residual``, ``restarts``, ``fit_status (..., trial)``, ``plastic_rank``, ``full_rank``),
        ``last_round_gain``, ``solver`` and ``verdict`` per point, and
        ``mask_<weight> (budget, point, strategy, post, pre)``. Points not computed hold NaN, False or 0.
        Attrs: the configuration, package versions, ``config_hash``, ``weights_layout`` ("dense" or "sparse", the
        layout the points ran in, as :func:`neurosubset.match_probability` records it; part of the configuration
        where "sparse", so a store resumes only in the layout it was made in; a store made before the attr ran
        dense). Identical for any ``workers``/``scheduler`` and after resuming.

    Examples
    --------
    >>> ds = sweep(ca, budget=[100, 200], fractions=simplex_grid(["CA3->CA3", "CA3->CA1"], step=0.25),
    ...            strategy=["random", "spread-rows"], m=[5, 10], trials=100, store="data/ca3.zarr",
    ...            workers=2)                                                              # doctest: +SKIP
    >>> ds["mp"].sel(strategy="spread-rows").plot()                                        # doctest: +SKIP
    """
    if not isinstance(circuit, Circuit):
        raise ParameterError(f"The 'circuit' parameter must be a Circuit. Got {type(circuit).__name__}.")
    dales, stables = _flags("dale", dale), _flags("stable", stable)
    scalar = {k: v for k, v, swept in (("dale", dale, dales), ("stable", stable, stables)) if swept is None}
    options = fit_options("sweep", options, solver=solver, tol=tol, certificate=certificate, device=device, **scalar)
    if any(v is not None for v in (restarts, max_rounds, steps)):  # deprecated: FutureWarning
        options = options._evolve(solver=as_solver(options.solver, where="sweep", restarts=restarts,
                                                   max_rounds=max_rounds, steps=steps))
    options.check_circuit(circuit, "sweep")
    # one torch thread per point: every point computes the same way whichever worker runs it; a swept flag is
    # False in the hashed options (its values are the sweep dim's)
    options = options._evolve(threads=1, **{k: False for k, swept in (("dale", dales), ("stable", stables))
                                            if swept is not None})
    density = isinstance(fractions, DensityGrid)
    if density and budget is not None:
        raise ParameterError("The 'budget' parameter must not be given with a density_grid: each point's budget "
                             "follows from its densities.")
    if budget is None and not density:
        raise ParameterError("The 'budget' parameter is required (an int or a list of ints) unless fractions is a "
                             "density_grid.")
    budgets = () if density else tuple(check_int("budget", b, minimum=0) for b in _as_list("budget", budget))
    ms = tuple(check_int("m", v, minimum=1) for v in _as_list("m", m))
    strategies = tuple(_as_list("strategy", strategy))
    for s in strategies:
        check_choice("strategy", s, STRATEGIES, error=AllocationError)
    trials = check_int("trials", trials, minimum=1)
    seed = check_int("seed", seed, minimum=0, maximum=MAX_SEED)
    workers = check_workers(workers)
    scheduler = check_scheduler(scheduler)
    if isinstance(within, str):
        raise AllocationError(f"The 'within' parameter must be a list of weight names. Got the string {within!r}.")
    if within is not None:
        check_names("within", within, circuit.weight_names, what="Weight", error=AllocationError)
    names = list(circuit.weight_names) if within is None else list(within)
    grid = _grid(circuit, fractions, names)
    path = None
    if store is not None:
        path = check_output(store, formats=(".zarr",), overwrite=True, what="the sweep store", store_ok=True)
    dense = path is not None and not overwrite and _dense_store(path)
    if dense:  # a store written before store format 2: resumed in its own layout, unpaired
        for field, bad in (("paired", paired is True), ("dale", dales is not None), ("stable", stables is not None),
                           ("fractions", density)):
            if bad:
                raise SweepStoreError(f"The store {str(path)!r} was written before store format 2 (a dim per "
                                      f"fraction key, unpaired draws); it resumes only without {field!r} as a "
                                      f"list/density grid/paired=True. Use another store path or overwrite=True.")
    if paired is not None and not isinstance(paired, (bool, np.bool_)):
        raise ParameterError(f"The 'paired' parameter must be True, False or None. Got {paired!r}.")
    dale_acts, stable_acts = constraints_act(circuit)
    cfg = SweepConfig(circuit_toml=circuit.to_toml(), budgets=budgets, keys=grid.keys if grid else (),
                      points=grid.points if grid else ((),), strategies=strategies, ms=ms, trials=trials, seed=seed,
                      within=None if within is None else tuple(within), options=options,
                      dale_acts=dale_acts, stable_acts=stable_acts, layout="dense" if dense else "point",
                      paired=(not dense) if paired is None else bool(paired), dales=dales, stables=stables,
                      density=density, weights_layout=choose_layout(circuit, options.weights_layout).value)
    return _run(cfg, circuit, names, path, workers, scheduler, progress, bool(overwrite))


def _flags(field: str, value: Any) -> tuple[bool, ...] | None:
    """A constraint flag: None for a scalar (validated with the other fit options), else the tuple of values of
    its sweep dim, each validated as the scalar would be."""
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, (Sequence, np.ndarray, set, frozenset)):
        return None
    values = _as_list(field, value)
    return tuple(validate_params({field: v}, "sweep")[field] for v in values)


def _dense_store(path: Path) -> bool:
    """Whether ``path`` holds a sweep store written before store format 2 (dense layout)."""
    import json

    from .._outputs import is_sweep_store

    if not is_sweep_store(path):
        return False
    _check_metadata(path, "Pass overwrite=True (--overwrite) to start over, or choose another store path.")
    with xr.open_zarr(path, chunks=None) as stored:
        cfg = json.loads(stored.attrs["sweep_config"])
    return cfg.get("store_format") == 1


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
    if isinstance(fractions, DensityGrid):
        eligible = _eligible(circuit, fractions.keys, names)
        for point in fractions.points:
            check_fractions(circuit, fractions.allocation(eligible, point)[1], names)
        grid = fractions
    elif isinstance(fractions, FractionGrid):
        grid = fractions
    elif isinstance(fractions, Mapping):
        raise AllocationError("The 'fractions' parameter of sweep takes a grid of points (simplex_grid(...) or a list "
                              f"of {{name: fraction}} mappings), not one mapping. Got {dict(fractions)!r}; wrap it "
                              f"in a list.")
    else:
        grid = FractionGrid.from_points(fractions)
    if not isinstance(grid, DensityGrid):
        for point in grid:
            check_fractions(circuit, point, names)
    clash = set(_RESERVED).intersection(grid.keys) | set(_RESERVED).intersection(map(var_name, grid.keys))
    stems = [var_name(k) for k in grid.keys]
    if len(set(stems)) != len(stems):
        raise AllocationError(f"Fraction keys {list(grid.keys)} map to clashing coordinate names {stems}.")
    if clash:
        raise AllocationError(f"Fraction keys {sorted(clash)} clash with the sweep's own dimensions.")
    return grid


def _eligible(circuit: Circuit, keys: Sequence[str], names: Sequence[str]) -> dict[str, int]:
    """Eligible synapses per density key (a region: every eligible projection into it)."""
    out = {}
    for key in keys:
        members = [key] if key in circuit.projection else [p.name for p in circuit.projections_into(key)]
        out[key] = sum(int(circuit.eligible[w].sum()) for w in members if w in names)
    return out


def _sizes(cfg: SweepConfig) -> dict[str, int]:
    """Length of every point dim."""
    fraction_levels = dict(zip(cfg.keys, levels(cfg)))
    flags = {"dale": cfg.dales, "stable_required": cfg.stables}
    return {d: len(cfg.budgets) if d == "budget" else len(cfg.points) if d == "point" else
            len(flags[d]) if d in flags else len(cfg.strategies) if d == "strategy" else len(cfg.ms) if d == "m"
            else len(fraction_levels[d]) for d in cfg.dims}


def _allocations(cfg: SweepConfig, circuit: Circuit, names: list[str]
                 ) -> tuple[np.ndarray, dict[str, np.ndarray], list[tuple[dict[str, int], int, Allocation]], list[str],
                            list[int]]:
    """Allocate every ``(budget, fractions, strategy)``: statuses, masks, the feasible ones, why others are not.

    Returns ``status`` (point dims), ``masks`` (weight -> (allocation dims, post, pre)), a list of
    ``(position along each allocation dim, trial seed, Allocation)``, one message per infeasible allocation and
    the budget of each point of a density grid.
    """
    sizes = _sizes(cfg)
    status = np.zeros(tuple(sizes.values()), np.int8)
    alloc_dims = ("budget", *cfg.keys, "strategy") if cfg.layout == "dense" else cfg.alloc_dims
    masks = {w: np.zeros(tuple(sizes[d] for d in alloc_dims) + circuit.shape(w), bool) for w in circuit.weight_names}
    eligible = sum(int(circuit.eligible[w].sum()) for w in names)
    fraction_levels = levels(cfg)
    per_key = _eligible(circuit, cfg.keys, names) if cfg.density else {}
    density = DensityGrid(cfg.keys, cfg.points) if cfg.density else None  # built (and checked) once, not per point
    point_budgets = []
    feasible, infeasible = [], []
    for ib, b0 in enumerate(cfg.budgets or (None,)):
        for ip, point in enumerate(cfg.points):
            if cfg.density:
                b, fr = density.allocation(per_key, point)
                point_budgets.append(b)
            else:
                b, fr = b0, dict(zip(cfg.keys, point)) if cfg.keys else None
            where = {"budget": ib, "point": ip, **{k: lv.index(v) for k, lv, v in zip(cfg.keys, fraction_levels,
                                                                                         point)}}
            for js, strat in enumerate(cfg.strategies):
                at = {**where, "strategy": js}
                index = tuple(at[d] for d in alloc_dims)
                try:
                    alloc = allocate(circuit, b, strategy=strat, fractions=fr, within=names,
                                     seed=point_seed(cfg.seed, "allocation", b, point, strat))
                except AllocationError as exc:
                    status[_full(status, cfg.dims, at)] = INFEASIBLE_BUDGET if b > eligible else INFEASIBLE_SHARE
                    infeasible.append(f"budget={b}, fractions={fr}, strategy={strat!r}: {exc}")
                    continue
                status[_full(status, cfg.dims, at)] = PENDING
                for w in circuit.weight_names:
                    masks[w][index] = alloc.masks[w]
                seed = paired_seed(cfg.seed) if cfg.paired else point_seed(cfg.seed, "trials", b, point, strat)
                feasible.append((at, seed, alloc))
    return status, masks, feasible, infeasible, point_budgets


def _full(status: np.ndarray, dims: Sequence[str], at: Mapping[str, int]) -> tuple:
    """The index of every point of an allocation (slices along the dims it does not fix: m and flag dims)."""
    return tuple(at.get(d, slice(None)) for d in dims)


def _run(cfg: SweepConfig, circuit: Circuit, names: list[str], path: Path | None, workers: int, scheduler: Any,
         progress: bool, overwrite: bool) -> xr.Dataset:
    status, masks, feasible, infeasible, point_budgets = _allocations(cfg, circuit, names)
    base = skeleton(cfg, circuit, status, masks, store_versions(), point_budgets)
    if infeasible:
        warnings.warn(f"{len(infeasible)} sweep point(s) cannot be allocated and are recorded as NaN with an "
                      f"'infeasible_*' status, e.g. {infeasible[0]}", UserWarning, stacklevel=3)
    if feasible:  # refuse up front (one line) what one trial of the largest point, times the points computed at
        # once, cannot hold (match_probability fits the trials of a point in chunks sized from the memory left)
        at_once = 1 if scheduler is not None else min(workers, len(feasible) * len(cfg.ms))
        largest = max((a for _, _, a in feasible), key=lambda a: a.size)
        worst = cfg.solver.resolve(False) if isinstance(cfg.solver, Auto) else cfg.solver  # the LM, if it may run
        chunk_trials(circuit, largest, max(cfg.ms), cfg.trials, worst, available=available_bytes() // at_once,
                     what="sweep point" if at_once == 1 else f"sweep point (one of {at_once} at once)")
    # the per-point variables, from their declared layout: every variable any point of the grid writes
    variables = point_variables(cfg, circuit, [a for _, _, a in feasible], status.shape)
    with contextlib.nullcontext() if path is None else store_lock(path):
        target = MemoryTarget(base) if path is None else ZarrTarget(path, base, cfg.dims, overwrite=overwrite)
        if getattr(target, "damaged", None):
            warnings.warn(f"{len(target.damaged)} done point(s) of {str(path)!r} failed verification and are "
                          f"recomputed: {'; '.join(target.damaged[:3])}", UserWarning, stacklevel=3)
        done = target.done()
        tasks = []
        flags = point_options(cfg)
        # progress per trial inside a point: where points run in this process (one worker, no scheduler), on a
        # terminal (a worker process's bars would interleave; a log file gets the per-point bar only)
        inner = bool(progress) and scheduler is None and workers == 1 and sys.stderr.isatty()
        for at, trial_seed, alloc in feasible:
            for flag, options in flags:
                for jm, mm in enumerate(cfg.ms):
                    index = tuple({**at, **flag, "m": jm}[d] for d in cfg.dims)
                    if not done[index]:
                        kept = getattr(target, "resumes", {}).get(index)  # a store extended to more trials
                        tasks.append(PointTask(index=index, circuit_toml=cfg.circuit_toml, alloc=alloc,
                                               m=mm, trials=cfg.trials, seed=trial_seed, options=options,
                                               resume=None if kept is None else resume_result(kept, cfg.max_rounds,
                                                                                             alloc.size),
                                               progress=inner))
        total = int((status == PENDING).sum())
        bar = None
        if progress and tasks:  # the cost before it is paid: a one-round calibration of the first point's trials
            first = tasks[0]
            print(cost_estimate(circuit, first.alloc, first.m, first.trials, first.seed, first.options,
                                points=len(tasks)) + f" (calibrated on point {first.index}; points differ in cost)",
                  file=sys.stderr, flush=True)
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=total, initial=total - len(tasks), desc="sweep points", unit="point")
        try:
            with point_executor(workers, scheduler, len(tasks)) as (executor, in_flight):
                for task, ds in completed(executor, run_point, tasks, in_flight):
                    values = point_values(ds, cfg.max_rounds)
                    undeclared = sorted(set(values) - set(variables))
                    if undeclared:  # never dropped: the declared layout (neurosubset.schema) is wrong
                        raise LayoutError(f"Sweep point {task.index} wrote {undeclared}, which its template (built "
                                          f"from neurosubset.schema.SWEEP for this grid) does not hold; the "
                                          f"declared presence rules (Variable.when) disagree with "
                                          f"match_probability.")
                    # a new store is created with the first result (nothing is left behind by a sweep that
                    # computes nothing); an existing one keeps its own variables
                    target.ensure(variables)
                    target.write(task.index, values)
                    if bar is not None:
                        bar.update(1)
        finally:
            if bar is not None:
                bar.close()
        target.ensure(variables)  # no point was computed (none computable, or all done)
        return index_points(target.result())
