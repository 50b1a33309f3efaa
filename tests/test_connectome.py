"""The C. elegans connectome circuit against cect's own data (read here directly from cect, from its cache)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from cect.Cells import get_SIM_class
from cect.readers import Cook2019HermReader, Wang2024HermReader, WitvlietDataReader8

import neurosubset as ns
from neurosubset import CircuitSpecError
from neurosubset.dynamics import forward


def _cect_chemical(reader):
    """cect's neurons and chemical neuron-to-neuron (pre, post) -> synapse count, straight from its reader."""
    neurons, conns = reader.get_instance(from_cache=True).get_neuron_to_neuron_conns()
    edges = {}
    for c in conns:
        if c.syntype == "Chemical":
            edges[(c.pre_cell, c.post_cell)] = edges.get((c.pre_cell, c.post_cell), 0) + c.number
    return set(neurons), edges


def _circuit_chemical(worm):
    """The worm circuit's hidden neurons and (pre, post) -> count over its non-fixed projections."""
    names = worm.neurons
    edges = {}
    for p in worm.projections:
        if not p.fixed:
            for i, j, c in p.synapses:
                edges[(names[p.pre][j], names[p.post][i])] = c
    hidden = {n for r in worm.regions if r.role == "hidden" for n in names[r.name]}
    return hidden, edges


@pytest.fixture(scope="module")
def worm():
    return ns.celegans("cook2019-herm")


def test_the_worm_has_cects_neurons_and_every_chemical_connection(worm):
    neurons, edges = _cect_chemical(Cook2019HermReader)
    hidden, got = _circuit_chemical(worm)
    assert len(neurons) == 302 and len(edges) == 3709  # Cook et al. 2019, as cect reports them
    assert hidden == neurons
    assert got == edges
    assert sum(int(worm.eligible[w].sum()) for w in worm.weight_names) == 3709
    sensory = {n for n in neurons if get_SIM_class(n) == "Sensory"}
    motor = {n for n in neurons if get_SIM_class(n) == "Motorneuron"}
    assert {n[3:] for n in worm.neurons["probe"]} == sensory and {n[4:] for n in worm.neurons["readout"]} == motor
    # the probe reaches each sensory neuron one to one, the read-out copies each motor neuron one to one
    w = worm.sample_weights(np.random.default_rng(0))
    for p in worm.projections:
        if p.fixed:
            rows, cols = np.nonzero(w[p.name])
            pre, post = worm.neurons[p.pre], worm.neurons[p.post]
            assert all(post[i].split(":")[-1] == pre[j].split(":")[-1] for i, j in zip(rows, cols))
            assert (w[p.name][rows, cols] == 1).all() and len(rows) == len(post if p.pre == "probe" else pre)


def test_dale_signs_follow_the_transmitters_and_teachers_are_stable(worm):
    ds = Wang2024HermReader.get_instance(from_cache=True)
    sends = {nt: {ds.nodes[i] for i in np.flatnonzero(np.asarray(ds.connections[nt]).sum(1))}
             for nt in ("Acetylcholine", "GABA")}
    for r in worm.regions:
        if r.role != "hidden":
            continue
        for n in r.neurons:
            ach, gaba = n in sends["Acetylcholine"], n in sends["GABA"]
            assert r.sign == (1 if ach and not gaba else -1 if gaba and not ach else None), (r.name, n)
    # max Re eig of the recurrent matrix over all 302 + 126 non-input neurons, assembled here from the blocks
    order = [r.name for r in worm.regions if r.role != "input"]
    start = dict(zip(order, np.cumsum([0] + [worm.region[k].size for k in order])))
    for seed in range(3):
        w = worm.sample_weights(np.random.default_rng(100 + seed))
        big = np.zeros((start[order[-1]] + worm.region[order[-1]].size,) * 2)
        for p in worm.projections:
            if p.pre in start:
                big[start[p.post]:start[p.post] + w[p.name].shape[0], start[p.pre]:start[p.pre] + w[p.name].shape[1]] \
                    = w[p.name]
        assert np.linalg.eigvals(big).real.max() < 1.0


def test_the_worm_round_trips_through_toml_and_other_datasets_load(worm):
    assert ns.Circuit.from_toml_text(worm.to_toml()) == worm
    l1_adult = ns.celegans("witvliet2021-8", dale=False, init="gain")
    neurons, edges = _cect_chemical(WitvlietDataReader8)
    assert _circuit_chemical(l1_adult) == (neurons, edges)
    assert all(r.sign is None for r in l1_adult.regions)


# WormAtlas cell classes (wormatlas.org, "Individual Neurons" / neuron class lists), written out by hand
WORMATLAS = {
    "ADA": {"ADAL", "ADAR"}, "AVA": {"AVAL", "AVAR"}, "RME": {"RMED", "RMEV", "RMEL", "RMER"},
    "SAB": {"SABD", "SABVL", "SABVR"}, "IL1": {"IL1DL", "IL1DR", "IL1L", "IL1R", "IL1VL", "IL1VR"},
    "CEP": {"CEPDL", "CEPDR", "CEPVL", "CEPVR"}, "RMD": {"RMDDL", "RMDDR", "RMDL", "RMDR", "RMDVL", "RMDVR"},
    "OLL": {"OLLL", "OLLR"}, "RID": {"RID"}, "RIV": {"RIVL", "RIVR"}, "RIR": {"RIR"}, "AVL": {"AVL"},
    "PVR": {"PVR"}, "AQR": {"AQR"}, "DVA": {"DVA"}, "I2": {"I2L", "I2R"}, "M3": {"M3L", "M3R"}, "MC": {"MCL", "MCR"},
    "DA": {f"DA{k}" for k in range(1, 10)}, "VB": {f"VB{k}" for k in range(1, 12)},
    "AS": {f"AS{k}" for k in range(1, 12)}, "DD": {f"DD{k}" for k in range(1, 7)},
    "VC": {f"VC{k}" for k in range(1, 7)},
}


@pytest.mark.slow
def test_cell_classes_follow_wormatlas_and_keep_every_connection():
    neurons, edges = _cect_chemical(Cook2019HermReader)
    classes = ns.connectome.cell_classes(sorted(neurons))
    for cls, members in WORMATLAS.items():
        assert {n for n, c in classes.items() if c == cls} == members, cls
    assert len(set(classes.values())) == 118  # WormAtlas: 118 classes of the hermaphrodite's 302 neurons
    worm = ns.celegans("cook2019-herm", regions="class")
    hidden = [r for r in worm.regions if r.role == "hidden"]
    placed = [n for r in hidden for n in r.neurons]
    assert sorted(placed) == sorted(neurons)  # every neuron in exactly one class region
    assert all(len({classes[n] for n in r.neurons}) == 1 for r in hidden)
    assert {n for r in hidden if r.name.split("_")[0] == "RME" for n in r.neurons} == WORMATLAS["RME"]
    assert _circuit_chemical(worm) == (neurons, edges)  # all 3,709 chemical pairs, their counts
    assert sum(int(worm.eligible[w].sum()) for w in worm.weight_names) == 3709
    assert {n[3:] for n in worm.neurons["probe"]} == {n for n in neurons if get_SIM_class(n) == "Sensory"}


def _gap_counts():
    """cect's gap junctions as {(a, b): count} over unordered pairs of distinct neurons, from the reader."""
    _, conns = Cook2019HermReader.get_instance(from_cache=True).get_neuron_to_neuron_conns()
    pairs = {}
    for c in conns:
        if c.syntype == "GapJunction" and c.pre_cell != c.post_cell:
            key = tuple(sorted((c.pre_cell, c.post_cell)))
            pairs[key] = max(pairs.get(key, 0), c.number)  # cect lists each junction in both directions
    return pairs


def _dense(circuit, w, order, names):
    """The matrix over the neurons ``order`` (region names) of weights ``w`` whose names pass ``names``."""
    start = dict(zip(order, np.cumsum([0] + [circuit.region[k].size for k in order])))
    n = start[order[-1]] + circuit.region[order[-1]].size
    big = np.zeros((n, n))
    for p in circuit.projections:
        if p.pre in start and p.post in start and names(p.name):
            rows = slice(start[p.post], start[p.post] + w[p.name].shape[0])
            big[rows, start[p.pre]:start[p.pre] + w[p.name].shape[1]] += w[p.name]
    return big


@pytest.mark.slow
def test_gap_junctions_are_a_fixed_symmetric_laplacian_and_enter_the_steady_state(worm):
    plain, worm = worm, ns.celegans("cook2019-herm", gap_junctions=True, gap_gain=0.5)
    hidden = [r.name for r in worm.regions if r.role == "hidden"]
    names = [n for r in hidden for n in worm.neurons[r]]
    w = worm.sample_weights(np.random.default_rng(5))
    lap = _dense(worm, w, hidden, lambda k: k.startswith("gap:"))
    g = lap - np.diag(np.diag(lap))
    np.testing.assert_array_equal(g, g.T)
    assert (g >= 0).all()
    np.testing.assert_allclose(np.diag(lap), -g.sum(axis=1), rtol=1e-13, atol=1e-15)
    pairs = _gap_counts()
    assert len(pairs) == 1091 and int((np.triu(g) > 0).sum()) == len(pairs)
    # the conductances written here: gap_gain * n_ij / sqrt(mean_i sum_j n_ij^2)
    at = {n: i for i, n in enumerate(names)}
    n_ij = np.zeros_like(g)
    for (a, b), c in pairs.items():
        n_ij[at[a], at[b]] = n_ij[at[b], at[a]] = c
    want = 0.5 * n_ij / np.sqrt((n_ij**2).sum(axis=1).mean())
    np.testing.assert_allclose(g, want, rtol=1e-13, atol=0)
    # fixed: never plastic, the same in every draw; the chemical synapses are as without gap junctions
    assert all(worm.projection[k].fixed and not worm.eligible[k].any() for k in worm.weight_names if k[:4] == "gap:")
    assert sum(int(worm.eligible[k].sum()) for k in worm.weight_names) == 3709
    assert _circuit_chemical(worm) == _circuit_chemical(plain)
    w2 = worm.sample_weights(np.random.default_rng(6))
    assert all(np.array_equal(w[k], w2[k]) for k in worm.weight_names if k[:4] == "gap:")
    # steady output = numpy's solve of r = W r + sum_j g_ij (r_j - r_i) + B x, the Laplacian term written here
    order = hidden + ["readout"]
    chem = _dense(worm, w, order, lambda k: not k.startswith("gap:"))
    nh = len(names)
    gap_term = np.zeros_like(chem)
    gap_term[:nh, :nh] = want - np.diag(want.sum(axis=1))
    x = np.random.default_rng(7).normal(size=(3, worm.n_in))
    b = np.zeros((chem.shape[0], worm.n_in))
    probe_of = {n[3:]: k for k, n in enumerate(worm.neurons["probe"])}
    for i, n in enumerate(names):
        if n in probe_of:
            b[i, probe_of[n]] = 1.0
    rates = np.linalg.solve(np.eye(chem.shape[0]) - chem - gap_term, b @ x.T)
    tw = {k: torch.as_tensor(v)[None] for k, v in w.items()}
    out = forward(worm, tw, torch.as_tensor(x)[None])[0].numpy()
    np.testing.assert_allclose(out, rates[nh:].T, rtol=1e-9, atol=1e-12)
    assert np.linalg.eigvals(chem + gap_term).real.max() < 1.0  # stable with gap junctions
    for seed in range(3):
        ws = worm.sample_weights(np.random.default_rng(200 + seed))
        full = _dense(worm, ws, order, lambda k: True)
        assert np.linalg.eigvals(full).real.max() < 1.0
    with pytest.raises(CircuitSpecError, match=r"The 'gap_gain' parameter must be > 0") as err:
        ns.celegans("cook2019-herm", gap_junctions=True, gap_gain=-1.0)
    assert "\n" not in str(err.value)


def test_an_unknown_region_scheme_is_one_line_listing_the_allowed_ones():
    with pytest.raises(CircuitSpecError, match=r"The 'regions' parameter must be one of \['type', 'class'\]. Got "
                                               r"'cells'") as err:
        ns.celegans("cook2019-herm", regions="cells")
    assert "\n" not in str(err.value)


def test_an_unknown_dataset_is_one_line_listing_the_allowed_names():
    allowed = r"\['cook2019-herm', 'cook2019-male', 'witvliet2021-1'.*'white1986-whole'\]"
    with pytest.raises(CircuitSpecError, match=rf"The 'dataset' parameter must be one of {allowed}. Got 'cook2091'"):
        ns.celegans("cook2091")


# --------------------------------------------------------------------- Fenyves et al. 2020 per-synapse signs (issue 28)
def _fenyves_sheet():
    """(pre, post) -> polarity string, read here with openpyxl's cached values (the sheet's cells are formulas);
    the data file ships with wormneuroatlas: without it this test says so loudly."""
    import os

    openpyxl = pytest.importorskip("openpyxl")
    atlas = pytest.importorskip("wormneuroatlas", reason="Fenyves 2020 sheet ships with wormneuroatlas (data only)")
    path = os.path.join(os.path.dirname(atlas.__file__), "data", "journal.pcbi.1007974.s003.xlsx")
    book = openpyxl.load_workbook(path, read_only=True, data_only=True)
    rows = book["5. Sign prediction"].iter_rows(min_row=3, values_only=True)
    import re

    fix = (lambda n: re.sub(r"^([A-Z]+)0([0-9])$", r"\1\2", str(n).strip()))
    return {(fix(r[0]), fix(r[3])): str(r[16]).strip() for r in rows if r[0] is not None and r[5] == "chemical"}


@pytest.mark.slow
def test_fenyves_signs_follow_the_sheet_and_the_free_ones_are_counted():
    sheet = _fenyves_sheet()
    worm = ns.celegans(signs="fenyves2020")
    assert all(r.sign is None for r in worm.regions)  # a sign constraint per synapse, not Dale's law per region
    signed = {}
    for p in worm.projections:
        if p.signs:
            pre, post = worm.region[p.pre].neurons, worm.region[p.post].neurons
            signed.update({(pre[j], post[i]): s for i, j, s in p.signs})
    want = {e: {"+": 1, "-": -1}[v] for e, v in sheet.items() if v in ("+", "-")}
    neurons, edges = ns.connectome.chemical_edges("cook2019-herm")
    assert signed == {e: s for e, s in want.items() if e in edges}
    _, counts = ns.connectome.fenyves_signs(edges)
    free = [e for e in edges if e not in signed]
    assert counts["excitatory"] + counts["inhibitory"] == len(signed)
    assert counts["complex"] == sum(sheet.get(e) == "complex" for e in free)
    assert counts["unmatched"] == sum(e not in sheet for e in edges)
    assert sum(v for k, v in counts.items() if k != "sheet_only") == len(edges) == 3709
    # the sign box of an allocation follows them: every plastic synapse's bound equals its sheet sign
    alloc = ns.allocate(worm, 400, strategy="random", seed=0)
    box = ns.solvers.bounded.sign_bounds(worm, alloc)
    k = 0
    for name in worm.weight_names:
        p = worm.projection[name]
        pre, post = worm.region[p.pre].neurons, worm.region[p.post].neurons
        for i, j in zip(*np.nonzero(alloc.masks[name])):
            s = signed.get((pre[j], post[i]), 0)
            assert (box.lower[k] == 0.0) == (s == 1) and (box.upper[k] == 0.0) == (s == -1), (pre[j], post[i])
            k += 1
