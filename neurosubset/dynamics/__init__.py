"""Dynamics as types: one class per kind of circuit equations behind one protocol, and the maps built on them.

- :mod:`~neurosubset.dynamics.base`: the :class:`Dynamics` protocol (forward, rates over time, closed-form adjoint,
  affine test, stability, exact-rank capability, memory) and the registry (:func:`register`, :func:`resolve`).
- :class:`Feedforward`, :class:`Discrete`, :class:`Steady`, :class:`Continuous`: the four built-in dynamics, one
  module each (``continuous`` also holds the integrators).
- :mod:`~neurosubset.dynamics.blocks`: the one block assembly of weights between regions (torch and numpy).
- :mod:`~neurosubset.dynamics.adjoint`: closed-form adjoints shared by the linear dynamics.
- :mod:`~neurosubset.dynamics.stability`: recurrent loops, spectral abscissa and its gradient, the spec check.
- :mod:`~neurosubset.dynamics.plastic_map`: :func:`forward`, :func:`assemble`, :class:`PlasticMap`,
  :func:`is_affine`; :mod:`~neurosubset.dynamics.threads`: :func:`torch_threads`.

A new dynamics is one subclass of :class:`Dynamics` decorated with :func:`register`; nothing else changes.
"""
# the built-in dynamics register in this order (the order error messages list them in)
from .feedforward import Feedforward as Feedforward  # isort: skip
from .discrete import Discrete as Discrete  # isort: skip
from .steady import Steady as Steady  # isort: skip
from .continuous import Continuous as Continuous  # isort: skip
from .base import Dynamics as Dynamics
from .base import names as names
from .base import register as register
from .base import resolve as resolve
from .base import unregister as unregister
from .plastic_map import DTYPE as DTYPE
from .plastic_map import PlasticMap as PlasticMap
from .plastic_map import assemble as assemble
from .plastic_map import forward as forward
from .plastic_map import is_affine as is_affine
from .stability import Stability as Stability
from .threads import torch_threads as torch_threads

__all__ = ["Dynamics", "register", "unregister", "resolve", "names", "Feedforward", "Discrete", "Steady", "Continuous",
           "Stability", "DTYPE", "forward", "assemble", "PlasticMap", "is_affine", "torch_threads"]
