"""Circuits: named regions, projections between them, structural sparsity and the weight distribution.

A :class:`Circuit` is a frozen specification that holds no tensors. Its weights are a ``dict`` mapping each
projection's name to an array of shape ``(n_post, n_pre)`` (a row is one postsynaptic neuron's input synapses).

Dynamics (``x`` the probe, ``phi`` the nonlinearity of hidden regions, output regions are linear read-outs):

- ``"feedforward"``: the projection graph is a DAG; ``h_r = phi(sum_{q -> r} W_{q->r} h_q)`` in topological
  order, input regions hold slices of ``x``; outputs ``y_o = sum_{q -> o} W_{q->o} h_q``.
- ``"discrete"``: ``T = steps`` synchronous updates from ``h(0) = 0``:
  ``h_r(t) = phi(sum_{hidden q} W h_q(t-1) + sum_{input q} W x_q(t))``; read out ``y = sum W h(T)`` (plus input
  projections from ``x(T)``). A probe is a sequence of ``T`` input vectors.
- ``"steady"``: the fixed point ``r = W_rec r + W_in x`` over all non-input neurons, i.e.
  ``r = (I - W_rec)^{-1} W_in x`` (linear only): the fixed point of ``tau dr/dt = -r + W_rec r + W_in x``,
  stable iff ``max Re(eig W_rec) < 1``; specs whose teacher draws are mostly unstable are rejected.
- ``"continuous"``: ``T dh/dt = -h + phi(W_rec h + W_in x(t))`` over the hidden neurons for ``duration`` (s), ``x(t)``
  constant over ``steps`` intervals, outputs read out at the ``readout`` times (default the end), concatenated;
  ``tau``, ``dt``, the exact (linear) and RK4 integrators and the checks: :mod:`neurosubset._continuous`.

Initial weights: entry ``(i, j)`` of projection ``pre->post`` is present with probability ``p`` (fixed by the
circuit's structural ``seed``) and drawn ``N(0, gain^2 / (p * n_pre))`` (variance over the expected in-degree).
A region with ``sign = +1`` or ``-1`` (Dale's law) makes its outgoing weights ``sign * |N(...)|``.
Data-given structure (``Projection.synapses``) and fixed projections (``Projection.weights``): see connectivity.py.

Block layout, defined here once: a neuron vector concatenates the regions of some roles in declaration order.
:meth:`Circuit.slices` says where each region sits in one, :meth:`Circuit.block_slices` where each weight sits in
the block matrix between two, and :meth:`Circuit.init_scale` gives the initial SD of each plastic synapse in the
order of the plastic values ``theta``.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from ._checks import AllocationError, CircuitSpecError, ParameterError, check_choice, check_int, check_names
from ._spec import DYNAMICS as DYNAMICS
from ._spec import NONLINEARITIES as NONLINEARITIES
from ._spec import ROLES as ROLES
from ._spec import Projection as Projection
from ._spec import Region as Region
from . import _continuous
from ._stability import SpecStability, check_steady_spec, spec_stability, stability_applies
from .connectivity import circuit_arguments, init_sd, resolve_connectivity_file, triples_to_dense
from ._spec import check_graph, dumps_toml, from_spec, loads_toml, read_toml, to_spec, topological_order


@dataclass(frozen=True)
class Circuit:
    """A circuit specification: regions, projections, dynamics. Validated when built; holds no tensors.

    Parameters
    ----------
    regions : tuple of Region
    projections : tuple of Projection
    dynamics : {"feedforward", "discrete", "steady", "continuous"}
    steps : int
        Number of time steps ``T`` for ``"discrete"`` dynamics, of input intervals for ``"continuous"``.
    nonlinearity : {"linear", "relu", "tanh", "softplus"}
        Applied to hidden regions (``"steady"`` must be linear; tanh and softplus need ``"continuous"``).
    seed : int
        Seed of the structural sparsity (which synapses exist).
    name : str
        A label stored with results.
    tau, duration, dt, readout : ``"continuous"`` only (seconds; ``tau`` a number or a dict per hidden region)

    Examples
    --------
    >>> c = Circuit.from_toml("circuits/ca3_ca1.toml")      # doctest: +SKIP
    >>> c.weight_names, c.shape("CA3->CA1")                 # doctest: +SKIP
    """

    regions: tuple[Region, ...]
    projections: tuple[Projection, ...]
    dynamics: str = "feedforward"
    steps: int = 1
    nonlinearity: str = "linear"
    seed: int = 0
    name: str = "circuit"
    tau: float | tuple[tuple[str, float], ...] | None = None  # continuous only (s); a dict is stored as pairs
    duration: float | None = None
    dt: float | None = None
    readout: tuple[float, ...] | None = None

    # ------------------------------------------------------------------ validation
    def __post_init__(self) -> None:
        object.__setattr__(self, "regions", tuple(self.regions))
        object.__setattr__(self, "projections", tuple(self.projections))
        check_choice("dynamics", self.dynamics, DYNAMICS, error=CircuitSpecError)
        check_choice("nonlinearity", self.nonlinearity, NONLINEARITIES, error=CircuitSpecError)
        object.__setattr__(self, "steps", check_int("steps", self.steps, minimum=1, error=CircuitSpecError))
        object.__setattr__(self, "seed", check_int("seed", self.seed, minimum=0, error=CircuitSpecError))
        _continuous.check_fields(self)  # tau, duration, dt, readout, nonlinearity: checked and normalised
        check_graph(self.regions, self.projections)
        _check_circuit_memory(self)  # before any dense matrix or eigen-solve: refuse what the machine cannot hold
        if self.dynamics == "feedforward":
            topological_order(self.regions, self.projections)  # raises on cycles
        if self.dynamics == "steady" and self.nonlinearity != "linear":
            raise CircuitSpecError("'steady' dynamics needs nonlinearity 'linear' (the fixed point of a "
                                   f"nonlinear circuit is not unique). Got {self.nonlinearity!r}.")
        if stability_applies(self):  # steady: max Re(eig W) < 1; linear continuous: max Re eig(T^-1 (W - I)) < 0
            # judged on teacher draws; refused when most draws are unstable (inhibition-stabilized circuits, radius
            # > 1 with real parts < 1, are accepted)
            object.__setattr__(self, "stability", check_steady_spec(self))

    # ------------------------------------------------------------------ derived structure
    @cached_property
    def region(self) -> dict[str, Region]:
        """Regions by name."""
        return {r.name: r for r in self.regions}

    @cached_property
    def order(self) -> tuple[str, ...]:
        """Region evaluation order (topological for feedforward, declaration order otherwise)."""
        if self.dynamics == "feedforward":
            return tuple(topological_order(self.regions, self.projections))
        return tuple(r.name for r in self.regions)

    @property
    def weight_names(self) -> tuple[str, ...]:
        """Names of the weight matrices, one per projection, in declaration order."""
        return tuple(p.name for p in self.projections)

    @cached_property
    def projection(self) -> dict[str, Projection]:
        """Projections by weight name."""
        return {p.name: p for p in self.projections}

    def projections_into(self, region: str) -> tuple[Projection, ...]:
        """All projections whose postsynaptic region is ``region``."""
        return tuple(p for p in self.projections if p.post == region)

    def shape(self, name: str) -> tuple[int, int]:
        """Shape ``(n_post, n_pre)`` of weight ``name``."""
        if name not in self.projection:
            check_names("name", [name], self.weight_names, what="Weight")
        p = self.projection[name]
        return (self.region[p.post].size, self.region[p.pre].size)

    # ------------------------------------------------------------------ block layout
    def slices(self, roles: str | Iterable[str] = ROLES) -> dict[str, slice]:
        """Where each region sits in the neuron vector of the regions with a role in ``roles``.

        Parameters
        ----------
        roles : str or iterable of {"input", "hidden", "output"}
            The vector concatenates, in declaration order, the regions whose role is one of these: ``"input"`` is
            one probe vector ``x``, ``("hidden", "output")`` the rates ``r`` of ``r = W_rec r + W_in x``.

        Returns
        -------
        dict
            Region name -> ``slice`` of that vector, in declaration order.

        Examples
        --------
        >>> linear_rnn(n=6, n_in=2, n_out=1, steps=3).slices(("hidden", "output"))   # doctest: +SKIP
        {'rec': slice(0, 6, None), 'out': slice(6, 7, None)}
        """
        key = _roles(roles)
        if key not in self._slices:
            self._slices[key] = _concatenate((r.name, r.size) for r in self.regions if r.role in key)
        return dict(self._slices[key])

    @cached_property
    def _slices(self) -> dict[tuple[str, ...], dict[str, slice]]:
        return {}

    def n_neurons(self, roles: str | Iterable[str] = ROLES) -> int:
        """Length of the neuron vector of the regions with a role in ``roles`` (see :meth:`slices`)."""
        return sum(s.stop - s.start for s in self.slices(roles).values())

    def block_slices(self, rows: str | Iterable[str], cols: str | Iterable[str]) -> dict[str, tuple[slice, slice]]:
        """Where each weight sits in the block matrix that maps the ``cols`` neuron vector onto the ``rows`` one.

        Parameters
        ----------
        rows, cols : str or iterable of {"input", "hidden", "output"}
            Roles of the postsynaptic (row) and presynaptic (column) neuron vectors, as in :meth:`slices`.

        Returns
        -------
        dict
            Weight name -> ``(post, pre)`` slices, ``post`` of ``slices(rows)`` and ``pre`` of ``slices(cols)``,
            for every projection between those regions, in declaration order: ``A[post, pre] = weights[name]``
            fills the ``(n_neurons(rows), n_neurons(cols))`` matrix.
        """
        post, pre = self.slices(rows), self.slices(cols)
        return {p.name: (post[p.post], pre[p.pre]) for p in self.projections if p.post in post and p.pre in pre}

    def offsets(self, names: Sequence[str]) -> dict[str, int]:
        """Start index of each region in the concatenation of regions ``names`` (in that order).

        :meth:`slices` gives the role-based vectors the toolkit uses; this takes any order of region names.
        """
        names = list(names)
        check_names("names", names, self.region, what="Region")
        return {n: s.start for n, s in _concatenate((n, self.region[n].size) for n in names).items()}

    def init_scale(self, plastic: Any) -> np.ndarray:
        """Initial standard deviation of each plastic synapse, in the order of the plastic values ``theta``.

        Parameters
        ----------
        plastic : Allocation or dict
            An allocation, or weight name -> number of plastic synapses (int) or bool mask ``(n_post, n_pre)``;
            weights not named have none.

        Returns
        -------
        numpy.ndarray
            ``(M,)`` float64: :attr:`init_std` of each weight repeated over its plastic synapses, weights in
            declaration order (the layout of ``theta``, see :attr:`Allocation.indices`).
        """
        counts = getattr(plastic, "masks", plastic)
        if not isinstance(counts, Mapping):
            raise AllocationError(f"The 'plastic' parameter must be an Allocation or a mapping of weight name -> "
                                  f"count or mask. Got {type(plastic).__name__}.")
        check_names("plastic", counts, self.weight_names, what="Weight", error=AllocationError)
        parts = []
        for name in self.weight_names:
            n = counts.get(name, 0)
            if np.ndim(n):
                if np.shape(n) != self.shape(name):
                    raise AllocationError(f"The mask for weight {name!r} must have shape {self.shape(name)} "
                                          f"(n_post, n_pre). Got {np.shape(n)} instead.")
                parts.append(self.init_sd[name][np.asarray(n, dtype=bool)])  # row-major: the order of theta
                continue
            if n and np.unique(self.init_sd[name][self.structure[name]]).size > 1:  # init 'count'
                raise AllocationError(f"plastic[{name!r}]: per-synapse init SDs (init 'count') need a bool mask.")
            parts.append(np.full(check_int(f"plastic[{name!r}]", n, minimum=0, error=AllocationError),
                                 self.init_std[name]))
        return np.concatenate(parts)

    @cached_property
    def input_regions(self) -> tuple[str, ...]:
        return tuple(r.name for r in self.regions if r.role == "input")

    @cached_property
    def output_regions(self) -> tuple[str, ...]:
        return tuple(r.name for r in self.regions if r.role == "output")

    @property
    def n_in(self) -> int:
        """Length of one input vector (input regions concatenated in declaration order)."""
        return self.n_neurons("input")

    @property
    def n_out(self) -> int:
        """Length of one output vector (output regions in declaration order; continuous: once per read-out time)."""
        return self.n_neurons("output") * (len(_continuous.readout_times(self)) if self.dynamics == "continuous" else 1)

    @cached_property
    def structure(self) -> dict[str, np.ndarray]:
        """Which synapses exist: weight name -> bool ``(n_post, n_pre)``, data-given or Bernoulli(p) by ``seed``."""
        out = {}
        for k, p in enumerate(self.projections):
            shape = self.shape(p.name)
            given = p.weights if p.fixed else p.synapses
            if given is not None:
                mask = triples_to_dense(given, shape) != 0
            elif p.p >= 1.0:
                mask = np.ones(shape, dtype=bool)
            else:
                rng = np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=(k,)))
                mask = rng.random(shape) < p.p
            mask.setflags(write=False)
            out[p.name] = mask
        return out

    @cached_property
    def eligible(self) -> dict[str, np.ndarray]:
        """Which synapses may be plastic: :attr:`structure`, with fixed projections all ``False``."""
        return {k: np.zeros_like(v) if self.projection[k].fixed else v for k, v in self.structure.items()}

    @cached_property
    def neurons(self) -> dict[str, tuple[str, ...]]:
        """Region name -> its neuron names (``Region.neurons``, default ``"NAME[i]"``), declaration order."""
        return {r.name: r.neurons or tuple(f"{r.name}[{i}]" for i in range(r.size)) for r in self.regions}

    @cached_property
    def init_std(self) -> dict[str, float]:
        """SD of each weight's initial distribution, ``gain / sqrt(p * n_pre)`` (see :func:`connectivity.init_sd`)."""
        return {p.name: init_sd(p, self.structure[p.name], scalar=True) for p in self.projections}

    @cached_property
    def init_sd(self) -> dict[str, np.ndarray]:
        """Per-synapse initial SD, weight name -> ``(n_post, n_pre)`` float64, 0 where no synapse is drawn."""
        return {p.name: init_sd(p, self.structure[p.name]) for p in self.projections}

    @property
    def n_synapses(self) -> int:
        """Number of structurally present synapses."""
        return int(sum(m.sum() for m in self.structure.values()))

    @cached_property
    def stability(self) -> SpecStability:
        """How often the teacher draws of a steady circuit are unstable, overall and per recurrent loop.

        Computed (and checked) when a steady circuit is built: :func:`neurosubset._stability.check_steady_spec`
        refuses a spec with more than half of 200 draws at ``max Re(eig W) >= 1``. Other dynamics: no draws.
        """
        return spec_stability(self) if stability_applies(self) else SpecStability(0, 0.0, (), (), ())

    @cached_property
    def expected_spectral_radius(self) -> float:
        """Estimated spectral radius of the recurrent (non-input to non-input) weights at initialisation.

        ``max(rho(E[W]), sqrt(rho(Var[W])))``: the outlier of the mean matrix (Dale's law) and the bulk radius of
        a random matrix with the given variance profile. Zero when there is no recurrence.
        """
        neurons = ("hidden", "output")
        n = self.n_neurons(neurons)
        mean = np.zeros((n, n))
        var = np.zeros((n, n))
        for name, block in self.block_slices(neurons, neurons).items():
            sign = self.region[self.projection[name].pre].sign
            std = self.init_sd[name]
            if self.projection[name].fixed:
                mean[block] += triples_to_dense(self.projection[name].weights, self.shape(name))
                continue
            mu, v = (0.0, std**2) if sign is None else (sign * std * np.sqrt(2 / np.pi), std**2 * (1 - 2 / np.pi))
            mean[block] += mu
            var[block] += v
        if n == 0 or not var.any():
            return 0.0
        return float(max(spectral_radius(mean), np.sqrt(spectral_radius(var))))

    # ------------------------------------------------------------------ random draws
    def sample_weights(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Draw one set of weights from the initial distribution.

        Parameters
        ----------
        rng : numpy.random.Generator

        Returns
        -------
        dict
            Weight name -> float64 array ``(n_post, n_pre)``, zero where no synapse exists.
        """
        out = {}
        for p in self.projections:
            shape = self.shape(p.name)
            w = triples_to_dense(p.weights, shape) if p.fixed else rng.standard_normal(shape) * self.init_sd[p.name]
            sign = None if p.fixed else self.region[p.pre].sign  # fixed: the given weights, no draw
            if sign is not None:
                w = sign * np.abs(w)
            out[p.name] = np.where(self.structure[p.name], w, 0.0)
        return out

    def probe_shape(self, m: int) -> tuple[int, ...]:
        """Shape of ``m`` probes: ``(m, n_in)``, or ``(m, steps, n_in)`` for discrete and continuous dynamics."""
        return (m, self.steps, self.n_in) if self.dynamics in ("discrete", "continuous") else (m, self.n_in)

    def sample_probes(self, m: int, rng: np.random.Generator) -> np.ndarray:
        """Draw ``m`` probes with iid N(0, 1) entries, shape :meth:`probe_shape`."""
        return rng.standard_normal(self.probe_shape(m))

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        """Plain-type dictionary in the TOML layout (round-trips through :meth:`from_dict`)."""
        return to_spec(self)

    def to_toml(self) -> str:
        """The specification as TOML text."""
        return dumps_toml(self.to_dict())

    @classmethod
    def from_dict(cls, spec: Mapping[str, Any], *, source: str = "spec", base: str | Path | None = None) -> Circuit:
        """Build a circuit from a TOML-layout mapping, checking every field (a ``connectivity`` file: relative to
        ``base``, see :func:`neurosubset.connectivity.resolve_connectivity_file`)."""
        if "connectivity" in spec:
            spec = resolve_connectivity_file(spec, base=base, source=source)
        return cls(**from_spec(spec, source=source))

    @classmethod
    def from_toml(cls, path: str | Path) -> Circuit:
        """Load and validate a circuit spec from a TOML file (see ``circuits/*.toml``)."""
        return cls.from_dict(read_toml(path), source=str(Path(path)), base=Path(path).parent)

    @classmethod
    def from_connectivity(cls, regions: Sequence[Region], connectivity: Any, **options: Any) -> Circuit:
        """A circuit whose structure comes from data; see :func:`neurosubset.connectivity.circuit_arguments`."""
        return cls(**circuit_arguments(regions, connectivity, **options))

    @classmethod
    def from_toml_text(cls, text: str) -> Circuit:
        """Build a circuit from TOML text (e.g. the ``circuit`` attr of a result Dataset)."""
        return cls.from_dict(loads_toml(text))

    def __repr__(self) -> str:  # regions, projections with p / gain / synapse count (neurosubset._repr)
        from ._repr import circuit_text
        return circuit_text(self)

    def _repr_html_(self) -> str:
        from ._repr import circuit_html
        return circuit_html(self)


def _check_circuit_memory(circuit: Circuit) -> None:
    """Refuse (one line) a spec whose dense weight matrices (structure mask, teacher and student draws) and, for
    steady dynamics, the eigen-solve of the full recurrent matrix exceed the memory available."""
    from ._memory import check_memory

    size = {r.name: r.size for r in circuit.regions}
    dense = sum(size[p.post] * size[p.pre] for p in circuit.projections)
    n = sum(size.values())
    terms = {"weight matrices": 8 * 3 * dense, "eigen-solve": 8 * 4 * n * n if circuit.dynamics == "steady" else 0}
    terms["total"] = sum(terms.values())
    check_memory(f"Circuit {circuit.name!r} ({n} neurons)", terms, lower="the region sizes", error=CircuitSpecError)


def _roles(roles: str | Iterable[str]) -> tuple[str, ...]:
    """``roles`` as a tuple in the order of :data:`ROLES` (the key of a neuron vector's layout)."""
    given = (roles,) if isinstance(roles, str) else tuple(roles)
    for role in given:
        check_choice("roles", role, ROLES, error=ParameterError)
    return tuple(r for r in ROLES if r in given)


def _concatenate(sizes: Iterable[tuple[str, int]]) -> dict[str, slice]:
    """Name -> slice of each ``(name, size)`` block laid end to end, in the given order."""
    out, start = {}, 0
    for name, size in sizes:
        out[name] = slice(start, start + size)
        start += size
    return out


def spectral_radius(a: np.ndarray) -> float:
    """Largest ``|eigenvalue|`` of a square matrix: dense LAPACK up to 300 rows, ARPACK (sparse) above."""
    if not a.any():
        return 0.0
    if a.shape[0] > 300:
        from scipy.sparse import csr_matrix
        from scipy.sparse.linalg import ArpackNoConvergence, eigs

        try:
            vals = eigs(csr_matrix(a), k=1, which="LM", tol=1e-8, maxiter=20 * a.shape[0],
                        v0=np.ones(a.shape[0]), return_eigenvectors=False)
            return float(np.abs(vals).max())
        except ArpackNoConvergence:  # pragma: no cover - rare; fall back to the dense solver
            pass
    return float(np.abs(np.linalg.eigvals(a)).max())


# ---------------------------------------------------------------------- the paper's architectures
def feedforward(sizes: Sequence[int], nonlinearity: str = "linear", *, name: str | None = None) -> Circuit:
    """A layered feed-forward net ``h_l = phi(W_l h_{l-1})``, ``y = W_L h_{L-1}``, no biases.

    Parameters
    ----------
    sizes : sequence of int
        ``[d_0, d_1, ..., d_L]``: input size, hidden sizes, output size (at least two entries).
    nonlinearity : {"linear", "relu"}

    Returns
    -------
    Circuit
        Regions ``L0`` (input) ... ``L{L}`` (output); weights ``"W1"`` ``(d_1, d_0)`` ... ``"WL"``, init
        ``N(0, 1/d_{l-1})``.
    """
    sizes = list(sizes)
    if len(sizes) < 2:
        raise CircuitSpecError(f"The 'sizes' parameter needs at least [d_in, d_out]. Got {sizes!r}.")
    last = len(sizes) - 1
    regions = tuple(Region(f"L{i}", s, "input" if i == 0 else "output" if i == last else "hidden")
                    for i, s in enumerate(sizes))
    projections = tuple(Projection(f"L{i - 1}", f"L{i}", name=f"W{i}") for i in range(1, len(sizes)))
    label = name or f"feedforward_{nonlinearity}_{'-'.join(map(str, sizes))}"
    return Circuit(regions, projections, dynamics="feedforward", nonlinearity=nonlinearity, name=label)


def linear_rnn(n: int, n_in: int, n_out: int, *, steps: int, gain: float = 1.0, name: str | None = None) -> Circuit:
    """The paper's linear RNN: ``h_0 = 0``, ``h_t = W h_{t-1} + B x_t`` (t = 1..T), ``y = C h_T``.

    Parameters
    ----------
    n, n_in, n_out : int
        Recurrent, input and output sizes.
    steps : int
        ``T``, the length of each probe sequence.
    gain : float
        ``W ~ N(0, gain^2 / n)``; ``B ~ N(0, 1/n_in)``, ``C ~ N(0, 1/n)``.

    Returns
    -------
    Circuit
        Weights ``"B"`` ``(n, n_in)``, ``"W"`` ``(n, n)``, ``"C"`` ``(n_out, n)``; discrete dynamics.
    """
    regions = (Region("in", n_in, "input"), Region("rec", n, "hidden"), Region("out", n_out, "output"))
    projections = (Projection("in", "rec", name="B"), Projection("rec", "rec", gain=gain, name="W"),
                   Projection("rec", "out", name="C"))
    label = name or f"linear_rnn_n{n}_in{n_in}_out{n_out}_T{steps}"
    return Circuit(regions, projections, dynamics="discrete", steps=steps, nonlinearity="linear", name=label)
