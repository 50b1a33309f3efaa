"""Which synapses must depart from the anatomy? Budget curves, references and nulls for the atlas model.

Built on :mod:`.atlas` (the model, its fit and the folds). Every curve is cross-validated over stimulated
neurons (left/right partners held out together): on each fold the anatomy-only model is fitted on the training
stimulations, the gradient of its training chi-square with respect to every weight ranks the candidate departures
(largest magnitude first), and for each budget the model with those departures is refitted (warm start) and
scored on the held-out stimulations (explained variance and chi-square). Strategies:

- ``spread``: departures spread over the rows (postsynaptic neurons): every row's best entry first (rows in
  order of their best score), then every row's second, ...;
- ``concentrated``: rows in order of their score (sum of squared gradients), each taken whole (its entries in
  score order) before the next;
- ``class``: one tied factor per cell class scaling every chemical synapse onto it (:mod:`.atlas`), classes in
  order of their factor's squared gradient, one more per step;
- ``greedy``: stepwise selection over projections between cell classes (pre class -> post class, one tied factor
  scaling its chemical synapses). At each step the ``candidates`` best-scored projections are each screened by a
  refit of the tied factors alone (``a``, ``c`` and the read-out gains frozen at the current fit), the one with the
  lowest training chi-square is added and the model refitted in full (the gradient is recomputed at the new fit).
  Then a backward check: every earlier projection whose removal (full refit without it) raises the training
  chi-square by less than ``chi2.isf(tie_alpha, 1)`` (6.63 at 0.01, the critical difference of ``localize``'s
  statistical tie) is dropped: the projections added later explain what it did. A projection once dropped is not
  offered again. Why: forward selection alone is myopic. Measured on the synthetic truth of
  tests/test_responses_atlas_budget.py (three departing projections), in the fold whose RMDL/RMDR stimulations are
  held out, forward selection with full-refit screening took the proxy RIA->RMD second (training chi-square
  34,262 against 36,272 for the true RMD->RMD), so the true set was complete only at step four, beside the proxy;
  the backward check dropped RIA->RMD at that step. With the factors-only screening that fold takes the three true
  projections first.

The budget on the x-axis is the number of departing entries ``K`` (free entries; for tied groups, the chemical
synapses they scale). Free entries out of a held-out neuron are informed by the training stimulations only
through indirect paths (see :mod:`.atlas`), tied groups across presynaptic neurons directly. Every fit is a local
optimiser's: held-out scores are those of the fits found (the training chi-square an upper bound on its minimum).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from .atlas import AtlasData, AtlasFit, Anatomy, fit_atlas, group_scores, heldout_scores, loss_gradient

__all__ = ["STRATEGIES", "ranked_pairs", "class_blocks", "class_groups", "CurveSettings", "budget_curve",
           "greedy_ranking", "dense_reference"]

STRATEGIES = ("spread", "concentrated", "class", "greedy")


@dataclass(frozen=True)
class CurveSettings:
    """Settings of :func:`budget_curve`.

    Attributes
    ----------
    budgets : tuple of int
        ``K`` for ``spread`` and ``concentrated``.
    class_steps : int
        Classes freed, one per step, for ``class``.
    greedy_steps, greedy_candidates : int
        Steps of ``greedy`` and blocks screened per step.
    screen_iterations : int
        L-BFGS iterations of a greedy candidate's screening fit (its tied factors only).
    tie_alpha : float
        Level of the backward check's critical difference ``chi2.isf(tie_alpha, 1)`` (``localize``'s tie rule).
    lam_d, lam_g : float
        Ridge penalties of :func:`fit_atlas`.
    iterations : int
        L-BFGS iterations of the anatomy fit; refits use ``refit_iterations``.
    refit_iterations : int
    signs, gap, clamp : bool
        The model variant (:func:`fit_atlas`).
    """

    budgets: tuple[int, ...] = (0, 25, 50, 100, 200, 400, 800, 1600)
    class_steps: int = 6
    greedy_steps: int = 6
    greedy_candidates: int = 6
    screen_iterations: int = 30
    tie_alpha: float = 0.01
    lam_d: float = 1.0
    lam_g: float = 1.0
    iterations: int = 150
    refit_iterations: int = 80
    signs: bool = True
    gap: bool = True
    clamp: bool = False
    strategies: tuple[str, ...] = field(default=STRATEGIES)


def ranked_pairs(grad: np.ndarray, strategy: str) -> np.ndarray:
    """``(M, 2)`` candidate departures ``(post, pre)`` in order for ``spread`` or ``concentrated`` (module
    docstring), from the gradient ``(N, N)`` (entries with zero gradient, the diagonal included, left out)."""
    score = np.abs(grad)
    n = score.shape[0]
    order = np.argsort(-score, axis=1, kind="stable")  # (N, N) columns by score within each row
    ranked = np.take_along_axis(score, order, axis=1)
    if strategy == "spread":
        # rank r of every row, rows by that entry's score; r = 0, 1, ...
        rows = np.argsort(-ranked, axis=0, kind="stable")  # (N rank, N) rows ordered per rank
        post = rows.T.reshape(-1)
        rank = np.repeat(np.arange(n), n)
        pre = order[post, rank]
    elif strategy == "concentrated":
        rows = np.argsort(-(score**2).sum(axis=1), kind="stable")
        post = np.repeat(rows, n)
        pre = order[rows].reshape(-1)
    else:
        raise ValueError(f"The 'strategy' parameter must be 'spread' or 'concentrated'. Got {strategy!r} instead.")
    keep = score[post, pre] > 0
    return np.stack([post[keep], pre[keep]], axis=1)


def class_blocks(anatomy: Anatomy) -> dict[tuple[str, str], np.ndarray]:
    """``(pre class, post class) -> (K, 2)`` every ``(post, pre)`` pair between the two classes (no self
    pairs)."""
    classes = np.array(anatomy.classes)
    members = {c: np.flatnonzero(classes == c) for c in dict.fromkeys(anatomy.classes)}
    out = {}
    for pre_c, pre in members.items():
        for post_c, post in members.items():
            p, q = np.meshgrid(post, pre, indexing="ij")
            pairs = np.stack([p.ravel(), q.ravel()], axis=1)
            pairs = pairs[pairs[:, 0] != pairs[:, 1]]
            if pairs.size:
                out[(pre_c, post_c)] = pairs
    return out


def class_groups(anatomy: Anatomy) -> dict[str, np.ndarray]:
    """``class -> (K, 2)`` every chemical synapse ``(post, pre)`` onto the class's neurons (classes with any)."""
    classes = np.array(anatomy.classes)
    out = {}
    for c in dict.fromkeys(anatomy.classes):
        syn = anatomy.synapses(_row_pairs(np.flatnonzero(classes == c), anatomy.size))
        if syn.size:
            out[c] = syn
    return out


def _row_pairs(rows: np.ndarray, n: int) -> np.ndarray:
    p, q = np.meshgrid(rows, np.arange(n), indexing="ij")
    pairs = np.stack([p.ravel(), q.ravel()], axis=1)
    return pairs[pairs[:, 0] != pairs[:, 1]]


def budget_curve(data: AtlasData, anatomy: Anatomy, folds: Sequence[np.ndarray],
                 settings: CurveSettings = CurveSettings(), *, progress: Callable[[str], None] | None = None,
                 threads: int | None = 1) -> dict:
    """Held-out scores against the number of departing entries, per strategy and fold (module docstring).

    Parameters
    ----------
    data : AtlasData
        Every stimulation (the folds index into its ``S``).
    anatomy : Anatomy
    folds : sequence of numpy.ndarray
        Held-out stimulations of each fold (:func:`neurosubset.responses.atlas.atlas_folds`).
    settings : CurveSettings
    progress : callable, optional
        Called with a short label after every fit.

    Returns
    -------
    dict
        ``strategy -> {"size": (fold, step) departing entries, "ev": (fold, step) held-out explained variance,
        "chi_square": (fold, step), "values": (fold, step), "train_chi_square": (fold, step),
        "on_anatomy": (fold, step) fraction of departing entries on a chemical synapse or gap junction,
        "chosen": (fold, step) labels (greedy: the block added; class: the class freed), "dropped": (fold, step)
        greedy: the blocks the backward check removed at the step (comma-separated)}`` (step 0 is the anatomy-only
        fit), and ``"anatomy_fits"``: the anatomy-only fit of each fold.
    """
    note = progress or (lambda label: None)
    s_all = np.arange(data.stimulated.size)
    connected = (anatomy.counts > 0) | (anatomy.gap != 0)
    blocks = {b: anatomy.synapses(p) for b, p in class_blocks(anatomy).items()} if "greedy" in settings.strategies \
        else {}
    blocks = {b: p for b, p in blocks.items() if p.size}
    cgroups = class_groups(anatomy) if "class" in settings.strategies else {}
    out: dict = {s: {k: [] for k in ("size", "ev", "ev_zero", "chi_square", "values", "train_chi_square",
                                     "on_anatomy", "chosen", "dropped")} for s in settings.strategies}
    base_fits = []
    kw = dict(signs=settings.signs, gap=settings.gap, clamp=settings.clamp, lam_d=settings.lam_d,
              lam_g=settings.lam_g, threads=threads)

    def record(strategy: str, rows: dict, fit: AtlasFit, held: AtlasData, label: str, gone: str = "") -> None:
        sc = heldout_scores(fit, held, anatomy)
        size = fit.plastic.shape[0] + fit.tied_pairs.shape[0]
        rows["size"][-1].append(size)
        rows["ev_zero"][-1].append(sc["ev_zero"])
        rows["ev"][-1].append(sc["ev"])
        rows["chi_square"][-1].append(sc["chi_square"])
        rows["values"][-1].append(sc["values"])
        rows["train_chi_square"][-1].append(fit.chi_square)
        on = connected[fit.plastic[:, 0], fit.plastic[:, 1]].mean() if fit.plastic.shape[0] else (
            1.0 if size else np.nan)
        rows["on_anatomy"][-1].append(float(on))
        rows["chosen"][-1].append(label)
        rows["dropped"][-1].append(gone)
        note(f"{strategy} K={size}")

    for fold in folds:
        train = data.columns(np.setdiff1d(s_all, fold))
        held = data.columns(fold)
        base = fit_atlas(train, anatomy, iterations=settings.iterations, **kw)
        base_fits.append(base)
        note("anatomy")
        grad = loss_gradient(base, train, anatomy)
        for strategy in settings.strategies:
            rows = out[strategy]
            for k in rows:
                rows[k].append([])
            record(strategy, rows, base, held, "")
            if strategy in ("spread", "concentrated"):
                order = ranked_pairs(grad, strategy)
                start = base
                for k in settings.budgets:
                    if k == 0:
                        continue
                    fit = fit_atlas(train, anatomy, order[:k], start=start, iterations=settings.refit_iterations,
                                    **kw)
                    start = fit
                    record(strategy, rows, fit, held, "")
            elif strategy == "class":
                names = list(cgroups)
                score = group_scores(grad, base, anatomy, [cgroups[c] for c in names])
                freed: list[str] = []
                start = base
                for k in np.argsort(-score, kind="stable")[:settings.class_steps]:
                    freed.append(names[k])
                    fit = fit_atlas(train, anatomy, tied=[cgroups[c] for c in freed], start=start,
                                    iterations=settings.refit_iterations, **kw)
                    start = fit
                    record(strategy, rows, fit, held, names[k])
            elif strategy == "greedy":
                for label, gone, fit in _greedy(train, anatomy, base, grad, blocks, settings, kw, note):
                    record(strategy, rows, fit, held, label, ",".join(gone))
    out["anatomy_fits"] = base_fits
    return out


def _greedy(train: AtlasData, anatomy: Anatomy, base: AtlasFit, grad: np.ndarray, blocks: dict,
            settings: CurveSettings, kw: dict, note: Callable[[str], None]):
    """Stepwise selection over class projections (module docstring): yields ``("PRE->POST", dropped, fit)`` per
    step, ``dropped`` the labels the backward check removed at that step."""
    from scipy.stats import chi2

    critical = float(chi2.isf(settings.tie_alpha, 1))
    current, g = base, grad
    active: list = []  # in the model now, in the order added
    offered: set = set()  # added once (never offered again)
    names = list(blocks)
    for _ in range(min(settings.greedy_steps, len(names))):
        score = group_scores(g, current, anatomy, [blocks[b] for b in names])
        score[[names.index(b) for b in offered]] = -np.inf
        cands = [names[k] for k in np.argsort(-score, kind="stable")[:settings.greedy_candidates]
                 if np.isfinite(score[k])]
        if not cands:
            return
        best = None
        for b in cands:  # screening: the tied factors alone, the rest frozen at the current fit
            trial = fit_atlas(train, anatomy, tied=[blocks[x] for x in active + [b]], start=current, fixed_base=True,
                              iterations=settings.screen_iterations, **kw)
            note(f"greedy candidate {b[0]}->{b[1]}")
            if best is None or trial.chi_square < best[1]:
                best = (b, trial.chi_square)
        b = best[0]
        active.append(b)
        offered.add(b)
        current = fit_atlas(train, anatomy, tied=[blocks[x] for x in active], start=current,
                            iterations=settings.refit_iterations, **kw)
        note(f"greedy add {b[0]}->{b[1]}")
        dropped = []
        for old in list(active[:-1]):  # backward check: earlier projections the later ones made redundant
            rest = [x for x in active if x != old]
            without = fit_atlas(train, anatomy, tied=[blocks[x] for x in rest], start=current,
                                iterations=settings.refit_iterations, **kw)
            note(f"greedy drop? {old[0]}->{old[1]}")
            if without.chi_square - current.chi_square < critical:
                active, current = rest, without
                dropped.append(f"{old[0]}->{old[1]}")
        yield f"{b[0]}->{b[1]}", dropped, current
        g = loss_gradient(current, train, anatomy)


def greedy_ranking(data: AtlasData, anatomy: Anatomy, settings: CurveSettings = CurveSettings(), *,
                   progress: Callable[[str], None] | None = None, threads: int | None = 1) -> dict:
    """Stepwise selection over class projections on every stimulation (no held-out data; module docstring): the
    ranking of the projections that must depart from the anatomy.

    Returns
    -------
    dict
        ``"chosen"`` (labels ``PRE->POST`` added, in order), ``"dropped"`` (per step: the labels the backward check
        removed, comma-separated), ``"active"`` (the projections of the final fit, in the order added),
        ``"chi_square"`` (training chi-square after each step, step 0 the anatomy alone), ``"size"`` (synapses
        scaled), ``"factors"`` (the final fit's factors, in the order of ``active``), ``"fit"`` (the final fit).
    """
    note = progress or (lambda label: None)
    kw = dict(signs=settings.signs, gap=settings.gap, clamp=settings.clamp, lam_d=settings.lam_d,
              lam_g=settings.lam_g, threads=threads)
    blocks = {b: anatomy.synapses(p) for b, p in class_blocks(anatomy).items()}
    blocks = {b: p for b, p in blocks.items() if p.size}
    base = fit_atlas(data, anatomy, iterations=settings.iterations, **kw)
    note("anatomy")
    grad = loss_gradient(base, data, anatomy)
    chosen, dropped, chi, size, fit = [], [], [base.chi_square], [0], base
    active: list = []
    for label, gone, fit in _greedy(data, anatomy, base, grad, blocks, settings, kw, note):
        chosen.append(label)
        dropped.append(",".join(gone))
        active = [x for x in active + [label] if x not in gone]
        chi.append(fit.chi_square)
        size.append(fit.tied_pairs.shape[0])
    return {"chosen": chosen, "dropped": dropped, "active": active, "chi_square": np.array(chi),
            "size": np.array(size), "factors": fit.factors, "fit": fit}


def dense_reference(data: AtlasData, anatomy: Anatomy, folds: Sequence[np.ndarray], lams: Sequence[float], *,
                    iterations: int = 150, progress: Callable[[str], None] | None = None,
                    threads: int | None = 1) -> dict:
    """The dense, regularised all-weights reference: every off-diagonal pair a free weight (no anatomy), ridge
    ``lam`` on the weights, read-out gains fitted; held-out scores per ``lam`` and fold.

    Returns
    -------
    dict
        ``"lam" (lam,)``, ``"ev" (lam, fold)``, ``"chi_square" (lam, fold)``, ``"values" (lam, fold)``.
    """
    note = progress or (lambda label: None)
    n = anatomy.size
    p, q = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    every = np.stack([p.ravel(), q.ravel()], axis=1)
    every = every[every[:, 0] != every[:, 1]]
    s_all = np.arange(data.stimulated.size)
    ev = np.full((len(lams), len(folds)), np.nan)
    chi = np.full_like(ev, np.nan)
    values = np.zeros_like(ev)
    for f, fold in enumerate(folds):
        train, held = data.columns(np.setdiff1d(s_all, fold)), data.columns(fold)
        start = None
        for i, lam in enumerate(sorted(lams, reverse=True)):  # strongest ridge first, warm starts downwards
            fit = fit_atlas(train, anatomy, every, anatomy_weights=False, lam_d=lam, start=start,
                            iterations=iterations, threads=threads)
            start = fit
            sc = heldout_scores(fit, held, anatomy)
            k = list(lams).index(lam)
            ev[k, f], chi[k, f], values[k, f] = sc["ev"], sc["chi_square"], sc["values"]
            note(f"dense lam={lam:g}")
    return {"lam": np.asarray(lams, dtype=np.float64), "ev": ev, "chi_square": chi, "values": values}
