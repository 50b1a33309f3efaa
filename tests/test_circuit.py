"""Circuit specs: validation, TOML round trips, the builders, the initial weight distribution and the block layout."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import shipped_circuit

import neurosubset as ns
from neurosubset import AllocationError, CircuitSpecError
from neurosubset._checks import ParameterError
from neurosubset.dynamics import assemble

ROOT = Path(__file__).resolve().parents[1]
SPECS = sorted((ROOT / "circuits").glob("*.toml"))


def _spec(**overrides):
    spec = {"name": "t", "dynamics": "feedforward",
            "regions": {"x": {"size": 4, "role": "input"}, "h": {"size": 5}, "y": {"size": 2, "role": "output"}},
            "projections": [{"pre": "x", "post": "h"}, {"pre": "h", "post": "y"}]}
    spec.update(overrides)
    return spec


LARGE_SPECS = {"balanced_ei"}  # 10^4 neurons, 2.2 million synapses: about 20 s of CPU per load (sparse spec check)


@pytest.mark.parametrize("path", [pytest.param(p, marks=pytest.mark.slow) if p.stem in LARGE_SPECS else p
                                  for p in SPECS], ids=[p.stem for p in SPECS])
def test_shipped_specs_round_trip_through_toml(path):
    circuit = shipped_circuit(path.stem)  # = ns.Circuit.from_toml(path), loaded once per session
    again = ns.Circuit.from_toml_text(circuit.to_toml())
    assert again == circuit
    assert again.structure.keys() == circuit.structure.keys()
    assert all(np.array_equal(v, circuit.structure[k]) for k, v in again.structure.items())


def test_at_least_three_example_specs_including_multi_region():
    names = {p.stem for p in SPECS}
    assert {"lffn", "lrnn", "ca3_ca1"} <= names
    ca = ns.Circuit.from_toml(ROOT / "circuits" / "ca3_ca1.toml")
    assert len(ca.regions) >= 4 and "CA3->CA3" in ca.weight_names and "CA3->CA1" in ca.weight_names


def test_builders_have_the_contract_shapes():
    ff = ns.feedforward([8, 6, 3], nonlinearity="linear")
    assert ff.weight_names == ("W1", "W2")
    assert ff.shape("W1") == (6, 8) and ff.shape("W2") == (3, 6)
    rnn = ns.linear_rnn(n=6, n_in=2, n_out=1, steps=3, gain=0.9)
    assert rnn.weight_names == ("B", "W", "C")
    assert (rnn.shape("B"), rnn.shape("W"), rnn.shape("C")) == ((6, 2), (6, 6), (1, 6))
    assert rnn.dynamics.name == "discrete" and rnn.steps == 3
    assert rnn.probe_shape(4) == (4, 3, 2) and ff.probe_shape(4) == (4, 8)


def test_init_std_is_gain_over_sqrt_expected_in_degree():
    # N(0, gain^2 / (p * n_pre)): for the RNN, W ~ N(0, g^2/n), B ~ N(0, 1/n_in), C ~ N(0, 1/n)
    rnn = ns.linear_rnn(n=40, n_in=5, n_out=3, steps=2, gain=0.7)
    assert rnn.init_std["W"] == pytest.approx(0.7 / np.sqrt(40))
    assert rnn.init_std["B"] == pytest.approx(1 / np.sqrt(5))
    assert rnn.init_std["C"] == pytest.approx(1 / np.sqrt(40))
    rng = np.random.default_rng(0)
    draws = np.concatenate([rnn.sample_weights(rng)["W"].ravel() for _ in range(50)])  # 80,000 samples
    # the sample std of n normals has relative standard error 1/sqrt(2n) ~ 0.0025; allow 4 of those
    assert draws.std() == pytest.approx(0.7 / np.sqrt(40), rel=0.01)


def test_sparsity_follows_p_and_absent_synapses_are_zero():
    circuit = ns.Circuit.from_dict(_spec(projections=[{"pre": "x", "post": "h", "p": 0.3}, {"pre": "h", "post": "y"}],
                                         regions={"x": {"size": 60, "role": "input"}, "h": {"size": 50},
                                                  "y": {"size": 2, "role": "output"}}))
    mask = circuit.structure["x->h"]
    # 3000 Bernoulli(0.3) draws: standard error 0.0084
    assert abs(mask.mean() - 0.3) < 0.035
    w = circuit.sample_weights(np.random.default_rng(1))["x->h"]
    assert np.all(w[~mask] == 0) and np.all(w[mask] != 0)
    assert circuit.init_std["x->h"] == pytest.approx(1 / np.sqrt(0.3 * 60))


def test_dale_sign_fixes_the_sign_of_outgoing_weights():
    spec = _spec(regions={"x": {"size": 4, "role": "input"}, "h": {"size": 5, "sign": -1},
                          "y": {"size": 2, "role": "output"}})
    circuit = ns.Circuit.from_dict(spec)
    w = circuit.sample_weights(np.random.default_rng(0))
    assert np.all(w["h->y"] < 0) and (w["x->h"] > 0).any() and (w["x->h"] < 0).any()


@pytest.mark.parametrize("spec, message", [
    (_spec(projections=[{"pre": "x", "post": "LGN"}, {"pre": "h", "post": "y"}]),
     "Region 'LGN' (projections[x->LGN].post) does not exist. Expected one of ['x', 'h', 'y']"),
    (_spec(projections=[{"pre": "x", "post": "h"}, {"pre": "x", "post": "h"}, {"pre": "h", "post": "y"}]),
     "Duplicate projection 'x->h'"),
    (_spec(regions={"x": {"size": 4, "role": "input"}, "h": {"size": 5, "role": "middle"},
                    "y": {"size": 2, "role": "output"}}),
     "The 'regions.h.role' parameter must be one of ['input', 'hidden', 'output']. Got 'middle'"),
    (_spec(regions={"x": {"size": 0, "role": "input"}, "h": {"size": 5}, "y": {"size": 2, "role": "output"}}),
     "'regions.x.size' parameter must be >= 1. Got 0"),
    (_spec(dynamics="chaotic"), "The 'dynamics' parameter must be one of ['feedforward', 'discrete', 'steady', "
                                  "'continuous']"),
    (_spec(projections=[{"pre": "x", "post": "h", "p": 1.5}, {"pre": "h", "post": "y"}]),
     "'projections[x->h].p' parameter must be <= 1.0. Got 1.5"),
    (_spec(projections=[{"pre": "x", "post": "h"}, {"pre": "h", "post": "h"}, {"pre": "h", "post": "y"}]),
     "regions ['h'] lie on a cycle"),
    (_spec(dynamics="steady", nonlinearity="relu"), "'steady' dynamics needs nonlinearity 'linear'"),
    (_spec(colour="red"), "unknown top-level keys ['colour']"),
    (_spec(projections=[{"pre": "x", "post": "h"}]), "Region 'y' (role 'output') receives no projection"),
])
def test_bad_specs_name_the_field_and_the_allowed_values(spec, message):
    with pytest.raises(CircuitSpecError) as err:
        ns.Circuit.from_dict(spec)
    assert message in str(err.value)


def test_unstable_steady_circuit_is_rejected():
    # a dense recurrent block with gain g has spectral radius ~ g (circular law): g = 1.5 is unstable
    spec = _spec(dynamics="steady", projections=[{"pre": "x", "post": "h"}, {"pre": "h", "post": "h", "gain": 1.5},
                                                 {"pre": "h", "post": "y"}],
                 regions={"x": {"size": 4, "role": "input"}, "h": {"size": 200}, "y": {"size": 2, "role": "output"}})
    # judged by max Re(eig W) >= 1 on teacher draws (the stability of tau dr/dt = -r + W r + input), not the radius
    with pytest.raises(CircuitSpecError, match=r"unstable in 100% of \d+ teacher draws \(max Re\(eig W\) >= 1"):
        ns.Circuit.from_dict(spec)
    spec["projections"][1]["gain"] = 0.5
    assert ns.Circuit.from_dict(spec).expected_spectral_radius == pytest.approx(0.5, abs=0.05)


def test_malformed_and_missing_toml_files(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("name = 'x'\n[regions.A\nsize = 3\n")
    with pytest.raises(CircuitSpecError, match="Malformed TOML"):
        ns.Circuit.from_toml(bad)
    with pytest.raises(CircuitSpecError, match="Cannot read circuit spec"):
        ns.Circuit.from_toml(tmp_path / "missing.toml")
    nosize = tmp_path / "nosize.toml"
    nosize.write_text("[regions.A]\nrole = 'input'\n")
    with pytest.raises(CircuitSpecError, match=r"regions.A.size is missing"):
        ns.Circuit.from_toml(nosize)


# Regions declared out of role order, so that every neuron vector skips some: y x h z g (sizes 2 3 4 2 5).
LAYOUT = {"dynamics": "discrete", "steps": 2,
          "regions": {"y": {"size": 2, "role": "output"}, "x": {"size": 3, "role": "input"}, "h": {"size": 4},
                      "z": {"size": 2, "role": "input"}, "g": {"size": 5}},
          "projections": [{"pre": "x", "post": "h"}, {"pre": "z", "post": "g"}, {"pre": "h", "post": "g"},
                          {"pre": "g", "post": "h", "gain": 0.5}, {"pre": "g", "post": "y"}, {"pre": "x", "post": "y"}]}


def test_slices_lay_regions_end_to_end_in_declaration_order():
    c = ns.Circuit.from_dict(LAYOUT)
    # worked out by hand from the sizes above
    assert c.slices() == {"y": slice(0, 2), "x": slice(2, 5), "h": slice(5, 9), "z": slice(9, 11), "g": slice(11, 16)}
    assert c.slices("input") == {"x": slice(0, 3), "z": slice(3, 5)}
    assert c.slices(("hidden", "output")) == {"y": slice(0, 2), "h": slice(2, 6), "g": slice(6, 11)}
    assert c.slices(["output", "hidden"]) == c.slices(("hidden", "output"))  # the roles' order does not matter
    assert c.slices(("input", "hidden")) == {"x": slice(0, 3), "h": slice(3, 7), "z": slice(7, 9), "g": slice(9, 14)}
    assert (c.n_neurons(), c.n_neurons("input"), c.n_neurons(("hidden", "output"))) == (16, 5, 11)
    assert (c.n_in, c.n_out) == (5, 2)
    assert c.offsets(["g", "x", "y"]) == {"g": 0, "x": 5, "y": 8}
    assert c.offsets(["x", "z"]) == {n: s.start for n, s in c.slices("input").items()}
    with pytest.raises(ParameterError, match="'roles' parameter must be one of"):
        c.slices("recurrent")
    with pytest.raises(ParameterError, match="Region 'q' \\(in 'names'\\) does not exist"):
        c.offsets(["x", "q"])


def test_block_slices_place_each_weight_at_its_regions():
    c = ns.Circuit.from_dict(LAYOUT)
    rec, senders = ("hidden", "output"), ("input", "hidden")
    s = slice
    assert c.block_slices(rec, senders) == {
        "x->h": (s(2, 6), s(0, 3)), "z->g": (s(6, 11), s(7, 9)), "h->g": (s(6, 11), s(3, 7)),
        "g->h": (s(2, 6), s(9, 14)), "g->y": (s(0, 2), s(9, 14)), "x->y": (s(0, 2), s(0, 3))}
    assert c.block_slices(rec, rec) == {"h->g": (s(6, 11), s(2, 6)), "g->h": (s(2, 6), s(6, 11)),
                                        "g->y": (s(0, 2), s(6, 11))}
    assert c.block_slices("output", "input") == {"x->y": (s(0, 2), s(0, 3))}
    for name, (rows, cols) in c.block_slices(rec, senders).items():
        assert (rows.stop - rows.start, cols.stop - cols.start) == c.shape(name), name


def test_init_scale_repeats_each_weights_init_std_in_theta_order():
    rnn = ns.linear_rnn(n=6, n_in=2, n_out=3, steps=2, gain=0.7)
    masks = {"B": np.zeros((6, 2), bool), "W": np.zeros((6, 6), bool), "C": np.zeros((3, 6), bool)}
    masks["B"][0, 1] = masks["B"][4, 0] = True
    masks["W"][2, :5] = True
    masks["C"][1, 3] = True
    alloc = ns.Allocation.from_masks(rnn, masks)
    # B ~ N(0, 1/n_in), W ~ N(0, g^2/n), C ~ N(0, 1/n); theta lists B's plastic entries, then W's, then C's
    want = np.array([1 / np.sqrt(2)] * 2 + [0.7 / np.sqrt(6)] * 5 + [1 / np.sqrt(6)])
    np.testing.assert_allclose(rnn.init_scale(alloc), want, rtol=1e-15)
    for same in (alloc.masks, alloc.counts, {"W": 5, "B": 2, "C": masks["C"]}):
        assert np.array_equal(rnn.init_scale(same), rnn.init_scale(alloc))
    np.testing.assert_allclose(rnn.init_scale({"W": 3}), [0.7 / np.sqrt(6)] * 3, rtol=1e-15)
    assert rnn.init_scale({}).shape == (0,)
    # the order is the one assemble() scatters theta in: each plastic entry gets its own weight's scale
    frozen = {k: torch.zeros(rnn.shape(k), dtype=torch.float64) for k in rnn.weight_names}
    index = {k: torch.as_tensor(v) for k, v in alloc.indices.items()}
    placed = assemble(frozen, index, torch.as_tensor(rnn.init_scale(alloc)))
    for k in rnn.weight_names:
        assert np.all(placed[k].numpy()[masks[k]] == rnn.init_std[k]) and not placed[k].numpy()[~masks[k]].any()
    with pytest.raises(AllocationError, match="Weight 'V' \\(in 'plastic'\\) does not exist"):
        rnn.init_scale({"V": 1})
    with pytest.raises(AllocationError, match=r"must have shape \(6, 6\)"):
        rnn.init_scale({"W": np.ones((2, 2), bool)})
    with pytest.raises(AllocationError, match="must be >= 0"):
        rnn.init_scale({"W": -1})


def test_bad_arguments_raise_the_toolkits_errors():
    c = ns.feedforward([3, 2])
    with pytest.raises(ParameterError, match="Weight 'W9' \\(in 'name'\\) does not exist. Expected one of \\['W1'\\]"):
        c.shape("W9")
    with pytest.raises(CircuitSpecError, match="'regions' parameter must hold Region objects"):
        ns.Circuit(({"name": "x", "size": 3},), ())
    with pytest.raises(CircuitSpecError, match="'projections' must be an array"):
        ns.Circuit.from_dict(_spec(projections=3))


V1_CLASSES = {"E": (80, 1), "PV": (10, -1), "SST": (6, -1), "VIP": (4, -1)}


@pytest.mark.slow
@pytest.mark.parametrize("stem", ["v1_four_class", "v1_four_class_continuous"])
def test_v1_four_class_circuits_obey_dale_and_are_stable_as_drawn(stem):
    """The shipped four-class V1 circuits (issue 27): class sizes, L4 input onto E and PV, a read-out of 5 from E,
    the Dale sign of every drawn weight, and stability over 200 teacher draws by an eigenvalue computation written
    here (numpy eigvals of the recurrent block assembled by hand, on the steady scale for continuous time)."""
    circuit = ns.Circuit.from_toml(ROOT / "circuits" / f"{stem}.toml")
    assert circuit.region["L4"].role == "input" and circuit.region["L4"].size == 20
    assert circuit.region["OUT"].role == "output" and circuit.region["OUT"].size == 5
    for name, (size, sign) in V1_CLASSES.items():
        region = circuit.region[name]
        assert (region.size, region.sign, region.role) == (size, sign, "hidden")
    assert {(p.pre, p.post) for p in circuit.projections if p.pre == "L4"} == {("L4", "E"), ("L4", "PV")}
    assert {p.pre for p in circuit.projections if p.post == "OUT"} == {"E"}
    assert {"VIP->SST", "SST->E", "SST->PV", "PV->E"} <= set(circuit.weight_names)
    assert {p.post for p in circuit.projections if p.pre == "E"} == {"E", "PV", "SST", "VIP", "OUT"}
    # the spec check accepted it without scaling: the gains are the file's
    assert circuit.projection["PV->E"].gain == 0.6 and circuit.stability.unstable_fraction < 0.01
    order = list(V1_CLASSES)
    edges = np.cumsum([0] + [V1_CLASSES[r][0] for r in order])
    at = {r: slice(edges[i], edges[i + 1]) for i, r in enumerate(order)}
    spec = circuit.to_dict()
    tau = (np.concatenate([np.full(V1_CLASSES[r][0], float(spec["tau"][r])) for r in order])
           if "tau" in spec else None)
    values = []
    for k in range(200):
        w = circuit.sample_weights(np.random.default_rng(np.random.SeedSequence([27, k])))
        for p in circuit.projections:
            sign = circuit.region[p.pre].sign
            if sign is not None:
                assert (sign * w[p.name] >= 0).all(), (p.name, k)
            assert (w[p.name][~circuit.structure[p.name]] == 0).all()
        big = np.zeros((100, 100))
        for p in circuit.projections:
            if p.pre in at and p.post in at:
                big[at[p.post], at[p.pre]] = w[p.name]
        if tau is None:  # steady: stable iff max Re(eig W) < 1
            values.append(np.linalg.eigvals(big).real.max())
        else:  # continuous: stable iff max Re eig(T^-1 (W - I)) < 0; steady scale 1 + tau_max * that
            values.append(1.0 + tau.max() * np.linalg.eigvals((big - np.eye(100)) / tau[:, None]).real.max())
    values = np.array(values)
    assert (values >= 1.0).mean() < 0.01
    assert np.median(values) < 0.8  # well inside the limit 1 (the files' comments: 0.56 steady, 0.40 continuous)
    assert values.max() < 1.0


# ---------------------------------------------------------------------------------------------- autapses (issue 27)
_AUTAPSE_SPEC = """
dynamics = "steady"
seed = 3
[regions.IN]
size = 2
role = "input"
[regions.E]
size = 9
[regions.OUT]
size = 2
role = "output"
[[projections]]
pre = "IN"
post = "E"
[[projections]]
pre = "E"
post = "E"
p = {p}
gain = 0.4
{extra}
[[projections]]
pre = "E"
post = "OUT"
"""


@pytest.mark.parametrize("p", [1.0, 0.5])
def test_autapses_false_removes_the_diagonal_and_nothing_else(p):
    with_self = ns.Circuit.from_toml_text(_AUTAPSE_SPEC.format(p=p, extra=""))
    without = ns.Circuit.from_toml_text(_AUTAPSE_SPEC.format(p=p, extra="autapses = false"))
    a, b = with_self.structure["E->E"], without.structure["E->E"]
    # independent count: the same Bernoulli draw (the structure seed's), minus the self-synapses it drew
    off = ~np.eye(9, dtype=bool)
    assert not np.diag(b).any()
    assert (a[off] == b[off]).all()
    assert int(b.sum()) == int(a.sum()) - int(np.trace(a))
    if p == 1.0:
        assert int(b.sum()) == 9 * 8
    weights = without.sample_weights(np.random.default_rng(0))["E->E"]
    assert (np.diag(weights) == 0).all() and (weights[b] != 0).all()
    # the default keeps them, and a TOML round trip keeps the choice
    assert with_self.projection["E->E"].autapses and "autapses" not in with_self.to_toml()
    back = ns.Circuit.from_toml_text(without.to_toml())
    assert not back.projection["E->E"].autapses and (back.structure["E->E"] == b).all()


def test_autapses_false_is_refused_where_it_cannot_apply():
    spec = _AUTAPSE_SPEC.format(p=1.0, extra="").replace('pre = "E"\npost = "OUT"',
                                                           'pre = "E"\npost = "OUT"\nautapses = false')
    with pytest.raises(CircuitSpecError, match=r"projections\[E->OUT\]\.autapses = false applies to a projection "
                                               r"from a region onto itself"):
        ns.Circuit.from_toml_text(spec)
    with pytest.raises(CircuitSpecError, match=r"autapses must be true or false"):
        ns.Circuit.from_toml_text(_AUTAPSE_SPEC.format(p=1.0, extra='autapses = "no"'))
