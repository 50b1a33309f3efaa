"""Solvers for a batch of independent problems ``F(theta) = target``.

- :mod:`.options`: the solver objects (:class:`Auto`, :class:`LeastSquares`, :class:`LevenbergMarquardt`) that
  ``fit``, ``match_probability`` and ``sweep`` take as ``solver=``.
- :mod:`.lm`: exact batched least squares (affine maps) and batched Levenberg-Marquardt with a per-problem status.
- :mod:`.multistart`: the restart policy of the LM over rounds (start scales, continued restarts).
- :mod:`.bounded`: sign bounds (Dale's law) and bounded least squares; :mod:`.exact`: the other exact deciders
  (shallow ReLU feasibility by LPs, the real roots of a univariate polynomial) that :class:`Auto` picks;
  :mod:`.lifted`: linear steady circuits with the rates as unknowns (a witness or a proof, else the LM).
- :mod:`.chain`: the decider protocol (``applicable`` / ``decide`` -> a per-trial outcome: proven_match,
  proven_no_match or undecided) and the ordered chain a requested solver runs (exact deciders first, the LM last).
- :mod:`.device`: the ``device`` parameter (``"cpu"``, or ``"cuda"`` where torch sees a GPU).

A problem batch is any object with ``value_and_jacobian(theta)``, ``__call__(theta)``, ``jacobian(theta)``,
``subset(index)`` and ``size`` (:class:`neurosubset.dynamics.PlasticMap` is the one the benchmark uses).
"""
from .lm import LMResult as LMResult
from .lm import levenberg_marquardt as levenberg_marquardt
from .lm import relative_residual as relative_residual
from .lm import solve_affine as solve_affine
from .options import SOLVERS as SOLVERS
from .options import Auto as Auto
from .options import LeastSquares as LeastSquares
from .options import LevenbergMarquardt as LevenbergMarquardt
from .options import Solver as Solver
from .options import SteadyLifting as SteadyLifting
from .options import as_solver as as_solver
from .options import lm_fields as lm_fields
from .options import solver_from_attrs as solver_from_attrs

__all__ = ["Auto", "LeastSquares", "LevenbergMarquardt", "SteadyLifting", "Solver", "SOLVERS", "as_solver", "lm_fields",
           "solver_from_attrs", "LMResult", "levenberg_marquardt", "relative_residual", "solve_affine"]
