"""Readable reprs and ``_repr_html_`` of Circuit, Allocation and Certificate.

Every number shown is checked against a value the test computes itself from the object's raw fields (region
sizes, structure masks, allocation masks counted in Python loops, closed-form ranks of a single linear layer),
never against a stored string.
"""
from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

import neurosubset as ns
from neurosubset._repr import MAX_ROWS

ROOT = Path(__file__).resolve().parents[1]


class _Tables(HTMLParser):
    """Every <table> of an HTML string as {caption: [row cells, ...]} (header row first), entities decoded."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.tables, self._caption, self._row, self._cell, self._in = {}, None, None, None, None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        if tag == "caption":
            self._in, self._caption = "caption", ""
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._in, self._cell = "cell", ""

    def handle_endtag(self, tag):
        if tag == "caption":
            self.tables[self._caption], self._in = [], None
        elif tag in ("td", "th"):
            self._row.append(self._cell)
            self._in = None
        elif tag == "tr":
            self.tables[self._caption].append(self._row)

    def handle_data(self, data):
        if self._in == "caption":
            self._caption += data
        elif self._in == "cell":
            self._cell += data


def _text_rows(text: str, first: str) -> list[str]:
    """The table line of ``text`` whose first column is ``first``, split into its cells."""
    hits = [line.split() for line in text.splitlines() if line.startswith("    ") and line.split()[0] == first]
    assert len(hits) == 1, (first, text)
    return hits[0]


@pytest.mark.parametrize("spec", ["ca3_ca1.toml", "ei_isn.toml"])
def test_circuit_repr_shows_regions_and_projections_from_the_spec(spec):
    c = ns.Circuit.from_toml(ROOT / "circuits" / spec)
    text, tables = repr(c), _Tables(c._repr_html_()).tables
    sizes = {r.name: r.size for r in c.regions}
    synapses = {p.name: int(sum(bool(v) for row in c.structure[p.name] for v in row)) for p in c.projections}
    head = text.splitlines()[0]
    assert f"Circuit {c.name!r}: {c.dynamics}," in head and f"{sum(sizes.values())} neurons" in head
    assert f"{sum(synapses.values())} synapses" in head
    assert "fixed point" in text and "not a simulation" in text  # steady circuits say what 'steady' means
    sign_word = {None: "free", 1: "+1", -1: "-1"}
    assert tables["regions"][0] == ["region", "size", "role", "sign"]
    for r, html_row in zip(c.regions, tables["regions"][1:], strict=True):
        cells = _text_rows(text, r.name)
        assert cells[:3] == [r.name, str(r.size), r.role] and cells[3] == sign_word[r.sign]
        assert html_row[:3] == [r.name, str(r.size), r.role] and html_row[3].split()[0] == sign_word[r.sign]
    assert tables["projections"][0] == ["projection", "p", "gain", "synapses", "post x pre", "autapses"]
    for p, html_row in zip(c.projections, tables["projections"][1:], strict=True):
        shape = f"{sizes[p.post]}x{sizes[p.pre]}"
        for cells in (_text_rows(text, p.name), html_row):
            assert cells[0] == p.name and float(cells[1]) == p.p and float(cells[2]) == p.gain
            assert int(cells[3]) == synapses[p.name] and cells[4] == shape
            assert cells[5] == ("yes" if p.pre == p.post else "-")  # drawn self-projections allow autapses
    assert len(text.splitlines()) <= 40  # one screen


def test_html_escapes_names():
    c = ns.Circuit.from_toml(ROOT / "circuits" / "ca3_ca1.toml")
    raw = c._repr_html_()
    assert "CA3-&gt;CA1" in raw and "CA3->CA1" not in raw  # '>' of a projection name never reaches the markup


def test_long_tables_are_cut_and_say_how_many_rows_are_left_out():
    layers = 31  # 31 regions, 30 weights
    c = ns.feedforward([3] * layers)
    text = repr(c)
    assert f"... {layers - MAX_ROWS} more" in text and f"... {layers - 1 - MAX_ROWS} more" in text
    assert len(_Tables(c._repr_html_()).tables["regions"]) == MAX_ROWS + 1
    assert len(text.splitlines()) < 2 * MAX_ROWS + 12


@pytest.mark.parametrize("strategy", ["spread-rows", "concentrated-rows", "concentrated-cols"])
def test_allocation_repr_counts_plastic_synapses_rows_and_columns(strategy):
    c = ns.Circuit.from_toml(ROOT / "circuits" / "ca3_ca1.toml")
    a = ns.allocate(c, 60, strategy=strategy, fractions={"CA3->CA3": 0.5, "CA3->CA1": 0.5}, seed=1)
    text, table = repr(a), _Tables(a._repr_html_()).tables["plastic synapses per weight"]
    assert f"budget M = {sum(int(m.sum()) for m in a.masks.values())} plastic synapses" in text.splitlines()[0]
    assert repr(strategy) in text.splitlines()[0] and repr(c.name) in text.splitlines()[0]
    html_rows = {row[0]: row for row in table[1:]}
    for name, mask in a.masks.items():
        rows = [sum(bool(v) for v in mask[i]) for i in range(mask.shape[0])]
        cols = [sum(bool(mask[i][j]) for i in range(mask.shape[0])) for j in range(mask.shape[1])]
        touched = [k for k in rows if k]
        if not touched:
            assert name not in html_rows and name in text.split("no plastic synapse in:")[1].splitlines()[0]
            continue
        expected = [name, str(sum(rows)), f"{len(touched)}/{mask.shape[0]}",
                    f"{sum(1 for k in cols if k)}/{mask.shape[1]}", f"{min(touched)}-{max(touched)}"]
        assert _text_rows(text, name) == expected
        assert html_rows[name] == expected
    assert set(html_rows) == {"CA3->CA3", "CA3->CA1"}


@pytest.mark.parametrize("strategy, per_row", [("spread-rows", (3, 3, 3)), ("concentrated-rows", (6, 3, 0))])
def test_certificate_repr_shows_the_closed_form_ranks(strategy, per_row):
    # one linear layer y = W x, 6 inputs, 3 outputs, m = 3 probes: the plastic Jacobian's rank is
    # sum_i min(k_i, m) over rows with k_i plastic synapses, the full one n_out * min(d_in, m) = 9
    m = 3
    ff = ns.feedforward([6, 3])
    a = ns.allocate(ff, 9, strategy=strategy, seed=0)
    assert tuple(sorted(a.masks["W1"].sum(axis=1), reverse=True)) == per_row
    plastic, full = sum(min(k, m) for k in per_row), 3 * min(6, m)
    cert = ns.certify(ff, a, m=m)
    text, ranks = repr(cert), _Tables(cert._repr_html_()).tables["ranks"]
    verdict = "one" if plastic == full else "zero"
    assert text.splitlines()[0].startswith(f"Certificate: verdict {verdict!r}, MP = {1 if verdict == 'one' else 0}")
    assert [row[:2] for row in ranks[1:]] == [["plastic (dim S)", str(plastic)], ["full (dim V)", str(full)]]
    assert f"m = {m} probes, E = {m * 3} equations, M = 9 plastic of 18 synapses" in text
    assert f"method: float ranks ({cert.method}" in text or f"exact over GF({cert.prime})" in text
    assert ("outputs affine" in text) == bool(np.all(cert.affine))


def test_circuit_table_says_autapses_and_shows_the_density_of_data_projections():
    # a data-given projection: 3 synapses of a 3 x 4 matrix -> density 0.25, never the unused p = 1
    def circuit(autapses):
        regions = (ns.Region("IN", 4, "input"), ns.Region("E", 3), ns.Region("OUT", 1, "output"))
        return ns.Circuit(regions, (ns.Projection("IN", "E", synapses=((0, 0, 1), (1, 2, 2), (2, 3, 1))),
                                    ns.Projection("E", "E", p=0.5, gain=0.3, autapses=autapses),
                                    ns.Projection("E", "OUT")), dynamics="steady")

    text = repr(circuit(autapses=True))
    data_row = _text_rows(text, "IN->E")
    assert data_row[1:3] == ["0.25", "(data)"], data_row
    assert _text_rows(text, "E->E")[-1] == "yes" and _text_rows(text, "E->OUT")[-1] == "-"
    assert "autapses (a neuron onto itself) are allowed" in text
    no_self = circuit(autapses=False)
    assert _text_rows(repr(no_self), "E->E")[-1] == "no"
