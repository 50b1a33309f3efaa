"""Fraction grids: the plasticity fractions a sweep visits, along its ``point`` dim (each key a coordinate).

:class:`FractionGrid` holds the points (each a tuple of fractions aligned with the keys, summing to 1);
:func:`simplex_grid` builds every point of the simplex at a given spacing, :func:`dirichlet_grid` draws seeded
points for many keys. :class:`DensityGrid` (:func:`density_grid`) is a product grid of per-key plastic densities,
whose budget follows from the densities (:meth:`DensityGrid.allocation`). Fraction levels are rounded to
``_FRACTION_DIGITS`` decimals, so ``k * step`` lands on one value whatever the float arithmetic.
"""
from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._checks import AllocationError, check_int, check_real

_FRACTION_DIGITS = 12  # fraction levels are rounded to this many decimals (they come from k * step)
# the most points a fraction grid may have: counted before any is built (a sweep store holds a chunk file per point
# and variable, so 10^5 points are already millions of files; step=1e-9 asked for 10^9 points and ran out of memory)
MAX_GRID_POINTS = 100_000


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
    count = math.comb(n + len(keys) - 1, len(keys) - 1)
    if count > MAX_GRID_POINTS:
        low, high = 1, n  # the finest 1/step within the limit (the count grows with 1/step): bisection
        while low < high:
            mid = (low + high + 1) // 2
            low, high = (mid, high) if math.comb(mid + len(keys) - 1, len(keys) - 1) <= MAX_GRID_POINTS else \
                (low, mid - 1)
        coarse = low
        raise AllocationError(f"simplex_grid over {len(keys)} keys at step {step:g} has {count:,} points "
                              f"(C(1/step + k - 1, k - 1)), more than the {MAX_GRID_POINTS:,} a grid may have. Raise "
                              f"the step (step 1/{coarse} = {1 / coarse:.4g} gives "
                              f"{math.comb(coarse + len(keys) - 1, len(keys) - 1):,} points), sweep fewer keys, or "
                              f"draw points with dirichlet_grid (--dirichlet N).")

    def compositions(total: int, parts: int) -> Iterator[tuple[int, ...]]:
        if parts == 1:
            yield (total,)
            return
        for first in range(total + 1):
            for rest in compositions(total - first, parts - 1):
                yield (first, *rest)

    points = tuple(tuple(c / n for c in comp) for comp in compositions(n, len(keys)))
    return FractionGrid(keys, points)


def dirichlet_grid(keys: Sequence[str], n: int, seed: int, alpha: float = 1.0) -> FractionGrid:
    """``n`` fraction points drawn from a symmetric Dirichlet distribution over ``keys`` (for many keys).

    Parameters
    ----------
    keys : list of str
        Projection or region names (the point dim's coordinates).
    n : int
        Number of points (>= 1).
    seed : int
        ``numpy.random.default_rng(seed).dirichlet(alpha * ones(len(keys)), n)``: the same seed gives the same grid.
    alpha : float
        Concentration (> 0): 1 is uniform on the simplex, large values cluster near the centre, small near corners.

    Returns
    -------
    FractionGrid
        Fractions rounded to 12 decimals (their sum is 1 within 1e-11).
    """
    if isinstance(keys, str):
        raise AllocationError(f"The 'keys' parameter of dirichlet_grid must be a list of names. Got {keys!r}.")
    keys = tuple(keys)
    if not keys:
        raise AllocationError("The 'keys' parameter of dirichlet_grid needs at least one name.")
    n = check_int("n", n, minimum=1, error=AllocationError)
    if n > MAX_GRID_POINTS:
        raise AllocationError(f"dirichlet_grid asks for {n:,} points, more than the {MAX_GRID_POINTS:,} a grid may "
                              f"have ({n:,} x {len(keys)} fractions, and a chunk file per point and variable in a "
                              f"store). Lower n (--dirichlet N).")
    seed = check_int("seed", seed, minimum=0, error=AllocationError)
    alpha = check_real("alpha", alpha, low=0.0, low_open=True, error=AllocationError)
    draws = np.random.default_rng(seed).dirichlet(np.full(len(keys), alpha), n)
    return FractionGrid(keys, tuple(tuple(float(v) for v in row) for row in draws))


@dataclass(frozen=True)
class DensityGrid:
    """A product grid of per-key plastic densities (the fraction of a key's eligible synapses that is plastic).

    Parameters
    ----------
    keys : tuple of str
        Projection or region names (a region: every eligible projection into it).
    points : tuple of tuple of float
        One density in [0, 1] per key and point.

    Notes
    -----
    Point ``d`` maps to an allocation by :meth:`allocation`: key ``k`` with ``E_k`` eligible synapses gets
    ``n_k = floor(d_k * E_k + 1/2)`` plastic synapses, the budget is ``M = sum_k n_k`` and the fractions are
    ``n_k / M`` (all keys ``1 / K`` when ``M = 0``); the largest-remainder split of :func:`neurosubset.allocate`
    then gives every key exactly ``n_k``, placed inside its projections by the strategy.
    """

    keys: tuple[str, ...]
    points: tuple[tuple[float, ...], ...]

    def __post_init__(self) -> None:
        keys = tuple(self.keys)
        if not keys or any(not isinstance(k, str) or not k for k in keys) or len(set(keys)) != len(keys):
            raise AllocationError(f"The density keys must be distinct projection or region names. Got {keys!r}.")
        points = tuple(tuple(_level(v, k) for v, k in zip(p, keys)) for p in self.points)
        if not points or any(len(p) != len(keys) for p in points):
            raise AllocationError(f"Each density point needs one value per key {list(keys)}.")
        for p in points:
            for k, v in zip(keys, p):
                if not 0.0 <= v <= 1.0:
                    raise AllocationError(f"density[{k!r}] must be in [0, 1]. Got {v!r}.")
        object.__setattr__(self, "keys", keys)
        object.__setattr__(self, "points", points)

    def __len__(self) -> int:
        return len(self.points)

    def __iter__(self) -> Iterator[dict[str, float]]:
        return (dict(zip(self.keys, p)) for p in self.points)

    def allocation(self, eligible: Mapping[str, int], point: Sequence[float]) -> tuple[int, dict[str, float]]:
        """The budget and fractions of one density point, given each key's eligible synapse count ``E_k``."""
        counts = [int(np.floor(d * eligible[k] + 0.5)) for k, d in zip(self.keys, point)]
        budget = sum(counts)
        if budget == 0:
            return 0, {k: 1.0 / len(self.keys) for k in self.keys}
        return budget, {k: c / budget for k, c in zip(self.keys, counts)}


def density_grid(levels: Mapping[str, Sequence[float]]) -> DensityGrid:
    """Every combination of per-key plastic densities: ``{"CA3->CA3": [0, 0.1], "CA3->CA1": [0.05, 0.2]}``.

    Parameters
    ----------
    levels : dict
        Projection or region name -> list of densities in [0, 1] (the fraction of that key's eligible synapses
        that is plastic). The grid has ``prod(len(levels[k]))`` points.

    Returns
    -------
    DensityGrid
        A sweep over it has no ``budget`` dim: each point's budget follows from its densities (see the Notes of
        :class:`DensityGrid`) and is a coordinate on ``point``.
    """
    if not isinstance(levels, Mapping) or not levels:
        raise AllocationError(f"density_grid takes a mapping of name -> list of densities. Got {levels!r}.")
    import itertools

    lists = []
    for key, values in levels.items():
        values = [values] if isinstance(values, (int, float)) else list(values)
        if not values or len(set(values)) != len(values):
            raise AllocationError(f"density_grid[{key!r}] must be a non-empty list of distinct densities. "
                                  f"Got {values!r}.")
        lists.append(values)
    return DensityGrid(tuple(levels), tuple(itertools.product(*lists)))
