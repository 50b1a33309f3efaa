"""The dynamics protocol: what a circuit's equations must say about themselves, and the registry of dynamics.

A circuit's :attr:`~neurosubset.Circuit.dynamics` is an instance of a :class:`Dynamics` subclass (one per kind of
equations: :class:`~neurosubset.dynamics.Feedforward`, :class:`~neurosubset.dynamics.Discrete`,
:class:`~neurosubset.dynamics.Steady`, :class:`~neurosubset.dynamics.Continuous`). Everything that depends on the
equations asks that object — the forward map, the rates of any region over time, the closed-form adjoint Jacobian,
whether outputs are affine in an allocation, the stability criterion, what the exact-rank certificate can do, the
memory a trial needs — so a new dynamics is one new subclass, registered with :func:`register`, and touches no
other file (in the spirit of diffrax's ``AbstractTerm`` and dynamax's ``SSM``).

The objects hold no parameters (``steps``, ``tau``, ... stay fields of the circuit) and compare equal by kind.
They still compare equal to their name (``circuit.dynamics == "steady"``) with a :class:`DeprecationWarning`; the
TOML spec keeps the string.
"""
from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import torch

from .._checks import CircuitSpecError, ParameterError

if TYPE_CHECKING:
    from ..allocation import Allocation
    from ..circuit import Circuit
    from .stability import Stability

RANK_METHODS = ("gfp", "float", "none")  # what the exact-rank certificate can do with a dynamics
CONTINUOUS_FIELDS = ("tau", "duration", "dt", "readout")  # spec fields only continuous dynamics take


class Dynamics:
    """The equations of a circuit: one subclass per kind, stateless, compared by kind.

    Subclasses set :attr:`name` and implement :meth:`forward`; everything else has a default that is right for a
    dynamics without time or a closed-form adjoint (outputs only, autograd Jacobians, float ranks, no stability
    criterion). Shapes: weights ``(..., n_post, n_pre)``, probes :meth:`probe_shape` with leading batch dims,
    outputs ``(..., m, n_out)``.

    Attributes
    ----------
    name : str
        The spec's ``dynamics`` string (TOML and results).
    nonlinearities : tuple of str
        The ``nonlinearity`` values the equations accept.
    sequences : bool
        Whether a probe is a sequence of ``steps`` input vectors (``(m, steps, n_in)``) rather than one vector.
    rational : bool
        Whether linear circuits' outputs are rational in the weights (then :meth:`mod_adjoint` and
        :meth:`entry_degree` give exact ranks over GF(p); see :meth:`rank_method`).
    fixed_point : bool
        Whether linear circuits' non-input rates are the fixed point ``r = A r + B x`` over all non-input neurons
        (closed-form rates and adjoints at any recorded neuron:
        :func:`~neurosubset.dynamics.adjoint.fixed_point_jacobian`).
    spiking : bool
        Whether the linear Poisson (Hawkes) spiking check maps onto the circuit's steady rates.
    cpu_only : bool
        Whether its maps build CPU tensors only (``device`` other than ``"cpu"`` is refused up front).
    """

    name: ClassVar[str] = ""
    nonlinearities: ClassVar[tuple[str, ...]] = ("linear", "relu")
    sequences: ClassVar[bool] = False
    rational: ClassVar[bool] = False
    fixed_point: ClassVar[bool] = False
    spiking: ClassVar[bool] = False
    cpu_only: ClassVar[bool] = False

    # ------------------------------------------------------------------ identity
    def __eq__(self, other: object) -> bool:
        if isinstance(other, str):
            warnings.warn(f"Comparing circuit.dynamics with the string {other!r} is deprecated: use "
                          f"circuit.dynamics.name, or isinstance with a neurosubset.dynamics class.",
                          DeprecationWarning, stacklevel=2)
            return self.name == other
        return isinstance(other, Dynamics) and type(self) is type(other)

    def __hash__(self) -> int:
        return hash(("neurosubset.dynamics", self.name))

    def __str__(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def __reduce__(self):
        return (resolve, (self.name,))  # unpickles to the registered instance (dask workers)

    # ------------------------------------------------------------------ the spec
    def validate(self, circuit: Circuit) -> None:
        """Check (and normalise, on the frozen circuit being built) the fields these equations depend on.

        The default refuses the continuous-time fields and any nonlinearity outside :attr:`nonlinearities`.

        Raises
        ------
        CircuitSpecError
            Naming the field, what was given and what is allowed.
        """
        for name in CONTINUOUS_FIELDS:
            if getattr(circuit, name) is not None:
                raise CircuitSpecError(f"The {name!r} parameter applies to dynamics 'continuous' only; circuit "
                                       f"{circuit.name!r} has dynamics {self.name!r}. Remove it.")
        if circuit.nonlinearity not in self.nonlinearities:
            takers = [d.name for d in _REGISTRY.values() if circuit.nonlinearity in d.nonlinearities]
            raise CircuitSpecError(f"The 'nonlinearity' parameter {circuit.nonlinearity!r} needs dynamics "
                                   f"{' or '.join(map(repr, takers))}; {self.name!r} circuits take one of "
                                   f"{list(self.nonlinearities)}.")

    def order(self, circuit: Circuit) -> tuple[str, ...]:
        """Region evaluation order (declaration order unless the equations need another)."""
        return tuple(r.name for r in circuit.regions)

    def probe_shape(self, circuit: Circuit, m: int) -> tuple[int, ...]:
        """Shape of ``m`` probes: ``(m, steps, n_in)`` for sequences, else ``(m, n_in)``."""
        return (m, circuit.steps, circuit.n_in) if self.sequences else (m, circuit.n_in)

    def input_steps(self, circuit: Circuit) -> int:
        """Input vectors per probe (``steps`` for sequences, else 1)."""
        return circuit.steps if self.sequences else 1

    def readouts(self, circuit: Circuit) -> int:
        """Read-outs per probe in the forward outputs: ``n_out = readouts * output neurons``."""
        return 1

    def recorded_times(self, circuit: Circuit) -> int:
        """Length of a recorded response's time dim (:meth:`rates` with ``time=True``)."""
        return 1

    def readout_times(self, circuit: Circuit) -> np.ndarray:
        """The times of :meth:`rates` with ``time=True``: step indices ``1..T`` (discrete) or seconds."""
        return np.arange(1, self.recorded_times(circuit) + 1, dtype=float)

    def time_units(self, circuit: Circuit) -> str:
        """Units of :meth:`readout_times`."""
        return "1"

    # ------------------------------------------------------------------ the equations
    def forward(self, circuit: Circuit, weights: Mapping[str, torch.Tensor], probes: torch.Tensor) -> torch.Tensor:
        """Outputs ``(..., m, n_out)`` (output regions concatenated in declaration order) on ``probes``."""
        raise NotImplementedError(f"dynamics {self.name!r} defines no forward map")

    def rates(self, circuit: Circuit, weights: Mapping[str, torch.Tensor], probes: torch.Tensor,
              regions: Sequence[str], *, time: bool = False) -> dict[str, torch.Tensor]:
        """Activity of the non-input ``regions``: region -> ``(..., m, size)``, ``(..., m, times, size)`` with
        ``time``.

        The default sees the outputs only (a dynamics without hidden rates to expose).
        """
        if time or any(circuit.region[r].role != "output" for r in regions):
            raise ParameterError(f"Dynamics {self.name!r} exposes its output regions only: record output regions, "
                                 f"without time.")
        out, where = self.forward(circuit, weights, probes), circuit.slices("output")
        return {r: out[..., where[r]] for r in regions}

    def simulate(self, circuit: Circuit, weights: Mapping[str, torch.Tensor], probes: torch.Tensor,
                 regions: Sequence[str], times: Sequence[float] | str | None = None
                 ) -> tuple[dict[str, torch.Tensor], np.ndarray | None]:
        """Rates for :func:`neurosubset.simulate`: region -> ``(probe[, time], size)`` and the time values.

        Sequence dynamics report every time point of :meth:`rates` (``times``: ``None`` or ``"all"`` for all of
        them, else a subset of :meth:`readout_times`); the others have no time (``(rates, None)``).
        """
        if not self.sequences:
            return self.rates(circuit, weights, probes, regions), None
        rates, values = self.rates(circuit, weights, probes, regions, time=True), self.readout_times(circuit)
        if times is None or (isinstance(times, str) and times == "all"):
            return rates, values
        asked = np.atleast_1d(np.asarray(times, dtype=float))
        where = [np.flatnonzero(np.isclose(values, t)) for t in asked.ravel()]
        if asked.ndim != 1 or not asked.size or any(w.size != 1 for w in where) or np.any(np.diff(asked) <= 0):
            raise ParameterError(f"The 'times' parameter must be increasing values of {values.tolist()} "
                                 f"({self.time_units(circuit)}), 'all' or None. Got {asked.tolist()} instead.")
        index = np.concatenate(where)
        return {r: v[..., index, :] for r, v in rates.items()}, values[index]

    def simulate_extras(self, circuit: Circuit, weights: Mapping[str, torch.Tensor], probes: torch.Tensor,
                        rates: Mapping[str, torch.Tensor], times: np.ndarray | None) -> tuple[dict, dict, dict]:
        """What :func:`neurosubset.simulate` adds for this dynamics: ``(variables, coords, attrs)``."""
        return {}, {}, {}

    # ------------------------------------------------------------------ Jacobians
    def closed_adjoint(self, circuit: Circuit) -> bool:
        """Whether :meth:`adjoint_jacobian` gives the Jacobian in closed form (no autograd)."""
        return False

    def adjoint_layout(self, circuit: Circuit, alloc: Allocation, *, hot: bool = False) -> dict:
        """Per plastic synapse, where it sits in the adjoint's indexing (closed-form dynamics only); ``hot``: the
        layout of the solvers' batched map, where a dynamics may choose a cheaper factorisation."""
        raise NotImplementedError(f"dynamics {self.name!r} has no closed-form adjoint")

    def adjoint_jacobian(self, circuit: Circuit, layout: dict, weights: Mapping[str, torch.Tensor],
                         probes: torch.Tensor, *, with_outputs: bool = False):
        """Closed-form ``dF/dtheta`` ``(problem, E, M)`` (and the outputs ``(problem, E)`` with ``with_outputs``)."""
        raise NotImplementedError(f"dynamics {self.name!r} has no closed-form adjoint")

    def adjoint_system(self, circuit: Circuit, layout: dict, frozen: Mapping[str, torch.Tensor]) -> dict | None:
        """The frozen part of what :meth:`adjoint_jacobian` assembles at every call, built once per batch of
        problems (``frozen``: weight name -> ``(P, n_post, n_pre)``, zero at plastic entries), for
        :meth:`system_jacobian`; None where the dynamics keeps none (the default: every call assembles)."""
        return None

    def system_jacobian(self, circuit: Circuit, layout: dict, system: dict, theta: torch.Tensor,
                        probes: torch.Tensor, *, with_outputs: bool = False):
        """:meth:`adjoint_jacobian` at plastic values ``theta`` ``(P, M)`` from :meth:`adjoint_system`'s frozen
        part (over the same ``P`` problems) instead of assembled weights."""
        raise NotImplementedError(f"dynamics {self.name!r} keeps no frozen adjoint system")

    def tangent_jacobian(self, circuit: Circuit) -> bool:
        """Whether :meth:`tangents` gives the exact Jacobian of the discretised map (forward sensitivities)."""
        return False

    def tangents(self, circuit: Circuit, weights: Mapping[str, torch.Tensor], probes: torch.Tensor,
                 index: Mapping[str, torch.Tensor], size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Outputs ``(..., E)`` and ``dF/dtheta`` ``(..., E, M)`` by forward sensitivities."""
        raise NotImplementedError(f"dynamics {self.name!r} has no forward sensitivities")

    def affine_by_structure(self, circuit: Circuit, alloc: Allocation) -> bool | None:
        """Whether outputs are affine in the plastic weights when the structure alone says so, else None (then
        :func:`~neurosubset.dynamics.is_affine` tests second differences). ReLU: affine iff every plastic synapse
        targets an output region (read-outs are linear; anything upstream passes a ReLU)."""
        if circuit.nonlinearity == "relu":
            return all(circuit.region[circuit.projection[k].post].role == "output"
                       for k, v in alloc.masks.items() if v.any())
        return None

    # ------------------------------------------------------------------ exact ranks
    def rank_method(self, circuit: Circuit) -> str:
        """What the exact-rank certificate can do with the circuit, one of :data:`RANK_METHODS`: ``"gfp"`` ranks
        over GF(p) (linear and :attr:`rational`: :meth:`mod_adjoint`, :meth:`entry_degree`), ``"float"`` float
        ranks that decide (analytic outputs: a deficit proves MP = 0), ``"none"`` no verdict (ReLU: piecewise)."""
        if circuit.nonlinearity == "relu":
            return "none"
        return "gfp" if self.rational and circuit.nonlinearity == "linear" else "float"

    def entry_degree(self, circuit: Circuit) -> int:
        """Degree of the Jacobian's entries as polynomials in the point (Schwartz–Zippel bound of GF(p) ranks)."""
        raise NotImplementedError(f"dynamics {self.name!r} has no polynomial outputs")

    def mod_adjoint(self, circuit: Circuit, weights: Mapping[str, np.ndarray], xs: np.ndarray, mat, to_numpy,
                    layout: dict):
        """Adjoints and presynaptic activity over GF(p) at an integer point (``mat``/``to_numpy`` convert to and
        from ``nmod_mat``): ``(G (T, n_out, N), act (T, N + n_in, m), last (N + n_in, m) or None)``, as the
        float adjoint's, ``last`` what read-outs of the last step see."""
        raise NotImplementedError(f"dynamics {self.name!r} has no GF(p) adjoint")

    # ------------------------------------------------------------------ stability and cost
    def stability(self, circuit: Circuit) -> Stability | None:
        """The stability criterion of the circuit's steady state, or None where there is none to keep."""
        return None

    def local_stability(self, circuit: Circuit, weights: Mapping[str, torch.Tensor],
                        probes: torch.Tensor) -> np.ndarray | None:
        """Reported (never required) stability of students without a steady state to keep, ``(...)`` on the steady
        scale (``< 1`` locally stable), or None where there is nothing to report."""
        return None

    def factor_size(self, circuit: Circuit) -> int:
        """Order of the dense matrix a trial factorises (``I - W`` of steady circuits), 0 for none: the memory
        guards count ``n^2`` floats per problem for it."""
        return 0

    def spec_memory_terms(self, circuit: Circuit) -> dict[str, int]:
        """Bytes the spec check itself needs beyond the weight matrices (eigen-solves)."""
        return {}


_REGISTRY: dict[str, Dynamics] = {}


def register(cls: type[Dynamics]) -> type[Dynamics]:
    """Register a :class:`Dynamics` subclass under its ``name`` (a class decorator).

    Its name becomes a valid ``dynamics`` of specs and TOML files. Registering another class under a taken name
    replaces it (the test suite's toy dynamics do so on purpose, nothing else should).
    """
    if not (isinstance(cls, type) and issubclass(cls, Dynamics)) or not cls.name:
        raise ParameterError(f"register takes a Dynamics subclass with a non-empty 'name'. Got {cls!r}.")
    _REGISTRY[cls.name] = cls()
    return cls


def unregister(name: str) -> None:
    """Remove a dynamics registered with :func:`register` (the four built-in ones stay).

    Raises
    ------
    ParameterError
        ``name`` is not registered, or is built in.
    """
    if name not in _REGISTRY or type(_REGISTRY[name]).__module__.startswith("neurosubset.dynamics."):
        raise ParameterError(f"unregister takes the name of a dynamics registered outside the package; "
                             f"{name!r} is {'built in' if name in _REGISTRY else 'not registered'}.")
    del _REGISTRY[name]


def names() -> tuple[str, ...]:
    """The registered dynamics names, in registration order."""
    return tuple(_REGISTRY)


def resolve(dynamics: Dynamics | str) -> Dynamics:
    """The registered :class:`Dynamics` for a name (an instance passes through).

    Raises
    ------
    CircuitSpecError
        An unknown name, listing the registered ones.
    """
    if isinstance(dynamics, Dynamics):
        return dynamics
    if isinstance(dynamics, str) and dynamics in _REGISTRY:
        return _REGISTRY[dynamics]
    raise CircuitSpecError(f"The 'dynamics' parameter must be one of {list(_REGISTRY)}. Got {dynamics!r} instead.")
