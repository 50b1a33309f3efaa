"""Readable text and HTML views of a :class:`~neurosubset.Circuit`, an :class:`~neurosubset.Allocation` and a
:class:`~neurosubset.theory.Certificate` (their ``__repr__`` and ``_repr_html_``, the table Jupyter shows).

Each view is built from one list of rows, so the text and the HTML say the same thing: a heading line, then
tables (header + rows). Long tables show their first :data:`MAX_ROWS` rows and say how many were left out, so a
connectome with hundreds of projections still fits on a screen. The objects are read through their public
attributes only (no import of the classes: this module sits below them).
"""
from __future__ import annotations

import html
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .dynamics import Continuous, Discrete, Steady

if TYPE_CHECKING:
    from .circuit import Circuit

MAX_ROWS = 20  # rows per table before "... N more"

Table = tuple[str, Sequence[str], Sequence[Sequence[str]]]  # (title, header, rows)


def _g(x: float) -> str:
    """A number in few characters: 0.5, 1, 1.2e-08."""
    return f"{x:.4g}"


def _text(heading: str, lines: Sequence[str], tables: Sequence[Table]) -> str:
    out = [heading, *(f"  {line}" for line in lines)]
    for title, header, rows in tables:
        shown = [list(header), *(list(r) for r in rows[:MAX_ROWS])]
        widths = [max(len(r[i]) for r in shown) for i in range(len(header))]
        numeric = [all(r[i][:1].isdigit() or r[i] == "-" for r in shown[1:]) for i in range(len(header))]
        out.append(f"  {title}:")
        for row in shown:  # numbers right-aligned, words left-aligned
            cells = [c.rjust(w) if num else c.ljust(w) for c, w, num in zip(row, widths, numeric)]
            out.append("    " + "  ".join(cells).rstrip())
        if len(rows) > MAX_ROWS:
            out.append(f"    ... {len(rows) - MAX_ROWS} more")
    return "\n".join(out)


def _html(heading: str, lines: Sequence[str], tables: Sequence[Table]) -> str:
    esc = html.escape
    out = [f"<div><strong>{esc(heading)}</strong>"]
    out += [f"<div>{esc(line)}</div>" for line in lines]
    for title, header, rows in tables:
        out.append(f"<table><caption>{esc(title)}</caption>")
        out.append("<tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr>")
        out += ["<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in rows[:MAX_ROWS]]
        out.append("</table>")
        if len(rows) > MAX_ROWS:
            out.append(f"<div>... {len(rows) - MAX_ROWS} more</div>")
    return "\n".join(out + ["</div>"])


# ---------------------------------------------------------------------------------------------------- circuit
def _circuit_parts(c: Circuit) -> tuple[str, list[str], list[Table]]:
    dyn = c.dynamics.name + (f", {c.steps} steps" if isinstance(c.dynamics, Discrete) else "")
    if isinstance(c.dynamics, Continuous):  # fields of continuous circuits (s)
        tau = getattr(c, "tau", None)
        tau = ", ".join(f"{k} {_g(v)}" for k, v in tau) if isinstance(tau, tuple) else tau
        dyn += (f", {c.steps} input intervals, tau {tau} s, duration {getattr(c, 'duration', None)} s, "
                f"dt {getattr(c, 'dt', None)} s")
    n_neurons = sum(r.size for r in c.regions)
    heading = (f"Circuit {c.name!r}: {dyn}, {c.nonlinearity}; {n_neurons} neurons, {c.n_synapses} synapses, "
               f"structure seed {c.seed}")
    lines = []
    if isinstance(c.dynamics, Steady):
        lines.append("steady = the fixed point r = W r + input of the rate dynamics (not a simulation); "
                     "stable iff max Re(eig W) < 1")
    regions = [(r.name, str(r.size), r.role, {None: "free", 1: "+1 (exc.)", -1: "-1 (inh.)"}[r.sign])
               for r in c.regions]
    projections = []
    for p in c.projections:
        n_post, n_pre = c.shape(p.name)
        count = int(c.structure[p.name].sum())
        label = p.name if p.name == f"{p.pre}->{p.post}" else f"{p.name} ({p.pre}->{p.post})"
        # data-given structure (synapses, fixed weights): its measured density, not the unused p
        density = _g(p.p) if p.synapses is None and not p.fixed else f"{_g(count / (n_post * n_pre))} (data)"
        # self-synapses: allowed by default in a region onto itself (autapses = false removes them)
        autapses = ("yes" if p.autapses and p.synapses is None and not p.fixed else
                    "no" if not p.autapses else "data") if p.pre == p.post else "-"
        projections.append((label, density, _g(p.gain), str(count), f"{n_post}x{n_pre}", autapses))
    if any(p.pre == p.post and p.autapses and p.synapses is None and not p.fixed for p in c.projections):
        lines.append("autapses (a neuron onto itself) are allowed in drawn recurrent projections by default; "
                     "autapses = false on a projection removes them")
    return heading, lines, [("regions", ("region", "size", "role", "sign"), regions),
                            ("projections", ("projection", "p", "gain", "synapses", "post x pre", "autapses"),
                             projections)]


def circuit_text(c: Circuit) -> str:
    """Text view of a circuit: dynamics, regions (size, role, sign), projections (p, gain, synapse count)."""
    return _text(*_circuit_parts(c))


def circuit_html(c: Circuit) -> str:
    """The same view as an HTML table (Jupyter)."""
    return _html(*_circuit_parts(c))


# ---------------------------------------------------------------------------------------------------- allocation
def _allocation_parts(a: Any) -> tuple[str, list[str], list[Table]]:
    of = f" on {a.circuit_name!r}" if a.circuit_name else ""
    heading = f"Allocation{of}: budget M = {a.size} plastic synapses, strategy {a.strategy!r}"
    rows, frozen = [], [name for name, mask in a.masks.items() if not mask.any()]
    for name, mask in a.masks.items():
        if not mask.any():
            continue
        per_row = mask.sum(axis=1)
        touched = per_row[per_row > 0]
        rows.append((name, str(int(mask.sum())), str(int((per_row > 0).sum())) + f"/{mask.shape[0]}",
                     str(int(mask.any(axis=0).sum())) + f"/{mask.shape[1]}",
                     f"{int(touched.min())}-{int(touched.max())}"))
    lines = [f"hash {a.hash}"]
    if frozen:
        lines.append("no plastic synapse in: " + ", ".join(frozen[:MAX_ROWS])
                     + (f" ... {len(frozen) - MAX_ROWS} more" if len(frozen) > MAX_ROWS else ""))
    header = ("weight", "plastic", "rows touched", "cols touched", "per touched row")
    return heading, lines, [("plastic synapses per weight", header, rows)]


def allocation_text(a: Any) -> str:
    """Text view of an allocation: budget, plastic synapses per weight, rows and columns touched."""
    return _text(*_allocation_parts(a))


def allocation_html(a: Any) -> str:
    """The same view as an HTML table (Jupyter)."""
    return _html(*_allocation_parts(a))


# ---------------------------------------------------------------------------------------------------- certificate
_VERDICTS = {"zero": "MP = 0 exactly", "one": "MP = 1 exactly", "positive": "MP > 0 (its value needs fitting)",
             "unproven": "no proof (ranks for information)"}


def _certificate_parts(cert: Any) -> tuple[str, list[str], list[Table]]:
    heading = f"Certificate: verdict {cert.verdict!r}, {_VERDICTS.get(cert.verdict, cert.verdict)}"
    if cert.method == "exact":
        how = f"exact over GF({cert.prime}), wrong with probability <= {_g(cert.error_bound)}"
    else:
        how = (f"float ranks ({cert.method}{', a randomised estimate' if cert.estimate else ''}; max over "
               f"{cert.points} points, rtol {_g(cert.rtol)}, {'decisive' if cert.decisive else 'indecisive'} gaps)")
    constraints = [name for name, on in (("Dale's law", cert.dale), ("stable students", cert.stable)) if on]
    lines = [f"m = {cert.m} probes, E = {cert.n_equations} equations, M = {cert.n_plastic} plastic of "
             f"{cert.n_synapses} synapses; outputs {'affine' if cert.affine else 'not affine'} in the plastic weights",
             f"method: {how}", f"constraints asked for: {', '.join(constraints) or 'none'}"]
    gap = (lambda x: "-" if x != x else ("none discarded" if x == float("inf") else _g(x)))
    ranks = [("plastic (dim S)", str(cert.plastic_rank), gap(cert.plastic_gap)),
             ("full (dim V)", str(cert.full_rank), gap(cert.full_gap))]
    return heading, lines, [("ranks", ("Jacobian", "rank", "gap s_r/s_r+1"), ranks)]


def certificate_text(cert: Any) -> str:
    """Text view of a certificate: verdict, ranks, method, and what they were computed for."""
    return _text(*_certificate_parts(cert))


def certificate_html(cert: Any) -> str:
    """The same view as an HTML table (Jupyter)."""
    return _html(*_certificate_parts(cert))
