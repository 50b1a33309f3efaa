"""Fraction grids: the plasticity fractions a sweep visits, one sweep dimension per fraction key.

:class:`FractionGrid` holds the points (each a tuple of fractions aligned with the keys, summing to 1);
:func:`simplex_grid` builds every point of the simplex at a given spacing. Fraction levels are rounded to
``_FRACTION_DIGITS`` decimals, so ``k * step`` lands on one value whatever the float arithmetic.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .._checks import AllocationError, check_real

_FRACTION_DIGITS = 12  # fraction levels are rounded to this many decimals (they come from k * step)


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
