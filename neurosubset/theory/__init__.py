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

Generic ranks are computed at random points. Float ranks (weights from :meth:`Circuit.sample_weights`, probes
from :meth:`Circuit.sample_probes`, maximum over several points, columns in units of each weight's init standard
deviation) carry a verdict only where their singular-value gap is decisive; otherwise linear circuits get exact
ranks over GF(p) (:mod:`~neurosubset.theory.modular_ranks`: the adjoint Jacobian evaluated in arithmetic mod a random
prime ``p < 2^62`` at a uniform point), which are lower bounds on the generic ranks and equal them except with
probability ``<= r d / p`` (Schwartz-Zippel), and ReLU circuits stay "unproven". By default a linear circuit whose
exact ranks are estimated cheaper than the float ones (:func:`~neurosubset.theory.modular_ranks.rank_costs`, e.g.
many probes of few stacked inputs) gets the exact ranks directly.

Because the columns of a fixed Jacobian form a linear matroid, and the matroids for m and m + 1 probes are nested,
one greedy allocation reaches the largest plastic rank of its budget at every m at once (:func:`optimal_allocation`,
over all m, affine allocations first among ties), and the fewest plastic synapses that reach ``dim V`` is
``dim V`` itself whenever the allowed synapses reach it (:func:`minimal_budget`, with the share each weight needs).

Modules: :mod:`~neurosubset.theory.certificate` (:func:`certify`), :mod:`~neurosubset.theory.optimal`
(:func:`optimal_allocation`, :func:`minimal_budget`), :mod:`~neurosubset.theory.heuristic` (:func:`heuristic`),
:mod:`~neurosubset.theory.modular_ranks` (ranks over GF(p)) and the private float rank machinery, ``_ranks``.
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
from .optimal import MinimalBudget as MinimalBudget
from .optimal import minimal_budget as minimal_budget
from .optimal import optimal_allocation as optimal_allocation

__all__ = [
    # the certificate
    "certify", "Certificate", "TheoryError", "VERDICTS", "METHODS", "RANK_RTOL",
    # optimal allocations
    "optimal_allocation", "minimal_budget", "MinimalBudget",
    # the heuristic
    "heuristic", "Heuristic", "HEURISTIC_VERDICTS",
]
