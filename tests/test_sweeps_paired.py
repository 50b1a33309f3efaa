"""Paired draws, exact McNemar intervals, constraint flags as sweep dims, Dirichlet and density grids.

Independent references: the Clopper-Pearson bounds written out as beta quantiles and scipy's own exact binomial
test (``scipy.stats.binomtest``); the closed form ``1 - (alpha/2)^(1/N)`` of the upper bound at ``k = 0``; discordant
counts computed here with numpy from the stored per-trial ``matched``; draws recomputed by
:func:`neurosubset.match_probability` from the one seed a paired sweep records; separate scalar sweeps for the
``dale`` / ``stable_required`` dims; numpy's own Dirichlet draws; per-key synapse counts of density points computed
here from the circuit's structure.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

import neurosubset as ns
from neurosubset._schema import DONE
from neurosubset.allocation import Allocation
from neurosubset.circuit import Circuit, Projection, Region
from neurosubset.results import mcnemar_interval, teacher_weights

EI = Path(__file__).resolve().parents[1] / "circuits" / "ei_isn.toml"
# read-out-only plastic synapses of the E/I circuit: affine, decided exactly (bounded least squares under Dale's
# law), with MP strictly between 0 and 1 at m = 1, 2 under Dale's law (so the pairs are informative)
EI_KW = dict(budget=[12], strategy=["spread-rows", "concentrated-rows"], m=[1, 2], trials=20, seed=2,
             within=["E->OUT"], certificate=False)


def two_inputs() -> Circuit:
    return Circuit((Region("A", 4, "input"), Region("B", 3, "input"), Region("O", 3, "output")),
                   (Projection("A", "O"), Projection("B", "O")), name="two_inputs")


@pytest.fixture(scope="module")
def ei() -> Circuit:
    return Circuit.from_toml(EI)


@pytest.fixture(scope="module")
def ei_flags(ei):
    """dale = [True, False] as a sweep dim (stability off: the read-out cannot move the recurrent eigenvalues)."""
    return ns.sweep(ei, **EI_KW, dale=[True, False], stable=False)


# ------------------------------------------------------------------------------------------------- McNemar
def test_mcnemar_interval_against_a_hand_computation():
    # 20 paired trials, 7 matched by a only, 2 by b only: N = 9 discordant, k = 7
    low, high, p = mcnemar_interval(7, 2, 20)
    lo_pi = stats.beta.ppf(0.025, 7, 9 - 7 + 1)  # Clopper-Pearson, written out
    hi_pi = stats.beta.ppf(0.975, 7 + 1, 9 - 7)
    ci = stats.binomtest(7, 9).proportion_ci(0.95, method="exact")
    assert np.isclose(lo_pi, ci.low, rtol=1e-12) and np.isclose(hi_pi, ci.high, rtol=1e-12)
    assert np.isclose(low, 9 / 20 * (2 * lo_pi - 1), rtol=1e-12, atol=0)
    assert np.isclose(high, 9 / 20 * (2 * hi_pi - 1), rtol=1e-12, atol=0)
    assert low < (7 - 2) / 20 < high
    # exact McNemar: 2 P(X >= 7), X ~ Bin(9, 1/2) = 2 (36 + 9 + 1) / 512
    assert p == pytest.approx(92 / 512, rel=1e-12) == stats.binomtest(7, 9, 0.5).pvalue
    # k = 0: the upper end of pi is 1 - (alpha/2)^(1/N) in closed form, the lower end 0
    low0, high0, _ = mcnemar_interval(0, 5, 10)
    assert low0 == pytest.approx(5 / 10 * (0 - 1)) and high0 == pytest.approx(0.5 * (2 * (1 - 0.025 ** 0.2) - 1))
    assert mcnemar_interval(0, 0, 10) == (0.0, 0.0, 1.0)  # no discordant pair: the difference is 0
    with pytest.raises(ns.ParameterError, match="only_a"):
        mcnemar_interval(6, 6, 10)


def test_paired_difference_counts_intervals_and_dataset(ei_flags):
    ds = ei_flags
    diff = ns.paired_difference(ds, a={"dale": False}, b={"dale": True})
    assert diff["mp_difference"].dims == ("budget", "strategy", "m")
    checked = 0
    for strategy in EI_KW["strategy"]:
        for m in EI_KW["m"]:
            a = ds["matched"].sel(budget=12, dale=False, strategy=strategy, m=m).values
            b = ds["matched"].sel(budget=12, dale=True, strategy=strategy, m=m).values
            only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
            cell = diff.sel(budget=12, strategy=strategy, m=m)
            assert (int(cell["discordant_a"]), int(cell["discordant_b"])) == (only_a, only_b)
            assert float(cell["mp_difference"]) == pytest.approx((a.sum() - b.sum()) / a.size)
            n_disc = only_a + only_b
            if n_disc:
                ci = stats.binomtest(only_a, n_disc).proportion_ci(0.95, method="exact")
                share = n_disc / a.size
                assert float(cell["mp_difference_low"]) == pytest.approx(share * (2 * ci.low - 1), abs=1e-12)
                assert float(cell["mp_difference_high"]) == pytest.approx(share * (2 * ci.high - 1), abs=1e-12)
                assert float(cell["mcnemar_pvalue"]) == pytest.approx(stats.binomtest(only_a, n_disc).pvalue)
                checked += 1
    assert checked >= 2  # informative pairs exist: Dale's law removes solutions on some trials
    # sign bounds only remove solutions: no trial is matched with Dale's law and unmatched without it
    assert (diff["discordant_b"] == 0).all()
    for name in ("mp_difference", "mp_difference_low", "mcnemar_pvalue", "discordant_a"):
        assert diff[name].attrs["long_name"] and diff[name].attrs["units"] == "1"
    assert json.loads(diff.attrs["a"]) == {"dale": False} and "McNemar" in diff.attrs["method"]
    assert len(diff.to_dataframe()) == 1 * 2 * 2
    # an unpaired sweep cannot be compared pair by pair
    unpaired = ns.sweep(ns.feedforward([3, 2]), budget=[2, 4], m=[2], trials=3, paired=False)
    with pytest.raises(ns.ParameterError, match="paired=True"):
        ns.paired_difference(unpaired, a={"budget": 2}, b={"budget": 4})
    with pytest.raises(ns.ParameterError, match="not a sweep coordinate"):
        ns.paired_difference(ds, a={"colour": 1}, b={"dale": True})


# ------------------------------------------------------------------------------------------------- paired draws
def test_paired_draws_are_identical_across_strategies(ei, ei_flags):
    ds = ei_flags
    seed = int(ds.attrs["trial_seed"])  # the one trial seed of every point of a paired sweep
    draws = {}
    for strategy in EI_KW["strategy"]:
        masks = {ds[v].attrs["weight"]: ds[v].sel(budget=12, strategy=strategy).values.astype(bool)
                 for v in ds.data_vars if str(v).startswith("mask_")}
        alloc = Allocation.from_masks(ei, masks, strategy=strategy)
        one = ns.match_probability(ei, alloc, m=2, trials=EI_KW["trials"], seed=seed, dale=True, stable=False,
                                   certificate=False, return_weights=True)
        # the sweep's point is this computation, bit for bit
        np.testing.assert_array_equal(one["residual"].values,
                                      ds["residual"].sel(budget=12, dale=True, strategy=strategy, m=2).values)
        draws[strategy] = (teacher_weights(one), one["probes"].values,
                           {k: one[f"student_init_{k.replace('->', '_to_')}"].values for k in ei.weight_names})
    (ta, pa, sa), (tb, pb, sb) = draws.values()
    assert not np.array_equal(*(ds["mask_E_to_OUT"].sel(budget=12, strategy=s).values for s in EI_KW["strategy"]))
    for k in ei.weight_names:  # trial i: the same teacher and frozen student draw under both strategies
        np.testing.assert_array_equal(ta[k], tb[k])
        np.testing.assert_array_equal(sa[k], sb[k])
    np.testing.assert_array_equal(pa, pb)
    assert not np.array_equal(ta["E->OUT"][0], ta["E->OUT"][1])  # and different trials differ
    # paired=False: a trial seed per allocation (the draws of earlier versions), so strategies see other teachers
    unpaired = ns.sweep(ei, **{**EI_KW, "m": [2]}, dale=True, stable=False, paired=False)
    assert "trial_seed" not in unpaired.attrs and unpaired.attrs["paired"] == 0
    assert not np.array_equal(unpaired["residual"].values, ds["residual"].sel(dale=True, m=[2]).values)


# ------------------------------------------------------------------------------------------------- flag dims
def test_dale_as_a_sweep_dim_equals_two_scalar_sweeps(ei, ei_flags):
    ds = ei_flags
    assert ds["mp"].dims == ("budget", "dale", "strategy", "m") and list(ds["dale"].values) == [True, False]
    assert json.loads(ds.attrs["sweep_config"])["dale"] == [True, False]
    for flag in (True, False):
        alone = ns.sweep(ei, **EI_KW, dale=flag, stable=False)
        cell = ds.sel(dale=flag)
        for name, var in alone.data_vars.items():
            np.testing.assert_array_equal(cell[name].values, var.values, err_msg=f"{name} at dale={flag}")
        assert (cell["status"] == DONE).all()
    # scalars keep today's hash: a scalar dale adds nothing beyond the flag where it acts
    assert "dale" in json.loads(ns.sweep(ei, **{**EI_KW, "m": [1]}, dale=True, stable=False)
                                .attrs["sweep_config"])


def test_stable_as_a_sweep_dim_equals_two_scalar_sweeps(ei):
    kw = {**EI_KW, "strategy": ["spread-rows"], "m": [2]}
    ds = ns.sweep(ei, **kw, dale=True, stable=[True, False])
    assert ds["mp"].dims == ("budget", "stable_required", "strategy", "m")
    assert "stable" in ds.data_vars and ds["stable"].dims[-1] == "trial"  # the per-trial variable keeps its name
    for flag in (True, False):
        alone = ns.sweep(ei, **kw, dale=True, stable=flag)
        for name, var in alone.data_vars.items():
            np.testing.assert_array_equal(ds.sel(stable_required=flag)[name].values, var.values, err_msg=name)
    with pytest.raises(ns.ParameterError, match="'dale'"):
        ns.sweep(ei, **kw, dale=[True, 1])


# ------------------------------------------------------------------------------------------------- grids
def test_dirichlet_grid_is_seeded_and_on_the_simplex():
    keys = ["A->O", "B->O", "C->O", "D->O"]
    grid = ns.dirichlet_grid(keys, n=7, seed=11, alpha=0.5)
    expected = np.random.default_rng(11).dirichlet(np.full(4, 0.5), 7)
    np.testing.assert_allclose(np.array(grid.points), expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose(np.array(grid.points).sum(axis=1), 1.0, atol=1e-11)
    assert grid.points == ns.dirichlet_grid(keys, n=7, seed=11, alpha=0.5).points
    assert grid.points != ns.dirichlet_grid(keys, n=7, seed=12, alpha=0.5).points
    with pytest.raises(ns.AllocationError, match="'alpha'"):
        ns.dirichlet_grid(keys, n=3, seed=0, alpha=0.0)
    # a sweep over them: one point per draw, each key's share a coordinate
    c = Circuit((Region("A", 2, "input"), Region("B", 2, "input"), Region("O", 2, "output")),
                (Projection("A", "O"), Projection("B", "O")), name="ab")
    ds = ns.sweep(c, budget=[4], fractions=ns.dirichlet_grid(["A->O", "B->O"], n=3, seed=1), strategy="random",
                  m=[1], trials=2)
    assert ds.sizes["point"] == 3 and list(ds.indexes["point"].names) == ["A_to_O", "B_to_O"]


def test_density_grid_budget_follows_from_the_densities():
    c = two_inputs()  # A->O: 4 x 3 = 12 synapses, B->O: 3 x 3 = 9
    grid = ns.density_grid({"A->O": [0.0, 0.5], "B->O": [1 / 3, 1.0]})
    assert len(grid) == 4
    ds = ns.sweep(c, fractions=grid, strategy=["spread-rows"], m=[2], trials=2)
    assert "budget" not in ds.dims and ds["mp"].dims == ("point", "strategy", "m")
    eligible = {w: int(c.structure[w].sum()) for w in ("A->O", "B->O")}
    assert eligible == {"A->O": 12, "B->O": 9}
    for i, (da, db) in enumerate(grid.points):
        n_a, n_b = int(np.floor(da * 12 + 0.5)), int(np.floor(db * 9 + 0.5))  # rounded half up
        cell = ds.isel(point=i, strategy=0)
        assert int(cell["budget"]) == n_a + n_b
        assert (int(cell["mask_A_to_O"].sum()), int(cell["mask_B_to_O"].sum())) == (n_a, n_b)
        assert (float(cell["A_to_O"]), float(cell["B_to_O"])) == (da, round(db, 12))
    assert ds["A_to_O"].attrs["fraction_key"] == "A->O" and "plastic fraction" in ds["A_to_O"].attrs["long_name"]
    with pytest.raises(ns.ParameterError, match="'budget'"):
        ns.sweep(c, budget=[3], fractions=grid, m=[2], trials=2)
    with pytest.raises(ns.AllocationError, match=r"density\['A->O'\]"):
        ns.density_grid({"A->O": [1.5]})
