"""Fitting a stimulation atlas (one neuron stimulated at a time, the others recorded) on the anatomy.

The model (steady, linear; the equations of :class:`neurosubset.dynamics.Steady`): a stimulation input projects
one-to-one onto the hidden neurons (a fixed projection); probe ``j`` drives neuron ``j`` with its own measured
self-response ``u_j`` (the atlas's diagonal; the median over the measured ones where it was not measured). The
steady rates are ``X = (I - W)^-1 diag(u)`` and the recorded calcium response of neuron ``i`` is ``g_i X_ij`` with a
per-neuron read-out gain ``g_i`` (calcium is not rate). The weights are

    W = a (s ⊙ C) / rho(C)  +  c L  +  D

- ``C (post, pre)`` the chemical synapse counts of the anatomy, ``s`` the presynaptic neuron's Dale sign (+1
  acetylcholine, -1 GABA, +1 where unknown; ``signs=False``: +1 everywhere), ``rho(C)`` the spectral radius of the
  counts (a fixed scale), ``a`` ONE fitted global chemical gain: the frozen synapses are count x a x sign;
- ``L`` the fixed gap-junction Laplacian of :func:`neurosubset.connectome.gap_laplacian` (unit gain), ``c`` one
  fitted gap gain (``gap=False``: none);
- ``D`` the departures from the anatomy, nonzero only on the plastic set (``(post, pre)`` pairs, anywhere: on a
  synapse or not), fitted with a ridge penalty ``lam_d |D|^2`` (chi-square units);
- tied departures: groups of anatomical synapses (a projection between two cell classes, or every synapse onto a
  class) whose weights are scaled together, ``a (1 + f_b) s_j C_ij / rho`` on group ``b``, one factor ``f_b`` per
  group (ridge ``lam_t |f|^2``).

Why tied groups: a held-out stimulation ``j`` is predicted from the training stimulations only, and a free entry
``D_ij`` out of a held-out neuron ``j`` is informed by them only through indirect paths (``k -> j -> i``), so
free entries mostly cannot generalise to held-out stimulations; a group spanning several presynaptic neurons can.

With ``clamp=True`` the stimulated neuron's rate is clamped to its drive instead (each column of ``X`` rescaled by
``u_j / X_jj``): strong gap coupling otherwise dilutes the stimulation (measured on wt: with the fitted gap gain the
unclamped model's own self-response is a median 0.18 of the measured one, 1.07 without gap junctions).

Fitted jointly (L-BFGS, torch, float64): ``a``, ``c``, ``g`` (ridge ``lam_g |g - 1|^2``) and ``D``. The loss is the
chi-square ``sum ((g_i X_ij - R_ij) / sd_ij)^2`` over the measured off-diagonal pairs of the training stimulations
only: unmeasured pairs are masked out of every residual, never filled. A local optimiser: every loss is an upper
bound on the minimum (every explained variance a lower bound).

Cross-validation is over stimulated neurons, left/right partners (and AWC) held out together; a held-out
stimulation is predicted from its measured self-response and the fitted weights and gains.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from ..dynamics import DTYPE, torch_threads

__all__ = ["Anatomy", "AtlasData", "AtlasFit", "atlas_anatomy", "atlas_data", "fit_atlas", "predict_atlas",
           "lr_groups", "atlas_folds", "rewire", "atlas_weights", "heldout_scores", "loss_gradient", "group_scores"]


@dataclass(frozen=True)
class Anatomy:
    """The anatomy the atlas is fitted on.

    Attributes
    ----------
    names : tuple of str
        ``(N,)`` neuron names (``AWCL``/``AWCR`` merged as ``AWC``).
    counts : numpy.ndarray
        ``(N, N)`` chemical synapse counts ``(post, pre)``.
    sign : numpy.ndarray
        ``(N,)`` Dale sign of each presynaptic neuron (+1 / -1; 0 where unknown).
    gap : numpy.ndarray
        ``(N, N)`` gap-junction Laplacian at unit gain (rows sum to 0).
    classes : tuple of str
        ``(N,)`` cell class of each neuron.
    """

    names: tuple[str, ...]
    counts: np.ndarray = field(repr=False)
    sign: np.ndarray = field(repr=False)
    gap: np.ndarray = field(repr=False)
    classes: tuple[str, ...] = field(repr=False)

    @property
    def size(self) -> int:
        return len(self.names)

    def synapses(self, pairs: np.ndarray) -> np.ndarray:
        """The rows of ``pairs`` ``(K, 2)`` ``(post, pre)`` that are chemical synapses."""
        pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
        return pairs[self.counts[pairs[:, 0], pairs[:, 1]] > 0]


@dataclass(frozen=True)
class AtlasData:
    """Responses of the atlas aligned with an :class:`Anatomy`.

    Attributes
    ----------
    response : numpy.ndarray
        ``(N, S)`` response of neuron ``i`` to the ``s``-th stimulated neuron (0 where masked).
    sd : numpy.ndarray
        ``(N, S)`` SD of each response (1 where masked).
    mask : numpy.ndarray
        ``(N, S)`` bool: measured, off the diagonal, not an outlier.
    stimulated : numpy.ndarray
        ``(S,)`` index of each stimulated neuron among the anatomy's ``N``.
    drive : numpy.ndarray
        ``(S,)`` input amplitude ``u`` (the measured self-response, else the median of the measured ones).
    measured_drive : numpy.ndarray
        ``(S,)`` bool: ``drive`` was measured.
    """

    response: np.ndarray = field(repr=False)
    sd: np.ndarray = field(repr=False)
    mask: np.ndarray = field(repr=False)
    stimulated: np.ndarray = field(repr=False)
    drive: np.ndarray = field(repr=False)
    measured_drive: np.ndarray = field(repr=False)

    def columns(self, which: np.ndarray) -> AtlasData:
        """The same data restricted to the stimulations ``which`` (indices into ``S``)."""
        w = np.asarray(which, dtype=np.int64)
        return AtlasData(self.response[:, w], self.sd[:, w], self.mask[:, w], self.stimulated[w], self.drive[w],
                         self.measured_drive[w])

    def masked(self, keep: np.ndarray) -> AtlasData:
        """The same data with only the pairs ``keep`` ``(N, S)`` left in the mask."""
        return replace(self, mask=self.mask & keep)


@dataclass(frozen=True)
class AtlasFit:
    """A fitted atlas model (module docstring).

    Attributes
    ----------
    chem_gain, gap_gain : float
        ``a`` and ``c``.
    gains : numpy.ndarray
        ``(N,)`` read-out gains ``g``.
    plastic : numpy.ndarray
        ``(K, 2)`` the departing pairs ``(post, pre)``.
    departures : numpy.ndarray
        ``(K,)`` their fitted departures ``D``.
    tied_pairs : numpy.ndarray
        ``(T, 2)`` synapses of the tied groups ``(post, pre)``.
    tied_group : numpy.ndarray
        ``(T,)`` group of each.
    factors : numpy.ndarray
        ``(B,)`` fitted factors ``f_b``.
    chi_square : float
        Training chi-square (without the ridge terms).
    values : int
        Training values.
    signs, gap : bool
        The model variant.
    converged : bool
        The loss is finite.
    clamp : bool
        The stimulated neuron's rate is clamped to its drive (else the drive is its input).
    """

    chem_gain: float
    gap_gain: float
    gains: np.ndarray = field(repr=False)
    plastic: np.ndarray = field(repr=False)
    departures: np.ndarray = field(repr=False)
    tied_pairs: np.ndarray = field(repr=False)
    tied_group: np.ndarray = field(repr=False)
    factors: np.ndarray = field(repr=False)
    chi_square: float
    values: int
    signs: bool
    gap: bool
    converged: bool
    clamp: bool = False


def _merge_awc(names: list[str], counts: np.ndarray, lap_counts: np.ndarray) -> tuple[list[str], np.ndarray,
                                                                                      np.ndarray]:
    """Merge AWCL and AWCR into AWC: its inputs and outputs are the mean of the two (one AWC is ON, the other
    OFF, at random per animal); the AWCL<->AWCR entries are dropped."""
    if "AWCL" not in names or "AWCR" not in names:
        return names, counts, lap_counts
    left, right = names.index("AWCL"), names.index("AWCR")
    out = []
    for m in (counts, lap_counts):
        m = m.copy()
        m[left, right] = m[right, left] = 0.0
        m[left] = (m[left] + m[right]) / 2
        m[:, left] = (m[:, left] + m[:, right]) / 2
        m[left, left] = 0.0
        keep = [k for k in range(len(names)) if k != right]
        out.append(m[np.ix_(keep, keep)])
    names = [n for k, n in enumerate(names) if k != right]
    names[left] = "AWC"
    return names, out[0], out[1]


def atlas_anatomy(dataset: str = "cook2019-herm") -> Anatomy:
    """The anatomy of :func:`neurosubset.celegans`'s ``dataset`` for fitting the atlas (needs cect).

    Chemical counts (``Generic_CS``), gap-junction pair counts, Dale signs from Wang et al. 2024 and cell classes,
    all as :mod:`neurosubset.connectome` reads them; ``AWCL``/``AWCR`` merged as ``AWC`` (means of the two).
    """
    from ..connectome import cell_classes, chemical_edges, electrical_pairs, transmitter_signs

    neurons, edges = chemical_edges(dataset)
    index = {n: i for i, n in enumerate(neurons)}
    counts = np.zeros((len(neurons), len(neurons)))
    for (pre, post), c in edges.items():
        counts[index[post], index[pre]] = c
    pairs = np.zeros_like(counts)
    for (a, b), c in electrical_pairs(dataset).items():
        if a in index and b in index:
            pairs[index[a], index[b]] = pairs[index[b], index[a]] = c
    signs = transmitter_signs(neurons)
    classes = cell_classes(neurons)
    names, counts, pairs = _merge_awc(list(neurons), counts, pairs)
    norm = np.sqrt((pairs**2).sum(axis=1).mean())
    g = pairs / norm if norm > 0 else pairs
    lap = g - np.diag(g.sum(axis=1))
    sign = np.array([0 if n == "AWC" else (signs[n] or 0) for n in names], dtype=np.float64)
    sign[names.index("AWC")] = signs.get("AWCL") or 0
    cls = tuple("AWC" if n == "AWC" else classes[n] for n in names)
    return Anatomy(tuple(names), counts, sign, lap, cls)


def atlas_data(ds, anatomy: Anatomy, *, sd: str = "sd_mean", min_sd: float = 0.01) -> AtlasData:
    """Align an atlas Dataset with ``anatomy`` (names absent from the anatomy are dropped).

    Parameters
    ----------
    ds : xarray.Dataset
        :func:`neurosubset.datasets.randi2023`, through :func:`neurosubset.datasets.pooled_noise` (``sd_mean``).
    anatomy : Anatomy
    sd : str
        The variable giving each pair's SD.
    min_sd : float
        Floor of the SDs (dF/F).

    Returns
    -------
    AtlasData
        Stimulations: every stimulated neuron with at least one measured response among the anatomy's neurons.
    """
    index = {n: i for i, n in enumerate(anatomy.names)}
    names = [str(n) for n in ds["responding"].values]
    rows = np.array([index.get(n, -1) for n in names])
    here = rows >= 0
    resp = ds["response"].values[here][:, here]
    sds = ds[sd].values[here][:, here]
    self_r = ds["self_response"].values[here]
    rows = rows[here]
    n = anatomy.size
    full_r = np.zeros((n, rows.size))
    full_sd = np.ones((n, rows.size))
    full_m = np.zeros((n, rows.size), dtype=bool)
    full_r[rows] = np.nan_to_num(resp)
    full_sd[rows] = np.where(np.isfinite(sds), np.maximum(sds, min_sd), 1.0)
    full_m[rows] = np.isfinite(resp) & np.isfinite(sds)
    keep = full_m.any(axis=0)
    measured = np.isfinite(self_r)
    median = float(np.median(self_r[measured]))
    drive = np.where(measured, self_r, median)
    return AtlasData(full_r[:, keep], full_sd[:, keep], full_m[:, keep], rows[keep], drive[keep], measured[keep])


def lr_groups(names: Sequence[str]) -> np.ndarray:
    """``(len(names),)`` group label of each neuron: left/right partners share one (``AVAL``, ``AVAR`` -> ``AVA``);
    ``AWC`` (ON and OFF merged) is its own."""
    universe = set(names)
    out = []
    for n in names:
        base = n[:-1] if n[-1:] in "LR" and n[:-1] + {"L": "R", "R": "L"}[n[-1]] in universe else n
        out.append(base)
    return np.array(out)


def atlas_folds(data: AtlasData, anatomy: Anatomy, k: int, seed: int = 0) -> list[np.ndarray]:
    """``k`` folds of the stimulations (indices into ``S``), left/right partners in the same fold."""
    labels = lr_groups([anatomy.names[i] for i in data.stimulated])
    groups = np.unique(labels)
    rng = np.random.default_rng(seed)
    order = rng.permutation(groups)
    fold_of = {g: i % k for i, g in enumerate(order)}
    return [np.flatnonzero([fold_of[x] == f for x in labels]) for f in range(k)]


_RHO: dict[int, tuple[np.ndarray, float]] = {}


def _spectral_radius(counts: np.ndarray) -> float:
    """``rho(counts)``, computed once per counts array (every fit and prediction needs it; ~0.1 s each)."""
    hit = _RHO.get(id(counts))
    if hit is None or hit[0] is not counts:
        if len(_RHO) > 64:
            _RHO.clear()
        hit = _RHO[id(counts)] = (counts, float(np.max(np.abs(np.linalg.eigvals(counts)))))
    return hit[1]


def _base(anatomy: Anatomy, signs: bool, gap: bool) -> tuple[torch.Tensor, torch.Tensor]:
    sign = np.where(anatomy.sign < 0, -1.0, 1.0) if signs else np.ones(anatomy.size)
    chem = anatomy.counts * sign[None, :]
    rho = _spectral_radius(anatomy.counts)
    chem = chem / rho if rho > 0 else chem
    lap = anatomy.gap if gap else np.zeros_like(anatomy.gap)
    return torch.as_tensor(chem, dtype=DTYPE), torch.as_tensor(lap, dtype=DTYPE)


def _predict(chem, lap, a, c, gains, plastic, d, stim, drive, tied=None, group=None, f=None,
             extra=None, clamp=False) -> torch.Tensor:
    n = chem.shape[0]
    w = a * chem + c * lap if extra is None else a * chem + c * lap + extra
    if plastic.shape[0]:
        w = w.index_put((plastic[:, 0], plastic[:, 1]), d, accumulate=True)
    if tied is not None and tied.shape[0]:
        w = w.index_put((tied[:, 0], tied[:, 1]), a * chem[tied[:, 0], tied[:, 1]] * f[group], accumulate=True)
    rhs = torch.zeros(n, stim.shape[0], dtype=DTYPE)
    rhs[stim, torch.arange(stim.shape[0])] = drive
    x = torch.linalg.solve(torch.eye(n, dtype=DTYPE) - w, rhs)
    if clamp:  # the stimulated neuron's own rate is its drive: scale each column by drive / x_jj
        x = x * (drive / x[stim, torch.arange(stim.shape[0])])[None, :]
    return gains[:, None] * x


def fit_atlas(data: AtlasData, anatomy: Anatomy, plastic: np.ndarray | None = None, *, signs: bool = True,
              gap: bool = True, anatomy_weights: bool = True, tied: Sequence[np.ndarray] = (),
              shared: Sequence[np.ndarray] = (), lam_d: float = 1.0, lam_g: float = 1.0, lam_t: float = 1.0,
              start: AtlasFit | None = None, fixed_base: bool = False, clamp: bool = False,
              iterations: int = 300, threads: int | None = 1) -> AtlasFit:
    """Fit the global gains, read-out gains and the departures on ``plastic`` (module docstring).

    Parameters
    ----------
    data : AtlasData
        The training stimulations.
    anatomy : Anatomy
    plastic : numpy.ndarray, optional
        ``(K, 2)`` departing pairs ``(post, pre)`` (indices into the anatomy); default none.
    signs, gap : bool
        Dale signs on the frozen chemical weights; the gap-junction term.
    anatomy_weights : bool
        ``False``: no frozen anatomy at all (``a = c = 0`` fixed), e.g. the dense all-weights reference.
    tied : sequence of numpy.ndarray
        Tied groups, each ``(K_b, 2)`` pairs ``(post, pre)``; only their chemical synapses are scaled.
    shared : sequence of numpy.ndarray
        Shared groups, each ``(K_b, 2)`` pairs: one additive value per group on all its pairs (synapse or not),
        ridge ``lam_t``; the result's ``plastic``/``departures`` hold every pair with its group's value.
    lam_d, lam_g, lam_t : float
        Ridge penalties on ``D``, on ``g - 1`` and on the tied factors (chi-square units per squared unit).
    fixed_base : bool
        Keep ``a``, ``c`` and ``g`` at ``start``'s values (fit only the departures).
    clamp : bool
        Clamp the stimulated neuron's rate to its drive (the measured self-response): each column of ``X`` is
        rescaled by ``u_j / X_jj``, so the network cannot dilute the stimulation (with strong gap coupling the
        unclamped model's own self-response falls well below the measured one).
    start : AtlasFit, optional
        Warm start (its gains and global gains; departures on pairs it shares with ``plastic``).
    iterations : int
        L-BFGS iterations (max).
    threads : int or None
        torch intra-op threads.

    Returns
    -------
    AtlasFit
    """
    plastic = np.zeros((0, 2), dtype=np.int64) if plastic is None else np.asarray(plastic, dtype=np.int64)
    chem, lap = _base(anatomy, signs, gap)
    r = torch.as_tensor(data.response, dtype=DTYPE)
    inv_sd = torch.as_tensor(np.where(data.mask, 1.0 / data.sd, 0.0), dtype=DTYPE)
    stim = torch.as_tensor(data.stimulated)
    drive = torch.as_tensor(data.drive, dtype=DTYPE)
    a0, c0, g0 = (0.3, 0.1 if gap else 0.0, np.ones(anatomy.size)) if start is None else (
        start.chem_gain, start.gap_gain, start.gains)
    d0 = np.zeros(plastic.shape[0])
    if start is not None and start.plastic.shape[0] and plastic.shape[0]:
        old = {tuple(p): v for p, v in zip(start.plastic.tolist(), start.departures)}
        d0 = np.array([old.get(tuple(p), 0.0) for p in plastic.tolist()])
    if not anatomy_weights:
        a0, c0 = 0.0, 0.0
    free = not (fixed_base and start is not None)
    a = torch.tensor(a0, dtype=DTYPE, requires_grad=anatomy_weights and free)
    c = torch.tensor(c0, dtype=DTYPE, requires_grad=anatomy_weights and gap and free)
    gains = torch.tensor(g0, dtype=DTYPE, requires_grad=free)
    if fixed_base and start is not None and start.plastic.shape[0]:  # start's departures stay as they are
        keep_pl, keep_d = start.plastic, start.departures
    else:
        keep_pl, keep_d = np.zeros((0, 2), dtype=np.int64), np.zeros(0)
    sh_pairs = np.concatenate([np.asarray(g_, dtype=np.int64).reshape(-1, 2) for g_ in shared]) if len(shared) \
        else np.zeros((0, 2), dtype=np.int64)
    sh_group = np.concatenate([np.full(len(g_), k) for k, g_ in enumerate(shared)]) if len(shared) else np.zeros(
        0, dtype=np.int64)
    v = torch.zeros(len(shared), dtype=DTYPE, requires_grad=True)
    all_pl = torch.as_tensor(np.concatenate([plastic, keep_pl, sh_pairs]).astype(np.int64))
    keep_t = torch.as_tensor(keep_d, dtype=DTYPE)
    sh_t = torch.as_tensor(sh_group, dtype=torch.long)
    d = torch.tensor(d0, dtype=DTYPE, requires_grad=True)
    groups = [anatomy.synapses(t) for t in tied]
    tied_pairs = np.concatenate(groups) if groups else np.zeros((0, 2), dtype=np.int64)
    tied_group = np.concatenate([np.full(len(g_), k) for k, g_ in enumerate(groups)]) if groups else np.zeros(
        0, dtype=np.int64)
    f0 = np.zeros(len(groups))
    if start is not None and start.factors.size and groups:
        old = {}
        for k in range(start.factors.size):
            old[frozenset(map(tuple, start.tied_pairs[start.tied_group == k].tolist()))] = start.factors[k]
        f0 = np.array([old.get(frozenset(map(tuple, g_.tolist())), 0.0) for g_ in groups])
    f = torch.tensor(f0, dtype=DTYPE, requires_grad=True)
    tp, tg = torch.as_tensor(tied_pairs, dtype=torch.long), torch.as_tensor(tied_group, dtype=torch.long)
    params = [p for p in (a, c, gains, d, f, v) if p.requires_grad and p.numel()]

    def chi() -> torch.Tensor:
        pred = _predict(chem, lap, a, c, gains, all_pl, torch.cat([d, keep_t, v[sh_t]]), stim, drive, tp, tg, f,
                        clamp=clamp)
        return (((pred - r) * inv_sd) ** 2).sum()

    def loss() -> torch.Tensor:
        return (chi() + lam_d * (d**2).sum() + lam_g * ((gains - 1) ** 2).sum() + lam_t * (f**2).sum()
                + lam_t * (v**2).sum())

    with torch_threads(threads):
        opt = torch.optim.LBFGS(params or [torch.zeros(1, requires_grad=True)], lr=1.0, max_iter=iterations,
                                history_size=20, line_search_fn="strong_wolfe", tolerance_grad=1e-9,
                                tolerance_change=1e-12)

        def closure():
            opt.zero_grad()
            value = loss()
            if not torch.isfinite(value):
                return torch.tensor(1e30, dtype=DTYPE, requires_grad=True) + 0 * sum(p.sum() for p in params)
            value.backward()
            return value

        if params:
            opt.step(closure)
        with torch.no_grad():
            value = float(chi())
    departures = np.concatenate([d.detach().numpy(), keep_d, v.detach().numpy()[sh_group]])
    return AtlasFit(float(a.detach()), float(c.detach()), gains.detach().numpy().copy(), all_pl.numpy().copy(),
                    departures, tied_pairs, tied_group, f.detach().numpy().copy(), value,
                    int(data.mask.sum()), signs, gap, bool(np.isfinite(value)), clamp)


def predict_atlas(fit: AtlasFit, data: AtlasData, anatomy: Anatomy, *, threads: int | None = 1) -> np.ndarray:
    """``(N, S)`` predicted responses of ``data``'s stimulations under ``fit``."""
    chem, lap = _base(anatomy, fit.signs, fit.gap)
    with torch_threads(threads), torch.no_grad():
        pred = _predict(chem, lap, torch.tensor(fit.chem_gain, dtype=DTYPE), torch.tensor(fit.gap_gain, dtype=DTYPE),
                        torch.as_tensor(fit.gains, dtype=DTYPE), torch.as_tensor(fit.plastic),
                        torch.as_tensor(fit.departures, dtype=DTYPE), torch.as_tensor(data.stimulated),
                        torch.as_tensor(data.drive, dtype=DTYPE), torch.as_tensor(fit.tied_pairs),
                        torch.as_tensor(fit.tied_group), torch.as_tensor(fit.factors, dtype=DTYPE),
                        clamp=fit.clamp)
    return pred.numpy()


def atlas_weights(fit: AtlasFit, anatomy: Anatomy) -> np.ndarray:
    """``(N, N)`` the weights ``W`` ``(post, pre)`` of ``fit`` (module docstring): frozen anatomy, departures and
    tied groups."""
    chem, lap = (t.numpy() for t in _base(anatomy, fit.signs, fit.gap))
    w = fit.chem_gain * chem + fit.gap_gain * lap
    if fit.plastic.shape[0]:
        np.add.at(w, (fit.plastic[:, 0], fit.plastic[:, 1]), fit.departures)
    if fit.tied_pairs.shape[0]:
        t = fit.tied_pairs
        np.add.at(w, (t[:, 0], t[:, 1]), fit.chem_gain * chem[t[:, 0], t[:, 1]] * fit.factors[fit.tied_group])
    return w


def heldout_scores(fit: AtlasFit, data: AtlasData, anatomy: Anatomy) -> dict[str, float]:
    """Scores of ``fit`` on ``data`` (held-out stimulations): ``ev`` explained variance ``1 - SS_res / SS_tot``
    (unweighted, around the mean of the values), ``ev_zero`` (``1 - SS_res / sum y^2``: against predicting no
    response), ``chi_square``, ``values``, ``ss_res``, ``ss_tot``."""
    pred = predict_atlas(fit, data, anatomy)
    m = data.mask
    y, p = data.response[m], pred[m]
    ss_tot = float(((y - y.mean()) ** 2).sum())
    return {"ev": 1.0 - float(((y - p) ** 2).sum()) / ss_tot if ss_tot > 0 else np.nan,
            "ev_zero": 1.0 - float(((y - p) ** 2).sum()) / float((y**2).sum()) if (y**2).sum() > 0 else np.nan,
            "chi_square": float((((y - p) / data.sd[m]) ** 2).sum()), "values": int(m.sum()),
            "ss_res": float(((y - p) ** 2).sum()), "ss_tot": ss_tot}


def loss_gradient(fit: AtlasFit, data: AtlasData, anatomy: Anatomy) -> np.ndarray:
    """``(N, N)`` gradient of the training chi-square with respect to every weight ``W_ij`` at ``fit`` (the
    diagonal set to 0): the score that ranks candidate departures (largest magnitude first)."""
    chem, lap = _base(anatomy, fit.signs, fit.gap)
    n = anatomy.size
    w = torch.zeros(n, n, dtype=DTYPE, requires_grad=True)
    r = torch.as_tensor(data.response, dtype=DTYPE)
    inv_sd = torch.as_tensor(np.where(data.mask, 1.0 / data.sd, 0.0), dtype=DTYPE)
    pred = _predict(chem, lap, torch.tensor(fit.chem_gain, dtype=DTYPE), torch.tensor(fit.gap_gain, dtype=DTYPE),
                    torch.as_tensor(fit.gains, dtype=DTYPE), torch.as_tensor(fit.plastic),
                    torch.as_tensor(fit.departures, dtype=DTYPE), torch.as_tensor(data.stimulated),
                    torch.as_tensor(data.drive, dtype=DTYPE), torch.as_tensor(fit.tied_pairs),
                    torch.as_tensor(fit.tied_group), torch.as_tensor(fit.factors, dtype=DTYPE), extra=w,
                    clamp=fit.clamp)
    (((pred - r) * inv_sd) ** 2).sum().backward()
    grad = w.grad.numpy().copy()
    np.fill_diagonal(grad, 0.0)
    return grad


def group_scores(grad: np.ndarray, fit: AtlasFit, anatomy: Anatomy, groups: Sequence[np.ndarray]) -> np.ndarray:
    """``(B,)`` squared gradient of the training chi-square with respect to each tied group's factor at ``fit``
    (factor 0): ``(sum_(ij in b) grad_ij a s_j C_ij / rho)^2``."""
    chem = _base(anatomy, fit.signs, fit.gap)[0].numpy()
    out = np.zeros(len(groups))
    for k, g in enumerate(groups):
        syn = anatomy.synapses(g)
        out[k] = float((grad[syn[:, 0], syn[:, 1]] * fit.chem_gain * chem[syn[:, 0], syn[:, 1]]).sum()) ** 2
    return out


def rewire(anatomy: Anatomy, seed: int, swaps_per_edge: int = 10) -> Anatomy:
    """A degree-preserving rewiring of ``anatomy`` (Maslov-Sneppen): chemical edges swap targets pairwise (each
    neuron keeps its in- and out-degree, counts travel with their edges, no self-loops or duplicates), gap
    junctions likewise as undirected edges; signs and classes stay with the neurons."""
    rng = np.random.default_rng(seed)

    def shuffle(m: np.ndarray, symmetric: bool) -> np.ndarray:
        src = np.triu(m, 1) if symmetric else m
        post, pre = np.nonzero(src)
        vals = src[post, pre]
        edges = set(zip(post.tolist(), pre.tolist()))
        post, pre = post.copy(), pre.copy()
        for _ in range(swaps_per_edge * post.size):
            i, j = rng.integers(post.size, size=2)
            if i == j:
                continue
            a, b, c, d = post[i], pre[i], post[j], pre[j]
            # (a <- b), (c <- d)  ->  (a <- d), (c <- b)
            if a == d or c == b or (a, d) in edges or (c, b) in edges:
                continue
            if symmetric and ((d, a) in edges or (b, c) in edges):
                continue
            edges -= {(a, b), (c, d)}
            edges |= {(a, d), (c, b)}
            pre[i], pre[j] = d, b
        out = np.zeros_like(m)
        out[post, pre] = vals
        if symmetric:
            out = out + out.T
        return out

    counts = shuffle(anatomy.counts, False)
    off = -(anatomy.gap - np.diag(np.diag(anatomy.gap)))
    g = shuffle(off, True)
    return replace(anatomy, counts=counts, gap=g - np.diag(g.sum(axis=1)))
