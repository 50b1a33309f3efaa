"""Theory without fitting: the exact expressivity certificate, optimal allocations and the paper's heuristic.

Let ``F(theta) = (f(theta; x_1), ..., f(theta; x_m))`` in ``R^E`` (``E = m * n_out``, probe-major) be the outputs
on ``m`` probes as a function of all structurally present weights ``theta``, and ``theta_A`` the plastic ones.

- ``full_rank`` = generic rank of ``dF/dtheta`` = ``dim V``, ``V`` the closure of the set of teacher outputs.
- ``plastic_rank`` = generic rank of ``dF/dtheta_A`` = ``dim S``, ``S`` the student's reachable set.

For linear circuits ``F`` is polynomial (rational for ``"steady"`` dynamics) in the weights, ``V`` is irreducible
and ``S`` is a subset of ``V``; then (Schlisselberg & Darshan 2025, and /work/shared/SCIENCE.md):

- ``plastic_rank < full_rank``: ``S`` has measure zero in ``V`` and the teacher's output has a density on ``V``,
  so ``MP = 0`` exactly (verdict ``"zero"``);
- ranks equal and ``F`` affine in ``theta_A``: ``S`` is an affine space of dimension ``dim V`` inside ``V``, so
  ``S = V`` and ``MP = 1`` exactly (verdict ``"one"``);
- ranks equal, not affine: ``S`` contains an open piece of ``V`` around the student's own output, so
  ``MP > 0``; its value needs fitting (verdict ``"positive"``).

Generic ranks are computed at random points (weights from :meth:`Circuit.sample_weights`, probes from
:meth:`Circuit.sample_probes`), where they equal the generic rank with probability one; the maximum over several
independent points guards against an unlucky draw. Columns of the Jacobian are derivatives with respect to each
weight in units of its initial standard deviation (rank-neutral, but it puts all columns on one scale).

Because the columns of a fixed Jacobian form a linear matroid, picking columns greedily (QR with column
pivoting) gives a maximal-rank allocation for every budget (:func:`optimal_allocation`), and the fewest plastic
synapses that reach ``dim V`` is ``dim V`` itself whenever the allowed synapses reach it (:func:`minimal_budget`).

Modules: :mod:`~neurosubset.theory.certificate` (:func:`certify`), :mod:`~neurosubset.theory.optimal`
(:func:`optimal_allocation`, :func:`minimal_budget`), :mod:`~neurosubset.theory.heuristic` (:func:`heuristic`),
and the private rank machinery at random points, ``_ranks``.
"""
from .certificate import METHODS as METHODS
from .certificate import RANK_RTOL as RANK_RTOL
from .certificate import VERDICTS as VERDICTS
from .certificate import Certificate as Certificate
from .certificate import TheoryError as TheoryError
from .certificate import certify as certify
from .heuristic import HEURISTIC_VERDICTS as HEURISTIC_VERDICTS
from .heuristic import Heuristic as Heuristic
from .heuristic import heuristic as heuristic
from .optimal import minimal_budget as minimal_budget
from .optimal import optimal_allocation as optimal_allocation

__all__ = [
    # the certificate
    "certify", "Certificate", "TheoryError", "VERDICTS", "METHODS", "RANK_RTOL",
    # optimal allocations
    "optimal_allocation", "minimal_budget",
    # the heuristic
    "heuristic", "Heuristic", "HEURISTIC_VERDICTS",
]
