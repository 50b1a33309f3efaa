"""The attrs (long_name, units) of the variables of the recorded datasets (:mod:`neurosubset.datasets`): the one
place their names are spelled, as :mod:`neurosubset._schema` is for the result variables."""
from __future__ import annotations

from typing import Any

_DFF = {"units": "1", "quantity": "dF/F"}
_ONE = {"units": "1"}

VARIABLES: dict[str, dict[str, Any]] = {
    # ns.datasets.randi2023
    "response": {"long_name": "mean calcium response of the responding neuron to stimulation of the stimulated "
                              "neuron (NaN: not measured, or the diagonal)", **_DFF},
    "self_response": {"long_name": "the stimulated neuron's own mean calcium response", **_DFF},
    "n_trials": {"long_name": "number of trials (finite per-trial amplitudes)", **_ONE},
    "trial_sd": {"long_name": "SD of the per-trial amplitudes (ddof 1; NaN below 2 trials)", **_ONE},
    "q": {"long_name": "false discovery rate of the pair's response (Randi et al. 2023)", **_ONE},
    "trials": {"long_name": "per-trial response amplitudes (NaN-padded)", **_ONE},
    "responding": {"long_name": "responding neuron"},
    "stimulated": {"long_name": "stimulated neuron"},
    # the pooled noise model (neurosubset.datasets.noise)
    "sd_trial": {"long_name": "modelled SD of one trial's amplitude (a_i + b |mean|)", **_ONE},
    "sd_mean": {"long_name": "modelled SD of the pair's mean response (sd_trial / sqrt(n_trials))", **_ONE},
    "sd_floor": {"long_name": "SD of the pair's mean from the responding neuron's floor alone (a_i / sqrt(n_trials)): "
                              "the weights of the fits, which must not shrink with the measured response itself",
                 **_ONE},
    "floor": {"long_name": "noise floor a_i of the responding neuron", **_ONE},
    "floor_dof": {"long_name": "degrees of freedom (trials - 1, summed over its pairs with >= 2 trials) behind the "
                               "floor", **_ONE},
    "outlier_value": {"long_name": "dropped trial amplitude", **_ONE},
}


def meta(name: str) -> dict[str, Any]:
    """A copy of the attrs of dataset variable ``name``."""
    return dict(VARIABLES[name])
