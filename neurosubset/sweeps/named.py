"""A sweep over named, explicit allocations: :func:`sweep_allocations`.

:func:`neurosubset.sweep` draws its allocations from strategies, fractions and budgets (each with a seed hashed from
its coordinates). Studies that compare hand-built allocations (one full row, the budget in one layer, a greedy
basis, masks from a connectome) need the same machinery over allocations they built themselves: this verb runs
:func:`neurosubset.match_probability` at every ``(allocation, m)`` point through the sweep's point executor
(:func:`~neurosubset.sweeps.executors.point_executor`) and stores each point's values the way a sweep does
(:func:`~neurosubset.sweeps.point.point_values`: per-round values padded with their last value), in memory.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import xarray as xr

from .._checks import MAX_SEED, ParameterError, check_int
from .._schema import VARIABLES, fill_value, meta
from ..allocation import Allocation
from ..benchmark import match_probability
from ..circuit import Circuit
from ..dynamics.sparse_map import choose_layout
from ..options import DEFAULT_TOL, FitOptions, fit_options
from ..solvers import Auto, Solver
from .executors import completed, point_executor
from .point import PointTask, point_values, run_point

_DIMS = ("allocation", "m")


def sweep_allocations(circuit: Circuit, allocations: Mapping[str, Allocation], *, m: int | Sequence[int],
                      trials: int = 100, seed: int = 0, workers: int = 1, solver: Solver | str = Auto(),
                      tol: float = DEFAULT_TOL, certificate: bool = True, dale: bool = True, stable: bool = True,
                      skip_zero: bool | None = None, options: FitOptions | None = None) -> xr.Dataset:
    """Match probability of named allocations over a list of probe counts, as one Dataset.

    Every point ``(allocation, m)`` is :func:`neurosubset.match_probability` ``(circuit, alloc, m, trials, seed)``
    on one torch thread, with the trial seed ``seed`` itself at every point (paired draws: trial ``i``'s teacher,
    frozen student and probes depend only on ``(seed, m, i)``), so a point equals that call, value for value.

    Parameters
    ----------
    circuit : Circuit
    allocations : dict of str -> Allocation
        The allocations, by name (the ``allocation`` coordinate, in the given order); at least one.
    m : int or list of int
        Numbers of probes; one ``m`` coordinate each.
    trials : int
        Teacher/student/probe draws per point.
    seed : int
        Trial seed of every point (0 .. 2^63 - 1).
    workers : int
        Local worker processes (1: compute in this process, with ``circuit`` itself).
    solver, tol, certificate, dale, stable, skip_zero
        As in :func:`neurosubset.match_probability`.
    options : FitOptions, optional
        The same fields as one validated object, instead of the keywords (its ``threads`` is not used: one thread).

    Returns
    -------
    xarray.Dataset
        Dims ``allocation``, ``m`` (+ ``trial``, ``round``): every variable a point of
        :func:`neurosubset.sweep` stores (``mp``, ``mp_low``, ``mp_high``, ``mp_lower``, ``mp_upper``,
        ``mp_first_round``, ``mp_by_round (allocation, m, round)`` padded with each point's final value after
        the ``rounds`` it ran,
        ``matched``, ``residual``, ``restarts``, ``fit_status``, ``decision``, ``outcome`` per trial,
        ``plastic_rank``, ``full_rank``, ``verdict``, ``solver``, ``decision_kind``, ``last_round_gain``), and
        ``budget (allocation)`` and ``strategy (allocation)`` of each allocation. A variable that only some points
        write holds its not-computed value (NaN, False, 0, "") at the others. Attrs: ``circuit``, ``trials``,
        ``seed``, the fit options (:meth:`neurosubset.FitOptions.to_attrs`) and ``weights_layout`` ("dense" or
        "sparse": how the points held their weights, as :func:`neurosubset.match_probability` records it).

    Examples
    --------
    >>> ff = feedforward([6, 6, 4])                                                        # doctest: +SKIP
    >>> ds = sweep_allocations(ff, {"W2 rows": allocate(ff, 16, within=["W2"], strategy="spread-rows"),
    ...                             "W1 rows": allocate(ff, 16, within=["W1"], strategy="spread-rows")},
    ...                        m=[2, 4], trials=50)                                        # doctest: +SKIP
    >>> ds.mp.sel(allocation="W1 rows")                                                    # doctest: +SKIP
    """
    if not isinstance(circuit, Circuit):
        raise ParameterError(f"The 'circuit' parameter must be a Circuit. Got {type(circuit).__name__}.")
    if not isinstance(allocations, Mapping) or not allocations:
        raise ParameterError("The 'allocations' parameter must be a non-empty dict of name -> Allocation. Got "
                             f"{allocations!r:.80}.")
    for name, alloc in allocations.items():
        if not isinstance(name, str) or not isinstance(alloc, Allocation):
            raise ParameterError(f"The 'allocations' parameter must map str names to Allocations. Got "
                                 f"{name!r} -> {type(alloc).__name__}.")
        if set(alloc.masks) != set(circuit.weight_names):
            raise ParameterError(f"Allocation {name!r} has masks for {sorted(alloc.masks)}, not the weights "
                                 f"{list(circuit.weight_names)} of circuit {circuit.name!r}.")
    ms = [check_int("m", v, minimum=1) for v in ([m] if isinstance(m, (int, np.integer)) else list(m))]
    if not ms or len(set(ms)) != len(ms):
        raise ParameterError(f"The 'm' parameter must be one or more distinct probe counts. Got {m!r}.")
    trials = check_int("trials", trials, minimum=1)
    seed = check_int("seed", seed, minimum=0, maximum=MAX_SEED)
    workers = check_int("workers", workers, minimum=1)
    options = fit_options("sweep_allocations", options, solver=solver, tol=tol, certificate=certificate, dale=dale,
                          stable=stable, skip_zero=skip_zero)
    options.check_circuit(circuit, "sweep_allocations")
    options = options._evolve(threads=1)
    names = list(allocations)
    toml = circuit.to_toml() if workers > 1 else ""
    tasks = [PointTask(index=(i, j), circuit_toml=toml, alloc=allocations[name], m=mm, trials=trials, seed=seed,
                       options=options) for i, name in enumerate(names) for j, mm in enumerate(ms)]

    def here(task: PointTask) -> xr.Dataset:  # in this process: the caller's circuit object itself
        return match_probability(circuit, task.alloc, task.m, task.trials, task.seed, options=task.options)

    results: dict[tuple[int, ...], xr.Dataset] = {}
    with point_executor(workers, None, len(tasks)) as (executor, in_flight):
        for task, ds in completed(executor, run_point if workers > 1 else here, tasks, in_flight):
            results[task.index] = ds
    rounds = max(int(ds.sizes.get("round", 1)) for ds in results.values())
    values = {index: point_values(ds, rounds) for index, ds in results.items()}
    dims: dict[str, tuple[str, ...]] = {}
    for ds in results.values():
        for name, var in ds.data_vars.items():
            dims.setdefault(str(name), tuple(str(d) for d in var.dims))
    shape = (len(names), len(ms))
    out = xr.Dataset(coords={"allocation": ("allocation", names, meta("named_allocation")),
                             "m": ("m", np.array(ms, np.int64), meta("m")),
                             "trial": ("trial", np.arange(trials), meta("trial")),
                             "round": ("round", np.arange(rounds), meta("round"))})
    for name in sorted({n for v in values.values() for n in v}, key=lambda n: (n not in dims, n)):
        sample = next(np.asarray(v[name]) for v in values.values() if name in v)
        dtype = np.dtype(object) if sample.dtype.kind in "US" else sample.dtype
        text = dtype.kind == "O"
        array = np.full(shape + sample.shape, "" if text else fill_value(dtype), dtype=dtype)
        for index, v in values.items():
            if name in v:
                array[index] = v[name]
        var_dims = _DIMS + (dims.get(name, ()) if sample.ndim else ())
        out[name] = (var_dims, array.astype(str) if text else array,
                     meta(name) if name in VARIABLES else {})
    ran = np.zeros(shape, np.int64)
    for index, ds in results.items():
        ran[index] = ds.sizes.get("round", 1)
    out["rounds"] = (_DIMS, ran, meta("rounds"))
    out["budget"] = ("allocation", np.array([allocations[n].size for n in names], np.int64), meta("budget"))
    out["strategy"] = ("allocation", np.array([allocations[n].strategy for n in names], dtype=str),
                       meta("strategy"))
    out.attrs.update({"circuit": circuit.name, "trials": trials, "seed": seed, **options.to_attrs(),
                      "weights_layout": choose_layout(circuit, options.weights_layout).value})
    return out
