"""How a fit runs: :class:`FitOptions`, one frozen value validated once where the user hands it in.

:func:`neurosubset.fit`, :func:`neurosubset.match_probability`, :func:`neurosubset.sweep`,
:func:`neurosubset.fit_responses`, :func:`neurosubset.localize` and the command line build one
:class:`FitOptions` from their keywords (or take ``options=FitOptions(...)``), validate it once through
:func:`validate_params` against the one declarative table :data:`PARAMETER_CONSTRAINTS`, and pass it intact inward;
the functions inside trust it (scikit-learn's ``_parameter_constraints`` + ``validate_params`` is the model). Every
refusal is one line: "The 'tol' parameter of match_probability must be a number in the open interval (0, 1). Got
inf instead."

:meth:`FitOptions.to_attrs` / :meth:`FitOptions.from_attrs` convert to and from the plain attrs result files carry,
and :func:`hashed_config` / :func:`config_hash` are the one rule by which mp results and sweep stores hash their
configuration (stored hashes stay valid: the keys each kind hashed before the rule was one are kept, see
:data:`_HASH_SPELLING`).
"""
from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from numbers import Integral, Real
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ._checks import ParameterError, workers_allowed
from .dynamics.sparse_map import WeightsLayout
from .solvers import SOLVERS, Auto, LeastSquares, LevenbergMarquardt, Solver, as_solver, lm_fields

if TYPE_CHECKING:
    from .circuit import Circuit

__all__ = ["DEFAULT_TOL", "FitOptions", "PARAMETER_CONSTRAINTS", "config_hash", "constraints_act", "fit_options",
           "hashed_config", "validate_params"]

# Matched residuals sit at rounding level (~1e-13 .. 1e-15 relative) and unmatched ones at >= 1e-3 in the linear
# cases measured (tests/test_benchmark.py checks the gap); 1e-8 sits in the middle of that gap on a log scale.
DEFAULT_TOL = 1e-8


class _Invalid(Exception):
    """A constraint's refusal; ``args[0]``, where given, replaces the table's description of what is allowed."""


def _solver(value: Any) -> Solver:
    if isinstance(value, str):
        if value not in SOLVERS:
            raise _Invalid
    elif not isinstance(value, (LeastSquares, LevenbergMarquardt)):
        raise _Invalid
    return as_solver(value)


def _open_unit(value: Any) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (Real, np.floating, np.integer)):
        raise _Invalid
    out = float(value)
    if not 0.0 < out < 1.0:  # NaN fails both comparisons
        raise _Invalid
    return out


def _positive(value: Any) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (Real, np.floating, np.integer)):
        raise _Invalid
    out = float(value)
    if not (math.isfinite(out) and out > 0.0):
        raise _Invalid
    return out


def _flag(value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise _Invalid
    return bool(value)


def _flag_or_none(value: Any) -> bool | None:
    return None if value is None else _flag(value)


def _count_or_none(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (Integral, np.integer)) or value < 1:
        raise _Invalid
    return int(value)


def _threads_or_none(value: Any) -> int | None:
    from ._checks import check_workers

    if value is None:
        return None
    try:
        return check_workers(value, "threads")
    except ParameterError:
        raise _Invalid from None


def _bytes_or_none(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (Real, np.floating, np.integer)):
        raise _Invalid
    out = float(value)
    if not (0.0 < out and math.isfinite(out)):
        raise _Invalid
    return out


def _device(value: Any) -> str:
    if not isinstance(value, (str, torch.device)):
        raise _Invalid
    try:
        out = torch.device(value)
    except (RuntimeError, TypeError, ValueError):
        raise _Invalid from None
    if out.type not in ("cpu", "cuda"):
        raise _Invalid
    if out.type == "cuda" and not torch.cuda.is_available():
        raise _Invalid(f"'cpu' here (torch {torch.__version__} sees no CUDA GPU: torch.cuda.is_available() is "
                       f"False)")
    return str(out)


def _weights_layout(value: Any) -> str:
    if isinstance(value, WeightsLayout):  # a member is taken as its value (what results record)
        return value.value
    if not isinstance(value, str) or value not in ("auto", "dense", "sparse"):
        raise _Invalid
    return value


# The one table of what each field of FitOptions allows: field -> (what the message says is allowed, the check that
# returns the normalised value or raises _Invalid).
PARAMETER_CONSTRAINTS: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "solver": (f"a solver object (Auto(), LeastSquares(), LevenbergMarquardt(...), SteadyLifting(...)) or one of "
               f"{list(SOLVERS)}", _solver),
    "tol": ("a number in the open interval (0, 1)", _open_unit),
    "dale": ("True or False", _flag),
    "stable": ("True or False", _flag),
    "device": ("'cpu' or 'cuda' ('cuda:N', or a torch.device of those)", _device),
    "threads": (f"{workers_allowed()}, or None", _threads_or_none),
    "chunk": ("an integer >= 1 or None", _count_or_none),
    "max_memory": ("a finite number of bytes > 0 or None", _bytes_or_none),
    "skip_zero": ("True, False or None", _flag_or_none),
    "certificate": ("True or False", _flag),
    "plausibility_bound": ("a finite number > 0 (init SDs)", _positive),
    "weights_layout": ("one of ['auto', 'dense', 'sparse']", _weights_layout),
}


def validate_params(params: Mapping[str, Any], caller: str) -> dict[str, Any]:
    """``params`` (field -> value) checked against :data:`PARAMETER_CONSTRAINTS` and normalised.

    Parameters
    ----------
    params : dict
        Some fields of :class:`FitOptions` and their values.
    caller : str
        The public function (or command) the values were handed to, named in the message.

    Returns
    -------
    dict
        Field -> normalised value (``solver`` an object, ``device`` a str, ``tol`` a float ...).

    Raises
    ------
    ParameterError
        One line: "The 'X' parameter of CALLER must be ALLOWED. Got VALUE instead."
    """
    out = {}
    for name, value in params.items():
        allowed, check = PARAMETER_CONSTRAINTS[name]
        try:
            out[name] = check(value)
        except _Invalid as exc:
            raise ParameterError(f"The {name!r} parameter of {caller} must be {exc.args[0] if exc.args else allowed}."
                                 f" Got {value!r} instead.") from None
    return out


@dataclass(frozen=True)
class FitOptions:
    """How the plastic synapses are fitted: the options :func:`neurosubset.fit` and every other fitting verb share.

    Validated when built (and once per public call that builds it from keywords); the functions it is passed to
    trust it. ``fit(..., options=FitOptions(tol=1e-6))`` is ``fit(..., tol=1e-6)``.

    Attributes
    ----------
    solver : Auto, LeastSquares, LevenbergMarquardt, SteadyLifting or {"auto", "lstsq", "lm", "lifted"}
        The decider (:mod:`neurosubset.solvers`); a name becomes the default object of that class.
    tol : float
        Match tolerance on the relative residual, in the open interval (0, 1).
    dale, stable : bool
        Dale's law kept while fitting; only stable students of steady circuits count (see :func:`neurosubset.fit`).
    device : str
        Where the LM's batched iterations run: ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` (a :class:`torch.device`
        is stored as its str). Circuits whose dynamics runs on the CPU only (continuous) take ``"cpu"``.
    threads : int or None
        torch intra-op threads while fitting (None: torch's setting).
    chunk : int or None
        Trials per batch (None: sized from the memory available).
    max_memory : float or None
        Bytes one batch may take.
    skip_zero : bool or None
        Certify first and fit nothing where the certificate proves MP = 0 (None: on from 128 hidden neurons).
    certificate : bool
        Also store the exact certificate (``match_probability``, ``sweep``).
    plausibility_bound : float
        ``K``: the biological deciders (:mod:`neurosubset.solvers.biological`, :mod:`neurosubset.solvers.proofs`)
        search witnesses and prove "no match" with every plastic value within ``K`` init SDs of its synapse, so
        their brackets hold "within K": ``mp_lower`` counts only witnesses within ``K`` (a match found beyond it,
        by the LM, still counts in ``mp``) (default 100; stored as the attr ``plausibility_bound`` where ``dale`` or
        ``stable`` is on).
    weights_layout : {"auto", "dense", "sparse"} or WeightsLayout
        How a fit holds the weights (:mod:`neurosubset.dynamics.sparse_map`): ``"auto"`` (default) dense, or sparse
        (values on the present synapses, sparse solves) for steady and discrete linear circuits above the measured
        crossovers (:func:`~neurosubset.dynamics.sparse_map.choose_layout`). Exact decisions do not depend on it;
        results record the layout that ran (attr ``weights_layout``). A :class:`~neurosubset.WeightsLayout` member
        is stored as its value. In the sparse layout :func:`neurosubset.fit` returns each weight as a
        :class:`~neurosubset.SparseWeights`.

    Examples
    --------
    >>> FitOptions(solver="lstsq", tol=1e-6).to_attrs()["tolerance"]
    1e-06
    """

    solver: Solver = Auto()
    tol: float = DEFAULT_TOL
    dale: bool = True
    stable: bool = True
    device: str = "cpu"
    threads: int | None = 1
    chunk: int | None = None
    max_memory: float | None = None
    skip_zero: bool | None = None
    certificate: bool = True
    plausibility_bound: float = 100.0
    weights_layout: str = "auto"

    def __post_init__(self) -> None:
        for name, value in validate_params({f.name: getattr(self, f.name) for f in fields(self)},
                                           "FitOptions").items():
            object.__setattr__(self, name, value)

    def _evolve(self, **changes: Any) -> FitOptions:
        """A copy with ``changes``, which are already validated (no second validation)."""
        out = object.__new__(FitOptions)
        for f in fields(self):
            object.__setattr__(out, f.name, changes.get(f.name, getattr(self, f.name)))
        return out

    def check_circuit(self, circuit: Circuit, caller: str) -> None:
        """Refuse (one line, before any work) options the ``circuit`` cannot run: a GPU ``device`` for dynamics
        whose maps run on the CPU only (continuous circuits)."""
        if self.device != "cpu" and circuit.dynamics.cpu_only:
            raise ParameterError(f"The 'device' parameter of {caller} must be 'cpu' for {circuit.dynamics.name} "
                                 f"circuits (their maps run on the CPU only). Got {self.device!r} instead.")

    def to_attrs(self, ran: Solver | None = None) -> dict[str, Any]:
        """The options as the plain attrs (str, int, float: netCDF accepts them) that result files carry.

        ``solver_requested``, ``tolerance``, the LM's ``restarts_per_round``, ``max_rounds``, ``lm_steps`` (and
        ``lm_widen`` where not the default, ``lm_patience`` where it can stop a trial before ``max_rounds``),
        ``dale``, ``stable`` and ``certificate`` as 0/1. With ``ran``, the
        solver that ran (``Auto`` resolved), also ``solver`` (its name), and the LM fields are its own (0 where an
        exact decider ran), as mp results record them. ``device``, ``threads``, ``chunk`` and ``max_memory`` do not
        change results and are not recorded.
        """
        if ran is None:
            lm = lm_fields(self.solver)
        else:
            lm = lm_fields(ran) if isinstance(ran, LevenbergMarquardt) else dict.fromkeys(lm_fields(ran), 0)
        out: dict[str, Any] = {"solver_requested": self.solver.name,
                               **({} if ran is None else {"solver": ran.name}),
                               "tolerance": self.tol, "restarts_per_round": lm["restarts"],
                               "max_rounds": lm["max_rounds"], "lm_steps": lm["iterations"]}
        if lm["widen"] and lm["widen"] != LevenbergMarquardt.widen:
            out["lm_widen"] = lm["widen"]
        if _patience_acts(lm):  # only where it can stop a trial early: the fixed policy's attrs stay as they were
            out["lm_patience"] = lm["patience"]
        out.update(dale=int(self.dale), stable=int(self.stable), certificate=int(self.certificate))
        if self.dale or self.stable:
            out["plausibility_bound"] = self.plausibility_bound
        return out

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, Any]) -> FitOptions:
        """The options :meth:`to_attrs` described, from the attrs of an mp result or a sweep store of any version.

        Files written before the constraints existed (no ``dale`` / ``stable`` attr) were unconstrained: False. A
        swept flag (a sweep's ``dale`` dim) reads as the default. Fields results do not record take their defaults.
        """
        name = str(attrs.get("solver_requested", attrs.get("solver", "auto")))
        effort = {"restarts": attrs.get("restarts_per_round", 0), "max_rounds": attrs.get("max_rounds", 0),
                  "iterations": attrs.get("lm_steps", 0), "widen": attrs.get("lm_widen", LevenbergMarquardt.widen)}
        cls_ = SOLVERS[name] if name in SOLVERS else Auto
        given = {k: int(v) if k != "widen" else float(v) for k, v in effort.items() if v}
        # lm_patience is recorded where it acts; without it every round ran (or patience could not stop any): 0
        solver = cls_() if cls_ is LeastSquares or "restarts" not in given else cls_(
            **given, patience=int(attrs.get("lm_patience", 0)))

        def flag(key: str, default: bool) -> bool:
            value = attrs.get(key)
            if value is None:
                return default
            return bool(int(value)) if not isinstance(value, str) else True

        certificate = flag("certificate", "certificate_verdict" in attrs)
        return cls(solver=solver, tol=float(attrs.get("tolerance", DEFAULT_TOL)), dale=flag("dale", False),
                   stable=flag("stable", False), certificate=certificate,
                   plausibility_bound=float(attrs.get("plausibility_bound", cls.plausibility_bound)))


def fit_options(caller: str, options: FitOptions | None = None, **keywords: Any) -> FitOptions:
    """The :class:`FitOptions` of a public call: ``options`` as given (trusted), or built from ``keywords``.

    Parameters
    ----------
    caller : str
        The public function, named in messages.
    options : FitOptions, optional
        Options the user built (already validated). Keywords that differ from their defaults are then refused.
    **keywords
        Fields of :class:`FitOptions` as the public function's keywords hold them (each validated exactly once,
        here); fields not given keep their defaults.
    """
    if options is not None:
        if not isinstance(options, FitOptions):
            raise ParameterError(f"The 'options' parameter of {caller} must be a FitOptions or None. Got "
                                 f"{options!r:.80} instead.")
        defaults = FitOptions.__dataclass_fields__
        clash = [k for k, v in keywords.items() if not _is_default(v, defaults[k].default)]
        if clash:
            raise ParameterError(f"{caller}: give {clash} either as keywords or in options=FitOptions(...), not both.")
        return options
    return _DEFAULTS._evolve(**validate_params(keywords, caller))


_DEFAULTS = FitOptions()  # validated once, here: the fields a call does not give


def _is_default(value: Any, default: Any) -> bool:
    return value is default or (type(value) is type(default) and value == default)


def constraints_act(circuit: Circuit) -> tuple[bool, bool]:
    """Whether ``dale`` and ``stable`` can act on ``circuit`` (a signed region; a steady state to keep): the
    constraints enter a configuration hash only there."""
    from .dynamics.stability import stability_applies

    return any(r.sign is not None for r in circuit.regions), stability_applies(circuit)


# How each kind of result spelled the fit options in its hashed configuration before one function made both; kept
# key for key (in JSON 1 and true differ) so that every stored config_hash still holds.
# mp: the solver that ran and its LM fields (0 where an exact decider ran), no certificate (it changes no per-trial
# value); sweep: the solver requested and its LM fields (the defaults for least squares), the certificate.
_HASH_SPELLING = {
    "mp": {"restarts": "restarts_per_round", "max_rounds": "max_rounds", "iterations": "lm_steps",
           "widen": "lm_widen", "patience": "lm_patience", "on": 1, "certificate": False},
    "sweep": {"restarts": "restarts", "max_rounds": "max_rounds", "iterations": "lm_steps", "widen": "widen",
              "patience": "patience", "on": True, "certificate": True},
}


def hashed_config(options: FitOptions, rest: Mapping[str, Any], *, kind: str, dale_acts: bool, stable_acts: bool,
                  ran: Solver | None = None) -> dict[str, Any]:
    """The hashed configuration of a result: ``rest`` (the circuit, the grid or allocation, trials, seeds ...) and
    the fit options that change results.

    Parameters
    ----------
    options : FitOptions
    rest : dict
        The configuration beside the options (plain JSON types).
    kind : {"mp", "sweep"}
        The result kind (the key spelling of :data:`_HASH_SPELLING`).
    dale_acts, stable_acts : bool
        Whether the constraints can act (:func:`constraints_act`): they are hashed only there, so the
        unconstrained configuration and circuits the flags cannot change keep the hashes they had before the flags.
    ran : solver, optional
        mp results: the solver that ran (``Auto`` resolved).

    Returns
    -------
    dict
        ``rest`` with ``tolerance``, ``solver``, the LM's fields (its ``widen`` only where not the default and its
        ``patience`` only where it can stop a trial early, so older hashes still hold), ``certificate`` (sweeps)
        and ``dale`` / ``stable`` where on and acting.
    """
    spell = _HASH_SPELLING[kind]
    solver = options.solver if ran is None else ran
    if kind == "mp" and not isinstance(solver, LevenbergMarquardt):
        lm = dict.fromkeys(lm_fields(solver), 0)
    else:
        lm = lm_fields(solver)
    out = {**rest, "solver": solver.name, "tolerance": options.tol,
           **{spell[k]: lm[k] for k in ("restarts", "max_rounds", "iterations")}}
    if spell["certificate"]:
        out["certificate"] = options.certificate
    if lm["widen"] and lm["widen"] != LevenbergMarquardt.widen:
        out[spell["widen"]] = lm["widen"]
    if _patience_acts(lm):  # only where it can act: the fixed policy (patience 0) keeps every older hash
        out[spell["patience"]] = lm["patience"]
    if options.dale and dale_acts:
        out["dale"] = spell["on"]
    if options.stable and stable_acts:
        out["stable"] = spell["on"]
    if (options.dale and dale_acts or options.stable and stable_acts) and options.plausibility_bound != 100.0:
        out["plausibility_bound"] = options.plausibility_bound  # only where not the default: older hashes hold
    return out


def _patience_acts(lm: Mapping[str, Any]) -> bool:
    """Whether the LM fields ``lm`` (:func:`~neurosubset.solvers.options.lm_fields`) have a ``patience`` that can
    stop a trial before ``max_rounds`` (:attr:`LevenbergMarquardt.patience_acts`)."""
    return bool(lm.get("patience")) and lm["max_rounds"] > lm["patience"] + 1


def config_hash(config: Mapping[str, Any]) -> str:
    """The ``config_hash`` attr: the first 16 hex digits of the sha256 of ``config`` as key-sorted JSON."""
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]
