"""The files ``neurosubset localize`` reads: the weights before learning (W.nc) and the recording (R.nc).

W.nc (:func:`weights_dataset`): one variable per projection, named as the toolkit names weight variables
(:func:`neurosubset._schema.var_name`: ``"CA3->CA1"`` -> ``CA3_to_CA1``), dims ``(<stem>_post, <stem>_pre)``, attr
``weight`` = the projection's name. A variable is found by its ``weight`` attr first, else by its name, so the
``teacher_*`` / ``student_*`` variables of an ``mp --save-weights`` file do not qualify (they have a trial dim).

R.nc (:func:`responses_dataset`): ``probes`` with dims ``(probe, input)`` or ``(probe, time, input)`` (discrete
dynamics); per recorded region a variable ``response_<stem>`` with dims ``(probe, <stem>_neuron)`` or ``(probe,
time, <stem>_neuron)`` and attrs ``region``, ``recording = "response"``; optionally ``noise_<stem>`` with dims
``(<stem>_neuron,)``, the noise SD per neuron (attr ``recording = "noise"``), for every recorded region or none.
Rates and SDs are in the circuit's rate units.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import xarray as xr

from .._checks import ParameterError
from .._schema import meta, response_meta, var_name, versions, weight_meta
from ..circuit import Circuit
from ..connectivity import name_coords, weight_name_coords
from .inputs import check_recording, check_weights


def weights_dataset(circuit: Circuit, weights: Mapping[str, np.ndarray]) -> xr.Dataset:
    """The weights before learning as the W.nc Dataset (checked: every projection, right shapes)."""
    w = check_weights(circuit, weights)
    data = {}
    for name in circuit.weight_names:
        stem = var_name(name)
        data[stem] = ((f"{stem}_post", f"{stem}_pre"), w[name], weight_meta("before", name))
    coords = {k: v for name in circuit.weight_names
              for k, v in weight_name_coords(circuit, name, var_name(name)).items()}
    return xr.Dataset(data, coords=coords,
                      attrs={"circuit": circuit.to_toml(), "circuit_name": circuit.name, **versions()})


def responses_dataset(circuit: Circuit, probes, responses: Mapping[str, np.ndarray], noise=None) -> xr.Dataset:
    """Probes, responses and (optionally) noise SDs as the R.nc Dataset (checked as :func:`~.fitting.localize`
    checks them)."""
    rec = check_recording(circuit, probes, responses, noise)
    probe_dims = ("probe", "time", "input") if rec.probes.ndim == 3 else ("probe", "input")
    data = {"probes": (probe_dims, rec.probes, meta("probes"))}
    for region, value in rec.responses.items():
        stem = var_name(region)
        dims = ("probe", "time", f"{stem}_neuron") if rec.time else ("probe", f"{stem}_neuron")
        data[f"response_{stem}"] = (dims, value, response_meta(region))
        if rec.noise is not None:
            data[f"noise_{stem}"] = ((f"{stem}_neuron",), rec.noise[region], response_meta(region, "noise"))
    coords = {k: v for region in rec.responses for k, v in name_coords(circuit, f"{var_name(region)}_neuron",
                                                                           [region]).items()}
    return xr.Dataset(data, coords=coords, attrs={"circuit": circuit.to_toml(), "circuit_name": circuit.name,
                                                  **versions()})


def _label(what: str, source) -> str:
    return what if isinstance(source, xr.Dataset) else f"{what} {str(source)!r}"


def _open(source, what: str) -> xr.Dataset:
    if isinstance(source, xr.Dataset):
        return source
    path = Path(source)
    if not path.is_file():
        raise ParameterError(f"{what} {str(path)!r}: no such file.")
    try:
        with xr.open_dataset(path, engine="h5netcdf") as ds:
            return ds.load()
    except (OSError, ValueError) as exc:
        raise ParameterError(f"{what} {str(path)!r} is not a readable netCDF file ({exc}).") from None


def check_circuit_attrs(ds: xr.Dataset, circuit: Circuit, what: str) -> None:
    """Refuse (one line) a W.nc / R.nc file written for another circuit than ``circuit``.

    The file's ``circuit`` attr (the spec as TOML, written by :func:`weights_dataset` and :func:`responses_dataset`)
    is compared with ``circuit.to_toml()`` field by field (fields that only one side has, such as those a newer
    version adds, are not compared); files without it are compared by ``circuit_name``. Files with neither attr
    (made by hand) are accepted as they are.
    """
    import tomllib

    attrs = ds.attrs
    differ: list[str] = []
    if "circuit" in attrs:
        try:
            stored = tomllib.loads(str(attrs["circuit"]))
        except tomllib.TOMLDecodeError as exc:
            raise ParameterError(f"{what}: its 'circuit' attr is not a readable circuit spec ({exc}).") from None
        spec = tomllib.loads(circuit.to_toml())
        differ = [k for k in spec if k in stored and stored[k] != spec[k]]
        name = stored.get("name", attrs.get("circuit_name"))
    elif "circuit_name" in attrs:
        name = attrs["circuit_name"]
        differ = ["name"] if str(name) != circuit.name else []
    if differ:
        spec = tomllib.loads(circuit.to_toml())
        shown = "; ".join(f"{k}: file {stored[k]!r}, spec {spec[k]!r}" if "circuit" in attrs and
                          not isinstance(spec[k], (dict, list)) else f"{k} differ" for k in differ)
        raise ParameterError(f"{what} was written for circuit {str(name)!r}, not for the spec given "
                             f"({circuit.name!r}): {shown}. Use the files of this circuit, or the spec they were "
                             f"written for.")


def read_weights(source, circuit: Circuit) -> dict[str, np.ndarray]:
    """Weight name -> ``(n_post, n_pre)`` from a W.nc file (path or Dataset), checked against ``circuit``.

    Raises
    ------
    ParameterError
        A projection without a variable, a wrong shape, ... (one line naming the weight).
    """
    ds = _open(source, "--weights")
    check_circuit_attrs(ds, circuit, _label("--weights", source))
    by_attr = {str(v.attrs["weight"]): k for k, v in ds.data_vars.items() if "weight" in v.attrs and v.ndim == 2}
    out = {}
    for name in circuit.weight_names:
        key = by_attr.get(name, var_name(name) if var_name(name) in ds.data_vars else None)
        if key is not None:
            out[name] = ds[key].values
    return check_weights(circuit, out)


def read_responses(source, circuit: Circuit) -> tuple[np.ndarray, dict[str, np.ndarray], dict | None]:
    """``(probes, responses, noise)`` from an R.nc file (path or Dataset), checked against ``circuit``."""
    ds = _open(source, "--responses")
    check_circuit_attrs(ds, circuit, _label("--responses", source))
    if "probes" not in ds.data_vars:
        raise ParameterError("The responses file has no 'probes' variable (probe, input) or (probe, time, input).")
    responses, noise = {}, {}
    for var in ds.data_vars.values():
        kind, region = var.attrs.get("recording"), var.attrs.get("region")
        if kind == "response":
            responses[str(region)] = var.values
        elif kind == "noise":
            noise[str(region)] = var.values
    if not responses:
        raise ParameterError("The responses file has no response variables (attr recording = 'response' and region "
                             "= the region's name, e.g. response_CA1).")
    rec = check_recording(circuit, ds["probes"].values, responses, noise or None)
    return rec.probes, rec.responses, rec.noise
