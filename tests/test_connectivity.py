"""Circuits from measured connectivity: matrices, edge lists, connectivity files, fixed projections, bad input.

References are independent of the code under test: the count matrices written here, TOML text written by hand,
the init formula in closed form, the steady fixed point solved with numpy.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

import neurosubset as ns
from neurosubset import AllocationError, CircuitSpecError
from neurosubset.dynamics import forward

NAMES = {"x": ("X0", "X1", "X2"), "a": ("A0", "A1", "A2", "A3"), "b": ("B0", "B1", "B2"), "y": ("Y0", "Y1")}
SIGN = {"x": None, "a": 1, "b": None, "y": None}
ROLE = {"x": "input", "a": "hidden", "b": "hidden", "y": "output"}
PAIRS = (("x", "a"), ("a", "a"), ("a", "b"), ("b", "a"), ("b", "y"))  # data order: by (pre, post) region order
GAIN = 0.4  # small: the a <-> b loop stays stable in every draw


def _regions(named=True):
    return tuple(ns.Region(r, len(n), ROLE[r], SIGN[r], n if named else None) for r, n in NAMES.items())


def _counts():
    """Synapse counts (n_post, n_pre) per region pair: integers 0..4, about half zero, fixed seed."""
    rng = np.random.default_rng(7)
    out = {}
    for pre, post in PAIRS:
        c = rng.integers(0, 5, size=(len(NAMES[post]), len(NAMES[pre]))) * (rng.random((len(NAMES[post]),
                                                                                         len(NAMES[pre]))) < 0.6)
        c[0, 0] = 3  # every pair holds at least one synapse
        out[(pre, post)] = c.astype(float)
    return out


def _full_matrix(counts):
    """One (N, N) matrix (rows post) over all neurons in region order, and the region label of each neuron."""
    order = list(NAMES)
    start = dict(zip(order, np.cumsum([0] + [len(NAMES[r]) for r in order])))
    n = sum(len(v) for v in NAMES.values())
    big = np.zeros((n, n))
    for (pre, post), c in counts.items():
        big[start[post]:start[post] + c.shape[0], start[pre]:start[pre] + c.shape[1]] = c
    labels = [r for r in order for _ in NAMES[r]]
    return big, labels, [x for r in order for x in NAMES[r]]


def _edges(counts, sign=False):
    rows = []
    for (pre, post), c in counts.items():
        for i, j in zip(*np.nonzero(c)):
            rows.append({"pre": NAMES[pre][j], "post": NAMES[post][i], "count": c[i, j],
                         **({"sign": SIGN[pre] or 0} if sign else {})})
    return pd.DataFrame(rows)


def _toml_by_hand(counts):
    """The same circuit written as TOML text, synapses inline as [post, pre, count]."""
    lines = ['name = "data"', 'dynamics = "steady"', "seed = 3"]
    for r, n in NAMES.items():
        lines += [f"[regions.{r}]", f"size = {len(n)}", f'role = "{ROLE[r]}"', f"neurons = {list(n)!r}"]
        if SIGN[r] is not None:
            lines.append(f"sign = {SIGN[r]}")
    for (pre, post), c in counts.items():
        trip = ", ".join(f"[{i}, {j}, {int(c[i, j])}]" for i, j in zip(*np.nonzero(c)))
        lines += ["[[projections]]", f'pre = "{pre}"', f'post = "{post}"', f"gain = {GAIN}", f"synapses = [{trip}]"]
    return "\n".join(lines).replace("'", '"') + "\n"


def _build(connectivity, **kw):
    return ns.Circuit.from_connectivity(_regions(), connectivity, gain=GAIN, seed=3, name="data", **kw)


def test_matrix_edge_list_and_toml_give_the_same_circuit_and_draws(tmp_path):
    counts = _counts()
    big, labels, names = _full_matrix(counts)
    csv = tmp_path / "edges.csv"
    _edges(counts).to_csv(csv, index=False)
    circuits = {
        "per projection": _build({f"{pre}->{post}": c for (pre, post), c in counts.items()}),
        "scipy.sparse per projection": _build({(pre, post): sp.csr_matrix(c) for (pre, post), c in counts.items()}),
        "one matrix + labels": _build(big, labels=labels),
        "one matrix (rows pre) + names": _build(sp.coo_matrix(big.T), names=names, rows="pre"),
        "edge list": _build(_edges(counts)),
        "edge list with signs": _build(_edges(counts, sign=True)),
        "csv": _build(csv),
    }
    by_hand = ns.Circuit.from_toml_text(_toml_by_hand(counts))
    for label, c in circuits.items():
        assert c == by_hand, label
    for (pre, post), c in counts.items():  # structure = the data, not a Bernoulli draw
        np.testing.assert_array_equal(by_hand.structure[f"{pre}->{post}"], c > 0)
    for label, c in circuits.items():
        w1, w2 = c.sample_weights(np.random.default_rng(11)), by_hand.sample_weights(np.random.default_rng(11))
        for k in w2:
            np.testing.assert_array_equal(w1[k], w2[k], err_msg=f"{label}: {k}")
            assert not w2[k][~(counts[tuple(k.split("->"))] > 0)].any()
    assert by_hand.neurons["a"] == NAMES["a"] and (by_hand.sample_weights(np.random.default_rng(0))["a->b"] >= 0).all()


def test_toml_embeds_the_data_and_a_spec_may_point_to_a_file_next_to_it(tmp_path):
    counts = _counts()
    ref = ns.Circuit.from_toml_text(_toml_by_hand(counts))
    text = ref.to_toml()
    assert "synapses" in text and ns.Circuit.from_toml_text(text) == ref
    head = _toml_by_hand(counts).split("[[projections]]")[0]
    decl = "".join(f'[[projections]]\npre = "{a}"\npost = "{b}"\ngain = {GAIN}\n' for a, b in PAIRS)
    np.savez(tmp_path / "c.npz", **{f"{a}->{b}": c for (a, b), c in counts.items()})
    _edges(counts).to_csv(tmp_path / "c.csv", index=False)
    for file in ("c.npz", "c.csv"):
        spec = tmp_path / f"spec_{file[2:]}.toml"
        spec.write_text(f'connectivity = "{file}"\n' + head + decl)
        loaded = ns.Circuit.from_toml(spec)
        assert loaded == ref, file
        assert file not in loaded.to_toml()  # the data, never the path


def test_signs_in_a_connectivity_file_named_by_a_spec_reach_the_circuit(tmp_path):
    """A signed count in a .npz (negative entries) and a .csv's sign column give per-synapse signs on the
    unsigned region b's projection b->a; plain counts leave signs free; inline + file signs are refused."""
    counts = _counts()
    sign = np.where(np.random.default_rng(11).random(counts[("b", "a")].shape) < 0.5, -1.0, 1.0)
    sign[0, 0] = -1.0  # at least one negative entry (a signed count)
    present = counts[("b", "a")] > 0
    expected = tuple((int(i), int(j), int(sign[i, j])) for i, j in zip(*np.nonzero(present)))
    head = _toml_by_hand(counts).split("[[projections]]")[0]
    decl = "".join(f'[[projections]]\npre = "{a}"\npost = "{b}"\ngain = {GAIN}\n' for a, b in PAIRS)
    np.savez(tmp_path / "s.npz", **{f"{a}->{b}": c * (sign if (a, b) == ("b", "a") else 1.0)
                                    for (a, b), c in counts.items()})
    table = _edges(counts)
    table["sign"] = [sign[NAMES["a"].index(po), NAMES["b"].index(pr)] if pr in NAMES["b"] and po in NAMES["a"]
                     else (1 if pr in NAMES["a"] else 0) for pr, po in zip(table["pre"], table["post"])]
    table.to_csv(tmp_path / "s.csv", index=False)
    ref = ns.Circuit.from_toml_text(_toml_by_hand(counts))
    rng = np.random.default_rng(0)
    for file in ("s.npz", "s.csv"):
        spec = tmp_path / f"spec_{file[2:]}.toml"
        spec.write_text(f'connectivity = "{file}"\n' + head + decl)
        loaded = ns.Circuit.from_toml(spec)
        assert loaded.projection["b->a"].signs == expected, file
        assert loaded.projection["b->a"].synapses == ref.projection["b->a"].synapses, file  # |signed count|
        assert all(loaded.projection[f"{a}->{b}"].signs is None for a, b in PAIRS if (a, b) != ("b", "a")), file
        w = np.stack([loaded.sample_weights(rng)["b->a"] for _ in range(50)])
        assert all((s * w[:, i, j] > 0).all() for i, j, s in expected), file
        assert ns.Circuit.from_toml_text(loaded.to_toml()) == loaded, file
    assert ref.projection["b->a"].signs is None  # plain counts: free
    inline = decl.replace('pre = "b"\npost = "a"\n', 'pre = "b"\npost = "a"\nsigns = [[0, 0, -1]]\n')
    (tmp_path / "both.toml").write_text('connectivity = "s.npz"\n' + head + inline)
    with pytest.raises(CircuitSpecError, match="inline signs and signs in") as err:
        ns.Circuit.from_toml(tmp_path / "both.toml")
    assert "\n" not in str(err.value)


def test_init_modes_follow_their_formulas():
    counts = _counts()
    mapping = {f"{pre}->{post}": c for (pre, post), c in counts.items()}
    by_gain = _build(mapping)
    by_count = _build(mapping, init="count")
    for name, c in mapping.items():
        present = c > 0
        k = present.sum() / c.shape[0]  # mean in-degree
        np.testing.assert_allclose(by_gain.init_sd[name], np.where(present, GAIN / np.sqrt(k), 0.0), rtol=1e-15)
        expected = GAIN * c / np.sqrt((c**2).sum(axis=1).mean())
        np.testing.assert_allclose(by_count.init_sd[name], expected, rtol=1e-15)
        assert (by_count.init_sd[name] ** 2).sum(axis=1).mean() == pytest.approx(GAIN**2)
    alloc = ns.allocate(by_count, 6, strategy="spread-rows", seed=1)
    order = np.concatenate([by_count.init_sd[w][alloc.masks[w]] for w in by_count.weight_names])
    np.testing.assert_array_equal(by_count.init_scale(alloc), order)
    with pytest.raises(AllocationError, match="need a bool mask"):
        by_count.init_scale({"a->b": 2})


def _fixed_io_circuit():
    """Probes enter through a fixed identity onto 'a'; the read-out copies 'b' through a fixed identity."""
    regions = (ns.Region("x", 4, "input"), ns.Region("a", 4), ns.Region("b", 3), ns.Region("y", 3, "output"))
    counts = {"a->a": np.array([[0, 1, 0, 2], [3, 0, 0, 0], [0, 1, 0, 0], [0, 0, 2, 0.]]),
              "a->b": np.array([[1, 0, 2, 0], [0, 3, 0, 1], [1, 1, 0, 0.]]),
              "b->a": np.array([[0, 1, 0], [2, 0, 0], [0, 0, 1], [0, 1, 0.]])}
    fixed = (ns.Projection("x", "a", weights=tuple((i, i, 1.0) for i in range(4))),
             ns.Projection("b", "y", weights=tuple((i, i, 1.0) for i in range(3))))
    return ns.Circuit.from_connectivity(regions, counts, gain=0.5, projections=fixed, name="io"), counts


def test_fixed_projections_are_given_never_drawn_never_plastic():
    circuit, counts = _fixed_io_circuit()
    for seed in (0, 1):
        w = circuit.sample_weights(np.random.default_rng(seed))
        np.testing.assert_array_equal(w["x->a"], np.eye(4))
        np.testing.assert_array_equal(w["b->y"], np.eye(3))
    eligible = sum(int((c > 0).sum()) for c in counts.values())
    full = ns.allocate(circuit, eligible, strategy="random")
    assert full.counts["x->a"] == 0 and full.counts["b->y"] == 0 and full.size == eligible
    with pytest.raises(AllocationError, match=f"must be <= {eligible}"):
        ns.allocate(circuit, eligible + 1)
    with pytest.raises(AllocationError, match="Fixed projections are never plastic"):
        ns.Allocation.from_masks(circuit, {"x->a": np.eye(4, dtype=bool)})
    assert ns.Circuit.from_toml_text(circuit.to_toml()) == circuit
    # the steady outputs solved independently: r = W r + W_in x over (a, b, y), y = r_b
    w = circuit.sample_weights(np.random.default_rng(5))
    x = np.random.default_rng(6).standard_normal((2, 4))
    a = np.zeros((10, 10))
    a[:4, :4], a[4:7, :4], a[:4, 4:7], a[7:, 4:7] = w["a->a"], w["a->b"], w["b->a"], np.eye(3)
    rates = np.linalg.solve(np.eye(10) - a, np.vstack([np.eye(4), np.zeros((6, 4))]) @ x.T)
    tw = {k: torch.as_tensor(v)[None] for k, v in w.items()}
    out = forward(circuit, tw, torch.as_tensor(x)[None])[0].numpy()
    np.testing.assert_allclose(out, rates[7:].T, rtol=1e-12, atol=1e-14)


def test_the_certificate_ignores_fixed_projections():
    circuit, counts = _fixed_io_circuit()
    full = ns.Allocation.from_masks(circuit, {k: c > 0 for k, c in counts.items()})
    assert ns.certify(circuit, full, m=2).verdict in ("one", "positive")
    assert int(ns.minimal_budget(circuit, m=2)) <= full.size


@pytest.mark.parametrize("make, match", [
    (lambda c, big, lab, nm: _build(big, names=[n if n != "A2" else "Q2" for n in nm]),
     r"Region neuron\(s\) \['A2'\] are not among the matrix's 'names'. Allowed: \["),
    (lambda c, big, lab, nm: _build({"a->b": c[("a", "b")].T}), r"connectivity\['a->b'\] has shape \(4, 3\); the "
                                                                 r"regions need \(3, 4\) \(n_post, n_pre\)"),
    (lambda c, big, lab, nm: _build(big[:-1, :-1], labels=lab[:-1]), r"2 neurons labelled 'y'.*region 'y' has size 3|"
                                                                     r"1 neurons labelled 'y'; region 'y' has size 2"),
    (lambda c, big, lab, nm: _build(big, labels=["zz"] + lab[1:]), r"labels name region\(s\) \['zz'\] that do not "
                                                                   r"exist. Expected one of \['x', 'a', 'b', 'y'\]"),
    (lambda c, big, lab, nm: _build({"a->b": -c[("a", "b")]}), r"synapse counts must be >= 0. Got -3"),
    (lambda c, big, lab, nm: _build(_edges(c).assign(count=lambda d: d["count"] - 10)),
     r"'count' must be a finite number >= 0"),
    (lambda c, big, lab, nm: ns.Projection("a", "b", synapses=((0, 0, -1.0),)), r"synapse counts must be >= 0"),
    (lambda c, big, lab, nm: _build(pd.concat([_edges(c), pd.DataFrame([{"pre": "A0", "post": "NOPE", "count": 1}])],
                                              ignore_index=True)),
     r"post neuron 'NOPE' is in no region \(a region's neurons are its 'neurons = \[...\]' list \(TOML: in its "
     r"\[regions.NAME\] table.*Allowed, e.g.: \['A0'"),
    (lambda c, big, lab, nm: _build(np.pad(big, ((0, 1), (0, 1)), constant_values=1), names=nm + ["LOOSE"]),
     r"an edge touches neuron 'LOOSE', which is in no region"),
    (lambda c, big, lab, nm: _build(_edges(c).drop(columns="count")), r"lacks column\(s\) \['count'\]"),
    # a sign on an unsigned region's edge is a per-synapse sign (issue 28); on a signed region it must agree
    (lambda c, big, lab, nm: _build(_edges(c, sign=True).assign(sign=-1)),
     r"sign -1 differs from the sign of region '\w+' \(1\); .*allowed 1"),
    (lambda c, big, lab, nm: _build(big, labels=lab, rows="col"),
     r"'rows' parameter must be one of \['post', 'pre'\]"),
    (lambda c, big, lab, nm: _build({"a->q": c[("a", "b")]}),
     r"key 'a->q' must be 'PRE->POST'.*\['x', 'a', 'b', 'y'\]"),
])
def test_bad_input_is_one_line_naming_the_field_and_the_allowed_values(make, match):
    counts = _counts()
    big, labels, names = _full_matrix(counts)
    with pytest.raises(CircuitSpecError, match=match) as err:
        make(counts, big, labels, names)
    assert "\n" not in str(err.value)


def test_a_sweep_counts_only_eligible_synapses():
    from neurosubset._schema import INFEASIBLE_BUDGET

    circuit, counts = _fixed_io_circuit()
    eligible = sum(int((c > 0).sum()) for c in counts.values())  # 15; the 7 fixed identity entries do not count
    with pytest.warns(UserWarning, match=f"must be <= {eligible}"):
        ds = ns.sweep(circuit, budget=[eligible + 1], m=[2], strategy=["random"], trials=2, certificate=False)
    assert (ds["status"].values == INFEASIBLE_BUDGET).all(), ds["status"].values


@pytest.mark.slow
def test_results_carry_the_given_neuron_names_as_coordinates(tmp_path):
    import xarray as xr

    from neurosubset._schema import cf_encoding, var_name
    from neurosubset.responses import weights_dataset

    circuit = _build(_edges(_counts()))
    alloc = ns.Allocation.from_masks(circuit, {"a->b": circuit.structure["a->b"]})
    ds = ns.match_probability(circuit, alloc, m=2, trials=2, seed=1, return_weights=True)
    for name in circuit.weight_names:  # weights' dims: the names given, in region order
        pre, post = name.split("->")
        post_dim, pre_dim = ds[f"teacher_{var_name(name)}"].dims[1:]
        assert list(ds[f"{post_dim}_neuron_name"].values) == list(NAMES[post])
        assert list(ds[f"{pre_dim}_neuron_name"].values) == list(NAMES[pre])
    # the synapse dim: each synapse's neurons, by name, from the given counts
    want = sorted((f"{pre}->{post}", NAMES[post][i], NAMES[pre][j])
                  for (pre, post), c in _counts().items() for i, j in zip(*np.nonzero(c)))
    got = sorted(zip(ds["synapse_weight"].values, ds["synapse_post_name"].values, ds["synapse_pre_name"].values))
    assert got == want
    ds.to_netcdf(tmp_path / "r.nc", engine="h5netcdf", encoding=cf_encoding(ds))
    with xr.open_dataset(tmp_path / "r.nc", engine="h5netcdf") as back:  # char arrays read back as the names
        assert list(back["synapse_post_name"].values.astype(str)) == list(ds["synapse_post_name"].values)
    w = weights_dataset(circuit, circuit.sample_weights(np.random.default_rng(0)))
    assert list(w[f"{var_name('b->y')}_pre_neuron_name"].values) == list(NAMES["b"])
    # a sweep store: the masks' dims carry the names too, in memory and read back from the zarr store
    swept = ns.sweep(circuit, budget=[2], m=[1], strategy=["random"], trials=1, certificate=False,
                     store=tmp_path / "s.zarr")
    for held in (swept, xr.open_zarr(tmp_path / "s.zarr")):
        for name in circuit.weight_names:
            pre, post = name.split("->")
            post_dim, pre_dim = held[f"mask_{var_name(name)}"].dims[-2:]
            assert [str(v) for v in held[f"{post_dim}_neuron_name"].values] == list(NAMES[post])
            assert [str(v) for v in held[f"{pre_dim}_neuron_name"].values] == list(NAMES[pre])
    unnamed = ns.Circuit.from_connectivity(_regions(named=False), {f"{a}->{b}": c for (a, b), c in _counts().items()},
                                           gain=GAIN, seed=3)
    plain = ns.match_probability(unnamed, ns.Allocation.from_masks(unnamed, {"a->b": unnamed.structure["a->b"]}),
                                 m=2, trials=2, seed=1)
    assert not [c for c in plain.coords if str(c).endswith("_name")]


def test_projections_between_the_same_regions_are_summed_in_the_steady_solve_and_its_jacobian():

    circuit, _ = _fixed_io_circuit()
    leak = ns.Projection("a", "a", name="gap:a->a", weights=((0, 0, -0.3), (0, 1, 0.3), (1, 0, 0.3), (1, 1, -0.3)))
    dup = ns.Circuit(regions=circuit.regions, projections=(leak, *circuit.projections), dynamics="steady", name="dup")
    w = dup.sample_weights(np.random.default_rng(5))
    x = np.random.default_rng(6).standard_normal((2, 4))

    def numpy_outputs(w):  # r = (W_chem + W_gap) r + x over (a, b, y), y = r_b, written here
        a = np.zeros((10, 10))
        a[:4, :4], a[4:7, :4], a[:4, 4:7], a[7:, 4:7] = w["a->a"] + w["gap:a->a"], w["a->b"], w["b->a"], np.eye(3)
        return np.linalg.solve(np.eye(10) - a, np.vstack([np.eye(4), np.zeros((6, 4))]) @ x.T)[7:].T

    tw = {k: torch.as_tensor(v)[None] for k, v in w.items()}
    out = forward(dup, tw, torch.as_tensor(x)[None])[0].numpy()
    np.testing.assert_allclose(out, numpy_outputs(w), rtol=1e-12, atol=1e-14)
    assert not np.allclose(out, numpy_outputs({**w, "gap:a->a": 0 * w["gap:a->a"]}))  # the gap term counts
    # the adjoint Jacobian of the plastic a->a entries against central differences of the numpy solve
    alloc = ns.Allocation.from_masks(dup, {"a->a": dup.structure["a->a"]})
    layout = dup.dynamics.adjoint_layout(dup, alloc)
    jac = dup.dynamics.adjoint_jacobian(dup, layout, tw, torch.as_tensor(x)[None])[0].numpy()
    cols = []
    for i, j in zip(*np.nonzero(dup.structure["a->a"])):
        step = {k: v.copy() for k, v in w.items()}
        step["a->a"][i, j] += 1e-6
        hi = numpy_outputs(step)
        step["a->a"][i, j] -= 2e-6
        cols.append(((hi - numpy_outputs(step)) / 2e-6).reshape(-1))
    np.testing.assert_allclose(jac.reshape(len(cols[0]), -1), np.stack(cols, axis=1), rtol=1e-6, atol=1e-8)


# ------------------------------------------------------------------------- edge lists and default names (issue 27)
_HIDDEN_NAMED = """
dynamics = "steady"
connectivity = "edges.csv"
[regions.IN]
size = 2
role = "input"
[regions.E]
size = 3
neurons = ["e0", "e1", "e2"]
[regions.OUT]
size = 2
role = "output"
[[projections]]
pre = "IN"
post = "E"
[[projections]]
pre = "E"
post = "E"
gain = 0.4
[[projections]]
pre = "E"
post = "OUT"
"""


def test_a_csv_needs_names_only_where_regions_list_them_input_and_output_default_named(tmp_path):
    # edges by hand: input IN[1] -> e0 (2 synapses), e0 -> e2, e2 -> e1, e1 -> OUT[0] (3), e2 -> OUT[1]
    (tmp_path / "edges.csv").write_text("pre,post,count\nIN[1],e0,2\ne0,e2,1\ne2,e1,1\ne1,OUT[0],3\ne2,OUT[1],1\n")
    (tmp_path / "v.toml").write_text(_HIDDEN_NAMED)
    c = ns.Circuit.from_toml(tmp_path / "v.toml")
    expected = {"IN->E": np.array([[0, 2], [0, 0], [0, 0]]), "E->E": np.array([[0, 0, 0], [0, 0, 1], [1, 0, 0]]),
                "E->OUT": np.array([[0, 3, 0], [0, 0, 1]])}
    for name, counts in expected.items():
        np.testing.assert_array_equal(c.structure[name], counts > 0, err_msg=name)
        got = {(i, j): n for i, j, n in c.projection[name].synapses}
        assert got == {(int(i), int(j)): float(counts[i, j]) for i, j in zip(*np.nonzero(counts))}, name


def test_default_names_are_accepted_in_edge_lists_where_no_region_lists_neurons():
    regions = (ns.Region("IN", 2, "input"), ns.Region("E", 3), ns.Region("OUT", 1, "output"))
    edges = pd.DataFrame({"pre": ["IN[0]", "E[0]", "E[1]", "E[2]"], "post": ["E[0]", "E[1]", "E[2]", "OUT[0]"],
                          "count": [1, 2, 1, 1]})
    c = ns.Circuit.from_connectivity(regions, edges, gain=0.4, dynamics="steady")
    assert c.structure["IN->E"].sum() == 1 and c.structure["IN->E"][0, 0]
    np.testing.assert_array_equal(c.structure["E->E"], np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0]], bool))
    assert c.structure["E->OUT"][0, 2] and c.structure["E->OUT"].sum() == 1


def test_edge_list_errors_speak_toml_to_a_toml_user(tmp_path):
    (tmp_path / "edges.csv").write_text("pre,post,count\nIN[1],e0,2\nE[0],e2,1\n")  # E lists names: no E[0]
    (tmp_path / "v.toml").write_text(_HIDDEN_NAMED)
    with pytest.raises(CircuitSpecError) as err:
        ns.Circuit.from_toml(tmp_path / "v.toml")
    text = str(err.value)
    assert "'E[0]' is in no region" in text and "neurons = [...]" in text and "[regions.NAME]" in text, text
    assert "\n" not in text
