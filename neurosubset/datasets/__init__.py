"""Recorded data sets, read into xarray Datasets named as the toolkit's circuits name their neurons.

- :func:`randi2023`: the C. elegans signal-propagation atlas (Randi et al. 2023, Nature), optogenetic stimulation of
  one neuron at a time and the calcium responses of the others, wild type and ``unc-31``; from the
  ``wormneuroatlas`` package (the ``connectome`` extra).
- :func:`pooled_noise`, :func:`split_half`: a pooled noise model (most pairs have one or two trials), gross
  outliers, and the split-half noise ceiling.
"""
from .noise import pooled_noise as pooled_noise
from .noise import split_half as split_half
from .randi2023 import CITATION as CITATION
from .randi2023 import STRAINS as STRAINS
from .randi2023 import funatlas_path as funatlas_path
from .randi2023 import randi2023 as randi2023

__all__ = ["randi2023", "funatlas_path", "STRAINS", "CITATION", "pooled_noise", "split_half"]
