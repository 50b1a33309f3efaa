"""The fit of :func:`neurosubset.fit` / :func:`neurosubset.match_probability` in the sparse weights layout.

Same trials (the dense draws' numbers, :func:`~neurosubset.dynamics.sparse_map.draw_sparse_trials`), same restart
seeds, same decider chain restricted to the deciders that run on a sparse map (``Decider.sparse_ready``:
the certificate's rank deficit, least squares, the lifted decider on sparse rows, the LM), so the exact decisions
equal the dense layout's; memory is linear in synapses and trials (one value vector per draw, the LM's restarts
share their trial's). Trials run in chunks sized from memory as in the dense layout.

``stable=True`` (steady circuits): the draws are conditioned on stability and every match must be stable as in the
dense layout, with ``max Re(eig W)`` from :func:`~neurosubset.dynamics.sparse_map.sparse_max_real_eig` (ARPACK's
rightmost eigenvalues of each loop's sparse block above :data:`~neurosubset.dynamics.sparse_map.SPARSE_EIG_MIN`
neurons: an estimate to relative 1e-8, not a Lyapunov certificate; a stable witness is a witness, not a
Lyapunov-certified one). One eigen-solve per draw, per LM match asked about and per fitted student.

Not in the sparse layout (refused in one line): ``return_weights`` (dense per-trial matrices) and a GPU ``device``
(the sparse solves run on the CPU).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ._checks import ParameterError
from ._memory import available_bytes, check_memory
from .dynamics.sparse_map import (SparseDiscrete, SparsePlasticMap, SparseSteady, draw_sparse_trials,
                                  plastic_value_positions, sparse_is_affine, sparse_max_real_eig, sparse_system,
                                  structure_of, synapse_sd)
from .dynamics.stability import loops, stability_applies

_F64 = 8


def sparse_per_trial_bytes(n_values: int, n_equations: int, plastic: int, problems: int) -> int:
    """Bytes one more trial adds to a sparse fit: teacher and student value vectors and a working copy, its
    problems' Jacobians (``(E, M)`` each, with the LM's copy) and the solver's vectors."""
    return int(_F64 * (3 * n_values + 3 * problems * n_equations * plastic))


def check_sparse_request(circuit, options, *, return_weights: bool = False, caller: str = "match_probability"
                         ) -> None:
    """Refuse (one line) what the sparse layout does not run."""
    if return_weights:
        raise ParameterError(f"The 'return_weights' parameter of {caller} must be False in the sparse weights "
                             f"layout (circuit {circuit.name!r}): per-trial dense matrices are what it avoids. Got "
                             f"True instead.")
    if torch.device(options.device).type != "cpu":
        raise ParameterError(f"The 'device' parameter of {caller} must be 'cpu' in the sparse weights layout (the "
                             f"sparse solves run on the CPU). Got {options.device!r} instead.")


def check_kept_weights(plan: SparseFit, trials: int) -> None:
    """Refuse (one line) a :func:`neurosubset.fit` whose returned weights would not fit in memory: teacher, student
    draw and fitted student, ``S`` values each, and the probes, per trial."""
    one = _F64 * (3 * plan.system.n_values + int(np.prod(plan.circuit.probe_shape(plan.m))))
    check_memory(f"fit(m={plan.m}, trials={trials}) in the sparse layout, returning every trial's weights",
                 {"returned weights": one * trials, "total": one * trials},
                 lower="'trials' (or call match_probability, which keeps no weights)")


@dataclass
class SparseFit:
    """What a sparse fit shares across its chunks of trials (built once by :func:`sparse_setup`)."""

    circuit: Any
    alloc: Any
    m: int
    structure: dict
    sd: dict
    system: SparseSteady | SparseDiscrete
    sigma: np.ndarray
    chain: tuple
    affine: bool
    signed: bool
    zero: bool
    bounds: Any
    signs: Any
    size: int
    found: tuple = ()  # the circuit's loops where stability is required (steady circuits, stable=True), else ()

    def run_chunk(self, first: int, n: int, seed: int, *, tol: float, progress: bool, plausibility_bound: float):
        """Draw trials ``first .. first + n - 1`` and run the chain on them: ``(ChainResult, SparseTrials)``."""
        from .solvers.chain import Batch, Problem, run_chain

        draws = draw_sparse_trials(self.circuit, self.structure, self.m, n, seed, first=first, sd=self.sd,
                                   stable=bool(self.found))
        probes = torch.as_tensor(draws.probes, dtype=torch.float64)
        fmap = SparsePlasticMap(self.circuit, self.alloc, self.system, draws.student_init, probes)
        targets = torch.as_tensor(np.stack([self.system.solve(draws.teacher[p], draws.probes[p])[0]
                                            for p in range(n)]), dtype=torch.float64)
        own = torch.as_tensor(draws.student_init[:, self.system.plastic], dtype=torch.float64)
        problem = Problem(self.circuit, self.alloc, self.m, n, affine=self.affine, signed=self.signed, zero=self.zero)
        batch = Batch(problem, fmap, lambda: fmap, targets, own, self.alloc, self.sigma, self.bounds,
                      self.admissible if self.found else None, tol, seed, first, device=torch.device("cpu"),
                      progress=progress, plausibility_bound=plausibility_bound)
        return run_chain(self.chain, batch), draws

    def max_real_eig(self, values: np.ndarray) -> np.ndarray:
        """``(problem,)`` ``max Re(eig W)`` of value vectors ``(problem, S)`` (:func:`sparse_max_real_eig`)."""
        return np.array([sparse_max_real_eig(self.circuit, self.structure, v, self.found) for v in values])

    def admissible(self, fmap: SparsePlasticMap, theta: torch.Tensor) -> np.ndarray:
        """The stability requirement as the deciders ask it: ``(problem,)`` bool, ``max Re(eig W) < 1``."""
        return self.max_real_eig(fmap.values(theta)) < 1.0


def sparse_setup(circuit, alloc, m: int, trials: int, *, options, cert) -> SparseFit:
    """The request checked (one line) and the shared parts of a sparse fit: structure, system, the chain of the
    sparse-ready deciders, the chunk size from a sparse memory estimate."""
    from .solvers.bounded import sign_bounds
    from .solvers.chain import Problem, decider_chain, resolve

    check_sparse_request(circuit, options, caller="fit")
    structure = structure_of(circuit)
    sd = synapse_sd(circuit, structure)
    positions = plastic_value_positions(circuit, structure, alloc)
    sigma = np.concatenate([sd[k] for k in circuit.weight_names])[positions]
    system = sparse_system(circuit, structure, positions)
    signs = sign_bounds(circuit, alloc)
    signed = options.dale and signs.active
    affine = sparse_is_affine(circuit, alloc)
    zero = cert is not None and cert.verdict == "zero"
    chain = tuple(d for d in decider_chain(options.solver, dale=options.dale) if getattr(d, "sparse_ready", False))
    recorded = resolve(chain, Problem(circuit, alloc, m, trials, affine=affine, signed=signed, zero=zero))
    problems = 2 * int(getattr(recorded, "restarts", 1) or 1)
    one = sparse_per_trial_bytes(system.n_values, m * circuit.n_out, alloc.size, problems)
    available = available_bytes()
    check_memory(f"fit(m={m}, trials={trials}, M={alloc.size}) in the sparse layout with one trial at a time",
                 {"trial": one, "total": one}, lower="'m' or the allocation's size", available=available)
    size = options.chunk or int(min(trials, max(1, min(0.5 * available, options.max_memory or 2**30) // one)))
    found = loops(circuit) if options.stable and stability_applies(circuit) else ()
    return SparseFit(circuit, alloc, m, structure, sd, system, sigma, chain, affine, signed, zero,
                     signs if signed else None, signs, min(size, trials), found)
