"""Sweeps: match probability over budgets, plasticity fractions, strategies and probe counts, as one Dataset.

A sweep evaluates :func:`neurosubset.match_probability` at every *point* of the grid
``budget x fraction points x [dale] x [stable_required] x strategy x m`` and gathers the results in an
:class:`xarray.Dataset`: dims ``budget``, ``point`` (the fraction points: each key's share is a coordinate on it,
named by :func:`neurosubset._schema.var_name`, e.g. ``CA3_to_CA1`` with attr ``fraction_key = "CA3->CA1"``; a
pandas MultiIndex when returned or opened, plain coordinates in a store or file), ``dale`` / ``stable_required``
when those flags are lists, ``strategy`` and ``m``; per-trial variables keep a ``trial`` dimension. So
``ds.mp.sel(strategy=..., m=...)`` holds NaN only at infeasible points (``status`` flags in
:data:`neurosubset.POINT_STATUS`) and ``ds[["mp", "matched", "residual"]].to_dataframe()`` is tidy.

Fraction points: :func:`simplex_grid` (every point at a spacing), :func:`dirichlet_grid` (seeded draws, for many
keys), a list of mappings, or :func:`density_grid` (a product grid of per-key plastic densities; no ``budget`` dim,
each point's budget follows from its densities, see :class:`DensityGrid`).

Stores of format 1 (written before the ``point`` layout: one dim per fraction key, mostly off-grid cells) still
open, plot, export and resume in their own layout (unpaired); :func:`as_points` converts them.

Seeds
-----
Each allocation ``(budget, fractions, strategy)`` is drawn with a seed hashed from the sweep ``seed`` and those
coordinates. Trials: with ``paired=True`` (the default) every point uses one trial seed hashed from the sweep seed
alone, so trial ``i``'s teacher, frozen student draw and probes depend only on ``(seed, m, i)``, identical across
strategies, fractions, budgets and constraint flags, and two allocations can be compared trial by trial
(:func:`paired_difference`, exact McNemar intervals). With ``paired=False`` the trial seed is hashed from the
allocation's coordinates (the draws of earlier versions). Either way a point's value depends only on the sweep
seed and its coordinates (never on worker count, scheduling order or interruptions), and the ``m`` probes of a
trial are the first ``m`` of a common sequence, giving paired comparisons across ``m`` (and ``MP``
non-increasing in ``m`` for exact solves).

Store
-----
With ``store="x.zarr"`` the store is created when the first point is done (template and that point) and each
finished point is written into its own chunks, its ``status`` flag last, before the next result is taken (a killed
process loses at most the point it was writing). Running the same sweep again computes only points whose status
is not "done"; a store made by a different configuration is refused; a lock file ``x.zarr.lock`` makes a second
writer fail at once (:mod:`.store`).

Modules: :mod:`.grid` (fraction grids), :mod:`.layout` (the point layout), :mod:`.paired` (paired differences),
:mod:`.config` (the hashed configuration), :mod:`.named` (:func:`sweep_allocations`: named explicit allocations),
:mod:`.point` (one point's task, computation and variables), :mod:`.template` (coords, status, masks, attrs),
:mod:`.store` (memory / Zarr targets, lock, reading back), :mod:`.table` (the text table: MP with its bracket, lower
bounds marked), :mod:`.executors` (in-process, local processes, dask), :mod:`.core` (:func:`sweep`).
"""
from .core import sweep as sweep
from .grid import DensityGrid as DensityGrid
from .grid import FractionGrid as FractionGrid
from .grid import density_grid as density_grid
from .grid import dirichlet_grid as dirichlet_grid
from .grid import simplex_grid as simplex_grid
from .layout import as_points as as_points
from .layout import flat_points as flat_points
from .layout import index_points as index_points
from .named import sweep_allocations as sweep_allocations
from .paired import paired_difference as paired_difference
from .store import SweepStoreError as SweepStoreError
from .store import export as export
from .store import open_sweep as open_sweep
from .table import mp_table as mp_table
from .table import point_decision_kind as point_decision_kind

__all__ = ["sweep", "sweep_allocations", "FractionGrid", "DensityGrid", "simplex_grid", "dirichlet_grid",
           "density_grid", "SweepStoreError",
           "open_sweep", "export", "as_points", "flat_points", "index_points", "paired_difference", "mp_table",
           "point_decision_kind"]
