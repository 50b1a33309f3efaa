"""Spiking check: run a linear rate circuit as a linear Poisson (Hawkes) network in brian2.

The mapping
-----------
Every non-input neuron ``i`` of the circuit (hidden and output regions) becomes a Poisson neuron with
intensity (Hz)

    lambda_i(t) = [ mu_i + sum_j A_ij g_j(t) + sum_k B_ik g_k^in(t) ]_+ ,

where ``A`` holds the recurrent (non-input -> non-input) weights and ``B`` the input weights (both
dimensionless, exactly the rate model's ``W``), ``g_j`` is neuron ``j``'s spike train filtered by a unit-area
exponential kernel with time constant ``tau`` (on each spike ``g_j += 1/tau``, so ``g_j`` is in Hz and its mean
is neuron ``j``'s rate), and ``g_k^in`` is the filtered spike train of input neuron ``k``, a Poisson neuron with
rate ``nu_k = nu_0 + r_0 * x_k`` for probe ``x``. While the bracket rarely goes negative, the stationary mean
rates solve ``r = mu + A r + B nu``:

    r = (I - A)^{-1} (mu + B nu) = r_b + r_0 * (I - A)^{-1} B x ,   with mu = (I - A) r_b - nu_0 B 1,

the rate model's fixed point ``(I - A)^{-1} B x`` (``"steady"``; for ``"feedforward"`` ``A`` is nilpotent and
the same formula is the layer-by-layer map) in units of ``r_0`` Hz on top of a baseline ``r_b``.

Units and choices (fields of :class:`SpikingSettings`):

- ``rate_unit`` ``r_0`` (Hz): one unit of probe value and of rate-model activity is ``r_0`` Hz.
- Rates kept physiological (``max_rate``, 100 Hz): left automatic, ``tau`` (0.05 s, up to 10 times longer) and
  ``r_0`` (40 Hz, down to 5 Hz) are chosen so that the predicted mean output rates stay at or below ``max_rate``
  where the circuit allows (the baselines' fluctuation floor falls about as ``1 / tau``; a plain
  :class:`SpikingWarning` says when it does not). The price is precision per simulated second: a rate-model
  difference is ``r_0 dy`` Hz against a standard error ``sqrt(rate / (duration repeats))``, so the same z-score as
  at 40 Hz needs ``duration x (40 / r_0)^2 x (rate / rate_40)`` (the ``duration_for_same_precision`` attr), and
  ``duration`` much longer than ``tau``.
- ``input_baseline`` ``nu_0`` (Hz): the input rate at probe value 0; must keep every ``nu_k >= 0``.
- ``baseline`` ``r_b`` (Hz): the stationary rate of non-input neuron ``i`` at probe 0 (``r_b,i``, the
  ``baseline_rate`` variable). The offsets ``mu = (I - A) r_b - nu_0 B 1`` (Hz, the ``mu`` variable) make it so;
  ``mu`` may be negative, only the total intensity must stay positive. By default ``r_b,i`` is chosen per
  neuron: the smallest rate at which, for every probe, the predicted mean intensity is at least ``margin``
  standard deviations of its fluctuations (and at least ``rate_unit``) above zero, using an independent-Poisson
  estimate ``var_i = sum_j W_ij^2 r_j / (2 tau)`` that ignores network correlations (measured clipping is
  therefore reported, not assumed). When networks are compared (teacher, students) they share one ``r_b``, so
  equal rate-model outputs mean equal spiking rates.
  Large weights (e.g. a fitted student's) need high baselines: the fluctuation grows with ``|W|``.
- Rate-model prediction for output neuron ``o``: ``rate_model = r_b,o + r_0 * y_o`` (Hz), ``y`` from
  :func:`neurosubset.dynamics.forward`.

Discrete time: brian2 advances in steps ``dt``; a neuron spikes in a step with probability ``lambda dt`` (exact in
the mean while ``lambda dt <= 1``, counted as "saturated" otherwise) and a spike increments the postsynaptic
drive by ``W (e^{dt/tau} - 1) / dt`` so that the discrete kernel has unit area exactly: the stationary rate
equation above holds exactly in discrete time, not only as ``dt -> 0``. The drive starts at its stationary mean
and ``warmup`` seconds are discarded before counting.

What is recorded: spike counts (``SpikeMonitor(record=False)``) and per-neuron counters of clipped
(``lambda < 0``) and saturated steps, never spike times or state traces, so memory does not grow with
``duration``. All probes, repeats and networks (teacher, students) run as independent copies in one brian2
``Network`` built per call; brian2's seed is set per call and the previous random state and codegen target are
restored afterwards.

Modules: ``settings`` (:class:`SpikingSettings`, errors), ``hawkes`` (the mapping: :func:`linear_form`, baselines),
``simulation`` (brian2, imported lazily; without it :class:`neurosubset._checks.MissingExtraError`), ``checks``
(:func:`spiking_check`, :func:`spiking_compare`, :func:`spikecheck`). The figure is
:func:`neurosubset.plot.spikecheck_figure`.
"""
from ._driver import AGREE_REL as AGREE_REL
from ._driver import AGREE_Z as AGREE_Z
from .checks import spikecheck as spikecheck
from .checks import spiking_check as spiking_check
from .checks import spiking_compare as spiking_compare
from .hawkes import SPIKING_DYNAMICS as SPIKING_DYNAMICS
from .hawkes import linear_form as linear_form
from .settings import DEFAULT_DT as DEFAULT_DT
from .settings import DEFAULT_MARGIN as DEFAULT_MARGIN
from .settings import DEFAULT_MAX_RATE as DEFAULT_MAX_RATE
from .settings import DEFAULT_MAX_CLIPPED as DEFAULT_MAX_CLIPPED
from .settings import DEFAULT_RATE_UNIT as DEFAULT_RATE_UNIT
from .settings import DEFAULT_TAU as DEFAULT_TAU
from .settings import MIN_RATE_UNIT as MIN_RATE_UNIT
from .settings import TARGETS as TARGETS
from .settings import TAU_STEPS as TAU_STEPS
from .settings import SpikingSettings as SpikingSettings
from .settings import SpikingSettingsError as SpikingSettingsError
from .settings import SpikingWarning as SpikingWarning

__all__ = [
    # checks
    "spiking_check", "spiking_compare", "spikecheck",
    # settings and errors
    "SpikingSettings", "SpikingSettingsError", "SpikingWarning", "TARGETS", "DEFAULT_TAU", "DEFAULT_RATE_UNIT",
    "DEFAULT_DT", "DEFAULT_MARGIN", "DEFAULT_MAX_CLIPPED", "DEFAULT_MAX_RATE", "MIN_RATE_UNIT", "TAU_STEPS",
    # the Hawkes mapping
    "linear_form", "SPIKING_DYNAMICS", "AGREE_Z", "AGREE_REL",
]
