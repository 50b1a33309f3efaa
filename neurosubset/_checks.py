"""Small validators shared by the package: every user-facing error names the field, the value and what is allowed."""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import os

import numpy as np


class NeurosubsetError(ValueError):
    """Base of every error the toolkit raises for bad user input (the CLI maps these, and only these, to exit 2)."""


class ParameterError(NeurosubsetError):
    """A function argument is out of its allowed range or set (the message names it and the allowed values)."""


class MissingExtraError(NeurosubsetError, ImportError):
    """An optional dependency (an extra such as ``neurosubset[spiking]``) is not installed."""


class NonFiniteOutputWarning(UserWarning):
    """Some trials' outputs overflowed to inf/NaN: those trials are flagged ``non_finite`` and count as unmatched."""


class StabilityWarning(UserWarning):
    """A steady circuit's teacher draws sit near the stability limit (more than 1% unstable, or a median
    ``max Re(eig W)`` within 0.05 of 1): MP can move with small gain changes; the message names the projections
    that dominate the unstable mode."""


class CircuitSpecError(NeurosubsetError):
    """A circuit specification (TOML file or builder arguments) is invalid."""


class AllocationError(NeurosubsetError):
    """An allocation request cannot be satisfied (unknown names, budget too large, bad fractions)."""


def check_choice(field: str, value: Any, allowed: Iterable[Any], *, error: type[ValueError] = ParameterError) -> None:
    """Raise ``error`` unless ``value`` is one of ``allowed``."""
    allowed = list(allowed)
    if value not in allowed:
        raise error(f"The {field!r} parameter must be one of {allowed}. Got {value!r} instead.")


MAX_SEED = 2**63 - 1  # the largest seed the writers store (an int64 attr or variable in netCDF and zarr)


def check_flag(field: str, value: Any) -> bool:
    """Return ``value`` as a bool, or raise :class:`ParameterError` unless it is True or False."""
    if not isinstance(value, (bool, np.bool_)):
        raise ParameterError(f"The {field!r} parameter must be True or False. Got {value!r} instead.")
    return bool(value)


def check_int(field: str, value: Any, *, minimum: int | None = None, maximum: int | None = None,
              error: type[ValueError] = ParameterError) -> int:
    """Return ``value`` as an int, or raise ``error`` if it is not an integer in [minimum, maximum]."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise error(f"The {field!r} parameter must be an integer. Got {value!r} instead.")
    value = int(value)
    if minimum is not None and value < minimum:
        raise error(f"The {field!r} parameter must be >= {minimum}. Got {value} instead.")
    if maximum is not None and value > maximum:
        raise error(f"The {field!r} parameter must be <= {maximum}. Got {value} instead.")
    return value


def check_real(field: str, value: Any, *, low: float | None = None, high: float | None = None,
               low_open: bool = False, error: type[ValueError] = ParameterError) -> float:
    """Return ``value`` as a float in the interval, or raise ``error`` naming the field."""
    if isinstance(value, bool):
        raise error(f"The {field!r} parameter must be a number. Got {value!r} instead.")
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise error(f"The {field!r} parameter must be a number. Got {value!r} instead.") from None
    if out != out:
        raise error(f"The {field!r} parameter must be a number. Got NaN instead.")
    if low is not None and (out < low or (low_open and out == low)):
        op = ">" if low_open else ">="
        raise error(f"The {field!r} parameter must be {op} {low}. Got {out} instead.")
    if high is not None and out > high:
        raise error(f"The {field!r} parameter must be <= {high}. Got {out} instead.")
    return out


def check_names(field: str, given: Iterable[str], allowed: Iterable[str], *, what: str,
                error: type[ValueError] = ParameterError) -> None:
    """Raise ``error`` if any name in ``given`` is not in ``allowed``."""
    allowed = list(allowed)
    for name in given:
        if name not in allowed:
            raise error(f"{what} {name!r} (in {field!r}) does not exist. Expected one of {allowed}.")


WORKERS_PER_CORE = 4  # more local workers than this per core only share the cores (and each holds ~300 MB)


def cores() -> int:
    """The CPU cores this process may run on (its affinity mask; ``os.cpu_count()`` where there is none)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def max_workers() -> int:
    """The most local workers (sweep processes, or a fit's torch threads) accepted: ``WORKERS_PER_CORE`` per core."""
    return WORKERS_PER_CORE * cores()


def workers_allowed() -> str:
    """What :func:`check_workers` accepts, in words (the refusal's wording)."""
    return (f"an integer from 1 to {max_workers()} ({WORKERS_PER_CORE} per core on this machine's {cores()} cores; "
            f"more only share the cores and multiply the memory)")


def check_workers(workers: Any, field: str = "workers") -> int:
    """Return ``workers`` as an int in ``[1, max_workers()]``, else raise :class:`ParameterError` in one line."""
    if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or not 1 <= workers <= max_workers():
        raise ParameterError(f"The {field!r} parameter must be {workers_allowed()}. Got {workers!r} instead.")
    return int(workers)
