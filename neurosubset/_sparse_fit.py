"""The fit of :func:`neurosubset.fit` / :func:`neurosubset.match_probability` in the sparse weights layout.

Same trials (the dense draws' numbers, :func:`~neurosubset.dynamics.sparse_map.draw_sparse_trials`), same restart
seeds, same decider chain restricted to the deciders that run on a sparse map (``Decider.sparse_ready``:
the certificate's rank deficit, least squares, the lifted decider on sparse rows, the LM), so the exact decisions
equal the dense layout's; memory is linear in synapses and trials (one value vector per draw, the LM's restarts
share their trial's). Trials run in chunks sized from memory as in the dense layout.

Not in the sparse layout (refused in one line): ``stable=True`` (the students' stability would need a sparse
eigen-solve per LM match and per draw), ``return_weights`` (dense per-trial matrices) and a GPU ``device`` (the
sparse solves run on the CPU).
"""
from __future__ import annotations

import numpy as np
import torch

from . import _schema
from ._checks import ParameterError
from ._memory import available_bytes, check_memory
from ._schema import UNDECIDED
from .dynamics.sparse_map import (SparsePlasticMap, SparseSteady, draw_sparse_trials, plastic_value_positions,
                                  sparse_is_affine, structure_of, synapse_sd)
from .dynamics.stability import stability_applies

_F64 = 8


def sparse_per_trial_bytes(n_values: int, n_equations: int, plastic: int, problems: int) -> int:
    """Bytes one more trial adds to a sparse fit: teacher and student value vectors and a working copy, its
    problems' Jacobians (``(E, M)`` each, with the LM's copy) and the solver's vectors."""
    return int(_F64 * (3 * n_values + 3 * problems * n_equations * plastic))


def check_sparse_request(circuit, options, *, return_weights: bool = False, caller: str = "match_probability"
                         ) -> None:
    """Refuse (one line) what the sparse layout does not run."""
    if options.stable and stability_applies(circuit):
        raise ParameterError(f"The 'stable' parameter of {caller} must be False in the sparse weights layout "
                             f"(circuit {circuit.name!r}, weights_layout 'sparse'): the students' stability would "
                             f"need a sparse eigen-solve per draw and per match. Got True instead.")
    if return_weights:
        raise ParameterError(f"The 'return_weights' parameter of {caller} must be False in the sparse weights "
                             f"layout (circuit {circuit.name!r}): per-trial dense matrices are what it avoids. Got "
                             f"True instead.")
    if torch.device(options.device).type != "cpu":
        raise ParameterError(f"The 'device' parameter of {caller} must be 'cpu' in the sparse weights layout (the "
                             f"sparse solves run on the CPU). Got {options.device!r} instead.")


def fit_trials_sparse(circuit, alloc, m: int, trials: int, seed: int, *, options, progress: bool, cert,
                      resume=None):
    """:func:`neurosubset.benchmark._fit_trials` in the sparse layout: a :class:`~neurosubset.benchmark.FitResult`
    without weight matrices (``student`` empty, ``trials`` without draws; ``max_real_eig`` None)."""
    from .benchmark import FitResult, _concat, _evidence, _Interrupted, _with_solver
    from .draws import Trials
    from .solvers.bounded import sign_bounds
    from .solvers.chain import Batch, Problem, decider_chain, resolve, run_chain
    from .dynamics import torch_threads

    check_sparse_request(circuit, options, caller="fit")
    solver, tol, dale = options.solver, options.tol, options.dale
    structure = structure_of(circuit)
    sd = synapse_sd(circuit, structure)
    positions = plastic_value_positions(circuit, structure, alloc)
    sigma = np.concatenate([sd[k] for k in circuit.weight_names])[positions]
    system = SparseSteady(circuit, structure, positions)
    signed = dale and sign_bounds(circuit, alloc).active
    affine = sparse_is_affine(circuit, alloc)
    zero = cert is not None and cert.verdict == "zero"
    chain = tuple(d for d in decider_chain(solver, dale=dale) if getattr(d, "sparse_ready", False))
    problem = Problem(circuit, alloc, m, trials, affine=affine, signed=signed, zero=zero)
    recorded = resolve(chain, problem)
    problems = 2 * int(getattr(recorded, "restarts", 1) or 1)
    one = sparse_per_trial_bytes(system.n_values, m * circuit.n_out, alloc.size, problems)
    available = available_bytes()
    check_memory(f"fit(m={m}, trials={trials}, M={alloc.size}) in the sparse layout with one trial at a time",
                 {"trial": one, "total": one}, lower="'m' or the allocation's size", available=available)
    size = options.chunk or int(min(trials, max(1, min(0.5 * available, options.max_memory or 2**30) // one)))
    signs = sign_bounds(circuit, alloc)
    bounds = signs if dale and signs.active else None
    parts = [] if resume is None else [resume]
    with torch_threads(options.threads):
        try:
            for first in range(0 if resume is None else resume.matched.size, trials, size):
                n = min(size, trials - first)
                draws = draw_sparse_trials(circuit, structure, m, n, seed, first=first, sd=sd)
                probes = torch.as_tensor(draws.probes, dtype=torch.float64)
                fmap = SparsePlasticMap(circuit, alloc, system, draws.student_init, probes)
                targets = torch.as_tensor(np.stack([system.solve(draws.teacher[p], draws.probes[p])[0]
                                                    for p in range(n)]), dtype=torch.float64)
                own = torch.as_tensor(draws.student_init[:, positions], dtype=torch.float64)
                batch = Batch(Problem(circuit, alloc, m, n, affine=affine, signed=signed, zero=zero), fmap,
                              lambda fmap=fmap: fmap, targets, own, alloc, sigma, bounds, None, tol, seed, first,
                              device=torch.device("cpu"), progress=progress,
                              plausibility_bound=options.plausibility_bound)
                out = run_chain(chain, batch)
                parts.append(_result(circuit, out, draws, sigma, tol, dale, options.stable, zero, bounds, signs,
                                     FitResult, Trials, _evidence))
        except KeyboardInterrupt:
            if not parts:
                raise
            raise _Interrupted(parts[0] if len(parts) == 1 else _concat(_with_solver(parts))) from None
    return parts[0] if len(parts) == 1 else _concat(_with_solver(parts))


def _result(circuit, out, draws, sigma, tol, dale, stable, zero, bounds, signs, FitResult, Trials, _evidence):
    """One chunk's :class:`FitResult` (the dense ``_fit``'s bookkeeping, without weights or stability)."""
    theta, status, decision, outcome = out.theta, out.status, out.decision, out.outcome
    resid_np = out.residual.cpu().numpy()
    matched = (resid_np < tol) & (not zero)
    history = out.history if out.from_rounds else [float(matched.mean())] * len(out.history)
    exact = bool(((outcome != UNDECIDED) & (decision != _schema.LM_DECISION)).all())
    theta_np = theta.cpu().numpy()
    proof_kind = witness_scale = None
    if bounds is not None:
        proof_kind, witness_scale = _evidence(circuit, {}, theta_np, sigma, decision, outcome, False)
    n = matched.size
    light = Trials({}, {}, np.zeros((n, 0)), draws.teacher_rejected, draws.student_rejected)
    return FitResult(light, {}, theta_np, resid_np, matched, out.restarts, np.array(history), out.solver.name, tol,
                     status, out.solver, dale=dale, stable=stable, exact=exact, max_real_eig=None,
                     sign_violations=signs.violations(theta_np) if signs.active else None,
                     decision=decision.astype(np.int8), outcome=outcome.astype(np.int8), proof_kind=proof_kind,
                     witness_scale=witness_scale)
