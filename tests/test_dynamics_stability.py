"""Stability advice of steady specs (neurosubset.dynamics.stability, issue 27): per-projection sensitivity of the
spectral abscissa, the warning near the limit, the refusal naming the dominant projections and its draw count.

References are independent of the code under test: the recurrent matrix assembled here from the weights,
eigenvalues from numpy, derivatives by central finite differences of the gain of one projection at a time.
"""
from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import shipped_circuit

import neurosubset as ns
from neurosubset.dynamics.stability import SPEC_SEED_KEY

ROOT = Path(__file__).resolve().parents[1]
EI_ISN = ROOT / "circuits" / "ei_isn.toml"
FD_STEP = 1e-6  # relative gain step: central differences of a simple eigenvalue, error O(h^2) ~ 1e-12
FD_RTOL = 1e-5


def _circuit(path_or_text, *, text=False):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ns.StabilityWarning)
        return ns.Circuit.from_toml_text(path_or_text) if text else ns.Circuit.from_toml(path_or_text)


def _recurrent(circuit, weights, scale=None):
    """All non-input neurons' recurrent matrix, assembled here; ``scale``: (projection, factor)."""
    names = [r.name for r in circuit.regions if r.role != "input"]
    start = dict(zip(names, np.cumsum([0] + [circuit.region[n].size for n in names])[:-1]))
    n = sum(circuit.region[x].size for x in names)
    a = np.zeros((n, n))
    for p in circuit.projections:
        if p.pre in start:
            w = weights[p.name] * (scale[1] if scale and scale[0] == p.name else 1.0)
            n_post, n_pre = w.shape
            a[start[p.post]:start[p.post] + n_post, start[p.pre]:start[p.pre] + n_pre] += w
    return a


def _draw(circuit, k):
    rng = np.random.default_rng(np.random.SeedSequence(circuit.seed, spawn_key=(SPEC_SEED_KEY, k)))
    return circuit.sample_weights(rng)


def _abscissa(a):
    return max(0.0, float(np.linalg.eigvals(a).real.max()))


def test_projection_sensitivity_equals_finite_differences_of_the_abscissa():
    circuit = _circuit(EI_ISN)
    spec = circuit.stability
    chosen = spec.advice_draws()
    values = np.array([_abscissa(_recurrent(circuit, _draw(circuit, k))) for k in range(spec.draws)])
    assert set(chosen) == set(np.flatnonzero(values >= 1.0)), chosen  # the unstable draws, found here by numpy
    fd = {}
    for p in circuit.projections:
        per = []
        for k in chosen:
            w = _draw(circuit, k)
            up = _abscissa(_recurrent(circuit, w, (p.name, 1 + FD_STEP)))
            down = _abscissa(_recurrent(circuit, w, (p.name, 1 - FD_STEP)))
            per.append((up - down) / (2 * FD_STEP))  # d value / d log(gain)
        fd[p.name] = float(np.mean(per))
    got = spec.sensitivity(circuit)
    for name in fd:
        assert got[name] == pytest.approx(fd[name], rel=FD_RTOL, abs=1e-9), (name, got[name], fd[name])
    # the ranking: every pair the finite differences order (E->I and I->E tie: the edges crossing a cut of the
    # loop carry equal sums w * d lambda / dw in each direction), the sensitivities order alike
    for a in fd:
        for b in fd:
            if fd[a] > fd[b] + 1e-6:
                assert got[a] > got[b], (a, b, got, fd)
    assert max(got, key=got.get) == max(fd, key=fd.get) == "E->E"
    # eigenvalues are homogeneous of degree 1 in W: the sensitivities sum to the mean abscissa of those draws
    assert sum(got.values()) == pytest.approx(values[list(chosen)].mean(), rel=1e-8)


def test_more_than_one_percent_unstable_draws_warns_naming_the_dominant_projections():
    circuit = _circuit(EI_ISN)
    values = np.array([_abscissa(_recurrent(circuit, _draw(circuit, k))) for k in range(200)])
    assert (values >= 1).mean() > 0.01  # measured here: 8 of 200
    with pytest.warns(ns.StabilityWarning) as record:
        ns.Circuit.from_toml(EI_ISN)
    msg = str(record[0].message)
    assert f"{(values >= 1).mean():.1%} of 200 teacher draws are unstable" in msg, msg
    assert f"median max Re(eig) is {np.median(values):.3f}" in msg, msg
    dominant = re.search(r"dominate the unstable mode: (\[[^\]]*\])", msg).group(1)
    assert "'E->E'" in dominant and "OUT" not in dominant and "X->" not in dominant, msg


def test_a_stable_spec_far_from_the_limit_does_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error", ns.StabilityWarning)
        c = ns.Circuit.from_toml(ROOT / "circuits" / "ca3_ca1.toml")
    values = np.array([_abscissa(_recurrent(c, _draw(c, k))) for k in range(c.stability.draws)])
    assert (values >= 1).mean() <= 0.01 and np.median(values) < 0.95


def test_refusal_names_the_dominant_projections_and_the_draws_it_used():
    # the 100-neuron loop of circuits/v1_four_class.toml with E->E raised from 0.3 to 3: most draws unstable
    text = (ROOT / "circuits" / "v1_four_class.toml").read_text()
    text, n = re.subn(r'(pre = "E"\npost = "E"\np = 0.1\ngain = )0.3', r"\g<1>3.0", text)
    assert n == 1
    with pytest.raises(ns.CircuitSpecError) as err:
        ns.Circuit.from_toml_text(text)
    msg = str(err.value)
    expected_draws = int(200 * (64 / 100) ** 3)  # README: 200 up to 64 loop neurons, 200 (64 / n)^3 above: 52
    assert f"of {expected_draws} teacher draws" in msg and "(64 / n)^3" in msg, msg
    dominant = re.search(r"dominate the unstable mode: (\[[^\]]*\])", msg).group(1)
    assert dominant.startswith("['E->E'"), msg
    assert "\n" not in msg


# ---------------------------------------------------------------------- the sparse spec check (issue 32)
def _ei_spec(n_e, n_i, p, scale=1.0, seed=0):
    """A steady Dale E/I circuit with the gains of circuits/balanced_ei.toml (times ``scale``)."""
    return {"name": "ei_big", "dynamics": "steady", "seed": seed,
            "regions": {"X": {"size": 10, "role": "input"}, "E": {"size": n_e, "sign": 1},
                        "I": {"size": n_i, "sign": -1}, "OUT": {"size": 3, "role": "output"}},
            "projections": [{"pre": "X", "post": "E", "p": 0.5}, {"pre": "X", "post": "I", "p": 0.5},
                            {"pre": "E", "post": "E", "p": p, "gain": 0.3 * scale},
                            {"pre": "E", "post": "I", "p": p, "gain": 0.4 * scale},
                            {"pre": "I", "post": "E", "p": p, "gain": 0.7 * scale},
                            {"pre": "I", "post": "I", "p": p, "gain": 0.6 * scale},
                            {"pre": "E", "post": "OUT", "p": 0.1}]}


PREDICTION_ATOL = 0.05  # rightmost real part: random-matrix prediction vs dense eigvals at 1,500 neurons (K = 15-60);
# measured 0.006-0.015 over 6 draws of 2 structures: finite-size edge fluctuations
OUTLIER_RTOL = 0.10  # outliers (|lambda| ~ 1.38): measured within 6%


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_sparse_spec_check_agrees_with_dense_eigenvalues(seed):
    from neurosubset.dynamics import sparse as sp
    from neurosubset.dynamics.stability import SPARSE_SPEC_SIZE, loops, random_matrix_prediction

    c = ns.Circuit.from_dict(_ei_spec(1200, 300, 0.05, seed=seed))  # a loop of 1,500 > SPARSE_SPEC_SIZE neurons
    assert 1500 > SPARSE_SPEC_SIZE
    s = c.stability
    assert s.check == "sparse" and s.draws == 3 and s.unstable_fraction == 0.0
    (loop,) = loops(c)
    pred = random_matrix_prediction(c, loop)
    # the prediction in closed form (balanced_ei.toml's comments): r^2 = rho([g_ab^2 (1 - 2p/pi)]),
    # mean eigenvalues of [[0.798 g_EE sqrt(K_E), -0.798 g_EI sqrt(K_I)], [0.798 g_IE sqrt(K_E), -...]]
    f = 1 - 2 * 0.05 / np.pi
    var = f * np.array([[0.3**2, 0.7**2], [0.4**2, 0.6**2]])
    c0, ke, ki = np.sqrt(2 / np.pi), np.sqrt(0.05 * 1200), np.sqrt(0.05 * 300)
    mean = c0 * np.array([[0.3 * ke, -0.7 * ki], [0.4 * ke, -0.6 * ki]])
    assert pred.radius == pytest.approx(np.sqrt(np.abs(np.linalg.eigvals(var)).max()), rel=1e-12)
    np.testing.assert_allclose(sorted(np.imag(pred.outliers)), sorted(np.linalg.eigvals(mean).imag), rtol=1e-12)
    assert s.predicted == (pytest.approx(pred.abscissa, rel=1e-12),)
    structure = sp.sparse_structure(c)
    for k in range(s.draws):
        rng = np.random.default_rng(np.random.SeedSequence(c.seed, spawn_key=(SPEC_SEED_KEY, k)))
        values = sp.sample_sparse_weights(c, rng, structure)
        dense = sp.dense_weights(c, structure, values)
        block = np.block([[dense["E->E"], dense["I->E"]], [dense["E->I"], dense["I->I"]]])
        eig = np.linalg.eigvals(block)  # the independent reference: every eigenvalue, LAPACK
        assert s.values[k] == pytest.approx(eig.real.max(), abs=1e-8)  # ARPACK's rightmost
        assert abs(eig.real.max() - pred.abscissa) <= PREDICTION_ATOL
        for z in pred.outliers:
            assert np.abs(eig - z).min() <= OUTLIER_RTOL * abs(z)


def test_sparse_spec_check_refuses_an_unstable_large_loop_without_dense_draws(monkeypatch):
    import neurosubset.dynamics.stability as stability

    def no_dense(*args, **kwargs):
        raise AssertionError("a dense draw or eigensolve above SPARSE_SPEC_SIZE")

    monkeypatch.setattr(stability, "spec_draw", no_dense)
    monkeypatch.setattr(stability, "_eigvals", no_dense)
    # gains x 1.6: bulk radius 0.72 x 1.6 = 1.15 > 1 in every draw
    with pytest.raises(ns.CircuitSpecError) as err:
        ns.Circuit.from_dict(_ei_spec(1000, 250, 0.05, scale=1.6))
    msg = str(err.value)
    assert "unstable in 100% of 3 teacher draws" in msg and "3 sparse draws (ARPACK) above 1000" in msg, msg
    assert "Random-matrix prediction of max Re(eig) per loop: [1.15" in msg and "\n" not in msg, msg
    ok = ns.Circuit.from_dict(_ei_spec(1000, 250, 0.05))  # the same loop at the balanced gains is accepted
    assert ok.stability.check == "sparse" and max(ok.stability.values) < 0.8


def test_small_loops_keep_the_dense_check_and_its_memory_term():
    c = _circuit(EI_ISN)
    assert c.stability.check == "dense" and c.stability.predicted == () and c.stability.draws == 200
    n = sum(r.size for r in c.regions)
    assert c.dynamics.spec_memory_terms(c) == {"eigen-solve": 8 * 4 * n * n}
    big = ns.Circuit.from_dict(_ei_spec(1000, 250, 0.05, scale=0.5))
    assert big.dynamics.spec_memory_terms(big) == {"eigen-solve": 0}  # no dense eigensolve above 1,000 neurons


@pytest.mark.slow
def test_balanced_ei_is_stable_as_drawn_by_the_sparse_check():
    # circuits/balanced_ei.toml: 10,000 E/I neurons, p = 0.02; its comments derive the gains. Closed form here:
    # bulk radius^2 = rho([g_ab^2 (1 - 2p/pi)]), mean eigenvalues of [[0.798 g sqrt(K)] with signs]
    c = shipped_circuit("balanced_ei")  # = ns.Circuit.from_toml(ROOT / "circuits" / "balanced_ei.toml"), loaded once
    s = c.stability
    f = 1 - 2 * 0.02 / np.pi
    radius = np.sqrt(np.abs(np.linalg.eigvals(f * np.array([[0.3**2, 0.7**2], [0.4**2, 0.6**2]]))).max())
    c0, ke, ki = np.sqrt(2 / np.pi), np.sqrt(160), np.sqrt(40)
    outliers = np.linalg.eigvals(c0 * np.array([[0.3 * ke, -0.7 * ki], [0.4 * ke, -0.6 * ki]]))
    assert abs(outliers[0]) > radius and abs(outliers.real).max() < 1e-12  # 0 +- 2.26i, outside the bulk
    assert s.check == "sparse" and s.draws == 3 and s.unstable_fraction == 0.0
    assert s.predicted == (pytest.approx(max(radius, outliers.real.max()), rel=1e-12),) and radius < 0.73
    assert all(abs(v - radius) <= PREDICTION_ATOL for v in s.values), s.values  # ARPACK's rightmost, per draw
    assert c.dynamics.spec_memory_terms(c) == {"eigen-solve": 0}
