"""Which synapses could have changed to produce a recording? Fit candidate sets of plastic synapses to responses.

Given a circuit's weights before learning ``W0``, probes ``X`` and responses ``R`` recorded after learning (any
regions, hidden or output), a candidate set ``A`` of synapses explains the recording if values ``theta_A`` exist
with ``rates(W0 outside A, theta_A on A; X) = R`` (noise-free), or with a chi-square consistent with the noise.

- :func:`fit_responses` fits one candidate (an :class:`~neurosubset.allocation.Allocation`);
  :func:`localize` fits many, all in one batch (one problem per candidate, as the benchmark batches trials), and
  ranks them by how well they predict held-out probes.
- Solvers (``solver=Auto()``): where a candidate's responses are affine in its values (checked exactly, as
  :func:`neurosubset.dynamics.is_affine`), least squares (bounded least squares under Dale's law) gives the global
  minimum: ``decision_kind`` "exact"; otherwise the multi-start Levenberg-Marquardt of
  :mod:`neurosubset.solvers.multistart`, a local minimum: "lower bound" (an unmatched candidate is not proven
  unmatched).
- With noise (an SD per recorded neuron) every residual is divided by its neuron's SD, so the solvers minimise the
  chi-square ``sum ((fit - R) / sd)^2``; at the minimum of an affine, identifiable candidate with Gaussian noise
  it follows ``chi2(dof)``, ``dof = recorded values - rank``.
- Identifiability: the rank of ``d rates / d theta_A`` at the solution (SVD, LAPACK's default tolerance) against
  ``|A|``: full rank means the recording pins every plastic value down locally.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
import xarray as xr

from .. import _schema
from .._checks import AllocationError, ParameterError, check_real
from .._schema import BOUNDED_DECISION, DECISION_KINDS, LEAST_SQUARES_DECISION, LM_DECISION, meta
from ..dynamics.stability import max_real_eig, plastic_in_loops
from ..allocation import Allocation
from ..circuit import Circuit
from ..connectivity import synapse_name_coords
from ..dynamics import DTYPE, Steady, torch_threads
from ..options import DEFAULT_TOL, FitOptions, fit_options
from ..solvers import Auto, LeastSquares, Solver
from ..solvers.bounded import sign_bounds, solve_exact
from ..solvers.multistart import multistart
from .inputs import Recording, check_recording, check_weights, holdout_rows
from .rates import RecordedMap, flatten, n_times

__all__ = ["fit_responses", "localize", "projection_candidates", "region_candidates"]

_CHUNK_BYTES = 2.5e8  # of one batched Jacobian (candidates x restarts x responses x union columns, float64)


def projection_candidates(circuit: Circuit, within: Sequence[str] | None = None) -> dict[str, Allocation]:
    """One candidate per projection: every eligible synapse of that projection plastic.

    Parameters
    ----------
    circuit : Circuit
    within : sequence of str, optional
        Only these weights (projection names such as ``"CA3->CA1"``); fixed projections, which are never plastic,
        are left out.

    Returns
    -------
    dict
        Projection name -> :class:`~neurosubset.Allocation`, the ``candidates`` of :func:`neurosubset.localize`.
    """
    names = list(circuit.weight_names if within is None else within)
    _check_weight_names(circuit, names)
    eligible = circuit.eligible
    return {k: Allocation.from_masks(circuit, {k: eligible[k]}, strategy="projection") for k in names
            if eligible[k].any()}


def region_candidates(circuit: Circuit) -> dict[str, Allocation]:
    """One candidate per non-input region: every eligible synapse onto that region plastic.

    Parameters
    ----------
    circuit : Circuit

    Returns
    -------
    dict
        Region name -> :class:`~neurosubset.Allocation` (regions without eligible synapses are left out), the
        ``candidates`` of :func:`neurosubset.localize`.
    """
    out, eligible = {}, circuit.eligible
    for r in circuit.regions:
        into = [p.name for p in circuit.projections_into(r.name) if eligible[p.name].any()]
        if r.role != "input" and into:
            out[r.name] = Allocation.from_masks(circuit, {k: eligible[k] for k in into}, strategy="region")
    return out


def _check_weight_names(circuit: Circuit, names: Sequence[str]) -> None:
    for k in names:
        if k not in circuit.projection:
            raise AllocationError(f"Weight {k!r} (in 'within') does not exist. Expected one of "
                                  f"{list(circuit.weight_names)}.")


def fit_responses(circuit: Circuit, allocation: Allocation, probes, responses: Mapping[str, np.ndarray],
                  weights: Mapping[str, np.ndarray], *, noise=None, solver: Solver | str = Auto(),
                  tol: float = DEFAULT_TOL, alpha: float = 0.01, dale: bool = True, stable: bool = True,
                  seed: int = 0, threads: int | None = 1, options: FitOptions | None = None) -> xr.Dataset:
    """Fit the plastic synapses of ``allocation`` so that ``circuit`` reproduces recorded ``responses``.

    Parameters
    ----------
    circuit : Circuit
    allocation : Allocation
        The synapses that may have changed; every other synapse keeps its value in ``weights``.
    probes : array-like
        ``(probe, n_in)``, or ``(probe, steps, n_in)`` for discrete dynamics.
    responses : dict
        Region (hidden or output) -> ``(probe, neuron)``; discrete circuits may give ``(probe, time, neuron)``
        (every step ``t = 1..steps``). Rates in the circuit's units.
    weights : dict
        Weight name -> ``(n_post, n_pre)``: the weights before learning, every projection.
    noise : float or dict, optional
        Noise SD of the recorded neurons (one float, or region -> float or ``(neuron,)``), in the responses' units.
    solver : Auto, LeastSquares, LevenbergMarquardt or str
        See the module docstring.
    tol : float
        Noise-free match tolerance on the relative residual.
    alpha : float
        With noise: matched iff the chi-square's p-value is at least ``alpha``.
    dale, stable : bool
        As :func:`neurosubset.fit`: plastic values keep their presynaptic region's sign; steady circuits count a
        match only where the fitted circuit's fixed point is stable (``max Re(eig W) < 1``).
    seed : int
        Seed of the affinity check and of the LM's random starts.
    threads : int or None
        torch intra-op threads while fitting.
    options : FitOptions, optional
        ``solver``, ``tol``, ``dale``, ``stable`` and ``threads`` as one validated object
        (:class:`neurosubset.FitOptions`), instead of the keywords.

    Returns
    -------
    xarray.Dataset
        ``theta (synapse)`` fitted values, ``theta_before``, ``change``; ``residual`` (relative),
        ``region_residual (region)``; with noise ``chi_square``, ``region_chi_square (region)``, ``dof``,
        ``p_value``; ``matched``, ``identifiable``, ``rank`` (of the Jacobian at the solution), ``n_plastic``,
        ``decision``; steady circuits ``stable``, ``max_real_eig``. Attrs: ``decision_kind`` ("exact" or
        "lower bound"), the circuit spec (TOML), ``tolerance``, ``alpha``, ``dale``, ``stable``, versions.
    """
    options = fit_options("fit_responses", options, solver=solver, tol=tol, dale=dale, stable=stable,
                          threads=threads)
    if not isinstance(allocation, Allocation) or set(allocation.masks) != set(circuit.weight_names):
        raise ParameterError(f"The 'allocation' parameter must be an Allocation of circuit {circuit.name!r} (weights "
                             f"{list(circuit.weight_names)}). Got {allocation!r:.80}.")
    ds = _run(circuit, weights, probes, responses, {"fit": allocation}, noise=noise, holdout=0, options=options,
              alpha=alpha, seed=seed)
    one = ds.isel(candidate=0, drop=True).drop_vars(["place", "ambiguous", "structurally_equivalent",
                                                     "statistically_tied"])
    one = one.isel(synapse=np.flatnonzero(one["plastic"].values)).drop_vars("plastic")
    for key in ("ambiguous", "equally_good", "tie_rule"):  # a ranking's, not one fit's
        del one.attrs[key]
    one.attrs["decision_kind"] = str(one["decision_kind"].values)
    return one.drop_vars("decision_kind")


def localize(circuit: Circuit, weights: Mapping[str, np.ndarray], probes, responses: Mapping[str, np.ndarray],
             candidates: Mapping[str, Allocation], *, noise=None, holdout: int | None = None,
             solver: Solver | str = Auto(), tol: float = DEFAULT_TOL, alpha: float = 0.01, dale: bool = True,
             stable: bool = True, seed: int = 0, threads: int | None = 1,
             options: FitOptions | None = None) -> xr.Dataset:
    """Which candidate set of synapses could have changed to produce the recorded ``responses``?

    Every candidate is fitted on the fit probes (all candidates in one batch); ``holdout`` probes, drawn at random,
    are left out of the fits and judge them.

    Parameters
    ----------
    circuit, weights, probes, responses, noise, solver, tol, alpha, dale, stable, seed, threads, options
        See :func:`fit_responses`.
    candidates : dict
        Name -> Allocation, e.g. :func:`projection_candidates` or :func:`region_candidates`.
    holdout : int, optional
        Probes held out of the fits (default a quarter of them; 0: rank on the fit probes, with noise by the fit's
        chi-square against its degrees of freedom).

    Returns
    -------
    xarray.Dataset
        Over ``candidate``, in ranked order (``place`` 1 first): candidates whose held-out responses are matched
        (noise-free: relative residual < ``tol``; with noise: held-out p-value >= ``alpha``) come first, fewer
        plastic synapses first among them; the others follow by held-out residual (with noise: held-out
        chi-square per value), ties by fewer synapses. Variables as :func:`fit_responses` per candidate, plus
        ``heldout_residual`` (and ``heldout_chi_square``, ``heldout_p_value``), ``matched`` (on fit and held-out
        probes), ``plastic (candidate, synapse)`` and ``change``, ``decision_kind (candidate)``.
    """
    options = fit_options("localize", options, solver=solver, tol=tol, dale=dale, stable=stable, threads=threads)
    if not isinstance(candidates, Mapping) or not candidates:
        raise ParameterError(f"The 'candidates' parameter must be a non-empty mapping of name -> Allocation. Got "
                             f"{candidates!r:.80}.")
    for name, alloc in candidates.items():
        if not isinstance(alloc, Allocation) or set(alloc.masks) != set(circuit.weight_names):
            raise ParameterError(f"candidates[{name!r}] must be an Allocation of circuit {circuit.name!r} (weights "
                                 f"{list(circuit.weight_names)}). Got {alloc!r:.80}.")
    return _run(circuit, weights, probes, responses, dict(candidates), noise=noise, holdout=holdout,
                options=options, alpha=alpha, seed=seed)


def _run(circuit, weights, probes, responses, candidates, *, noise, holdout, options: FitOptions, alpha,
         seed) -> xr.Dataset:
    solver, tol, dale, stable, threads = options.solver, options.tol, options.dale, options.stable, options.threads
    alpha = check_real("alpha", alpha, low=0.0, high=1.0)
    w0 = check_weights(circuit, weights)
    rec = check_recording(circuit, probes, responses, noise)
    fit_rows, held_rows = holdout_rows(rec.m, holdout, seed)
    with torch_threads(threads):
        out = _fit_all(circuit, w0, rec.take(fit_rows), list(candidates.values()), solver, tol, alpha, dale,
                       stable, seed)
        held = _judge(out["map"], out["theta"], rec.take(held_rows), tol) if held_rows.size else None
        if held is not None and rec.noise is not None:
            held["chi_square"] = _prediction_chi_square(circuit, w0, out, rec.take(held_rows))
    return _dataset(circuit, candidates, rec, out, held, fit_rows, held_rows, tol=tol, alpha=alpha, dale=dale,
                    stable=stable, seed=seed)


def _fit_all(circuit: Circuit, w0: dict[str, np.ndarray], rec: Recording, allocs: list[Allocation], solver: Solver,
             tol: float, alpha: float, dale: bool, stable: bool, seed: int) -> dict:
    """Fit every candidate on ``rec``, one problem each: exact deciders where affine, the LM elsewhere."""
    union = _union(circuit, allocs)
    index = union.indices
    mask = torch.as_tensor(np.stack([np.concatenate([a.masks[k].flat[index[k]] for k in circuit.weight_names])
                                     for a in allocs]), dtype=DTYPE)
    to_t = (lambda a: torch.as_tensor(a, dtype=DTYPE))
    fmap, targets = _map(circuit, union, w0, rec, mask)
    n = len(allocs)
    affine = fmap.affine(circuit.init_scale(union), seed)
    signs = sign_bounds(circuit, union)
    bounds = signs if dale and signs.active else None
    need_stable = stable and isinstance(circuit.dynamics, Steady)
    if isinstance(solver, LeastSquares):  # as asked, also where not affine (a linearisation, not a decision)
        use_exact = np.ones(n, dtype=bool)
    else:
        use_exact = affine if isinstance(solver, Auto) else np.zeros(n, dtype=bool)
    theta = fmap.before.expand(n, -1).clone()
    decision = np.full(n, LM_DECISION, dtype=np.int8)
    rank, own_jac, chunks = np.zeros(n, dtype=np.int64), [None] * n, []
    lm = solver.resolve(False) if isinstance(solver, Auto) else solver
    for group in (use_exact, ~use_exact):
        # each chunk is solved over the union of its own candidates only (fewer Jacobian columns), in chunks whose
        # batched Jacobian (problems x restarts x E x union) stays under _CHUNK_BYTES
        per = 1 if group is use_exact else getattr(lm, "restarts", 1) * 2  # fresh and continued restarts
        for rows in _chunks(circuit, allocs, np.flatnonzero(group), per * targets.shape[-1]):
            sub, cols = _restrict(circuit, [allocs[i] for i in rows], union)
            sub_map = RecordedMap(circuit, sub, {k: to_t(v) for k, v in w0.items()}, fmap.probes, rec.regions,
                                  rec.time, mask[rows][:, cols], fmap.scale)
            sub_bounds = sign_bounds(circuit, sub) if bounds is not None else None
            if group is use_exact:
                values = solve_exact(sub_map, targets[rows], sub_bounds, tol=tol)[0]
                decision[rows] = BOUNDED_DECISION if bounds is not None else LEAST_SQUARES_DECISION
            else:
                admissible = ((lambda work, th: max_real_eig(circuit, work.weights(th)) < 1.0) if need_stable
                              else None)
                values = multistart(sub_map, targets[rows], circuit.init_scale(sub), lm, seed=seed, tol=tol,
                                    bounds=sub_bounds, admissible=admissible).theta
            values = sub_map.effective(values).detach()
            theta[torch.as_tensor(rows)[:, None], torch.as_tensor(cols)[None]] = values
            # the Jacobian at the solution, each candidate's own columns (the others are zero): rank by SVD
            jac = sub_map.jacobian(values).detach()
            for k, p in enumerate(rows):
                own_jac[p] = jac[k][:, sub_map.mask[k] > 0].numpy()
                rank[p] = int(np.linalg.matrix_rank(own_jac[p])) if allocs[p].size else 0
            chunks.append((rows, sub, cols))
    theta = fmap.effective(theta).detach()
    exact = use_exact & affine & np.array([not (need_stable and plastic_in_loops(circuit, a.counts)) for a in allocs])
    with torch.no_grad():
        judged = _judge(fmap, theta, rec, tol)
    sizes = np.array([a.size for a in allocs], dtype=np.int64)
    out = {"map": fmap, "theta": theta, "rank": rank, "jacobian": own_jac, "chunks": chunks, "n_plastic": sizes,
           "identifiable": rank == sizes, "decision": decision, "exact": exact, "union": union, **judged}
    if rec.noise is not None:
        from scipy.stats import chi2

        out["dof"] = rec.values - rank
        out["p_value"] = np.where(out["dof"] > 0, chi2.sf(judged["chi_square"], np.maximum(out["dof"], 1)), 1.0)
        out["matched"] = out["p_value"] >= alpha
    if isinstance(circuit.dynamics, Steady):
        out["max_real_eig"] = max_real_eig(circuit, fmap.weights(theta))
        if need_stable:
            out["matched"] = out["matched"] & (out["max_real_eig"] < 1.0)
    return out


def _map(circuit: Circuit, union: Allocation, w0: dict[str, np.ndarray], rec: Recording,
         mask: torch.Tensor) -> tuple[RecordedMap, torch.Tensor]:
    """The map of ``rec``'s probes and its noise-normalised targets ``(problem, E)``."""
    to_t = (lambda a: torch.as_tensor(a, dtype=DTYPE))
    sd = rec.noise or {r: np.ones(circuit.region[r].size) for r in rec.regions}
    steps = n_times(circuit) if rec.time else 1
    scale = to_t(np.tile(np.concatenate([np.tile(1.0 / sd[r], steps) for r in rec.regions]), rec.m))
    fmap = RecordedMap(circuit, union, {k: to_t(v) for k, v in w0.items()}, to_t(rec.probes), rec.regions, rec.time,
                       mask, scale)
    targets = flatten({r: to_t(v) for r, v in rec.responses.items()}, rec.regions, rec.time) * scale
    return fmap, targets.expand(mask.shape[0], -1)


def _prediction_chi_square(circuit: Circuit, w0: dict[str, np.ndarray], out: dict, held: Recording) -> np.ndarray:
    """``(candidate,)`` held-out chi-square that counts the uncertainty of the fitted values (linearised).

    With whitened Jacobians ``J_f`` (fit probes) and ``J_h`` (held-out probes) of the candidate's synapses at the
    solution, the held-out residual ``r_h`` has covariance ``I + J_h (J_f^T J_f)^+ J_h^T`` under Gaussian noise
    (exact for affine responses), so ``r_h^T (I + B B^T)^-1 r_h`` with ``B = J_h V S^-1`` (``J_f = U S V^T``
    truncated at its rank) follows ``chi2(held-out values)``; Woodbury keeps the solve ``rank x rank``.
    """
    mask = out["map"].mask
    chi = np.zeros(mask.shape[0])
    for rows, sub, cols in out["chunks"]:  # the chunks the fit was solved in: their unions' columns only
        hmap, targets = _map(circuit, sub, w0, held, mask[rows][:, cols])
        theta = out["theta"][torch.as_tensor(rows)[:, None], torch.as_tensor(cols)[None]]
        with torch.no_grad():
            resid = (hmap(theta) - targets).numpy()
        j_h = hmap.jacobian(theta).detach().numpy()
        for k, p in enumerate(rows):
            chi[p] = (resid[k] ** 2).sum()
            r = int(out["rank"][p])
            if not r:
                continue
            _, sv, vt = np.linalg.svd(out["jacobian"][p], full_matrices=False)
            b = j_h[k][:, hmap.mask[k].numpy() > 0] @ vt[:r].T / sv[:r]
            bt_r = b.T @ resid[k]
            chi[p] -= bt_r @ np.linalg.solve(np.eye(r) + b.T @ b, bt_r)
    return chi


def _chunks(circuit: Circuit, allocs: list[Allocation], rows: np.ndarray, width: int) -> list[np.ndarray]:
    """``rows`` in consecutive groups whose Jacobian, ``len(group) * width * |union of the group|`` float64 values,
    stays under :data:`_CHUNK_BYTES` (a group holds at least one candidate)."""
    out: list[list[int]] = []
    union: dict[str, np.ndarray] = {}
    for i in rows:
        grown = {k: union[k] | allocs[i].masks[k] for k in union} if union else dict(allocs[i].masks)
        columns = sum(int(v.sum()) for v in grown.values())
        if out and out[-1] and (len(out[-1]) + 1) * width * columns * 8 > _CHUNK_BYTES:
            out.append([int(i)])
            union = dict(allocs[i].masks)
        else:
            if not out:
                out.append([])
            out[-1].append(int(i))
            union = grown
    return [np.array(g, dtype=np.int64) for g in out]


def _union(circuit: Circuit, allocs: list[Allocation]) -> Allocation:
    """Every synapse plastic in at least one of ``allocs``."""
    return Allocation({k: np.logical_or.reduce([a.masks[k] for a in allocs]) for k in circuit.weight_names},
                      strategy="union", circuit_name=circuit.name)


def _restrict(circuit: Circuit, allocs: list[Allocation], union: Allocation) -> tuple[Allocation, np.ndarray]:
    """The union of ``allocs`` and where its plastic values sit among ``union``'s (both in weight order)."""
    sub = _union(circuit, allocs)
    inside = np.concatenate([sub.masks[k].flat[union.indices[k]] for k in circuit.weight_names])
    return sub, np.flatnonzero(inside)


def _judge(fmap: RecordedMap, theta: torch.Tensor, rec: Recording, tol: float) -> dict[str, np.ndarray]:
    """Residuals of the fitted ``theta`` on ``rec``'s probes: relative (overall and per region), and chi-squares."""
    with torch.no_grad():
        pred = fmap.rates(theta, torch.as_tensor(rec.probes, dtype=DTYPE))
    out: dict[str, np.ndarray] = {}
    diff = {r: pred[r].numpy() - rec.responses[r][None] for r in rec.regions}
    axes = tuple(range(1, 3 + rec.time))
    sq = np.stack([(diff[r] ** 2).sum(axes) for r in rec.regions], axis=-1)  # (candidate, region)
    norm = np.array([(rec.responses[r] ** 2).sum() for r in rec.regions])
    tiny = np.finfo(np.float64).tiny
    out["region_residual"] = np.sqrt(sq / np.maximum(norm, tiny))
    out["residual"] = np.sqrt(sq.sum(-1) / max(norm.sum(), tiny))
    out["matched"] = out["residual"] < tol
    if rec.noise is not None:
        sd = {r: rec.noise[r] for r in rec.regions}
        out["region_chi_square"] = np.stack([((diff[r] / sd[r]) ** 2).sum(axes) for r in rec.regions], axis=-1)
        out["chi_square"] = out["region_chi_square"].sum(-1)
    return out


def _places(noisy: bool, judged: dict, n_plastic: np.ndarray, tol: float, alpha: float) -> np.ndarray:
    """Ranking order of the candidates (indices, best first); see :func:`localize`."""
    if noisy:
        from scipy.stats import chi2

        values = judged["values"]
        score = judged["chi_square"] / values
        good = chi2.sf(judged["chi_square"], values) >= alpha
    else:
        score, good = judged["residual"], judged["residual"] < tol
    score = np.nan_to_num(score, nan=np.inf)
    return np.lexsort((score, n_plastic, np.where(good, 0.0, score), ~good))


def _dataset(circuit: Circuit, candidates: dict, rec: Recording, out: dict, held: dict | None, fit_rows, held_rows,
             *, tol: float, alpha: float, dale: bool, stable: bool, seed: int) -> xr.Dataset:
    from scipy.stats import chi2

    noisy = rec.noise is not None
    c, reg, syn = "candidate", "region", "synapse"
    data = {
        "residual": (c, out["residual"], meta("responses_residual", tolerance=tol)),
        "region_residual": ((c, reg), out["region_residual"], meta("region_residual")),
        "rank": (c, out["rank"], meta("jacobian_rank")),
        "identifiable": (c, out["identifiable"], meta("identifiable")),
        "n_plastic": (c, out["n_plastic"], meta("n_plastic")),
        "decision": (c, out["decision"], meta("decision")),
        "decision_kind": (c, np.array([DECISION_KINDS[0] if e else DECISION_KINDS[1] for e in out["exact"]]),
                          meta("decision_kind")),
    }
    if noisy:
        data.update({"chi_square": (c, out["chi_square"], meta("chi_square")),
                     "region_chi_square": ((c, reg), out["region_chi_square"], meta("region_chi_square")),
                     "dof": (c, out["dof"], meta("dof")), "p_value": (c, out["p_value"], meta("p_value"))})
    matched = out["matched"].copy()
    # without held-out probes the fit itself ranks: its chi-square against its own degrees of freedom
    judged = {"residual": out["residual"], "chi_square": out.get("chi_square"),
              "values": np.maximum(out["dof"], 1) if noisy else rec.values}
    if held is not None:
        held_values = rec.take(held_rows).values
        data["heldout_residual"] = (c, held["residual"], meta("heldout_residual", tolerance=tol))
        judged = {"residual": held["residual"], "chi_square": held.get("chi_square"), "values": held_values}
        if not noisy:
            matched &= held["residual"] < tol
        else:
            p_held = chi2.sf(held["chi_square"], held_values)
            data["heldout_chi_square"] = (c, held["chi_square"], meta("heldout_chi_square"))
            data["heldout_p_value"] = (c, p_held, meta("heldout_p_value"))
            matched &= p_held >= alpha
    data["matched"] = (c, matched, meta("responses_matched"))
    if "max_real_eig" in out:
        data["stable"] = (c, out["max_real_eig"] < 1.0, meta("stable"))
        data["max_real_eig"] = (c, out["max_real_eig"], meta("max_real_eig"))
    fmap, theta = out["map"], out["theta"].numpy()
    before = fmap.before.numpy()
    plastic = fmap.mask.numpy() > 0
    data["theta"] = ((c, syn), theta, meta("theta"))
    data["theta_before"] = (syn, before, meta("theta_before"))
    data["change"] = ((c, syn), np.where(plastic, theta - before, 0.0), meta("change"))
    data["plastic"] = ((c, syn), plastic, meta("plastic"))
    weight, post, pre = [], [], []
    for k, idx in out["union"].indices.items():
        weight += [k] * idx.size
        post.append(idx // circuit.shape(k)[1])
        pre.append(idx % circuit.shape(k)[1])
    coords = {c: (c, np.array(list(candidates), dtype=str), meta("candidate")),
              reg: (reg, np.array(rec.regions, dtype=str), meta("region")),
              syn: (syn, np.arange(before.size), meta("synapse")),
              "synapse_weight": (syn, np.array(weight, dtype=str), meta("synapse_weight")),
              "synapse_post": (syn, np.concatenate(post).astype(np.int64), meta("synapse_post")),
              "synapse_pre": (syn, np.concatenate(pre).astype(np.int64), meta("synapse_pre"))}
    coords.update(synapse_name_coords(circuit, coords["synapse_weight"][1], coords["synapse_post"][1],
                                      coords["synapse_pre"][1]))  # the neurons' names, where the circuit has them
    order = _places(noisy, judged, out["n_plastic"], tol, alpha)
    data["place"] = (c, np.empty(len(order), dtype=np.int64), meta("place"))
    data["place"][1][order] = np.arange(1, len(order) + 1)
    same, tied, rule = _ties(noisy, judged, out["jacobian"], matched, int(order[0]), tol, alpha)
    equal = tied | (same & (matched == matched[order[0]]))
    equal[order[0]] = True
    ambiguous = equal & (equal.sum() > 1)
    data["ambiguous"] = (c, ambiguous, meta("ambiguous"))
    data["structurally_equivalent"] = (c, same, meta("structurally_equivalent"))
    data["statistically_tied"] = (c, tied, meta("statistically_tied"))
    names = np.array(list(candidates), dtype=str)
    attrs = {"circuit": circuit.to_toml(), "circuit_name": circuit.name, "dynamics": circuit.dynamics.name,
             "recorded_regions": ",".join(rec.regions), "time_resolved": int(rec.time), "noise": int(noisy),
             "fit_probes": int(fit_rows.size), "heldout_probes": int(held_rows.size),
             "heldout_index": ",".join(map(str, held_rows)), "tolerance": tol, "alpha": alpha, "dale": int(dale),
             "stable": int(stable), "seed": seed,
             "decision_kind": DECISION_KINDS[0] if out["exact"].all() else DECISION_KINDS[1],
             "ambiguous": int(ambiguous.any()),
             # the equally good candidates, in ranked order: place orders them by fewer plastic synapses only (a
             # convention, not evidence)
             "equally_good": ",".join(names[[i for i in order if equal[i]]]), "tie_rule": rule,
             **_schema.versions()}
    return xr.Dataset(data, coords=coords, attrs=attrs).isel({c: order})


def _ties(noisy: bool, judged: dict, jacobians: list, matched: np.ndarray, first: int, tol: float,
          alpha: float) -> tuple[np.ndarray, np.ndarray, str]:
    """Which candidates cannot be told apart from candidate ``first``: ``(structurally_equivalent,
    statistically_tied, rule)``, each ``(candidate,)`` bool.

    Structurally: the same column space of the recorded responses' Jacobian (whitened, at each candidate's own
    solution, fit probes): ``rank J_i = rank J_first = rank [J_i, J_first]`` (numpy's SVD rank, its default
    tolerance). Statistically: noise-free, both judged responses (held-out where held out) matched within
    ``tol``; with noise, held-out (else fit) chi-squares differing by less than the critical value of a
    one-degree-of-freedom chi-square at level ``alpha`` (``chi2.isf(alpha, 1)``: 6.63 at 0.01), the smallest
    difference the test counts as evidence for one candidate over another.
    """
    n = len(jacobians)
    ranks = [int(np.linalg.matrix_rank(j)) if j is not None and j.size else 0 for j in jacobians]
    same = np.zeros(n, dtype=bool)
    ref = jacobians[first]
    for i, j in enumerate(jacobians):
        if j is None or ref is None or not j.size or not ref.size:
            same[i] = i == first
            continue
        same[i] = ranks[i] == ranks[first] == int(np.linalg.matrix_rank(np.hstack([j, ref])))
    if noisy:
        from scipy.stats import chi2

        critical = float(chi2.isf(alpha, 1))
        score = np.nan_to_num(np.asarray(judged["chi_square"], dtype=float), nan=np.inf)
        tied = np.abs(score - score[first]) < critical
        rule = (f"statistically tied: chi-square (held-out where held out) within {critical:.3g} = chi2.isf(alpha, 1) "
                f"of the first-placed candidate's; structurally equivalent: same Jacobian column space (ranks of the "
                f"stacked Jacobians); equally good: either, with the same match verdict")
    else:
        good = np.asarray(judged["residual"]) < tol
        tied = good & good[first]
        rule = (f"statistically tied: both match (relative residual < {tol:g}, held-out where held out); "
                f"structurally equivalent: same Jacobian column space (ranks of the stacked Jacobians); equally good: "
                f"either, with the same match verdict")
    return same, tied, rule
