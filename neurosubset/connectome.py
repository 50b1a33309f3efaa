"""The C. elegans connectome as a circuit, from the OpenWorm C. elegans Connectome Toolbox (``cect``).

:func:`celegans` reads one of cect's datasets (the data ship inside the package; readers load from its cache,
nothing is downloaded) and builds a steady, linear :class:`~neurosubset.circuit.Circuit`:

- every neuron with a connection in the dataset is a hidden (recurrent) neuron, in a region by cell type
  (``regions="type"``, cect's ``get_SIM_class``: ``"sensory"``, ``"inter"``, ``"motor"``; its two neurons of
  unknown function, CANL/R, go to ``"inter"``) or by cell class (``regions="class"``, :func:`cell_classes`, e.g.
  ``AVA``, ``RME``, ``DA``), optionally split by Dale sign (below);
- every chemical neuron-to-neuron connection is one projection entry with its synapse count (``Generic_CS``;
  gap junctions are not modelled);
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
from ._stability import _SEED_KEY, loops, max_real_eig, spec_stability
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
             gain: float | None = None, seed: int = 0, name: str | None = None) -> Circuit:
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
        ``max Re(eig W) <=`` :data:`TARGET_MAX_RE`.
    seed : int
        The circuit's seed (its stability draws).

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
    neurons, edges = chemical_edges(dataset)
    types = cell_types(neurons)
    signs = transmitter_signs(neurons) if dale else dict.fromkeys(neurons)
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
    index = {n: i for i, n in enumerate(neurons)}
    counts = np.zeros((len(neurons), len(neurons)))
    for (pre, post), c in edges.items():
        counts[index[post], index[pre]] = c
    regions = (probe, *hidden, readout)
    label = name or f"celegans_{dataset}"
    kwargs = dict(names=neurons, init=init, projections=fixed, seed=seed, name=label)
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


def _stable_gain(kwargs: dict[str, Any]) -> float:
    """The gain that brings the largest max Re(eig W) of the spec's stability draws to :data:`TARGET_MAX_RE`.

    Every loop runs through chemical projections only (the fixed ones start at the input or end at the
    read-out), so scaling their common gain by ``c`` scales each draw's eigenvalues by ``c``; the draws are those
    of the steady circuit's own check (same seeds), so that check sees exactly the scaled values.
    """
    twin = Circuit(**kwargs)  # discrete: no stability check while building
    if not loops(twin):
        return 1.0
    draws = spec_stability(twin).draws
    worst = 0.0
    for k in range(draws):
        rng = np.random.default_rng(np.random.SeedSequence(twin.seed, spawn_key=(_SEED_KEY, k)))
        worst = max(worst, float(max_real_eig(twin, twin.sample_weights(rng))))
    return TARGET_MAX_RE / worst if worst > 0 else 1.0
