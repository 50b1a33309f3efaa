"""The spiking check with real brian2 (numpy target, short runs) against independent references.

The reference for every spiking rate is the analytic stationary rate of the linear Hawkes network,
``(I - A)^{-1} (mu + B nu)``, solved here with ``numpy.linalg.solve`` from the weights (A, B assembled in this file),
the offsets ``mu`` and the input rates ``nu`` stored in the Dataset, never the library's own rate_model.
"""
from __future__ import annotations

import dataclasses
import re
import sys
import tracemalloc
import warnings

import numpy as np
import pytest
import xarray as xr

import neurosubset as ns
from neurosubset._checks import MissingExtraError, NeurosubsetError
from neurosubset.cli import main
from neurosubset.spiking import TAU_STEPS, SpikingSettings, SpikingSettingsError, SpikingWarning, spikecheck

# Agreement criterion of issue 6: within 3 standard errors or within 5% relative, on >= 95% of pairs.
Z_TOL, REL_TOL, MIN_FRACTION = 3.0, 0.05, 0.95
# "Differs clearly": the unfitted student's median |z| against the teacher must exceed this. Measured with this
# setup for brian2 seeds 1-4: unfitted 3.2-4.4, fitted 0.5-0.7 (about the median |t| with 6 repeats' few dof).
CLEAR_MEDIAN_Z = 2.5
SHORT = {"duration": 4.0, "repeats": 6, "seed": 1}  # ~15 s wall for 3 networks x 4 probes x 6 repeats x 50 neurons
# the operating point these tests were calibrated in (CLEAR_MEDIAN_Z above): a 50 ms kernel at 40 Hz per unit, set
# explicitly since the automatic one (issue 27) lowers rates below 100 Hz at the cost of precision per second
SHORT.update(tau=0.05, rate_unit=40.0)


def circuit50() -> ns.Circuit:
    """50 simulated neurons at steady state: 8 inputs -> 40 recurrent hidden -> 10 outputs."""
    return ns.Circuit((ns.Region("in", 8, "input"), ns.Region("hid", 40, "hidden"), ns.Region("out", 10, "output")),
                      (ns.Projection("in", "hid", p=0.5), ns.Projection("hid", "hid", p=0.2, gain=0.5),
                       ns.Projection("hid", "out")), dynamics="steady", name="steady50")


def blocks(weights: dict) -> tuple[np.ndarray, np.ndarray]:
    """A (50 x 50) and B (50 x 8) of circuit50, written out by hand (hidden rows/cols first, then outputs)."""
    a = np.zeros((50, 50))
    a[:40, :40] = weights["hid->hid"]
    a[40:, :40] = weights["hid->out"]
    b = np.zeros((50, 8))
    b[:40] = weights["in->hid"]
    return a, b


def hawkes_rates(a: np.ndarray, b: np.ndarray, mu: np.ndarray, nu: np.ndarray) -> np.ndarray:
    """Analytic stationary rates (probe, neuron) of the linear Hawkes network; ``nu`` is (probe, input) Hz."""
    return np.linalg.solve(np.eye(a.shape[0]) - a, mu[:, None] + b @ nu.T).T


def fraction_agree(rate, ref, se):
    ok = (np.abs(rate - ref) <= Z_TOL * se) | (np.abs(rate - ref) <= REL_TOL * np.abs(ref))
    return float(ok.mean())


one = (lambda weights: {k: v[0] for k, v in weights.items()})


@pytest.fixture(scope="module")
def fitted():
    circuit = circuit50()
    alloc = ns.allocate(circuit, 80, within=["hid->out"], seed=0)
    res = ns.fit(circuit, alloc, m=4, trials=1, seed=0)
    return circuit, res


@pytest.fixture(scope="module")
def compared(fitted):
    circuit, res = fitted
    return ns.spiking_compare(circuit, one(res.trials.teacher),
                              {"fitted": one(res.student), "unfitted": one(res.trials.student_init)},
                              probes=res.trials.probes[0], **SHORT)


@pytest.mark.requires_brian2
def test_spiking_rates_match_analytic_hawkes_rates(fitted, compared):
    circuit, res = fitted
    ds = compared
    nu = ds.input_rate.values
    cases = {"teacher": (one(res.trials.teacher), ds.mu_teacher.values, ds.rate_spiking_teacher.values,
                         ds.rate_spiking_se_teacher.values, ds.rate_model_teacher.values)}
    for label, w in (("fitted", one(res.student)), ("unfitted", one(res.trials.student_init))):
        sel = ds.sel(student=label)
        cases[label] = (w, sel.mu_student.values, sel.rate_spiking_student.values, sel.rate_spiking_se_student.values,
                        sel.rate_model_student.values)
    for label, (w, mu, rate, se, model) in cases.items():
        a, b = blocks(w)
        ref = hawkes_rates(a, b, mu, nu)[:, 40:]
        # the rate-model prediction in Hz is the same fixed point (a check of the mapping's algebra)
        np.testing.assert_allclose(model, ref, rtol=1e-9, err_msg=f"{label}: rate_model != Hawkes fixed point")
        frac = fraction_agree(rate, ref, se)
        z = (rate - ref) / se
        assert frac >= MIN_FRACTION, (f"{label}: only {frac:.1%} of (probe, neuron) pairs agree with the analytic "
                                      f"Hawkes rates; z = {np.round(z, 1)}")
    assert ds.attrs["clipped_fraction_all_max"] < ds.attrs["max_clipped"], ds.attrs["clipped_fraction_all_max"]
    assert ds.attrs["rectification_dominated"] == 0, ds.attrs["flags"]


@pytest.mark.requires_brian2
def test_matched_student_agrees_with_teacher_in_spikes_and_unfitted_differs(fitted, compared):
    circuit, res = fitted
    assert res.matched[0], f"the fitted student should be matched (residual {res.residual[0]:.2e})"
    ds = compared
    t_rate, t_se = ds.rate_spiking_teacher.values, ds.rate_spiking_se_teacher.values
    fit_ = ds.sel(student="fitted")
    unf = ds.sel(student="unfitted")
    se_fit = np.sqrt(fit_.rate_spiking_se_student.values**2 + t_se**2)
    frac = fraction_agree(fit_.rate_spiking_student.values, t_rate, se_fit)
    z_fit = (fit_.rate_spiking_student.values - t_rate) / se_fit
    assert frac >= MIN_FRACTION, f"fitted student agrees with the teacher on {frac:.1%} only; z = {np.round(z_fit, 1)}"
    se_unf = np.sqrt(unf.rate_spiking_se_student.values**2 + t_se**2)
    z_unf = (unf.rate_spiking_student.values - t_rate) / se_unf
    np.testing.assert_allclose(unf.z.values, z_unf, rtol=1e-12)
    assert np.median(np.abs(z_unf)) > CLEAR_MEDIAN_Z, (
        f"the unfitted student should differ clearly: median |z| {np.median(np.abs(z_unf)):.2f} "
        f"(fitted: {np.median(np.abs(z_fit)):.2f})")
    assert float(unf.fraction_agree) < 0.7, float(unf.fraction_agree)


@pytest.mark.requires_brian2
@pytest.mark.slow
def test_spiking_check_dataset_feedforward_and_state_restored(tmp_path):
    import brian2
    from brian2.devices.device import get_device

    circuit = ns.feedforward([4, 6, 3])
    rng = np.random.default_rng(3)
    w, probes = circuit.sample_weights(rng), circuit.sample_probes(3, rng)
    target_before = brian2.prefs.codegen.target
    np_state = np.random.get_state()
    chk = ns.spiking_check(circuit, w, probes=probes, duration=2.0, repeats=4, seed=0)
    assert brian2.prefs.codegen.target == target_before
    after = np.random.get_state()
    assert after[0] == np_state[0] and np.array_equal(after[1], np_state[1]) and after[2] == np_state[2]
    assert get_device().__class__.__name__ == "RuntimeDevice"
    assert dict(chk.rate_spiking.sizes) == {"probe": 3, "neuron": 3}
    for name in ("rate_model", "rate_spiking", "rate_spiking_se"):
        assert chk[name].attrs["units"] == "Hz"
    assert chk.clipped_fraction.attrs["units"] == "1"
    for key in ("brian2_version", "codegen_target"):
        assert key in chk.attrs
    # settings carry units; the automatic kernel is DEFAULT_TAU times one of TAU_STEPS
    assert chk.tau.attrs["units"] == "s" and float(chk.tau) in [ns.spiking.DEFAULT_TAU * k for k in TAU_STEPS]
    assert chk.baseline_rate.dims == ("cell",) and chk.baseline_rate.attrs["units"] == "Hz"
    assert chk.attrs["brian2_version"] == brian2.__version__ and chk.attrs["codegen_target"] == "numpy"
    # independent reference: feed-forward Hawkes rates layer by layer
    a = np.zeros((9, 9))
    a[6:, :6] = w["W2"]
    b = np.zeros((9, 4))
    b[:6] = w["W1"]
    ref = hawkes_rates(a, b, chk.mu.values, chk.input_rate.values)[:, 6:]
    frac = fraction_agree(chk.rate_spiking.values, ref, chk.rate_spiking_se.values)
    assert frac >= MIN_FRACTION, f"{frac:.1%}; z = {np.round((chk.rate_spiking.values - ref) / chk.rate_spiking_se, 1)}"
    # same seed, same spikes; the Dataset survives netCDF
    again = ns.spiking_check(circuit, w, probes=probes, duration=2.0, repeats=4, seed=0)
    np.testing.assert_array_equal(again.rate_spiking.values, chk.rate_spiking.values)
    path = tmp_path / "chk.nc"
    chk.to_netcdf(path, engine="h5netcdf")
    import xarray as xr

    with xr.open_dataset(path, engine="h5netcdf") as back:
        np.testing.assert_array_equal(back.rate_spiking.values, chk.rate_spiking.values)


def test_unstable_setting_is_refused(fitted):
    circuit, res = fitted
    w = one(res.trials.teacher)
    a, _ = blocks(w)
    top = np.linalg.eigvals(a).real.max()
    w["hid->hid"] = w["hid->hid"] * (1.2 / top)  # max Re(eig W) 1.2: the mean rate dynamics are unstable
    with pytest.raises(SpikingSettingsError, match=r"unstable.*max Re\(eig W\) = 1\.200 >= 1"):
        ns.spiking_check(circuit, w, probes=res.trials.probes[0])


def test_inhibition_stabilized_network_is_not_refused_for_its_radius(fitted):
    # spectral radius > 1 but max Re(eig W) < 1 (a strongly negative eigenvalue): the mean rates are stable, so
    # the check runs; the refusal is reached only with max Re >= 1 (above), and the attrs say what was simulated
    circuit, res = fitted
    w = one(res.trials.teacher)
    a, _ = blocks(w)
    vals, vecs = np.linalg.eig(a[:40, :40])
    inv = np.linalg.inv(vecs)
    k = int(np.argmin(vals.real))
    shift = np.real(np.outer(vecs[:, k], inv[k]) * (-1.5 - vals[k]))  # move one real eigenvalue to -1.5
    if np.iscomplex(vals[k]):
        shift = 2 * shift
    w["hid->hid"] = w["hid->hid"] + shift
    a2, _ = blocks(w)
    ev = np.linalg.eigvals(a2)
    assert np.abs(ev).max() > 1 > ev.real.max(), (np.abs(ev).max(), ev.real.max())
    chk = ns.spiking_check(circuit, w, probes=res.trials.probes[0][:1], duration=1.0, repeats=2, seed=1,
                           on_clipping="warn")
    assert chk.attrs["inhibition_stabilized"] == 1 and chk.attrs["max_real_eig"] < 1 < chk.attrs["spectral_radius"]


def test_rectification_dominated_setting_is_refused(fitted):
    circuit, res = fitted
    w, probes = one(res.trials.teacher), res.trials.probes[0]
    # a baseline below what the probes need: some neuron would need a negative rate
    with pytest.raises(SpikingSettingsError, match=r"Rectification-dominated.*negative rate.*'baseline'"):
        ns.spiking_check(circuit, w, probes=probes, baseline=5.0)
    # positive rates, but fluctuations would push intensities below zero most of the time
    with pytest.raises(SpikingSettingsError, match=r"Rectification-dominated.*clipped.*max_clipped"):
        ns.spiking_check(circuit, w, probes=probes, baseline=200.0)


def test_nonlinear_and_discrete_circuits_are_refused():
    relu = ns.feedforward([4, 5, 2], "relu")
    with pytest.raises(SpikingSettingsError, match=r"nonlinearity 'linear'.*'relu'"):
        ns.spiking_check(relu, relu.sample_weights(np.random.default_rng(0)), probes=np.zeros((1, 4)))
    rnn = ns.linear_rnn(6, 2, 2, steps=3)
    with pytest.raises(SpikingSettingsError, match=r"dynamics 'discrete'.*\['steady', 'feedforward'\]"):
        ns.spiking_check(rnn, rnn.sample_weights(np.random.default_rng(0)), probes=np.zeros((1, 2)))


def test_bad_weights_are_refused(fitted):
    circuit, res = fitted
    with pytest.raises(SpikingSettingsError,
                       match=r"Weight 'in->hid' in 'weights' must have shape \(40, 8\).*batched over trials"):
        ns.spiking_check(circuit, res.student, probes=res.trials.probes[0])
    with pytest.raises(SpikingSettingsError, match=r"'repeats' parameter must be >= 2"):
        ns.spiking_check(circuit, one(res.student), probes=res.trials.probes[0], repeats=1)


@pytest.mark.requires_brian2
def test_rectification_is_measured_and_flagged_when_allowed():
    circuit = ns.feedforward([4, 6, 3])
    rng = np.random.default_rng(3)
    w, probes = circuit.sample_weights(rng), circuit.sample_probes(2, rng)
    # 160 Hz keeps every predicted rate positive; a 5 ms kernel makes the drive fluctuate far below zero
    with pytest.warns(SpikingWarning, match="clipped"):
        chk = ns.spiking_check(circuit, w, probes=probes, duration=1.0, repeats=2, baseline=160.0, tau=0.005,
                               on_clipping="warn")
    assert chk.attrs["rectification_dominated"] == 1
    assert chk.attrs["clipped_fraction_all_max"] > chk.attrs["max_clipped"], chk.attrs["clipped_fraction_all_max"]
    # rectification cuts off negative intensities, so clipped neurons fire above the linear prediction
    clipped = chk.clipped_fraction.values > 0.05
    assert clipped.any()
    excess = (chk.rate_spiking.values - chk.rate_model.values)[clipped]
    assert excess.mean() > 0, excess


@pytest.mark.requires_brian2
@pytest.mark.slow
def test_memory_stays_flat_with_duration():
    """Monitors count spikes, never record spike times or traces: peak memory does not grow with duration."""
    circuit = ns.feedforward([4, 6, 3])
    rng = np.random.default_rng(5)
    w, probes = circuit.sample_weights(rng), circuit.sample_probes(4, rng)
    ns.spiking_check(circuit, w, probes=probes, duration=0.2, repeats=2)  # warm caches and imports
    peaks = []
    for duration in (0.5, 4.0):
        tracemalloc.start()
        chk = ns.spiking_check(circuit, w, probes=probes, duration=duration, repeats=2)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    spikes = float(chk.rate_spiking.sum()) * 4.0 * 2  # output spikes alone in the long run
    # recording spike times would need >= 12 bytes per spike (index + time), hidden neurons not even counted
    assert peaks[1] - peaks[0] < 0.25 * 12 * spikes, (peaks, spikes)


def test_import_error_names_the_extra(monkeypatch):
    from neurosubset.spiking.simulation import _import_brian2

    monkeypatch.setitem(sys.modules, "brian2", None)  # what an environment without brian2 looks like to import
    with pytest.raises(ImportError, match=r"neurosubset\[spiking\]"):
        _import_brian2()


@pytest.mark.requires_brian2
@pytest.mark.slow
def test_cli_spikecheck(tmp_path, capsys):
    out = tmp_path / "spikes.nc"
    code = main(["spikecheck", "circuits/ca3_ca1.toml", "--budget", "40", "--within", "CA1->OUT", "--m", "3",
                 "--duration", "1", "--repeats", "2", "--out", str(out)])
    text = capsys.readouterr()
    assert code == 0, text.err
    assert "student matched" in text.out and "fitted vs teacher" in text.out and "unfitted vs teacher" in text.out
    assert out.exists() and out.with_suffix(".png").exists()
    code = main(["spikecheck", "relu:4-5-2", "--budget", "4", "--m", "1", "--out", str(tmp_path / "x.nc")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "nonlinearity 'linear'" in err, err


# ----------------------------------------------------------------------------------- SpikingSettings, spikecheck
@pytest.mark.parametrize(("field", "value", "message"), [
    ("duration", 0.0, r"'duration' parameter must be > 0\.0\. Got 0\.0"),
    ("repeats", 1, r"'repeats' parameter must be >= 2\. Got 1"),
    ("repeats", 2.5, r"'repeats' parameter must be an integer\. Got 2\.5"),
    ("tau", -0.01, r"'tau' parameter must be > 0\.0\. Got -0\.01"),
    ("rate_unit", 0, r"'rate_unit' parameter must be > 0\.0\. Got 0\.0"),
    ("baseline", 0.0, r"'baseline' parameter must be > 0\.0\. Got 0\.0"),
    ("input_baseline", -1.0, r"'input_baseline' parameter must be >= 0\.0\. Got -1\.0"),
    ("margin", -0.5, r"'margin' parameter must be >= 0\.0\. Got -0\.5"),
    ("dt", 0.0, r"'dt' parameter must be > 0\.0\. Got 0\.0"),
    ("warmup", -1.0, r"'warmup' parameter must be >= 0\.0\. Got -1\.0"),
    ("max_clipped", 1.5, r"'max_clipped' parameter must be <= 1\.0\. Got 1\.5"),
    ("tau", "fast", r"'tau' parameter must be a number\. Got 'fast'"),
    ("on_clipping", "ignore", r"'on_clipping' parameter must be one of \['raise', 'warn'\]\. Got 'ignore'"),
    ("target", "cpp", r"'target' parameter must be one of \['numpy', 'cython'\]\. Got 'cpp'"),
])
def test_spiking_settings_refuse_bad_values_naming_the_field_and_range(field, value, message):
    with pytest.raises(SpikingSettingsError, match=message):
        SpikingSettings(**{field: value})
    assert issubclass(SpikingSettingsError, NeurosubsetError)


def test_spiking_settings_are_frozen_normalised_and_resolved_against_the_probes():
    s = SpikingSettings(repeats=np.int64(3), tau=1, rate_unit=20)
    assert type(s.repeats) is int and type(s.tau) is float and s.tau == 1.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.tau = 2.0
    probes = np.array([[0.5, -4.0], [1.0, 2.0]])
    # defaults from the docstring: nu_0 = max(3 r_0, -r_0 min(probes)) = max(60, 80) Hz, warm-up 5 tau = 5 s
    r = s.resolved(probes)
    assert (r.input_baseline, r.warmup) == (80.0, 5.0), r
    assert (s.input_baseline, s.warmup) == (None, None)  # resolving returns new settings
    assert SpikingSettings(warmup=0.2, input_baseline=200.0).resolved(probes).warmup == 0.2
    with pytest.raises(SpikingSettingsError, match=r"'input_baseline' parameter must be >= 80\.0\. Got 50\.0"):
        SpikingSettings(rate_unit=20, input_baseline=50.0).resolved(probes)


def test_loose_keywords_and_settings_must_be_valid(fitted):
    circuit, res = fitted
    w, probes = one(res.trials.teacher), res.trials.probes[0]
    with pytest.raises(TypeError, match=r"unknown options \['durations'\]"):
        ns.spiking_check(circuit, w, probes=probes, durations=1.0)
    with pytest.raises(TypeError, match=r"unknown options \['repeat'\]"):
        ns.spiking_compare(circuit, w, w, probes=probes, repeat=3)
    with pytest.raises(TypeError, match=r"'settings' parameter of spiking_check must be a SpikingSettings"):
        ns.spiking_check(circuit, w, probes=probes, settings={"duration": 1.0})
    with pytest.raises(SpikingSettingsError, match=r"'seed' parameter must be >= 0"):
        ns.spiking_check(circuit, w, probes=probes, seed=-1)


@pytest.mark.requires_brian2
@pytest.mark.slow
def test_settings_object_and_loose_keywords_give_the_same_dataset():
    circuit = ns.feedforward([4, 6, 3])
    rng = np.random.default_rng(3)
    w, probes = circuit.sample_weights(rng), circuit.sample_probes(2, rng)
    loose = ns.spiking_check(circuit, w, probes=probes, duration=0.5, repeats=2, seed=2, tau=0.03)
    packed = ns.spiking_check(circuit, w, probes=probes, seed=2,
                              settings=SpikingSettings(duration=0.5, repeats=2, tau=0.03))
    xr.testing.assert_identical(packed, loose)
    # keywords override the settings object's fields
    mixed = ns.spiking_check(circuit, w, probes=probes, seed=2, settings=SpikingSettings(duration=9.0, tau=0.03),
                             duration=0.5, repeats=2)
    xr.testing.assert_identical(mixed, loose)


@pytest.mark.requires_brian2
@pytest.mark.slow
def test_spikecheck_returns_the_dataset_of_the_cli_path():
    # the reference is the composition neurosubset spikecheck made before spikecheck existed: fit one draw,
    # spiking_compare teacher vs fitted and unfitted student with the CLI's keywords, then the fit's attrs
    circuit = ns.feedforward([4, 6, 3])
    alloc = ns.allocate(circuit, 10, seed=3)
    res = ns.fit(circuit, alloc, m=2, trials=1, seed=3)
    expected = ns.spiking_compare(circuit, one(res.trials.teacher),
                                  {"fitted": one(res.student), "unfitted": one(res.trials.student_init)},
                                  res.trials.probes[0], duration=0.5, repeats=2, seed=3, tau=0.04, rate_unit=30.0,
                                  target="numpy")
    expected.attrs.update({"budget": alloc.size, "m": 2, "allocation_strategy": alloc.strategy,
                           "matched": int(res.matched[0]), "residual": float(res.residual[0])})
    ds = spikecheck(circuit, alloc, 2, seed=3,
                    settings=SpikingSettings(duration=0.5, repeats=2, tau=0.04, rate_unit=30.0, target="numpy"))
    xr.testing.assert_identical(ds, expected)
    assert list(ds.student.values) == ["fitted", "unfitted"] and ds.attrs["matched"] == 1, ds.attrs["residual"]


def test_spikecheck_refuses_nonlinear_circuits_before_fitting(monkeypatch):
    import neurosubset.spiking.checks as checks

    monkeypatch.setattr(checks, "fit", lambda *a, **k: pytest.fail("spikecheck fitted a circuit it cannot simulate"))
    relu = ns.feedforward([4, 5, 2], "relu")
    with pytest.raises(SpikingSettingsError, match=r"nonlinearity 'linear'.*'relu'"):
        spikecheck(relu, ns.allocate(relu, 4), 1)


def test_missing_brian2_is_a_missing_extra_error(monkeypatch):
    from neurosubset.spiking.simulation import _import_brian2

    monkeypatch.setitem(sys.modules, "brian2", None)
    with pytest.raises(MissingExtraError, match=r"pip install 'neurosubset\[spiking\]'"):
        _import_brian2()


# ---------------------------------------------------------------- physiological rates, plain warnings (issue 27)
def _ff_case():
    circuit = ns.feedforward([4, 6, 3])
    rng = np.random.default_rng(3)
    return circuit, circuit.sample_weights(rng), circuit.sample_probes(3, rng)


def _ff_blocks(w):
    a = np.zeros((9, 9))
    a[6:, :6] = w["W2"]
    b = np.zeros((9, 4))
    b[:6] = w["W1"]
    return a, b


@pytest.mark.requires_brian2
@pytest.mark.slow
def test_default_operating_point_keeps_output_rates_below_100_hz_and_says_the_duration_for_precision():
    circuit, w, probes = _ff_case()
    short = dict(duration=0.5, repeats=2, seed=0, warmup=0.0, on_clipping="warn")
    with warnings.catch_warnings():  # measured clipping above 1% is flagged (SpikingWarning), not the subject here
        warnings.simplefilter("ignore", SpikingWarning)
        auto = ns.spiking_check(circuit, w, probes=probes, **short)
    old = ns.spiking_check(circuit, w, probes=probes, tau=0.05, rate_unit=40.0, **short)  # the earlier defaults
    a, b = _ff_blocks(w)
    # independent: the analytic stationary Hawkes rates of the simulated network (its mu and input rates), numpy
    for chk in (auto, old):
        ref = hawkes_rates(a, b, chk.mu.values, chk.input_rate.values)[:, 6:]
        np.testing.assert_allclose(chk.rate_model.values, ref, rtol=1e-9)
    peak_auto = hawkes_rates(a, b, auto.mu.values, auto.input_rate.values)[:, 6:].max()
    peak_old = hawkes_rates(a, b, old.mu.values, old.input_rate.values)[:, 6:].max()
    assert peak_old > 100.0 and peak_auto <= 100.0, (peak_old, peak_auto)
    r0 = float(auto.rate_unit)
    assert ns.spiking.MIN_RATE_UNIT <= r0 < 40.0 and float(auto.tau) >= 0.05, (r0, float(auto.tau))
    # z of a rate-model difference dy: r0 dy / sqrt(rate / (duration repeats)); the 40 Hz z needs this duration
    expected = 0.5 * (40.0 / r0) ** 2 * (peak_auto / peak_old)
    assert auto.attrs["duration_for_same_precision"] == pytest.approx(expected, rel=1e-9)
    assert "automatic" in auto.attrs["rate_unit_choice"] and "rate_unit 40 Hz (given)" in old.attrs["rate_unit_choice"]


@pytest.mark.requires_brian2
def test_a_circuit_whose_rates_cannot_stay_below_max_rate_is_warned_about_plainly():
    circuit, w, probes = _ff_case()
    with pytest.warns(SpikingWarning, match=r"cannot be brought below it even with a rate unit of 5 Hz and tau up "
                                            r"to 0\.5 s") as record:
        chk = ns.spiking_check(circuit, w, probes=probes, duration=0.2, repeats=2, warmup=0.0, max_rate=5.0,
                               on_clipping="warn")
    assert float(chk.rate_unit) == 40.0 and float(chk.tau) == 0.05  # the earlier defaults, said so
    assert any("max_rate = 5 Hz" in str(r.message) for r in record)


@pytest.mark.requires_brian2
@pytest.mark.slow
def test_clipping_warning_says_plainly_what_was_measured_against_what_is_tolerated():
    circuit, w, probes = _ff_case()
    with pytest.warns(SpikingWarning) as record:  # as test_rectification_is_measured_..., a 5 ms kernel
        chk = ns.spiking_check(circuit, w, probes=probes[:2], duration=1.0, repeats=2, baseline=160.0, tau=0.005,
                               on_clipping="warn")
    text = " ".join(str(r.message) for r in record if "negative" in str(r.message))
    measured = 100 * chk.clipped_fraction.values.max()  # output neurons; the message names the worst of all
    assert re.search(r"was negative \(and set to 0\) in \d+\.\d\d% of its time steps", text), text
    assert "more than the 1.00% tolerated ('max_clipped')" in text and "up to" not in text, text
    assert float(re.search(r"in (\d+\.\d\d)% of its time steps", text).group(1)) >= measured - 0.005


# -- students of a fit in the sparse weights layout (issue 32): one trial's scipy.sparse matrices, made dense ------

def _fits_in_both_layouts(circuit, alloc, m=2):
    """The same draw fitted in the dense and in the sparse weights layout (the dense one is the reference)."""
    return [ns.fit(circuit, alloc, m=m, trials=1, seed=0,
                   options=ns.FitOptions(weights_layout=lay, dale=False, stable=False)) for lay in ("dense", "sparse")]


def _assert_same_check(dense, sparse):
    """The spiking answer of two networks whose weights agree to rounding: the same spikes (same brian2 seed), the
    rate model to rounding."""
    assert dense.attrs.get("fraction_agree") == sparse.attrs.get("fraction_agree")  # spiking_check's; compare's: a var
    for var in dense.data_vars:
        a, b = dense[var].values, sparse[var].values
        if var.startswith(("rate_model", "mu", "z")):  # from the fitted values, equal to ~1e-13 relative
            np.testing.assert_allclose(b, a, rtol=1e-9, atol=1e-9, err_msg=var)
        else:  # spike counts and the operating point (rounded up to whole Hz): identical
            np.testing.assert_array_equal(b, a, err_msg=var)


@pytest.mark.requires_brian2
@pytest.mark.slow
def test_spiking_check_of_a_sparse_fits_student_equals_the_dense_fits():
    circuit = circuit50()
    alloc = ns.allocate(circuit, 80, within=["hid->out"], seed=0)
    dense, sparse = _fits_in_both_layouts(circuit, alloc)
    assert isinstance(sparse.student["hid->hid"], ns.SparseWeights) and isinstance(dense.student["hid->hid"],
                                                                                   np.ndarray)
    assert dense.matched[0] and sparse.matched[0]
    kw = dict(duration=0.5, repeats=2, seed=1, tau=0.05, rate_unit=40.0, target="numpy")
    checks = [ns.spiking_check(circuit, one(res.student), probes=res.trials.probes[0], **kw)
              for res in (dense, sparse)]
    _assert_same_check(*checks)
    assert checks[1].rate_spiking.values.sum() > 0


@pytest.mark.requires_brian2
@pytest.mark.slow
def test_spikecheck_of_a_circuit_fitted_in_the_sparse_layout_equals_the_dense_layouts(monkeypatch):
    """``spikecheck`` fits in the automatic layout (sparse for large sparse circuits): with the crossover lowered
    to circuit50's size, its teacher, fitted and unfitted students arrive as CSR matrices."""
    import neurosubset.dynamics.sparse_map as sm

    circuit = circuit50()
    alloc = ns.allocate(circuit, 80, within=["hid->out"], seed=0)
    settings = SpikingSettings(duration=0.5, repeats=2, tau=0.05, rate_unit=40.0, target="numpy")
    dense = spikecheck(circuit, alloc, m=2, seed=1, settings=settings)
    assert sm.choose_layout(circuit) is ns.WeightsLayout.DENSE
    monkeypatch.setattr(sm, "SPARSE_MIN_NEURONS", 10)
    monkeypatch.setattr(sm, "SPARSE_MAX_DENSITY", 1.0)
    assert sm.choose_layout(circuit) is ns.WeightsLayout.SPARSE
    sparse = spikecheck(circuit, alloc, m=2, seed=1, settings=settings)
    assert sparse.attrs["matched"] == dense.attrs["matched"] == 1
    for label in ("fitted", "unfitted"):
        _assert_same_check(dense.sel(student=label), sparse.sel(student=label))


def test_sparse_weights_are_made_dense_or_refused_in_one_line_naming_the_field():
    """A whole SparseWeights (a batch of trials) is refused with the one-trial hint; a sparse matrix whose dense
    form cannot fit in memory is refused before anything is allocated (a 10^6 x 10^6 matrix: 8 TB dense)."""
    import scipy.sparse

    circuit = circuit50()
    alloc = ns.allocate(circuit, 80, within=["hid->out"], seed=0)
    res = _fits_in_both_layouts(circuit, alloc)[1]
    probes = res.trials.probes[0]
    with pytest.raises(SpikingSettingsError, match=r"Weight 'in->hid' in 'weights' is a SparseWeights of 1 trial"
                                                   r".*pass one trial's matrix") as info:
        ns.spiking_check(circuit, res.student, probes=probes)
    assert "\n" not in str(info.value)
    dense = (lambda weights: {k: v.toarray()[0] for k, v in weights.items()})
    huge = {**dense(res.student), "hid->hid": scipy.sparse.csr_array((10**6, 10**6))}
    with pytest.raises(SpikingSettingsError, match=r"The spiking check with the sparse weights of "
                                                   r"\[\"student_weights\['fitted'\]\"\] made dense.*needs about "
                                                   r"[\d,]+ GB of memory") as info:
        ns.spiking_compare(circuit, dense(res.trials.teacher), {"fitted": huge, "unfitted": dense(res.student)},
                           probes)
    assert "\n" not in str(info.value)
