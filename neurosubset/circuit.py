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
  ``tau``, ``dt``, the exact (linear) and RK4 integrators and the checks: :mod:`neurosubset.dynamics.continuous`.

Initial weights: entry ``(i, j)`` of projection ``pre->post`` is present with probability ``p`` (fixed by the
circuit's structural ``seed``) and drawn ``N(0, gain^2 / (p * n_pre))`` (variance over the expected in-degree).
A region with ``sign = +1`` or ``-1`` (Dale's law) makes its outgoing weights ``sign * |N(...)|``.
Data-given structure (``Projection.synapses``) and fixed projections (``Projection.weights``): see connectivity.py.

The index layout (:mod:`neurosubset.layout`), the weight distribution (:mod:`neurosubset.distribution`) and the
equations (:mod:`neurosubset.dynamics`) live beside this module; :meth:`Circuit.blocks` assembles the weights of
any two lists of regions into one operator.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from ._checks import CircuitSpecError, check_choice, check_int, check_names
from ._spec import NONLINEARITIES as NONLINEARITIES
from ._spec import ROLES as ROLES
from ._spec import Projection as Projection
from ._spec import Region as Region
from ._spec import check_graph, dumps_toml, from_spec, loads_toml, read_toml, to_spec
from .connectivity import circuit_arguments, resolve_connectivity_file, triples_to_dense
from .distribution import WeightDistribution
from .dynamics import Dynamics
from .dynamics.base import resolve as resolve_dynamics
from .dynamics.stability import SpecStability, check_steady_spec, spec_stability, stability_applies
from .layout import IndexLayout


@dataclass(frozen=True)
class Circuit(IndexLayout, WeightDistribution):
    """A circuit specification: regions, projections, dynamics. Validated when built; holds no tensors.

    The index layout of its neurons (:class:`~neurosubset.layout.IndexLayout`) and its weight distribution
    (:class:`~neurosubset.distribution.WeightDistribution`) are its bases; its equations are the ``dynamics``
    object (:class:`neurosubset.dynamics.Dynamics`).

    Parameters
    ----------
    regions : tuple of Region
    projections : tuple of Projection
    dynamics : Dynamics or {"feedforward", "discrete", "steady", "continuous"}
        The equations; a registered name is resolved to its object (:func:`neurosubset.dynamics.register` adds
        names). Stored as the object: ``circuit.dynamics.name`` is the string.
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
    dynamics: Dynamics | str = "feedforward"
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
        object.__setattr__(self, "dynamics", resolve_dynamics(self.dynamics))
        check_choice("nonlinearity", self.nonlinearity, NONLINEARITIES, error=CircuitSpecError)
        object.__setattr__(self, "steps", check_int("steps", self.steps, minimum=1, error=CircuitSpecError))
        object.__setattr__(self, "seed", check_int("seed", self.seed, minimum=0, error=CircuitSpecError))
        check_graph(self.regions, self.projections)
        _check_circuit_memory(self)  # before any dense matrix or eigen-solve: refuse what the machine cannot hold
        self.dynamics.validate(self)  # e.g. tau, duration, dt, readout, nonlinearity; a DAG for feedforward
        _check_outputs_reached(self)  # by synapses that exist, not only by declared projections
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
        return self.dynamics.order(self)

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
            if not p.autapses:  # a region onto itself without self-synapses (the other draws unchanged)
                np.fill_diagonal(mask, False)
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

    @property
    def n_synapses(self) -> int:
        """Number of structurally present synapses."""
        return int(sum(m.sum() for m in self.structure.values()))

    @cached_property
    def stability(self) -> SpecStability:
        """How often the teacher draws of a steady circuit are unstable, overall and per recurrent loop.

        Computed (and checked) when a steady circuit is built: :func:`neurosubset.dynamics.stability.check_steady_spec`
        refuses a spec with more than half of 200 draws at ``max Re(eig W) >= 1``. Other dynamics: no draws.
        """
        return spec_stability(self) if stability_applies(self) else SpecStability(0, 0.0, (), (), ())

    def blocks(self, weights: Mapping[str, Any], rows: str | Sequence[str], cols: str | Sequence[str]) -> Any:
        """The weights from the ``cols`` regions onto the ``rows`` ones as one block matrix ``(..., N_rows, N_cols)``.

        ``rows`` / ``cols``: region names or roles (``"hidden"``, ``("hidden", "output")``); ``weights``: weight
        name -> ``(..., n_post, n_pre)`` torch tensors or numpy arrays. See
        :func:`neurosubset.dynamics.blocks.block_matrix`, the one assembly every part of the package uses.
        """
        from .dynamics.blocks import block_matrix

        return block_matrix(self, weights, rows, cols)

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        """Plain-type dictionary in the TOML layout (round-trips through :meth:`from_dict`)."""
        return to_spec(self)

    def to_toml(self) -> str:
        """The specification as TOML text."""
        return dumps_toml(self.to_dict())

    @classmethod
    def from_dict(cls, spec: Mapping[str, Any], *, source: str = "spec", base: str | Path | None = None) -> Circuit:
        """Build a circuit from a mapping in the TOML layout (what a ``circuits/*.toml`` file holds), checking every
        field.

        Parameters
        ----------
        spec : mapping
            ``name``, ``dynamics``, ``regions`` (name -> ``{size, role, sign, neurons}``), ``projections`` (a list
            of ``{pre, post, p, gain, name, synapses, init, weights}``), and the other top-level fields of the TOML
            layout (the user guide's "Write a circuit" lists every field). Unknown keys are refused.
        source : str
            How errors name the spec (a file name).
        base : str or Path, optional
            Folder that a ``connectivity`` file is relative to (see
            :func:`neurosubset.connectivity.resolve_connectivity_file`).

        Returns
        -------
        Circuit

        Raises
        ------
        CircuitSpecError
            One line naming the field and the allowed values.

        Examples
        --------
        >>> import neurosubset as ns
        >>> c = ns.Circuit.from_dict({
        ...     "dynamics": "steady",
        ...     "regions": {"X": {"size": 4, "role": "input"}, "E": {"size": 8, "sign": 1},
        ...                 "I": {"size": 2, "sign": -1}, "OUT": {"size": 1, "role": "output"}},
        ...     "projections": [{"pre": "X", "post": "E"}, {"pre": "E", "post": "I", "p": 0.5},
        ...                     {"pre": "I", "post": "E", "p": 0.5}, {"pre": "E", "post": "OUT"}]})
        >>> c.weight_names
        ('X->E', 'E->I', 'I->E', 'E->OUT')
        >>> ns.Circuit.from_dict({"regions": {"X": {"size": 0, "role": "input"}}})
        Traceback (most recent call last):
        ...
        neurosubset._checks.CircuitSpecError: ...regions.X.size...
        """
        if "connectivity" in spec:
            spec = resolve_connectivity_file(spec, base=base, source=source)
        return cls(**from_spec(spec, source=source))

    @classmethod
    def from_toml(cls, path: str | Path) -> Circuit:
        """Load and validate a circuit spec from a TOML file (see ``circuits/*.toml``)."""
        return cls.from_dict(read_toml(path), source=str(Path(path)), base=Path(path).parent)

    @classmethod
    def from_connectivity(cls, regions: Sequence[Region], connectivity: Any, **options: Any) -> Circuit:
        """A circuit whose structure comes from data: connectivity matrices or an edge list.

        Which synapses exist is the data (counts > 0), not a Bernoulli draw; each projection keeps its synapses as
        ``(post, pre, count)`` triples, so :meth:`to_toml` writes the data inline.

        Parameters
        ----------
        regions : sequence of Region
            Sizes, roles, Dale signs and (for edge lists and named matrices) neuron names, e.g.
            ``Region("E", 4, sign=1, neurons=("e0", "e1", "e2", "e3"))``.
        connectivity : mapping, array, pandas.DataFrame, str or Path
            Synapse counts (>= 0), as one of: a mapping ``"PRE->POST"`` -> ``(n_post, n_pre)`` array (numpy or
            scipy.sparse), one per projection; one ``(N, N)`` array over all neurons with ``labels=`` (region of
            each neuron) or ``names=``; or an edge list, a DataFrame or CSV file with columns ``pre``, ``post``,
            ``count`` (neuron names) and an optional ``sign`` (checked against the regions' signs).
        **options
            ``labels``, ``names``, ``rows`` (``"post"``: rows are postsynaptic, or ``"pre"``), ``gain`` (one
            number, or projection name -> gain), ``init`` (``"gain"``: one SD per projection; ``"count"``: SD
            proportional to the count), ``projections`` (further fixed projections), ``dynamics`` (default
            ``"steady"``), ``steps``, ``nonlinearity``, ``seed``, ``name``; see
            :func:`neurosubset.connectivity.circuit_arguments`.

        Returns
        -------
        Circuit

        Raises
        ------
        CircuitSpecError
            An unknown neuron or region name, a shape that does not match the regions, a negative count (one line
            naming the field and what is allowed).

        Examples
        --------
        >>> import numpy as np
        >>> import neurosubset as ns
        >>> regions = [ns.Region("S", 2, role="input"), ns.Region("E", 3, sign=1), ns.Region("M", 1, role="output")]
        >>> counts = {"S->E": np.array([[1, 0], [2, 1], [0, 1]]), "E->M": np.array([[1, 1, 1]])}
        >>> c = ns.Circuit.from_connectivity(regions, counts)
        >>> c.structure["S->E"].astype(int)
        array([[1, 0],
               [1, 1],
               [0, 1]])
        """
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


def _check_outputs_reached(circuit: Circuit) -> None:
    """Refuse a circuit whose output regions no input reaches through projections that drew at least one synapse
    (``p`` tiny, an all-zero matrix): their outputs are 0 whatever the weights, so every student would trivially
    match (MP = 1, "exact"). :func:`neurosubset._spec.check_graph` checks the declared projections; this checks the
    drawn structure."""
    from .dynamics.sparse_map import WeightsLayout, choose_layout, structure_of

    if choose_layout(circuit) is WeightsLayout.SPARSE:  # index arrays: no dense masks at load (issue 32)
        empty = [name for name, (rows, _) in structure_of(circuit).items() if rows.size == 0]
    else:
        empty = [p.name for p in circuit.projections if not circuit.structure[p.name].any()]
    if not empty:
        return
    reached = set(circuit.input_regions)
    live = [p for p in circuit.projections if p.name not in empty]
    grew = True
    while grew:
        new = {p.post for p in live if p.pre in reached} - reached
        reached |= new
        grew = bool(new)
    dead = [o for o in circuit.output_regions if o not in reached]
    if dead:
        raise CircuitSpecError(f"Output region {dead[0]!r} of circuit {circuit.name!r} is reached by no synapse: "
                               f"projection(s) {empty} drew none (structure seed {circuit.seed}; p, an all-zero "
                               f"matrix or file), so its outputs are 0 whatever the weights and every student would "
                               f"trivially match. Raise p, change the seed or give the projection synapses.")


def _check_circuit_memory(circuit: Circuit) -> None:
    """Refuse (one line) a spec whose dense weight matrices (structure mask, teacher and student draws) and, for
    steady dynamics, the eigen-solve of the full recurrent matrix exceed the memory available."""
    from ._memory import check_memory

    from .dynamics.sparse_map import WeightsLayout, choose_layout, expected_synapses

    size = {r.name: r.size for r in circuit.regions}
    dense = sum(size[p.post] * size[p.pre] for p in circuit.projections)
    n = sum(size.values())
    steps = int(getattr(circuit, "steps", 1) or 1)
    # the sparse layout (large sparse steady linear circuits) holds values and two int64 indices per synapse
    weights = (("weight values and indices", (8 * 3 + 16) * expected_synapses(circuit))
               if choose_layout(circuit) is WeightsLayout.SPARSE else ("weight matrices", 8 * 3 * dense))
    terms = {weights[0]: int(weights[1]), "eigen-solve": 0, **circuit.dynamics.spec_memory_terms(circuit),
             # any fit or simulation holds at least one probe's inputs and forward states over the time steps
             # (steps = 10^9 asked for 29.8 GiB of probes alone before this was counted)
             "trajectory of one probe": int(8 * steps * (sum(size[r.name] for r in circuit.regions
                                                              if r.role == "input") + 4 * n))}
    _check_rk4_steps(circuit, n)
    terms["total"] = sum(terms.values())
    check_memory(f"Circuit {circuit.name!r} ({n} neurons, {steps:,} steps)", terms,
                 lower="the region sizes or 'steps'", error=CircuitSpecError)


MAX_RK4_STEPS = 10**6  # duration / dt of a nonlinear continuous circuit: RK4 steps per probe and fit iteration


def _check_rk4_steps(circuit: Circuit, n: int) -> None:
    """Refuse (one line) a nonlinear continuous circuit whose ``duration / dt`` exceeds :data:`MAX_RK4_STEPS`: every
    forward pass takes that many RK4 steps in turn, and the adjoint stores each (4 stages x neurons, float64);
    ``duration = 1000, dt = 1e-7`` ran unbounded. Linear circuits are integrated exactly, whatever ``dt``."""
    if getattr(circuit.dynamics, "name", None) != "continuous" or circuit.nonlinearity == "linear":
        return
    try:
        count = float(circuit.duration) / float(circuit.dt)
    except (TypeError, ValueError, ZeroDivisionError):
        return  # not numbers: the dynamics' own checks refuse them in one line
    if np.isfinite(count) and count > MAX_RK4_STEPS:
        stored = 8 * 4 * n * count
        raise CircuitSpecError(f"Circuit {circuit.name!r}: duration / dt = {circuit.duration:g} s / {circuit.dt:g} "
                               f"s = {count:.3g} RK4 steps per probe and fit iteration (about {stored / 1e9:,.0f} GB "
                               f"per probe to store them for the adjoint), more than the {MAX_RK4_STEPS:,} accepted. "
                               f"Raise 'dt' or shorten 'duration'.")


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
