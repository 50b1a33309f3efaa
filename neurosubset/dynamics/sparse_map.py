"""The sparse weights layout in the fit: draws, the plastic map ``theta -> F(theta)`` and the dense/sparse switch.

A steady linear circuit of ``10^4`` neurons at a few percent connectivity holds ``10^6`` synapses; its dense weight
matrices take 800 MB per trial and per copy. Here a trial's weights are one float64 vector over the present
synapses (every weight's synapses concatenated in declaration order, each in the row-major order of
:func:`~neurosubset.dynamics.sparse.sparse_structure`), the steady system ``I - A`` is a CSR matrix with a fixed
pattern, and the outputs and their adjoint Jacobian come from sparse solves (``splu`` up to
:data:`SPLU_MAX_NEURONS`, GMRES to relative residual :data:`~neurosubset.dynamics.sparse.GMRES_RTOL` above: the LU
factors of a random E/I matrix fill to ``~n^2``). Discrete linear circuits (``h_t = A h_(t-1) + B x_t``,
:class:`SparseDiscrete`) run ``T`` sparse products forward and ``T`` adjoint ones back. Memory is linear in
synapses and trials.

- :class:`WeightsLayout`: ``DENSE`` or ``SPARSE``, what a result records (attr ``weights_layout``).
- :func:`choose_layout`: the automatic switch, by a crossover measured on the reference machine
  (:data:`SPARSE_MIN_NEURONS`, :data:`SPARSE_MAX_DENSITY`).
- :func:`draw_sparse_weights`: one draw, **the same numbers** as :meth:`Circuit.sample_weights` from the same
  generator (its normal stream redrawn a chunk of rows at a time), so both layouts fit the same trials and make the
  same exact decisions.
- :class:`SparsePlasticMap`: the interface of :class:`~neurosubset.dynamics.PlasticMap` the deciders use (call,
  ``value_and_jacobian``, ``jacobian``, ``subset``), one sparse solve per problem.
"""
from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse
import scipy.sparse.linalg
import torch

from .._checks import ParameterError
from .._memory import check_memory
from .adjoint import FIXED_POINT
from .sparse import GMRES_RTOL, gmres_columns, sparse_structure

if TYPE_CHECKING:
    from ..allocation import Allocation
    from ..circuit import Circuit

__all__ = ["WeightsLayout", "choose_layout", "sparse_applicable", "draw_sparse_weights", "SparseSteady",
           "SparseDiscrete", "sparse_system", "SparsePlasticMap", "SparseWeights", "sparse_weights", "dense_weights",
           "sparse_is_affine", "sparse_max_real_eig", "SPARSE_MIN_NEURONS", "SPARSE_MIN_NEURONS_DISCRETE",
           "SPARSE_MAX_DENSITY", "SPLU_MAX_NEURONS", "SPARSE_EIG_MIN"]

# The crossover (tests/ and benchmarks/bench_sparse.py, 2-core reference machine, one thread, one trial with m = 4,
# 20 outputs, 10^4 plastic synapses): the dense torch LU took 0.25 s at 2,000 neurons and 3.09 s at 5,000, the
# sparse GMRES path 1.29 s and 3.47 s; the dense path's memory grows as n^2 per problem (1.2 GB at 5,000), the
# sparse one's as synapses. Dense stays the default up to 5,000 neurons; above, and sparse enough, sparse.
SPARSE_MIN_NEURONS = 5000
# Discrete circuits (benchmarks/bench_sparse.py step N LAYOUT 10: balanced_ei's family over T = 10 steps, one problem,
# CPU s): dense 0.046 / sparse 0.055 at 500 neurons, 0.084 / 0.066 at 1,000, 0.195 / 0.090 at 2,000, 1.01 / 0.147
# at 5,000: the sparse products win from about 1,000 neurons; the switch takes them above 2,000.
SPARSE_MIN_NEURONS_DISCRETE = 2000
SPARSE_MAX_DENSITY = 0.1  # present synapses / dense entries of the recurrent and input weights
SPLU_MAX_NEURONS = 2000  # up to this many steady neurons the sparse path factors I - A (splu), above it GMRES
_CHUNK = 2**22  # normals drawn per chunk when redrawing a dense draw's stream (32 MB of float64)


class WeightsLayout(enum.Enum):
    """How a fit holds its weights: ``DENSE`` matrices ``(n_post, n_pre)`` per trial, or ``SPARSE`` values on the
    present synapses (:mod:`neurosubset.dynamics.sparse_map`).

    ``.value`` (``"dense"`` or ``"sparse"``) is what results record (attr ``weights_layout`` of
    :func:`neurosubset.match_probability`'s Dataset and of sweep stores) and what
    :class:`~neurosubset.FitOptions` ``weights_layout`` takes besides ``"auto"`` (a member is taken as its value).
    In the sparse layout :func:`neurosubset.fit` returns each weight as a :class:`SparseWeights`; in the dense one
    as a ``(trial, n_post, n_pre)`` array.

    Attributes
    ----------
    DENSE
        Dense float64 matrices ``(n_post, n_pre)`` per trial, dense solves (the default below the crossover).
    SPARSE
        Float64 values on the present synapses, one vector per trial on fixed index arrays, sparse solves (steady
        and discrete linear circuits; memory linear in synapses and trials).

    Examples
    --------
    >>> ns.WeightsLayout("sparse") is ns.WeightsLayout.SPARSE
    True
    >>> ns.FitOptions(weights_layout=ns.WeightsLayout.SPARSE).weights_layout
    'sparse'
    """

    DENSE = "dense"
    SPARSE = "sparse"

    @classmethod
    def parse(cls, value: str | WeightsLayout | None) -> WeightsLayout | None:
        """``"auto"`` / None -> None (the switch decides), else the member; one-line error otherwise."""
        if value is None or value == "auto":
            return None
        if isinstance(value, cls):
            return value
        try:
            return cls(value)
        except ValueError:
            raise ParameterError(f"The 'weights_layout' parameter must be one of ['auto', 'dense', 'sparse']. "
                                 f"Got {value!r} instead.") from None


def sparse_applicable(circuit: Circuit) -> bool:
    """Whether the sparse layout can run ``circuit``: steady or discrete dynamics, linear."""
    return circuit.dynamics.name in ("steady", "discrete") and circuit.nonlinearity == "linear"


def expected_synapses(circuit: Circuit) -> float:
    """Expected present synapses over all projections (``p n_post n_pre`` of Bernoulli ones, the given synapses of
    data-given ones), known before any structure is drawn."""
    size = {r.name: r.size for r in circuit.regions}
    present = 0.0
    for p in circuit.projections:
        given = p.weights if p.fixed else p.synapses
        present += len(given) if given is not None else min(p.p, 1.0) * size[p.post] * size[p.pre]
    return present


def _density(circuit: Circuit) -> float:
    """Expected present synapses over dense entries, over all projections."""
    size = {r.name: r.size for r in circuit.regions}
    dense = sum(size[p.post] * size[p.pre] for p in circuit.projections)
    return expected_synapses(circuit) / dense if dense else 1.0


def choose_layout(circuit: Circuit, requested: str | WeightsLayout | None = None) -> WeightsLayout:
    """The weights layout a fit of ``circuit`` uses.

    Parameters
    ----------
    circuit : Circuit
    requested : {"auto", "dense", "sparse"} or WeightsLayout, optional
        ``"auto"`` / None: sparse for steady linear circuits of more than :data:`SPARSE_MIN_NEURONS` neurons and
        discrete linear ones of more than :data:`SPARSE_MIN_NEURONS_DISCRETE` whose weights are at most
        :data:`SPARSE_MAX_DENSITY` dense (above the crossovers measured on the reference machine), dense
        otherwise.

    Returns
    -------
    WeightsLayout

    Raises
    ------
    ParameterError
        ``"sparse"`` asked for a circuit the sparse layout cannot run (not linear, or neither steady nor discrete).
    """
    want = WeightsLayout.parse(requested)
    if want is WeightsLayout.SPARSE and not sparse_applicable(circuit):
        raise ParameterError(f"The 'weights_layout' parameter 'sparse' needs a steady or discrete linear circuit; "
                             f"{circuit.name!r} is {circuit.nonlinearity} {circuit.dynamics.name}. Use 'auto' or "
                             f"'dense'.")
    if want is not None:
        return want
    least = SPARSE_MIN_NEURONS_DISCRETE if circuit.dynamics.name == "discrete" else SPARSE_MIN_NEURONS
    big = sum(r.size for r in circuit.regions) > least  # regions: usable while a Circuit is built
    return WeightsLayout.SPARSE if (sparse_applicable(circuit) and big
                                    and _density(circuit) <= SPARSE_MAX_DENSITY) else WeightsLayout.DENSE


# ------------------------------------------------------------------------------------------------ draws
def _offsets(circuit: Circuit, structure: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, int]:
    """First position of each weight's synapses in the concatenated value vector (weight order)."""
    out, at = {}, 0
    for name in circuit.weight_names:
        out[name] = at
        at += structure[name][0].size
    out[""] = at  # the total
    return out


def synapse_sd(circuit: Circuit, structure: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, np.ndarray]:
    """Initial SD of each present synapse (the values of :attr:`Circuit.init_sd` on the structure, without its dense
    matrices): weight name -> ``(S,)``."""
    out = {}
    for p in circuit.projections:
        rows, cols = structure[p.name]
        n_post, n_pre = circuit.shape(p.name)
        if p.fixed:
            out[p.name] = np.zeros(rows.size)
        elif p.synapses is None:
            out[p.name] = np.full(rows.size, p.gain / np.sqrt(p.p * n_pre))
        else:
            present = rows.size
            sd = p.gain / np.sqrt(present / n_post) if present else 0.0
            if p.init == "count":
                trip = np.asarray(p.synapses, dtype=float).reshape(-1, 3)
                counts = trip[:, 2]
                norm = np.sqrt((counts**2).sum() / n_post)
                key = trip[:, 0].astype(np.int64) * n_pre + trip[:, 1].astype(np.int64)
                mine = counts[np.searchsorted(key, rows * n_pre + cols)]  # triples sorted row-major
                out[p.name] = p.gain * mine / norm if norm > 0 else mine
            else:
                out[p.name] = np.full(rows.size, sd)
    return out


def draw_sparse_weights(circuit: Circuit, rng: np.random.Generator,
                        structure: Mapping[str, tuple[np.ndarray, np.ndarray]],
                        sd: Mapping[str, np.ndarray] | None = None) -> np.ndarray:
    """One draw of weights, the same numbers as :meth:`Circuit.sample_weights` from the same ``rng``, as values.

    The dense draw takes ``rng.standard_normal((n_post, n_pre))`` per projection (declaration order) and keeps the
    present synapses; this takes the same normals a chunk of rows at a time (numpy's generator gives the same stream
    in pieces) and keeps only the present ones, so memory is ``O(synapses + chunk)`` and the generator ends in the
    same state (the probes drawn after it agree too).

    Parameters
    ----------
    circuit : Circuit
    rng : numpy.random.Generator
    structure : dict
        :func:`~neurosubset.dynamics.sparse.sparse_structure` of ``circuit``.
    sd : dict, optional
        :func:`synapse_sd` (computed if not given).

    Returns
    -------
    numpy.ndarray
        ``(S,)`` float64: every weight's synapse values concatenated in declaration order.
    """
    sd = synapse_sd(circuit, structure) if sd is None else sd
    parts = []
    for p in circuit.projections:
        rows, cols = structure[p.name]
        n_post, n_pre = circuit.shape(p.name)
        if p.fixed:
            parts.append(np.asarray(p.weights, dtype=float).reshape(-1, 3)[:, 2].copy())
            continue
        z = np.empty(rows.size)
        step = max(1, _CHUNK // max(n_pre, 1))
        bounds = np.searchsorted(rows, np.arange(0, n_post + step, step))
        for k, start in enumerate(range(0, n_post, step)):
            block = rng.standard_normal((min(step, n_post - start), n_pre))
            lo, hi = bounds[k], bounds[k + 1]
            z[lo:hi] = block[rows[lo:hi] - start, cols[lo:hi]]
        w = z * sd[p.name]
        sign = circuit.region[p.pre].sign
        if sign is not None:
            w = sign * np.abs(w)
        if p.signs:
            s = np.asarray(p.signs, dtype=np.int64).reshape(-1, 3)
            key = rows * n_pre + cols
            at = np.searchsorted(key, s[:, 0] * n_pre + s[:, 1])
            hit = (at < key.size) & (key[np.minimum(at, key.size - 1)] == s[:, 0] * n_pre + s[:, 1])
            w[at[hit]] = np.where(s[hit, 2] != 0, s[hit, 2] * np.abs(w[at[hit]]), w[at[hit]])
        parts.append(w)
    return np.concatenate(parts) if parts else np.zeros(0)


def to_dense(circuit: Circuit, structure: Mapping[str, tuple[np.ndarray, np.ndarray]],
             values: np.ndarray) -> dict[str, np.ndarray]:
    """The dense matrices of a value vector (:func:`draw_sparse_weights`' layout): small circuits and checks."""
    at = _offsets(circuit, structure)
    out = {}
    for name in circuit.weight_names:
        w = np.zeros(circuit.shape(name))
        r, c = structure[name]
        w[r, c] = values[at[name]:at[name] + r.size]
        out[name] = w
    return out


@dataclass(frozen=True, eq=False)
class SparseWeights:
    """One weight's values in a batch of trials on the circuit's fixed structure: what :func:`neurosubset.fit`
    returns per weight name in the sparse layout (``FitResult.student``, ``trials.teacher``,
    ``trials.student_init``) where the dense layout returns ``(trial, n_post, n_pre)`` arrays.

    ``w[i]`` is trial ``i``'s matrix as a :class:`scipy.sparse.csr_array` ``(n_post, n_pre)`` (as ``dense[i]``
    of the dense layout, with the absent synapses not stored); ``w.toarray()`` the dense ``(trial, n_post, n_pre)``
    array (small circuits). Memory: ``8 S`` bytes per trial plus the shared index arrays.

    Attributes
    ----------
    rows, cols : numpy.ndarray
        ``(S,)`` int64 postsynaptic and presynaptic index of each present synapse, sorted row-major (the structure
        of :func:`~neurosubset.dynamics.sparse.sparse_structure`; shared by every trial).
    values : numpy.ndarray
        ``(trial, S)`` float64 weights (dimensionless, the units of the dense matrices) on those synapses.
    shape : tuple of int
        ``(n_post, n_pre)``.

    Notes
    -----
    The consumers that are dense by nature (:func:`neurosubset.simulate`, :func:`neurosubset.spiking_check`,
    :func:`neurosubset.spiking_compare`, the recordings' files of :mod:`neurosubset.responses`) take one trial's
    CSR matrix where they take a dense one, and make it dense (refused in one line, naming the parameter, where the
    dense matrices would not fit in the memory available).

    Examples
    --------
    >>> c = ns.Circuit((ns.Region("in", 4, "input"), ns.Region("hid", 30, "hidden"), ns.Region("out", 2, "output")),
    ...                (ns.Projection("in", "hid", p=0.5), ns.Projection("hid", "hid", p=0.1, gain=0.5),
    ...                 ns.Projection("hid", "out")), dynamics="steady")
    >>> alloc = ns.allocate(c, 10, within=["hid->out"], seed=0)
    >>> res = ns.fit(c, alloc, m=2, trials=3,
    ...              options=ns.FitOptions(weights_layout="sparse", dale=False, stable=False))
    >>> w = res.student["hid->hid"]
    >>> isinstance(w, ns.SparseWeights), len(w), w.shape, w.values.shape == (3, w.rows.size)
    (True, 3, (30, 30), True)
    >>> w[0].shape, w.toarray().shape
    ((30, 30), (3, 30, 30))
    >>> sim = ns.simulate(c, {k: v[0] for k, v in res.student.items()}, res.trials.probes[0])  # trial 0
    """

    rows: np.ndarray
    cols: np.ndarray
    values: np.ndarray
    shape: tuple[int, int]

    def __len__(self) -> int:
        return int(self.values.shape[0])

    def _indptr(self) -> np.ndarray:
        return np.searchsorted(self.rows, np.arange(self.shape[0] + 1)).astype(np.int64)

    def __getitem__(self, trial: int) -> scipy.sparse.csr_array:
        """Trial ``trial``'s matrix, CSR ``(n_post, n_pre)``."""
        return scipy.sparse.csr_array((self.values[trial], self.cols, self._indptr()), shape=self.shape)

    def toarray(self) -> np.ndarray:
        """``(trial, n_post, n_pre)`` dense float64 (absent synapses 0)."""
        out = np.zeros((len(self), *self.shape))
        out[:, self.rows, self.cols] = self.values
        return out

    @classmethod
    def concatenate(cls, parts: list[SparseWeights]) -> SparseWeights:
        """The trials of ``parts`` (same structure) in order."""
        return cls(parts[0].rows, parts[0].cols, np.concatenate([p.values for p in parts]), parts[0].shape)


def dense_weights(networks: Mapping[str, Any], *, caller: str, square: int = 0,
                  error: type[ValueError] = ParameterError) -> dict[str, Any]:
    """The weights of one or more networks with every sparse matrix made dense, for the consumers that are dense by
    nature (the spiking check's linear form and brian2 network, :func:`neurosubset.simulate`, the recordings'
    files): one trial of a :class:`SparseWeights` (``w[i]``, a :class:`scipy.sparse.csr_array`) is taken where a
    dense ``(n_post, n_pre)`` array is.

    Parameters
    ----------
    networks : dict
        Field name, as the consumer's messages name it (``"weights"``, ``"student_weights['fitted']"``) ->
        weights (weight name -> array ``(n_post, n_pre)``: numpy, torch or scipy.sparse; dimensionless). A value
        that is not a mapping is passed through (the consumer refuses it).
    caller : str
        The consumer, as the memory refusal names it.
    square : int
        Float64 entries the consumer holds besides the weights once they are dense (its ``(n, n)`` matrices and
        their working copies), counted in the memory guard.
    error : exception class
        What to raise (a :class:`~neurosubset.NeurosubsetError` subclass).

    Returns
    -------
    dict
        Field -> weights, each scipy.sparse matrix replaced by its dense float64 array ``(n_post, n_pre)``; the
        other values, and networks without a sparse matrix, as given (not copied).

    Raises
    ------
    error
        One line naming the field: a whole :class:`SparseWeights` (a batch of trials) where one trial's matrix
        belongs, or dense matrices (``8`` bytes per entry of the sparse weights' shapes, plus ``8 square``) that
        exceed the memory available now (:func:`neurosubset._memory.check_memory`).
    """
    sparse: dict[str, list[str]] = {}
    entries = 0
    for field, weights in networks.items():
        if not isinstance(weights, Mapping):
            continue
        for name, w in weights.items():
            if isinstance(w, SparseWeights):
                raise error(f"Weight {name!r} in {field!r} is a SparseWeights of {len(w)} trial(s); pass one trial's "
                            f"matrix, e.g. {{k: v[0] for k, v in res.student.items()}}.")
            if scipy.sparse.issparse(w):
                sparse.setdefault(field, []).append(name)
                entries += int(np.prod(w.shape))
    if not sparse:
        return dict(networks)
    terms = {"dense weights": 8 * entries, "dense working matrices": 8 * int(square)}
    check_memory(f"{caller} with the sparse weights of {list(sparse)} made dense (it is dense by nature)",
                 {**terms, "total": sum(terms.values())}, error=error,
                 lower="the circuit's size, or keep to the sparse layout's own paths (fit, match_probability)")
    out = dict(networks)
    for field, names in sparse.items():
        out[field] = {k: (np.asarray(v.toarray(), dtype=np.float64) if k in names else v)
                      for k, v in networks[field].items()}
    return out


def sparse_weights(circuit: Circuit, structure: Mapping[str, tuple[np.ndarray, np.ndarray]],
                   values: np.ndarray) -> dict[str, SparseWeights]:
    """Weight name -> :class:`SparseWeights` of value vectors ``(trial, S)`` (:func:`draw_sparse_weights`'
    layout); the index arrays are the structure's, not copied."""
    at = _offsets(circuit, structure)
    return {name: SparseWeights(structure[name][0], structure[name][1],
                                values[:, at[name]:at[name] + structure[name][0].size], circuit.shape(name))
            for name in circuit.weight_names}


def plastic_value_positions(circuit: Circuit, structure: Mapping[str, tuple[np.ndarray, np.ndarray]],
                            alloc: Allocation) -> np.ndarray:
    """``(M,)`` positions in the value vector of the allocation's plastic synapses, in the order of ``theta``
    (weights in declaration order, row-major within each)."""
    at = _offsets(circuit, structure)
    out = []
    for name in circuit.weight_names:
        idx = np.asarray(alloc.indices[name], dtype=np.int64)
        if not idx.size:
            continue
        rows, cols = structure[name]
        key = rows * circuit.shape(name)[1] + cols
        pos = np.searchsorted(key, idx)
        if (pos >= key.size).any() or (key[np.minimum(pos, key.size - 1)] != idx).any():
            raise ParameterError(f"The allocation marks synapses of {name!r} that the structure does not have.")
        out.append(at[name] + pos)
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


# ------------------------------------------------------------------------------------------------ the system
class SparseSteady:
    """The fixed sparsity pattern of a steady linear circuit's ``I - A`` and ``B``, and solves on it.

    Parameters
    ----------
    circuit : Circuit
        Steady, linear.
    structure : dict
        :func:`~neurosubset.dynamics.sparse.sparse_structure`.
    plastic : numpy.ndarray, optional
        ``(M,)`` positions of the plastic synapses in the value vector (:func:`plastic_value_positions`).
    method : {"auto", "splu", "gmres"}
        ``"auto"``: splu up to :data:`SPLU_MAX_NEURONS` steady neurons, GMRES above.
    """

    def __init__(self, circuit: Circuit, structure: Mapping[str, tuple[np.ndarray, np.ndarray]],
                 plastic: np.ndarray | None = None, *, method: str = "auto"):
        self.circuit, self.structure = circuit, structure
        slices, inputs = circuit.slices(FIXED_POINT), circuit.slices("input")
        n = self.n = sum(s.stop - s.start for s in slices.values())
        self.n_in = circuit.n_in
        at = _offsets(circuit, structure)
        self.n_values = at[""]
        rec, inp = ([], [], []), ([], [], [])
        for name in circuit.weight_names:
            proj = circuit.projection[name]
            r, c = structure[name]
            pos = np.arange(at[name], at[name] + r.size)
            if proj.post not in slices:
                continue
            dest = rec if proj.pre in slices else inp
            pre_at = slices[proj.pre].start if proj.pre in slices else inputs[proj.pre].start
            dest[0].append(r + slices[proj.post].start)
            dest[1].append(c + pre_at)
            dest[2].append(pos)
        cat = (lambda xs: np.concatenate(xs) if xs else np.zeros(0, dtype=np.int64))
        rr, rc, self._rec_pos = (cat(x) for x in rec)
        ir, ic, self._inp_pos = (cat(x) for x in inp)
        # I - A: one CSR pattern for every draw; each synapse and each diagonal entry knows its slot in `data`
        diag = np.arange(n)
        keys = np.unique(np.concatenate([rr * n + rc, diag * n + diag]))
        self._rec_slot, self._diag_slot = np.searchsorted(keys, rr * n + rc), np.searchsorted(keys, diag * n + diag)
        self._indptr = np.searchsorted(keys // n, np.arange(n + 1)).astype(np.int64)
        self._indices = (keys % n).astype(np.int64)
        ikeys = np.unique(ir * self.n_in + ic)
        self._inp_slot = np.searchsorted(ikeys, ir * self.n_in + ic)
        self._inp_indptr = np.searchsorted(ikeys // self.n_in, np.arange(n + 1)).astype(np.int64)
        self._inp_indices = (ikeys % self.n_in).astype(np.int64)
        self.out_idx = np.concatenate([np.arange(slices[o].start, slices[o].stop) for o in circuit.output_regions])
        if method == "auto":
            method = "splu" if n <= SPLU_MAX_NEURONS else "gmres"
        if method not in ("splu", "gmres"):
            raise ParameterError(f"The 'method' parameter must be one of ['auto', 'splu', 'gmres']. Got {method!r}.")
        self.method = method
        self.set_plastic(np.zeros(0, dtype=np.int64) if plastic is None else plastic)

    def set_plastic(self, plastic: np.ndarray) -> None:
        """Where each plastic synapse sits in the Jacobian's closed form: its post and pre (``[neurons; inputs]``)."""
        plastic = np.asarray(plastic, dtype=np.int64)
        self.plastic = plastic
        slices, inputs = self.circuit.slices(FIXED_POINT), self.circuit.slices("input")
        at = _offsets(self.circuit, self.structure)
        post, pre = np.zeros(plastic.size, dtype=np.int64), np.zeros(plastic.size, dtype=np.int64)
        for name in self.circuit.weight_names:
            lo, hi = at[name], at[name] + self.structure[name][0].size
            sel = (plastic >= lo) & (plastic < hi)
            if not sel.any():
                continue
            proj = self.circuit.projection[name]
            r, c = self.structure[name]
            k = plastic[sel] - lo
            post[sel] = r[k] + slices[proj.post].start
            pre[sel] = c[k] + (self.n + inputs[proj.pre].start if proj.pre in inputs else slices[proj.pre].start)
        self.post, self.pre = post, pre

    def matrices(self, values: np.ndarray) -> tuple[scipy.sparse.csr_matrix, scipy.sparse.csr_matrix]:
        """``(I - A, B)`` for one value vector, CSR on the fixed patterns (duplicates summed)."""
        n = self.n
        data = np.bincount(self._rec_slot, weights=-values[self._rec_pos], minlength=self._indices.size)
        data[self._diag_slot] += 1.0
        system = scipy.sparse.csr_matrix((data, self._indices, self._indptr), shape=(n, n))
        bdata = np.bincount(self._inp_slot, weights=values[self._inp_pos], minlength=self._inp_indices.size)
        b = scipy.sparse.csr_matrix((bdata, self._inp_indices, self._inp_indptr), shape=(n, self.n_in))
        return system, b

    def solve(self, values: np.ndarray, x: np.ndarray, *, jacobian: bool = False
              ) -> tuple[np.ndarray, np.ndarray | None]:
        """Outputs ``(m * n_out,)`` (probe-major) and, with ``jacobian``, ``dy / dtheta`` ``(m * n_out, M)`` of one
        problem: values ``(S,)``, probes ``x`` ``(m, n_in)``. A singular ``I - A`` or a GMRES solve short of its
        tolerance gives NaN."""
        system, b = self.matrices(values)
        n, m, n_out = self.n, x.shape[0], self.out_idx.size
        rhs = np.asarray(b @ x.T)  # (N, m)
        select = None
        if jacobian:
            select = np.zeros((n, n_out))
            select[self.out_idx, np.arange(n_out)] = 1.0
        if self.method == "gmres":
            rates = gmres_columns(system, rhs, GMRES_RTOL)
            g_t = gmres_columns(system.T.tocsr(), select, GMRES_RTOL) if jacobian else None
        else:
            try:
                lu = scipy.sparse.linalg.splu(system.tocsc())
                rates = lu.solve(rhs)
                g_t = lu.solve(select, trans="T") if jacobian else None
            except RuntimeError:  # exactly singular
                rates = np.full((n, m), np.nan)
                g_t = np.full((n, n_out), np.nan) if jacobian else None
        outputs = rates[self.out_idx].T.reshape(-1)
        if not jacobian:
            return outputs, None
        act = np.concatenate([rates, x.T], axis=0)  # (N + n_in, m)
        jac = act[self.pre].T[:, None, :] * g_t[self.post].T[None, :, :]  # (m, n_out, M)
        return outputs, jac.reshape(m * n_out, self.plastic.size)

    def rates(self, values: np.ndarray, x: np.ndarray) -> np.ndarray:
        """All steady rates ``(N, m)`` of one problem."""
        system, b = self.matrices(values)
        rhs = np.asarray(b @ x.T)
        if self.method == "gmres":
            return gmres_columns(system, rhs, GMRES_RTOL)
        try:
            return scipy.sparse.linalg.splu(system.tocsc()).solve(rhs)
        except RuntimeError:
            return np.full((self.n, x.shape[0]), np.nan)


class _Pattern:
    """A CSR pattern ``(rows, cols)`` with each entry's positions in the value vector: :meth:`fill` makes the matrix
    of one value vector (duplicates summed)."""

    def __init__(self, rows: np.ndarray, cols: np.ndarray, positions: np.ndarray, shape: tuple[int, int]):
        keys = np.unique(rows * shape[1] + cols)
        self.slot = np.searchsorted(keys, rows * shape[1] + cols)
        self.indptr = np.searchsorted(keys // shape[1], np.arange(shape[0] + 1)).astype(np.int64)
        self.indices = (keys % shape[1]).astype(np.int64)
        self.positions, self.shape = positions, shape

    def fill(self, values: np.ndarray) -> scipy.sparse.csr_matrix:
        data = np.bincount(self.slot, weights=values[self.positions], minlength=self.indices.size)
        return scipy.sparse.csr_matrix((data, self.indices, self.indptr), shape=self.shape)


class SparseDiscrete:
    """The fixed sparsity patterns of a discrete linear circuit, ``h_t = A h_(t-1) + B x_t`` (``h_0 = 0``,
    ``t = 1..T``), ``y = C h_T + D x_T``, and its outputs and adjoint Jacobian by sparse products.

    The interface of :class:`SparseSteady` that :class:`SparsePlasticMap` uses (``solve``, ``plastic``,
    ``out_idx``, ``n_values``). The Jacobian is the closed form of the dense discrete adjoint:
    ``dy_o / dw_ij = sum_t G_t[o, i] u_t[j]`` for a hidden neuron ``i`` (``G_T = C``, ``G_(t-1) = G_t A``, ``u_t``
    the hidden state and input entering step ``t``) and ``dy_o / dw_oj = [h_T; x_T][j]`` for a read-out synapse.
    A problem costs ``2 T`` sparse products (with ``m`` and ``n_out`` columns) and ``T n_out m M`` flops; memory
    ``O(synapses + T N_hidden (m + n_out))``.

    Parameters
    ----------
    circuit : Circuit
        Discrete, linear.
    structure : dict
        :func:`~neurosubset.dynamics.sparse.sparse_structure`.
    plastic : numpy.ndarray, optional
        ``(M,)`` positions of the plastic synapses in the value vector (:func:`plastic_value_positions`).
    """

    def __init__(self, circuit: Circuit, structure: Mapping[str, tuple[np.ndarray, np.ndarray]],
                 plastic: np.ndarray | None = None):
        self.circuit, self.structure, self.steps = circuit, structure, circuit.steps
        hid, outs, inputs = circuit.slices("hidden"), circuit.slices("output"), circuit.slices("input")
        self.n, self.n_out, self.n_in = circuit.n_neurons("hidden"), circuit.n_out, circuit.n_in
        at = _offsets(circuit, structure)
        self.n_values = at[""]
        parts: dict[str, tuple[list, list, list]] = {k: ([], [], []) for k in "abcd"}
        for name in circuit.weight_names:
            proj = circuit.projection[name]
            r, c = structure[name]
            post = hid if proj.post in hid else outs
            if proj.pre not in hid and proj.pre not in inputs:
                raise ParameterError(f"Weight {name!r} of discrete circuit {circuit.name!r} leaves an output region: "
                                     f"the discrete dynamics have no such synapses.")
            pre = hid if proj.pre in hid else inputs
            key = ("a" if proj.pre in hid else "b") if proj.post in hid else ("c" if proj.pre in hid else "d")
            parts[key][0].append(r + post[proj.post].start)
            parts[key][1].append(c + pre[proj.pre].start)
            parts[key][2].append(np.arange(at[name], at[name] + r.size))
        cat = (lambda xs: np.concatenate(xs) if xs else np.zeros(0, dtype=np.int64))
        shapes = {"a": (self.n, self.n), "b": (self.n, self.n_in), "c": (self.n_out, self.n),
                  "d": (self.n_out, self.n_in)}
        self._patterns = {k: _Pattern(*(cat(x) for x in parts[k]), shapes[k]) for k in "abcd"}
        self.out_idx = np.arange(self.n_out)
        self.set_plastic(np.zeros(0, dtype=np.int64) if plastic is None else plastic)

    def set_plastic(self, plastic: np.ndarray) -> None:
        """Each plastic synapse's post (hidden or output index) and pre (index of ``[hidden; inputs]``), and
        whether it is a read-out synapse."""
        plastic = np.asarray(plastic, dtype=np.int64)
        self.plastic = plastic
        hid, inputs = self.circuit.slices("hidden"), self.circuit.slices("input")
        outs = self.circuit.slices("output")
        at = _offsets(self.circuit, self.structure)
        post, pre = np.zeros(plastic.size, dtype=np.int64), np.zeros(plastic.size, dtype=np.int64)
        readout = np.zeros(plastic.size, dtype=bool)
        for name in self.circuit.weight_names:
            lo, hi = at[name], at[name] + self.structure[name][0].size
            sel = (plastic >= lo) & (plastic < hi)
            if not sel.any():
                continue
            proj = self.circuit.projection[name]
            r, c = self.structure[name]
            k = plastic[sel] - lo
            readout[sel] = proj.post in outs
            post[sel] = r[k] + (outs[proj.post].start if proj.post in outs else hid[proj.post].start)
            pre[sel] = c[k] + (self.n + inputs[proj.pre].start if proj.pre in inputs else hid[proj.pre].start)
        self.post, self.pre, self.readout = post, pre, readout

    def matrices(self, values: np.ndarray) -> dict[str, scipy.sparse.csr_matrix]:
        """``A`` (hidden <- hidden), ``B`` (hidden <- input), ``C`` (output <- hidden), ``D`` (output <- input),
        CSR, of one value vector."""
        return {k: p.fill(values) for k, p in self._patterns.items()}

    def solve(self, values: np.ndarray, x: np.ndarray, *, jacobian: bool = False
              ) -> tuple[np.ndarray, np.ndarray | None]:
        """Outputs ``(m * n_out,)`` (probe-major) and, with ``jacobian``, ``dy / dtheta`` ``(m * n_out, M)`` of one
        problem: values ``(S,)``, probes ``x`` ``(m, T, n_in)``."""
        mats = self.matrices(values)
        a, b, c, d = mats["a"], mats["b"], mats["c"], mats["d"]
        m = x.shape[0]
        states = [np.zeros((self.n, m))]
        for t in range(self.steps):
            states.append(a @ states[-1] + b @ x[:, t, :].T)
        last = np.concatenate([states[-1], x[:, -1, :].T], axis=0)  # (N_h + n_in, m): what the read-out sees
        y = c @ states[-1] + d @ x[:, -1, :].T  # (n_out, m)
        outputs = y.T.reshape(-1)
        if not jacobian:
            return outputs, None
        jac = np.zeros((m, self.n_out, self.plastic.size))
        hid = np.flatnonzero(~self.readout)
        if hid.size:
            post, pre = self.post[hid], self.pre[hid]
            g_t = c.T.toarray()  # G_T^T (N_h, n_out)
            a_t = a.T.tocsr()
            acc = np.zeros((m, self.n_out, hid.size))
            for t in range(self.steps, 0, -1):  # step t: adjoint G_t, input u_t = [h_(t-1); x_t]
                u = np.concatenate([states[t - 1], x[:, t - 1, :].T], axis=0)
                acc += g_t[post].T[None, :, :] * u[pre].T[:, None, :]
                if t > 1:
                    g_t = a_t @ g_t  # G_(t-1)^T = A^T G_t^T
            jac[:, :, hid] = acc
        out = np.flatnonzero(self.readout)
        if out.size:
            jac[:, self.post[out], out] = last[self.pre[out]].T
        return outputs, jac.reshape(m * self.n_out, self.plastic.size)


def sparse_system(circuit: Circuit, structure: Mapping[str, tuple[np.ndarray, np.ndarray]],
                  plastic: np.ndarray | None = None) -> SparseSteady | SparseDiscrete:
    """The sparse system of a circuit the sparse layout runs (:func:`sparse_applicable`): :class:`SparseSteady`
    or :class:`SparseDiscrete` by its dynamics."""
    if circuit.dynamics.name == "discrete":
        return SparseDiscrete(circuit, structure, plastic)
    return SparseSteady(circuit, structure, plastic)


class SparsePlasticMap:
    """``theta -> F(theta)`` over many problems with sparse weights: the interface of
    :class:`~neurosubset.dynamics.PlasticMap` that the decider chain uses.

    Parameters
    ----------
    circuit : Circuit
        Steady, linear.
    alloc : Allocation
    system : SparseSteady
        The circuit's pattern, its ``plastic`` set to the allocation's positions.
    frozen : numpy.ndarray
        ``(trial, S)`` float64 value vectors of the students' own draws (plastic positions are ignored).
    probes : torch.Tensor
        ``(trial, m, n_in)`` float64.

    Notes
    -----
    :meth:`subset` keeps the trials' value vectors and gathers only an index (the LM's restarts share their trial's
    frozen values), so memory stays linear in trials whatever the restarts. Every evaluation runs one sparse solve
    per problem on the CPU.
    """

    sparse = True
    closed_form = True

    def __init__(self, circuit: Circuit, alloc: Allocation, system: SparseSteady, frozen: np.ndarray,
                 probes: torch.Tensor):
        self.circuit, self.system, self.size = circuit, system, int(alloc.size)
        self.alloc = alloc
        self._frozen = np.array(frozen, dtype=np.float64, copy=True)
        self._frozen[:, system.plastic] = 0.0
        self._rows = np.arange(self._frozen.shape[0])
        self.probes = probes

    @property
    def problems(self) -> int:
        return int(self._rows.size)

    def values(self, theta: torch.Tensor | np.ndarray) -> np.ndarray:
        """``(problem, S)`` value vectors of the students ``theta`` ``(problem, M)``."""
        th = theta.detach().cpu().numpy() if isinstance(theta, torch.Tensor) else np.asarray(theta)
        out = self._frozen[self._rows].copy()
        out[:, self.system.plastic] += th
        return out

    def frozen_values(self) -> np.ndarray:
        """``(problem, S)`` frozen values (0 at plastic positions)."""
        return self._frozen[self._rows]

    def _run(self, theta: torch.Tensor, select: torch.Tensor | None, jacobian: bool):
        rows = self._rows if select is None else self._rows[np.asarray(select.cpu())]
        probes = self.probes if select is None else self.probes[select]
        th = theta.detach().cpu().numpy()
        x = probes.detach().cpu().numpy()
        outs, jacs = [], []
        for k, r in enumerate(rows):
            v = self._frozen[r].copy()
            v[self.system.plastic] += th[k]
            y, j = self.system.solve(v, x[k], jacobian=jacobian)
            outs.append(y)
            jacs.append(j)
        e = x.shape[1] * self.system.out_idx.size
        f = torch.as_tensor(np.stack(outs) if outs else np.zeros((0, e)), dtype=theta.dtype)
        if not jacobian:
            return f, None
        return f, torch.as_tensor(np.stack(jacs) if jacs else np.zeros((0, e, self.size)), dtype=theta.dtype)

    def __call__(self, theta: torch.Tensor, select: torch.Tensor | None = None) -> torch.Tensor:
        """``F(theta)`` ``(problem, E)``; ``select`` (long) evaluates a subset of problems."""
        return self._run(theta, select, False)[0]

    def value_and_jacobian(self, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``F(theta)`` ``(problem, E)`` and ``dF/dtheta`` ``(problem, E, M)`` from one solve and one adjoint solve
        per problem."""
        return self._run(theta, None, True)

    def jacobian(self, theta: torch.Tensor, select: torch.Tensor | None = None, **_: object) -> torch.Tensor:
        """``dF/dtheta`` ``(problem, E, M)`` (the adjoint closed form through the sparse solves)."""
        return self._run(theta, select, True)[1]

    def subset(self, select: torch.Tensor) -> SparsePlasticMap:
        """The map over problems ``select`` (long ``(problem,)``, repeats allowed): an index, no copy of values."""
        out = object.__new__(SparsePlasticMap)
        out.__dict__.update(self.__dict__)
        sel = np.asarray(select.cpu()) if isinstance(select, torch.Tensor) else np.asarray(select)
        out._rows = self._rows[sel]
        out.probes = self.probes[torch.as_tensor(sel)]
        return out


def sparse_is_affine(circuit: Circuit, alloc: Allocation) -> bool:
    """Whether the outputs of a steady linear circuit are affine in the plastic weights, from the region graph.

    ``dy_o / dw_ij = G[o, i] r_j`` with ``G = S (I - A)^-1``: it depends on a plastic ``w_kl`` only if neuron ``i``
    reaches ``l`` or ``k`` reaches ``j`` (through synapses). So the outputs are affine when no plastic synapse's
    presynaptic region is reachable from a plastic synapse's postsynaptic region (itself included); otherwise they
    are generically not (a non-affine verdict costs only the exact least-squares shortcut: the other deciders run).
    """
    plastic = [circuit.projection[k] for k in circuit.weight_names if alloc.counts[k]]
    if not plastic:
        return True
    edges: dict[str, set[str]] = {}
    for p in circuit.projections:
        edges.setdefault(p.pre, set()).add(p.post)
    reach = {p.post for p in plastic}
    todo = list(reach)
    while todo:
        for nxt in edges.get(todo.pop(), ()):
            if nxt not in reach:
                reach.add(nxt)
                todo.append(nxt)
    return not any(p.pre in reach for p in plastic)


SPARSE_EIG_MIN = 200  # loops of more neurons: ARPACK's rightmost eigenvalues; of at most this many, dense eigvals
_EIG_SEED_KEY = 0x5E16  # spawn key of ARPACK's start vectors (with the circuit's structural seed)
_MAX_REJECTIONS = 1000  # unstable draws rejected in a row before a trial gives up (as neurosubset.draws)


def sparse_max_real_eig(circuit: Circuit, structure: Mapping[str, tuple[np.ndarray, np.ndarray]],
                        values: np.ndarray, found: tuple | None = None) -> float:
    """``max Re(eig W)`` of one draw of a steady circuit (value vector ``(S,)``), by its stability rule without a
    dense matrix: the largest real part over its recurrent loops' blocks (at least 0, as
    :func:`~neurosubset.dynamics.stability.max_real_eig`).

    A loop of more than :data:`SPARSE_EIG_MIN` neurons gets ARPACK's rightmost eigenvalues
    (:func:`~neurosubset.dynamics.stability.rightmost_sparse`, ``scipy.sparse.linalg.eigs`` with ``which="LR"``,
    converged to relative tolerance 1e-8: an estimate, which can differ from the dense eigensolve in the last
    digits near the limit 1); smaller loops the dense eigenvalues of their block.

    Parameters
    ----------
    circuit : Circuit
        Steady.
    structure : dict
        :func:`~neurosubset.dynamics.sparse.sparse_structure`.
    values : numpy.ndarray
        ``(S,)`` float64 (:func:`draw_sparse_weights`' layout).
    found : tuple of Loop, optional
        ``loops(circuit)``, where a caller asks about many draws.

    Returns
    -------
    float
        Dimensionless (stable iff ``< 1``).
    """
    from .sparse import sparse_block
    from .stability import loops, max_real_part, rightmost_sparse

    at = _offsets(circuit, structure)
    best = 0.0
    for j, loop in enumerate(loops(circuit) if found is None else found):
        vals = {k: values[at[k]:at[k] + structure[k][0].size] for k in loop.projections}
        block = sparse_block(circuit, structure, vals, list(loop.regions), list(loop.regions))
        if block.shape[0] > SPARSE_EIG_MIN:
            top = rightmost_sparse(block, np.random.SeedSequence(circuit.seed, spawn_key=(_EIG_SEED_KEY, j)))
        else:
            top = max_real_part(block.toarray())
        best = max(best, top)
    return float(best)


@dataclass(frozen=True)
class SparseTrials:
    """The draws of a batch of trials in the sparse layout (the numbers of :class:`~neurosubset.draws.Trials`).

    Attributes
    ----------
    teacher, student_init : numpy.ndarray
        ``(trial, S)`` value vectors.
    probes : numpy.ndarray
        ``(trial, m, n_in)``.
    teacher_rejected, student_rejected : numpy.ndarray
        ``(trial,)`` int64 unstable draws rejected before the teacher / the student's draw (``stable`` only).
    """

    teacher: np.ndarray
    student_init: np.ndarray
    probes: np.ndarray
    teacher_rejected: np.ndarray
    student_rejected: np.ndarray


def draw_sparse_trials(circuit: Circuit, structure: Mapping[str, tuple[np.ndarray, np.ndarray]], m: int,
                       trials: int, seed: int, *, first: int = 0,
                       sd: Mapping[str, np.ndarray] | None = None, stable: bool = False) -> SparseTrials:
    """Teachers, students and probes of trials ``first .. first + trials - 1``: the draws of
    :func:`neurosubset.draws.draw_trials`, as value vectors. With ``stable`` (steady circuits) a draw with
    ``max Re(eig W) >= 1`` (:func:`sparse_max_real_eig`) is rejected and drawn again from the same stream, as there."""
    from .._checks import CircuitSpecError
    from .stability import loops, stability_applies

    sd = synapse_sd(circuit, structure) if sd is None else sd
    found = loops(circuit) if stable and stability_applies(circuit) else ()
    teachers, students, probes = [], [], []
    rejected = np.zeros((trials, 2), dtype=np.int64)
    for k, i in enumerate(range(first, first + trials)):
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(i, 0)))
        for j, out in enumerate((teachers, students)):
            v = draw_sparse_weights(circuit, rng, structure, sd)
            while found and sparse_max_real_eig(circuit, structure, v, found) >= 1.0:
                rejected[k, j] += 1
                if rejected[k, j] > _MAX_REJECTIONS:
                    raise CircuitSpecError(
                        f"Trial {i} of circuit {circuit.name!r}: {_MAX_REJECTIONS} draws in a row were unstable "
                        f"(max Re(eig W) >= 1); lower the gains of its recurrent projections.")
                v = draw_sparse_weights(circuit, rng, structure, sd)
            out.append(v)
        probes.append(circuit.sample_probes(m, rng))
    return SparseTrials(np.stack(teachers), np.stack(students), np.stack(probes), rejected[:, 0], rejected[:, 1])


def structure_of(circuit: Circuit) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The circuit's structure as index arrays, computed once per circuit (cached on it)."""
    cached = circuit.__dict__.get("_sparse_structure")
    if cached is None:
        cached = sparse_structure(circuit)
        circuit.__dict__["_sparse_structure"] = cached
    return cached
