"""Which synapses must change to turn one strain's atlas into another's (wt -> unc-31: no neuropeptide release)?

Both atlases are restricted to what was measured in both (stimulations with a measured pair in both, pairs
measured in both). The reference strain is fitted (anatomy, global and read-out gains, :mod:`.atlas`); then,
with that fit frozen, each candidate group of pairs gets ONE shared additive weight change ``v`` (a group: a
projection between cell classes, or the edges of one neuropeptide family) fitted to the other strain on the
training stimulations, ridge ``lam v^2``, and judged by the held-out chi-square over folds of stimulated neurons
(left/right partners together). The fit (``linear=True``, the default): one Gauss-Newton step from ``v = 0``
on the responses linearised at the frozen fit, ``r(v) = r0 + v J0`` (``J0 = d r / d v`` at 0; one linear solve per
group, shared by the folds), so the score is a first-order (linear-response) one; ``linear=False`` fits
:func:`shared_change` to convergence (a few hundred times the cost). The score of a group is the
held-out chi-square it removes from the frozen reference's, summed over the folds; ``draws`` size-matched random
groups of pairs (uniform over the ordered pairs, the same fit) give each group its null: the empirical p-value
``(1 + #random >= score) / (1 + draws)`` (one-sided; not corrected for the number of groups).

Ambiguity as :func:`neurosubset.responses.localize` rules it (its ``_ties``, ``alpha`` 0.01 by default): a group is
``statistically_tied`` with the first-placed one when their held-out chi-squares differ by less than
``chi2.isf(alpha, 1)`` (6.63), ``structurally_equivalent`` when its whitened Jacobian (d responses / d v on every
stimulation of the other strain, at its own fit) spans the same column as the first's, ``ambiguous`` when either
(with the same match verdict, held-out p-value >= ``alpha``): the first place is then not unique.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from dataclasses import replace

from .atlas import AtlasData, AtlasFit, Anatomy, atlas_folds, atlas_weights, fit_atlas, heldout_scores

__all__ = ["common_measured", "group_change_ranking", "neuropeptide_groups", "ripoll_sanchez_groups",
           "shared_change"]


def common_measured(first: AtlasData, second: AtlasData) -> tuple[AtlasData, AtlasData]:
    """Both atlases on the stimulations measured in both, masks the pairs measured in both."""
    shared = np.intersect1d(first.stimulated, second.stimulated)
    a = first.columns(np.searchsorted(first.stimulated, shared) if np.all(np.diff(first.stimulated) > 0) else
                      np.array([np.flatnonzero(first.stimulated == s)[0] for s in shared]))
    b = second.columns(np.array([np.flatnonzero(second.stimulated == s)[0] for s in shared]))
    both = a.mask & b.mask
    keep = both.any(axis=0)
    a, b = a.masked(both).columns(np.flatnonzero(keep)), b.masked(both).columns(np.flatnonzero(keep))
    return a, b


def neuropeptide_groups(anatomy: Anatomy, *, by: str = "peptide", min_edges: int = 5) -> dict[str, np.ndarray]:
    """Neuropeptide edges grouped by peptide family or by receptor, as ``(K, 2)`` ``(post, pre)`` pairs among
    ``anatomy``'s neurons (needs cect).

    The per-edge ligand and receptor come from cect's ``edgelist_NP.csv`` (Bentley et al. 2016, "The multilayer
    connectome of Caenorhabditis elegans": ``pre, post, peptide, receptor``); the family is the peptide's gene
    prefix (``flp-1`` -> ``flp``, ``nlp-12`` -> ``nlp``, ``pdf-1`` -> ``pdf``). cect's Ripoll-Sanchez et al. 2023
    matrices (:func:`ripoll_sanchez_groups`) count pathways per pair without naming them.
    """
    import csv
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("cect")
    if spec is None or not spec.submodule_search_locations:
        from .._checks import MissingExtraError

        raise MissingExtraError("neuropeptide_groups needs cect (the optional extra 'connectome'): pip install "
                                "'neurosubset[connectome]'.")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "edgelist_NP.csv"
    index = {n: i for i, n in enumerate(anatomy.names)}
    alias = {"AWCL": "AWC", "AWCR": "AWC"}
    groups: dict[str, set] = {}
    with open(path) as f:
        for row in csv.reader(f):
            if len(row) < 4:
                continue
            pre, post = alias.get(row[0], row[0]), alias.get(row[1], row[1])
            if pre not in index or post not in index or pre == post:
                continue
            key = row[2].split("-")[0] if by == "peptide" else row[3]
            groups.setdefault(key, set()).add((index[post], index[pre]))
    return {k: np.array(sorted(v), dtype=np.int64) for k, v in sorted(groups.items()) if len(v) >= min_edges}


def ripoll_sanchez_groups(anatomy: Anatomy, model: str = "short_range_model",
                          bins: Sequence[int] = (1, 2, 4, 8)) -> dict[str, np.ndarray]:
    """cect's Ripoll-Sanchez et al. 2023 neuropeptide connectome (``model``: ``short_range_model``,
    ``mid_range_model`` or ``long_range_model``) among ``anatomy``'s neurons, as ``(K, 2)`` ``(post, pre)`` pairs
    grouped by the number of peptide-GPCR pathways of the pair (the matrix's weight; the matrices name no
    peptide): group ``"RS k-l"`` holds the pairs with ``bins[i] <= pathways < bins[i + 1]`` (the last open)."""
    import importlib

    reader = importlib.import_module("cect.readers.RipollSanchezDataReader")
    _, conns = reader.RipollSanchezDataReader(model).read_data()
    index = {n: i for i, n in enumerate(anatomy.names)}
    alias = {"AWCL": "AWC", "AWCR": "AWC"}
    count: dict[tuple[int, int], float] = {}
    for c in conns:
        pre, post = alias.get(c.pre_cell, c.pre_cell), alias.get(c.post_cell, c.post_cell)
        if pre in index and post in index and pre != post:
            key = (index[post], index[pre])
            count[key] = max(count.get(key, 0.0), float(c.number))
    out = {}
    edges = list(bins) + [np.inf]
    for lo, hi in zip(edges[:-1], edges[1:]):
        label = f"RS {lo}-{int(hi) - 1}" if np.isfinite(hi) else f"RS >={lo}"
        pairs = sorted(k for k, v in count.items() if lo <= v < hi)
        if pairs:
            out[label] = np.array(pairs, dtype=np.int64)
    return out


def shared_change(base: AtlasFit, data: AtlasData, anatomy: Anatomy, pairs: np.ndarray, *, lam: float = 1.0,
                  iterations: int = 30, tol: float = 1e-7, start: float = 0.0) -> tuple[AtlasFit, np.ndarray]:
    """ONE shared additive change ``v`` on every pair of ``pairs``, ``base`` frozen, fitted to ``data``.

    Minimises ``sum ((g_i X_ij(v) - R_ij) / sd_ij)^2 + lam v^2`` over the measured pairs, ``X(v) = (I - W_base -
    v P)^-1 diag(u)`` (``P`` the indicator of ``pairs``; clamped as ``base`` is) by Gauss-Newton on the one value,
    ``dX/dv = (I - W)^-1 P X``, halving a step until the objective falls; stops when the step is below ``tol (1 +
    |v|)``. The same objective as :func:`neurosubset.responses.atlas.fit_atlas` with ``shared=[pairs]``,
    ``fixed_base=True``, ``lam_t=lam``, for a fraction of its cost.

    Parameters
    ----------
    base : AtlasFit
        The frozen fit (global gains, read-out gains, departures, tied groups).
    data : AtlasData
    anatomy : Anatomy
    pairs : numpy.ndarray
        ``(K, 2)`` pairs ``(post, pre)`` sharing the change (duplicates add).
    lam : float
        Ridge on ``v`` (chi-square units per squared unit).
    iterations : int
        Gauss-Newton steps (max).
    tol : float
        Relative step size that stops it.
    start : float
        Initial ``v``.

    Returns
    -------
    fit : AtlasFit
        ``base`` with ``pairs`` appended to its departures at the value ``v`` and ``chi_square`` on ``data``.
    jacobian : numpy.ndarray
        ``(M,)`` whitened ``d ((g_i X_ij - R_ij) / sd_ij) / dv`` at ``v`` over ``data``'s measured pairs (``M``,
        in ``numpy.nonzero`` order of the mask).
    """
    from scipy.linalg import lu_factor, lu_solve

    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    n = anatomy.size
    w0 = atlas_weights(base, anatomy)
    ind = np.zeros((n, n))
    np.add.at(ind, (pairs[:, 0], pairs[:, 1]), 1.0)
    cols = np.arange(data.stimulated.size)
    rhs = np.zeros((n, cols.size))
    rhs[data.stimulated, cols] = data.drive
    weight = np.where(data.mask, 1.0 / data.sd, 0.0)
    g = base.gains[:, None]

    def at(v: float):
        lu = lu_factor(np.eye(n) - w0 - v * ind, check_finite=False)
        x = lu_solve(lu, rhs, check_finite=False)
        dx = lu_solve(lu, ind @ x, check_finite=False)
        if base.clamp:
            xs = x[data.stimulated, cols]
            scale = data.drive / xs
            dx = dx * scale - x * scale * (dx[data.stimulated, cols] / xs)
            x = x * scale
        r = (g * x - data.response) * weight
        return r, g * dx * weight

    v = float(start)
    r, j = at(v)
    obj = float((r**2).sum()) + lam * v * v
    for _ in range(iterations):
        step = -(float((j * r).sum()) + lam * v) / (float((j * j).sum()) + lam)
        for _half in range(30):
            with np.errstate(all="ignore"):
                r_new, j_new = at(v + step)
            obj_new = float((r_new**2).sum()) + lam * (v + step) ** 2
            if np.isfinite(obj_new) and obj_new <= obj:
                break
            step /= 2
        else:
            break
        v, obj, r, j = v + step, obj_new, r_new, j_new
        if abs(step) < tol * (1 + abs(v)):
            break
    chi = float((r**2).sum())
    fit = replace(base, plastic=np.concatenate([base.plastic.reshape(-1, 2), pairs]).astype(np.int64),
                  departures=np.concatenate([base.departures, np.full(len(pairs), v)]), chi_square=chi,
                  values=int(data.mask.sum()), converged=bool(np.isfinite(chi)))
    return fit, j[data.mask]


def _linear_parts(base: AtlasFit, data: AtlasData, anatomy: Anatomy):
    """What every linearised shared change on ``data`` needs once: the LU of ``I - W_base``, the rates ``X0``, the
    whitened residuals ``r0`` ``(N, S)`` at ``v = 0``, and the whitening weights."""
    from scipy.linalg import lu_factor, lu_solve

    n = anatomy.size
    cols = np.arange(data.stimulated.size)
    rhs = np.zeros((n, cols.size))
    rhs[data.stimulated, cols] = data.drive
    lu = lu_factor(np.eye(n) - atlas_weights(base, anatomy), check_finite=False)
    x0 = lu_solve(lu, rhs, check_finite=False)
    weight = np.where(data.mask, 1.0 / data.sd, 0.0)
    xs = x0[data.stimulated, cols]
    scale = data.drive / xs if base.clamp else np.ones(cols.size)
    r0 = (base.gains[:, None] * x0 * scale - data.response) * weight
    return lu, x0, xs, scale, r0, weight, cols


def _linear_jacobian(parts, base: AtlasFit, data: AtlasData, pairs: np.ndarray) -> np.ndarray:
    """``(N, S)`` whitened ``d r / d v`` at ``v = 0`` for one shared change on ``pairs`` (one solve)."""
    from scipy.linalg import lu_solve

    lu, x0, xs, scale, _r0, weight, cols = parts
    px = np.zeros_like(x0)
    np.add.at(px, pairs[:, 0], x0[pairs[:, 1]])
    dx = lu_solve(lu, px, check_finite=False)
    if base.clamp:
        dx = dx * scale - x0 * scale * (dx[data.stimulated, cols] / xs)
    return base.gains[:, None] * dx * weight


def group_change_ranking(reference: AtlasData, other: AtlasData, anatomy: Anatomy,
                         groups: Mapping[str, np.ndarray], *, folds: int = 5, draws: int = 99, seed: int = 0,
                         iterations: int = 150, group_iterations: int = 30, lam: float = 1.0, alpha: float = 0.01,
                         linear: bool = True, base: AtlasFit | None = None,
                         progress: Callable[[str], None] | None = None, threads: int | None = 1) -> dict:
    """Rank candidate groups of pairs by how much of ``other``'s held-out chi-square one shared change on the
    group removes from the frozen fit of ``reference`` (module docstring).

    Parameters
    ----------
    reference, other : AtlasData
        Already restricted to what both measured (:func:`common_measured`).
    anatomy : Anatomy
    groups : mapping
        Name -> ``(K, 2)`` pairs ``(post, pre)``.
    folds : int
        Folds over the stimulations.
    draws : int
        Size-matched random groups per distinct group size (the smallest p-value is ``1 / (1 + draws)``).
    iterations : int
        L-BFGS iterations of the reference fit (when ``base`` is not given).
    group_iterations : int
        Gauss-Newton steps of each shared change (:func:`shared_change`).
    lam : float
        Ridge on the shared change.
    alpha : float
        Level of the ambiguity rule (``localize``'s: ``chi2.isf(alpha, 1)``) and of the match verdict.
    linear : bool
        ``True`` (default): each shared change is ONE Gauss-Newton step from ``v = 0`` and judged on the linearised
        responses ``r0 + v J0`` (one solve per group, shared by the folds: ~100x cheaper, so 99 random groups per
        size fit in minutes); ``False``: :func:`shared_change` to convergence. Groups and their random nulls always
        get the same fit.
    base : AtlasFit, optional
        The reference fit (default: fitted here on every stimulation of ``reference``).

    Returns
    -------
    dict
        ``names``, ``size`` (pairs per group), ``score`` (held-out chi-square removed, summed over folds),
        ``heldout_chi_square``, ``value`` (the shared change fitted on all stimulations of ``other``),
        ``null_mean``, ``null_sd``, ``null_max``, ``p_value``, ``place`` (1 best), ``ambiguous``,
        ``statistically_tied``, ``structurally_equivalent``, ``matched``, ``equally_good`` (names, in ranked order),
        ``tie_rule``, ``baseline_chi_square``, ``values`` and ``base`` (the reference fit).
    """
    from scipy.stats import chi2

    from .fitting import _ties  # localize's rule, the same code

    note = progress or (lambda label: None)
    if base is None:
        base = fit_atlas(reference, anatomy, iterations=iterations, threads=threads)
        note("reference fit")
    # the reference's fit, frozen, against the other strain: the baseline
    fold_idx = atlas_folds(other, anatomy, folds, seed=seed)
    s_all = np.arange(other.stimulated.size)
    trains = [other.columns(np.setdiff1d(s_all, f)) for f in fold_idx]
    helds = [other.columns(f) for f in fold_idx]
    base_chi = sum(heldout_scores(base, h, anatomy)["chi_square"] for h in helds)

    parts = _linear_parts(base, other, anatomy) if linear else None
    if linear:  # the baseline on the same footing: the linearised residuals at v = 0
        base_chi = float((parts[4] ** 2).sum())
    in_fold = np.zeros((len(fold_idx), s_all.size), dtype=bool)
    for k, f in enumerate(fold_idx):
        in_fold[k, f] = True

    def score(pairs: np.ndarray, whole: bool) -> tuple[float, float, float, np.ndarray | None]:
        # the same fits for the groups and their random nulls (the whole-data fit only adds the value and Jacobian)
        pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
        if linear:
            j = _linear_jacobian(parts, base, other, pairs)
            jr, jj, rr = (j * parts[4]).sum(0), (j * j).sum(0), (parts[4] ** 2).sum(0)  # per stimulation
            chi = 0.0
            for held in in_fold:  # one Gauss-Newton step on the training stimulations, judged on the held-out
                v = -jr[~held].sum() / (jj[~held].sum() + lam)
                chi += float(rr[held].sum() + 2 * v * jr[held].sum() + v * v * jj[held].sum())
            return base_chi - chi, chi, float(-jr.sum() / (jj.sum() + lam)), j[other.mask] if whole else None
        full, jac = shared_change(base, other, anatomy, pairs, lam=lam, iterations=group_iterations) if whole else (
            None, None)
        v0 = float(full.departures[-1]) if whole else 0.0
        chi = 0.0
        for train, held in zip(trains, helds):
            fit, _j = shared_change(base, train, anatomy, pairs, lam=lam, iterations=group_iterations)
            chi += heldout_scores(fit, held, anatomy)["chi_square"]
        return base_chi - chi, chi, v0, jac

    names = list(groups)
    sizes = np.array([len(groups[k]) for k in names])
    scores, chis, value = np.zeros(len(names)), np.zeros(len(names)), np.zeros(len(names))
    jacobians = []
    for k, name in enumerate(names):
        scores[k], chis[k], value[k], jac = score(groups[name], True)
        jacobians.append(jac[:, None])
        note(f"group {name}")
    rng = np.random.default_rng(seed)
    n = anatomy.size
    null: dict[int, np.ndarray] = {}
    for size in sorted(set(sizes.tolist())):
        vals = []
        for _ in range(draws):
            flat = rng.choice(n * n, size=size * 2, replace=False)
            post, pre = flat // n, flat % n
            keep = post != pre
            pairs = np.stack([post[keep], pre[keep]], axis=1)[:size]
            vals.append(score(pairs, False)[0])
            note(f"random size {size}")
        null[size] = np.array(vals)
    null_mean = np.array([null[s].mean() if draws else np.nan for s in sizes])
    null_sd = np.array([null[s].std(ddof=1) if draws > 1 else np.nan for s in sizes])
    null_max = np.array([null[s].max() if draws else np.nan for s in sizes])
    p = np.array([(1 + (null[s] >= v).sum()) / (1 + draws) for s, v in zip(sizes, scores)])
    order = np.argsort(-scores, kind="stable")
    place = np.empty(len(names), dtype=np.int64)
    place[order] = np.arange(1, len(names) + 1)
    held_values = sum(int(h.mask.sum()) for h in helds)
    matched = chi2.sf(chis, held_values) >= alpha
    first = int(order[0])
    same, tied, rule = _ties(True, {"chi_square": chis}, jacobians, matched, first, 0.0, alpha)
    equal = tied | (same & (matched == matched[first]))
    equal[first] = True
    ambiguous = equal & (equal.sum() > 1)
    return {"names": names, "size": sizes, "score": scores, "heldout_chi_square": chis, "value": value,
            "null_mean": null_mean, "null_sd": null_sd, "null_max": null_max, "p_value": p, "place": place,
            "ambiguous": ambiguous, "statistically_tied": tied, "structurally_equivalent": same,
            "matched": matched, "equally_good": [names[i] for i in order if equal[i]], "tie_rule": rule,
            "baseline_chi_square": float(base_chi), "values": int(other.mask.sum()), "base": base}
