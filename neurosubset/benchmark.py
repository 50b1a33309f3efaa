"""The teacher-student benchmark: draw teachers, students and probes; fit the plastic synapses; estimate MP.

For each trial ``i`` (its own ``numpy.random.SeedSequence(seed, spawn_key=(i, 0))``):

1. teacher weights ``W*`` from the circuit's initial distribution;
2. the student's weights ``W0`` drawn independently from the same distribution; the entries outside the
   allocation are frozen at these values;
3. ``m`` probes with iid N(0, 1) entries (sequences of ``steps`` inputs for discrete dynamics);
4. the plastic values ``theta`` are fitted so that the student ``W0[frozen] + scatter(theta)`` reproduces the
   teacher's outputs on all probes. The trial is *matched* if the relative residual
   ``||y_student - y_teacher|| / ||y_teacher||`` falls below ``tol`` (default 1e-8; see :data:`DEFAULT_TOL`).

``MP(A, m)`` is the fraction of matched trials, reported with a 95% Wilson score interval.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import metadata
from statistics import NormalDist

import numpy as np
import torch
import xarray as xr

from ._checks import check_choice, check_int, check_real
from .allocation import Allocation
from .circuit import Circuit
from .dynamics import DTYPE, PlasticMap, forward, is_affine, torch_threads
from .solvers import LMResult, levenberg_marquardt, relative_residual, solve_affine
from .theory import certify

# Matched residuals sit at rounding level (~1e-13 .. 1e-15 relative) and unmatched ones at >= 1e-3 in the linear
# cases measured (tests/test_benchmark.py checks the gap); 1e-8 sits in the middle of that gap on a log scale.
DEFAULT_TOL = 1e-8
SOLVERS = ("auto", "lstsq", "lm")


def version() -> str:
    """The installed neurosubset version."""
    try:
        return metadata.version("neurosubset")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0+unknown"


def wilson_interval(matched: int, trials: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion.

    Parameters
    ----------
    matched, trials : int
        Successes and trials (``trials >= 1``).
    confidence : float
        Two-sided confidence level.

    Returns
    -------
    (low, high) : tuple of float
    """
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p = matched / trials
    denom = 1 + z**2 / trials
    centre = (p + z**2 / (2 * trials)) / denom
    half = z * np.sqrt(p * (1 - p) / trials + z**2 / (4 * trials**2)) / denom
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def var_name(weight: str) -> str:
    """A netCDF-safe variable stem for a weight name: ``"CA3->CA1"`` -> ``"CA3_to_CA1"``."""
    return re.sub(r"[^0-9A-Za-z_]", "_", weight.replace("->", "_to_"))


@dataclass(frozen=True)
class Trials:
    """The random draws of a batch of trials (numpy, float64).

    Attributes
    ----------
    teacher, student_init : dict
        Weight name -> ``(trial, n_post, n_pre)``: the teacher and the student's own draw (the frozen values).
    probes : numpy.ndarray
        ``(trial, m, n_in)`` or ``(trial, m, steps, n_in)``.
    """

    teacher: dict[str, np.ndarray]
    student_init: dict[str, np.ndarray]
    probes: np.ndarray


def draw_trials(circuit: Circuit, m: int, trials: int, seed: int, *, first: int = 0) -> Trials:
    """Draw teachers, student initial weights and probes for trials ``first .. first + trials - 1``.

    Trial ``i`` depends only on ``(seed, i)``: teacher and student do not depend on ``m`` either.
    """
    teachers, students, probes = [], [], []
    for i in range(first, first + trials):
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(i, 0)))
        teachers.append(circuit.sample_weights(rng))
        students.append(circuit.sample_weights(rng))
        probes.append(circuit.sample_probes(m, rng))
    stack = (lambda ds: {k: np.stack([d[k] for d in ds]) for k in circuit.weight_names})
    return Trials(stack(teachers), stack(students), np.stack(probes))


def check_solver_options(tol: float, solver: str, restarts: int, max_rounds: int, steps: int
                         ) -> tuple[float, str, int, int, int]:
    """Validate the fitting options shared by :func:`fit` and :func:`neurosubset.sweep`; return them normalised."""
    tol = check_real("tol", tol, low=0.0, low_open=True)
    check_choice("solver", solver, SOLVERS)
    restarts = check_int("restarts", restarts, minimum=1)
    max_rounds = check_int("max_rounds", max_rounds, minimum=1)
    steps = check_int("steps", steps, minimum=1)
    return tol, solver, restarts, max_rounds, steps


@dataclass(frozen=True)
class FitResult:
    """Fitted students of a batch of trials.

    Attributes
    ----------
    trials : Trials
        The draws.
    student : dict
        Weight name -> ``(trial, n_post, n_pre)``: fitted student weights (frozen entries equal ``student_init``
        bit for bit; plastic entries hold ``theta``).
    theta : numpy.ndarray
        ``(trial, M)`` best plastic values found (the allocation's entries in weight order, row-major).
    residual : numpy.ndarray
        ``(trial,)`` best relative residual.
    matched : numpy.ndarray
        ``(trial,)`` bool, ``residual < tol``.
    restarts : numpy.ndarray
        ``(trial,)`` restarts (fresh random starts) used; 0 for the exact affine solve. Restarts continued from one
        round into the next are counted once.
    mp_by_round : numpy.ndarray
        ``(round,)`` fraction matched after each restart round (one entry for the affine solve).
    solver : str
        ``"lstsq"`` (exact, affine case) or ``"lm"``.
    """

    trials: Trials
    student: dict[str, np.ndarray]
    theta: np.ndarray
    residual: np.ndarray
    matched: np.ndarray
    restarts: np.ndarray
    mp_by_round: np.ndarray
    solver: str
    tol: float


def fit(circuit: Circuit, alloc: Allocation, m: int, trials: int = 200, seed: int = 0, *,
        tol: float = DEFAULT_TOL, solver: str = "auto", restarts: int = 4, max_rounds: int = 8,
        steps: int = 400, widen: float = 4.0, threads: int | None = 1, progress: bool = False) -> FitResult:
    """Draw ``trials`` teacher/student pairs and fit every student's plastic synapses, all trials in one batch.

    Parameters
    ----------
    circuit : Circuit
    alloc : Allocation
    m : int
        Number of probes (>= 1).
    trials : int
        Number of independent teacher/student/probe draws.
    seed : int
        Trial ``i`` uses ``SeedSequence(seed, spawn_key=(i, 0))``; restarts ``(i, 1, round)``.
    tol : float
        Match tolerance on the relative residual.
    solver : {"auto", "lstsq", "lm"}
        ``"auto"`` uses exact least squares when the outputs are affine in the plastic weights
        (:func:`neurosubset.dynamics.is_affine`) and Levenberg-Marquardt otherwise.
    restarts : int
        Random starts per trial in each round (LM only).
    max_rounds : int
        Cap on restart rounds. Every still-unmatched trial gets a new round until it matches or reaches the cap;
        restart ``j`` of round ``r`` starts from ``N(0, (widen^(r j / (restarts - 1)) sigma)^2)`` with ``sigma``
        the init std (one start per round at the init scale, the others log-evenly out to ``widen^r`` SDs, since
        solutions can lie far from the init), and runs up to ``steps * 2^min(r, 3)`` iterations (hard trials
        need long trajectories: on the linear-RNN benchmark the last three took 490-1,120 iterations).
        Restarts that reach a round's iteration cap while still descending are not thrown away: the ``restarts``
        best of them (lowest residual) continue in the trial's next round, beside its fresh starts, with their
        damping state.
    steps : int
        LM iterations in the first round (doubling each round, at most 8x).
    widen : float
        Growth factor of the start scale per round.
    threads : int or None
        torch intra-op threads while fitting (restored afterwards; ``None`` keeps torch's setting). One thread is
        as fast on an idle machine and many times faster on a loaded one (see
        :func:`neurosubset.dynamics.torch_threads`).
    progress : bool
        Show a progress bar over rounds.

    Returns
    -------
    FitResult
    """
    m = check_int("m", m, minimum=1)
    trials = check_int("trials", trials, minimum=1)
    seed = check_int("seed", seed, minimum=0)
    tol, solver, restarts, max_rounds, steps = check_solver_options(tol, solver, restarts, max_rounds, steps)
    if set(alloc.masks) != set(circuit.weight_names):
        raise ValueError(f"The allocation does not belong to circuit {circuit.name!r}: its weights are "
                         f"{sorted(alloc.masks)}, the circuit's {list(circuit.weight_names)}.")
    draws = draw_trials(circuit, m, trials, seed)
    with torch_threads(threads):
        return _fit(circuit, alloc, draws, m=m, seed=seed, tol=tol, solver=solver, restarts=restarts,
                    max_rounds=max_rounds, steps=steps, widen=widen, progress=progress)


def _fit(circuit, alloc, draws, *, m, seed, tol, solver, restarts, max_rounds, steps, widen, progress):
    trials = draws.probes.shape[0]
    to_t = (lambda a: torch.as_tensor(a, dtype=DTYPE))
    fmap = PlasticMap(circuit, alloc, {k: to_t(v) for k, v in draws.student_init.items()}, to_t(draws.probes))
    teacher = {k: to_t(v) for k, v in draws.teacher.items()}
    targets = forward(circuit, teacher, fmap.probes).flatten(-2)
    if solver == "auto":
        solver = "lstsq" if is_affine(circuit, alloc, seed=seed) else "lm"
    n_rest = np.zeros(trials, dtype=np.int64)
    if solver == "lstsq" or alloc.size == 0:
        solver = "lstsq"
        theta = solve_affine(fmap, targets)
        resid = relative_residual(fmap(theta), targets)
        history = [float((resid < tol).double().mean())]
    else:
        theta, resid, n_rest, history = _fit_lm(circuit, alloc, fmap, targets, seed, tol, restarts, max_rounds,
                                                steps, widen, progress)
    student = {k: v.numpy() for k, v in fmap.weights(theta).items()}
    resid_np = resid.numpy()
    return FitResult(draws, student, theta.numpy(), resid_np, resid_np < tol, n_rest, np.array(history),
                     solver, tol)


_MAX_DOUBLINGS = 3  # round r runs steps * 2**min(r, 3) iterations


def _ladder(rnd: int, restarts: int, widen: float) -> np.ndarray:
    """Start scales (in init SDs) of the restarts of round ``rnd``, shape ``(restarts, 1)``.

    Restart ``j`` starts at ``widen^(rnd * j / (restarts - 1))``: every round keeps one start at the init scale
    and spreads the others log-evenly out to ``widen^rnd``.
    """
    if restarts == 1:
        return np.full((1, 1), widen**rnd)
    return widen ** (rnd * np.linspace(0.0, 1.0, restarts))[:, None]


def _fit_lm(circuit, alloc, fmap, targets, seed, tol, restarts, max_rounds, steps, widen, progress):
    trials, size = targets.shape[0], alloc.size
    sigma = np.concatenate([np.full(alloc.counts[k], circuit.init_std[k]) for k in circuit.weight_names])
    best_theta = targets.new_zeros((trials, size))
    best = torch.full((trials,), torch.inf, dtype=DTYPE)
    n_rest = np.zeros(trials, dtype=np.int64)
    history = []
    # restarts that hit their round's iteration cap while still descending, continued in the next round
    carry = _Carry.empty(size)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=max_rounds, desc="restart rounds", unit="round", leave=False)
    for rnd in range(max_rounds):
        todo = torch.nonzero(~(best < tol)).flatten()
        if todo.numel() == 0:
            history.extend([history[-1]] * (max_rounds - rnd))
            break
        ladder = _ladder(rnd, restarts, widen)
        starts = np.concatenate([
            np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(int(i), 1, rnd))).standard_normal(
                (restarts, size)) * sigma * ladder for i in todo])
        fresh = starts.shape[0]
        owner = torch.cat([todo.repeat_interleave(restarts), carry.owner])
        theta0 = torch.cat([torch.as_tensor(starts, dtype=DTYPE), carry.theta])
        mu0 = torch.cat([torch.full((fresh,), 1e-3, dtype=DTYPE), carry.mu])
        nu0 = torch.cat([torch.full((fresh,), 2.0, dtype=DTYPE), carry.nu])
        # no autograd bookkeeping where the Jacobian is the closed form (~20% faster on small batches)
        with torch.inference_mode() if fmap.closed_form else contextlib.nullcontext():
            res = levenberg_marquardt(fmap, owner, targets[owner], theta0,
                                      steps=steps * 2 ** min(rnd, _MAX_DOUBLINGS), stop=tol * 1e-3, mu0=mu0, nu0=nu0)
        n_rest[todo.numpy()] += restarts
        # best problem of each trial (lowest residual; ties -> the lowest index: fresh restarts in order, then
        # the continued ones)
        resid = res.residual.nan_to_num(torch.inf)
        low = torch.full((trials,), torch.inf, dtype=DTYPE).scatter_reduce(0, owner, resid, reduce="amin")
        index = torch.arange(owner.numel())
        at_low = resid == low[owner]
        first = torch.full((trials,), owner.numel()).scatter_reduce(0, owner[at_low], index[at_low], reduce="amin")
        better = low[todo] < best[todo]
        rows = todo[better]
        best[rows] = low[rows]
        best_theta[rows] = res.theta[first[rows]]
        history.append(float((best < tol).double().mean()))
        carry = _Carry.keep(res, owner, best >= tol, restarts)  # only trials still open go on
        if bar is not None:
            bar.update(1)
            bar.set_postfix(matched=f"{history[-1]:.3f}")
    if bar is not None:
        bar.close()
    # the reported residual is recomputed from the assembled weights, not taken from the solver
    resid = relative_residual(fmap(best_theta), targets)
    return best_theta, resid, n_rest, history


@dataclass(frozen=True)
class _Carry:
    """LM problems continued from one restart round into the next: state ``(problem, ...)`` and owning trial."""

    owner: torch.Tensor
    theta: torch.Tensor
    mu: torch.Tensor
    nu: torch.Tensor

    @classmethod
    def empty(cls, size: int) -> _Carry:
        return cls(torch.zeros(0, dtype=torch.long), torch.zeros((0, size), dtype=DTYPE),
                   torch.zeros(0, dtype=DTYPE), torch.zeros(0, dtype=DTYPE))

    @classmethod
    def keep(cls, res: LMResult, owner: torch.Tensor, open_trial: torch.Tensor, most: int) -> _Carry:
        """The capped problems of still-unmatched trials, at most ``most`` per trial (the lowest residuals)."""
        cand = torch.nonzero(res.capped & open_trial[owner]).flatten()
        if cand.numel():
            # order by trial, then residual (stable), and keep the first `most` of each trial
            cand = cand[torch.argsort(res.residual[cand], stable=True)]
            cand = cand[torch.argsort(owner[cand], stable=True)]
            own = owner[cand]
            start = torch.searchsorted(own, own, side="left")
            cand = cand[torch.arange(own.numel()) - start < most]
        return cls(owner[cand], res.theta[cand], res.mu[cand], res.nu[cand])


def match_probability(circuit: Circuit, alloc: Allocation, m: int, trials: int = 200, seed: int = 0, *,
                      tol: float = DEFAULT_TOL, solver: str = "auto", restarts: int = 4, max_rounds: int = 8,
                      steps: int = 400, return_weights: bool = False, progress: bool = False,
                      certificate: bool = True, threads: int | None = 1) -> xr.Dataset:
    """Estimate ``MP(A, m)``: the probability that the student can match the teacher on ``m`` random probes.

    Parameters
    ----------
    circuit : Circuit
    alloc : Allocation
    m : int
        Number of probes.
    trials : int
        Number of teacher/student/probe draws.
    seed : int
        Base seed; the same seed gives an identical Dataset and trial ``i`` does not depend on ``trials``.
    tol, solver, restarts, max_rounds, steps, progress, threads
        See :func:`fit`.
    return_weights : bool
        Also store teacher, initial and fitted student weights, probes and ``theta`` per trial.
    certificate : bool
        Also compute :func:`neurosubset.theory.certify` with the same ``m`` and ``seed`` (no fitting) and store
        ``plastic_rank`` and ``full_rank`` as variables and every certificate field as a ``certificate_*`` attr
        (``certificate_verdict`` is "zero", "one", "positive" or "unproven"; ``certificate_affine`` is 0/1).

    Returns
    -------
    xarray.Dataset
        ``matched (trial)`` bool, ``residual (trial)`` relative residual, ``restarts (trial)``,
        ``mp``, ``mp_low``, ``mp_high`` (95% Wilson interval), ``mp_first_round`` and ``mp_by_round (round)``,
        one ``mask_<weight>`` per weight; attrs hold the configuration (circuit spec as TOML, allocation,
        solver, tolerance, versions, a config hash).

    Examples
    --------
    >>> ff = feedforward([8, 6, 3])                                          # doctest: +SKIP
    >>> ds = match_probability(ff, allocate(ff, 18, within=["W2"]), m=4)      # doctest: +SKIP
    >>> float(ds.mp)                                                         # doctest: +SKIP
    """
    res = fit(circuit, alloc, m, trials, seed, tol=tol, solver=solver, restarts=restarts, max_rounds=max_rounds,
              steps=steps, progress=progress, threads=threads)
    ds = fit_dataset(circuit, alloc, res, m=m, seed=seed, restarts=restarts, max_rounds=max_rounds, steps=steps,
                     return_weights=return_weights)
    if certificate:
        with torch_threads(threads):
            cert = certify(circuit, alloc, m=m, seed=seed)
        ds["plastic_rank"] = ((), np.int64(cert.plastic_rank),
                              {"long_name": "generic rank of d(outputs)/d(plastic weights)", "units": "1"})
        ds["full_rank"] = ((), np.int64(cert.full_rank),
                           {"long_name": "generic rank of d(outputs)/d(all weights): dim of teacher outputs",
                            "units": "1"})
        ds.attrs.update(cert.to_attrs())
    return ds


def fit_dataset(circuit: Circuit, alloc: Allocation, res: FitResult, *, m: int, seed: int, restarts: int,
                max_rounds: int, steps: int, return_weights: bool = False) -> xr.Dataset:
    """Package a :class:`FitResult` as the Dataset :func:`match_probability` returns."""
    trials = res.matched.size
    k = int(res.matched.sum())
    low, high = wilson_interval(k, trials)
    data = {
        "matched": ("trial", res.matched, {"long_name": "student matches teacher on all probes", "units": "1"}),
        "residual": ("trial", res.residual, {"long_name": "relative residual ||y_s - y_t|| / ||y_t||", "units": "1",
                                             "tolerance": res.tol}),
        "restarts": ("trial", res.restarts, {"long_name": "random restarts used", "units": "1"}),
        "mp": ((), k / trials, {"long_name": "match probability", "units": "1"}),
        "mp_low": ((), low, {"long_name": "match probability, 95% Wilson lower bound", "units": "1"}),
        "mp_high": ((), high, {"long_name": "match probability, 95% Wilson upper bound", "units": "1"}),
        "mp_first_round": ((), float(res.mp_by_round[0]),
                           {"long_name": "match probability after the first restart round", "units": "1"}),
        "mp_by_round": ("round", res.mp_by_round, {"long_name": "match probability after each round", "units": "1"}),
    }
    for name, mask in alloc.masks.items():
        stem = var_name(name)
        data[f"mask_{stem}"] = ((f"{stem}_post", f"{stem}_pre"), mask,
                                {"long_name": f"plastic synapses of {name}", "weight": name, "units": "1"})
    if return_weights:
        for name in circuit.weight_names:
            stem = var_name(name)
            dims = ("trial", f"{stem}_post", f"{stem}_pre")
            data[f"teacher_{stem}"] = (dims, res.trials.teacher[name], {"long_name": f"teacher {name}", "weight": name})
            data[f"student_init_{stem}"] = (dims, res.trials.student_init[name],
                                            {"long_name": f"student {name} before fitting", "weight": name})
            data[f"student_{stem}"] = (dims, res.student[name], {"long_name": f"fitted student {name}", "weight": name})
        probe_dims = ("trial", "probe", "step", "input") if res.trials.probes.ndim == 4 else ("trial", "probe", "input")
        data["probes"] = (probe_dims, res.trials.probes, {"long_name": "probe inputs", "units": "1"})
        data["theta"] = (("trial", "synapse"), res.theta, {"long_name": "fitted plastic values", "units": "1"})
    last_gain = float(res.mp_by_round[-1] - res.mp_by_round[-2]) if res.mp_by_round.size > 1 else 0.0
    config = {
        "circuit": circuit.to_toml(),
        "circuit_name": circuit.name,
        "allocation_strategy": alloc.strategy,
        "allocation_hash": alloc.hash,
        "allocation_size": alloc.size,
        "allocation_counts": json.dumps(alloc.counts),
        "m": m,
        "trials": trials,
        "seed": seed,
        "solver": res.solver,
        "tolerance": res.tol,
        "restarts_per_round": restarts if res.solver == "lm" else 0,
        "max_rounds": max_rounds if res.solver == "lm" else 0,
        "lm_steps": steps if res.solver == "lm" else 0,
    }
    attrs = {**config,
             "config_hash": hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16],
             "last_round_gain": last_gain,
             "neurosubset_version": version(),
             "torch_version": str(torch.__version__),
             "numpy_version": str(np.__version__),
             "xarray_version": str(xr.__version__)}
    coords = {"trial": np.arange(trials), "round": np.arange(res.mp_by_round.size), "m": m}
    return xr.Dataset(data, coords=coords, attrs=attrs)


def student_weights(ds: xr.Dataset) -> dict[str, np.ndarray]:
    """The fitted student weights stored by ``match_probability(..., return_weights=True)``.

    Returns
    -------
    dict
        Weight name -> ``(trial, n_post, n_pre)``.
    """
    return _weights(ds, "student_")


def teacher_weights(ds: xr.Dataset) -> dict[str, np.ndarray]:
    """The teacher weights stored by ``match_probability(..., return_weights=True)``."""
    return _weights(ds, "teacher_")


def _weights(ds: xr.Dataset, prefix: str) -> dict[str, np.ndarray]:
    out = {}
    for name, var in ds.data_vars.items():
        name = str(name)
        if prefix == "student_" and name.startswith("student_init_"):
            continue
        if name.startswith(prefix) and "weight" in var.attrs:
            out[var.attrs["weight"]] = var.values
    if not out:
        raise KeyError(f"The Dataset has no {prefix}* variables; call match_probability(..., return_weights=True).")
    return out
