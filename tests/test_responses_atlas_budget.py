"""The atlas model and its budget curve on a synthetic ground truth at the atlas's scale.

Ground truth (numpy here, independent of the library's torch model): the real anatomy (Cook 2019 through cect, AWC
merged), frozen weights ``a s C / rho + c L`` with known ``a``, ``c``; three projections between cell classes
depart from the anatomy (their synapses scaled by known factors); read-out gains about 3; responses
``g_i [(I - W)^-1 diag(u)]_ij`` on exactly the pairs the wt atlas measured, with its self-responses as drives and
Gaussian noise at its modelled per-pair SDs (noise floor / sqrt(trials)).
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from neurosubset.datasets import pooled_noise, randi2023
from neurosubset.responses.atlas import atlas_anatomy, atlas_data, atlas_folds, lr_groups, rewire
from neurosubset.responses.atlas_budget import CurveSettings, budget_curve, class_blocks, greedy_ranking, ranked_pairs


@pytest.fixture(scope="module")
def atlas():
    an = atlas_anatomy()
    ds = pooled_noise(randi2023("wt"))
    n = ds["n_trials"].values
    ds["sd_floor"] = (("responding", "stimulated"), np.where(n > 0, ds["floor"].values[:, None]
                                                            / np.sqrt(np.maximum(n, 1)), np.nan))
    return an, atlas_data(ds, an, sd="sd_floor")


def _truth(an, tmpl, seed=0):
    rng = np.random.default_rng(seed)
    classes = np.array(an.classes)
    stim_classes = classes[tmpl.stimulated]
    blocks = {b: an.synapses(p) for b, p in class_blocks(an).items()}
    sign = np.where(an.sign < 0, -1.0, 1.0)
    rho = np.max(np.abs(np.linalg.eigvals(an.counts)))
    w0 = 0.6 * an.counts * sign[None] / rho + 0.5 * an.gap
    drive = np.eye(an.size)[:, tmpl.stimulated] * tmpl.drive
    x0 = np.linalg.solve(np.eye(an.size) - w0, drive)
    # departing projections whose presynaptic class has >= 3 stimulated members (so held-out folds can judge
    # them), the three whose factor 2.5 moves the measured responses most (in noise SDs): a truth the data can see
    eligible = [b for b, p in blocks.items() if (stim_classes == b[0]).sum() >= 3 and len(p) >= 8]
    effect = {}
    for b in eligible:
        w = w0.copy()
        w[blocks[b][:, 0], blocks[b][:, 1]] *= 3.5
        dx = np.linalg.solve(np.eye(an.size) - w, drive) - x0
        effect[b] = float(((3.0 * dx / tmpl.sd)[tmpl.mask] ** 2).sum())
    true = sorted(eligible, key=lambda b: (-effect[b], b))[:3]
    factors = np.array([2.5, -2.0, 2.5])
    w = w0.copy()
    for b, f in zip(true, factors):
        p = blocks[b]
        w[p[:, 0], p[:, 1]] *= 1 + f
    assert np.linalg.eigvals(w).real.max() < 1  # a stable steady state
    gains = 3.0 * np.exp(0.2 * rng.standard_normal(an.size))
    x = np.linalg.solve(np.eye(an.size) - w, np.eye(an.size)[:, tmpl.stimulated] * tmpl.drive)
    clean = gains[:, None] * x
    noisy = np.where(tmpl.mask, clean + tmpl.sd * rng.standard_normal(clean.shape), 0.0)
    return true, replace(tmpl, response=noisy), replace(tmpl, response=np.where(tmpl.mask, clean, 0.0))


@pytest.mark.slow  # the anatomy and the atlas load in ~8 s
def test_folds_keep_left_right_partners_together(atlas):
    an, data = atlas
    folds = atlas_folds(data, an, 5, seed=3)
    assert sorted(np.concatenate(folds).tolist()) == list(range(data.stimulated.size))
    labels = lr_groups([an.names[i] for i in data.stimulated])
    fold_of = {}
    for f, idx in enumerate(folds):
        for lab in labels[idx]:
            assert fold_of.setdefault(lab, f) == f, lab


@pytest.mark.slow  # the anatomy and the atlas load in ~8 s
def test_rewire_keeps_degrees(atlas):
    an, _ = atlas
    rw = rewire(an, seed=1, swaps_per_edge=2)
    before, after = an.counts > 0, rw.counts > 0
    np.testing.assert_array_equal(before.sum(0), after.sum(0))
    np.testing.assert_array_equal(before.sum(1), after.sum(1))
    assert np.allclose(np.sort(an.counts[before]), np.sort(rw.counts[after]))
    assert (before != after).sum() > 0.5 * before.sum()  # most edges moved
    assert np.allclose(rw.gap.sum(1), 0) and np.allclose(rw.gap, rw.gap.T)
    assert np.diag(rw.counts).sum() == 0


def test_spread_and_concentrated_orders():
    """On a gradient with known magnitudes: spread takes every row's best entry first, concentrated a row whole."""
    grad = np.array([[0.0, 5.0, 1.0], [2.0, 0.0, 3.0], [0.5, 0.2, 0.0]])
    spread = ranked_pairs(grad, "spread")
    assert spread[:3].tolist() == [[0, 1], [1, 2], [2, 0]]
    conc = ranked_pairs(grad, "concentrated")
    assert conc[:2].tolist() == [[0, 1], [0, 2]] and conc[2].tolist() == [1, 2]


# the synthetic truth's fits, shared by the tests below (module scope: fitted once). Three folds; four greedy
# steps (the true set has three projections, the fourth shows the curve flat beyond it); screening fits of the tied
# factors alone and warm-started refits (the defaults' 80 iterations) keep it to ~40 s of CPU.
SETTINGS = CurveSettings(greedy_steps=4, greedy_candidates=4, iterations=150, refit_iterations=80,
                         screen_iterations=30, strategies=("greedy",))


@pytest.fixture(scope="module")
def synthetic(atlas):
    an, tmpl = atlas
    true, data, clean = _truth(an, tmpl)
    folds = atlas_folds(data, an, 3, seed=0)
    curve = budget_curve(data, an, folds, SETTINGS)["greedy"]
    return an, true, data, clean, folds, curve


def _active(chosen, dropped):
    """The projections in the model after each step (added minus dropped), as sets."""
    out, now = [], []
    for label, gone in zip(chosen, dropped):
        now = [x for x in now + ([label] if label else []) if x not in gone.split(",")]
        out.append(set(now))
    return out


@pytest.mark.slow
def test_synthetic_truth_is_ranked_first_on_every_stimulation(synthetic):
    """Stepwise selection on every stimulation: the three departing projections are its first three steps."""
    an, true, data, *_ = synthetic
    labels = {f"{a}->{b}" for a, b in true}
    ranking = greedy_ranking(data, an, replace(SETTINGS, greedy_steps=3))
    assert set(ranking["chosen"]) == labels and set(ranking["active"]) == labels, ranking


@pytest.mark.slow
def test_synthetic_truth_is_ranked_first_in_every_fold(synthetic):
    """On each fold's training stimulations: after three steps the model holds exactly the true projections (the
    old check allowed "within the first four": plain forward selection with full-refit screening took the proxy
    RIA->RMD first in the fold whose RMDL/RMDR stimulations are held out)."""
    an, true, data, clean, folds, curve = synthetic
    labels = {f"{a}->{b}" for a, b in true}
    true_budget = sum(len(an.synapses(class_blocks(an)[b])) for b in true)
    for f, (chosen, dropped) in enumerate(zip(curve["chosen"], curve["dropped"])):
        assert _active(chosen, dropped)[3] == labels, (f, chosen, dropped, labels)
        assert curve["size"][f][3] == true_budget, (f, curve["size"][f])


@pytest.mark.slow
def test_synthetic_budget_curve_reaches_the_noise_ceiling_at_the_true_budget(synthetic):
    """Held-out EV at the true budget against the true model's own held-out EV on the same folds (the ceiling)."""
    an, true, data, clean, folds, curve = synthetic
    ceiling = []
    for fold in folds:
        held = data.columns(fold)
        y, m = held.response[held.mask], clean.columns(fold).response[held.mask]
        ceiling.append(1 - ((y - m) ** 2).sum() / ((y - y.mean()) ** 2).sum())
    ceiling = np.array(ceiling)
    ev = np.array(curve["ev"])  # (fold, step): step 0 the anatomy alone
    labels = {f"{a}->{b}" for a, b in true}
    done = np.array([[s == labels for s in _active(c, d)].index(True) for c, d in zip(curve["chosen"],
                                                                                       curve["dropped"])])
    rows = np.arange(len(folds))
    assert (done < ev.shape[1] - 1).all(), done  # the true set is in, with a step after it
    assert (ev[:, 0] < ceiling - 0.05).all(), (ev[:, 0], ceiling)  # the anatomy alone is clearly below
    # at the true set the curve reaches the ceiling (every fold; local fits), and one more projection adds nothing
    assert (np.abs(ev[rows, done] - ceiling) < 0.03).all(), (ev, done, ceiling)
    assert (ev[rows, done + 1] - ev[rows, done] < 0.01).all(), (ev, done)
