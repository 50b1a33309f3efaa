"""neurosubset: how should a fixed budget of plastic synapses be spread over a circuit?

The teacher-student benchmark of Schlisselberg & Darshan (ICLR 2025): a student circuit with only the synapses of
an allocation plastic must reproduce a random teacher's outputs on ``m`` random probes; the match probability
``MP(A, m)`` measures how expressive the allocation is.
"""
from .allocation import STRATEGIES as STRATEGIES
from .allocation import Allocation as Allocation
from .allocation import allocate as allocate
from .benchmark import DEFAULT_TOL as DEFAULT_TOL
from .benchmark import FitResult as FitResult
from .benchmark import fit as fit
from .benchmark import match_probability as match_probability
from .benchmark import PartialResult as PartialResult
from .benchmark import student_weights as student_weights
from .benchmark import teacher_weights as teacher_weights
from .benchmark import wilson_interval as wilson_interval
from .options import FitOptions as FitOptions
from .dynamics.sparse_map import SparseWeights as SparseWeights  # what fit returns in the sparse layout
from .dynamics.sparse_map import WeightsLayout as WeightsLayout
from .solvers import Auto as Auto
from .solvers import LeastSquares as LeastSquares
from .solvers import LevenbergMarquardt as LevenbergMarquardt
from ._checks import AllocationError as AllocationError
from ._checks import CircuitSpecError as CircuitSpecError
from ._checks import MissingExtraError as MissingExtraError
from ._checks import NeurosubsetError as NeurosubsetError
from ._checks import NonFiniteOutputWarning as NonFiniteOutputWarning
from ._checks import StabilityWarning as StabilityWarning
from ._checks import ParameterError as ParameterError
from ._schema import FIT_STATUS as FIT_STATUS
from ._schema import POINT_STATUS as POINT_STATUS
from .circuit import Circuit as Circuit
from .circuit import Projection as Projection
from .circuit import Region as Region
from .circuit import feedforward as feedforward
from .circuit import linear_rnn as linear_rnn
from .simulate import simulate as simulate
from ._outputs import write as write
from .schema import LayoutError as LayoutError
from .schema import validate_dataset as validate_dataset
from .connectome import celegans as celegans  # cect itself is imported only when a connectome is built
from .spiking import spiking_check as spiking_check  # brian2 itself is imported only when a check runs
from .spiking import spiking_compare as spiking_compare
from .spiking import spikecheck as spikecheck
from .spiking import SpikingSettings as SpikingSettings
from .spiking import SpikingSettingsError as SpikingSettingsError
from .theory import Certificate as Certificate
from .theory import Heuristic as Heuristic
from .theory import TheoryError as TheoryError
from .theory import certify as certify
from .theory import heuristic as heuristic
from .theory import minimal_budget as minimal_budget
from .theory import optimal_allocation as optimal_allocation
from . import datasets as datasets  # recorded data sets (the optional packages are read only when called)
from .responses import fit_responses as fit_responses
from .responses import localize as localize
from .responses import projection_candidates as projection_candidates
from .responses import region_candidates as region_candidates
from .sweeps import DensityGrid as DensityGrid
from .sweeps import FractionGrid as FractionGrid
from .sweeps import SweepStoreError as SweepStoreError
from .sweeps import density_grid as density_grid
from .sweeps import dirichlet_grid as dirichlet_grid
from .sweeps import paired_difference as paired_difference
from .sweeps import simplex_grid as simplex_grid
from .sweeps import sweep as sweep
from .sweeps import sweep_allocations as sweep_allocations
from ._schema import version as _version

__version__ = _version()

__all__ = [
    # circuits
    "Circuit", "Region", "Projection", "feedforward", "linear_rnn", "celegans", "CircuitSpecError",
    # continuous-time trajectories
    "simulate",
    # allocations
    "Allocation", "allocate", "STRATEGIES", "AllocationError",
    # benchmark
    "match_probability", "PartialResult", "fit", "FitOptions", "FitResult", "wilson_interval", "student_weights",
    "teacher_weights",
    "DEFAULT_TOL", "FIT_STATUS",
    # weights layouts (FitOptions.weights_layout): a sparse fit's weights per name, the layouts' names
    "SparseWeights", "WeightsLayout",
    # solvers
    "Auto", "LeastSquares", "LevenbergMarquardt",
    # errors (all subclass NeurosubsetError, a ValueError)
    "NeurosubsetError", "ParameterError", "MissingExtraError", "NonFiniteOutputWarning", "StabilityWarning",
    # theory
    "certify", "Certificate", "optimal_allocation", "minimal_budget", "heuristic", "Heuristic", "TheoryError",
    # spiking check (optional extra neurosubset[spiking]; brian2 is imported only when a check runs)
    "spiking_check", "spiking_compare", "spikecheck", "SpikingSettings", "SpikingSettingsError",
    # fitting recorded responses: which synapses could have changed?
    "fit_responses", "localize", "projection_candidates", "region_candidates",
    # recorded data sets (ns.datasets.randi2023: the C. elegans signal-propagation atlas)
    "datasets",
    # declared result layouts (neurosubset.schema) and the CF-clean writer
    "validate_dataset", "LayoutError", "write",
    # sweeps
    "sweep", "sweep_allocations", "simplex_grid", "FractionGrid", "SweepStoreError", "POINT_STATUS",
    "dirichlet_grid", "density_grid", "DensityGrid", "paired_difference", "plot_allocation",
]


def plot_allocation(circuit, alloc, **kwargs):
    """Draw which synapses of ``circuit`` the allocation ``alloc`` makes plastic (no result Dataset needed).

    Parameters
    ----------
    circuit : Circuit
    alloc : Allocation
    **kwargs
        Passed to :func:`neurosubset.plot.plot_allocation` (matplotlib is imported only when this is called).

    Returns
    -------
    matplotlib.figure.Figure
        The synapses as one block matrix: rows receiving neurons, columns sending ones, grouped by region.
    """
    from .plot import plot_allocation as _plot_allocation

    return _plot_allocation(circuit, alloc, **kwargs)
