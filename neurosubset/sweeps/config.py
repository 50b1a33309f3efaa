"""The configuration of a sweep: what it computes, as one frozen value with a stable hash.

:class:`SweepConfig` holds every setting that changes a sweep's results. Its JSON (``sweep_config`` attr) and the
hash of that JSON (``config_hash``) decide whether a store may be resumed, so :meth:`SweepConfig.as_dict` must stay
byte-identical for the same settings across versions: new settings enter it only when they differ from the value
they had before they existed. :func:`point_seed` hashes a point's seeds from the sweep seed and its coordinates;
:func:`paired_seed` is the one trial seed of every point of a paired sweep.

Store formats: 1 (``layout="dense"``) is the layout before issue 13, one dimension per fraction key; its hashed
configuration is unchanged, so such stores still resume (always unpaired). 2 (``layout="point"``) stores the fraction
points along one dim ``point`` and hashes ``paired`` (and ``dale`` / ``stable`` when they are sweep dims).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from ..options import FitOptions, config_hash, hashed_config
from ..solvers import Solver, lm_fields

_STORE_FORMAT = 2  # bump when the store layout changes; part of the configuration hash (new stores)
_DENSE_FORMAT = 1  # the dense layout (one dim per fraction key) of stores written before store format 2


@dataclass(frozen=True, kw_only=True)
class SweepConfig:
    """Every setting of a sweep that changes its results (validated by :func:`neurosubset.sweep`).

    Attributes
    ----------
    circuit_toml : str
        The circuit spec as TOML text.
    budgets, keys, points, strategies, ms
        The grid: budgets, fraction keys and points (``((),)`` without fractions), strategies, probe counts.
    trials, seed : int
        Draws per point; the sweep seed.
    within : tuple of str or None
        Weights eligible for plasticity (None: all).
    options : FitOptions
        How every point is fitted (validated by :func:`neurosubset.sweep`): the solver, its match tolerance,
        whether each point also stores the exact certificate, ``dale`` and ``stable`` (False where they are sweep
        dims, see ``dales`` / ``stables``), the device. ``dale`` and ``stable`` are hashed only where they can act
        (``dale_acts``, ``stable_acts``): a store written before they existed holds unconstrained points and
        resumes only with them off there. ``device``, ``threads``, ``chunk`` and ``max_memory`` are not hashed
        (decisions do not depend on them); ``skip_zero`` only where given (not None).
    dale_acts, stable_acts : bool
        Whether the circuit has signed regions (Dale's law can act) and is steady (stability can act).
    layout : {"point", "dense"}
        Store format 2 (fraction points along one dim ``point``) or 1 (a dim per fraction key; old stores only).
    paired : bool
        Every point's trials use one seed (:func:`paired_seed`): trial ``i``'s draws depend on ``(seed, m, i)`` only.
    dales, stables : tuple of bool or None
        ``dale`` / ``stable`` as sweep dims (``dale``, ``stable_required``); None: the scalar ``dale`` / ``stable``.
    density : bool
        ``points`` are per-key plastic densities (:func:`neurosubset.sweeps.density_grid`); ``budgets`` is empty and
        each point's budget follows from its densities.
    weights_layout : {"dense", "sparse"}
        How every point holds its weights (``options.weights_layout`` resolved for the circuit by
        :func:`~neurosubset.dynamics.sparse_map.choose_layout`; the ``weights_layout`` attr). Hashed only where
        "sparse" (it runs another decider chain: :mod:`neurosubset.sparse_fit`), so every store made before the
        field (all dense) keeps its hash.
    """

    circuit_toml: str
    budgets: tuple[int, ...]
    keys: tuple[str, ...]
    points: tuple[tuple[float, ...], ...]
    strategies: tuple[str, ...]
    ms: tuple[int, ...]
    trials: int
    seed: int
    within: tuple[str, ...] | None
    options: FitOptions
    dale_acts: bool = False
    stable_acts: bool = False
    layout: str = "dense"
    paired: bool = False
    dales: tuple[bool, ...] | None = None
    stables: tuple[bool, ...] | None = None
    density: bool = False
    weights_layout: str = "dense"

    @property
    def solver(self) -> Solver:
        return self.options.solver

    @property
    def tol(self) -> float:
        return self.options.tol

    @property
    def certificate(self) -> bool:
        return self.options.certificate

    @property
    def dale(self) -> bool:
        return self.options.dale

    @property
    def stable(self) -> bool:
        return self.options.stable

    @property
    def max_rounds(self) -> int:
        """Length of the ``round`` dim: the LM's round cap (that of the default LM for least squares)."""
        return int(lm_fields(self.solver)["max_rounds"])

    def as_dict(self) -> dict[str, Any]:
        """The hashed configuration (keys and values exactly as the stores written since store format 1)."""
        dense = self.layout == "dense"
        rest = {"store_format": _DENSE_FORMAT if dense else _STORE_FORMAT, "circuit": self.circuit_toml,
                "budget": list(self.budgets),
                "fraction_keys": list(self.keys), "fraction_points": [list(p) for p in self.points],
                "strategy": list(self.strategies), "m": list(self.ms), "trials": self.trials, "seed": self.seed,
                "within": None if self.within is None else list(self.within)}
        out = hashed_config(self.options, rest, kind="sweep", dale_acts=self.dale_acts,
                            stable_acts=self.stable_acts)
        if self.options.skip_zero is not None:  # it changes results; absent (None) in every earlier store
            out["skip_zero"] = self.options.skip_zero
        if self.weights_layout != "dense":  # every store before the field held dense weights
            out["weights_layout"] = self.weights_layout
        if dense:  # format 1: byte-identical to the stores written before format 2
            return out
        out["paired"] = self.paired
        if self.dales is not None:
            out["dale"] = list(self.dales)
        if self.stables is not None:
            out["stable"] = list(self.stables)
        if self.density:
            out["grid"] = "density"
        return out

    @property
    def json(self) -> str:
        return json.dumps(self.as_dict(), sort_keys=True)

    @property
    def hash(self) -> str:
        return config_hash(self.as_dict())

    @property
    def dims(self) -> tuple[str, ...]:
        """The point dims: ``budget``, ``point`` (dense layout: one per fraction key), ``dale`` and
        ``stable_required`` where swept, ``strategy``, ``m`` (density grids: no ``budget``)."""
        if self.layout == "dense":
            return ("budget", *self.keys, "strategy", "m")
        flags = (*(("dale",) if self.dales is not None else ()),
                 *(("stable_required",) if self.stables is not None else ()))
        return (*(() if self.density else ("budget",)), *(("point",) if self.keys else ()), *flags, "strategy", "m")

    @property
    def alloc_dims(self) -> tuple[str, ...]:
        """The dims an allocation depends on (the mask variables' leading dims)."""
        return tuple(d for d in self.dims if d not in ("m", "dale", "stable_required"))


def point_seed(seed: int, purpose: str, budget: int, fracs: tuple[float, ...], strategy: str) -> int:
    """A 63-bit seed hashed from the sweep seed and a point's allocation coordinates (not from ``m``)."""
    text = json.dumps([seed, purpose, budget, [repr(f) for f in fracs], strategy])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


def paired_seed(seed: int) -> int:
    """The trial seed of every point of a paired sweep (63 bits hashed from the sweep seed alone)."""
    text = json.dumps([seed, "paired trials"])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1
