"""The C. elegans connectome as a circuit, from the OpenWorm C. elegans Connectome Toolbox (``cect``).

:func:`celegans` reads one of cect's datasets (the data ship inside the package; readers load from its cache,
nothing is downloaded) and builds a steady, linear :class:`~neurosubset.circuit.Circuit`:

- every neuron with a connection in the dataset is a hidden (recurrent) neuron, in a region by cell type
  (``regions="type"``, cect's ``get_SIM_class``: ``"sensory"``, ``"inter"``, ``"motor"``; its two neurons of
  unknown function, CANL/R, go to ``"inter"``) or by cell class (``regions="class"``, :func:`cell_classes`, e.g.
  ``AVA``, ``RME``, ``DA``), optionally split by Dale sign (below);
- every chemical neuron-to-neuron connection is one projection entry with its synapse count (``Generic_CS``);
- gap junctions (``gap_junctions=True``; cect's ``GapJunction`` connections) are FIXED: one symmetric, unsigned
  conductance per neuron pair, ``g_ij = g_ji = gap_gain * n_ij / sqrt(mean_i sum_j n_ij^2)`` (``n_ij`` the pair's
  gap-junction count, the larger of cect's two directed records, which are equal in every dataset checked; a
  neuron's junctions with itself carry no current and are dropped), identical in teacher and student, never
  plastic, never redrawn. They enter the linear steady dynamics as the graph-Laplacian current
  ``sum_j g_ij (r_j - r_i)``, i.e. the fixed matrix ``L = G - diag(G 1)`` added to ``W``: one fixed projection
  ``gap:PRE->POST`` per region pair with junctions (diagonal blocks hold ``-sum_j g_ij``). Projections between the
  same two regions are summed wherever the block matrix is assembled. Plastic gap junctions (one tied parameter per
  pair) are not modelled: the allocation model has one free value per matrix entry;
- probes enter through a fixed one-to-one projection from the input region ``"probe"`` (one entry per sensory
  neuron) onto the sensory neurons, and the output region ``"readout"`` copies the motor neurons' rates through a
  fixed identity, so no edge into a sensory neuron or out of a motor neuron is dropped. Fixed projections are
  never plastic; every chemical synapse is eligible.
- Dale signs (``dale=True``) from the neurotransmitter identity in cect's Wang et al. 2024 hermaphrodite data:
  a neuron releasing acetylcholine (and not GABA) is excitatory (+1, region suffix ``_ach``), one releasing GABA
  (and not acetylcholine) inhibitory (-1, ``_gaba``), every other neuron (glutamate, monoamines, both, unknown)
  unsigned. This is an approximation: in the worm acetylcholine and glutamate act through both excitatory and
  inhibitory receptors, so the sign of a synapse depends on the postsynaptic receptor, which is not modelled.
- gains: one gain on every chemical projection, by default scaled so that the largest ``max Re(eig W)`` over the
  spec's stability draws is :data:`TARGET_MAX_RE` (< 1: those teacher draws are stable).

Cell classes (cect 0.3.5 has no class function) follow the WormAtlas naming convention, applied to each name in
three steps over the name universe ``U`` (the dataset's neurons and cect's ``ALL_NEURON_NAMES_COOK``):

1. left/right: a name ending in ``L`` or ``R`` whose contralateral name (last letter swapped) is in ``U`` loses
   that letter (``ADAL``/``ADAR`` -> ``ADA``, ``CEPDL`` -> ``CEPD``, ``OLLL`` -> ``OLL``; ``AVL``, ``PVR``, ``RIR``,
   ``AQR`` have no partner and stay);
2. dorsal/ventral: a result of step 1 of four or more letters ending in ``D`` or ``V`` whose dorsal/ventral
   partner is also a result of step 1 loses that letter (``RMED``/``RMEV`` -> ``RME``, ``CEPD`` -> ``CEP``,
   ``SABD``/``SABV`` -> ``SAB``, ``IL1D`` -> ``IL1``; the three-letter ``RID`` stays, apart from class ``RIV``);
3. numbered ventral-cord motor neurons (:data:`NUMBERED_CLASSES`: ``AS``, ``DA``, ``DB``, ``DD``, ``VA``,
   ``VB``, ``VC``, ``VD`` and the male ``CA``, ``CP``) lose their number (``DA1`` .. ``DA9`` -> ``DA``); other
   digits are part of the class (``IL1``, ``I2``, ``M3``).

On Cook 2019's hermaphrodite this gives WormAtlas's 118 classes of the 302 neurons.
"""
from __future__ import annotations

import importlib
import re
from typing import Any

import numpy as np

from ._checks import CircuitSpecError, MissingExtraError, check_choice, check_real
from ._spec import Projection, Region
from .dynamics.stability import SPEC_SEED_KEY, loops, max_real_eig, spec_stability
from .circuit import Circuit
from .connectivity import circuit_arguments

DATASETS = {
    "cook2019-herm": "Cook2019HermReader", "cook2019-male": "Cook2019MaleReader",
    **{f"witvliet2021-{k}": f"WitvlietDataReader{k}" for k in range(1, 9)},
    "varshney2011": "VarshneyDataReader", "white1986-whole": "White_whole",
}
"""Dataset name -> cect reader module (``cect.readers.<module>``). Witvliet 2021 stages 1-8 are its eight
developmental datasets (L1 ... adult), White 1986 the whole-animal reconstruction."""
TYPES = ("sensory", "inter", "motor")
_CECT_TYPES = {"Sensory": "sensory", "Interneuron": "inter", "Motorneuron": "motor", "Other": "inter"}
REGIONS = ("type", "class")
"""Region schemes of :func:`celegans`: by cell type or by cell class."""
NUMBERED_CLASSES = ("AS", "DA", "DB", "DD", "VA", "VB", "VC", "VD", "CA", "CP")
"""Classes whose members are numbered along the ventral cord (``DA1`` .. ``DA9``)."""
GAP_GAIN = 0.5
"""Default RMS over neurons of the norm of a neuron's gap conductances ``||g_i||`` (dimensionless)."""
TARGET_MAX_RE = 0.8
"""The largest max Re(eig W) over the spec's stability draws after the default gain scaling."""


def _cect(module: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtraError("neurosubset.celegans needs the optional extra 'connectome' (the cect package): "
                                "pip install 'neurosubset[connectome]'.") from None


def cect_dataset(dataset: str) -> Any:
    """The cect ``ConnectomeDataset`` of ``dataset`` (one of :data:`DATASETS`), loaded from cect's cache."""
    check_choice("dataset", dataset, DATASETS, error=CircuitSpecError)
    return _cect(f"cect.readers.{DATASETS[dataset]}").get_instance(from_cache=True)


def electrical_pairs(dataset: str) -> dict[tuple[str, str], float]:
    """``(a, b) -> gap-junction count`` (``a < b``) of every electrical neuron pair of ``dataset``: the larger of
    cect's two directed records' counts (``GapJunction`` connections, repeated records summed); self pairs
    dropped."""
    _, conns = cect_dataset(dataset).get_neuron_to_neuron_conns()
    directed: dict[tuple[str, str], float] = {}
    for c in conns:
        if c.syntype == "GapJunction" and c.number and c.pre_cell != c.post_cell:
            directed[(c.pre_cell, c.post_cell)] = directed.get((c.pre_cell, c.post_cell), 0.0) + float(c.number)
    pairs: dict[tuple[str, str], float] = {}
    for (a, b), n in directed.items():
        key = (min(a, b), max(a, b))
        pairs[key] = max(pairs.get(key, 0.0), n)
    return pairs


def gap_laplacian(neurons: list[str], pairs: dict[tuple[str, str], float], gap_gain: float) -> np.ndarray:
    """The fixed gap-junction matrix ``L = G - diag(G 1)`` ``(N, N)`` over ``neurons`` (module docstring).

    ``G`` is symmetric with ``G_ij = gap_gain * n_ij / sqrt(mean_i sum_j n_ij^2)`` (0 without a junction), so
    ``(L r)_i = sum_j G_ij (r_j - r_i)``; rows of ``L`` sum to 0.
    """
    index = {n: i for i, n in enumerate(neurons)}
    g = np.zeros((len(neurons), len(neurons)))
    for (a, b), n in pairs.items():
        g[index[a], index[b]] = g[index[b], index[a]] = n
    norm = np.sqrt((g**2).sum(axis=1).mean())
    g = gap_gain * g / norm if norm > 0 else g
    return g - np.diag(g.sum(axis=1))


def chemical_edges(dataset: str) -> tuple[list[str], dict[tuple[str, str], float]]:
    """Neuron names (sorted) and ``(pre, post) -> synapse count`` of every chemical neuron-to-neuron connection.

    The neurons are cect's ``get_neuron_to_neuron_conns`` (every neuron with a chemical or electrical
    connection); counts of repeated ``(pre, post)`` records are summed.
    """
    neurons, conns = cect_dataset(dataset).get_neuron_to_neuron_conns()
    edges: dict[tuple[str, str], float] = {}
    for c in conns:
        if c.synclass == "Generic_CS" and c.number:
            edges[(c.pre_cell, c.post_cell)] = edges.get((c.pre_cell, c.post_cell), 0.0) + float(c.number)
    return sorted(neurons), edges


def transmitter_signs(neurons: list[str]) -> dict[str, int | None]:
    """Dale sign of each neuron from cect's Wang 2024 transmitter data (see the module docstring)."""
    ds = _cect("cect.readers.Wang2024HermReader").get_instance(from_cache=True)
    releases: dict[str, set[str]] = {}
    for synclass in ("Acetylcholine", "GABA"):
        rows = np.flatnonzero(np.asarray(ds.connections[synclass]).sum(axis=1))
        for i in rows:
            releases.setdefault(ds.nodes[i], set()).add(synclass)
    sign = {frozenset({"Acetylcholine"}): 1, frozenset({"GABA"}): -1}
    return {n: sign.get(frozenset(releases.get(n, ())), None) for n in neurons}


SIGN_SOURCES = ("fenyves2020",)
FENYVES_FILE = "journal.pcbi.1007974.s003.xlsx"  # S3 of Fenyves et al. 2020, shipped in wormneuroatlas's data
_FENYVES_POLARITY = {"+": 1, "-": -1}


def _fenyves_name(name: str) -> str:
    """Fenyves's (WormWiring) neuron name in Cook 2019's spelling: numbered motor neurons lose the leading zero
    (``AS01`` -> ``AS1``, ``VD10`` stays)."""
    return re.sub(r"^([A-Z]+)0(\d)$", r"\1\2", str(name).strip())


def fenyves_signs(edges: dict[tuple[str, str], float]) -> tuple[dict[tuple[str, str], int], dict[str, int]]:
    """Per chemical synapse, the sign Fenyves et al. 2020 predict from the postsynaptic receptors.

    Reads sheet "5. Sign prediction" of ``journal.pcbi.1007974.s003.xlsx`` in ``wormneuroatlas``'s data with
    pandas (its cells are formulas: the cached values are read), maps the names to Cook 2019's spelling
    (:func:`_fenyves_name`) and looks up every edge of ``edges``.

    Parameters
    ----------
    edges : dict
        ``(pre, post) -> count`` (Cook 2019 names), e.g. :func:`chemical_edges`' second value.

    Returns
    -------
    signs : dict
        ``(pre, post) -> +1 / -1`` for the edges predicted excitatory ("+") or inhibitory ("-").
    counts : dict
        ``excitatory``, ``inhibitory``, ``complex`` (mixed receptors: free), ``no_prediction`` (free),
        ``unmatched`` (edges of ``edges`` the sheet does not hold: free) and ``sheet_only`` (chemical edges of the
        sheet that ``edges`` lacks): the reconstructions differ.

    Raises
    ------
    MissingExtraError
        wormneuroatlas (or its data file) is not installed.
    """
    import os

    try:
        import pandas as pd
        import wormneuroatlas
    except ImportError as exc:
        raise MissingExtraError(f"ns.celegans(signs='fenyves2020') needs pandas and wormneuroatlas ({exc}).") from None
    path = os.path.join(os.path.dirname(wormneuroatlas.__file__), "data", FENYVES_FILE)
    if not os.path.exists(path):
        raise MissingExtraError(f"ns.celegans(signs='fenyves2020') needs {FENYVES_FILE} in wormneuroatlas's data "
                                f"({path} is missing).")
    sheet = pd.read_excel(path, sheet_name="5. Sign prediction", header=1)
    sheet = sheet[sheet["Edge type"] == "chemical"]
    polarity = {(_fenyves_name(a), _fenyves_name(b)): str(p).strip()
                for a, b, p in zip(sheet["Neuron"], sheet["Neuron.1"], sheet.iloc[:, 16])}
    signs, counts = {}, dict.fromkeys(("excitatory", "inhibitory", "complex", "no_prediction", "unmatched",
                                       "sheet_only"), 0)
    for edge in edges:
        p = polarity.get(edge)
        if p is None:
            counts["unmatched"] += 1
        elif p in _FENYVES_POLARITY:
            signs[edge] = _FENYVES_POLARITY[p]
            counts["excitatory" if p == "+" else "inhibitory"] += 1
        elif p == "complex":
            counts["complex"] += 1
        else:
            counts["no_prediction"] += 1
    counts["sheet_only"] = len(set(polarity) - set(edges))
    return signs, counts


def cell_types(neurons: list[str]) -> dict[str, str]:
    """Cell type of each neuron (``"sensory"``, ``"inter"``, ``"motor"``) from cect's ``get_SIM_class``."""
    cells = _cect("cect.Cells")
    return {n: _CECT_TYPES[cells.get_SIM_class(n)] for n in neurons}


def cell_classes(neurons: list[str]) -> dict[str, str]:
    """Cell class of each neuron name by the WormAtlas convention (the module docstring's three steps).

    Parameters
    ----------
    neurons : list of str
        Neuron names (cect's preferred names, e.g. ``"AVAL"``, ``"RMED"``, ``"DA1"``).

    Returns
    -------
    dict
        Neuron name -> class name (``"AVA"``, ``"RME"``, ``"DA"``).
    """
    universe = set(neurons) | set(getattr(_cect("cect.Cells"), "ALL_NEURON_NAMES_COOK", ()))
    swap = {"L": "R", "R": "L", "D": "V", "V": "D"}
    side = {n: n[:-1] if n[-1:] in "LR" and n[:-1] + swap[n[-1]] in universe else n for n in universe}
    bases = set(side.values())
    out = {}
    for n in neurons:
        b = side[n]
        if len(b) >= 4 and b[-1] in "DV" and b[:-1] + swap[b[-1]] in bases:
            b = b[:-1]
        number = re.fullmatch(r"([A-Z]{2})\d+", b)
        out[n] = number.group(1) if number and number.group(1) in NUMBERED_CLASSES else b
    return out


def celegans(dataset: str = "cook2019-herm", *, regions: str = "type", dale: bool = True, init: str = "count",
             gain: float | None = None, gap_junctions: bool = False, gap_gain: float = GAP_GAIN, seed: int = 0,
             name: str | None = None, signs: str | None = None) -> Circuit:
    """The C. elegans chemical connectome of ``dataset`` as a steady linear circuit (module docstring).

    Parameters
    ----------
    dataset : str
        One of :data:`DATASETS` (``"cook2019-herm"``: Cook et al. 2019, adult hermaphrodite, 302 neurons,
        3,709 chemical connections).
    regions : {"type", "class"}
        Hidden regions by cell type (``sensory``, ``inter``, ``motor``) or by cell class (:func:`cell_classes`,
        in type order, classes sorted within a type).
    dale : bool
        Split each region by transmitter sign (regions ``NAME_ach`` +1, ``NAME_gaba`` -1, ``NAME`` unsigned; with
        ``regions="class"`` a class is split only where its members differ, else it keeps its name and sign).
    init : {"count", "gain"}
        Initial SD proportional to the synapse count, or one SD per projection (see
        :func:`neurosubset.connectivity.init_sd`).
    gain : float, optional
        The gain of every chemical projection; default: scaled so that the spec's stability draws have
        ``max Re(eig W) <=`` :data:`TARGET_MAX_RE` (gap junctions included).
    gap_junctions : bool
        Add the fixed gap-junction Laplacian (projections ``gap:PRE->POST``; module docstring).
    gap_gain : float
        Scale of the gap conductances (dimensionless, > 0): the RMS over neurons of ``||g_i||``.
    seed : int
        The circuit's seed (its stability draws).
    signs : {None, "fenyves2020"}
        Per-synapse signs from data instead of Dale's transmitter signs (then no region is signed, whatever
        ``dale``): ``"fenyves2020"`` signs each chemical synapse predicted excitatory or inhibitory from the
        postsynaptic receptors by Fenyves et al. 2020 (:func:`fenyves_signs`); "complex", "no prediction" and
        unmatched edges stay free. A sign constraint kept while fitting with ``dale=True``, not Dale's law.

    Returns
    -------
    Circuit
        Regions ``probe`` (input, one entry per sensory neuron, in the order of the sensory regions' neurons),
        the cell-type regions (hidden, named neurons), ``readout`` (output, one entry per motor neuron).

    Raises
    ------
    CircuitSpecError
        An unknown dataset or region scheme (one line listing the allowed names).
    MissingExtraError
        cect is not installed.
    """
    check_choice("dataset", dataset, DATASETS, error=CircuitSpecError)
    check_choice("regions", regions, REGIONS, error=CircuitSpecError)
    if signs is not None:
        check_choice("signs", signs, SIGN_SOURCES, error=CircuitSpecError)
    neurons, edges = chemical_edges(dataset)
    types = cell_types(neurons)
    synapse_signs = fenyves_signs(edges)[0] if signs is not None else None
    signs = transmitter_signs(neurons) if dale and synapse_signs is None else dict.fromkeys(neurons)
    groups, type_of = _groups(neurons, types, signs, regions)
    sign_of = {g: signs[members[0]] for g, members in groups.items()}
    hidden = [Region(g, len(v), "hidden", sign_of[g], tuple(v)) for g, v in groups.items()]
    sensory = [g for g in groups if type_of[g] == "sensory"]
    motor = [g for g in groups if type_of[g] == "motor"]
    n_in, n_out = sum(len(groups[g]) for g in sensory), sum(len(groups[g]) for g in motor)
    probe = Region("probe", n_in, "input", None, tuple(f"in:{n}" for g in sensory for n in groups[g]))
    readout = Region("readout", n_out, "output", None, tuple(f"out:{n}" for g in motor for n in groups[g]))
    fixed, start = [], 0
    for g in sensory:  # probe entry start + k drives neuron k of region g
        k = len(groups[g])
        fixed.append(Projection("probe", g, weights=tuple((i, start + i, 1.0) for i in range(k))))
        start += k
    start = 0
    for g in motor:  # readout entry start + k copies neuron k of region g
        k = len(groups[g])
        fixed.append(Projection(g, "readout", weights=tuple((start + i, i, 1.0) for i in range(k))))
        start += k
    if gap_junctions:
        fixed += _gap_projections(groups, gap_laplacian(neurons, electrical_pairs(dataset), check_real(
            "gap_gain", gap_gain, low=0.0, low_open=True, error=CircuitSpecError)), neurons)
    index = {n: i for i, n in enumerate(neurons)}
    counts = np.zeros((len(neurons), len(neurons)))
    for (pre, post), c in edges.items():
        counts[index[post], index[pre]] = c
    sign_matrix = None
    if synapse_signs is not None:
        sign_matrix = np.zeros_like(counts)
        for (pre, post), s in synapse_signs.items():
            sign_matrix[index[post], index[pre]] = s
    regions = (probe, *hidden, readout)
    label = name or f"celegans_{dataset}{'' if synapse_signs is None else '_fenyves2020'}"
    kwargs = dict(names=neurons, init=init, projections=fixed, seed=seed, name=label, signs=sign_matrix)
    if gain is None:
        gain = _stable_gain(circuit_arguments(regions, counts, gain=1.0, dynamics="discrete", **kwargs))
    gain = check_real("gain", gain, low=0.0, low_open=True, error=CircuitSpecError)
    return Circuit(**circuit_arguments(regions, counts, gain=gain, dynamics="steady", **kwargs))


def _groups(neurons: list[str], types: dict[str, str], signs: dict[str, int | None], regions: str
            ) -> tuple[dict[str, list[str]], dict[str, str]]:
    """Hidden region name -> its neurons (sorted), and region -> cell type, by type or by class and Dale sign."""
    suffix = {1: "_ach", -1: "_gaba", None: ""}
    label = dict(types) if regions == "type" else cell_classes(neurons)
    groups: dict[str, list[str]] = {}
    type_of: dict[str, str] = {}
    for t in TYPES:
        for lab in sorted({label[n] for n in neurons if types[n] == t}, key=lambda x: (x != t, x)):
            members = [n for n in neurons if types[n] == t and label[n] == lab]
            if len({types[n] for n in neurons if label[n] == lab}) > 1:
                raise CircuitSpecError(f"Cell class {lab!r} holds neurons of different cell types; regions='class' "
                                       f"needs one type per class. Use regions='type'.")
            split = regions == "type" or len({signs[n] for n in members}) > 1
            for s in (1, -1, None):
                part = [n for n in members if signs[n] == s]
                if part:
                    groups[lab + suffix[s] if split else lab] = part
                    type_of[lab + suffix[s] if split else lab] = t
    return groups, type_of


def _gap_projections(groups: dict[str, list[str]], lap: np.ndarray, neurons: list[str]) -> list[Projection]:
    """One fixed projection ``gap:PRE->POST`` per pair of hidden regions whose block of ``lap`` is non-zero."""
    index = {n: i for i, n in enumerate(neurons)}
    out = []
    for post, rows in groups.items():
        for pre, cols in groups.items():
            block = lap[np.ix_([index[n] for n in rows], [index[n] for n in cols])]
            i, j = np.nonzero(block)
            if i.size:
                out.append(Projection(pre, post, name=f"gap:{pre}->{post}",
                                      weights=tuple(zip(i.tolist(), j.tolist(), block[i, j].tolist()))))
    return out


def _stable_gain(kwargs: dict[str, Any]) -> float:
    """The gain that brings the largest max Re(eig W) of the spec's stability draws to :data:`TARGET_MAX_RE`.

    Without gap junctions every loop runs through chemical projections only (the other fixed ones start at the
    input or end at the read-out), so scaling their common gain by ``c`` scales each draw's eigenvalues by ``c``;
    the draws are those of the steady circuit's own check (same seeds), so that check sees exactly the scaled
    values. With the fixed gap Laplacian ``L`` (negative semi-definite) the draws are ``c W + L``: the gain of the
    chemical-only scaling is kept where ``c W + L`` stays at or below the target, else lowered (``c <- c *
    target / value``) until it does.
    """
    twin = Circuit(**kwargs)  # discrete: no stability check while building
    if not loops(twin):
        return 1.0
    draws = [twin.sample_weights(np.random.default_rng(np.random.SeedSequence(twin.seed, spawn_key=(SPEC_SEED_KEY, k))))
             for k in range(spec_stability(twin).draws)]
    gap = {p.name for p in twin.projections if p.fixed and p.name.startswith("gap:")}

    def worst(c: float, with_gap: bool) -> float:  # over the draws, chemical weights times c, L as given or 0
        out = 0.0
        for w in draws:
            scaled = {k: (v if with_gap else 0 * v) if k in gap else c * v for k, v in w.items()}
            out = max(out, float(max_real_eig(twin, scaled)))
        return out

    top = worst(1.0, with_gap=False)
    c = TARGET_MAX_RE / top if top > 0 else 1.0
    for _ in range(20):
        value = worst(c, with_gap=True) if gap else TARGET_MAX_RE
        if value <= TARGET_MAX_RE * (1 + 1e-9):
            break
        c *= TARGET_MAX_RE / value
    return c
