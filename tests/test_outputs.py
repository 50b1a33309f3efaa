"""The one write path: CF encoding happens in :mod:`neurosubset._outputs` alone, and every netCDF file the package
writes goes through it (``neurosubset.write``, the CLI's ``--out``, ``export``).

The builders (``match_probability``, ``localize``, ``fit_responses``, ``simulate``, the spiking checks, the
responses and weights files) return Datasets of values and attrs only; ``tests/test_outputs_cf.py`` runs the CF checkers
on each kind as written by the write path. Here: a scan of the package's source (as ``tests/test_schema.py`` scans
it) and what the writer does to the Dataset it is given.
"""
from __future__ import annotations

import ast
from pathlib import Path

import h5netcdf
import numpy as np
import pytest
import xarray as xr

import neurosubset as ns
from neurosubset import _outputs

PACKAGE = Path(ns.__file__).resolve().parent
MODULES = sorted(PACKAGE.rglob("*.py"))
CF_FUNCTIONS = {"cf_encoding", "with_cf_encoding", "cf_attrs"}  # neurosubset._schema's netCDF encoding
ENCODERS = {"_outputs.py", "_schema.py"}  # the write path, and the module that defines the encoding
# who may call Dataset.to_netcdf / to_zarr: the write path; sweep stores are Zarr written by the sweep itself
# (neurosubset.sweeps.store, under its lock, chunk by chunk: not netCDF, no CF encoding)
WRITERS = {"to_netcdf": {"_outputs.py"}, "to_zarr": {"_outputs.py", "sweeps/store.py"}}


def _where(path: Path) -> str:
    return path.relative_to(PACKAGE).as_posix()


def _uses(path: Path, names: set[str]) -> list[str]:
    """``file:line name`` of every call of, attribute named, or import of one of ``names`` in ``path``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            found += [f"{_where(path)}:{node.lineno} imports {a.name}" for a in node.names if a.name in names]
        elif isinstance(node, ast.Name) and node.id in names:
            found.append(f"{_where(path)}:{node.lineno} {node.id}")
        elif isinstance(node, ast.Attribute) and node.attr in names:
            found.append(f"{_where(path)}:{node.lineno} .{node.attr}")
    return found


def test_the_scan_sees_the_encoders_where_they_are():
    # the scan works: it finds the encoding in the write path (and the definitions' own cross-uses in _schema)
    assert _uses(PACKAGE / "_outputs.py", CF_FUNCTIONS), "the write path no longer encodes?"
    assert _uses(PACKAGE / "_outputs.py", {"to_netcdf"}) and _uses(PACKAGE / "sweeps" / "store.py", {"to_zarr"})


@pytest.mark.parametrize("path", [p for p in MODULES if p.name not in ENCODERS or p.parent != PACKAGE],
                         ids=_where)
def test_cf_encoding_happens_only_in_the_write_path(path):
    found = _uses(path, CF_FUNCTIONS)
    assert not found, (f"netCDF (CF) encoding outside neurosubset._outputs: {found}. Return the Dataset plain; "
                       f"neurosubset.write / _outputs.write_dataset encodes it")


@pytest.mark.parametrize("path", MODULES, ids=_where)
def test_netcdf_and_zarr_files_are_written_only_by_the_write_path(path):
    for method, allowed in WRITERS.items():
        if _where(path) in allowed:
            continue
        found = _uses(path, {method})
        assert not found, f"{found}: write through neurosubset._outputs.write_dataset (the one CF write path)"


def test_write_is_public_and_is_the_write_path():
    assert "write" in ns.__all__ and ns.write is _outputs.write
    assert ns.write.__doc__ and "CF" in ns.write.__doc__ and "to_netcdf" in ns.write.__doc__


def test_write_encodes_a_copy_and_leaves_the_dataset_as_it_was(tmp_path):
    ff = ns.feedforward([4, 3])
    ds = ns.match_probability(ff, ns.allocate(ff, 6, seed=0), m=2, trials=3)
    before = {str(n): (v.dtype, dict(v.encoding), {k: np.asarray(a).dtype for k, a in v.attrs.items()})
              for n, v in ds.variables.items()}
    path = ns.write(ds, tmp_path / "mp.nc")
    after = {str(n): (v.dtype, dict(v.encoding), {k: np.asarray(a).dtype for k, a in v.attrs.items()})
             for n, v in ds.variables.items()}
    assert after == before  # no encoding set on the caller's Dataset, no attr retyped
    assert not any(enc for _, enc, _ in after.values()), after
    with h5netcdf.File(path, "r") as raw:  # CF-1.8 types in the file: char arrays, no 64-bit integers
        kinds = {name: raw.variables[name].dtype for name in raw.variables}
    assert kinds["synapse_weight"].kind == "S" and kinds["synapse_post"] == np.int32, kinds
    with xr.open_dataset(path, engine="h5netcdf") as back:
        xr.testing.assert_identical(back.load(), ds)
    # the same Dataset by plain to_netcdf: the same values, but netCDF-4 strings and int64 (not CF-1.8), which
    # is why neurosubset.write is the documented CF path
    ds.to_netcdf(tmp_path / "plain.nc", engine="h5netcdf")
    with h5netcdf.File(tmp_path / "plain.nc", "r") as raw:
        assert raw.variables["synapse_post"].dtype == np.int64
