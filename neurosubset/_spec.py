"""The parts of a circuit specification, their checks and the TOML layout.

:class:`Region` and :class:`Projection` check themselves; :func:`check_graph` and :func:`topological_order` check
how they refer to each other (:class:`~neurosubset.circuit.Circuit` calls both when built, then checks stability);
:func:`from_spec` / :func:`to_spec` and the ``*_toml`` helpers translate the TOML layout. ``Region``,
``Projection`` and the choice tuples are public from :mod:`neurosubset.circuit`.
"""
from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._checks import CircuitSpecError, check_choice, check_int, check_real
from ._schema import var_name

if TYPE_CHECKING:
    from .circuit import Circuit

ROLES = ("input", "hidden", "output")
NONLINEARITIES = ("linear", "relu", "tanh", "softplus")
_CONTINUOUS_KEYS = ("tau", "duration", "dt", "readout")  # dynamics "continuous" only (seconds)
_SPEC_KEYS = ("name", "dynamics", "steps", "nonlinearity", "seed", "regions", "projections") + _CONTINUOUS_KEYS
_REGION_KEYS = ("size", "role", "sign", "neurons")
_PROJECTION_KEYS = ("pre", "post", "p", "gain", "name", "synapses", "init", "weights", "autapses", "signs")
INIT_MODES = ("gain", "count")


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
    neurons : tuple of str, optional
        One unique name per neuron (e.g. ``("AVAL", "AVAR")``); default ``NAME[0]``, ``NAME[1]``, ...
    """

    name: str
    size: int
    role: str = "hidden"
    sign: int | None = None
    neurons: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name or "->" in self.name:
            raise CircuitSpecError(f"Region names must be non-empty strings without '->'. Got {self.name!r}.")
        object.__setattr__(self, "size", check_int(f"regions.{self.name}.size", self.size, minimum=1,
                                                   error=CircuitSpecError))
        check_choice(f"regions.{self.name}.role", self.role, ROLES, error=CircuitSpecError)
        check_choice(f"regions.{self.name}.sign", self.sign, (None, 1, -1), error=CircuitSpecError)
        if self.neurons is not None:
            names = tuple(self.neurons) if not isinstance(self.neurons, str) else (self.neurons,)
            if len(names) != self.size or not all(isinstance(n, str) and n for n in names):
                raise CircuitSpecError(f"regions.{self.name}.neurons must list {self.size} non-empty names (its "
                                       f"size). Got {len(names)} entries.")
            if len(set(names)) != len(names):
                raise CircuitSpecError(f"regions.{self.name}.neurons must be unique. Duplicated: "
                                       f"{sorted({n for n in names if names.count(n) > 1})}.")
            object.__setattr__(self, "neurons", names)


@dataclass(frozen=True)
class Projection:
    """All synapses from region ``pre`` onto region ``post``.

    Parameters
    ----------
    pre, post : str
        Region names.
    p : float
        Connection probability in (0, 1]; which synapses exist is fixed by the circuit's ``seed``. Ignored when
        ``synapses`` or ``weights`` give the structure.
    gain : float
        Weights are drawn ``N(0, gain^2 / (p * n_pre))`` (dimensionless); with ``synapses``,
        ``N(0, gain^2 / k)`` with ``k`` the mean in-degree (present synapses / ``n_post``).
    name : str, optional
        Weight name; defaults to ``"PRE->POST"``.
    synapses : tuple of (post, pre, count), optional
        Data-given structure: the present synapses as ``(row, column, synapse count)`` triples (counts > 0,
        zeros dropped), sorted. Replaces the Bernoulli(``p``) draw.
    init : {"gain", "count"}
        ``"count"`` (needs ``synapses``) makes each synapse's SD proportional to its count ``c_ij``:
        ``sd_ij = gain * c_ij / sqrt(mean_i sum_j c_ij^2)`` (mean over the ``n_post`` rows), so that the mean
        row variance is ``gain^2`` as in ``"gain"`` mode.
    weights : tuple of (post, pre, weight), optional
        A fixed projection: these weights in every draw (teacher and student), never plastic, never redrawn
        (e.g. a one-to-one identity carrying probes in or rates out). Region signs do not apply to them.
    autapses : bool
        Whether a neuron may synapse onto itself (default True: allowed, as every Bernoulli(``p``) draw has always
        allowed them). ``False`` (a projection from a region onto itself with drawn structure only) removes the
        diagonal from the structure; the other synapses and the init SD ``gain / sqrt(p * n_pre)`` stay as drawn.
    signs : tuple of (post, pre, sign), optional
        A sign per synapse from data (``sign`` +1 or -1; synapses not listed stay free): every draw makes the
        synapse ``sign * |N(...)|`` and fitting keeps it in that sign box (the ``dale`` option). A sign
        constraint, not Dale's law: the presynaptic region must be unsigned, and fixed projections take none.
    """

    pre: str
    post: str
    p: float = 1.0
    gain: float = 1.0
    name: str = ""
    synapses: tuple[tuple[int, int, float], ...] | None = None
    init: str = "gain"
    weights: tuple[tuple[int, int, float], ...] | None = None
    autapses: bool = True
    signs: tuple[tuple[int, int, int], ...] | None = None

    def __post_init__(self) -> None:
        label = self.name or f"{self.pre}->{self.post}"
        object.__setattr__(self, "name", label)
        if not isinstance(self.autapses, bool):
            raise CircuitSpecError(f"projections[{label}].autapses must be true or false. Got {self.autapses!r}.")
        object.__setattr__(self, "autapses", bool(self.autapses))
        if not self.autapses and self.pre != self.post:
            raise CircuitSpecError(f"projections[{label}].autapses = false applies to a projection from a region onto "
                                   f"itself (pre = post); {self.pre!r} -> {self.post!r} has no autapses.")
        if not self.autapses and (self.synapses is not None or self.weights is not None):
            raise CircuitSpecError(f"projections[{label}].autapses = false applies to drawn structure (p); leave the "
                                   f"diagonal (post = pre) out of 'synapses' / 'weights' instead.")
        object.__setattr__(self, "p", check_real(f"projections[{label}].p", self.p, low=0.0, high=1.0,
                                                 low_open=True, error=CircuitSpecError))
        object.__setattr__(self, "gain", check_real(f"projections[{label}].gain", self.gain, low=0.0,
                                                    low_open=True, error=CircuitSpecError))
        check_choice(f"projections[{label}].init", self.init, INIT_MODES, error=CircuitSpecError)
        if self.synapses is not None and self.weights is not None:
            raise CircuitSpecError(f"projections[{label}] gives both 'synapses' (plastic-eligible, drawn) and "
                                   f"'weights' (fixed); give one.")
        for key in ("synapses", "weights"):
            if getattr(self, key) is not None:
                object.__setattr__(self, key, _triples(f"projections[{label}].{key}", getattr(self, key),
                                                       counts=key == "synapses"))
        if self.init == "count" and self.synapses is None:
            raise CircuitSpecError(f"projections[{label}].init 'count' needs measured 'synapses'. Allowed "
                                   f"without them: ['gain'].")
        if self.signs is not None:
            if self.weights is not None:
                raise CircuitSpecError(f"projections[{label}].signs: a fixed projection ('weights') takes no signs.")
            triples = _triples(f"projections[{label}].signs", self.signs, counts=False)
            bad = [t for t in triples if t[2] not in (1.0, -1.0)]
            if bad:
                raise CircuitSpecError(f"projections[{label}].signs: each sign must be 1 or -1. Got {bad[0][2]:g} "
                                       f"at (post, pre) = ({bad[0][0]}, {bad[0][1]}).")
            if self.synapses is not None:
                present = {(i, j) for i, j, _ in self.synapses}
                stray = [t for t in triples if (t[0], t[1]) not in present]
                if stray:
                    raise CircuitSpecError(f"projections[{label}].signs: (post, pre) = ({stray[0][0]}, "
                                           f"{stray[0][1]}) is no synapse of 'synapses'.")
            object.__setattr__(self, "signs", tuple((i, j, int(s)) for i, j, s in triples) or None)

    @property
    def fixed(self) -> bool:
        """Whether the projection's weights are given (never plastic, never redrawn)."""
        return self.weights is not None


def _triples(field: str, value: Any, *, counts: bool) -> tuple[tuple[int, int, float], ...]:
    """``(post, pre, value)`` triples as sorted plain-type tuples; zeros dropped, duplicates refused."""
    import numpy as np

    try:
        arr = np.asarray(value, dtype=float).reshape(-1, 3) if len(value) else np.zeros((0, 3))
    except (TypeError, ValueError):
        raise CircuitSpecError(f"{field} must be a list of [post, pre, value] triples.") from None
    idx = arr[:, :2]
    if not (np.isfinite(arr).all() and (idx == np.round(idx)).all() and (idx >= 0).all()):
        raise CircuitSpecError(f"{field} must hold [post, pre, value] triples with non-negative integer indices "
                               f"and finite values.")
    if counts and (arr[:, 2] < 0).any():
        k = int(np.flatnonzero(arr[:, 2] < 0)[0])
        raise CircuitSpecError(f"{field}: synapse counts must be >= 0. Got {arr[k, 2]:g} at (post, pre) = "
                               f"({int(arr[k, 0])}, {int(arr[k, 1])}).")
    arr = arr[arr[:, 2] != 0]
    arr = arr[np.lexsort((arr[:, 1], arr[:, 0]))]
    dup = (np.diff(arr[:, :2], axis=0) == 0).all(axis=1)
    if dup.any():
        i, j = arr[int(np.flatnonzero(dup)[0]), :2].astype(int)
        raise CircuitSpecError(f"{field}: (post, pre) = ({i}, {j}) appears twice; each synapse may appear once.")
    return tuple((int(i), int(j), float(c)) for i, j, c in arr.tolist())


def check_graph(regions: Sequence[Region], projections: Sequence[Projection]) -> None:
    """Check the cross-references of a spec: unique regions, an input and an output, projections between existing
    regions that start outside the outputs and end outside the inputs, every non-input region driven.

    Raises
    ------
    CircuitSpecError
        Naming the first rule broken and the offending region or projection.
    """
    for kind, items, cls in (("regions", regions, Region), ("projections", projections, Projection)):
        bad = [x for x in items if not isinstance(x, cls)]
        if bad:
            raise CircuitSpecError(f"The {kind!r} parameter must hold {cls.__name__} objects. Got {bad[0]!r}.")
    names = [r.name for r in regions]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise CircuitSpecError(f"Region names must be unique. Duplicated: {sorted(dup)}.")
    by_name = {r.name: r for r in regions}
    if not any(r.role == "input" for r in regions):
        raise CircuitSpecError("A circuit needs at least one region with role 'input'.")
    if not any(r.role == "output" for r in regions):
        raise CircuitSpecError("A circuit needs at least one region with role 'output'.")
    seen: set[str] = set()
    for proj in projections:
        for end in ("pre", "post"):
            region = getattr(proj, end)
            if region not in by_name:
                raise CircuitSpecError(f"Region {region!r} (projections[{proj.name}].{end}) does not exist. "
                                       f"Expected one of {names}.")
        if proj.name in seen:
            raise CircuitSpecError(f"Duplicate projection {proj.name!r}: each projection may appear once.")
        if proj.signs is not None and by_name[proj.pre].sign is not None:
            raise CircuitSpecError(f"projections[{proj.name}].signs: region {proj.pre!r} has the Dale sign "
                                   f"{by_name[proj.pre].sign}; per-synapse signs need an unsigned presynaptic region "
                                   f"(sign = None).")
        for key in ("synapses", "weights", "signs"):
            given = getattr(proj, key) or ()
            for end, at, region in (("post", 0, by_name[proj.post]), ("pre", 1, by_name[proj.pre])):
                big = [t for t in given if t[at] >= region.size]
                if big:
                    raise CircuitSpecError(f"projections[{proj.name}].{key}: {end} index {big[0][at]} is outside "
                                           f"region {region.name!r} (allowed 0..{region.size - 1}).")
        seen.add(proj.name)
        if by_name[proj.post].role == "input":
            raise CircuitSpecError(f"Projection {proj.name!r} targets input region {proj.post!r}; "
                                   f"input regions only carry the probe.")
        if by_name[proj.pre].role == "output":
            raise CircuitSpecError(f"Projection {proj.name!r} starts at output region {proj.pre!r}; "
                                   f"output regions are read-outs and cannot project.")
    for kind, names in (("Regions", [r.name for r in regions]), ("Projections", [p.name for p in projections])):
        stems: dict[str, str] = {}
        for name in names:  # result files store one variable per name under its netCDF-safe stem
            other = stems.setdefault(var_name(name), name)
            if other != name:
                raise CircuitSpecError(f"{kind} {other!r} and {name!r} would both be stored as {var_name(name)!r} "
                                       f"in result files (each character outside [A-Za-z0-9_] becomes '_', '->' "
                                       f"becomes '_to_'); rename one of them.")
    for r in regions:
        if r.role != "input" and not any(p.post == r.name for p in projections):
            raise CircuitSpecError(f"Region {r.name!r} (role {r.role!r}) receives no projection.")
    reached = {r.name for r in regions if r.role == "input"}
    grew = True
    while grew:
        new = {p.post for p in projections if p.pre in reached} - reached
        reached |= new
        grew = bool(new)
    for r in regions:
        if r.role == "output" and r.name not in reached:
            raise CircuitSpecError(f"Output region {r.name!r} has no path from any input region (it is reached "
                                   f"only from {sorted(p.pre for p in projections if p.post == r.name)}, which no "
                                   f"input drives): its outputs would be 0 whatever the weights and every student "
                                   f"would trivially match (MP = 1). Add a projection path from an input region.")


def topological_order(regions: Sequence[Region], projections: Sequence[Projection]) -> list[str]:
    """Region names in an evaluation order of the projection graph (Kahn's algorithm); raises on a cycle."""
    order: list[str] = []
    indeg = {r.name: 0 for r in regions}
    for p in projections:
        indeg[p.post] += 1
    ready = [r.name for r in regions if indeg[r.name] == 0]
    while ready:
        name = ready.pop(0)
        order.append(name)
        for p in projections:
            if p.pre == name:
                indeg[p.post] -= 1
                if indeg[p.post] == 0:
                    ready.append(p.post)
    if len(order) != len(regions):
        cyc = [n for n in indeg if indeg[n] > 0 and _reaches(projections, n, n)]
        raise CircuitSpecError(f"'feedforward' dynamics needs an acyclic projection graph; regions {cyc} lie "
                               f"on a cycle. Use dynamics 'discrete', 'steady' or 'continuous' for recurrent circuits.")
    return order


def _reaches(projections: Sequence[Projection], source: str, target: str) -> bool:
    """Whether a directed path of projections leads from ``source`` to ``target`` (length >= 1)."""
    seen, stack = set(), [source]
    while stack:
        node = stack.pop()
        for p in projections:
            if p.pre == node:
                if p.post == target:
                    return True
                if p.post not in seen:
                    seen.add(p.post)
                    stack.append(p.post)
    return False


def to_spec(circuit: Circuit) -> dict[str, Any]:
    """Plain-type dictionary of ``circuit`` in the TOML layout (the inverse of :func:`from_spec`)."""
    regions = {}
    for r in circuit.regions:
        entry: dict[str, Any] = {"size": r.size, "role": r.role}
        if r.sign is not None:
            entry["sign"] = r.sign
        if r.neurons is not None:
            entry["neurons"] = list(r.neurons)
        regions[r.name] = entry
    projections = []
    for p in circuit.projections:
        entry = {"pre": p.pre, "post": p.post, "p": p.p, "gain": p.gain}
        if p.name != f"{p.pre}->{p.post}":
            entry["name"] = p.name
        if p.init != "gain":
            entry["init"] = p.init
        if not p.autapses:
            entry["autapses"] = False
        for key in ("synapses", "weights", "signs"):  # the data inline: results and sweep tasks never hold a path
            if getattr(p, key) is not None:
                entry[key] = [[i, j, int(c) if c == int(c) else c] for i, j, c in getattr(p, key)]
        projections.append(entry)
    out = {"name": circuit.name, "dynamics": circuit.dynamics.name, "steps": circuit.steps,
           "nonlinearity": circuit.nonlinearity, "seed": circuit.seed, "regions": regions,
           "projections": projections}
    for key in _CONTINUOUS_KEYS:  # written only where set (continuous dynamics): other specs keep their text
        value = getattr(circuit, key, None)
        if value is not None:
            out[key] = dict(value) if key == "tau" and isinstance(value, tuple) else (
                list(value) if isinstance(value, tuple) else value)
    return out


def from_spec(spec: Mapping[str, Any], *, source: str = "spec") -> dict[str, Any]:
    """Check the keys of a TOML-layout mapping; return the ``Circuit`` keyword arguments it describes.

    Raises
    ------
    CircuitSpecError
        An unknown or missing key, or a table where a value belongs (``source`` names the file in the message).
    """
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
        regions.append(Region(rname, entry["size"], entry.get("role", "hidden"), entry.get("sign"),
                              entry.get("neurons")))
    projections_spec = spec.get("projections", [])
    if not isinstance(projections_spec, Iterable):  # was a bare TypeError from the loop below
        raise CircuitSpecError(f"{source}: 'projections' must be an array of [[projections]] tables. "
                               f"Got {projections_spec!r}.")
    projections = []
    for k, entry in enumerate(projections_spec):
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
                                      entry.get("gain", 1.0), entry.get("name", ""), entry.get("synapses"),
                                      entry.get("init", "gain"), entry.get("weights"), entry.get("autapses", True),
                                      entry.get("signs")))
    return {"regions": tuple(regions), "projections": tuple(projections),
            "dynamics": spec.get("dynamics", "feedforward"), "steps": spec.get("steps", 1),
            "nonlinearity": spec.get("nonlinearity", "linear"), "seed": spec.get("seed", 0),
            "name": spec.get("name", "circuit"), **{k: spec.get(k) for k in _CONTINUOUS_KEYS}}


def read_toml(path: str | Path) -> dict[str, Any]:
    """The TOML table of the spec file ``path``, its ``name`` defaulting to the file's stem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")  # a leading UTF-8 BOM (editors on Windows) is not TOML
    except OSError as exc:
        raise CircuitSpecError(f"Cannot read circuit spec {str(path)!r}: {exc.strerror}.") from None
    except UnicodeDecodeError as exc:
        raise CircuitSpecError(f"Circuit spec {str(path)!r} is not UTF-8 text (byte {exc.start}: "
                               f"{exc.object[exc.start:exc.start + 1]!r}); a TOML spec is a UTF-8 text file.") from None
    try:
        spec = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CircuitSpecError(f"Malformed TOML in {str(path)!r}: {exc}.") from None
    spec.setdefault("name", path.stem)
    return spec


def loads_toml(text: str) -> dict[str, Any]:
    """The TOML table of spec text (e.g. the ``circuit`` attr of a result Dataset)."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CircuitSpecError(f"Malformed TOML: {exc}.") from None


def dumps_toml(spec: Mapping[str, Any]) -> str:
    """A TOML-layout mapping as TOML text."""
    import tomli_w

    return tomli_w.dumps(dict(spec))
