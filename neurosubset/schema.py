"""The declared layout of every Dataset kind the toolkit writes, and :func:`validate_dataset`.

A :class:`Layout` says, for one kind of result, which variables and coordinates it holds (each with its dims) and
which attrs it carries; :data:`LAYOUTS` holds one per kind:

============== ================================================================================================
kind           written by
============== ================================================================================================
``mp``         :func:`neurosubset.match_probability` (``neurosubset mp --out``)
``sweep``      :func:`neurosubset.sweep`, in memory and in its Zarr store (every ``mp`` per-trial, per-round and
               scalar variable with the point dims in front)
``certificate`` the ``certificate_*`` attrs (and ``plastic_rank`` / ``full_rank``) of an ``mp`` result: the
               certificate is not a table of its own (a sweep stores ``plastic_rank``, ``full_rank``, ``verdict``
               per point)
``spiking_check``   :func:`neurosubset.spiking_check`
``spiking_compare`` :func:`neurosubset.spiking_compare` and :func:`neurosubset.spikecheck`
``localize``   :func:`neurosubset.localize` (``neurosubset localize --out``)
``fit_responses`` :func:`neurosubset.fit_responses`
``simulate``   :func:`neurosubset.simulate` (``neurosubset simulate --out``)
``responses``  the recording file R.nc (:func:`neurosubset.responses.files.responses_dataset`)
``weights``    the weights file W.nc (:func:`neurosubset.responses.files.weights_dataset`)
============== ================================================================================================

Names, ``long_name``, ``units`` and flags stay in :mod:`neurosubset._schema` (its :data:`VARIABLES`); a
:class:`Variable` names the entry it takes its attrs from (:attr:`Variable.attrs`). Each variable and attr is
``required`` (every file of the kind, including those of earlier versions, has it), ``current`` (this version
always writes it; files of earlier versions may lack it: :func:`validate_dataset` with ``legacy=True``) or
optional (written only in some configurations: steady circuits, ``certificate``, ``return_weights``, noise, ...,
or new and not yet written by every writer). Names with ``{stem}`` stand for one variable per weight or region
(:func:`neurosubset._schema.var_name` of its name: ``mask_{stem}`` is ``mask_CA3_to_CA1``). A sweep's variables
are declared with their own dims; the sweep's point dims (those of ``status``: ``budget``, ``point`` or one dim
per fraction key, ``dale`` / ``stable_required`` where swept, ``strategy``, ``m``) come in front.

Examples
--------
>>> import neurosubset as ns
>>> ff = ns.feedforward([3, 4, 2])
>>> ds = ns.match_probability(ff, ns.allocate(ff, 4, within=["W2"]), m=2, trials=3)     # doctest: +SKIP
>>> ns.validate_dataset(ds)                                                             # doctest: +SKIP
'mp'
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import _schema
from ._checks import NeurosubsetError

__all__ = ["CURRENT", "KINDS", "LAYOUTS", "OPTIONAL", "POINT_CONDITIONS", "REQUIRED", "Layout", "LayoutError",
           "Variable", "infer_kind", "sweep_point_variables", "validate_dataset"]

# how much a variable or attr is required
REQUIRED = "required"  # every file of the kind has it, whatever version wrote it
CURRENT = "current"  # this version always writes it; files of earlier versions may lack it (legacy=True)
OPTIONAL = "optional"  # written in some configurations only (or new and not yet written by every writer)
_LEVELS = (REQUIRED, CURRENT, OPTIONAL)
_STEM = "{stem}"


# What a sweep point variable's presence depends on (Variable.when): each condition of one point (its circuit,
# allocation and fit options), as neurosubset.sweeps.point.point_conditions evaluates it, and as
# neurosubset.match_probability decides what to write (tests/test_schema_layouts.py checks the two agree)
POINT_CONDITIONS: dict[str, str] = {
    "certificate": "the certificate option is on",
    "stability_reported": "the circuit has a stability rule (neurosubset.dynamics.stability.stability_applies: "
                          "steady, linear continuous) or its dynamics reports local stability (Dynamics."
                          "local_stability: nonlinear continuous)",
    "stable_required": "the point's stable option is on",
    "signed_plastic": "the point's allocation has a plastic synapse from a signed region (Dale's law can be broken)",
    "constraint_acts": "Dale's law or the stable option acts at the point: the dale option is on and the allocation "
                       "has a signed plastic synapse, or the stable option is on and the circuit has a stability rule "
                       "(neurosubset.dynamics.stability.stability_applies: steady, linear continuous)",
}


class LayoutError(NeurosubsetError):
    """A Dataset does not follow its kind's declared layout (:func:`validate_dataset`); the message lists every
    problem found."""


@dataclass(frozen=True)
class Variable:
    """One declared variable (or coordinate) of a layout.

    Attributes
    ----------
    name : str
        The name in the Dataset; ``{stem}`` stands for one variable per weight or region (any stem).
    dims : tuple of tuple of str
        The dims it may have (alternatives, e.g. with and without ``time``); ``{stem}`` in a dim is the name's stem.
        A sweep's point dims are not included.
    need : {"required", "current", "optional"}
        See the module docstring.
    meta : str or None
        The :data:`neurosubset._schema.VARIABLES` entry of its attrs (default: ``name``); None where the attrs
        are built per weight or region (:func:`neurosubset._schema.mask_meta`, ``response_meta``, ...).
    dtype : str or None
        A sweep point variable's stored dtype (numpy spelling: ``"float64"``, ``"<U8"``); None: not a point
        variable. A sweep's template is built from these before any point runs (:func:`sweep_point_variables`).
    when : tuple of str
        The conditions (keys of :data:`POINT_CONDITIONS`) under which a point writes it, all of them; ``()``:
        always. A sweep has it where any of its points writes it.
    absent : int, float or None
        What a sweep stores at a computed point that does not write it (None: the dtype's not-computed fill,
        :func:`neurosubset._schema.fill_value`); recorded in the variable's ``absent_value`` attr
        (:attr:`sweep_attrs`).
    attr : str or None
        The attr of a point's mp result that a sweep stores as this variable (``certificate_verdict`` ->
        ``verdict``); None: the result's variable of the same name.
    """

    name: str
    dims: tuple[tuple[str, ...], ...]
    need: str = REQUIRED
    meta: str | None = ""
    dtype: str | None = None
    when: tuple[str, ...] = ()
    absent: int | float | None = None
    attr: str | None = None

    def __post_init__(self) -> None:
        if self.need not in _LEVELS:
            raise ValueError(f"Variable {self.name!r}: need must be one of {list(_LEVELS)}. Got {self.need!r}.")
        unknown = [c for c in self.when if c not in POINT_CONDITIONS]
        if unknown:
            raise ValueError(f"Variable {self.name!r}: conditions {unknown} are not in POINT_CONDITIONS "
                             f"{list(POINT_CONDITIONS)}.")
        if self.dtype is not None:
            object.__setattr__(self, "dtype", np.dtype(self.dtype).str if np.dtype(self.dtype).kind == "U"
                               else np.dtype(self.dtype).name)
        if self.meta == "":
            object.__setattr__(self, "meta", None if _STEM in self.name else self.name)
        if self.meta is not None and self.meta not in _schema.VARIABLES:
            raise ValueError(f"Variable {self.name!r}: {self.meta!r} is not in neurosubset._schema.VARIABLES.")

    @property
    def attrs(self) -> dict[str, Any]:
        """Its attrs as :func:`neurosubset._schema.meta` gives them (``{}`` for per-weight / per-region ones;
        ``long_name`` templates such as the spiking check's ``{who}`` left unfilled)."""
        return {} if self.meta is None else _schema.meta(self.meta)

    @property
    def pattern(self) -> re.Pattern[str]:
        """A regular expression matching the name (``{stem}`` as a group)."""
        return re.compile("^" + re.escape(self.name).replace(re.escape(_STEM), r"(?P<stem>\w+)") + "$")

    def dims_for(self, stem: str | None = None) -> tuple[tuple[str, ...], ...]:
        """The allowed dims with ``{stem}`` filled in."""
        return tuple(tuple(d.replace(_STEM, stem or "") for d in alt) for alt in self.dims)

    def applies(self, conditions: Mapping[str, bool]) -> bool:
        """Whether a point with these :data:`POINT_CONDITIONS` values writes it."""
        return all(conditions[c] for c in self.when)

    @property
    def sweep_attrs(self) -> dict[str, Any]:
        """Its attrs in a sweep: :attr:`attrs`, and where a computed point may lack it the value stored there
        (``absent_value``, with a ``comment`` saying when)."""
        if self.absent is None:
            return self.attrs
        when = " and ".join(POINT_CONDITIONS[c] for c in self.when)
        return {**self.attrs, "absent_value": self.absent,
                "comment": f"{self.absent} at computed points where it does not apply (it applies where {when}); "
                           f"points not computed (status) hold {_schema.fill_value(np.dtype(self.dtype))}"}


def _var(name: str, *dims: str, need: str = REQUIRED, meta: str | None = "", dtype: str | None = None,
         when: str = "", absent: int | float | None = None, attr: str | None = None) -> Variable:
    """A :class:`Variable`; each of ``dims`` is one alternative, written as space-separated dim names
    (``""``: a scalar; none given: a scalar); ``when``: space-separated condition names."""
    return Variable(name, tuple(tuple(d.split()) for d in dims) or ((),), need, meta, dtype, tuple(when.split()),
                    absent, attr)


@dataclass(frozen=True)
class Layout:
    """The declared layout of one Dataset kind.

    Attributes
    ----------
    kind : str
    writer : str
        The function(s) that write it.
    variables, coords : tuple of Variable
        Data variables and coordinates.
    attrs : dict
        Attr name -> need (``"required"``, ``"current"`` or ``"optional"``).
    point_dims : bool
        Whether variables carry the sweep's point dims (those of ``status``) in front of their own.
    """

    kind: str
    writer: str
    variables: tuple[Variable, ...]
    coords: tuple[Variable, ...] = ()
    attrs: Mapping[str, str] = field(default_factory=dict)
    point_dims: bool = False

    @property
    def dims(self) -> tuple[str, ...]:
        """Every dim its variables and coordinates may have (``{stem}`` ones as written; a sweep's point dims
        not included)."""
        out: dict[str, None] = {}
        for var in (*self.variables, *self.coords):
            for alt in var.dims:
                out.update(dict.fromkeys(alt))
        return tuple(out)

    def required(self, *, legacy: bool = False) -> tuple[str, ...]:
        """Names of the variables every Dataset of the kind has (``legacy``: also those of earlier versions)."""
        needs = (REQUIRED,) if legacy else (REQUIRED, CURRENT)
        return tuple(v.name for v in self.variables if v.need in needs)

    def variable(self, name: str) -> Variable:
        """The declared variable or coordinate that ``name`` is (a ``{stem}`` one matched by its pattern)."""
        found = _match(name, (*self.variables, *self.coords))
        if found is None:
            raise KeyError(f"{name!r} is not a variable of the {self.kind!r} layout.")
        return found[0]


def _match(name: str, declared: tuple[Variable, ...]) -> tuple[Variable, str | None] | None:
    """The declared variable ``name`` is, and its stem: exact names first, then patterns in declared order."""
    for var in declared:
        if var.name == name:
            return var, None
    for var in declared:
        if _STEM in var.name:
            hit = var.pattern.match(name)
            if hit:
                return var, hit.group("stem")
    return None


# neuron names along a dim, where the circuit names its neurons (neurosubset.connectivity.name_coords): the dim
# "neuron" has "neuron_name", any other dim D "D_neuron_name"
_NAMES = (_var("neuron_name", "neuron", need=OPTIONAL), _var("{stem}_neuron_name", "{stem}", need=OPTIONAL,
                                                                 meta="neuron_name"))


def _attrs(required: str = "", current: str = "", optional: str = "") -> dict[str, str]:
    out = dict.fromkeys(required.split(), REQUIRED)
    out.update(dict.fromkeys(current.split(), CURRENT))
    out.update(dict.fromkeys(optional.split(), OPTIONAL))
    return out


# version attrs (neurosubset._schema.versions): the package versions are in every file; Conventions since the CF work
_VERSIONS = _attrs(" ".join(k for k in _schema.versions() if k != "Conventions"), "Conventions")

# ------------------------------------------------------------------------------------------------ certificate
# the fields of neurosubset.theory.Certificate, each an attr certificate_<field> of an mp result
# (tests/test_schema_layouts.py checks these against the dataclass); earlier files carry the first group only
_CERTIFICATE_FIELDS = _attrs(
    "plastic_rank full_rank affine verdict m n_plastic n_synapses n_equations points rtol method plastic_gap "
    "full_gap estimate",
    "dale stable plastic_tail full_tail exact decisive prime error_bound")
CERTIFICATE_ATTRS: dict[str, str] = {f"certificate_{k}": v for k, v in _CERTIFICATE_FIELDS.items()}

CERTIFICATE = Layout(
    "certificate", "match_probability(certificate=True): Certificate.to_attrs() and the ranks as variables",
    variables=(_var("plastic_rank"), _var("full_rank")),
    attrs=CERTIFICATE_ATTRS)

# ------------------------------------------------------------------------------------------------ mp
# per-trial, per-round and scalar variables of one estimate: the mp result's, and a sweep's per point
_ESTIMATE = (
    _var("matched", "trial", dtype="bool"), _var("residual", "trial", dtype="float64"),
    _var("restarts", "trial", dtype="int64"), _var("fit_status", "trial", need=CURRENT, dtype="int8"),
    _var("mp", dtype="float64"), _var("mp_low", dtype="float64"), _var("mp_high", dtype="float64"),
    _var("mp_first_round", dtype="float64"), _var("mp_by_round", "round", dtype="float64"),
    # steady and continuous circuits; with the stable option there also the rejected draws
    _var("stable", "trial", need=OPTIONAL, dtype="bool", when="stability_reported"),
    _var("max_real_eig", "trial", need=OPTIONAL, dtype="float64", when="stability_reported"),
    _var("teacher_rejected", "trial", need=OPTIONAL, dtype="int64", when="stability_reported stable_required"),
    _var("student_rejected", "trial", need=OPTIONAL, dtype="int64", when="stability_reported stable_required"),
    # signed plastic synapses; -1 (not "0 violations") at a sweep's points without one
    _var("sign_violations", "trial", need=OPTIONAL, dtype="int64", when="signed_plastic", absent=-1),
    _var("decision", "trial", need=CURRENT, dtype="int8"),
    _var("outcome", "trial", need=OPTIONAL, dtype="int8"),
    # dale or stable acting (issue 28): what settled each trial, and the size of each witness
    _var("proof_kind", "trial", need=OPTIONAL, dtype="int8", when="constraint_acts"),
    _var("witness_scale", "trial", need=OPTIONAL, dtype="float64", when="constraint_acts"),
    _var("mp_lower", need=OPTIONAL, dtype="float64"), _var("mp_upper", need=OPTIONAL, dtype="float64"),
    # certificate=True
    _var("plastic_rank", need=OPTIONAL, dtype="float64", when="certificate"),
    _var("full_rank", need=OPTIONAL, dtype="float64", when="certificate"),
)

MP = Layout(
    "mp", "match_probability",
    variables=(
        *_ESTIMATE,
        _var("mask_synapse", "synapse", need=CURRENT),
        # earlier files: one mask per weight instead of mask_synapse
        _var("mask_{stem}", "{stem}_post {stem}_pre", need=OPTIONAL, meta=None),
        # return_weights=True
        _var("teacher_{stem}", "trial {stem}_post {stem}_pre", need=OPTIONAL, meta=None),
        _var("student_init_{stem}", "trial {stem}_post {stem}_pre", need=OPTIONAL, meta=None),
        _var("student_{stem}", "trial {stem}_post {stem}_pre", need=OPTIONAL, meta=None),
        _var("probes", "trial probe input", "trial probe step input", need=OPTIONAL),
        _var("theta", "trial plastic_synapse", need=OPTIONAL),
    ),
    coords=(
        _var("trial", "trial"), _var("round", "round"), _var("m"),
        _var("synapse_weight", "synapse", need=CURRENT), _var("synapse_post", "synapse", need=CURRENT),
        _var("synapse_pre", "synapse", need=CURRENT),
        _var("synapse_post_name", "synapse", need=OPTIONAL), _var("synapse_pre_name", "synapse", need=OPTIONAL),
        *_NAMES,
    ),
    attrs={
        **_attrs("circuit circuit_name allocation_strategy allocation_hash allocation_size allocation_counts m trials "
                 "seed solver tolerance restarts_per_round max_rounds lm_steps config_hash last_round_gain",
                 "title solver_requested dale stable decision_kind still_improving",
                 # still_improving: last_round_gain above _schema.LAST_ROUND_GAIN_FLAG (files before it lack it)
                 # lm_widen: hashed only when not the default; spec_unstable_fraction: steady circuits;
                 # lm_patience: where it can stop a trial early; effort_converged: files before it lack it
                 "lm_widen spec_unstable_fraction lm_patience effort_converged"),
        **_VERSIONS,
        **{k: OPTIONAL for k in CERTIFICATE_ATTRS},  # checked as the certificate layout where a certificate is there
    })

# ------------------------------------------------------------------------------------------------ sweep
SWEEP = Layout(
    "sweep", "sweep (in memory and its Zarr store; neurosubset sweep --out)",
    variables=(
        _var("status"),
        *_ESTIMATE,
        # attrs of a point's mp result, stored per point (neurosubset.sweeps.point)
        _var("solver", dtype="<U8", attr="solver"), _var("last_round_gain", dtype="float64", attr="last_round_gain"),
        # exact or lower bound, per point (stores before it lack it: neurosubset.sweeps.table.point_decision_kind
        # reads those from decision and outcome)
        _var("decision_kind", need=CURRENT, meta="point_decision_kind", dtype="<U16", attr="decision_kind"),
        _var("verdict", need=OPTIONAL, dtype="<U64", when="certificate", attr="certificate_verdict"),
        # integrity of the stored points: in the Zarr store only (readers drop it); stores before checksums lack it
        _var("point_checksum", need=OPTIONAL),
        # the allocation dims (budget, point or the fraction keys, strategy) in front of the weight's own
        _var("mask_{stem}", "{stem}_post {stem}_pre", meta=None),
    ),
    coords=(
        _var("strategy", "strategy"), _var("m", "m"), _var("trial", "trial"), _var("round", "round"),
        _var("budget", "budget", "point"),
        _var("dale", "dale", need=OPTIONAL), _var("stable_required", "stable_required", need=OPTIONAL),
        *_NAMES,
        # each fraction key's share (a density grid's density) under its var_name, attr fraction_key: along point;
        # in stores of format 1 (dense) a dim of its own, named as the key
        _var("{stem}", "point", "{stem}", need=OPTIONAL, meta=None),
    ),
    attrs={
        **_attrs("title circuit circuit_name fraction_keys fraction_points within trials seed tolerance "
                 "solver_requested restarts_per_round max_rounds lm_steps certificate seeding sweep_config config_hash "
                 "zarr_version",
                 "dale stable",
                 # paired sweeps; the point layout (store format 2); lm_patience where it can stop a trial early
                 "trial_seed layout paired fraction_grid lm_patience"),
        **_VERSIONS,
    },
    point_dims=True)

# ------------------------------------------------------------------------------------------------ spiking
_SPIKING_SETTINGS = (*(_var(name) for name in ("tau", "dt", "duration", "warmup", "rate_unit", "input_baseline")),
                     _var("baseline_rate", "cell"), _var("input_rate", "probe input"))
_SPIKING_COORDS = (_var("probe", "probe"), _var("neuron", "neuron"), _var("region", "neuron", meta="neuron_region"),
                   _var("index_in_region", "neuron"), *_NAMES)
_SPIKING_ATTRS = {
    **_attrs("title repeats seed margin max_clipped brian2_version codegen_target circuit circuit_name "
             "agreement_rule mapping inhibition_stabilized clipped_fraction_all_max saturated_fraction_max "
             "predicted_clipped_fraction_max rectification_dominated flags",
             # how the rate unit was chosen (issue 27; files before it lack them)
             optional="rate_unit_choice predicted_output_rate_max duration_for_same_precision max_rate"),
    **_VERSIONS,
}
_RATES = ("rate_model", "rate_spiking", "rate_spiking_se", "clipped_fraction")

SPIKING_CHECK = Layout(
    "spiking_check", "spiking_check",
    variables=(*(_var(name, "probe neuron") for name in _RATES), _var("z", "probe neuron"),
               _var("agree", "probe neuron"), _var("mu", "cell"), *_SPIKING_SETTINGS),
    coords=_SPIKING_COORDS,
    attrs={**_SPIKING_ATTRS, **_attrs("fraction_agree spectral_radius max_real_eig")})

# one student: the student dim squeezed out; several (spikecheck: fitted, unfitted): a student dim in front
SPIKING_COMPARE = Layout(
    "spiking_compare", "spiking_compare, spikecheck",
    variables=(
        *(_var(f"{name}_teacher", "probe neuron", meta=name) for name in _RATES),
        *(_var(f"{name}_student", "student probe neuron", "probe neuron", meta=name) for name in _RATES),
        _var("z_model_teacher", "probe neuron"),
        _var("z", "student probe neuron", "probe neuron", meta="z_compare"),
        _var("agree", "student probe neuron", "probe neuron"),
        *(_var(name, "student", "") for name in ("fraction_agree", "median_abs_z", "fraction_abs_z_above_3")),
        _var("rate_model_difference", "student probe neuron", "probe neuron"),
        _var("mu_teacher", "cell"), _var("mu_student", "student cell", "cell"),
        *_SPIKING_SETTINGS),
    coords=(*_SPIKING_COORDS, _var("student", "student", need=OPTIONAL)),
    attrs={**_SPIKING_ATTRS,
           **_attrs("fraction_agree_teacher_model spectral_radius_teacher max_real_eig_teacher",
                    # spikecheck: the fit's draw; continuous circuits
                    optional="budget m allocation_strategy matched residual duration_over_tau")})

# ------------------------------------------------------------------------------------------------ responses
_FIT_ATTRS = {
    **_attrs("circuit circuit_name dynamics recorded_regions time_resolved noise fit_probes heldout_probes "
             "heldout_index tolerance alpha dale stable seed decision_kind"),
    **_VERSIONS,
}


def _fit_variables(c: str) -> tuple[Variable, ...]:
    """The variables of a fit of recorded responses, per candidate (``c = "candidate "``) or of one fit (``""``)."""
    return (
        _var("residual", c, meta="responses_residual"), _var("region_residual", f"{c}region"),
        _var("rank", c, meta="jacobian_rank"), _var("identifiable", c), _var("n_plastic", c), _var("decision", c),
        _var("matched", c, meta="responses_matched"),
        _var("theta", f"{c}synapse"), _var("theta_before", "synapse"), _var("change", f"{c}synapse"),
        # noise given; held-out probes; steady circuits
        *(_var(name, c, need=OPTIONAL) for name in ("chi_square", "dof", "p_value", "heldout_residual",
                                                     "heldout_chi_square", "heldout_p_value", "stable",
                                                     "max_real_eig")),
        _var("region_chi_square", f"{c}region", need=OPTIONAL),
    )


_SYNAPSE_COORDS = (_var("synapse", "synapse"), _var("synapse_weight", "synapse"), _var("synapse_post", "synapse"),
                   _var("synapse_pre", "synapse"), _var("synapse_post_name", "synapse", need=OPTIONAL),
                   _var("synapse_pre_name", "synapse", need=OPTIONAL), *_NAMES)

LOCALIZE = Layout(
    "localize", "localize (neurosubset localize --out)",
    variables=(*_fit_variables("candidate "), _var("plastic", "candidate synapse"), _var("place", "candidate"),
               _var("decision_kind", "candidate"),
               # candidates that cannot be told apart from the first-placed one (files before it lack them)
               *(_var(name, "candidate", need=CURRENT) for name in ("ambiguous", "structurally_equivalent",
                                                                    "statistically_tied"))),
    coords=(_var("candidate", "candidate"), _var("region", "region"), *_SYNAPSE_COORDS),
    attrs={**_FIT_ATTRS, **_attrs(current="ambiguous equally_good tie_rule")})

FIT_RESPONSES = Layout(
    "fit_responses", "fit_responses",
    variables=_fit_variables(""),
    coords=(_var("region", "region"), *_SYNAPSE_COORDS),
    attrs=_FIT_ATTRS)

RESPONSES = Layout(
    "responses", "the recording file R.nc (neurosubset.responses.files.responses_dataset)",
    variables=(_var("probes", "probe input", "probe time input"),
               _var("response_{stem}", "probe {stem}_neuron", "probe time {stem}_neuron", meta=None),
               _var("noise_{stem}", "{stem}_neuron", need=OPTIONAL, meta=None)),
    coords=_NAMES,
    attrs={**_attrs("circuit_name"), **_VERSIONS})

WEIGHTS = Layout(
    "weights", "the weights file W.nc (neurosubset.responses.files.weights_dataset)",
    variables=(_var("{stem}", "{stem}_post {stem}_pre", meta=None),),
    coords=_NAMES,
    attrs={**_attrs("circuit circuit_name"), **_VERSIONS})

# ------------------------------------------------------------------------------------------------ simulate
SIMULATE = Layout(
    "simulate", "simulate (neurosubset simulate --out)",
    variables=(
        _var("output", "probe neuron", "probe time neuron"),
        _var("input", "probe input_neuron", "probe interval input_neuron"),
        # hidden=True; continuous circuits
        _var("hidden_rate", "probe hidden_neuron", "probe time hidden_neuron", need=OPTIONAL),
        _var("max_real_jacobian", "probe", need=OPTIONAL),
        # the regions asked for (default: every non-input region)
        _var("rate_{stem}", "probe {stem}_neuron", "probe time {stem}_neuron", need=OPTIONAL, meta=None),
    ),
    coords=(_var("probe", "probe"), _var("neuron", "neuron"), _var("region", "neuron", meta="neuron_region"),
            _var("index_in_region", "neuron"), _var("input_neuron", "input_neuron", meta="neuron"),
            _var("input_region", "input_neuron", meta="neuron_region"),
            _var("input_index_in_region", "input_neuron", meta="index_in_region"),
            # hidden=True
            _var("hidden_neuron", "hidden_neuron", need=OPTIONAL, meta="neuron"),
            _var("hidden_region", "hidden_neuron", need=OPTIONAL, meta="neuron_region"),
            _var("hidden_index_in_region", "hidden_neuron", need=OPTIONAL, meta="index_in_region"), *_NAMES,
            # dynamics with time (continuous: s, discrete: steps); continuous circuits
            _var("time", "time", need=OPTIONAL, meta=None), _var("interval_start", "interval", need=OPTIONAL)),
    attrs={**_attrs("circuit circuit_name dynamics time_units", optional="integrator dt duration"), **_VERSIONS})

LAYOUTS: dict[str, Layout] = {layout.kind: layout for layout in (
    MP, SWEEP, CERTIFICATE, SPIKING_CHECK, SPIKING_COMPARE, LOCALIZE, FIT_RESPONSES, SIMULATE, RESPONSES, WEIGHTS)}
KINDS = tuple(LAYOUTS)


def sweep_point_variables(*conditions: Mapping[str, bool]) -> tuple[Variable, ...]:
    """The declared per-point variables of a sweep (those with a :attr:`Variable.dtype`, in their declared order)
    that any of the given points writes, each point given by its :data:`POINT_CONDITIONS` values (none given: the
    variables every point writes)."""
    return tuple(var for var in SWEEP.variables if var.dtype is not None
                 and (not var.when or any(var.applies(c) for c in conditions)))


# ------------------------------------------------------------------------------------------------ inference
def _is_sweep(ds: Any) -> bool:
    if "status" not in ds.variables:
        return False
    return (str(ds.attrs.get("title", "")).startswith("neurosubset sweep")
            or ds["status"].attrs.get("flag_meanings") == _schema.VARIABLES["status"]["flag_meanings"])


def _is_responses(ds: Any) -> bool:
    return "probes" in ds.variables and "trial" not in ds.dims and any(
        v.attrs.get("recording") == "response" for v in ds.data_vars.values())


def _is_weights(ds: Any) -> bool:
    return bool(ds.data_vars) and "circuit" in ds.attrs and all(
        "weight" in v.attrs and v.ndim == 2 for v in ds.data_vars.values())


_SIGNS = {
    "sweep": _is_sweep,
    "mp": lambda ds: "mp_by_round" in ds.variables and not _is_sweep(ds),
    "spiking_compare": lambda ds: "rate_model_teacher" in ds.variables,
    "spiking_check": lambda ds: "rate_model" in ds.variables and "rate_spiking" in ds.variables,
    "localize": lambda ds: "place" in ds.variables and "candidate" in ds.dims,
    "fit_responses": lambda ds: "theta_before" in ds.variables and "candidate" not in ds.dims,
    "simulate": lambda ds: "output" in ds.variables and "input" in ds.variables,
    "responses": _is_responses,
    "weights": _is_weights,
}


def infer_kind(ds: Any) -> str:
    """The kind of ``ds`` (a key of :data:`LAYOUTS`) from the variables that mark it.

    Raises
    ------
    LayoutError
        No kind, or more than one, fits (pass ``kind`` to :func:`validate_dataset`).
    """
    found = [kind for kind, sign in _SIGNS.items() if sign(ds)]
    if len(found) != 1:
        what = "no kind" if not found else f"several kinds ({found})"
        names = sorted(map(str, ds.data_vars))
        raise LayoutError(f"Cannot tell the kind of the Dataset: {what} fit its variables {names[:12]}"
                          f"{' ...' if len(names) > 12 else ''}. Pass kind= one of {list(KINDS)}.")
    return found[0]


# ------------------------------------------------------------------------------------------------ validation
def _dims_text(alts: tuple[tuple[str, ...], ...], lead: tuple[str, ...] = ()) -> str:
    """``(a, b) or (a, c)``; ``lead``: a sweep's point dims, in front."""
    return " or ".join(f"({', '.join((*lead, *a))})" if (*lead, *a) else "()" for a in alts)


def _check(ds: Any, layout: Layout, legacy: bool) -> list[str]:
    """Every way ``ds`` differs from ``layout``: missing variables, wrong dims, missing attrs."""
    problems: list[str] = []
    needed = (REQUIRED,) if legacy else (REQUIRED, CURRENT)
    lead: tuple[str, ...] = ()  # a sweep's point dims: those of status (else of mp)
    if layout.point_dims:
        for name in ("status", "mp"):
            if name in ds.data_vars:
                lead = tuple(str(d) for d in ds[name].dims)
                break
    for group, present, what in ((layout.variables, ds.data_vars, "variable"), (layout.coords, ds.coords,
                                                                                 "coordinate")):
        front = lead if group is layout.variables else ()
        for var in group:
            if _STEM in var.name:  # one per weight / region: each name it matches (and no other declared one)
                hits = [(str(n), m.group("stem")) for n, m in ((n, var.pattern.match(str(n))) for n in present)
                        if m and _match(str(n), group)[0] is var]
                if not hits and var.need in needed:
                    problems.append(f"missing {what} {var.name!r} {_dims_text(var.dims, front)} (one per "
                                    f"weight or region: none found)")
                for name, stem in hits:
                    problems += _dims_problem(what, name, present[name], var.dims_for(stem), front,
                                              allocation=layout.point_dims and var.name == "mask_{stem}")
            elif var.name in present:
                problems += _dims_problem(what, var.name, present[var.name], var.dims, front)
            elif var.need in needed:
                problems.append(f"missing {what} {var.name!r} {_dims_text(var.dims, front)}")
    problems += [f"missing attr {name!r}" for name, need in layout.attrs.items()
                 if need in needed and name not in ds.attrs]
    if layout is MP and "certificate_verdict" in ds.attrs:  # a certificate is there: all of it
        problems += [f"certificate: {p}" for p in _check(ds, CERTIFICATE, legacy)]
    return problems


def _dims_problem(what: str, name: str, var: Any, alts: tuple[tuple[str, ...], ...], lead: tuple[str, ...], *,
                  allocation: bool = False) -> list[str]:
    """``[]`` if ``var`` has one of the dims ``alts`` (``lead`` in front), else the problem. ``allocation``: a
    sweep's mask, whose leading dims are the allocation's (the point dims without ``m`` and the flag dims)."""
    dims = tuple(str(d) for d in var.dims)
    if allocation:
        own = alts[0]
        if dims[len(dims) - len(own):] == own and set(dims[:len(dims) - len(own)]) <= set(lead):
            return []
        return [f"{what} {name!r} has dims {dims}, expected (<allocation dims>, {', '.join(own)})"]
    if any(dims == (*lead, *alt) for alt in alts):
        return []
    return [f"{what} {name!r} has dims {dims}, expected {_dims_text(alts, lead)}"]


def validate_dataset(ds: Any, kind: str | None = None, *, legacy: bool = False) -> str:
    """Check ``ds`` against the declared layout of its kind (:data:`LAYOUTS`).

    Parameters
    ----------
    ds : xarray.Dataset
        A result of the toolkit (in memory, or opened from its file or store).
    kind : str, optional
        One of :data:`KINDS`; default: inferred from the variables (:func:`infer_kind`).
    legacy : bool
        Accept files written by earlier versions: what this version always writes but they lack (``"current"``
        variables and attrs, e.g. ``fit_status``, ``mask_synapse``, ``Conventions``) is not required.

    Returns
    -------
    str
        The kind.

    Raises
    ------
    LayoutError
        Every problem in one message: each missing variable (with its dims), variable with other dims, missing
        attr; or the kind is unknown or cannot be inferred.
    """
    if kind is None:
        kind = infer_kind(ds)
    if kind not in LAYOUTS:
        raise LayoutError(f"The 'kind' parameter must be one of {list(KINDS)}. Got {kind!r}.")
    problems = _check(ds, LAYOUTS[kind], bool(legacy))
    if problems:
        raise LayoutError(f"The Dataset does not follow the {kind!r} layout (neurosubset.schema.LAYOUTS[{kind!r}]"
                          f"{', legacy' if legacy else ''}): {'; '.join(problems)}.")
    return kind
