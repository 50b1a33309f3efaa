"""The attrs (long_name, units) of the variables that the scripts of ``analysis/`` store beside the result variables.

The scripts spell no ``long_name`` of their own: every variable of their Datasets takes its attrs from here
(``SCRIPT_VARIABLES[script][name]`` first, for a name whose meaning is the script's own, then
:data:`ANALYSIS_VARIABLES`, then the package's result variables, :data:`neurosubset._schema.VARIABLES`), through
:func:`analysis_meta` (``neurosubset._internal``). Not public API.
"""
from __future__ import annotations

from typing import Any

from ._schema import VARIABLES

_ONE = {"units": "1"}

# variables several analysis scripts store
ANALYSIS_VARIABLES: dict[str, dict[str, Any]] = {
    "n_matched": {"long_name": "trials in which the fitted student matched the teacher", **_ONE},
    "trials": {"long_name": "teacher/student/probe draws", **_ONE},
    "mp_by_round": {"long_name": "match probability after each restart round, JSON list (levels off or still "
                                 "rising)"},
    "median_log10_residual": {"long_name": "median over trials of log10 relative residual", **_ONE},
    "mp_closed_form": {"long_name": "closed-form MP (single linear layer: 1 iff every row has >= min(m, d_in))",
                       **_ONE},
    "case": {"long_name": "case (circuit, allocation)"},
    "config": {"long_name": "circuit configuration"},
    "allocation": {"long_name": "allocation of the plastic synapses"},
    "counts": {"long_name": "plastic synapses per weight (JSON-like text)"},
    "architecture": {"long_name": "circuit name"},
    "circuit": {"long_name": "circuit name"},
    "where": {"long_name": "weights holding the plastic synapses"},
    "within": {"long_name": "weights the allocation could use"},
    "family": {"long_name": "circuit family"},
    "steps": {"long_name": "time steps T", **_ONE},
    "n": {"long_name": "neurons n", **_ONE},
    "nonlinearity": {"long_name": "nonlinearity of the hidden neurons"},
    "panel": {"long_name": "figure panel"},
    "seed": {"long_name": "seed of the draw", **_ONE},
    "certify_s": {"long_name": "wall time of ns.certify (one torch thread)", "units": "s"},
    "fit_s": {"long_name": "wall time of the MP estimate (one torch thread)", "units": "s"},
    "seconds": {"long_name": "wall time of the estimate (one torch thread)", "units": "s"},
    "certify_time": {"long_name": "wall time of ns.certify (one torch thread)", "units": "s"},
    "fit_time": {"long_name": "wall time of the MP estimate (one torch thread)", "units": "s"},
    "share_first_layer": {"long_name": "share of the budget in W1 (2-layer cases)", **_ONE},
    # lrnn_allocations
    "fitted": {"long_name": "1: MP estimated by fitting; 0: MP = 0 proven by the exact certificate (skip_zero: "
                            "verdict zero, nothing fitted)", **_ONE},
    "source": {"long_name": "where MP comes from: 'fit' or 'certificate' (verdict zero, not fitted)"},
    # relu_allocations
    "neurons": {"long_name": "hidden neurons with plastic input synapses", **_ONE},
    "max_per_neuron": {"long_name": "most plastic synapses on one hidden neuron", **_ONE},
    # heuristic_accuracy, theory_vs_empirics
    "heuristic_mp": {"long_name": "heuristic's predicted MP (ns.heuristic(...).mp)", **_ONE},
    "heuristic_verdict": {"long_name": "heuristic's predicted class: zero / one / in-between"},
    "heuristic_effective": {"long_name": "heuristic effective plastic count", **_ONE},
    "heuristic_required": {"long_name": "heuristic estimate of dim V", **_ONE},
    "measured": {"long_name": "measured class: zero (no trial matched) / one (all matched) / in-between"},
    "affine": {"long_name": "outputs affine in the plastic weights (1) or not (0)", **_ONE},
    "h_mp": {"long_name": "heuristic predicted MP", **_ONE},
    "h_effective": {"long_name": "heuristic effective plastic count", **_ONE},
    "h_required": {"long_name": "heuristic estimate of dim V", **_ONE},
    "h_verdict": {"long_name": "heuristic's predicted class"},
    "n_equations": {"long_name": "equations m * n_out", **_ONE},
    "plastic_gap_log10": {"long_name": "log10 singular-value gap at the plastic rank", **_ONE},
    "full_gap_log10": {"long_name": "log10 singular-value gap at the full rank", **_ONE},
    # digits_allocations
    "train_accuracy": {"long_name": "training-set accuracy after training", **_ONE},
    "test_accuracy": {"long_name": "held-out test accuracy after training", **_ONE},
    "train_loss": {"long_name": "training cross-entropy", "units": "nats"},
    "test_loss": {"long_name": "test cross-entropy", "units": "nats"},
    "plastic_W1": {"long_name": "plastic synapses in W1 (input -> hidden)", **_ONE},
    "plastic_W2": {"long_name": "plastic synapses in W2 (hidden -> output)", **_ONE},
    "rows_touched": {"long_name": "postsynaptic neurons with at least one plastic input synapse", **_ONE},
    # ei_allocations
    "n_unstable": {"long_name": "trials whose best fit matched with an unstable student", **_ONE},
    "n_infeasible": {"long_name": "trials proven solvable only with signs Dale's law forbids", **_ONE},
    "n_sign_violations": {"long_name": "fitted plastic values of the wrong sign, summed over trials", **_ONE},
    "n_matched_unstable": {"long_name": "matched trials whose student is unstable", **_ONE},
    "rejected_draws": {"long_name": "unstable teacher/student draws rejected (stable only)", **_ONE},
    # continuous_allocations (tau, dt: SCRIPT_VARIABLES)
    "tau_ratio": {"long_name": "tau / duration", **_ONE},
    # scaling
    "m_critical": {"long_name": "largest m with plastic rank = dim V (MP > 0 up to it, MP = 0 beyond)", **_ONE},
    "m_critical_over_n": {"long_name": "critical probes per neuron m_c / n", **_ONE},
    "q": {"long_name": "stacked input dimension (ranks fixed for m >= q)", **_ONE},
    # localize_demo
    "recording": {"long_name": "recorded regions"},
    "noise": {"long_name": "noise SD relative to each neuron's response SD across probes", **_ONE},
    "heldout_chi2_per_value": {"long_name": "held-out chi-square per recorded value (NaN without noise; ~1 if "
                                            "consistent)", **_ONE},
    "exact": {"long_name": "decided exactly (affine: least squares); else the LM's local minimum", **_ONE},
    "true_place": {"long_name": "place of the changed projection in localize's ranking", **_ONE},
    "changed_synapses": {"long_name": "synapses of the changed projection that changed", **_ONE},
    # celegans_allocations, celegans_mp
    "constraint": {"long_name": "biological constraints while fitting (none, or Dale's law + stable students)"},
    "decision_counts": {"long_name": "decider that settled the trials -> trials (JSON)"},
    "fit_status_count": {"long_name": "trials per fit status", **_ONE},
    "median_residual": {"long_name": "median over trials of the relative residual (decision rank_certificate: the "
                                     "student as drawn, not fitted)", **_ONE},
    "gap_junctions": {"long_name": "the circuit has the fixed gap-junction Laplacian (never plastic)", **_ONE},
    "group": {"long_name": "projections the budget was confined to"},
    "block": {"long_name": "cell-type block PRE->POST"},
    "block_plastic": {"long_name": "plastic synapses in the cell-type block", **_ONE},
    "stage": {"long_name": "Witvliet 2021 developmental stage", **_ONE},
    "stage_allocation": {"long_name": "allocation compared over the stages"},
    "stage_plastic_rank": {"long_name": "generic rank of d(outputs)/d(plastic weights) at the stage", **_ONE},
    "stage_full_rank": {"long_name": "dim V at the stage", **_ONE},
    "stage_minimal_budget": {"long_name": "minimal budget (ns.minimal_budget) at the stage", **_ONE},
    "stage_optimal_onto_motor": {"long_name": "synapses of the optimal allocation onto motor neurons", **_ONE},
    "stage_neurons": {"long_name": "neurons at the stage", **_ONE},
    "stage_chemical": {"long_name": "chemical synapses at the stage", **_ONE},
}

# names whose meaning is one script's own (script name without .py -> name -> attrs)
SCRIPT_VARIABLES: dict[str, dict[str, dict[str, Any]]] = {
    "localize_demo": {
        "place": {"long_name": "place in localize's ranking (1 = best explains the held-out probes)", **_ONE},
        "rank": {"long_name": "Jacobian rank of the recorded responses w.r.t. the candidate's synapses at the fit",
                 **_ONE},
        "n_plastic": {"long_name": "synapses of the candidate projection (all plastic)", **_ONE},
        "residual": {"long_name": "relative residual on the fit probes", **_ONE},
        "matched": {"long_name": "candidate reproduces the recording (fit and held-out probes)", **_ONE},
        "identifiable": {"long_name": "Jacobian rank equals the candidate's synapses", **_ONE},
        "seed": {"long_name": "seed of the weights, change, probes and noise", **_ONE},
        "seconds": {"long_name": "wall time of one localize call (one torch thread)", "units": "s"},
    },
    "celegans_allocations": {
        "n_plastic": {"long_name": "plastic synapses of the allocation", **_ONE},
        "dale": {"long_name": "Dale's law kept (1) or not (0)", **_ONE},
        "budget": {"long_name": "plastic synapses asked for M", **_ONE},
    },
    "celegans_biological": {
        "signs": {"long_name": "source of the synapse signs: dale (transmitter, per neuron) or fenyves2020 (per "
                               "synapse, from postsynaptic receptors; complex / no prediction left free)"},
        "n_plastic": {"long_name": "plastic synapses of the allocation", **_ONE},
        "n_proven_match": {"long_name": "trials with a Lyapunov-certified stable signed witness", **_ONE},
        "n_no_match_lp": {"long_name": "trials proven to have no match within K by a sign-cone LP (Farkas ray "
                                       "checked in exact rationals)", **_ONE},
        "n_no_match_bb": {"long_name": "trials proven to have no match within K by SCIP's spatial branch and "
                                       "bound", **_ONE},
        "n_undecided": {"long_name": "trials neither matched nor refuted within the per-trial caps", **_ONE},
        "decided_fraction": {"long_name": "fraction of trials decided (proven match or proven no match within "
                                          "K)", **_ONE},
        "witness_scale_median": {"long_name": "median witness_scale over the proven matches", "units": "1"},
        "witness_scale_max": {"long_name": "largest witness_scale over the proven matches", "units": "1"},
        "seconds": {"long_name": "wall time of the allocation's trials (one torch thread, shared 2-core machine)",
                    "units": "s"},
        "cpu_seconds": {"long_name": "CPU time of the allocation's trials (the process's, one torch thread)",
                        "units": "s"},
    },
    "continuous_allocations": {
        "tau": {"long_name": "time constant of the recurrent neurons", "units": "s"},
        "dt": {"long_name": "RK4 time step", "units": "s"},
    },
    "digits_allocations": {
        "seed": {"long_name": "seed of the split, init and allocation", **_ONE},
    },
    "scaling": {
        "verdict": {"long_name": "exact certificate verdict ('' where m is not on that n's grid)"},
        "strategy": VARIABLES["strategy"],
    },
}


def analysis_meta(name: str, script: str = "") -> dict[str, Any]:
    """A fresh copy of the attrs of an analysis variable ``name`` of ``script``; {} for a name no table holds."""
    for table in (SCRIPT_VARIABLES.get(script, {}), ANALYSIS_VARIABLES, VARIABLES):
        if name in table:
            return dict(table[name])
    return {}
