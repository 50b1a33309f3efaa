"""Circuits whose structure comes from data: connectivity matrices, edge lists, connectivity files.

:meth:`Circuit.from_connectivity <neurosubset.circuit.Circuit.from_connectivity>` builds a circuit from regions
and measured connectivity, given as

- a mapping ``"PRE->POST"`` (or ``(pre, post)``) -> matrix ``(n_post, n_pre)`` of synapse counts (numpy or
  scipy.sparse), one per projection;
- one matrix ``(N, N)`` over all neurons with a neuron -> region labelling (``labels``, or neuron ``names``
  that the regions' ``neurons`` list);
- an edge list: a pandas DataFrame or a CSV file with columns ``pre``, ``post``, ``count`` (neuron names) and an
  optional ``sign`` column (checked against the regions' Dale signs; rows with the same pair are summed).

Which synapses exist is the data (counts > 0), not a Bernoulli draw; each projection ``PRE->POST`` holds its
present synapses as ``(post, pre, count)`` triples (:class:`~neurosubset.circuit.Projection` ``synapses``), so
the circuit stays a frozen, hashable spec and its TOML text embeds the data. Initial SDs (:func:`init_sd`):
``init = "gain"``: ``gain / sqrt(k)`` for every present synapse, ``k`` the mean in-degree of the projection
(present synapses / ``n_post``); ``init = "count"``: ``sd_ij = gain * c_ij / sqrt(mean_i sum_j c_ij^2)``,
proportional to the synapse count ``c_ij`` with the same mean row variance ``gain^2``.

A TOML spec may name a connectivity file next to it (``connectivity = "FILE.npz"`` or ``"FILE.csv"``, see
:func:`resolve_connectivity_file`); :meth:`Circuit.to_toml` writes the data inline, never the path.

Neuron names in results: where any region names its neurons, every per-neuron dim of a result (weights'
``*_post`` / ``*_pre``, the ``synapse`` dim's post and pre neurons, outputs, responses, the spiking check) gets a
string coordinate ``<dim>_neuron_name`` (:func:`name_coords`; ``synapse_post_name`` / ``synapse_pre_name`` on
``synapse``) holding :attr:`Circuit.neurons <neurosubset.circuit.Circuit.neurons>` (``"REGION[i]"`` for a neuron
of a region that names none). Circuits without names get no such coordinate.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ._checks import CircuitSpecError, check_choice
from ._schema import meta
from ._spec import Projection, Region

if TYPE_CHECKING:
    from .circuit import Circuit

EDGE_COLUMNS = ("pre", "post", "count")
ROW_ORDERS = ("post", "pre")


def triples_to_dense(triples: Sequence[tuple[int, int, float]], shape: tuple[int, int]) -> np.ndarray:
    """``(post, pre, value)`` triples as a float64 array of ``shape`` ``(n_post, n_pre)``, 0 elsewhere."""
    out = np.zeros(shape)
    if triples:
        arr = np.asarray(triples, dtype=float)
        out[arr[:, 0].astype(int), arr[:, 1].astype(int)] = arr[:, 2]
    return out


def init_sd(proj: Projection, mask: np.ndarray, *, scalar: bool = False) -> Any:
    """Initial SD of each synapse of ``proj`` (structure ``mask`` ``(n_post, n_pre)``), 0 where none is drawn.

    Bernoulli projections: ``gain / sqrt(p * n_pre)``; data-given ``synapses``: ``gain / sqrt(k)`` (``k`` the
    mean in-degree) or, ``init = "count"``, ``gain * c_ij / sqrt(mean_i sum_j c_ij^2)``; fixed projections 0.
    With ``scalar`` the one value of the first two cases (for ``"count"`` the RMS over present synapses, which
    equals ``gain / sqrt(k)``).
    """
    n_post, n_pre = mask.shape
    if proj.fixed:
        return 0.0 if scalar else np.zeros(mask.shape)
    if proj.synapses is None:
        sd = proj.gain / np.sqrt(proj.p * n_pre)
    else:
        present = int(mask.sum())
        sd = proj.gain / np.sqrt(present / n_post) if present else 0.0
        if proj.init == "count" and not scalar:
            counts = triples_to_dense(proj.synapses, mask.shape)
            norm = np.sqrt((counts**2).sum(axis=1).mean())
            return proj.gain * counts / norm if norm > 0 else counts
    return sd if scalar else np.where(mask, sd, 0.0)


def named(circuit: Circuit) -> bool:
    """Whether any region of ``circuit`` names its neurons (``Region.neurons``)."""
    return any(r.neurons is not None for r in circuit.regions)


def name_coords(circuit: Circuit, dim: str, regions: Sequence[str], name: str | None = None) -> dict[str, tuple]:
    """``{name: (dim, names)}``: the neuron names along ``dim``, whose entries are the neurons of ``regions`` in
    order (``name`` default ``"<dim>_neuron_name"``, or ``"neuron_name"`` for ``dim == "neuron"``); ``{}`` where
    the circuit names no neurons."""
    if not named(circuit):
        return {}
    names = np.array([n for r in regions for n in circuit.neurons[r]], dtype=str)
    label = name or ("neuron_name" if dim == "neuron" else f"{dim}_neuron_name")
    return {label: (dim, names, meta("neuron_name"))}


def weight_name_coords(circuit: Circuit, weight: str, stem: str) -> dict[str, tuple]:
    """Neuron-name coordinates of a weight's dims ``<stem>_post`` / ``<stem>_pre`` (see :func:`name_coords`)."""
    proj = circuit.projection[weight]
    return {**name_coords(circuit, f"{stem}_post", [proj.post]), **name_coords(circuit, f"{stem}_pre", [proj.pre])}


def synapse_name_coords(circuit: Circuit, weight: np.ndarray, post: np.ndarray, pre: np.ndarray) -> dict[str, tuple]:
    """``synapse_post_name`` / ``synapse_pre_name`` along ``synapse``: the names of each synapse's neurons."""
    if not named(circuit):
        return {}
    names = circuit.neurons
    out = {}
    for end, index in (("post", post), ("pre", pre)):
        values = [names[getattr(circuit.projection[str(w)], end)][int(k)] for w, k in zip(weight, index)]
        out[f"synapse_{end}_name"] = ("synapse", np.array(values, dtype=str), meta(f"synapse_{end}_name"))
    return out


# ---------------------------------------------------------------------------------------------- inputs
def _matrix(field: str, value: Any, shape: tuple[int, int] | None) -> np.ndarray:
    """A dense float64 count matrix from numpy / scipy.sparse / nested lists, shape and signs checked."""
    if hasattr(value, "toarray"):  # scipy.sparse
        value = value.toarray()
    if np.iscomplexobj(value):
        raise CircuitSpecError(f"{field} is complex ({np.asarray(value).dtype}); synapse counts must be real numbers.")
    try:
        arr = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        raise CircuitSpecError(f"{field} must be a numeric matrix (numpy or scipy.sparse). Got "
                               f"{type(value).__name__}.") from None
    if arr.ndim != 2 or (shape is not None and arr.shape != shape):
        want = f"{shape} (n_post, n_pre)" if shape is not None else "square (N, N)"
        raise CircuitSpecError(f"{field} has shape {arr.shape}; the regions need {want}.")
    if not np.isfinite(arr).all():
        raise CircuitSpecError(f"{field} must hold finite synapse counts.")
    if (arr < 0).any():
        i, j = np.argwhere(arr < 0)[0]
        raise CircuitSpecError(f"{field}: synapse counts must be >= 0. Got {arr[i, j]:g} at ({i}, {j}).")
    return arr


def _triples(counts: np.ndarray) -> tuple[tuple[int, int, float], ...]:
    rows, cols = np.nonzero(counts)
    return tuple((int(i), int(j), float(counts[i, j])) for i, j in zip(rows, cols))


_NAMES_HINT = ("a region's neurons are its 'neurons = [...]' list (TOML: in its [regions.NAME] table; Python: "
               "Region(..., neurons=[...])), or NAME[0], NAME[1], ... where it lists none")


def _neuron_index(regions: Sequence[Region], *, defaults: bool = False) -> dict[str, tuple[str, int]]:
    """Neuron name -> (region, index in the region) over the regions that name their neurons (``defaults``: and
    the default names ``"NAME[i]"`` of those that do not, as :attr:`Circuit.neurons` spells them)."""
    out: dict[str, tuple[str, int]] = {}
    for r in regions:
        names = r.neurons or (tuple(f"{r.name}[{i}]" for i in range(r.size)) if defaults else ())
        for k, n in enumerate(names):
            if n in out:
                raise CircuitSpecError(f"Neuron {n!r} is listed in regions {out[n][0]!r} and {r.name!r}; a neuron "
                                       f"belongs to one region.")
            out[n] = (r.name, k)
    return out


def _edge_table(connectivity: Any) -> Any:
    """A DataFrame of the edge list given as a DataFrame or a CSV path, columns checked."""
    import pandas as pd

    if isinstance(connectivity, (str, Path)):
        try:
            table = pd.read_csv(connectivity)
        except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
            raise CircuitSpecError(f"Cannot read the edge list {str(connectivity)!r} (a UTF-8 CSV with columns "
                                   f"{list(EDGE_COLUMNS)}): {' '.join(str(exc).split())}.") from None
        if not isinstance(table.index, pd.RangeIndex):  # pandas took the extra fields of row 1 as an index
            raise CircuitSpecError(f"Cannot read the edge list {str(connectivity)!r}: row 1 has more fields than "
                                   f"the header's {len(table.columns)} columns {list(table.columns)}.")
        connectivity = table
    missing = [c for c in EDGE_COLUMNS if c not in connectivity.columns]
    if missing:
        raise CircuitSpecError(f"The edge list lacks column(s) {missing}. Expected columns {list(EDGE_COLUMNS)} "
                               f"and optionally 'sign'; got {list(connectivity.columns)}.")
    return connectivity


def _numeric(column: Any) -> np.ndarray:
    """A CSV column as float64, text that is no number (``"abc"``) as NaN (refused by the caller, naming the row)."""
    import pandas as pd

    return pd.to_numeric(column, errors="coerce").to_numpy(dtype=float)


def _from_edges(regions: Sequence[Region], table: Any, signed: dict | None = None
                ) -> dict[tuple[str, str], np.ndarray]:
    """Per region pair count matrices ``(n_post, n_pre)`` from an edge list of neuron names; with ``signed`` (a dict
    filled in place), the ``sign`` column of edges from unsigned regions as per-pair sign matrices (per-synapse
    signs from data) instead of a refusal."""
    # neuron names: the regions' own lists, default names (E[0], ...) for regions that list none (input and
    # output regions need no list)
    where = _neuron_index(regions, defaults=True)
    by_name = {r.name: r for r in regions}
    counts = _numeric(table["count"])
    if (~np.isfinite(counts)).any() or (counts < 0).any():
        k = int(np.flatnonzero(~np.isfinite(counts) | (counts < 0))[0])
        raise CircuitSpecError(f"connectivity row {k} ({table['pre'].iloc[k]} -> {table['post'].iloc[k]}): "
                               f"'count' must be a finite number >= 0. Got {counts[k]}.")
    signs = np.asarray(table["sign"], dtype=float) if "sign" in table.columns else None
    out: dict[tuple[str, str], np.ndarray] = {}
    for k, (pre, post) in enumerate(zip(table["pre"].astype(str), table["post"].astype(str))):
        for end, name in (("pre", pre), ("post", post)):
            if name not in where:
                raise CircuitSpecError(f"connectivity row {k}: {end} neuron {name!r} is in no region ({_NAMES_HINT})."
                                       f" Allowed, e.g.: {sorted(where)[:8]}.")
        (rp, i), (rq, j) = where[post], where[pre]
        if signs is not None:
            s = None if not np.isfinite(signs[k]) or signs[k] == 0 else int(np.sign(signs[k]))
            if signed is not None and by_name[rq].sign is None and s is not None:
                per = signed.setdefault((rq, rp), np.zeros((by_name[rp].size, by_name[rq].size)))
                if per[i, j] not in (0, s):
                    raise CircuitSpecError(f"connectivity row {k} ({pre} -> {post}): sign {s} contradicts an earlier "
                                           f"row of the same synapse ({int(per[i, j])}).")
                per[i, j] = s
            elif s != by_name[rq].sign:
                raise CircuitSpecError(f"connectivity row {k} ({pre} -> {post}): sign {signs[k]:g} differs from the "
                                       f"sign of region {rq!r} ({by_name[rq].sign}); Dale signs are per region: "
                                       f"allowed {by_name[rq].sign} (None: 0 or empty), or split the region.")
        mat = out.setdefault((rq, rp), np.zeros((by_name[rp].size, by_name[rq].size)))
        mat[i, j] += counts[k]
    return out


def _from_matrix(regions: Sequence[Region], matrix: Any, labels: Sequence[str] | None,
                 names: Sequence[str] | None, rows: str) -> dict[tuple[str, str], np.ndarray]:
    """Per region pair count matrices from one ``(N, N)`` matrix and a neuron labelling."""
    arr = _matrix("connectivity", matrix, None)
    if arr.shape[0] != arr.shape[1]:
        raise CircuitSpecError(f"connectivity has shape {arr.shape}; one matrix over all neurons must be square "
                               f"(N, N).")
    if rows == "pre":
        arr = arr.T
    n = arr.shape[0]
    by_name = {r.name: r for r in regions}
    if labels is None:
        if names is None:
            raise CircuitSpecError("One connectivity matrix needs 'labels' (the region of each neuron) or 'names' "
                                   "(neuron names that the regions' neurons list).")
        names = [str(x) for x in names]
        if len(names) != n:
            raise CircuitSpecError(f"names has {len(names)} entries; the matrix has {n} neurons.")
        where = _neuron_index(regions, defaults=True)  # E[0], ... where a region lists no names
        inside = {where[n][0] for n in names if n in where}  # regions of the matrix (others: e.g. probe, read-out)
        unknown = sorted(n for n in set(where) - set(names) if where[n][0] in inside)
        if unknown:
            raise CircuitSpecError(f"Region neuron(s) {unknown[:5]} are not among the matrix's 'names'. Allowed: "
                                   f"{names[:8]}{' ...' if n > 8 else ''}.")
        pos = [where.get(x) for x in names]
    else:
        labels = [str(x) for x in labels]
        if len(labels) != n:
            raise CircuitSpecError(f"labels has {len(labels)} entries; the matrix has {n} neurons.")
        bad = sorted(set(labels) - set(by_name))
        if bad:
            raise CircuitSpecError(f"labels name region(s) {bad} that do not exist. Expected one of {list(by_name)}.")
        seen: dict[str, int] = {}
        pos = []
        for lab in labels:
            pos.append((lab, seen.get(lab, 0)))
            seen[lab] = seen.get(lab, 0) + 1
        for r in regions:  # a region the labels name must be labelled exactly its size times
            if seen.get(r.name, r.size) != r.size:
                raise CircuitSpecError(f"connectivity has shape {arr.shape} with {seen.get(r.name, 0)} neurons "
                                       f"labelled {r.name!r}; region {r.name!r} has size {r.size}.")
    out: dict[tuple[str, str], np.ndarray] = {}
    post_i, pre_j = np.nonzero(arr)
    for i, j in zip(post_i, pre_j):
        if pos[i] is None or pos[j] is None:
            k = i if pos[i] is None else j
            raise CircuitSpecError(f"connectivity: an edge touches neuron {names[k]!r}, which is in no region. "
                                   f"Allowed: the regions' neurons.")
        (rp, a), (rq, b) = pos[i], pos[j]
        mat = out.setdefault((rq, rp), np.zeros((by_name[rp].size, by_name[rq].size)))
        mat[a, b] = arr[i, j]
    return out


def _from_mapping(regions: Sequence[Region], mapping: Mapping[Any, Any]) -> dict[tuple[str, str], np.ndarray]:
    by_name = {r.name: r for r in regions}
    out = {}
    for key, value in mapping.items():
        pair = tuple(key.split("->")) if isinstance(key, str) else tuple(key)
        if len(pair) != 2 or not all(p in by_name for p in pair):
            raise CircuitSpecError(f"connectivity key {key!r} must be 'PRE->POST' or (pre, post) with existing "
                                   f"regions. Expected regions from {list(by_name)}.")
        pre, post = pair
        out[(pre, post)] = _matrix(f"connectivity[{key!r}]", value, (by_name[post].size, by_name[pre].size))
    return out


def circuit_arguments(regions: Sequence[Region], connectivity: Any, *, labels: Sequence[str] | None = None,
                      names: Sequence[str] | None = None, rows: str = "post", gain: float | Mapping[str, float] = 1.0,
                      init: str = "gain", projections: Sequence[Projection] = (), dynamics: str = "steady",
                      steps: int = 1, nonlinearity: str = "linear", seed: int = 0,
                      name: str = "connectivity", signs: Any = None) -> dict[str, Any]:
    """The ``Circuit`` keyword arguments of measured connectivity (see the module docstring).

    Parameters
    ----------
    regions : sequence of Region
        Sizes, roles, Dale signs and (for edge lists and named matrices) neuron names.
    connectivity : mapping, matrix, pandas.DataFrame, str or Path
        Synapse counts (>= 0): per projection ``"PRE->POST"`` -> ``(n_post, n_pre)``; one ``(N, N)`` matrix with
        ``labels`` or ``names``; or an edge list (DataFrame or CSV path; columns pre, post, count[, sign]).
    labels : sequence of str, optional
        Region of each neuron of one matrix (its k-th neuron with label ``r`` is neuron k of region ``r``).
    names : sequence of str, optional
        Neuron names of one matrix's rows/columns, placed by the regions' ``neurons`` (instead of ``labels``).
    rows : {"post", "pre"}
        Whether one matrix's rows are postsynaptic (the package's ``(n_post, n_pre)``) or presynaptic.
    gain : float or mapping
        The gain of every data projection, or projection name -> gain (others 1).
    init : {"gain", "count"}
        Initial SD mode of the data projections (see the module docstring).
    projections : sequence of Projection
        Further projections declared first (e.g. fixed input or read-out projections).
    dynamics, steps, nonlinearity, seed, name
        As in :class:`~neurosubset.circuit.Circuit` (default ``"steady"`` linear).
    signs : matrix, optional
        With one matrix: per-synapse signs in its layout (+1, -1, 0 free), kept as each data projection's
        ``signs`` (a sign constraint from data; the presynaptic regions must be unsigned).

    Raises
    ------
    CircuitSpecError
        Unknown neuron or region names, a matrix shape that does not match the regions, negative counts, an edge
        to a neuron in no region (one line naming the field and what is allowed).
    """
    regions = tuple(regions)
    check_choice("rows", rows, ROW_ORDERS, error=CircuitSpecError)
    edge_signs: dict[tuple[str, str], np.ndarray] = {}
    if isinstance(connectivity, Mapping):
        pairs = _from_mapping(regions, connectivity)
    elif isinstance(connectivity, (str, Path)) or hasattr(connectivity, "columns"):
        pairs = _from_edges(regions, _edge_table(connectivity), edge_signs)
    else:
        pairs = _from_matrix(regions, connectivity, labels, names, rows)
    signed = edge_signs  # an edge list's 'sign' column on unsigned regions: per-synapse signs
    if signs is not None:
        if isinstance(connectivity, Mapping) or isinstance(connectivity, (str, Path)) or hasattr(connectivity,
                                                                                                "columns"):
            raise CircuitSpecError("signs (a matrix) go with one connectivity matrix; an edge list takes a 'sign' "
                                   "column instead.")
        arr = np.asarray(signs, dtype=float)
        up, down = (_from_matrix(regions, (arr * s > 0).astype(float), labels, names, rows) for s in (1, -1))
        signed = {k: up.get(k, 0) - down.get(k, 0) for k in set(up) | set(down)}
    order = {r.name: k for k, r in enumerate(regions)}
    made = []
    for (pre, post), counts in sorted(pairs.items(), key=lambda kv: (order[kv[0][0]], order[kv[0][1]])):
        if not counts.any():
            continue
        label = f"{pre}->{post}"
        g = gain.get(label, 1.0) if isinstance(gain, Mapping) else gain
        s = signed.get((pre, post))
        s = None if s is None else tuple((i, j, int(v)) for i, j, v in _triples(np.where(counts > 0, s, 0.0)))
        made.append(Projection(pre, post, gain=g, synapses=_triples(counts), init=init, signs=s or None))
    if isinstance(gain, Mapping):
        unknown = sorted(set(gain) - {p.name for p in made})
        if unknown:
            raise CircuitSpecError(f"gain names projection(s) {unknown} that the data do not hold. Expected some "
                                   f"of {[p.name for p in made]}.")
    return {"regions": regions, "projections": tuple(projections) + tuple(made), "dynamics": dynamics,
            "steps": steps, "nonlinearity": nonlinearity, "seed": seed, "name": name}


def resolve_connectivity_file(spec: Mapping[str, Any], *, base: str | Path | None, source: str = "spec"
                              ) -> dict[str, Any]:
    """A TOML-layout spec whose ``connectivity = "FILE"`` is read and written inline into its projections.

    ``FILE`` (relative to ``base``, the spec's folder) is ``.npz``, one array ``(n_post, n_pre)`` of synapse
    counts per projection name, or ``.csv``, an edge list (pre, post, count neuron names; the regions list their
    neurons) whose edges from region A to region B fill the spec's projection ``A -> B``. The spec's projections
    keep their gains and ``init``; those the file does not mention keep their own structure.

    Per-synapse signs from the file (a sign constraint from data, kept as the projection's ``signs``; the
    presynaptic region must be unsigned, as for inline ``signs``): a ``.csv``'s ``sign`` column (+1, -1; 0 or
    empty: free) on edges from an unsigned region, or a *signed count* in a ``.npz``: an array with a negative
    entry gives every synapse of it the sign of its count (``-3``: three inhibitory contacts); an array without
    one is plain counts, its signs free.
    """
    spec = dict(spec)
    file = spec.pop("connectivity")
    if not isinstance(file, str) or Path(file).suffix not in (".npz", ".csv"):
        raise CircuitSpecError(f"{source}: 'connectivity' must name a '.npz' or '.csv' file next to the spec. "
                               f"Got {file!r}.")
    path = Path(file) if base is None else Path(base) / file
    if not path.is_file():
        raise CircuitSpecError(f"{source}: connectivity file {str(path)!r} does not exist.")
    from ._spec import from_spec

    kwargs = from_spec(spec, source=source)
    file_signs: dict[str, np.ndarray] = {}  # projection name -> (n_post, n_pre) +1 / -1 / 0 (free)
    if path.suffix == ".npz":
        try:
            data = np.load(path, allow_pickle=False)
            if not hasattr(data, "files"):  # a bare .npy saved under a .npz name (an array: no context manager)
                raise ValueError("it holds one array, not named arrays (save it with numpy.savez)")
            with data:
                found = {k: data[k] for k in data.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            raise CircuitSpecError(f"{source}: connectivity file {str(path)!r} is not a readable .npz of synapse "
                                   f"counts ({exc}).") from None
        for key, value in found.items():  # numpy would drop an imaginary part with only a ComplexWarning
            if np.iscomplexobj(value):
                raise CircuitSpecError(f"{source}: connectivity file {str(path)!r}: array {key!r} is complex "
                                       f"({value.dtype}); synapse counts must be real numbers.")
        signed_regions = {r.name for r in kwargs["regions"] if r.sign is not None}
        pre_of = {p.name: p.pre for p in kwargs["projections"]}
        for key, value in list(found.items()):  # signed counts: negative entries on an unsigned region's projection
            arr = np.asarray(value)
            if arr.dtype.kind in "biuf" and (arr < 0).any() and pre_of.get(key) not in signed_regions:
                found[key], file_signs[key] = np.abs(arr), np.sign(arr)
    else:
        edge_signs: dict[tuple[str, str], np.ndarray] = {}
        pairs = _from_edges(kwargs["regions"], _edge_table(path), edge_signs)
        by_pair = {(p.pre, p.post): p.name for p in kwargs["projections"] if not p.fixed}
        missing = sorted(set(pairs) - set(by_pair))
        if missing:
            raise CircuitSpecError(f"{source}: {str(path)!r} has edges from region {missing[0][0]!r} to "
                                   f"{missing[0][1]!r}, but the spec declares no projection {missing[0][0]}->"
                                   f"{missing[0][1]}. Declared: {sorted(by_pair.values())}.")
        found = {by_pair[k]: v for k, v in pairs.items()}
        file_signs.update({by_pair[k]: v for k, v in edge_signs.items() if k in by_pair})
    names = [p.name for p in kwargs["projections"]]
    if not found or not any(np.any(np.asarray(v, dtype=object) != 0) for v in found.values()):
        raise CircuitSpecError(f"{source}: connectivity file {str(path)!r} contributes no synapse; it should fill "
                               f"some of the projections {names}.")
    unknown = sorted(set(found) - set(names))
    if unknown:
        raise CircuitSpecError(f"{source}: {str(path)!r} holds projection(s) {unknown} that the spec does not "
                               f"declare. Expected some of {names}.")
    shapes = {r.name: r.size for r in kwargs["regions"]}
    projections = []
    for entry, proj in zip(spec.get("projections", []), kwargs["projections"]):
        entry = dict(entry)
        if proj.name in found:
            if "synapses" in entry or "weights" in entry:
                raise CircuitSpecError(f"{source}: projection {proj.name!r} has inline data and data in "
                                       f"{str(path)!r}; give one.")
            counts = _matrix(f"{path.name}[{proj.name!r}]", found[proj.name], (shapes[proj.post], shapes[proj.pre]))
            entry["synapses"] = [list(t) for t in _triples(counts)]
            if proj.name in file_signs:
                if "signs" in entry:
                    raise CircuitSpecError(f"{source}: projection {proj.name!r} has inline signs and signs in "
                                           f"{str(path)!r}; give one.")
                sign = np.where(counts > 0, file_signs[proj.name], 0.0)
                entry["signs"] = [[i, j, int(v)] for i, j, v in _triples(sign)]
        projections.append(entry)
    spec["projections"] = projections
    return spec

