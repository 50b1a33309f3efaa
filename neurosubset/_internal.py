"""The one door from the scripts of ``analysis/`` and ``benchmarks/`` into the package's private modules.

Those scripts are not part of the package, yet write result files in its schema and reuse a helper or two. They
take what is private from here and from nowhere else (``tests/test_schema.py`` checks it: no
``neurosubset._schema``, no ``neurosubset.theory._ranks``, no ``ns._x`` in a script), so a change of the package's
internals shows up in this one file. Public names (``neurosubset.benchmark.draw_trials``,
``neurosubset.dynamics.forward``, ...) are imported from their own modules, not through here. No module of the
package imports this one. Not public API: a name may change or go without deprecation.

Result schema (:mod:`neurosubset._schema`)
    :func:`meta` (CF attrs of a variable), :data:`VARIABLES` (every variable's schema), :data:`DECISION` (the
    decision flags of fits), :data:`DONE` (the status of a computed sweep point), :data:`OUTCOME` and
    :data:`PROOF_KIND` (what each trial proves, and by what kind of witness or proof).
Analysis variables (:mod:`neurosubset._analysis_schema`)
    :func:`analysis_meta` (attrs of a variable an analysis script stores beside the result variables).
Figures (:mod:`neurosubset._outputs`)
    :func:`write_figure` (a figure through the output rules: atomic, never over an existing file unasked).
Levenberg-Marquardt (:mod:`neurosubset.solvers.lm`)
    :func:`marquardt_step` (``_marquardt_step``: one damped Gauss-Newton step on a batch, for the benchmarks).
Exact ranks (:mod:`neurosubset.theory._ranks`)
    :func:`rank_columns` (``_columns``: the Jacobian columns of an allocation's plastic synapses).
"""
from ._analysis_schema import analysis_meta as analysis_meta
from ._outputs import write_figure as write_figure
from ._schema import DECISION as DECISION
from ._schema import DONE as DONE
from ._schema import OUTCOME as OUTCOME
from ._schema import PROOF_KIND as PROOF_KIND
from ._schema import VARIABLES as VARIABLES
from ._schema import meta as meta
from .solvers.lm import _marquardt_step as marquardt_step
from .theory._ranks import _columns as rank_columns

__all__ = ["meta", "VARIABLES", "DECISION", "DONE", "OUTCOME", "PROOF_KIND", "rank_columns", "marquardt_step",
           "analysis_meta", "write_figure"]
