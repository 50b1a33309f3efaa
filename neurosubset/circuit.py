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
  ``r = (I - W_rec)^{-1} W_in x`` (linear only; specs whose recurrent part is unstable are rejected).

Initial weights: entry ``(i, j)`` of projection ``pre->post`` is present with probability ``p`` (fixed by the
circuit's structural ``seed``) and drawn ``N(0, gain^2 / (p * n_pre))`` (variance over the expected in-degree).
A region with ``sign = +1`` or ``-1`` (Dale's law) makes its outgoing weights ``sign * |N(...)|``.
"""
from __future__ import annotations

import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from ._checks import CircuitSpecError, check_choice, check_int, check_real

ROLES = ("input", "hidden", "output")
DYNAMICS = ("feedforward", "discrete", "steady")
NONLINEARITIES = ("linear", "relu")
_SPEC_KEYS = ("name", "dynamics", "steps", "nonlinearity", "seed", "regions", "projections")
_REGION_KEYS = ("size", "role", "sign")
_PROJECTION_KEYS = ("pre", "post", "p", "gain", "name")


@dataclass(frozen=True)
class Region:
    """A population of neurons.

    Parameters
    ----------
    name : str
        Unique region name, e.g. ``"CA3"``.
    size : int
        Number of neurons (>= 1).
    role : {"input", "hidden", "output"}
        Inputs carry the probe, outputs are linear read-outs compared between teacher and student.
    sign : {None, 1, -1}
        Dale's law: the sign of every synapse this region sends. ``None`` leaves signs free.
    """

    name: str
    size: int
    role: str = "hidden"
    sign: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name or "->" in self.name:
            raise CircuitSpecError(f"Region names must be non-empty strings without '->'. Got {self.name!r}.")
        object.__setattr__(self, "size", check_int(f"regions.{self.name}.size", self.size, minimum=1,
                                                   error=CircuitSpecError))
        check_choice(f"regions.{self.name}.role", self.role, ROLES, error=CircuitSpecError)
        check_choice(f"regions.{self.name}.sign", self.sign, (None, 1, -1), error=CircuitSpecError)


@dataclass(frozen=True)
class Projection:
    """All synapses from region ``pre`` onto region ``post``.

    Parameters
    ----------
    pre, post : str
        Region names.
    p : float
        Connection probability in (0, 1]; which synapses exist is fixed by the circuit's ``seed``.
    gain : float
        Weights are drawn ``N(0, gain^2 / (p * n_pre))`` (dimensionless).
    name : str, optional
        Weight name; defaults to ``"PRE->POST"``.
    """

    pre: str
    post: str
    p: float = 1.0
    gain: float = 1.0
    name: str = ""

    def __post_init__(self) -> None:
        label = self.name or f"{self.pre}->{self.post}"
        object.__setattr__(self, "name", label)
        object.__setattr__(self, "p", check_real(f"projections[{label}].p", self.p, low=0.0, high=1.0,
                                                 low_open=True, error=CircuitSpecError))
        object.__setattr__(self, "gain", check_real(f"projections[{label}].gain", self.gain, low=0.0,
                                                    low_open=True, error=CircuitSpecError))


@dataclass(frozen=True)
class Circuit:
    """A circuit specification: regions, projections, dynamics. Validated when built; holds no tensors.

    Parameters
    ----------
    regions : tuple of Region
    projections : tuple of Projection
    dynamics : {"feedforward", "discrete", "steady"}
    steps : int
        Number of time steps ``T`` for ``"discrete"`` dynamics (ignored otherwise).
    nonlinearity : {"linear", "relu"}
        Applied to hidden regions (``"steady"`` must be linear).
    seed : int
        Seed of the structural sparsity (which synapses exist).
    name : str
        A label stored with results.

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

    # ------------------------------------------------------------------ validation
    def __post_init__(self) -> None:
        object.__setattr__(self, "regions", tuple(self.regions))
        object.__setattr__(self, "projections", tuple(self.projections))
        check_choice("dynamics", self.dynamics, DYNAMICS, error=CircuitSpecError)
        check_choice("nonlinearity", self.nonlinearity, NONLINEARITIES, error=CircuitSpecError)
        object.__setattr__(self, "steps", check_int("steps", self.steps, minimum=1, error=CircuitSpecError))
        object.__setattr__(self, "seed", check_int("seed", self.seed, minimum=0, error=CircuitSpecError))
        names = [r.name for r in self.regions]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise CircuitSpecError(f"Region names must be unique. Duplicated: {sorted(dup)}.")
        by_name = {r.name: r for r in self.regions}
        if not any(r.role == "input" for r in self.regions):
            raise CircuitSpecError("A circuit needs at least one region with role 'input'.")
        if not any(r.role == "output" for r in self.regions):
            raise CircuitSpecError("A circuit needs at least one region with role 'output'.")
        seen: set[str] = set()
        for proj in self.projections:
            for end in ("pre", "post"):
                region = getattr(proj, end)
                if region not in by_name:
                    raise CircuitSpecError(f"Region {region!r} (projections[{proj.name}].{end}) does not exist. "
                                           f"Expected one of {names}.")
            if proj.name in seen:
                raise CircuitSpecError(f"Duplicate projection {proj.name!r}: each projection may appear once.")
            seen.add(proj.name)
            if by_name[proj.post].role == "input":
                raise CircuitSpecError(f"Projection {proj.name!r} targets input region {proj.post!r}; "
                                       f"input regions only carry the probe.")
            if by_name[proj.pre].role == "output":
                raise CircuitSpecError(f"Projection {proj.name!r} starts at output region {proj.pre!r}; "
                                       f"output regions are read-outs and cannot project.")
        for r in self.regions:
            if r.role != "input" and not any(p.post == r.name for p in self.projections):
                raise CircuitSpecError(f"Region {r.name!r} (role {r.role!r}) receives no projection.")
        if self.dynamics == "feedforward":
            self._topological_order()  # raises on cycles
        if self.dynamics == "steady":
            if self.nonlinearity != "linear":
                raise CircuitSpecError("'steady' dynamics needs nonlinearity 'linear' (the fixed point of a "
                                       f"nonlinear circuit is not unique). Got {self.nonlinearity!r}.")
            radius = self.expected_spectral_radius
            if radius >= 1.0:
                rec = [p.name for p in self.projections if by_name[p.pre].role != "input"]
                raise CircuitSpecError(
                    f"The recurrent part of steady circuit {self.name!r} is unstable: its estimated spectral "
                    f"radius is {radius:.3f} >= 1, so r = W r + input has no stable fixed point. Lower the gains "
                    f"of {rec}.")

    def _topological_order(self) -> list[str]:
        order: list[str] = []
        indeg = {r.name: 0 for r in self.regions}
        for p in self.projections:
            indeg[p.post] += 1
        ready = [r.name for r in self.regions if indeg[r.name] == 0]
        while ready:
            name = ready.pop(0)
            order.append(name)
            for p in self.projections:
                if p.pre == name:
                    indeg[p.post] -= 1
                    if indeg[p.post] == 0:
                        ready.append(p.post)
        if len(order) != len(self.regions):
            cyc = [n for n in indeg if indeg[n] > 0 and self._reaches(n, n)]
            raise CircuitSpecError(f"'feedforward' dynamics needs an acyclic projection graph; regions {cyc} lie "
                                   f"on a cycle. Use dynamics 'discrete' or 'steady' for recurrent circuits.")
        return order

    def _reaches(self, source: str, target: str) -> bool:
        """Whether a directed path of projections leads from ``source`` to ``target`` (length >= 1)."""
        seen, stack = set(), [source]
        while stack:
            node = stack.pop()
            for p in self.projections:
                if p.pre == node:
                    if p.post == target:
                        return True
                    if p.post not in seen:
                        seen.add(p.post)
                        stack.append(p.post)
        return False

    # ------------------------------------------------------------------ derived structure
    @cached_property
    def region(self) -> dict[str, Region]:
        """Regions by name."""
        return {r.name: r for r in self.regions}

    @cached_property
    def order(self) -> tuple[str, ...]:
        """Region evaluation order (topological for feedforward, declaration order otherwise)."""
        if self.dynamics == "feedforward":
            return tuple(self._topological_order())
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

    def offsets(self, names: Sequence[str]) -> dict[str, int]:
        """Start index of each region in the concatenation of regions ``names`` (in that order)."""
        out, start = {}, 0
        for n in names:
            out[n] = start
            start += self.region[n].size
        return out

    def shape(self, name: str) -> tuple[int, int]:
        """Shape ``(n_post, n_pre)`` of weight ``name``."""
        p = self.projection[name]
        return (self.region[p.post].size, self.region[p.pre].size)

    @cached_property
    def input_regions(self) -> tuple[str, ...]:
        return tuple(r.name for r in self.regions if r.role == "input")

    @cached_property
    def output_regions(self) -> tuple[str, ...]:
        return tuple(r.name for r in self.regions if r.role == "output")

    @property
    def n_in(self) -> int:
        """Length of one input vector (input regions concatenated in declaration order)."""
        return sum(self.region[n].size for n in self.input_regions)

    @property
    def n_out(self) -> int:
        """Length of one output vector (output regions concatenated in declaration order)."""
        return sum(self.region[n].size for n in self.output_regions)

    @cached_property
    def structure(self) -> dict[str, np.ndarray]:
        """Which synapses exist: weight name -> bool array ``(n_post, n_pre)``, fixed by ``seed``."""
        out = {}
        for k, p in enumerate(self.projections):
            shape = self.shape(p.name)
            if p.p >= 1.0:
                mask = np.ones(shape, dtype=bool)
            else:
                rng = np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=(k,)))
                mask = rng.random(shape) < p.p
            mask.setflags(write=False)
            out[p.name] = mask
        return out

    @cached_property
    def init_std(self) -> dict[str, float]:
        """Standard deviation of each weight's initial distribution, ``gain / sqrt(p * n_pre)``."""
        return {p.name: p.gain / np.sqrt(p.p * self.region[p.pre].size) for p in self.projections}

    @property
    def n_synapses(self) -> int:
        """Number of structurally present synapses."""
        return int(sum(m.sum() for m in self.structure.values()))

    @cached_property
    def expected_spectral_radius(self) -> float:
        """Estimated spectral radius of the recurrent (non-input to non-input) weights at initialisation.

        ``max(rho(E[W]), sqrt(rho(Var[W])))``: the outlier of the mean matrix (Dale's law) and the bulk radius of
        a random matrix with the given variance profile. Zero when there is no recurrence.
        """
        neurons = [r for r in self.regions if r.role != "input"]
        offset, start = 0, {}
        for r in neurons:
            start[r.name] = offset
            offset += r.size
        mean = np.zeros((offset, offset))
        var = np.zeros((offset, offset))
        for p in self.projections:
            if self.region[p.pre].role == "input":
                continue
            sign = self.region[p.pre].sign
            std = self.init_std[p.name]
            mu, v = (0.0, std**2) if sign is None else (sign * std * np.sqrt(2 / np.pi), std**2 * (1 - 2 / np.pi))
            a, b = start[p.post], start[p.pre]
            (n_post, n_pre) = self.shape(p.name)
            mask = self.structure[p.name]
            mean[a:a + n_post, b:b + n_pre] = mu * mask
            var[a:a + n_post, b:b + n_pre] = v * mask
        if offset == 0 or not var.any():
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
            w = rng.standard_normal(self.shape(p.name)) * self.init_std[p.name]
            sign = self.region[p.pre].sign
            if sign is not None:
                w = sign * np.abs(w)
            out[p.name] = np.where(self.structure[p.name], w, 0.0)
        return out

    def probe_shape(self, m: int) -> tuple[int, ...]:
        """Shape of ``m`` probes: ``(m, n_in)``, or ``(m, steps, n_in)`` for discrete dynamics."""
        return (m, self.steps, self.n_in) if self.dynamics == "discrete" else (m, self.n_in)

    def sample_probes(self, m: int, rng: np.random.Generator) -> np.ndarray:
        """Draw ``m`` probes with iid N(0, 1) entries, shape :meth:`probe_shape`."""
        return rng.standard_normal(self.probe_shape(m))

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        """Plain-type dictionary in the TOML layout (round-trips through :meth:`from_dict`)."""
        regions = {}
        for r in self.regions:
            entry: dict[str, Any] = {"size": r.size, "role": r.role}
            if r.sign is not None:
                entry["sign"] = r.sign
            regions[r.name] = entry
        projections = []
        for p in self.projections:
            entry = {"pre": p.pre, "post": p.post, "p": p.p, "gain": p.gain}
            if p.name != f"{p.pre}->{p.post}":
                entry["name"] = p.name
            projections.append(entry)
        return {"name": self.name, "dynamics": self.dynamics, "steps": self.steps,
                "nonlinearity": self.nonlinearity, "seed": self.seed, "regions": regions,
                "projections": projections}

    def to_toml(self) -> str:
        """The specification as TOML text."""
        import tomli_w

        return tomli_w.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, spec: Mapping[str, Any], *, source: str = "spec") -> Circuit:
        """Build a circuit from a TOML-layout mapping, checking every field."""
        unknown = sorted(set(spec) - set(_SPEC_KEYS))
        if unknown:
            raise CircuitSpecError(f"{source}: unknown top-level keys {unknown}. Expected some of {list(_SPEC_KEYS)}.")
        regions_spec = spec.get("regions")
        if not isinstance(regions_spec, Mapping) or not regions_spec:
            raise CircuitSpecError(f"{source}: 'regions' must be a table of [regions.NAME] entries.")
        regions = []
        for rname, entry in regions_spec.items():
            if not isinstance(entry, Mapping):
                raise CircuitSpecError(f"{source}: regions.{rname} must be a table with keys {list(_REGION_KEYS)}.")
            bad = sorted(set(entry) - set(_REGION_KEYS))
            if bad:
                raise CircuitSpecError(f"{source}: regions.{rname} has unknown keys {bad}. "
                                       f"Expected some of {list(_REGION_KEYS)}.")
            if "size" not in entry:
                raise CircuitSpecError(f"{source}: regions.{rname}.size is missing.")
            regions.append(Region(rname, entry["size"], entry.get("role", "hidden"), entry.get("sign")))
        projections = []
        for k, entry in enumerate(spec.get("projections", [])):
            if not isinstance(entry, Mapping):
                raise CircuitSpecError(f"{source}: projections[{k}] must be a table.")
            bad = sorted(set(entry) - set(_PROJECTION_KEYS))
            if bad:
                raise CircuitSpecError(f"{source}: projections[{k}] has unknown keys {bad}. "
                                       f"Expected some of {list(_PROJECTION_KEYS)}.")
            for key in ("pre", "post"):
                if key not in entry:
                    raise CircuitSpecError(f"{source}: projections[{k}].{key} is missing.")
            projections.append(Projection(entry["pre"], entry["post"], entry.get("p", 1.0),
                                          entry.get("gain", 1.0), entry.get("name", "")))
        return cls(tuple(regions), tuple(projections), dynamics=spec.get("dynamics", "feedforward"),
                   steps=spec.get("steps", 1), nonlinearity=spec.get("nonlinearity", "linear"),
                   seed=spec.get("seed", 0), name=spec.get("name", "circuit"))

    @classmethod
    def from_toml(cls, path: str | Path) -> Circuit:
        """Load and validate a circuit spec from a TOML file (see ``circuits/*.toml``)."""
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as exc:
            raise CircuitSpecError(f"Cannot read circuit spec {str(path)!r}: {exc.strerror}.") from None
        try:
            spec = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise CircuitSpecError(f"Malformed TOML in {str(path)!r}: {exc}.") from None
        spec.setdefault("name", path.stem)
        return cls.from_dict(spec, source=str(path))

    @classmethod
    def from_toml_text(cls, text: str) -> Circuit:
        """Build a circuit from TOML text (e.g. the ``circuit`` attr of a result Dataset)."""
        try:
            spec = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise CircuitSpecError(f"Malformed TOML: {exc}.") from None
        return cls.from_dict(spec)


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
