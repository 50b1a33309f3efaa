"""Solver objects: what to run on a batch of problems ``F(theta) = target``, as frozen, validated dataclasses.

Each solver is a frozen dataclass validated in ``__post_init__``, converts to plain attrs (:meth:`to_attrs`) and
back (:func:`solver_from_attrs`), and is what :func:`neurosubset.fit`, :func:`neurosubset.match_probability` and
:func:`neurosubset.sweep` take as ``solver=``. :func:`as_solver` turns the strings ``"auto"``, ``"lstsq"`` and
``"lm"`` (and the deprecated loose effort keywords) into one.
"""
from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar, Union

from .._checks import ParameterError, check_choice, check_int, check_real


@dataclass(frozen=True)
class LeastSquares:
    """Exact batched least squares, for outputs affine in the plastic weights.

    ``theta = argmin ||F(0) + J theta - target||`` per trial (SVD-based LAPACK ``gelsd``); a trial whose residual
    stays above ``tol`` provably has no solution (status ``no_solution``).
    """

    name: ClassVar[str] = "lstsq"

    def to_attrs(self) -> dict[str, Any]:
        """Plain attrs: ``{"solver": "lstsq"}``."""
        return {"solver": self.name}


@dataclass(frozen=True)
class LevenbergMarquardt:
    """Batched Levenberg-Marquardt with a multi-start policy, for outputs that are not affine in the weights.

    Parameters
    ----------
    restarts : int
        Random starts per trial in each round (>= 1).
    max_rounds : int
        Cap on restart rounds (>= 1); every still-unmatched trial gets a new round until it matches or reaches it.
    iterations : int
        LM iterations in the first round (>= 1), doubling each round, at most 8x.
    widen : float
        Growth factor of the start scale per round (>= 1): restart ``j`` of round ``r`` starts at
        ``widen^(r j / (restarts - 1))`` init SDs.
    patience : int
        Rounds chosen from the measured convergence (>= 0): a trial stops getting rounds once ``patience`` rounds in
        a row did not improve it (did not lower its best relative residual by 1%: no restart, fresh or continued,
        came closer), so the rounds end where the last ones gain nothing; ``max_rounds`` stays the cap, and a result
        whose last round still improved some trial says so (attr ``effort_converged = 0``). ``0``: every unmatched
        trial runs all ``max_rounds`` (the policy before; results made with it are reproduced bit for bit).
    """

    restarts: int = 4
    max_rounds: int = 8
    iterations: int = 400
    widen: float = 4.0
    patience: int = 2
    name: ClassVar[str] = "lm"

    def __post_init__(self) -> None:
        object.__setattr__(self, "restarts", check_int("restarts", self.restarts, minimum=1))
        object.__setattr__(self, "max_rounds", check_int("max_rounds", self.max_rounds, minimum=1))
        object.__setattr__(self, "iterations", check_int("iterations", self.iterations, minimum=1))
        object.__setattr__(self, "widen", check_real("widen", self.widen, low=1.0))
        object.__setattr__(self, "patience", check_int("patience", self.patience, minimum=0))

    @property
    def patience_acts(self) -> bool:
        """Whether ``patience`` can stop a trial before ``max_rounds`` (round 0 always improves on nothing, so the
        earliest stop is after round ``patience``): only then is it recorded and hashed, so results of the fixed
        policy, and of caps too short for it to act, keep their attrs and config hashes."""
        return self.patience > 0 and self.max_rounds > self.patience + 1

    def to_attrs(self) -> dict[str, Any]:
        """Plain attrs: ``solver`` and the effort fields."""
        return {"solver": self.name, **asdict(self)}


@dataclass(frozen=True)
class Auto(LevenbergMarquardt):
    """Exact decisions wherever the problem allows one, Levenberg-Marquardt otherwise.

    In order: least squares where the outputs are affine in the plastic weights (bounded least squares under
    Dale's law); for a shallow ReLU net whose plastic synapses all feed hidden units with a frozen read-out, the
    cone LP or the activation-pattern LPs (:class:`~neurosubset.solvers.exact.ReluFeasibility`); for one plastic
    synapse of a discrete linear circuit, the real roots of its output polynomial
    (:class:`~neurosubset.solvers.exact.UnivariateRoots`); for a linear steady circuit with at least
    :data:`LIFT_HIDDEN` hidden neurons, the lifted rates (:class:`SteadyLifting`: a witness or a proof per trial,
    the LM for the trials it leaves open); the LM for everything else. The fields are those of
    :class:`LevenbergMarquardt`, used when the LM runs. Which decider settled each trial is recorded
    (``decision``), and a result says ``decision_kind = "exact"`` or ``"lower bound"`` (the LM's).
    """

    name: ClassVar[str] = "auto"

    def resolve(self, affine: bool) -> LeastSquares | LevenbergMarquardt:
        """The solver that runs: :class:`LeastSquares` if ``affine``, else the LM with these fields."""
        return LeastSquares() if affine else LevenbergMarquardt(self.restarts, self.max_rounds, self.iterations,
                                                                self.widen, self.patience)


@dataclass(frozen=True)
class SteadyLifting(LevenbergMarquardt):
    """Linear steady circuits: the rates on the probes as unknowns beside the plastic values, then the LM.

    Per trial a witness (matched) or a proof (no_solution) where the lifted linear system decides, the LM with these
    fields for the trials it leaves open (:mod:`neurosubset.solvers.lifted`). :class:`Auto` uses it on circuits with
    at least :data:`LIFT_HIDDEN` hidden neurons; ask for it by name (``"lifted"``) on smaller ones.
    """

    name: ClassVar[str] = "lifted"


# Auto lifts steady circuits this large (the LM stalls there: minutes per worm trial); smaller ones keep the LM, so
# that results and sweep stores made before the lifted decider reproduce bit for bit
LIFT_HIDDEN = 128

Solver = Union[LeastSquares, LevenbergMarquardt, Auto, SteadyLifting]
SOLVERS = {"auto": Auto, "lstsq": LeastSquares, "lm": LevenbergMarquardt, "lifted": SteadyLifting}
_EFFORT = ("restarts", "max_rounds", "iterations", "widen")


def lm_fields(solver: Solver) -> dict[str, Any]:
    """The LM effort fields of ``solver`` (the defaults for :class:`LeastSquares`, which has none)."""
    source = solver if isinstance(solver, LevenbergMarquardt) else LevenbergMarquardt()
    return {f.name: getattr(source, f.name) for f in fields(LevenbergMarquardt)}


def as_solver(solver: Solver | str = "auto", *, where: str = "fit", **effort: Any) -> Solver:
    """A solver object from ``solver`` (an object, or ``"auto"``/``"lstsq"``/``"lm"``) and loose effort keywords.

    Parameters
    ----------
    solver : Auto, LeastSquares, LevenbergMarquardt or str
    where : str
        The calling function, named in warnings.
    **effort
        ``restarts``, ``max_rounds``, ``iterations``, ``widen`` and the deprecated ``steps`` (= ``iterations``);
        ``None`` values are ignored. Passing any of them is deprecated (FutureWarning): give a solver object.

    Returns
    -------
    Auto, LeastSquares or LevenbergMarquardt
    """
    given = {k: v for k, v in effort.items() if v is not None}
    warned = "steps" in given
    if warned:
        if "iterations" in given:
            raise ParameterError(f"{where}: give 'iterations', not both 'iterations' and its deprecated alias "
                                 f"'steps'.")
        given["iterations"] = given.pop("steps")
        warnings.warn(f"{where}(steps=...) is deprecated: 'steps' means a circuit's time steps; the LM iteration "
                      f"count is 'iterations' (e.g. solver=LevenbergMarquardt(iterations=...)).", FutureWarning,
                      stacklevel=3)
    unknown = sorted(set(given) - set(_EFFORT))
    if unknown:
        raise ParameterError(f"{where}: unknown solver option(s) {unknown}. Expected some of {list(_EFFORT)}.")
    if isinstance(solver, str):
        check_choice("solver", solver, list(SOLVERS))
        cls = SOLVERS[solver]
    elif isinstance(solver, (LeastSquares, LevenbergMarquardt)):
        cls = type(solver)
    else:
        raise ParameterError(f"The 'solver' parameter must be a solver object (Auto(), LeastSquares(), "
                             f"LevenbergMarquardt(...)) or one of {list(SOLVERS)}. Got {solver!r} instead.")
    if given and not warned:
        warnings.warn(f"{where}({', '.join(f'{k}=' for k in given)}...) is deprecated: pass "
                      f"solver={cls.__name__}(...) instead.", FutureWarning, stacklevel=3)
    if cls is LeastSquares:
        return solver if isinstance(solver, LeastSquares) else LeastSquares()
    base = lm_fields(solver) if not isinstance(solver, str) else {}
    return cls(**{**base, **given})


def solver_from_attrs(attrs: dict[str, Any]) -> Solver:
    """The solver object that :meth:`to_attrs` described (the inverse of ``to_attrs``)."""
    attrs = dict(attrs)
    name = attrs.pop("solver", None)
    if name not in SOLVERS:
        raise ParameterError(f"The 'solver' attr must be one of {list(SOLVERS)}. Got {name!r} instead.")
    cls = SOLVERS[name]
    # attrs written before ``patience`` existed were made with every round run: patience 0
    return cls() if cls is LeastSquares else cls(**{k: attrs[k] for k in _EFFORT if k in attrs},
                                                 patience=int(attrs.get("patience", 0)))
