"""The paper's heuristic: an effective count of usable plastic synapses against a closed-form ``dim V``.

Closed form, no Jacobian and no fitting (Schlisselberg & Darshan 2025): plastic synapses beyond what a neuron's
inputs (``r_in``) or its output sensitivity (``r_out``) can use are wasted; ranks are propagated through the region
graph assuming generic weights. Exact for a single linear layer, a rough guess elsewhere (see :func:`heuristic`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._checks import check_int
from ..allocation import Allocation
from ..circuit import Circuit
from ..dynamics import Feedforward, Steady, is_affine
from ._ranks import _check_alloc

HEURISTIC_VERDICTS = ("zero", "one", "in-between")

__all__ = ["Heuristic", "heuristic", "HEURISTIC_VERDICTS"]


@dataclass(frozen=True)
class Heuristic:
    """The paper-style effective-count estimate of an allocation's expressivity (see :func:`heuristic`).

    Attributes
    ----------
    effective : int
        Effective plastic count: plastic synapses that the circuit can use, summed over weights and capped at
        ``required``.
    required : int
        The closed-form estimate of ``dim V`` (the effective count a maximal allocation reaches).
    by_weight : dict
        Weight name -> its effective count before the global cap.
    affine : bool
        Whether the outputs are affine in the plastic weights.
    verdict : {"zero", "one", "in-between"}
        ``"zero"`` if ``effective < required``; ``"one"`` if equal and affine; ``"in-between"`` otherwise.
    mp : float
        Predicted MP: 0 (``"zero"``), 1 (``"one"``), ``nan`` for ``"in-between"``: the principle predicts only
        MP > 0 there, not a value (see :func:`heuristic`).
    surplus : int
        Sum of ``by_weight`` minus ``required`` (negative for ``"zero"``).
    """

    effective: int
    required: int
    by_weight: dict
    affine: bool
    verdict: str
    mp: float
    surplus: int


def _layer_ranks(circuit: Circuit, m: int) -> tuple[dict[str, int], dict[str, int]]:
    """Closed-form ranks per weight: ``r_in`` (presynaptic activity over probes and steps) and ``r_out``
    (the output's sensitivity to the postsynaptic drive, stacked over the steps the weight acts at)."""
    size = {r.name: r.size for r in circuit.regions}
    relu = circuit.nonlinearity == "relu"
    r_in, r_out = {}, {}
    if isinstance(circuit.dynamics, Feedforward):
        rk: dict[str, int] = {}
        for q in circuit.order:
            if circuit.region[q].role == "input":
                rk[q] = min(size[q], m)
            elif relu and circuit.region[q].role == "hidden":
                rk[q] = min(size[q], m)  # a ReLU can raise the rank of its input; at most m probes
            else:
                rk[q] = min(size[q], m, sum(rk[p.pre] for p in circuit.projections_into(q)))
        co: dict[str, int] = {}
        for q in reversed(circuit.order):
            if circuit.region[q].role == "output":
                co[q] = size[q]
            else:
                co[q] = min(size[q], sum(co[p.post] for p in circuit.projections if p.pre == q))
        for p in circuit.projections:
            r_in[p.name], r_out[p.name] = rk[p.pre], co[p.post]
        return r_in, r_out
    if isinstance(circuit.dynamics, Steady):
        for p in circuit.projections:
            role = circuit.region[p.pre].role
            r_in[p.name] = min(size[p.pre], m) if role == "input" else min(size[p.pre], m, circuit.n_in)
            r_out[p.name] = min(size[p.post], circuit.n_out)
        return r_in, r_out
    # discrete: unroll over t = 1..T, h(0) = 0
    steps = circuit.steps
    hidden = [r.name for r in circuit.regions if r.role == "hidden"]
    span = {q: [0] * (steps + 1) for q in hidden}  # dim of the space h_q(1..t) lives in, over all probes
    for t in range(1, steps + 1):
        for q in hidden:
            drive = sum(span[p.pre][t - 1] if p.pre in span else size[p.pre] for p in circuit.projections_into(q))
            span[q][t] = (size[q] if drive else 0) if relu else min(size[q], drive)
    n_read = {q: sum(size[p.post] for p in circuit.projections
                     if p.pre == q and circuit.region[p.post].role == "output") for q in hidden}
    g = {q: [0] * (steps + 2) for q in hidden}  # rank of dy/dh_q(t)
    co = {q: [0] * (steps + 2) for q in hidden}  # rank of dy/dh_q(t..T) stacked
    for t in range(steps, 0, -1):
        for q in hidden:
            nxt = [p.post for p in circuit.projections if p.pre == q and p.post in span]
            if t == steps:
                g[q][t] = co[q][t] = min(size[q], n_read[q])
            else:
                g[q][t] = min(size[q], circuit.n_out, sum(g[s][t + 1] for s in nxt))
                co[q][t] = min(size[q], co[q][t + 1] + g[q][t])
    for p in circuit.projections:
        pre_role, post_role = circuit.region[p.pre].role, circuit.region[p.post].role
        if post_role == "output":
            r_in[p.name] = min(size[p.pre], m) if pre_role == "input" else min(span[p.pre][steps], m)
            r_out[p.name] = size[p.post]
            continue
        if pre_role == "input":
            times = list(range(1, steps + 1))  # x(t) drives h(t)
            r_in[p.name] = min(size[p.pre], m * steps)
        else:
            times = [t for t in range(2, steps + 1) if span[p.pre][t - 1] > 0]  # h(t-1) drives h(t)
            per = [min(span[p.pre][t - 1], m) for t in times]
            r_in[p.name] = min(size[p.pre], span[p.pre][steps - 1], sum(per)) if times else 0
        r_out[p.name] = min(size[p.post], co[p.post][times[0]], sum(g[p.post][t] for t in times)) if times else 0
    return r_in, r_out


def _effective(mask: np.ndarray, a: int, b: int) -> int:
    """Paper's principle for one weight: rows use at most ``a`` synapses, columns at most ``b``, all ``a * b``."""
    if not mask.any():
        return 0
    return int(min(np.minimum(mask.sum(axis=1), a).sum(), np.minimum(mask.sum(axis=0), b).sum(), a * b))


def _chain_sizes(circuit: Circuit) -> list[int] | None:
    """Layer sizes ``[d_0, ..., d_L]`` if the circuit is a dense feed-forward chain, else ``None``."""
    if (not isinstance(circuit.dynamics, Feedforward) or len(circuit.input_regions) != 1
            or len(circuit.output_regions) != 1):
        return None
    if any(not mask.all() for mask in circuit.structure.values()):
        return None
    q, sizes = circuit.input_regions[0], []
    while True:
        sizes.append(circuit.region[q].size)
        out = [p for p in circuit.projections if p.pre == q]
        if not out:
            break
        if len(out) != 1 or len(circuit.projections_into(out[0].post)) != 1:
            return None
        q = out[0].post
    return sizes if len(sizes) == len(circuit.regions) else None


def _required(circuit: Circuit, m: int, r_in: dict[str, int], r_out: dict[str, int]) -> int:
    """Closed-form estimate of ``dim V``."""
    e = m * circuit.n_out
    sizes = _chain_sizes(circuit)
    if sizes is not None and circuit.nonlinearity == "linear":
        # Y = P X with P = W_L ... W_1 of rank <= b: the rank-b matrices of size d_L x min(m, d_0)
        b = min([m] + sizes)
        return b * (sizes[-1] + min(m, sizes[0]) - b)
    if sizes is not None:
        # ReLU chain: parameters minus one positive rescaling per hidden unit, at most E
        hidden = sum(sizes[1:-1])
        return int(min(e, circuit.n_synapses - hidden))
    if circuit.nonlinearity == "linear":
        # linear outputs are Y = M Xbar with Xbar the (n_in * steps) x m stacked probes: dim V <= n_out rank(Xbar)
        steps = circuit.dynamics.input_steps(circuit)
        e = min(e, circuit.n_out * min(m, circuit.n_in * steps))
    full = sum(_effective(circuit.eligible[w], r_in[w], r_out[w]) for w in circuit.weight_names)
    return int(min(e, full))


def heuristic(circuit: Circuit, alloc: Allocation, m: int = 4) -> Heuristic:
    """The paper's effective-count estimate of an allocation's expressivity, in closed form (no fitting).

    Parameters
    ----------
    circuit : Circuit
    alloc : Allocation
    m : int
        Number of probes.

    Returns
    -------
    Heuristic
        ``effective``, ``required``, per-weight counts, predicted ``verdict`` and ``mp``.

    Notes
    -----
    Principle (Schlisselberg & Darshan 2025): plastic synapses beyond what a neuron's inputs can use are wasted.
    For weight ``w`` with ``k_i`` plastic synapses in row ``i`` and ``l_j`` in column ``j``::

        eff_w = min(sum_i min(k_i, r_in), sum_j min(l_j, r_out), r_in * r_out)

    ``r_in`` is the rank of the presynaptic activity over the ``m`` probes (and the steps the weight acts at),
    ``r_out`` the rank of the output's sensitivity to the postsynaptic drive (stacked over those steps). Both are
    propagated through the region graph in closed form, assuming generic weights:

    - feed-forward: ``rank(h_q) = min(n_q, m, sum of the presynaptic ranks)``; a ReLU region gets
      ``min(n_q, m)`` (a ReLU can raise the rank); the sensitivity rank of a region is
      ``min(n_q, sum of its targets' sensitivity ranks)``, ``n_o`` for an output region.
    - discrete (RNN): unrolled in time from ``h(0) = 0``; the activity of a hidden region up to step ``t`` lies
      in a space of dimension ``min(n_q, sum of its sources' dimensions at t - 1)`` (a Krylov space), each
      step adds at most ``m`` to the rank; sensitivities are propagated backwards the same way.
    - steady: ``r_in = min(n_pre, m, n_in)``, ``r_out = min(n_post, n_out)`` (crude).

    ``required`` estimates ``dim V``: exact for dense linear feed-forward chains,
    ``b (d_L + min(m, d_0) - b)`` with ``b = min(m, d_0, ..., d_L)``; ReLU chains ``min(E, N - hidden units)``;
    otherwise ``min(E', sum of eff_w over the full structure)``, with ``E' = n_out min(m, n_in T)`` for linear
    circuits (outputs are linear in the ``n_in T`` stacked inputs of each probe; ``T = 1`` unless discrete) and
    ``E' = E`` for ReLU. It ignores gauge symmetries (e.g. the GL(n) of a linear RNN) and so can overestimate
    ``dim V`` when ``E'`` does not cap it. ``effective`` is
    ``min(sum_w eff_w, required)``.

    Prediction: ``"zero"`` (mp 0) if ``sum_w eff_w < required``; ``"one"`` (mp 1) if not and the outputs are
    affine in the plastic weights (:func:`neurosubset.dynamics.is_affine`); otherwise ``"in-between"`` with
    ``mp = nan``. Counting equations against free parameters gives only the dimension of the reachable set, i.e.
    MP > 0; the value of MP strictly inside (0, 1) is set by where the teacher's output falls relative to the
    folds of a polynomial map (the sign of a discriminant, the side of an extremum), a semialgebraic condition
    that no count of equations and parameters determines. An earlier version returned
    ``1 - 2**-(1 + surplus)``, a guess with no derivation behind it; it was dropped rather than replaced.

    For a single linear layer it is exact: ``r_in = min(m, d_in)``, ``r_out = d_out``, so ``effective =
    required = d_out min(m, d_in)`` iff every row has ``k_i >= min(m, d_in)``, the closed-form condition for
    MP = 1 (MP = 0 otherwise).
    """
    _check_alloc(circuit, alloc)
    m = check_int("m", m, minimum=1)
    r_in, r_out = _layer_ranks(circuit, m)
    by_weight = {w: _effective(alloc.masks[w], r_in[w], r_out[w]) for w in circuit.weight_names}
    required = _required(circuit, m, r_in, r_out)
    total = int(sum(by_weight.values()))
    affine = bool(is_affine(circuit, alloc))
    surplus = total - required
    if total < required:
        verdict, mp = "zero", 0.0
    elif affine:
        verdict, mp = "one", 1.0
    else:
        verdict, mp = "in-between", float("nan")  # MP > 0 only; no value follows from the counts
    return Heuristic(effective=min(total, required), required=required, by_weight=by_weight, affine=affine,
                     verdict=verdict, mp=mp, surplus=surplus)
