"""Memory a request needs, estimated before anything is allocated, and the guard that refuses what the machine lacks.

:func:`estimate_fit` counts the float64 arrays a fit holds at its peak (calibrated on the exact least-squares path:
LAPACK ``gelsd`` works on a copy of the batched Jacobian, so the peak is about twice the Jacobian;
``tests/test_sweeps_safety.py`` checks the estimate within 2x of the measured peak RSS at three sizes).
:func:`check_memory` raises :class:`~neurosubset.ParameterError` in one line when the estimate exceeds the memory
available now, saying the estimate and what to lower. :func:`chunk_trials` sizes the chunks of trials a fit
processes one after another so that memory stays bounded whatever the number of trials.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from ._checks import ParameterError

if TYPE_CHECKING:
    from .allocation import Allocation
    from .circuit import Circuit
    from .solvers import Solver

_F64 = 8
_JACOBIAN_COPIES = 2.0  # the Jacobian and LAPACK's working copy of it (measured: peak / Jacobian = 2.03-2.04)
_ACTIVITY_COPIES = 4.0  # forward states kept for the adjoint / autograd pass, and their gradients


def available_bytes() -> int:
    """Memory available to a new allocation now (``MemAvailable`` of /proc/meminfo; physical memory elsewhere)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:  # pragma: no cover - not Linux
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover
        return 1 << 62


def estimate_fit(circuit: Circuit, plastic: int, m: int, trials: int, *, problems_per_trial: int = 1,
                 certificate: bool = False) -> dict[str, int]:
    """Bytes of the largest arrays a fit of ``trials`` draws with ``m`` probes and ``plastic`` plastic synapses holds.

    Parameters
    ----------
    circuit : Circuit
    plastic : int
        ``M``, the allocation's plastic synapses.
    m, trials : int
    problems_per_trial : int
        Problems solved side by side per trial (1 for least squares; the LM's starts in flight).
    certificate : bool
        Also the certificate's Jacobian (outputs x every weight, one draw).

    Returns
    -------
    dict
        Term -> bytes: ``draws`` (teacher, student and fitted weights, probes), ``activity`` (forward states),
        ``jacobian`` (batched d outputs / d plastic, with the solver's working copy), ``certificate``, ``total``.
    """
    n_in = sum(r.size for r in circuit.regions if r.role == "input")
    n_out = sum(r.size for r in circuit.regions if r.role == "output")
    n_all = sum(r.size for r in circuit.regions)
    steps = int(getattr(circuit, "steps", 1) or 1)
    size = {r.name: r.size for r in circuit.regions}
    weights = sum(size[p.post] * size[p.pre] for p in circuit.projections)
    equations = m * n_out
    problems = trials * problems_per_trial
    terms = {
        "draws": _F64 * trials * (3 * weights + m * n_in * steps + 2 * equations),
        "activity": int(_F64 * _ACTIVITY_COPIES * problems * m * n_all * steps),
        "jacobian": int(_F64 * _JACOBIAN_COPIES * problems * equations * plastic),
        "certificate": int(_F64 * _JACOBIAN_COPIES * equations * weights) if certificate else 0,
    }
    terms["total"] = sum(terms.values())
    return terms


def check_memory(what: str, terms: dict[str, int], *, lower: str, available: int | None = None,
                 error: type[ValueError] = ParameterError) -> None:
    """Refuse (one line, :class:`ParameterError`) a request whose estimate exceeds the available memory.

    Parameters
    ----------
    what : str
        The request, as the message names it (``"match_probability(m=100000000, trials=200)"``).
    terms : dict
        :func:`estimate_fit`'s result (or any term -> bytes with a ``total``).
    lower : str
        What the caller can lower (``"'trials' or 'm'"``).
    available : int, optional
        Bytes available (default: :func:`available_bytes`).
    error : exception class
        What to raise (a :class:`~neurosubset.NeurosubsetError` subclass; ``CircuitSpecError`` for specs).
    """
    available = available_bytes() if available is None else available
    if terms["total"] <= available:
        return
    largest = max((k for k in terms if k != "total"), key=terms.__getitem__)
    raise error(f"{what} needs about {_gb(terms['total'])} of memory (estimate; the largest part is the "
                f"{largest}, {_gb(terms[largest])}), more than the {_gb(available)} available on this machine. "
                f"Lower {lower}.")


def _gb(n: int) -> str:
    if n >= 1e11:
        return f"{n / 1e9:,.0f} GB"
    return f"{n / 1e9:.3g} GB" if n >= 1e8 else f"{n / 1e6:.3g} MB"


def check_fit(circuit: Circuit, alloc: Allocation, m: int, trials: int, solver: Solver | None = None, *,
              what: str = "fit", certificate: bool = False) -> None:
    """Refuse (one line) a fit of ``trials`` draws with ``m`` probes on ``alloc`` that the machine cannot hold.

    ``solver``: a LevenbergMarquardt multiplies the Jacobian by its starts per round; least squares and ``Auto``
    (whose affine path is least squares) count one problem per trial.
    """
    restarts = _lm_restarts(solver)
    terms = estimate_fit(circuit, alloc.size, m, trials, problems_per_trial=restarts, certificate=certificate)
    check_memory(f"{what}(m={m}, trials={trials}, M={alloc.size})", terms, lower=_lower("'trials' or 'm'", restarts))


_LM = ("LevenbergMarquardt", "SteadyLifting")  # the solvers that run LM restarts side by side


def _lower(what: str, restarts: int) -> str:
    """What the refusal says to lower: the LM's ``restarts`` first where they multiply the problems."""
    if restarts <= 1:
        return what
    return f"'restarts' (the LM runs its {restarts:,} starts per trial side by side), {what}"


def _lm_restarts(solver: Any) -> int:
    """The starts per trial a solver runs side by side: a LevenbergMarquardt's ``restarts``, else 1."""
    return getattr(solver, "restarts", 1) if type(solver).__name__ in _LM else 1


_CHUNK_SHARE = 0.5  # of the memory available now, what one chunk of trials may take (the rest: results, others)
# and at most this much by default: batching more trials gains nothing measurable beyond a few hundred MB (the
# batched LAPACK calls loop over problems), while the machine's other users keep their memory
_CHUNK_BYTES = 2**30
_FACTOR_COPIES = 4.0  # steady circuits: I - W, its LU factors and the blocks they are built from, per problem


def per_trial_bytes(circuit: Circuit, plastic: int, m: int, solver: Solver | None = None) -> int:
    """Bytes one more trial adds to a fit's peak: :func:`estimate_fit` of one trial, plus (steady circuits) the
    dense ``I - W`` factorisations of its problems and, for the LM, the continued restarts beside the fresh ones."""
    lm = type(solver).__name__ in _LM
    problems = 2 * _lm_restarts(solver) if lm else 1  # fresh starts and the ones continued into a round
    terms = estimate_fit(circuit, plastic, m, 1, problems_per_trial=problems)
    total = terms["total"]
    n = circuit.dynamics.factor_size(circuit)  # e.g. steady: the dense I - W of every problem
    total += int(_F64 * _FACTOR_COPIES * problems * n * n)
    return int(total)


def chunk_trials(circuit: Circuit, alloc: Allocation, m: int, trials: int, solver: Solver | None = None, *,
                 chunk: int | None = None, max_memory: float | None = None, what: str = "fit",
                 available: int | None = None) -> int:
    """How many trials a fit processes at once: all of them when they fit, else chunks sized from memory.

    Parameters
    ----------
    circuit, alloc, m, trials, solver
        The request (``solver``: the LM's restarts multiply the problems per trial).
    chunk : int, optional
        An explicit chunk size (trials, >= 1); overrides the memory-based size.
    max_memory : float, optional
        Bytes one chunk may use (default: half the memory available now, at most 1 GiB).
    what : str
        The request as an error names it.
    available : int, optional
        Bytes available (default: :func:`available_bytes`).

    Returns
    -------
    int
        Trials per chunk, ``1 <= chunk <= trials``. Decisions do not depend on it (each trial's draws and restarts
        come from its own seeds).

    Raises
    ------
    ParameterError
        ``chunk`` or ``max_memory`` invalid, or a single trial needs more than the memory available.
    """
    from ._checks import check_int, check_real

    if chunk is not None:
        chunk = min(check_int("chunk", chunk, minimum=1), trials)  # the memory check below still applies
    available = available_bytes() if available is None else available
    one = per_trial_bytes(circuit, alloc.size, m, solver)
    restarts = _lm_restarts(solver)
    terms = estimate_fit(circuit, alloc.size, m, 1, problems_per_trial=restarts)
    if one > terms["total"]:  # the factorisations of I - W and the continued restarts: a term of their own
        terms["factorisations and continued restarts"] = one - terms["total"]
        terms["total"] = one
    check_memory(f"{what}(m={m}, trials={trials}, M={alloc.size}) with one trial at a time", terms,
                 lower=_lower("'m' (of 'trials' or 'm', only 'm' helps: trials are fitted in chunks) or the "
                              "circuit's size", restarts), available=available)
    if chunk is not None:
        return chunk
    budget = _CHUNK_SHARE * available
    if max_memory is None:
        budget = min(budget, _CHUNK_BYTES)
    else:
        budget = min(budget, check_real("max_memory", max_memory, low=0.0, low_open=True))
    return int(min(trials, max(1, budget // max(one, 1))))
