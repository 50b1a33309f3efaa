"""neurosubset.sparse_fit: match_probability in the sparse weights layout against the dense layout.

The dense layout (dense draws, torch LU, the dense deciders) is the independent reference: the same trials must get
identical exact decisions, and the switch must be recorded in the result. The returned weights are checked by a
steady solve assembled here from the CSR matrices (scipy.sparse.linalg.spsolve).
"""
import numpy as np
import pytest
import scipy.sparse
import scipy.sparse.linalg

import neurosubset as ns
from neurosubset._checks import ParameterError
from neurosubset._schema import UNSTABLE

from test_dynamics_sparse_map import _ei, _near_unstable_ei, _readout_plus_ee

FREE = dict(dale=False, stable=False, certificate=False)


def _both(c, alloc, m=3, trials=4, **opts):
    kw = {**FREE, **opts}
    return [ns.match_probability(c, alloc, m=m, trials=trials, options=ns.FitOptions(weights_layout=lay, **kw))
            for lay in ("dense", "sparse")]


@pytest.mark.parametrize("dale", [False, True])
def test_layouts_make_identical_exact_decisions_on_affine_allocations(dale):
    c = _ei()
    alloc = ns.allocate(c, 12, within=["E->OUT", "F->OUT"], seed=0)  # read-out: affine, least squares / BVLS
    dense, sparse = _both(c, alloc, dale=dale)
    assert dense.attrs["weights_layout"] == "dense" and sparse.attrs["weights_layout"] == "sparse"
    assert dense.attrs["decision_kind"] == sparse.attrs["decision_kind"] == "exact"
    for var in ("matched", "decision", "outcome", "fit_status"):
        np.testing.assert_array_equal(dense[var].values, sparse[var].values, err_msg=var)
    if dale:  # the sign box binds: some trials are proven unmatchable (infeasible), in both layouts alike
        assert not dense.matched.all()


@pytest.mark.parametrize("dale", [False, True])
def test_layouts_make_identical_exact_decisions_on_discrete_circuits(dale):
    c = _ei(dynamics="discrete", steps=3)
    alloc = ns.allocate(c, 12, within=["E->OUT", "F->OUT"], seed=0)  # read-out of h_T: affine
    dense, sparse = _both(c, alloc, dale=dale)
    assert dense.attrs["weights_layout"] == "dense" and sparse.attrs["weights_layout"] == "sparse"
    assert dense.attrs["decision_kind"] == sparse.attrs["decision_kind"] == "exact"
    for var in ("matched", "decision", "outcome", "fit_status"):
        np.testing.assert_array_equal(dense[var].values, sparse[var].values, err_msg=var)
    # unconstrained: every trial matched; with the sign box: every trial proven infeasible (BVLS), in both layouts
    assert dense.matched.all() if not dale else not dense.matched.any()

def test_the_lifted_decider_on_sparse_rows_finds_the_dense_deciders_witnesses():
    c = _ei()
    alloc = _readout_plus_ee(c)  # free read-out rows at m = 3 (>= 3 presynaptic E cells per output row)
    dense, sparse = _both(c, alloc, solver="lifted")
    assert sparse.attrs["solver"] == "lifted" and sparse.attrs["decision_kind"] == "exact"
    np.testing.assert_array_equal(dense.outcome.values, sparse.outcome.values)
    assert sparse.matched.all() and (sparse.residual.values < 1e-10).all()
    assert set(np.unique(sparse.decision.values)) == set(np.unique(dense.decision.values))


@pytest.mark.slow
def test_layouts_agree_where_the_lm_decides():
    c = _ei()
    alloc = ns.allocate(c, 30, strategy="spread-rows", within=["E->E"], seed=1)  # non-affine, too few hidden: LM
    dense, sparse = _both(c, alloc, solver=ns.LevenbergMarquardt(max_rounds=1))
    assert dense.attrs["decision_kind"] == sparse.attrs["decision_kind"] == "lower bound"
    np.testing.assert_array_equal(dense.matched.values, sparse.matched.values)


def test_the_sparse_layout_refuses_what_it_does_not_run_in_one_line():
    c = _ei()
    alloc = ns.allocate(c, 4, within=["E->OUT"], seed=0)
    with pytest.raises(ParameterError, match="The 'return_weights' parameter of match_probability") as info:
        ns.match_probability(c, alloc, m=2, trials=2, return_weights=True,
                             options=ns.FitOptions(weights_layout="sparse", **FREE))
    assert "\n" not in str(info.value)


@pytest.mark.slow
def test_stable_draws_and_matches_in_the_sparse_layout_equal_the_dense_layouts():
    # about a quarter of the draws are unstable: both layouts reject the same ones (ARPACK vs numpy's eigenvalues)
    c = _near_unstable_ei()
    alloc = ns.allocate(c, 12, within=["E->OUT", "F->OUT"], seed=0)  # read-out: affine, stability not moved
    dense, sparse = _both(c, alloc, m=3, trials=6, stable=True)
    assert (dense.teacher_rejected.values + dense.student_rejected.values).sum() > 0
    for var in ("matched", "decision", "outcome", "fit_status", "teacher_rejected", "student_rejected", "stable"):
        np.testing.assert_array_equal(dense[var].values, sparse[var].values, err_msg=var)
    np.testing.assert_allclose(sparse.max_real_eig.values, dense.max_real_eig.values, rtol=1e-8)
    assert sparse.matched.all() and (sparse.max_real_eig.values < 1).all()


@pytest.mark.slow
def test_layouts_agree_where_the_lm_must_find_stable_matches():
    c = _ei()
    alloc = ns.allocate(c, 30, strategy="spread-rows", within=["E->E"], seed=1)  # in the loop: moves stability
    # the LM searches the sign box within K where stability is required: at K = 1e6 init SDs that is the sign box
    # in practice, where trial 1's only match is unstable; at the default K it matches every trial stably
    for k in (1e6, 100.0):
        dense, sparse = _both(c, alloc, stable=True, solver=ns.LevenbergMarquardt(max_rounds=1), plausibility_bound=k)
        for var in ("matched", "fit_status", "stable"):
            np.testing.assert_array_equal(dense[var].values, sparse[var].values, err_msg=var)
        np.testing.assert_allclose(sparse.max_real_eig.values, dense.max_real_eig.values, rtol=1e-6)
        if k == 1e6:  # a trial whose only match was unstable: refused in both layouts (its best refused match)
            assert (sparse.fit_status.values == UNSTABLE).any() and sparse.matched.any()


def _steady_outputs(c, weights, x):
    """Outputs ``(m, n_out)`` of a steady linear circuit from CSR weights: ``(I - A) r = B x`` assembled and solved
    here (spsolve), ``y`` the output regions' rates."""
    at, n = {}, 0
    for r in c.regions:
        if r.role != "input":
            at[r.name], n = n, n + r.size
    at_in, n_in = {}, 0
    for r in c.regions:
        if r.role == "input":
            at_in[r.name], n_in = n_in, n_in + r.size
    a, b = scipy.sparse.lil_array((n, n)), scipy.sparse.lil_array((n, n_in))
    for p in c.projections:
        w = weights[p.name].tocoo()
        if p.pre in at_in:
            b[w.row + at[p.post], w.col + at_in[p.pre]] = w.data
        else:
            a[w.row + at[p.post], w.col + at[p.pre]] = w.data
    rates = scipy.sparse.linalg.spsolve((scipy.sparse.identity(n) - a).tocsc(), (b.tocsr() @ x.T))
    outs = np.concatenate([np.arange(at[o], at[o] + c.region[o].size) for o in c.output_regions])
    return rates[outs].T


def test_fit_in_the_sparse_layout_returns_students_that_reproduce_their_teachers():
    c = _ei()
    alloc = ns.allocate(c, 12, within=["E->OUT", "F->OUT"], seed=0)
    sparse, dense = (ns.fit(c, alloc, m=3, trials=3, options=ns.FitOptions(weights_layout=lay, chunk=chunk, **FREE))
                     for lay, chunk in (("sparse", 2), ("dense", None)))  # sparse: two chunks, concatenated
    assert sparse.matched.all()
    for i in range(3):
        x = sparse.trials.probes[i]
        y_teacher = _steady_outputs(c, {k: v[i] for k, v in sparse.trials.teacher.items()}, x)
        y_student = _steady_outputs(c, {k: v[i] for k, v in sparse.student.items()}, x)
        assert np.linalg.norm(y_student - y_teacher) / np.linalg.norm(y_teacher) < 1e-8
        assert sparse.student["E->OUT"][i].shape == c.shape("E->OUT")
    np.testing.assert_array_equal(sparse.trials.probes, dense.trials.probes)
    for k in c.weight_names:  # the same draws; the fitted values equal the dense layout's to rounding
        np.testing.assert_array_equal(sparse.trials.teacher[k].toarray(), dense.trials.teacher[k])
        np.testing.assert_array_equal(sparse.trials.student_init[k].toarray(), dense.trials.student_init[k])
        scale = max(np.abs(dense.student[k]).max(), 1.0)
        np.testing.assert_allclose(sparse.student[k].toarray(), dense.student[k], rtol=0, atol=1e-10 * scale)
        frozen = ~alloc.masks[k]
        np.testing.assert_array_equal(sparse.student[k].toarray()[:, frozen], dense.student[k][:, frozen])


def test_fit_in_the_sparse_layout_refuses_weights_it_cannot_hold_in_one_line():
    c = _ei()
    alloc = ns.allocate(c, 4, within=["E->OUT"], seed=0)
    with pytest.raises(ParameterError, match="returning every trial's weights.*Lower 'trials'") as info:
        ns.fit(c, alloc, m=2, trials=10**9, options=ns.FitOptions(weights_layout="sparse", **FREE))
    assert "\n" not in str(info.value)


def test_a_result_and_its_resume_file_are_keyed_by_the_sparse_layout():
    """A sparse run's configuration (config_hash) and resume key differ from the dense run's, so an interrupted run
    never resumes in the other layout; a dense request (explicit or automatic) keeps the key and hash it had before
    the field: those are recomputed here from the pre-field recipe (the hashed config without weights_layout, the
    resume key's JSON without it)."""
    import hashlib
    import json

    from neurosubset._partial import request_key
    from neurosubset.options import config_hash

    c = _ei()
    alloc = ns.allocate(c, 12, within=["E->OUT", "F->OUT"], seed=0)
    dense, sparse = _both(c, alloc, trials=2)
    auto = ns.match_probability(c, alloc, m=3, trials=2, options=ns.FitOptions(**FREE))
    assert auto.attrs["weights_layout"] == "dense" and auto.attrs["config_hash"] == dense.attrs["config_hash"]
    assert sparse.attrs["config_hash"] != dense.attrs["config_hash"]
    assert sparse.attrs["weights_layout"] == "sparse" and "weights_layout" not in _hashed(dense)
    assert config_hash(_hashed(dense)) == dense.attrs["config_hash"]
    assert config_hash({**_hashed(sparse), "weights_layout": "sparse"}) == sparse.attrs["config_hash"]
    keys = {lay: request_key(c, alloc, 3, 2, 0, ns.FitOptions(weights_layout=lay, **FREE))
            for lay in ("auto", "dense", "sparse")}
    before = hashlib.sha256(json.dumps(
        [c.to_toml(), {k: np.asarray(v).tolist() for k, v in sorted(alloc.indices.items())}, 3, 2, 0,
         ns.FitOptions(**FREE).to_attrs()], sort_keys=True, default=str).encode()).hexdigest()
    assert keys["auto"] == keys["dense"] == before and keys["sparse"] != before


def _hashed(ds):
    """The hashed configuration an mp result spells out in its attrs (neurosubset.options.hashed_config's keys)."""
    keys = ("circuit", "circuit_name", "allocation_strategy", "allocation_hash", "allocation_size", "allocation_counts",
            "m", "trials", "seed", "solver", "tolerance", "restarts_per_round", "max_rounds", "lm_steps")
    return {k: ds.attrs[k].item() if hasattr(ds.attrs[k], "item") else ds.attrs[k] for k in keys}
