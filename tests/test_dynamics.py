"""Forward maps against numpy written by hand, Jacobians against a second method, the affine test by algebra."""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

import neurosubset as ns
from neurosubset._checks import ParameterError
from neurosubset.benchmark import draw_trials
from neurosubset.dynamics import PlasticMap, assemble, forward, is_affine, torch_threads

# float64 rounding on these O(1) quantities is ~1e-15; central differences with h = 1e-6 carry O(h^2) ~ 1e-12
# truncation and ~1e-10 cancellation error.
EXACT = 1e-12
FINITE_DIFF = 1e-7

MULTI = {
    "regions": {"x": {"size": 3, "role": "input"}, "h": {"size": 5}, "g": {"size": 4},
                "y": {"size": 2, "role": "output"}},
    "projections": [{"pre": "x", "post": "h"}, {"pre": "h", "post": "h", "p": 0.5, "gain": 0.5},
                    {"pre": "h", "post": "g"},
                    {"pre": "g", "post": "h", "gain": 0.3}, {"pre": "g", "post": "y"}, {"pre": "x", "post": "y"}],
}


def _circuits():
    return {
        "lffn": ns.feedforward([5, 4, 3, 2]),
        "relu": ns.feedforward([5, 4, 3], nonlinearity="relu"),
        "lrnn": ns.linear_rnn(6, 2, 3, steps=4, gain=0.9),
        "steady": ns.Circuit.from_dict({**MULTI, "dynamics": "steady"}),
        "discrete": ns.Circuit.from_dict({**MULTI, "dynamics": "discrete", "steps": 3}),
    }


def _numpy_forward(name, c, w, x):
    """The model equations written directly in numpy, one probe at a time."""
    if name in ("lffn", "relu"):
        phi = (lambda z: np.maximum(z, 0)) if name == "relu" else (lambda z: z)
        h = x
        for k in range(1, len(c.weight_names)):
            h = phi(w[f"W{k}"] @ h)
        return w[c.weight_names[-1]] @ h
    if name == "lrnn":  # h_t = W h_{t-1} + B x_t, y = C h_T
        h = np.zeros(w["W"].shape[0])
        for t in range(x.shape[0]):
            h = w["W"] @ h + w["B"] @ x[t]
        return w["C"] @ h
    if name == "steady":  # [h; g; y] = A [h; g; y] + B x  with y read out of g and x
        n_h, n_g = 5, 4
        a = np.zeros((n_h + n_g, n_h + n_g))
        a[:n_h, :n_h] = w["h->h"]
        a[:n_h, n_h:] = w["g->h"]
        a[n_h:, :n_h] = w["h->g"]
        b = np.concatenate([w["x->h"], np.zeros((n_g, 3))])
        r = np.linalg.solve(np.eye(n_h + n_g) - a, b @ x)
        return w["g->y"] @ r[n_h:] + w["x->y"] @ x
    if name == "discrete":  # synchronous updates of h and g, read out at T
        h, g = np.zeros(5), np.zeros(4)
        for t in range(x.shape[0]):
            h, g = w["h->h"] @ h + w["g->h"] @ g + w["x->h"] @ x[t], w["h->g"] @ h
        return w["g->y"] @ g + w["x->y"] @ x[-1]
    raise AssertionError(name)


@pytest.mark.parametrize("name", list(_circuits()))
def test_forward_matches_the_model_equations(name):
    c = _circuits()[name]
    rng = np.random.default_rng(7)
    w = c.sample_weights(rng)
    probes = c.sample_probes(3, rng)
    got = forward(c, {k: torch.as_tensor(v) for k, v in w.items()}, torch.as_tensor(probes)).numpy()
    want = np.stack([_numpy_forward(name, c, w, x) for x in probes])
    np.testing.assert_allclose(got, want, rtol=0, atol=EXACT)


def _map_at_random_point(c, budget):
    """A PlasticMap over 4 trials (m = 3) of a random allocation of ``budget``, and plastic values ``(4, M)``."""
    alloc = ns.allocate(c, budget, seed=2)
    draws = draw_trials(c, 3, 4, seed=1)
    fmap = PlasticMap(c, alloc, {k: torch.as_tensor(v) for k, v in draws.student_init.items()},
                      torch.as_tensor(draws.probes))
    return fmap, torch.as_tensor(np.random.default_rng(3).normal(0, 0.3, (4, alloc.size)))


@pytest.mark.parametrize("budget", [4, 20], ids=["forward-mode", "reverse-mode"])  # M <= E = 6 or M > E
@pytest.mark.parametrize("name", list(_circuits()))
def test_jacobian_methods_agree_with_finite_differences(name, budget):
    # forward mode through the steady solve is the case torch 2.13 gets wrong with linalg.solve under vmap
    c = _circuits()[name]
    fmap, theta = _map_at_random_point(c, budget)
    auto = fmap.jacobian(theta, method="autograd")
    h = 1e-6
    fd = torch.stack([(fmap(theta + h * e) - fmap(theta - h * e)) / (2 * h)
                      for e in torch.eye(theta.shape[1], dtype=theta.dtype)], dim=-1)
    np.testing.assert_allclose(auto.numpy(), fd.numpy(), atol=FINITE_DIFF)
    if c.nonlinearity == "linear":
        np.testing.assert_allclose(fmap.jacobian(theta, method="adjoint").numpy(), auto.numpy(), atol=EXACT)
    else:
        with pytest.raises(ParameterError, match="needs a linear circuit"):
            fmap.jacobian(theta, method="adjoint")


@pytest.mark.parametrize("name", list(_circuits()))
def test_value_and_jacobian_equal_the_forward_pass_and_autograd(name):
    # the fused pass reads the outputs off the adjoint's presynaptic activity: forward() (checked against numpy
    # above) and autograd are the independent references. A subset gives the same rows up to rounding (LAPACK's
    # batched solves of the steady circuit differ in the last bit with a matrix's alignment in the batch)
    c = _circuits()[name]
    fmap, theta = _map_at_random_point(c, 8)
    value, jac = fmap.value_and_jacobian(theta)
    np.testing.assert_allclose(value.numpy(), fmap(theta).numpy(), rtol=0, atol=EXACT)
    np.testing.assert_allclose(jac.numpy(), fmap.jacobian(theta, method="autograd").numpy(), rtol=0, atol=EXACT)
    pick = torch.tensor([3, 0, 3])
    sub_value, sub_jac = fmap.subset(pick).value_and_jacobian(theta[pick])
    np.testing.assert_allclose(sub_value.numpy(), value[pick].numpy(), rtol=0, atol=EXACT)
    np.testing.assert_allclose(sub_jac.numpy(), jac[pick].numpy(), rtol=0, atol=EXACT)


# two projections between the same pair of regions (h->h and "h->h slow"): the blocks are summed, so a plastic value
# can share its matrix entry with another projection's synapse
SHARED = {"dynamics": "steady", "nonlinearity": "linear", "seed": 0,
          "regions": {"x": {"size": 3, "role": "input"}, "h": {"size": 6}, "y": {"size": 2, "role": "output"}},
          "projections": [{"pre": "x", "post": "h"}, {"pre": "h", "post": "h", "p": 0.6, "gain": 0.3},
                          {"pre": "h", "post": "h", "name": "h->h slow", "p": 0.6, "gain": 0.2},
                          {"pre": "h", "post": "y"}, {"pre": "x", "post": "y"}]}


def _numpy_steady_value_and_jacobian(c, alloc, frozen, probes, theta):
    """Outputs ``(E,)`` and Jacobian ``(E, M)`` of one steady problem in numpy: the student's weights put together
    here (projections between the same regions summed), the fixed point by a dense solve and
    ``dy_o/dW_ij = [(I - W)^-1]_{o i} z_j`` with ``z = [r; x]``, outputs probe-major."""
    names = [r.name for r in c.regions if r.role != "input"]
    offset = dict(zip(names, np.cumsum([0] + [c.region[k].size for k in names])[:-1]))
    n = sum(c.region[k].size for k in names)
    inputs = [r.name for r in c.regions if r.role == "input"]
    in_offset = dict(zip(inputs, np.cumsum([0] + [c.region[k].size for k in inputs])[:-1]))
    wu = np.zeros((n, n + sum(c.region[k].size for k in inputs)))  # [W | U]
    start, where = 0, []
    for k in c.weight_names:
        proj, weight = c.projection[k], frozen[k].copy()
        i, j = np.nonzero(alloc.masks[k])  # row-major: the order of alloc.indices
        weight[i, j] = theta[start:start + i.size]
        start += i.size
        row, col = offset[proj.post], (in_offset[proj.pre] + n if proj.pre in in_offset else offset[proj.pre])
        wu[row:row + weight.shape[0], col:col + weight.shape[1]] += weight
        where += list(zip(i + row, j + col))
    w, u = wu[:, :n], wu[:, n:]
    outs = np.concatenate([np.arange(offset[k], offset[k] + c.region[k].size) for k in names
                           if c.region[k].role == "output"])
    inv = np.linalg.inv(np.eye(n) - w)
    r = inv @ u @ probes.T  # (N, m)
    z = np.concatenate([r, probes.T])  # (N + n_in, m)
    jac = np.stack([(inv[outs][:, row][None, :] * z[col][:, None]).reshape(-1) for row, col in where], axis=-1)
    return r[outs].T.reshape(-1), jac


@pytest.mark.parametrize("spec", [{**MULTI, "dynamics": "steady"}, SHARED], ids=["steady", "shared-entries"])
def test_the_kept_frozen_system_gives_the_numpy_outputs_and_jacobian(spec):
    # a steady map keeps [I - A_0 | B_0] of its frozen weights and adds theta to it at every value_and_jacobian
    # (also in subsets of subsets, which gather the kept system): the numpy solve above is the reference
    c = ns.Circuit.from_dict(spec)
    alloc = ns.allocate(c, 9, seed=5)
    draws = draw_trials(c, 3, 4, seed=2)
    fmap = PlasticMap(c, alloc, {k: torch.as_tensor(v) for k, v in draws.student_init.items()},
                      torch.as_tensor(draws.probes))
    theta = torch.as_tensor(np.random.default_rng(4).normal(0, 0.3, (4, alloc.size)))
    frozen = {k: np.where(alloc.masks[k], 0.0, v) for k, v in draws.student_init.items()}
    pick = torch.tensor([2, 0, 2, 3])
    first = fmap.subset(pick)
    maps = [(fmap, np.arange(4), theta), (first, pick.numpy(), theta[pick])]
    first.value_and_jacobian(theta[pick])  # builds first's system; its subset below gathers it
    second = torch.tensor([3, 1])
    maps.append((first.subset(second), pick.numpy()[second.numpy()], theta[pick][second]))
    for mp, trials, th in maps:
        value, jac = mp.value_and_jacobian(th)
        for p, t in enumerate(trials):
            want_y, want_j = _numpy_steady_value_and_jacobian(c, alloc, {k: v[t] for k, v in frozen.items()},
                                                              draws.probes[t], th[p].numpy())
            np.testing.assert_allclose(value[p].numpy(), want_y, rtol=1e-12, atol=1e-14)
            np.testing.assert_allclose(jac[p].numpy(), want_j, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", ["lrnn", "discrete"])
def test_large_adjoint_jacobians_take_the_einsum_path_and_agree_with_autograd(name, monkeypatch):
    # certificates build Jacobians with ~10^4 columns: there the broadcast intermediate is replaced by an einsum
    c = _circuits()[name]
    fmap, theta = _map_at_random_point(c, 20)
    monkeypatch.setattr("neurosubset.dynamics.adjoint._BROADCAST_MAX", 0)
    np.testing.assert_allclose(fmap.jacobian(theta, method="adjoint").numpy(),
                               fmap.jacobian(theta, method="autograd").numpy(), rtol=0, atol=EXACT)


def test_assemble_keeps_frozen_entries_bit_identical():
    c = ns.linear_rnn(8, 2, 2, steps=3)
    alloc = ns.allocate(c, 17, seed=4)
    rng = np.random.default_rng(0)
    frozen = {k: torch.as_tensor(np.stack([c.sample_weights(rng)[k] for _ in range(3)])) for k in c.weight_names}
    masked = {k: frozen[k].masked_fill(torch.from_numpy(alloc.masks[k].copy()), 0.0) for k in c.weight_names}
    theta = torch.as_tensor(rng.normal(0, 1e3, (3, alloc.size)))
    out = assemble(masked, {k: torch.as_tensor(v) for k, v in alloc.indices.items()}, theta)
    start = 0
    for k in c.weight_names:
        mask = torch.from_numpy(alloc.masks[k].copy()).expand_as(out[k])
        assert torch.equal(out[k][~mask], frozen[k][~mask])  # bit for bit
        n = int(alloc.masks[k].sum())
        assert torch.equal(out[k][mask].reshape(3, n), theta[:, start:start + n])
        start += n


def _mask(c, **weights):
    masks = {}
    for name, spec in weights.items():
        m = np.zeros(c.shape(name), dtype=bool)
        m[spec] = True
        masks[name] = m
    return ns.Allocation.from_masks(c, masks)


def test_is_affine_on_cases_worked_out_by_hand():
    ff = ns.feedforward([5, 4, 3])
    # y = W2 W1 x: affine in either matrix alone, bilinear in both
    assert is_affine(ff, _mask(ff, W1=np.s_[:, :2]))
    assert is_affine(ff, _mask(ff, W2=np.s_[:]))
    assert not is_affine(ff, _mask(ff, W1=np.s_[0, 0], W2=np.s_[0, 0]))
    # two entries in different rows of W1 never multiply each other: still affine
    assert is_affine(ff, _mask(ff, W1=np.s_[[0, 1], [0, 0]]))
    rnn3 = ns.linear_rnn(4, 2, 1, steps=3)
    rnn2 = ns.linear_rnn(4, 2, 1, steps=2)
    assert is_affine(rnn3, _mask(rnn3, C=np.s_[:]))  # y = C h_T
    assert is_affine(rnn3, _mask(rnn3, B=np.s_[:]))  # y = C sum_t W^{T-t} B x_t
    assert is_affine(rnn2, _mask(rnn2, W=np.s_[:]))  # T = 2: y = C (W B x_1 + B x_2)
    assert not is_affine(rnn3, _mask(rnn3, W=np.s_[0, 0]))  # T = 3: W_00^2 appears
    relu = ns.feedforward([5, 4, 3], nonlinearity="relu")
    assert is_affine(relu, _mask(relu, W2=np.s_[:]))
    assert not is_affine(relu, _mask(relu, W1=np.s_[0, 0]))


def test_bad_forward_arguments_name_the_parameter():
    c = _circuits()["discrete"]
    w = {k: torch.as_tensor(v) for k, v in c.sample_weights(np.random.default_rng(0)).items()}
    probes = torch.as_tensor(c.sample_probes(2, np.random.default_rng(1)))
    with pytest.raises(ParameterError, match=r"'weights' parameter lacks weights \['g->y'\]"):
        forward(c, {k: v for k, v in w.items() if k != "g->y"}, probes)
    with pytest.raises(ParameterError, match=r"'probes' parameter must have shape \(\.\.\., m, 3, 3\).*Got \(2, 3\)"):
        forward(c, w, probes[:, 0])
    fmap, theta = _map_at_random_point(_circuits()["lffn"], 4)
    with pytest.raises(ParameterError, match="'method' parameter must be one of"):
        fmap.jacobian(theta, method="finite-differences")


def _fresh_thread_count():
    """torch's count as a new thread sees it (OpenMP keeps one per thread; torch's setting is the default)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(torch.get_num_threads).result()


@pytest.mark.slow
def test_concurrent_fits_equal_sequential_ones_and_restore_the_thread_count():
    # two LM fits (ReLU hidden synapses are not affine) long enough to overlap; threads=1 differs from the default
    # count on a multi-core machine, so both threads really set and restore it
    relu = ns.feedforward([5, 6, 3], nonlinearity="relu")
    rnn = ns.linear_rnn(5, 2, 2, steps=3)
    jobs = [(relu, ns.allocate(relu, 12, within=["W1"], seed=1), 0), (rnn, ns.allocate(rnn, 14, seed=2), 3)]
    before, fresh_before = (torch.get_num_threads(), torch.get_num_interop_threads()), _fresh_thread_count()

    def run(job):
        circuit, alloc, seed = job
        return ns.fit(circuit, alloc, m=3, trials=6, seed=seed, threads=1)

    sequential = [run(job) for job in jobs]
    start = threading.Barrier(2)
    with ThreadPoolExecutor(2) as pool:
        concurrent = list(pool.map(lambda job: (start.wait(), run(job))[1], jobs))
    for seq, con in zip(sequential, concurrent):
        assert seq.solver == con.solver
        for field in ("residual", "theta", "matched", "restarts"):
            assert np.array_equal(getattr(seq, field), getattr(con, field)), field
        assert all(np.array_equal(seq.student[k], con.student[k]) for k in seq.student)
    assert (torch.get_num_threads(), torch.get_num_interop_threads()) == before
    assert _fresh_thread_count() == fresh_before


def test_torch_threads_shares_one_count_and_makes_a_different_one_wait():
    inside, release, log = threading.Event(), threading.Event(), []

    def holder():
        with torch_threads(1):
            log.append(("holder in", torch.get_num_threads()))
            inside.set()
            release.wait(10)
            log.append(("holder out", None))

    def other(count):
        inside.wait(10)
        with torch_threads(count):
            log.append((f"other({count}) in", torch.get_num_threads()))

    fresh_before = _fresh_thread_count()
    threads = [threading.Thread(target=holder), threading.Thread(target=other, args=(1,)),
               threading.Thread(target=other, args=(2,))]
    for t in threads:
        t.start()
    inside.wait(10)
    threads[1].join(10)  # the same count shares the holder's setting: it gets in while the holder is inside
    assert ("other(1) in", 1) in log and ("other(2) in", 2) not in log, log
    release.set()
    for t in threads:
        t.join(10)
    # the different count got in only after the holder left, and ran on its own count
    assert log.index(("holder out", None)) < log.index(("other(2) in", 2)), log
    assert _fresh_thread_count() == fresh_before
    with torch_threads(1), pytest.raises(ParameterError, match="nested blocks must ask for the same count"):
        with torch_threads(2):
            pass  # pragma: no cover
    with pytest.raises(ParameterError, match="'threads' parameter must be >= 1"):
        with torch_threads(0):
            pass  # pragma: no cover


def test_torch_threads_restores_the_first_count_when_the_last_block_leaves():
    # A enters first and leaves first; B, a new thread, starts inside A's block and so begins on A's count. B
    # leaving last must restore the count from before A, not the one B happened to start with.
    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()
    fresh_before = _fresh_thread_count()
    count = 1 if fresh_before != 1 else 2

    def first():
        with torch_threads(count):
            a_in.set()
            b_in.wait(10)
        a_out.set()

    def second():
        a_in.wait(10)
        with torch_threads(count):
            b_in.set()
            a_out.wait(10)

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert a_out.is_set() and _fresh_thread_count() == fresh_before
