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
