"""The ``point`` layout of sweep results: a pandas MultiIndex on ``point`` when returned or opened, plain
coordinates in stores and files, and the conversion of the dense layout of store format 1 (a dim per fraction key).
"""
from __future__ import annotations

import json

import xarray as xr

from .._schema import var_name

__all__ = ["as_points", "flat_points", "index_points"]


def _point_levels(ds: xr.Dataset) -> list[str]:
    """The coordinates along ``point`` that index it: each fraction key's (CF name), a density grid's budget."""
    keys = json.loads(ds.attrs.get("fraction_keys", "[]"))
    names = [var_name(k) for k in keys]
    if "budget" in ds.coords and ds["budget"].dims == ("point",):
        names.append("budget")
    return [n for n in names if n in ds.coords]


def index_points(ds: xr.Dataset) -> xr.Dataset:
    """``ds`` with a pandas MultiIndex on ``point`` of the key coordinates (the layout a library user gets).

    A store or file holds them as plain coordinates (netCDF and Zarr cannot hold a MultiIndex); Datasets without a
    ``point`` dim (no fractions, or the dense layout of store format 1) are returned as they are.
    """
    if "point" not in ds.dims or "point" in ds.indexes:
        return ds
    import pandas as pd

    names = _point_levels(ds)
    if not names:
        return ds
    attrs = {n: dict(ds[n].attrs) for n in names}
    index = pd.MultiIndex.from_arrays([ds[n].values for n in names], names=names)
    out = ds.drop_vars(names).assign_coords(xr.Coordinates.from_pandas_multiindex(index, "point"))
    for n in names:
        out[n].attrs.update(attrs[n])
    return out


def flat_points(ds: xr.Dataset) -> xr.Dataset:
    """``ds`` with the MultiIndex on ``point`` turned back into plain coordinates (what netCDF / Zarr can hold:
    ``flat_points(ds).to_netcdf(...)``)."""
    if "point" not in ds.indexes:
        return ds
    names = [str(n) for n in ds.indexes["point"].names]
    return ds.drop_indexes(["point", *names]).drop_vars("point")


def as_points(ds: xr.Dataset) -> xr.Dataset:
    """A sweep in the ``point`` layout: dense Datasets (store format 1, a dim per fraction key) are converted.

    The on-grid cells (attr ``fraction_points``) are taken, in that order, along a new dim ``point``; each key's
    coordinate is renamed to its CF name (:func:`neurosubset._schema.var_name`, the key in attr ``fraction_key``)
    and indexed as by :func:`index_points`. Datasets already in the point layout (or without fractions) pass
    through :func:`index_points` only.
    """
    keys = json.loads(ds.attrs.get("fraction_keys", "[]"))
    if not keys or "point" in ds.dims or not all(k in ds.dims for k in keys):
        return index_points(ds)
    points = json.loads(ds.attrs["fraction_points"])
    where = {k: xr.DataArray([ds.indexes[k].get_loc(p[i]) for p in points], dims="point")
             for i, k in enumerate(keys)}
    out = ds.isel(where)
    out = out.drop_indexes([k for k in keys if k in out.indexes]).rename_vars({k: var_name(k) for k in keys})
    for k in keys:
        out[var_name(k)].attrs["fraction_key"] = k
    out.attrs["layout"] = "point (converted from the dense layout of store format 1)"
    return index_points(out)
