"""Sweeps: match probability over budgets, plasticity fractions, strategies and probe counts, as one Dataset.

A sweep evaluates :func:`neurosubset.match_probability` at every *point* of the grid
``budget x fractions x strategy x m`` and gathers the results in an :class:`xarray.Dataset` with one dimension
per swept quantity: ``budget``, one dimension per fraction key (named after the key, e.g. ``"CA3->CA1"``),
``strategy`` and ``m``; per-trial variables keep a ``trial`` dimension.

Fraction dimensions are the product of each key's levels, so a simplex grid fills only the cells whose fractions
sum to 1; the other cells are "off grid" (``status`` ``off_grid``, NaN everywhere; flags in
:data:`neurosubset.POINT_STATUS`).

Seeds
-----
Each allocation ``(budget, fractions, strategy)`` is drawn with a seed hashed from the sweep ``seed`` and those
coordinates, and its teacher/student/probe draws with a second hashed seed that does not depend on ``m``. So a
point's value depends only on the sweep seed and its coordinates (never on worker count, scheduling order or
interruptions), and for one allocation the ``m`` probes are the first ``m`` of a common sequence, giving paired
comparisons across ``m`` (and ``MP`` non-increasing in ``m`` for exact solves).

Store
-----
With ``store="x.zarr"`` the store is created when the first point is done (template and that point) and each
finished point is written into its own chunks, its ``status`` flag last, before the next result is taken (a killed
process loses at most the point it was writing). Running the same sweep again computes only points whose status
is not "done"; a store made by a different configuration is refused; a lock file ``x.zarr.lock`` makes a second
writer fail at once (:mod:`.store`).

Modules: :mod:`.grid` (fraction grids), :mod:`.config` (the hashed configuration), :mod:`.point` (one point's task,
computation and variables), :mod:`.template` (coords, status, masks, attrs), :mod:`.store` (memory / Zarr targets,
lock, reading back), :mod:`.executors` (in-process, local processes, dask), :mod:`.core` (:func:`sweep`).
"""
from .core import sweep as sweep
from .grid import FractionGrid as FractionGrid
from .grid import simplex_grid as simplex_grid
from .store import SweepStoreError as SweepStoreError
from .store import export as export
from .store import open_sweep as open_sweep

__all__ = ["sweep", "FractionGrid", "simplex_grid", "SweepStoreError", "open_sweep", "export"]
