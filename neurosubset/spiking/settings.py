"""Settings of a spiking check: one frozen, validated :class:`SpikingSettings`, its defaults, and its errors.

Every field is checked when the settings are built (the message names the field and the allowed range); what
depends on the probes (the default input baseline) or on another field (the default warm-up, ``5 tau``) is
filled in by :meth:`SpikingSettings.resolved` when a check runs.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._checks import NeurosubsetError, check_choice, check_int, check_real

TARGETS = ("numpy", "cython")
ON_CLIPPING = ("raise", "warn")
DEFAULT_TAU = 0.05        # s: slow (NMDA-like) kernel; fluctuations of the drive scale as 1/sqrt(tau)
DEFAULT_RATE_UNIT = 40.0  # Hz per unit of probe / rate-model activity: differences of O(1) are tens of Hz; the
#                           automatic rate unit (rate_unit=None) starts here and goes lower to keep rates physiological
TAU_STEPS = (1.0, 1.5, 2.0, 3.0, 5.0, 10.0)  # automatic kernel: DEFAULT_TAU times these, the first that allows
DEFAULT_MAX_RATE = 100.0  # Hz: the automatic rate unit keeps predicted mean output rates at or below this
MIN_RATE_UNIT = 5.0  # Hz: the lowest automatic rate unit (below it a rate-model difference of O(1) is a few Hz,
#                      lost in the spike-count noise of any practical duration)
DEFAULT_DT = 5e-4         # s: the largest automatic step; smaller when rates are high (lambda * dt <= 1)
DEFAULT_MARGIN = 4.0      # mean intensity >= 4 sd (independent-Poisson estimate) above 0; the estimate ignores
#                           network correlations, so measured clipping is ~0.1-1% (3 sd gave 2-3%)
DEFAULT_MAX_CLIPPED = 0.01  # clipped fraction of time steps above which a setting is rectification-dominated


class SpikingSettingsError(NeurosubsetError):
    """A circuit, weights or setting that the linear Poisson mapping cannot represent faithfully."""


class SpikingWarning(UserWarning):
    """A spiking simulation ran but its rates are affected by rectification or saturation."""


@dataclass(frozen=True)
class SpikingSettings:
    """How a linear rate circuit is run as a linear Poisson (Hawkes) network (see :mod:`neurosubset.spiking`).

    Attributes
    ----------
    duration : float
        Simulated time per repeat (s, > 0), after ``warmup``; at least ``10 dt`` when the check runs.
    repeats : int
        Independent repeats (>= 2); the standard errors come from their spread.
    tau : float, optional
        Time constant of the unit-area exponential synaptic kernel (s, > 0). ``None`` (default): automatic,
        :data:`DEFAULT_TAU` (0.05 s) or up to 10 times longer where that lets the predicted mean output rates stay
        at or below ``max_rate`` (the baselines' fluctuation floor falls about as ``1 / tau``); a continuous
        circuit's own tau in :func:`~neurosubset.spiking.spikecheck` and for continuous circuits in the checks.
        The stationary rates compared do not depend on it; the simulated ``duration`` must stay much longer.
    rate_unit : float, optional
        ``r_0`` (Hz, > 0): Hz per unit of probe value and of rate-model activity. ``None`` (default): automatic, the
        largest ``r_0 <= DEFAULT_RATE_UNIT`` (40 Hz; at least ``MIN_RATE_UNIT``, 5 Hz) whose predicted mean output rates
        (automatic baselines included) stay at or below ``max_rate`` where the circuit allows; the baseline's
        fluctuation floor (``margin`` standard deviations, ``sd^2 = sum W^2 r / (2 tau)``) does not shrink with ``r_0``,
        so a circuit whose rates exceed ``max_rate`` even at 5 Hz keeps 40 Hz and is warned about
        (:class:`SpikingWarning`, naming the ``tau`` that would allow it: the floor falls about as ``1 / tau``).
        Precision: a rate-model difference ``dy`` is ``r_0 dy`` Hz against a standard error ``sqrt(rate / (duration
        repeats))`` (times the network's Fano factor), so keeping the z-score of the 40 Hz setting needs ``duration x
        (40 / r_0)^2 x (rate / rate_40)``: the ``duration_for_same_precision`` attr of a check says how long.
    max_rate : float, optional
        Hz (> 0): the ceiling of predicted mean output rates that the automatic rate unit aims for (default
        :data:`DEFAULT_MAX_RATE`, 100 Hz); ``None``: no ceiling (the automatic rate unit is then 40 Hz).
    baseline : float, optional
        ``r_b`` (Hz, > 0): one stationary rate for every non-input neuron at probe 0. ``None`` (default): per-neuron
        baselines, the smallest keeping every predicted mean intensity ``margin`` standard deviations (and at least
        ``rate_unit``) above 0, rounded up to whole Hz.
    input_baseline : float, optional
        ``nu_0`` (Hz, >= 0): input rate at probe value 0; it must keep every input rate ``nu_0 + r_0 x >= 0``.
        ``None`` (default): ``max(3 r_0, -r_0 min(probes))``.
    margin : float
        Standard deviations (>= 0) between 0 and the predicted mean intensity, for the automatic baseline.
    dt : float, optional
        Time step (s, > 0), at most ``tau / 5``. ``None`` (default): ``DEFAULT_DT`` (0.5 ms), or less where needed
        so that ``lambda dt <= 1`` up to 5 standard deviations above the predicted mean intensity (1, 2 or 5 times
        a power of ten).
    warmup : float, optional
        Discarded time before counting (s, >= 0). ``None`` (default): ``5 tau``.
    max_clipped : float
        Fraction of time steps (in [0, 1]) with a negative (clipped) intensity above which the setting is
        rectification-dominated.
    on_clipping : {"raise", "warn"}
        What to do when the predicted clipped fraction exceeds ``max_clipped`` before simulating. A measured
        excess after simulating always warns (:class:`SpikingWarning`) and sets ``rectification_dominated``.
    target : {"numpy", "cython"}
        brian2 code-generation target for the check (the global preference is restored afterwards).

    Examples
    --------
    >>> SpikingSettings(duration=4.0, repeats=6, tau=0.03).warmup is None   # 5 tau, filled in when a check runs
    True
    """

    duration: float = 10.0
    repeats: int = 4
    tau: float | None = None
    rate_unit: float | None = None
    baseline: float | None = None
    input_baseline: float | None = None
    margin: float = DEFAULT_MARGIN
    dt: float | None = None
    warmup: float | None = None
    max_clipped: float = DEFAULT_MAX_CLIPPED
    on_clipping: str = "raise"
    target: str = "numpy"
    max_rate: float | None = DEFAULT_MAX_RATE

    def __post_init__(self) -> None:
        err = SpikingSettingsError
        positive = {"low": 0.0, "low_open": True, "error": err}
        optional = (lambda name, **rule: None if getattr(self, name) is None
                    else check_real(name, getattr(self, name), **rule))
        values = {
            "tau": optional("tau", **positive),
            "dt": optional("dt", **positive),
            "duration": check_real("duration", self.duration, **positive),
            "repeats": check_int("repeats", self.repeats, minimum=2, error=err),
            "rate_unit": optional("rate_unit", **positive),
            "max_rate": optional("max_rate", **positive),
            "margin": check_real("margin", self.margin, low=0.0, error=err),
            "warmup": optional("warmup", low=0.0, error=err),
            "max_clipped": check_real("max_clipped", self.max_clipped, low=0.0, high=1.0, error=err),
            "input_baseline": optional("input_baseline", low=0.0, error=err),
            "baseline": optional("baseline", **positive),
        }
        check_choice("on_clipping", self.on_clipping, ON_CLIPPING, error=err)
        check_choice("target", self.target, TARGETS, error=err)
        for name, value in values.items():
            object.__setattr__(self, name, value)

    @classmethod
    def from_options(cls, settings: SpikingSettings | None, options: dict[str, Any], *, caller: str
                     ) -> SpikingSettings:
        """``settings`` (default ``SpikingSettings()``) with the loose keyword ``options`` of ``caller`` applied."""
        if settings is not None and not isinstance(settings, SpikingSettings):
            raise TypeError(f"The 'settings' parameter of {caller} must be a SpikingSettings. "
                            f"Got {type(settings).__name__}.")
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(options) - set(names))
        if unknown:
            raise TypeError(f"{caller} got unknown options {unknown}. Expected some of {sorted(names + ['seed'])}.")
        base = cls() if settings is None else settings
        return dataclasses.replace(base, **options) if options else base

    def resolved(self, probes: np.ndarray) -> SpikingSettings:
        """These settings with the probe-dependent defaults filled in (``input_baseline``, ``warmup``).

        ``probes`` ``(probe, n_in)``: the input rates ``nu_0 + r_0 x`` must stay >= 0 on every probe, so
        ``input_baseline`` must be at least ``-r_0 min(probes)``. An automatic ``rate_unit`` (None) is chosen by
        the check from the weights: ``input_baseline`` then stays as given (None: resolved with it).
        """
        out: dict[str, Any] = {}
        if self.tau is not None:  # automatic (None): chosen by the check from the weights, the warm-up with it
            out["warmup"] = 5 * self.tau if self.warmup is None else self.warmup
        if self.rate_unit is not None:
            low_nu = float(self.rate_unit * max(0.0, -probes.min()))
            nu0 = max(3.0 * self.rate_unit, low_nu) if self.input_baseline is None else self.input_baseline
            out["input_baseline"] = check_real("input_baseline", nu0, low=low_nu, error=SpikingSettingsError)
        return dataclasses.replace(self, **out)


def check_probes(probes: Any, n_in: int) -> np.ndarray:
    """``probes`` as a float64 array ``(probe, n_in)`` of finite values (a single probe ``(n_in,)`` is promoted)."""
    probes = np.asarray(probes.detach().cpu().numpy() if hasattr(probes, "detach") else probes, dtype=np.float64)
    if probes.ndim == 1:
        probes = probes[None, :]
    if probes.ndim != 2 or probes.shape[1] != n_in:
        raise SpikingSettingsError(f"The 'probes' parameter must have shape (probe, n_in) = (m, {n_in}). "
                                   f"Got {probes.shape} instead.")
    if probes.shape[0] == 0 or not np.isfinite(probes).all():
        raise SpikingSettingsError("The 'probes' parameter must hold at least one probe of finite values.")
    return probes


def check_seed(seed: Any) -> int:
    """The brian2 seed as an int >= 0."""
    return check_int("seed", seed, minimum=0, error=SpikingSettingsError)
