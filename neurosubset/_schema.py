"""The one definition of the result schema: variable names, long_names, units, status flags and version attrs.

Every Dataset the toolkit writes takes its variable metadata from :data:`VARIABLES` (through :func:`meta`), its
flag variables from a :class:`Flags` (``flag_values`` as int8 beside ``flag_meanings``), and its version attrs from
:func:`versions` (with the ``Conventions`` attr, :data:`CONVENTIONS`). No other module spells a status number or a
result variable's ``long_name`` (``tests/test_schema.py`` checks that).

CF conventions (checked by ``tests/test_outputs_cf.py`` with cfchecker and the IOOS compliance-checker): names begin
with a letter and hold letters, digits and underscores (:func:`var_name`; the original name in an attr), every variable
and coordinate has a ``long_name`` (and ``units`` where it is a number), booleans and states carry
``flag_values`` of the stored type with ``flag_meanings``, and :func:`cf_encoding` writes strings as char arrays
and coordinates without ``_FillValue``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import metadata
from typing import Any

import numpy as np


def version() -> str:
    """The installed neurosubset version."""
    try:
        return metadata.version("neurosubset")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0+unknown"


# the CF version results declare: the newest that both checkers know (cfchecker 4.1 checks up to CF-1.8; the
# compliance-checker's cf:1.11 suite accepts it with a warning). CF-1.8 admits the netCDF-4 string type, but
# cfchecker does not, so strings are written as char arrays (cf_encoding).
CONVENTIONS = "CF-1.8"


def versions() -> dict[str, str]:
    """Version attrs of a result: ``Conventions`` (:data:`CONVENTIONS`), ``neurosubset_version``,
    ``torch_version``, ``numpy_version``, ``xarray_version``.

    torch and xarray are imported here only when asked, so a reader of results needs neither to be imported early.
    """
    import torch
    import xarray as xr

    return {"Conventions": CONVENTIONS, "neurosubset_version": version(), "torch_version": str(torch.__version__),
            "numpy_version": str(np.__version__), "xarray_version": str(xr.__version__)}


def var_name(weight: str) -> str:
    """A netCDF-safe variable stem for a weight name: ``"CA3->CA1"`` -> ``"CA3_to_CA1"``."""
    return re.sub(r"[^0-9A-Za-z_]", "_", weight.replace("->", "_to_"))


@dataclass(frozen=True)
class Flags:
    """An int8 flag variable's states: ``meanings[k]`` is the state stored as the number ``k``.

    Attributes
    ----------
    meanings : tuple of str
        One word per state (CF ``flag_meanings``: letters, digits and underscores).
    """

    meanings: tuple[str, ...]

    def __getitem__(self, meaning: str) -> int:
        return self.meanings.index(meaning)

    def attrs(self) -> dict[str, Any]:
        """CF attrs of the variable: ``flag_values`` (int8, the variable's own type), ``flag_meanings`` and
        ``units`` "1"."""
        return {"units": "1", "flag_values": np.arange(len(self.meanings), dtype=np.int8),
                "flag_meanings": " ".join(self.meanings)}


# a boolean variable (stored by netCDF as int8 0 / 1)
BOOLEAN = Flags(("false", "true"))

# state of one sweep point (int8); 0 is the zarr fill value so off-grid cells cost no chunk files
POINT_STATUS = Flags(("off_grid", "pending", "done", "infeasible_budget", "infeasible_share"))
OFF_GRID, PENDING, DONE, INFEASIBLE_BUDGET, INFEASIBLE_SHARE = range(len(POINT_STATUS.meanings))

# how the fit of one trial ended (int8), in the spirit of diffrax's RESULTS:
# - not_fitted: no fit stored (0, the fill value of a store's points not yet computed);
# - matched: relative residual below tol;
# - no_solution: an exact decider (least squares on affine outputs) proved that no plastic values match;
# - stalled: the best restart sat at a non-zero minimum (cost fell by < 1e-6 over 25 iterations);
# - iteration_cap: the best restart was still descending when its last round's iteration cap stopped it;
# - no_descent: the damping reached its ceiling (no descent direction left);
# - non_finite: outputs or residual overflowed to inf/NaN;
# - unstable: the best fit reproduces the teacher but the student's steady state is unstable (a constraint);
# - infeasible: an exact decider under constraints (e.g. sign bounds) proved that no admissible values match.
FIT_STATUS = Flags(("not_fitted", "matched", "no_solution", "stalled", "iteration_cap", "no_descent", "non_finite",
                    "unstable", "infeasible"))
(NOT_FITTED, MATCHED, NO_SOLUTION, STALLED, ITERATION_CAP, NO_DESCENT, NON_FINITE, UNSTABLE,
 INFEASIBLE) = range(len(FIT_STATUS.meanings))

# which decider settled the trial (int8), chosen by solvers.Auto: the exact ones (least squares on affine outputs;
# bounded least squares under Dale's law; the ReLU cone LP or activation-pattern LPs; the real roots of a univariate
# polynomial) or the local Levenberg-Marquardt, whose unmatched trials are not proofs (a lower bound on MP)
DECISION = Flags(("least_squares", "bounded_least_squares", "cone_lp", "activation_patterns", "univariate_roots",
                  "levenberg_marquardt", "rank_certificate", "lifted_rates", "stable_witness", "sign_cone_lp",
                  "branch_and_bound"))
(LEAST_SQUARES_DECISION, BOUNDED_DECISION, CONE_DECISION, PATTERN_DECISION, ROOTS_DECISION,
 LM_DECISION, CERTIFICATE_DECISION, LIFTED_DECISION, STABLE_WITNESS_DECISION, SIGN_CONE_DECISION,
 BRANCH_AND_BOUND_DECISION) = range(len(DECISION.meanings))
# stable_witness: a match searched on the matched manifold down a smoothed spectral abscissa, Lyapunov-certified
# (neurosubset.solvers.biological); sign_cone_lp: per-row LPs with pinned presynaptic rates, infeasible by a Farkas
# ray checked in exact rationals; branch_and_bound: SCIP's spatial branch and bound on the lifted bilinear problem
# (both neurosubset.solvers.proofs: no match within the sign box and the plausibility box, K init SDs)
# what kind of evidence settled a trial (int8, per trial):
# - none: undecided;
# - witness: a match (assembled student within tol; stable by its eigenvalues where required);
# - lyapunov_witness: a match whose stability is also certified by a Lyapunov solve (P > 0 by Cholesky);
# - exact: a proof of no match over all plastic values the constraints allow (rank certificate, least squares,
#   LPs, the lifted necessary equations);
# - sign_cone_lp_within_k, branch_and_bound_within_k: a proof of no match within the plausibility bound K (plastic
#   values within K init SDs of their synapse, attr plausibility_bound), by a rational Farkas ray or by SCIP.
PROOF_KIND = Flags(("none", "witness", "lyapunov_witness", "exact", "sign_cone_lp_within_k",
                    "branch_and_bound_within_k"))
(NO_PROOF, WITNESS_PROOF, LYAPUNOV_PROOF, EXACT_PROOF, SIGN_CONE_PROOF,
 BRANCH_AND_BOUND_PROOF) = range(len(PROOF_KIND.meanings))
# rank_certificate: fit(skip_zero=True) fitted nothing, the certificate's rank deficit proved MP = 0 (exact)
# lifted_rates: linear steady circuits, the rates as unknowns (neurosubset.solvers.lifted): a witness or a proof
# what one trial proves about MP (int8), whichever decider settled it:
# - undecided: neither a witness nor a proof (a local solver's unmatched trial, a stall, an unstable witness);
# - proven_match: a witness, the assembled student reproducing the teacher within tol (and admissible: signs,
#   stability where required), its residual recomputed from the assembled weights;
# - proven_no_match: a proof that no admissible plastic values match (an exact decider's, or the certificate's).
# An estimate's bracket: mp_lower = Wilson lower limit of the proven matches, mp_upper = 1 - Wilson lower limit of
# the proven no-matches, both at level 1 - alpha/2 (alpha = 0.05, z = 1.96): today's 95% interval where nothing is
# undecided, and [lower limit of the witnesses, 1 - lower limit of the proofs] otherwise.
OUTCOME = Flags(("undecided", "proven_match", "proven_no_match"))
UNDECIDED, PROVEN_MATCH, PROVEN_NO_MATCH = range(len(OUTCOME.meanings))
# decision_kind attr of a result: "exact" where every trial was settled by an exact decider, else "lower bound".
# The one spelling: results before this merge said the same in an ``mp_estimate`` attr ("exact" / "lower_bound"),
# which neurosubset.results.decision_kind still reads.
DECISION_KINDS = ("exact", "lower bound")
# mp_high's comment where the decision is a lower bound: a local solver can miss solutions, so the Wilson interval
# bounds the solver's match rate, not MP
LOWER_BOUND_COMMENT = ("decision_kind is 'lower bound': the interval bounds the local solver's match rate; MP itself "
                       "can be higher, so mp_high is not an upper bound on MP")
# a restart round that still gains more than this much MP (last_round_gain) says the local solver had not converged
# on the trials' solvability: flagged (attr still_improving of an mp result, the sweep table, the CLI's summary)
LAST_ROUND_GAIN_FLAG = 0.05

_PROB = {"units": "1"}

# result variables and coordinates: name -> attrs (long_name, units, ...)
VARIABLES: dict[str, dict[str, Any]] = {
    # per trial
    "matched": {"long_name": "student matches teacher on all probes", **BOOLEAN.attrs()},
    "residual": {"long_name": "relative residual ||y_s - y_t|| / ||y_t||", "units": "1"},
    "restarts": {"long_name": "random restarts used", "units": "1"},
    "fit_status": {"long_name": "how the fit of the trial ended", "units": "1", **FIT_STATUS.attrs()},
    "decision": {"long_name": "decider that settled the trial (exact ones, or the local LM)", "units": "1",
                 **DECISION.attrs()},
    "outcome": {"long_name": "what the trial proves: a witness, a proof of no match, or neither", "units": "1",
                **OUTCOME.attrs()},
    "proof_kind": {"long_name": "kind of witness or proof that settled the trial", "units": "1",
                   **PROOF_KIND.attrs()},
    "witness_scale": {"long_name": "largest plastic value of the matched student in init SDs of its synapse "
                                   "(max_k |theta_k| / sigma_k; NaN where not matched)", "units": "1"},
    # per result
    "mp": {"long_name": "match probability", **_PROB},
    "mp_lower": {"long_name": "match probability, lower end of the 95% bracket (Wilson lower limit of the proven "
                             "matches at level 0.975; where dale or stable acts, those within the plausibility "
                             "bound)", **_PROB},
    "mp_upper": {"long_name": "match probability, upper end of the 95% bracket (1 - Wilson lower limit of the "
                             "proven no-matches at level 0.975)", **_PROB},
    "mp_low": {"long_name": "match probability, 95% Wilson lower bound", **_PROB},
    "mp_high": {"long_name": "match probability, 95% Wilson upper bound", **_PROB},
    "mp_first_round": {"long_name": "match probability after the first restart round", **_PROB},
    "mp_by_round": {"long_name": "match probability after each restart round", **_PROB},
    "last_round_gain": {"long_name": "match probability gained in the last restart round", **_PROB},
    "solver": {"long_name": "solver used ('lstsq' exact affine, 'lm' Levenberg-Marquardt)"},
    # ns.results.decode: the string view beside an int8 flag variable ({flag}: its name)
    "flag_meaning": {"long_name": "meaning of the {flag} flag (its flag_meanings entry)"},
    # a sweep's per-point decision_kind (an mp result's attr of that name)
    "point_decision_kind": {"long_name": "whether the point's MP is exact or a lower bound ('exact', 'lower bound')",
                            "comment": "lower bound: a local solver decided some trials; mp_high is then not an "
                                       "upper bound on MP (see mp_lower / mp_upper where stored)"},
    # float64 everywhere (a sweep's not-computed points hold NaN), so that mp and sweep files agree
    "plastic_rank": {"long_name": "generic rank of d(outputs)/d(plastic weights)", "units": "1"},
    "full_rank": {"long_name": "generic rank of d(outputs)/d(all weights): dim of teacher outputs", "units": "1"},
    "verdict": {"long_name": "certificate verdict (zero, one, positive, unproven: see neurosubset.certify)"},
    "status": {"long_name": "state of the sweep point", "units": "1", **POINT_STATUS.attrs(),
               "comment": "infeasible_budget: the budget exceeds the plastic-eligible synapses; infeasible_share: a "
                          "fraction's share of the budget exceeds the eligible synapses of its projections. Such "
                          "points hold NaN."},
    "probes": {"long_name": "probe inputs", "units": "1"},
    "theta": {"long_name": "fitted plastic values (the plastic synapses in the order of the synapse dim)",
              "units": "1"},
    # the allocation of one result, along the synapse dim (every synapse its circuit's structure allows, weight by
    # weight in the circuit's order, row-major): mask, and the coordinates saying where each synapse sits
    # (named mask_synapse: sweeps take no mask_* variable of a point, they store the allocation's own masks)
    "mask_synapse": {"long_name": "synapse is plastic in the allocation", **BOOLEAN.attrs()},
    "synapse_weight": {"long_name": "weight (projection) the synapse belongs to"},
    "synapse_post": {"long_name": "postsynaptic neuron of the synapse (row of its weight)", "units": "1"},
    "synapse_pre": {"long_name": "presynaptic neuron of the synapse (column of its weight)", "units": "1"},
    # coordinates
    "budget": {"long_name": "plastic synapses M", "units": "1"},
    "strategy": {"long_name": "allocation strategy"},
    "m": {"long_name": "number of probes", "units": "1"},
    "trial": {"long_name": "teacher/student/probe draw", "units": "1"},
    "round": {"long_name": "restart round", "units": "1"},
    "probe": {"long_name": "probe input", "units": "1"},
    "neuron": {"long_name": "output neuron", "units": "1"},
    "neuron_region": {"long_name": "region of the neuron"},
    "index_in_region": {"long_name": "index of the neuron within its region", "units": "1"},
    "neuron_name": {"long_name": "name of the neuron (Region.neurons)"},
    "synapse_post_name": {"long_name": "name of the postsynaptic neuron of the synapse"},
    "synapse_pre_name": {"long_name": "name of the presynaptic neuron of the synapse"},
    "student": {"long_name": "student network"},
    # spiking check (neurosubset.spiking: spiking_check, spiking_compare, spikecheck). Templates: "{who}" is "" in
    # spiking_check and "teacher " / "student " in spiking_compare, whose variables take the suffix _teacher /
    # _student; "agree" takes the agreement rule's z and percent. "z_compare" is spiking_compare's variable "z".
    "rate_model": {"long_name": "{who}rate-model prediction baseline_rate + rate_unit * y", "units": "Hz"},
    "rate_spiking": {"long_name": "{who}spiking rate, mean over repeats", "units": "Hz"},
    "rate_spiking_se": {"long_name": "{who}standard error of the spiking rate (std over repeats / sqrt(repeats))",
                        "units": "Hz"},
    "clipped_fraction": {"long_name": "{who}fraction of time steps with negative (clipped) intensity", "units": "1"},
    "agree": {"long_name": "|difference| <= {z:g} standard errors or <= {percent:g}% relative",
              **BOOLEAN.attrs()},
    "z": {"long_name": "(rate_spiking - rate_model) / rate_spiking_se", "units": "1"},
    "z_compare": {"long_name": "(rate_spiking_student - rate_spiking_teacher) / sqrt(se_s^2 + se_t^2)", "units": "1"},
    "z_model_teacher": {"long_name": "(teacher spiking - teacher rate model) / se", "units": "1"},
    "fraction_agree": {"long_name": "fraction of (probe, neuron) pairs where student and teacher agree",
                       "units": "1"},
    "median_abs_z": {"long_name": "median |z| over (probe, neuron)", "units": "1"},
    "fraction_abs_z_above_3": {"long_name": "fraction of (probe, neuron) with |z| > 3", "units": "1"},
    "rate_model_difference": {"long_name": "student - teacher rate-model prediction", "units": "Hz"},
    "mu": {"long_name": "intensity offset of every simulated (non-input) neuron", "units": "Hz"},
    "mu_teacher": {"long_name": "teacher intensity offsets (all simulated neurons)", "units": "Hz"},
    "mu_student": {"long_name": "student intensity offsets", "units": "Hz"},
    "input_rate": {"long_name": "input Poisson rates", "units": "Hz"},
    "baseline_rate": {"long_name": "stationary rate of every simulated (non-input) neuron at probe 0",
                      "units": "Hz"},
    # the settings of the simulation (scalars, so that they carry units)
    "tau": {"long_name": "time constant of the unit-area exponential synaptic kernel", "units": "s"},
    "dt": {"long_name": "simulation time step", "units": "s"},
    "duration": {"long_name": "simulated time per repeat, after the warm-up", "units": "s"},
    "warmup": {"long_name": "discarded time before counting spikes", "units": "s"},
    "rate_unit": {"long_name": "Hz per unit of probe value and of rate-model activity", "units": "Hz"},
    "input_baseline": {"long_name": "input rate at probe value 0", "units": "Hz"},
}

# biological constraints (neurosubset.benchmark: dale, stable): per trial, and the flags as sweep coordinates
VARIABLES.update({
    "stable": {"long_name": "fitted student is stable (max_real_eig < 1): its fixed point (steady, linear "
                         "continuous) or every probe's final state (nonlinear continuous, not a constraint)",
               **BOOLEAN.attrs()},
    "max_real_eig": {"long_name": "largest real part of the eigenvalues of the fitted student's recurrent matrix "
                                  "(continuous circuits: rescaled to the steady scale, so the < 1 threshold holds)",
                     "units": "1",
                     "comment": "steady: max Re eig(W), stable iff < 1. Continuous circuits, on the steady scale "
                                "1 + tau_max max Re eig(J) (tau_max in s; equal to max Re eig(W) for linear "
                                "circuits with equal taus), < 1 iff max Re eig(J) < 0: linear, J = T^-1 (W - I) per "
                                "recurrent loop (tau_max the loop's largest tau), the fixed point's criterion; "
                                "nonlinear, J = T^-1 (-I + diag(phi'(z)) W) at each probe's final state, maxed over "
                                "the trial's probes (tau_max over all hidden neurons), reported only. At least 0."},
    "sign_violations": {"long_name": "plastic values whose sign breaks Dale's law for their presynaptic region",
                        "units": "1"},
    "teacher_rejected": {"long_name": "unstable teacher draws rejected before the trial's teacher", "units": "1"},
    "student_rejected": {"long_name": "unstable student draws rejected before the trial's student", "units": "1"},
    "dale": {"long_name": "Dale's law kept while fitting (plastic values keep their region's sign)"},
    "stable_required": {"long_name": "a match requires a stable student fixed point (steady circuits)"},
})

# fitting recorded responses (neurosubset.responses: fit_responses, localize); the Dataset names are in brackets
VARIABLES.update({
    "responses_matched": {"long_name": "fit reproduces the recorded responses (noise-free: residual < tol; with "
                                       "noise: chi-square p-values >= alpha)", **BOOLEAN.attrs()},  # [matched]
    "responses_residual": {"long_name": "relative residual ||fit - recorded|| / ||recorded|| on the fit probes",
                           "units": "1"},  # [residual]
    "region_residual": {"long_name": "relative residual of one recorded region on the fit probes", "units": "1"},
    "chi_square": {"long_name": "sum of squared noise-normalised residuals ((fit - recorded) / noise SD)^2 on the "
                                "fit probes", "units": "1"},
    "region_chi_square": {"long_name": "chi-square of one recorded region on the fit probes", "units": "1"},
    "dof": {"long_name": "degrees of freedom of the chi-square: recorded values minus Jacobian rank", "units": "1"},
    "p_value": {"long_name": "chi-square survival probability P(chi2(dof) >= chi_square)", "units": "1"},
    "heldout_residual": {"long_name": "relative residual on the held-out probes (not used in the fit)",
                         "units": "1"},
    "heldout_chi_square": {"long_name": "chi-square on the held-out probes", "units": "1"},
    "heldout_p_value": {"long_name": "P(chi2(held-out values) >= heldout_chi_square)", "units": "1"},
    "identifiable": {"long_name": "Jacobian rank at the solution equals the number of plastic synapses",
                     **BOOLEAN.attrs()},
    # localize: candidates that cannot be told apart from the first-placed one (issue 27)
    "ambiguous": {"long_name": "equally good as the first-placed candidate (structurally or statistically): the "
                               "first place is not unique", **BOOLEAN.attrs()},
    "structurally_equivalent": {"long_name": "same column space of d(recorded responses)/d(plastic values) as the "
                                             "first-placed candidate (rank of the stacked Jacobians)",
                                **BOOLEAN.attrs()},
    "statistically_tied": {"long_name": "held-out score within the test's critical difference of the first-placed "
                                        "candidate's", **BOOLEAN.attrs()},
    "jacobian_rank": {"long_name": "rank of d(recorded responses)/d(plastic values) at the solution",
                      "units": "1"},  # [rank]
    "n_plastic": {"long_name": "plastic synapses of the candidate", "units": "1"},
    "place": {"long_name": "place of the candidate in the ranking (1: best explains the held-out responses)",
              "units": "1"},
    "decision_kind": {"long_name": "exact (a global minimum: affine responses) or lower bound (a local solver)"},
    "theta_before": {"long_name": "plastic values before learning (the given weights)", "units": "1"},
    "change": {"long_name": "fitted minus before-learning value of the synapse (0 where not plastic)", "units": "1"},
    "plastic": {"long_name": "synapse is plastic in the candidate", **BOOLEAN.attrs()},
    "candidate": {"long_name": "candidate set of plastic synapses"},
    "region": {"long_name": "recorded region"},
    "synapse": {"long_name": "synapse (plastic in at least one candidate)"},
    # synapse_weight, synapse_post, synapse_pre: the entries of a result's synapse dim above
})


def response_meta(region: str, what: str = "response", **extra: Any) -> dict[str, Any]:
    """Attrs of a responses file's variable of ``region``: ``what`` is "response" (recorded rates), "noise"
    (the SD of the recording noise per neuron, in the responses' units) or "rate" (simulated rates,
    :func:`neurosubset.simulate`)."""
    text = {"response": "recorded responses of region {}", "noise": "recording noise SD per neuron of region {}",
            "rate": "rates of region {}"}
    return {"long_name": text[what].format(region), "region": region, "recording": what, **extra}


# sweep stores (neurosubset.sweeps.store): integrity of the stored points and per-trial flags of meaningless outputs
VARIABLES.update({
    "point_checksum": {"long_name": "blake2b-64 checksum of the point's stored values, written before its status",
                       "units": "1", "comment": "0: none (pending points; stores written before checksums existed "
                                                "are trusted by their status alone)"},
})


# paired comparisons of two allocations of a paired sweep (neurosubset.sweeps.paired.paired_difference)
VARIABLES.update({
    "mp_a": {"long_name": "match probability of allocation a", "units": "1"},
    "mp_b": {"long_name": "match probability of allocation b", "units": "1"},
    "mp_difference": {"long_name": "paired difference of match probability, a minus b", "units": "1"},
    "mp_difference_low": {"long_name": "paired MP difference, 95% exact (conditional Clopper-Pearson) lower bound",
                          "units": "1"},
    "mp_difference_high": {"long_name": "paired MP difference, 95% exact (conditional Clopper-Pearson) upper bound",
                           "units": "1"},
    "discordant_a": {"long_name": "trials matched by allocation a only", "units": "1"},
    "discordant_b": {"long_name": "trials matched by allocation b only", "units": "1"},
    "mcnemar_pvalue": {"long_name": "exact McNemar p-value (two-sided binomial test of the discordant pairs)",
                       "units": "1"},
})

# continuous-time simulation (neurosubset.simulate); the package's time unit is the second
VARIABLES.update({
    "output": {"long_name": "output rates y(t) (output regions, linear read-outs)", "units": "1"},
    "hidden_rate": {"long_name": "hidden rates h(t)", "units": "1"},
    "time": {"long_name": "time since the probe's onset", "units": "s"},
    "time_step": {"long_name": "time step since the probe's onset (discrete dynamics)", "units": "1"},
    "input": {"long_name": "probe input held over each interval", "units": "1"},
    "interval_start": {"long_name": "start of each input interval", "units": "s"},
    "input_neuron": {"long_name": "input neuron (input regions concatenated)", "units": "1"},
    "hidden_neuron": {"long_name": "hidden neuron (hidden regions concatenated)", "units": "1"},
    "max_real_jacobian": {"long_name": "largest real part of the eigenvalues of the vector field's Jacobian at "
                                       "the final state (T^-1 (-I + diag(phi'(z)) W_rec))", "units": "s-1"},
})


def density_meta(key: str) -> dict[str, Any]:
    """Attrs of a density coordinate: the fraction of ``key``'s eligible synapses that is plastic."""
    return {"long_name": f"plastic fraction of the eligible synapses of {key}", "units": "1"}


def fill_value(dtype: np.dtype) -> Any:
    """The 'not computed' value of a stored variable: NaN for floats, False for booleans, 0 for integers (0 is
    ``not_fitted`` for ``fit_status``), "" for strings."""
    if dtype.kind == "f":
        return np.nan
    if dtype.kind == "b":
        return False
    if dtype.kind in "iu":
        return 0
    return ""

# ns.sweep_allocations (neurosubset.sweeps.named): the named allocations and the rounds each point ran
VARIABLES.update({
    "named_allocation": {"long_name": "allocation of the plastic synapses (named by the caller)"},
    "rounds": {"long_name": "restart rounds the point ran (mp_by_round holds its final value after them)",
               "units": "1"},
})


def meta(name: str, **extra: Any) -> dict[str, Any]:
    """A fresh copy of the attrs of variable ``name`` (see :data:`VARIABLES`), updated with ``extra``."""
    return {**VARIABLES[name], **extra}


def mask_meta(weight: str, **extra: Any) -> dict[str, Any]:
    """Attrs of the ``mask_<weight>`` variable: which synapses of ``weight`` are plastic (a boolean flag)."""
    return {"long_name": f"plastic synapses of {weight}", "weight": weight, **BOOLEAN.attrs(), **extra}


_WEIGHT_ROLES = {"teacher": "teacher {}", "student_init": "student {} before fitting", "student": "fitted student {}",
                 "before": "{} before learning"}


def weight_meta(role: str, weight: str) -> dict[str, Any]:
    """Attrs of a stored weight: ``role`` is "teacher", "student_init" (before fitting), "student" (fitted) or
    "before" (a circuit's weights before learning, the weights file of :func:`neurosubset.localize`)."""
    return {"long_name": _WEIGHT_ROLES[role].format(weight), "weight": weight}


def fraction_meta(key: str) -> dict[str, Any]:
    """Attrs of a fraction coordinate (named :func:`var_name` of ``key``): the share of the budget given to
    ``key``, which attr ``fraction_key`` holds as spelled (``"CA3->CA3"``)."""
    return {"long_name": f"fraction of the budget given to {key}", "units": "1", "fraction_key": key}


def cf_attrs(ds: Any, encoding: dict[str, dict[str, Any]] | None = None) -> Any:
    """A shallow copy of the Dataset ``ds`` whose ``flag_values`` have the type its variables are stored with.

    A Zarr store keeps attrs as JSON, so ``flag_values`` read back from a sweep store are int64 whatever the
    variable's type; CF requires the stored type: int8 for booleans (netCDF stores them as int8), the ``dtype`` of
    ``encoding`` (:func:`cf_encoding`) where it sets one, else the variable's own.
    """
    out = ds.copy(deep=False)
    for name, var in out.variables.items():
        if "flag_values" in var.attrs:
            out[name].attrs["flag_values"] = np.asarray(var.attrs["flag_values"]).astype(
                _stored_dtype(var, (encoding or {}).get(str(name), {})))
    return out


def _stored_dtype(var: Any, enc: dict[str, Any]) -> np.dtype:
    if "dtype" in enc:
        return np.dtype(enc["dtype"])
    return np.dtype(np.int8) if var.dtype.kind == "b" else var.dtype


def cf_encoding(ds: Any) -> dict[str, dict[str, Any]]:
    """The netCDF encoding of ``ds`` that keeps it CF-clean: strings as char arrays (netCDF-4 string variables
    are not in cfchecker's CF), 64-bit integers as int32 where their values fit (int64 is CF only from 1.9 on;
    xarray reads them back as int32), coordinates without ``_FillValue`` (CF 2.5.1). Other variables keep
    xarray's.

    Returns
    -------
    dict
        Variable name -> encoding, for ``Dataset.to_netcdf(encoding=...)``.
    """
    out: dict[str, dict[str, Any]] = {}
    for name, var in ds.variables.items():
        enc: dict[str, Any] = {}
        if var.dtype.kind in "USO":
            enc["dtype"] = "S1"
        elif var.dtype.kind in "iu" and var.dtype.itemsize == 8 and _fits_int32(var.values):
            enc["dtype"] = "int32"
        if name in ds.coords and var.dtype.kind in "fc":
            enc["_FillValue"] = None
        if enc:
            out[str(name)] = enc
    return out


def _fits_int32(values: np.ndarray) -> bool:
    info = np.iinfo(np.int32)
    return values.size == 0 or (int(values.min()) >= info.min and int(values.max()) <= info.max)


def with_cf_encoding(ds: Any) -> Any:
    """``ds`` with :func:`cf_encoding` set on its variables (in place), so that a plain ``ds.to_netcdf(path)``
    writes it CF-clean too; returns ``ds``."""
    for name, enc in cf_encoding(ds).items():
        ds[name].encoding.update(enc)
        attrs = ds[name].attrs
        if "flag_values" in attrs:
            attrs["flag_values"] = np.asarray(attrs["flag_values"]).astype(_stored_dtype(ds[name], enc))
    return ds
