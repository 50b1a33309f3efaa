"""The result Dataset of one match-probability estimate, and the weights stored in it.

:func:`fit_dataset` packages a :class:`neurosubset.benchmark.FitResult` (per-trial ``matched``, ``residual``,
``restarts``, ``fit_status``; ``mp`` with its 95% Wilson interval; the allocation along one ``synapse`` dim;
optionally the weights and probes) with attrs that hold the full configuration and a config hash;
:func:`student_weights` / :func:`teacher_weights` read the stored weights back, :func:`stored_masks` the
allocation and :func:`decision_kind` whether MP is exact, from files of this and of earlier versions. Variable
attrs come from :mod:`neurosubset._schema`; the Dataset follows CF-1.8 (``tests/test_outputs_cf.py``).
"""
from __future__ import annotations

import json
from statistics import NormalDist
from typing import Any

import numpy as np
import xarray as xr

from . import _schema
from ._schema import meta, var_name
from .dynamics.sparse_map import choose_layout
from .dynamics.stability import stability_applies
from .allocation import Allocation
from .circuit import Circuit
from .connectivity import synapse_name_coords, weight_name_coords
from .options import FitOptions, config_hash, constraints_act, hashed_config


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

    Examples
    --------
    >>> import neurosubset as ns
    >>> low, high = ns.wilson_interval(45, 50)     # 45 of 50 trials matched
    >>> round(low, 3), round(high, 3)
    (0.786, 0.957)
    """
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p = matched / trials
    denom = 1 + z**2 / trials
    centre = (p + z**2 / (2 * trials)) / denom
    half = z * np.sqrt(p * (1 - p) / trials + z**2 / (4 * trials**2)) / denom
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def mp_bracket(proven_match: int, proven_no_match: int, trials: int, alpha: float = 0.05) -> tuple[float, float]:
    """The bracket of MP from a count of witnesses and a count of proofs of no match among ``trials``.

    ``lower`` = Wilson lower limit of ``proven_match / trials``, ``upper`` = 1 - Wilson lower limit of
    ``proven_no_match / trials``, each at level ``1 - alpha / 2`` (so the bracket covers MP with probability at
    least ``1 - alpha``). Where every trial is decided (``proven_match + proven_no_match == trials``) it is the
    two-sided ``1 - alpha`` Wilson interval of the match rate, computed as such.
    """
    low, high = wilson_interval(proven_match, trials, 1 - alpha)
    if proven_match + proven_no_match == trials:
        return low, high
    return low, 1.0 - wilson_interval(proven_no_match, trials, 1 - alpha)[0]


def fit_dataset(circuit: Circuit, alloc: Allocation, res: Any, *, m: int, seed: int, options: FitOptions | None = None,
                return_weights: bool = False) -> xr.Dataset:
    """Package a :class:`neurosubset.benchmark.FitResult` as the Dataset :func:`match_probability` returns.

    ``options`` are the fit options asked for (its solver is recorded as ``solver_requested``; the configuration
    hash follows :func:`neurosubset.options.hashed_config` with the solver that ran); by default those ``res``
    records (the solver that ran, its ``tol``, ``dale`` and ``stable``). The configuration attrs are
    :meth:`FitOptions.to_attrs` with the solver that ran. The Dataset carries no netCDF encoding: write it with
    :func:`neurosubset.write` for a CF-clean file.
    """
    if options is None:
        options = FitOptions(solver=res.options, tol=res.tol, dale=res.dale, stable=res.stable)
    trials = res.matched.size
    k = int(res.matched.sum())
    low, high = wilson_interval(k, trials)
    data = {
        "matched": ("trial", res.matched, meta("matched")),
        "residual": ("trial", res.residual, meta("residual", tolerance=res.tol)),
        "restarts": ("trial", res.restarts, meta("restarts")),
        "fit_status": ("trial", res.status, meta("fit_status")),
        "mp": ((), k / trials, meta("mp")),
        "mp_low": ((), low, meta("mp_low")),
        "mp_high": ((), high, meta("mp_high") if res.exact else meta("mp_high", comment=_schema.LOWER_BOUND_COMMENT)),
        "mp_first_round": ((), float(res.mp_by_round[0]), meta("mp_first_round")),
        "mp_by_round": ("round", res.mp_by_round, meta("mp_by_round")),
        **_constraint_variables(res),
        **({} if res.decision is None else {"decision": ("trial", res.decision, meta("decision"))}),
        **_bracket_variables(res, options.plausibility_bound),
    }
    synapses = _synapses(circuit, alloc)
    data["mask_synapse"] = ("synapse", synapses.pop("plastic"), meta("mask_synapse"))
    if return_weights:
        for name in circuit.weight_names:
            stem = var_name(name)
            dims = ("trial", f"{stem}_post", f"{stem}_pre")
            for role, values in (("teacher", res.trials.teacher), ("student_init", res.trials.student_init),
                                 ("student", res.student)):
                data[f"{role}_{stem}"] = (dims, values[name], _schema.weight_meta(role, name))
        probe_dims = ("trial", "probe", "step", "input") if res.trials.probes.ndim == 4 else ("trial", "probe", "input")
        data["probes"] = (probe_dims, res.trials.probes, meta("probes"))
        data["theta"] = (("trial", "plastic_synapse"), res.theta, meta("theta"))
    last_gain = float(res.mp_by_round[-1] - res.mp_by_round[-2]) if res.mp_by_round.size > 1 else 0.0
    rest = {"circuit": circuit.to_toml(), "circuit_name": circuit.name, "allocation_strategy": alloc.strategy,
            "allocation_hash": alloc.hash, "allocation_size": alloc.size,
            "allocation_counts": json.dumps(alloc.counts), "m": m, "trials": trials, "seed": seed}
    layout = choose_layout(circuit, options.weights_layout).value
    if layout != "dense":  # the sparse layout runs another decider chain; every result before the field was dense
        rest["weights_layout"] = layout
    # the one hash rule (neurosubset.options): the solver that ran, its LM fields (0 for exact deciders), the
    # constraints only where they can act, so that every stored config_hash still holds
    dale_acts, stable_acts = constraints_act(circuit)
    config = hashed_config(options, rest, kind="mp", dale_acts=dale_acts, stable_acts=stable_acts, ran=res.options)
    # the options as every writer records them (FitOptions.to_attrs with the solver that ran), no ``certificate``
    # attr (an mp result says it by its certificate_* attrs). solver, tolerance and the LM's fields are also in
    # config, spelled alike: they keep its places, and the attrs their order of earlier versions
    recorded = options.to_attrs(ran=res.options)
    del recorded["certificate"]
    requested = {"solver_requested": recorded.pop("solver_requested")}
    flags = {k: recorded.pop(k) for k in ("dale", "stable")}
    attrs = {"title": f"neurosubset match probability of {circuit.name}", **config, **recorded,
             "config_hash": config_hash(config), **requested, "last_round_gain": last_gain, **flags,
             # 1: the last restart round still gained more than _schema.LAST_ROUND_GAIN_FLAG (MP may grow with rounds)
             "still_improving": int(last_gain > _schema.LAST_ROUND_GAIN_FLAG),
             "decision_kind": _schema.DECISION_KINDS[0] if res.exact else _schema.DECISION_KINDS[1],
             **_schema.versions()}
    if getattr(res, "improving", None) is not None:
        # 0: the LM's last round (max_rounds) still improved some trial (a match or a lower residual): its effort
        # had not converged and more rounds may match more; 1: every trial was settled, or stopped improving
        attrs["effort_converged"] = int(not np.asarray(res.improving).any())
    if stability_applies(circuit):
        attrs["spec_unstable_fraction"] = circuit.stability.unstable_fraction
    if any(p.signs for p in circuit.projections):  # per-synapse signs from data: a sign constraint, not Dale's law
        attrs["sign_constraint"] = "per-synapse signs from data" + (
            " and Dale's law (region signs)" if any(r.sign is not None for r in circuit.regions) else "")
    coords = {"trial": ("trial", np.arange(trials), meta("trial")),
              "round": ("round", np.arange(res.mp_by_round.size), meta("round")), "m": ((), m, meta("m")),
              **{f"synapse_{k}": ("synapse", v, meta(f"synapse_{k}")) for k, v in synapses.items()},
              **synapse_name_coords(circuit, synapses["weight"], synapses["post"], synapses["pre"])}
    if return_weights:  # neuron names along the weights' dims, where the circuit names its neurons
        for name in circuit.weight_names:
            coords.update(weight_name_coords(circuit, name, var_name(name)))
    return xr.Dataset(data, coords=coords, attrs=attrs)


def _synapses(circuit: Circuit, alloc: Allocation) -> dict[str, np.ndarray]:
    """The synapse dim of a result: every synapse the structure allows (or the allocation makes plastic), weight
    by weight in the circuit's order, row-major; ``weight``, ``post``, ``pre`` and ``plastic`` per synapse.

    One dim for all weights, so that ``to_dataframe()`` of a result does not broadcast over one pair of dims per
    weight; the plastic ones, in this order, are the entries of ``theta``.
    """
    parts = []
    for name in circuit.weight_names:
        mask = np.asarray(alloc.masks[name], bool)
        post, pre = np.nonzero(np.asarray(circuit.structure[name], bool) | mask)
        parts.append((np.full(post.size, name), post, pre, mask[post, pre]))
    weight, post, pre, plastic = (np.concatenate([p[i] for p in parts]) for i in range(4))
    return {"weight": weight.astype(str), "post": post.astype(np.int64), "pre": pre.astype(np.int64),
            "plastic": plastic.astype(bool)}


def stored_masks(ds: xr.Dataset) -> dict[str, np.ndarray]:
    """The allocation stored in a :func:`match_probability` Dataset: weight name -> ``(n_post, n_pre)`` bool.

    Reads the ``mask_synapse`` layout (the ``synapse`` dim, shapes from the circuit in ``attrs["circuit"]``) and
    the one-variable-per-weight ``mask_<weight>`` layout of earlier files (and of sweeps, after selecting one
    point).

    Raises
    ------
    KeyError
        The Dataset holds no masks.
    """
    if "mask_synapse" in ds.data_vars:
        circuit = Circuit.from_toml_text(ds.attrs["circuit"])
        out = {name: np.zeros(circuit.shape(name), bool) for name in circuit.weight_names}
        plastic = np.asarray(ds["mask_synapse"].values, bool)
        weight = ds["synapse_weight"].values[plastic].astype(str)
        post = ds["synapse_post"].values[plastic].astype(np.int64)
        pre = ds["synapse_pre"].values[plastic].astype(np.int64)
        for name, mask in out.items():  # one fancy-index assignment per weight, not one per synapse
            here = weight == name
            mask[post[here], pre[here]] = True
        return out
    out = {var.attrs["weight"]: np.asarray(var.values, bool) for name, var in ds.data_vars.items()
           if str(name).startswith("mask_") and "weight" in var.attrs}
    if not out:
        raise KeyError("The Dataset has no masks (neither mask_synapse nor mask_<weight> variables).")
    return out


def fit_status_counts(ds: xr.Dataset) -> dict[str, int]:
    """How the trials of one result ended: ``fit_status`` meaning -> trial count (nonzero counts only, in flag
    order).

    Parameters
    ----------
    ds : xarray.Dataset
        A :func:`neurosubset.match_probability` result (``fit_status (trial)``, int8 flags).
    """
    flags = np.asarray(ds["fit_status"].values).ravel()
    counts = np.bincount(flags[flags >= 0].astype(np.int64), minlength=len(_schema.FIT_STATUS.meanings))
    return {name: int(n) for name, n in zip(_schema.FIT_STATUS.meanings, counts) if n}


def summary(ds: xr.Dataset) -> str:
    """One line saying how an mp result's trials ended and what its MP is worth: the fit statuses counted
    (``"17 of 20 trials unstable, 3 matched"``), ``lower bound`` where a local solver decided some trials (MP may
    be higher: ``mp_high`` is no upper bound), and a warning where the last restart round still gained more than
    ``neurosubset._schema.LAST_ROUND_GAIN_FLAG`` (0.05) of MP.

    Parameters
    ----------
    ds : xarray.Dataset
        A :func:`neurosubset.match_probability` result.

    Returns
    -------
    str
    """
    n = int(ds.sizes["trial"])
    counts = sorted(fit_status_counts(ds).items(), key=lambda kv: -kv[1]) if "fit_status" in ds else []
    parts = [f"{k} of {n} trials {name}" if i == 0 else f"{k} {name}" for i, (name, k) in enumerate(counts)]
    kind = decision_kind(ds) if ("decision_kind" in ds.attrs or "mp_estimate" in ds.attrs) else None
    if kind == _schema.DECISION_KINDS[1]:
        parts.append("MP is a lower bound (mp_high is not an upper bound on MP)")
    gain = float(ds.attrs.get("last_round_gain", 0.0))
    if gain > _schema.LAST_ROUND_GAIN_FLAG:
        parts.append(f"still improving: the last restart round gained {gain:.2f} > {_schema.LAST_ROUND_GAIN_FLAG} "
                     f"of MP (more rounds, --max-rounds, may match more trials)")
    return "; ".join(parts)


def fraction_keys(ds: xr.Dataset) -> list[str]:
    """The swept fraction keys of a sweep, in order (``[]`` for none or for an mp result).

    Reads ``attrs["fraction_keys"]`` whether stored as a JSON string (every sweep store and exported file so far)
    or as a list of strings; a plain list, no JSON parsing left to the caller.

    Parameters
    ----------
    ds : xarray.Dataset
        A sweep (:func:`neurosubset.sweep`, :func:`neurosubset.open_sweep`, an exported netCDF file).

    Returns
    -------
    list of str
    """
    value = ds.attrs.get("fraction_keys", [])
    if isinstance(value, str):
        value = json.loads(value) if value.strip() else []
    elif isinstance(value, np.ndarray):
        value = value.tolist()
    return [str(k) for k in ([value] if isinstance(value, str) else value)]


def decode(ds: xr.Dataset) -> xr.Dataset:
    """The Dataset with a categorical (string) view beside each int8 flag variable, the raw flags kept.

    Every variable with CF ``flag_values`` / ``flag_meanings`` attrs (``fit_status``, ``decision``, ``outcome``,
    a sweep's ``status``, booleans stored as flags) gets a companion ``<name>_meaning``: the meaning of each value as
    a string (``"matched"``, ``"levenberg_marquardt"``, ...; ``""`` where the value is not a flag value, e.g. at a
    sweep's points not computed). Works on results in memory and on files read back, of this and earlier versions.

    Parameters
    ----------
    ds : xarray.Dataset

    Returns
    -------
    xarray.Dataset
        A copy of ``ds`` with the ``<name>_meaning`` variables added (same dims as their flags).

    Examples
    --------
    >>> import neurosubset as ns
    >>> ff = ns.feedforward([3, 2])
    >>> ds = ns.match_probability(ff, ns.allocate(ff, 6), m=2, trials=2)         # doctest: +SKIP
    >>> ns.results.decode(ds)["fit_status_meaning"].values                       # doctest: +SKIP
    array(['matched', 'matched'], dtype='<U7')
    """
    out = ds.copy()
    for name, var in ds.data_vars.items():
        if "flag_values" not in var.attrs or "flag_meanings" not in var.attrs:
            continue
        values = np.atleast_1d(np.asarray(var.attrs["flag_values"])).astype(np.int64).tolist()
        meanings = str(var.attrs["flag_meanings"]).split()
        lookup = dict(zip(values, meanings))
        raw = np.asarray(var.values)
        width = max((len(m) for m in meanings), default=1)
        text = np.full(raw.shape, "", dtype=f"<U{width}")
        for value, meaning in lookup.items():
            text[raw == value] = meaning
        attrs = meta("flag_meaning")
        attrs["long_name"] = attrs["long_name"].format(flag=name)
        out[f"{name}_meaning"] = xr.Variable(var.dims, text, attrs)
    return out


_OLD_KINDS = {"exact": _schema.DECISION_KINDS[0], "lower_bound": _schema.DECISION_KINDS[1]}


def decision_kind(ds: xr.Dataset) -> Any:
    """Whether the MP of a result is exact: ``"exact"`` or ``"lower bound"``
    (:data:`neurosubset._schema.DECISION_KINDS`).

    Reads the ``decision_kind`` attr, or the ``mp_estimate`` attr ("exact" / "lower_bound") that results written
    before the two were merged carry; for a Dataset of many results (an analysis table) the ``decision_kind`` or
    ``mp_estimate`` variable, as a DataArray of the same two spellings.

    Raises
    ------
    KeyError
        The Dataset says neither.
    """
    if "decision_kind" in ds.attrs:
        return str(ds.attrs["decision_kind"])
    if "mp_estimate" in ds.attrs:
        return _OLD_KINDS[str(ds.attrs["mp_estimate"])]
    if "decision_kind" in ds.variables:
        return ds["decision_kind"]
    if "mp_estimate" in ds.variables:
        old = ds["mp_estimate"]
        return old.copy(data=np.vectorize(lambda v: _OLD_KINDS.get(str(v), str(v)), otypes=[object])(old.values))
    raise KeyError("The Dataset has no decision_kind (nor mp_estimate) attr or variable.")


def _bracket_variables(res: Any, k: float) -> dict[str, tuple]:
    """``outcome (trial)`` and the bracket ``mp_lower``, ``mp_upper`` (none for results without outcomes).

    Where ``dale`` or ``stable`` acts (``witness_scale`` recorded), the bracket holds within the plausibility bound
    ``k`` (init SDs): a witness counts towards ``mp_lower`` only if every plastic value lies within ``k`` init SDs
    of its synapse (``witness_scale <= k``, to a relative 1e-9: the box's own witnesses sit on its face). A
    witness beyond ``k`` still proves a match (``outcome``, ``matched``, ``mp``) but not one within the bound: for
    the bracket it is neither a witness nor a proof, and ``mp_lower``'s comment counts such trials.
    """
    if getattr(res, "outcome", None) is None:
        return {}
    n = res.outcome.size
    match = res.outcome == _schema.PROVEN_MATCH
    scale = getattr(res, "witness_scale", None)
    beyond = (match & ~(scale <= k * (1 + 1e-9))) if scale is not None else np.zeros(n, dtype=bool)
    lower, upper = mp_bracket(int((match & ~beyond).sum()), int((res.outcome == _schema.PROVEN_NO_MATCH).sum()), n)
    out = {"outcome": ("trial", res.outcome, meta("outcome")), "mp_lower": ((), lower, meta("mp_lower")),
           "mp_upper": ((), upper, meta("mp_upper"))}
    if beyond.any():
        out["mp_lower"] = ((), lower, meta("mp_lower", comment=(
            f"within K: {int(beyond.sum())} proven matches with a plastic value beyond the plausibility bound "
            f"(witness_scale > attr plausibility_bound) are not counted; mp counts them")))
    if getattr(res, "proof_kind", None) is not None:  # dale or stable acting (issue 28)
        if np.isin(res.proof_kind, (_schema.SIGN_CONE_PROOF, _schema.BRANCH_AND_BOUND_PROOF)).any():
            out["mp_upper"] = ((), upper, meta("mp_upper", comment=(
                "within K: some proofs of no match hold only for plastic values within the plausibility bound "
                "(attr plausibility_bound, init SDs of each synapse)")))
        out["proof_kind"] = ("trial", res.proof_kind, meta("proof_kind"))
        out["witness_scale"] = ("trial", res.witness_scale, meta("witness_scale"))
    return out


def _constraint_variables(res: Any) -> dict[str, tuple]:
    """Per-trial stability (steady circuits), rejected draws (with ``stable``) and sign violations (signed
    plastic synapses) of a :class:`FitResult`, as Dataset variables."""
    out: dict[str, tuple] = {}
    if res.max_real_eig is not None:
        out["stable"] = ("trial", res.max_real_eig < 1.0, meta("stable"))
        out["max_real_eig"] = ("trial", res.max_real_eig, meta("max_real_eig"))
        if res.stable and res.trials.teacher_rejected is not None:
            out["teacher_rejected"] = ("trial", res.trials.teacher_rejected, meta("teacher_rejected"))
            out["student_rejected"] = ("trial", res.trials.student_rejected, meta("student_rejected"))
    if res.sign_violations is not None:
        out["sign_violations"] = ("trial", res.sign_violations, meta("sign_violations"))
    return out


def student_weights(ds: xr.Dataset) -> dict[str, np.ndarray]:
    """The fitted student weights stored by ``match_probability(..., return_weights=True)``.

    Parameters
    ----------
    ds : xarray.Dataset
        A result of :func:`neurosubset.match_probability` with ``return_weights=True``.

    Returns
    -------
    dict
        Weight name -> array ``(trial, n_post, n_pre)`` (dimensionless); ``{k: v[i] for k, v in ...items()}`` is
        trial ``i``'s circuit, as :func:`neurosubset.simulate` and :func:`neurosubset.spiking_compare` take it.
    """
    return _weights(ds, "student_")


def teacher_weights(ds: xr.Dataset) -> dict[str, np.ndarray]:
    """The teacher weights stored by ``match_probability(..., return_weights=True)``.

    Parameters
    ----------
    ds : xarray.Dataset
        A result of :func:`neurosubset.match_probability` with ``return_weights=True``.

    Returns
    -------
    dict
        Weight name -> array ``(trial, n_post, n_pre)`` (dimensionless), one teacher per trial.
    """
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



def mcnemar_interval(only_a: int, only_b: int, trials: int, confidence: float = 0.95) -> tuple[float, float, float]:
    """Exact paired interval on ``MP(a) - MP(b)`` from the discordant pairs, and the exact McNemar p-value.

    On paired trials (the same teacher, student draw and probes for both allocations) only the discordant trials
    carry information about the difference: ``only_a`` matched by ``a`` alone, ``only_b`` by ``b`` alone,
    ``N = only_a + only_b``. Conditional on ``N``, ``only_a ~ Binomial(N, pi)``; the Clopper-Pearson interval of
    ``pi`` is ``[Beta^-1(alpha/2; k, N - k + 1), Beta^-1(1 - alpha/2; k + 1, N - k)]`` (``k = only_a``, 0 and 1 at
    the ends) and, since ``MP(a) - MP(b) = (N / n) (2 pi - 1)`` given the observed discordant share ``N / n``, the
    interval on the difference is ``(N / n) (2 low - 1) .. (N / n) (2 high - 1)`` (conditional on ``N``; ``[0, 0]``
    when no trial is discordant). Being conditional, it leaves out the sampling variation of the discordant share
    ``N / n``: when every discordant trial favours one allocation, that end of the interval is the observed
    difference itself (the difference cannot exceed ``N / n`` given ``N``). The p-value is the two-sided exact
    binomial test of ``pi = 1/2`` (McNemar's exact test): ``min(1, 2 min(P(X <= k), P(X >= k)))``,
    ``X ~ Binomial(N, 1/2)``; 1 when ``N = 0``.

    Parameters
    ----------
    only_a, only_b : int
        Discordant trial counts (>= 0).
    trials : int
        Paired trials ``n`` (>= ``only_a + only_b``, >= 1).
    confidence : float
        Two-sided confidence level in (0, 1).

    Returns
    -------
    (low, high, p_value) : tuple of float
        Bounds on the MP difference (units 1, in [-1, 1]) and the p-value.
    """
    from scipy.stats import beta, binom

    from ._checks import ParameterError

    k, n_disc, n = int(only_a), int(only_a) + int(only_b), int(trials)
    if min(k, int(only_b)) < 0 or n < max(n_disc, 1):
        raise ParameterError(f"mcnemar_interval needs 0 <= only_a, only_b and only_a + only_b <= trials >= 1. Got "
                             f"only_a={only_a}, only_b={only_b}, trials={trials}.")
    if not 0.0 < confidence < 1.0:
        raise ParameterError(f"The 'confidence' parameter must be in (0, 1). Got {confidence!r}.")
    if n_disc == 0:
        return 0.0, 0.0, 1.0
    alpha = 1.0 - confidence
    low = 0.0 if k == 0 else float(beta.ppf(alpha / 2, k, n_disc - k + 1))
    high = 1.0 if k == n_disc else float(beta.ppf(1 - alpha / 2, k + 1, n_disc - k))
    share = n_disc / n
    p = min(1.0, 2.0 * min(float(binom.cdf(k, n_disc, 0.5)), float(binom.sf(k - 1, n_disc, 0.5))))
    return share * (2 * low - 1), share * (2 * high - 1), p
