"""Transitional: the spike figure now lives in :mod:`neurosubset.plot`; delete this file with cli.py's last import."""
from .plot import spikecheck_figure as spikecheck_figure  # noqa: F401
