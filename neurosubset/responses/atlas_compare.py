"""Which synapses must change to turn one strain's atlas into another's (wt -> unc-31: no neuropeptide release)?

Both atlases are restricted to what was measured in both (stimulations with a measured pair in both, pairs
measured in both). The reference strain is fitted (anatomy, global and read-out gains, :mod:`.atlas`); then,
with that fit frozen, each candidate group of pairs gets ONE shared additive weight change (a group: a projection
between cell classes, or the edges of one neuropeptide family) fitted to the other strain on the training
stimulations, and judged by the held-out chi-square over folds of stimulated neurons (left/right partners
together). The score of a group is the held-out chi-square it removes from the frozen reference's, summed over the
folds; size-matched random groups of pairs (uniform over the ordered pairs) give each group its null: the
empirical p-value ``(1 + #random >= score) / (1 + draws)``.

Ambiguity (as ``localize``'s "statistically tied"): a group whose held-out chi-square is within the critical
difference 3.84 (chi-square, 1 dof, 5%: one fitted value each) of the first-placed group's is ``ambiguous``: the
first place is not unique.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from .atlas import AtlasData, AtlasFit, Anatomy, atlas_folds, fit_atlas, heldout_scores

__all__ = ["common_measured", "group_change_ranking", "neuropeptide_groups", "ripoll_sanchez_groups", "TIE_CHI2"]

TIE_CHI2 = 3.841458820694124
"""chi2(1).ppf(0.95): held-out chi-square difference within which two groups are statistically tied."""


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


def group_change_ranking(reference: AtlasData, other: AtlasData, anatomy: Anatomy,
                         groups: Mapping[str, np.ndarray], *, folds: int = 5, draws: int = 20, seed: int = 0,
                         iterations: int = 150, group_iterations: int = 30, base: AtlasFit | None = None,
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
        Size-matched random groups per distinct group size.
    base : AtlasFit, optional
        The reference fit (default: fitted here on every stimulation of ``reference``).

    Returns
    -------
    dict
        ``names``, ``size`` (pairs per group), ``score`` (held-out chi-square removed, summed over folds),
        ``heldout_chi_square``, ``value`` (the shared change fitted on all stimulations), ``null_mean``,
        ``null_sd``, ``p_value``, ``place`` (1 best), ``ambiguous``, ``baseline_chi_square``, ``values`` and
        ``base`` (the reference fit).
    """
    note = progress or (lambda label: None)
    if base is None:
        base = fit_atlas(reference, anatomy, iterations=iterations, threads=threads)
        note("reference fit")
    # the reference's fit, frozen, against the other strain: the baseline
    fold_idx = atlas_folds(other, anatomy, folds, seed=seed)
    s_all = np.arange(other.stimulated.size)
    base_chi = sum(heldout_scores(base, other.columns(f), anatomy)["chi_square"] for f in fold_idx)

    def score(pairs: np.ndarray) -> tuple[float, float]:
        chi = 0.0
        for f in fold_idx:
            train = other.columns(np.setdiff1d(s_all, f))
            fit = fit_atlas(train, anatomy, shared=[pairs], start=base, fixed_base=True, clamp=base.clamp,
                            signs=base.signs, gap=base.gap, iterations=group_iterations, threads=threads)
            chi += heldout_scores(fit, other.columns(f), anatomy)["chi_square"]
        return base_chi - chi, chi

    names = list(groups)
    sizes = np.array([len(groups[k]) for k in names])
    scores, chis = np.zeros(len(names)), np.zeros(len(names))
    for k, name in enumerate(names):
        scores[k], chis[k] = score(groups[name])
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
            vals.append(score(pairs)[0])
            note(f"random size {size}")
        null[size] = np.array(vals)
    null_mean = np.array([null[s].mean() for s in sizes])
    null_sd = np.array([null[s].std(ddof=1) if draws > 1 else np.nan for s in sizes])
    p = np.array([(1 + (null[s] >= v).sum()) / (1 + draws) for s, v in zip(sizes, scores)])
    order = np.argsort(-scores, kind="stable")
    place = np.empty(len(names), dtype=np.int64)
    place[order] = np.arange(1, len(names) + 1)
    ambiguous = chis - chis[order[0]] <= TIE_CHI2 if names else np.zeros(0, dtype=bool)
    return {"names": names, "size": sizes, "score": scores, "heldout_chi_square": chis, "null_mean": null_mean,
            "null_sd": null_sd, "p_value": p, "place": place, "ambiguous": ambiguous,
            "baseline_chi_square": float(base_chi), "values": int(other.mask.sum()), "base": base}
