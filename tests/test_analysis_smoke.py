"""Smoke tests of the analysis scripts: each runs with ``--quick`` in a subprocess (so that the scripts' own
thread setting never touches this process) into a temporary directory; the dataset is read back and checked.

Expected values that are asserted were derived by hand from the model equations (comments say how); everything
else is checked for shape, attrs and sane ranges only.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

# each script runs in a subprocess (4-10 s a test): those tests are marked slow; the static rules at the end are not

ROOT = Path(__file__).resolve().parents[1]
WILSON_SLACK = 1e-12  # Wilson bounds are computed in floating point; allow rounding at the ends of [0, 1]


def _run(script: str, out: Path) -> xr.Dataset:
    proc = subprocess.run([sys.executable, str(ROOT / "analysis" / f"{script}.py"), "--quick", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, f"{script} --quick failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    nc, png = out / f"{script}.nc", out / f"{script}.png"
    assert nc.is_file() and nc.stat().st_size > 0, f"{nc} was not written"
    assert png.is_file() and png.stat().st_size > 0, f"{png} was not written"
    with xr.open_dataset(nc, engine="h5netcdf") as ds:
        ds = ds.load()
    _check_attrs(ds, script)
    return ds


def _check_attrs(ds: xr.Dataset, script: str) -> None:
    for key in ("script", "command", "mode", "seed", "neurosubset_version", "torch_version", "runtime_s", "claim"):
        assert key in ds.attrs, f"{script}: attr {key!r} missing; attrs are {sorted(ds.attrs)}"
    assert ds.attrs["script"] == f"analysis/{script}.py"
    assert ds.attrs["mode"] == "quick"
    for key, value in ds.attrs.items():
        assert isinstance(value, (str, int, float, np.integer, np.floating)), \
            f"{script}: attr {key!r} has type {type(value).__name__}, not a plain str/int/float"


def _check_mp(ds: xr.Dataset, script: str) -> None:
    mp, low, high = ds.mp.values, ds.mp_low.values, ds.mp_high.values
    ok = np.isfinite(mp)
    assert ok.any(), f"{script}: no MP estimate at all"
    assert ((mp[ok] >= 0) & (mp[ok] <= 1)).all(), f"{script}: MP outside [0, 1]: {mp[ok]}"
    assert (low[ok] <= mp[ok] + WILSON_SLACK).all() and (mp[ok] <= high[ok] + WILSON_SLACK).all(), \
        f"{script}: Wilson interval does not contain MP: low {low[ok]}, mp {mp[ok]}, high {high[ok]}"
    assert ds.mp.attrs.get("units") == "1" and "long_name" in ds.mp.attrs


@pytest.mark.slow
def test_lffn_allocations(tmp_path):
    ds = _run("lffn_allocations", tmp_path)
    assert set(ds.mp.dims) == {"case", "m"}
    _check_mp(ds, "lffn")
    # quick single layer: d_in = 6, n = 4, M = 12. Row i must solve delta_i X_{A_i} = r_i (a generic vector of
    # R^m for m <= d_in), solvable iff k_i >= m. spread-rows deals 12 / 4 = 3 per row => MP = 1 for m <= 3, 0 for
    # m = 4..6; concentrated-rows fills two rows of 6 and leaves two rows empty => MP = 0 for every m.
    spread = ds.mp.sel(case="1 layer: spread-rows")
    assert (spread.sel(m=[1, 2, 3]) == 1).all(), f"spread-rows, m <= 3: {spread.values}"
    assert (spread.sel(m=[4, 5, 6]) == 0).all(), f"spread-rows, m >= 4: {spread.values}"
    assert (ds.mp.sel(case="1 layer: concentrated-rows") == 0).all(), \
        f"concentrated-rows: {ds.mp.sel(case='1 layer: concentrated-rows').values}"
    # quick two layers 4-4-3, all 9 plastic synapses in W2 dealt 3 per output row: y = (W2 + D) h with hidden
    # activity h of rank min(m, 4) >= m for m <= 3, so each output row solves k_i = 3 >= m equations => MP = 1.
    assert (ds.mp.sel(case="2 layers: all in W2, spread-rows").sel(m=[1, 2, 3]) == 1).all()


@pytest.mark.slow
def test_lrnn_allocations(tmp_path):
    ds = _run("lrnn_allocations", tmp_path)
    assert set(ds.mp.dims) == {"config", "case", "m"}
    _check_mp(ds, "lrnn")
    cfg = "n=5, T=2"
    # T = 2: y = C W B x_1 + C B x_2. Plastic entries of one row i of W add C e_i (d^T B x_1): every probe's
    # change points along the fixed direction C e_i of R^2, while the mismatch to match is generic => MP = 0.
    assert (ds.mp.sel(config=cfg, case="W: single row").dropna("m") == 0).all()
    # only C plastic (5 synapses over 2 output rows: 3 and 2): y_i = (C_i + d_i) h_T with h_T of rank min(m, 5),
    # so row i needs k_i >= m => MP = 1 for m <= 2 and 0 for m = 3.
    c_only = ds.mp.sel(config=cfg, case="C: spread over rows")
    assert (c_only.sel(m=[1, 2]) == 1).all() and float(c_only.sel(m=3)) == 0, f"C only: {c_only.values}"


@pytest.mark.slow
def test_relu_allocations(tmp_path):
    ds = _run("relu_allocations", tmp_path)
    assert set(ds.mp.dims) == {"nonlinearity", "allocation", "m"}
    _check_mp(ds, "relu")
    # linear control 3-6-1 with W1 plastic and every input used: y = w2^T (W1 + D) x, the reachable change
    # sum_j w2_j d_j^T spans all of R^3 (each input column carries a plastic synapse), so any teacher a^T x is
    # matched => MP = 1 at every m.
    assert (ds.mp.sel(nonlinearity="linear") == 1).all(), f"linear control: {ds.mp.sel(nonlinearity='linear').values}"
    assert (ds.neurons > 0).all()


@pytest.mark.slow
def test_digits_allocations(tmp_path):
    ds = _run("digits_allocations", tmp_path)
    assert set(ds.test_accuracy.dims) == {"strategy", "budget", "seed"}
    acc = ds.test_accuracy.values
    assert ((acc[np.isfinite(acc)] >= 0) & (acc[np.isfinite(acc)] <= 1)).all()
    for s in ("spread-rows", "concentrated-rows", "random"):
        counts = ds.sel(strategy=s, budget=40)
        assert ((counts.plastic_W1 + counts.plastic_W2) == 40).all(), f"{s}: the budget was not respected"
    everything = ds.sel(strategy="all plastic", budget=0)
    nothing = ds.sel(strategy="nothing plastic", budget=0)
    assert (everything.train_accuracy > nothing.train_accuracy).all(), \
        f"training all weights did not beat the untrained net: {everything.train_accuracy.values} vs " \
        f"{nothing.train_accuracy.values}"


@pytest.mark.slow
def test_heuristic_accuracy(tmp_path):
    ds = _run("heuristic_accuracy", tmp_path)
    assert set(ds.mp.dims) == {"allocation"}
    _check_mp(ds, "heuristic")
    assert {"all_spearman", "all_class_agreement", "linear_class_agreement"} <= set(ds.attrs)
    assert set(np.unique(ds.measured.values)) <= {"zero", "in-between", "one"}
    # for a single linear layer the heuristic is exact (issue 4; SCIENCE.md worked result), and the affine solve
    # is exact: its verdict must equal the measured class on every such allocation
    single = ds.where(ds.family == "linear 1 layer 6-4", drop=True)
    assert single.sizes["allocation"] > 0
    assert (single.heuristic_verdict == single.measured).all(), \
        f"heuristic {single.heuristic_verdict.values} vs measured {single.measured.values}"



@pytest.mark.slow
def test_ei_allocations(tmp_path):
    ds = _run("ei_allocations", tmp_path)
    _check_mp(ds, "ei_allocations")
    split = ds.sel(panel="split").dropna("allocation", subset=["mp"], how="all")
    assert split.sizes["allocation"] == 3
    # Dale's law and stability only remove solutions: no constrained MP exceeds the unconstrained one by more than
    # the LM's own noise (lower bounds) on 6 trials: one trial
    free = split.mp.sel(dale=0, stable_required=0).values
    for dale, stable in ((1, 0), (0, 1), (1, 1)):
        assert (split.mp.sel(dale=dale, stable_required=stable).values <= free + 1 / 6 + 1e-12).all()
    ro = ds.sel(panel="readout", stable_required=1).dropna("allocation", subset=["mp"], how="all")
    # read-out only is affine: exact decisions; 2 per row < m = 3 probes is rank-deficient (certificate zero, MP 0)
    assert (ro.solver.sel(dale=1) == "lstsq").all() and (ro.decision_kind.sel(dale=1) == "exact").all()
    two = ro.sel(allocation="read-out 2 per row")
    assert float(two.mp.sel(dale=0)) == float(two.mp.sel(dale=1)) == 0.0 and two.verdict.sel(dale=1).item() == "zero"
    # without signs a full-rank read-out always matches (certificate one); Dale's law never raises it
    assert (ro.mp.sel(dale=1) <= ro.mp.sel(dale=0)).all()
    assert (ro.n_sign_violations.sel(dale=1) == 0).all()


@pytest.mark.slow
def test_scaling(tmp_path):
    ds = _run("scaling", tmp_path)
    assert set(ds.m_critical.dims) == {"family", "n", "strategy"}
    for n in ds.n.values:
        lffn = ds.m_critical.sel(family="LFFN", n=n)
        # n-n-2 chain, M = n in W1 (closed form, SCIENCE.md's one-layer argument through W2): a plastic synapse
        # (i, c) moves y by W2[:, i] x_c, so a set of synapses reaches the span of {W2[:, i] x_c}, of dimension
        # sum over used columns c of rank{W2[:, i] : i in rows using c}, each at most 2, against dim V = 2 min(m, n).
        # One full column: rank 2 only at m = 1 -> m_c = 1. One full row: W2[:, i] x reaches min(m, n) < 2m -> 0.
        # One synapse per row and per column (spread-cols deals columns round-robin over rows): n terms of rank 1
        # -> min(n, 2m) = 2m iff m <= n / 2.
        assert int(lffn.sel(strategy="concentrated-cols")) == 1
        assert int(lffn.sel(strategy="concentrated-rows")) == 0
        assert int(lffn.sel(strategy="spread-cols")) == n // 2


@pytest.mark.slow
def test_continuous_allocations(tmp_path):
    ds = _run("continuous_allocations", tmp_path)  # into tmp_path: the shipped data/continuous_allocations.* stay
    assert set(ds.mp.dims) == {"case", "tau_ratio"}
    _check_mp(ds, "continuous_allocations")
    # quick: tau / D in {0.1, 10} with D = 0.1 s, dt = min(D / 10, tau / 2) => tau 0.01 s, 1 s; dt 5 ms, 10 ms
    np.testing.assert_allclose(ds.tau_ratio.values, [0.1, 10.0])
    np.testing.assert_allclose(ds.tau.values, np.broadcast_to([0.01, 1.0], ds.tau.shape))
    np.testing.assert_allclose(ds.dt.values, np.broadcast_to([0.005, 0.01], ds.dt.shape))
    # read-out C (affine: exact least squares): y_i = (C_i + d_i) h(D) with h(D) of rank min(m, n, n_in steps)
    # = min(3, 6, 4) = 3 over the 3 probes, so row i matches iff it holds >= 3 plastic synapses: 3 + 3 => MP = 1,
    # 6 + 0 => MP = 0 at every tau; the full-row Jacobian has rank 3 of the 6 = 2 outputs x 3 probes (zero)
    assert (ds.mp.sel(case="C: one per row") == 1).all() and (ds.mp.sel(case="C: one full row") == 0).all()
    assert (ds.plastic_rank.sel(case="C: one full row") == 3).all() and (ds.full_rank.sel(case="C: one full row")
                                                                        == 6).all()
    assert (ds.verdict.sel(case="C: one full row") == "zero").all()
    assert (ds.decision_kind.sel(case=["C: one per row", "C: one full row"]) == "exact").all()
    # W (tanh, not affine): LM lower bounds; E = m n_out = 2 x 2 = 4 equations
    w = ds.sel(case=["W: one per row", "W: one full row"])
    assert (w.decision_kind == "lower bound").all() and (w.full_rank == 4).all() and (w.plastic_rank <= 4).all()


@pytest.mark.slow
def test_celegans_biological(tmp_path):
    ds = _run("celegans_biological", tmp_path)
    # quick: Dale signs + stable, greedy 276 without gap junctions, 2 trials; the other runs are NaN / -1
    run = ds.sel(signs="dale", gap_junctions=0, allocation="greedy-276")
    assert int(run.trials) == 2 and int(run.n_plastic) == 276
    counts = int(run.n_proven_match) + int(run.n_no_match_lp) + int(run.n_no_match_bb) + int(run.n_undecided)
    assert counts == 2 and float(run.decided_fraction) == 1 - int(run.n_undecided) / 2
    kinds = dict(zip(ds.proof_kind.attrs["flag_values"], ds.proof_kind.attrs["flag_meanings"].split()))
    outcomes = dict(zip(ds.outcome.attrs["flag_values"], ds.outcome.attrs["flag_meanings"].split()))
    assert (ds.outcome.sel(gap_junctions=1) == -1).all() and outcomes[-1] == "not_run"
    for o, k in zip(run.outcome.values, run.proof_kind.values):  # a no match is a proof within K, a match a witness
        assert (outcomes[o] == "proven_no_match") == (kinds[k] in ("sign_cone_lp_within_k",
                                                                   "branch_and_bound_within_k"))
        assert (outcomes[o] == "proven_match") == (kinds[k] == "lyapunov_witness")
    # the bracket: proven matches / trials <= mp_lower-side, proofs cap mp_upper (Wilson ends, so only ordering)
    assert 0.0 <= float(run.mp_lower) <= float(run.mp_upper) <= 1.0
    assert np.isnan(ds.trials.sel(gap_junctions=1)).all() and ds.attrs["plausibility_bound"] == 100.0


# ------------------------------------------------------------------------------------- static rules (fast)
def _analysis_trees():
    import ast

    for path in sorted((ROOT / "analysis").glob("*.py")):
        yield path, ast.parse(path.read_text(), filename=str(path))


def test_analysis_scripts_import_no_private_names():
    """The scripts use the public API: no ``neurosubset._x`` module but ``neurosubset._internal`` (the one door),
    no private name (``_x``) from any module, a sibling script's included, and no ``ns._x`` attribute."""
    import ast

    bad = []
    for path, tree in _analysis_trees():
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module != "__future__":
                parts = node.module.split(".")
                if any(p.startswith("_") and p != "_internal" for p in parts[1:]) or parts[0].startswith("_"):
                    bad.append(f"{path.name}:{node.lineno} from {node.module} import ...")
                bad += [f"{path.name}:{node.lineno} from {node.module} import {a.name}" for a in node.names
                        if a.name.startswith("_")]
            elif isinstance(node, ast.Import):
                bad += [f"{path.name}:{node.lineno} import {a.name}" for a in node.names
                        if any(p.startswith("_") and p != "_internal" for p in a.name.split(".")[1:])]
            elif (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "ns"
                  and node.attr.startswith("_") and not node.attr.startswith("__")):
                bad.append(f"{path.name}:{node.lineno} ns.{node.attr}")
    assert not bad, "analysis/ reaches past the public API (use neurosubset._internal):\n" + "\n".join(bad)


def test_analysis_scripts_write_only_through_the_one_write_path():
    """No ``to_netcdf`` / ``to_zarr`` / ``savefig`` call in analysis/: every file goes through ns.write and
    write_figure (common.save), so the output rules (no silent overwrite, shipped data/ kept) hold."""
    import ast

    bad = [f"{path.name}:{node.lineno} .{node.func.attr}(...)" for path, tree in _analysis_trees()
           for node in ast.walk(tree) if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
           and node.func.attr in ("to_netcdf", "to_zarr", "savefig")]
    assert not bad, "analysis/ writes around neurosubset.write:\n" + "\n".join(bad)
