"""Generic ranks of the output Jacobian ``dF/dtheta`` at random points: the machinery under every theory verdict.

A point ``k`` is a draw of weights and probes (``SeedSequence(seed, spawn_key=(0xCE27, k))``); at a random point
the rank of every column subset equals its generic rank with probability one, and the maximum over several points
guards against an unlucky draw. Columns are derivatives in units of each weight's initial standard deviation.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from .._checks import AllocationError, NeurosubsetError, check_choice, check_int, check_real
from ..allocation import Allocation
from ..circuit import Circuit
from ..dynamics import DTYPE, PlasticMap

# "auto": exact ranks over GF(p) where they apply and are estimated cheaper (modular_ranks.rank_costs), else float
# ranks where their singular-value gap is decisive, else exact ranks over GF(p) (linear circuits);
# "exact": GF(p) only; the others: float only (see neurosubset.theory.modular_ranks)
METHODS = ("auto", "exact", "autograd", "adjoint", "sketch", "iterative")
# Relative SVD tolerance: a singular value counts when it exceeds RANK_RTOL * (largest singular value).
# Rounding noise of the float64 Jacobians here is ~1e-15 relative; the smallest generic singular values of the
# small and medium circuits measured in analysis/theory_vs_empirics.py stay above ~1e-6 relative, so 1e-9 sits in
# the gap (each certificate records the gap it saw: ``plastic_gap`` / ``full_gap``).
RANK_RTOL = 1e-9
_POINT_KEY = 0xCE27  # spawn key of the certificate's random points, independent of match_probability's trials
_MAX_BYTES = 2.5e8  # cap on the tangents held at once by the chunked autograd Jacobian


class TheoryError(NeurosubsetError):
    """A theory request cannot be answered (e.g. the allowed synapses cannot reach the full rank)."""


# ---------------------------------------------------------------------------------------------- arguments
def _check_alloc(circuit: Circuit, alloc: Allocation) -> None:
    if not isinstance(alloc, Allocation):
        raise TypeError(f"The 'alloc' parameter must be an Allocation. Got {type(alloc).__name__}.")
    if set(alloc.masks) != set(circuit.weight_names):
        raise AllocationError(f"The allocation does not belong to circuit {circuit.name!r}: its weights are "
                              f"{sorted(alloc.masks)}, the circuit's {list(circuit.weight_names)}.")
    for name in circuit.weight_names:
        mask = alloc.masks[name]
        if mask.shape != circuit.shape(name):
            raise AllocationError(f"The allocation's mask for weight {name!r} has shape {mask.shape}; the circuit "
                                  f"needs {circuit.shape(name)} (n_post, n_pre).")
        if (mask & ~circuit.eligible[name]).any():
            raise AllocationError(f"The allocation makes absent synapses of weight {name!r} plastic; only "
                                  f"structurally present synapses can be plastic.")


def _check_common(m: int, seed: int, points: int, rtol: float, method: str) -> tuple[int, int, int, float]:
    m = check_int("m", m, minimum=1)
    seed = check_int("seed", seed, minimum=0)
    points = check_int("points", points, minimum=2)
    rtol = check_real("rtol", rtol, low=0.0, high=1.0, low_open=True)
    check_choice("method", method, METHODS)
    return m, seed, points, rtol


# ---------------------------------------------------------------------------------------------- Jacobians
def _columns(circuit: Circuit, masks: dict[str, np.ndarray]) -> np.ndarray:
    """Positions of the entries of ``masks`` among the full Jacobian's columns (structure, weight order)."""
    present = [np.flatnonzero(circuit.eligible[name]) for name in circuit.weight_names]
    first = np.cumsum([0] + [idx.size for idx in present])  # first column of each weight
    out = [first[k] + np.searchsorted(idx, np.flatnonzero(masks[name]) if name in masks else np.zeros(0, dtype=int))
           for k, (name, idx) in enumerate(zip(circuit.weight_names, present))]
    return np.concatenate(out) if out else np.zeros(0, dtype=int)


def _point(circuit: Circuit, m: int, seed: int, k: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_POINT_KEY, k)))
    return circuit.sample_weights(rng), circuit.sample_probes(m, rng)


def _full_map(circuit: Circuit, weights: dict[str, np.ndarray], probes: np.ndarray
              ) -> tuple[PlasticMap, torch.Tensor, np.ndarray, Callable[[torch.Tensor], torch.Tensor]]:
    """The map over all present synapses at one point: ``(fmap, theta (N,), init-std scale (N,), F: (N,) -> (E,))``."""
    full = Allocation.from_masks(circuit, dict(circuit.eligible), strategy="full")
    frozen = {k: torch.as_tensor(v, dtype=DTYPE).unsqueeze(0) for k, v in weights.items()}
    fmap = PlasticMap(circuit, full, frozen, torch.as_tensor(probes, dtype=DTYPE).unsqueeze(0))
    theta = torch.as_tensor(np.concatenate([weights[k].ravel()[full.indices[k]] for k in circuit.weight_names]),
                            dtype=DTYPE)
    scale = circuit.init_scale(full)

    def fn(t: torch.Tensor) -> torch.Tensor:
        return fmap(t.unsqueeze(0)).squeeze(0)

    return fmap, theta, scale, fn


def _chunk(circuit: Circuit, probes: np.ndarray, n: int, e: int, max_bytes: float) -> int:
    """Tangent directions per vmapped batch: one direction holds every activation along the way plus the weights."""
    states = probes.shape[0] * circuit.steps * sum(r.size for r in circuit.regions)
    return int(max(1, max_bytes // (8.0 * 4 * (n + states + e))))


def _jvps(fn: Callable[[torch.Tensor], torch.Tensor], theta: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
    """``J v`` for each row ``v`` of ``directions`` ``(k, N)``: ``(k, E)``, one vmapped forward-mode pass."""
    return torch.func.vmap(lambda v: torch.func.jvp(fn, (theta,), (v,))[1])(directions)


def _full_jacobian(circuit: Circuit, weights: dict[str, np.ndarray], probes: np.ndarray, method: str,
                   max_bytes: float = _MAX_BYTES) -> np.ndarray:
    """``dF/dtheta`` over all present synapses at one point, ``(E, N)``, columns in units of the init std.

    ``"autograd"``: torch.func, forward mode (JVPs) when ``N <= E``, reverse mode (VJPs) otherwise, vmapped over
    basis directions in chunks that keep the tangents under ``max_bytes``. ``"adjoint"``: the closed form of
    :meth:`PlasticMap.jacobian` (linear circuits; tests/test_dynamics.py checks it equals autograd).
    """
    fmap, theta, scale, fn = _full_map(circuit, weights, probes)
    n, e = theta.numel(), probes.shape[0] * circuit.n_out
    if method == "sketch":
        raise TheoryError("The 'method' parameter 'sketch' gives ranks only, and this needs the Jacobian's columns "
                          "(pivoted QR). Use method='autograd' or 'adjoint'.")
    if n == 0:
        return np.zeros((e, 0))
    if method == "adjoint":
        if circuit.nonlinearity != "linear":
            raise TheoryError(f"The 'method' parameter 'adjoint' needs a linear circuit; circuit {circuit.name!r} "
                              f"is {circuit.nonlinearity!r}. Use method='autograd'.")
        jac = fmap.jacobian(theta.unsqueeze(0), method="adjoint")[0].numpy()
        return jac * scale
    # Not PlasticMap.jacobian(method="autograd"), although it gives the same Jacobian bit for bit: that one chunks
    # over problems and vmaps over all N (or E) basis directions of a problem at once, and a certificate is one
    # problem with up to ~10^4 directions. Measured (one thread): feed-forward 60-60-60-60, m = 300 (JVPs, N =
    # 10,800 <= E = 18,000): peak RSS 5.0 GB chunked here (77 directions a batch) vs 9.5 GB through PlasticMap;
    # the bench_certify case (VJPs, N = 13,000 > E = 2,000): 1.26 vs 1.22 GB. Reusing it needs direction chunking
    # in PlasticMap.jacobian first.
    chunk = int(min(max(n, e), _chunk(circuit, probes, n, e, max_bytes)))
    blocks = []
    with torch.enable_grad():  # the caller may be under no_grad; restored on exit
        if n <= e:
            for a in range(0, n, chunk):
                blocks.append(_jvps(fn, theta, torch.eye(n, dtype=DTYPE)[a:a + chunk]).T)  # (E, chunk)
            jac = torch.cat(blocks, dim=1)
        else:
            _, vjp = torch.func.vjp(fn, theta)
            for a in range(0, e, chunk):
                basis = torch.eye(e, dtype=DTYPE)[a:a + chunk]
                blocks.append(torch.func.vmap(vjp)(basis)[0])  # (chunk, N)
            jac = torch.cat(blocks, dim=0)
    return jac.detach().numpy() * scale


def _sketch_ranks(circuit: Circuit, weights: dict[str, np.ndarray], probes: np.ndarray, cols: np.ndarray,
                  rtol: float, seed: int, k: int, max_bytes: float = _MAX_BYTES
                  ) -> tuple[tuple[int, float, float], tuple[int, float, float]]:
    """Matrix-free randomised ranks of the full and the plastic Jacobian at one point.

    ``Y = J Omega`` with ``Omega`` Gaussian ``(N, q)``, ``q = min(N, E)`` (and ``J_A Omega_A`` for the plastic
    columns, ``q_A = min(M, E)``), built from JVPs in chunks of directions: the ``(E, N)`` Jacobian is never held,
    only ``(E, q)`` sketches. With probability 1, ``rank(J Omega) = rank(J)`` when ``q >= rank(J)``, which
    ``q = min(N, E)`` guarantees; in floating point the random sketch can blur a weak singular-value gap, so the
    result is an estimate.
    """
    _, theta, scale_np, fn = _full_map(circuit, weights, probes)
    scale = torch.as_tensor(scale_np, dtype=DTYPE)
    n, e = theta.numel(), probes.shape[0] * circuit.n_out
    chunk = _chunk(circuit, probes, n, e, max_bytes)
    gen = torch.Generator().manual_seed(int(np.random.SeedSequence(seed, spawn_key=(_POINT_KEY, 0x5E, k))
                                            .generate_state(1)[0]))

    def sketch(support: torch.Tensor) -> tuple[int, float, float]:
        q = min(int(support.numel()), e)
        if q == 0:
            return 0, float("inf"), 0.0
        cols_out = []
        with torch.enable_grad():
            for a in range(0, q, chunk):
                c = min(chunk, q - a)
                omega = torch.zeros(c, n, dtype=DTYPE)
                omega[:, support] = torch.randn(c, int(support.numel()), generator=gen, dtype=DTYPE)
                omega *= scale  # columns in units of the init std, as for the exact ranks
                cols_out.append(_jvps(fn, theta, omega).detach())
        return _rank_of(torch.linalg.svdvals(torch.cat(cols_out).T), rtol)

    full_res = sketch(torch.arange(n))
    plastic_res = full_res if cols.size == n else sketch(torch.from_numpy(cols))
    return full_res, plastic_res


# ---------------------------------------------------------------------------------------------- ranks
def _reduce(mat: torch.Tensor) -> torch.Tensor:
    """A matrix with the same singular values and at most ``min(mat.shape)`` rows: the QR factor ``R`` of the
    tall orientation when it is at least twice as tall as wide (cheaper to decompose), else the tall orientation."""
    tall = mat if mat.shape[0] >= mat.shape[1] else mat.T
    if tall.shape[0] >= 2 * tall.shape[1]:
        return torch.linalg.qr(tall, mode="r")[1]
    return tall


def _rank_of(s: torch.Tensor, rtol: float) -> tuple[int, float, float]:
    """Numerical rank of singular values ``s`` (descending): those above ``rtol * s_max``; the gap
    ``s_r / s_{r+1}`` (``inf`` if nothing is discarded) and the tail ``s_{r+1} / s_1`` (0 if nothing is
    discarded; ``nan`` for a non-finite or all-zero ``s``, which decides nothing)."""
    s = s.numpy()
    if s.size == 0:
        return 0, float("inf"), 0.0
    if s[0] == 0.0 or not np.isfinite(s[0]):
        return 0, float("inf"), float("nan") if not np.isfinite(s[0]) else 0.0
    r = int((s > rtol * s[0]).sum())
    if r == s.size:
        return r, float("inf"), 0.0
    return r, float(s[r - 1] / max(s[r], np.finfo(float).tiny)), float(s[r] / s[0])


def _rank(mat: np.ndarray, rtol: float) -> tuple[int, float, float]:
    """Numerical rank of ``mat`` (singular values above ``rtol * s_max``), the gap ``s_r / s_{r+1}`` and the tail
    ``s_{r+1} / s_1`` (see :func:`_rank_of`)."""
    if mat.size == 0:
        return 0, float("inf"), 0.0
    return _rank_of(torch.linalg.svdvals(_reduce(torch.from_numpy(np.ascontiguousarray(mat)))), rtol)


def _point_ranks(jac: np.ndarray, cols: np.ndarray, rtol: float
                 ) -> tuple[tuple[int, float, float], tuple[int, float, float]]:
    """Ranks (and gaps) of the full Jacobian ``(E, N)`` and of its plastic columns ``cols``.

    When the plastic block ``A`` is wide (``M >= 2 E``) one QR serves both: ``A^T = Q R`` and the full Jacobian's
    transpose ``[A^T; B^T]`` has the singular values of ``[R; B^T]`` (``diag(Q, I)`` has orthonormal columns).
    """
    if not np.isfinite(jac).all():  # overflowing outputs: no rank exists, and every fitted trial is non_finite
        raise TheoryError("The circuit's outputs overflow to inf/NaN at the init scale (their Jacobian is not "
                          "finite): no certificate exists and a fitted MP would be meaningless (every trial "
                          "'non_finite'). Lower the circuit's gains or steps.")
    full_t = torch.from_numpy(np.ascontiguousarray(jac))
    if cols.size == jac.shape[1]:
        res = _rank_of(torch.linalg.svdvals(_reduce(full_t)), rtol)
        return res, res
    if cols.size == 0 or jac.shape[0] == 0:
        return _rank_of(torch.linalg.svdvals(_reduce(full_t)), rtol), (0, float("inf"), 0.0)
    rest = np.ones(jac.shape[1], dtype=bool)
    rest[cols] = False
    plastic_t, rest_t = full_t[:, torch.from_numpy(cols)], full_t[:, torch.from_numpy(rest)]
    if cols.size >= 2 * jac.shape[0]:
        r_a = torch.linalg.qr(plastic_t.T, mode="r")[1]
        plastic = _rank_of(torch.linalg.svdvals(r_a), rtol)
        full = _rank_of(torch.linalg.svdvals(_reduce(torch.cat([r_a, rest_t.T]))), rtol)
        return full, plastic
    plastic = _rank_of(torch.linalg.svdvals(_reduce(plastic_t)), rtol)
    return _rank_of(torch.linalg.svdvals(_reduce(full_t)), rtol), plastic


def _max_rank(results: list[tuple[int, float, float]]) -> tuple[int, float, float]:
    """The largest rank over points, the smallest gap and the largest tail among the points attaining it."""
    best = max(r for r, _, _ in results)
    return (best, float(min(g for r, g, _ in results if r == best)),
            float(max(t for r, _, t in results if r == best)))


def _ranks(circuit: Circuit, m: int, seed: int, points: int, cols: np.ndarray, rtol: float, method: str
           ) -> tuple[tuple[int, float, float], tuple[int, float, float]]:
    """(rank, gap, tail) of the full Jacobian and of its columns ``cols``, each maximised over ``points`` random
    points (see :func:`_rank_of`)."""
    full_res, sub_res = [], []
    for k in range(points):
        weights, probes = _point(circuit, m, seed, k)
        if method == "sketch":
            full, sub = _sketch_ranks(circuit, weights, probes, cols, rtol, seed, k)
        else:
            full, sub = _point_ranks(_full_jacobian(circuit, weights, probes, method), cols, rtol)
        full_res.append(full)
        sub_res.append(sub)
    return _max_rank(full_res), _max_rank(sub_res)
