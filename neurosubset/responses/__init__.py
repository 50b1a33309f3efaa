"""Fitting recorded responses: which synapses could have changed to produce what was recorded?

- :mod:`.rates`: the activity of any region as a function of the weights (:func:`region_rates`) and the batched map
  from candidates' plastic values to the recorded responses (:class:`RecordedMap`).
- :mod:`.inputs`: the checked weights before learning, probes, responses and noise.
- :mod:`.fitting`: :func:`fit_responses` (one candidate), :func:`localize` (many, batched, ranked on held-out
  probes), :func:`projection_candidates`, :func:`region_candidates`.
- :mod:`.files`: the weights file (W.nc) and the responses file (R.nc) that ``neurosubset localize`` reads.
"""
from .files import read_responses as read_responses
from .files import read_weights as read_weights
from .files import responses_dataset as responses_dataset
from .files import weights_dataset as weights_dataset
from .fitting import fit_responses as fit_responses
from .fitting import localize as localize
from .fitting import projection_candidates as projection_candidates
from .fitting import region_candidates as region_candidates
from .rates import region_rates as region_rates

__all__ = ["fit_responses", "localize", "projection_candidates", "region_candidates", "region_rates",
           "weights_dataset", "responses_dataset", "read_weights", "read_responses"]
