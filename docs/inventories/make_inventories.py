"""Write the minimal intersphinx inventories of ``docs/inventories/*.inv`` (run: ``python make_inventories.py``).

The docs build offline, so intersphinx reads committed inventories instead of fetching the projects' own
``objects.inv``. The build machine has no network apart from the package index and no installed package ships an
``objects.inv``, so these inventories are generated here: they hold exactly the names the documentation
references, each pointing at the page of that object in the project's real stable documentation (the URLs the
projects' own inventories give). Add a name here when ``make docs`` reports an unresolved reference to one of these
projects, then rerun this script and commit the ``.inv`` files. Where the real inventories can be downloaded,
they can replace these files unchanged (same names, same base URLs in ``docs/conf.py``).
"""
from __future__ import annotations

import zlib
from pathlib import Path

HERE = Path(__file__).resolve().parent

# project -> (version, {(name, role): uri relative to the base URL in conf.py})
PY = "library/functions.html#"
INVENTORIES: dict[str, tuple[str, dict[tuple[str, str], str]]] = {
    "python": ("3", {
        ("int", "py:class"): PY + "int",
        ("float", "py:class"): PY + "float",
        ("bool", "py:class"): PY + "bool",
        ("str", "py:class"): "library/stdtypes.html#str",
        ("dict", "py:class"): "library/stdtypes.html#dict",
        ("list", "py:class"): "library/stdtypes.html#list",
        ("tuple", "py:class"): "library/stdtypes.html#tuple",
        ("object", "py:class"): PY + "object",
        ("None", "py:data"): "library/constants.html#None",
        ("ValueError", "py:exception"): "library/exceptions.html#ValueError",
        ("TypeError", "py:exception"): "library/exceptions.html#TypeError",
        ("Exception", "py:exception"): "library/exceptions.html#Exception",
        ("UserWarning", "py:exception"): "library/exceptions.html#UserWarning",
        ("RuntimeWarning", "py:exception"): "library/exceptions.html#RuntimeWarning",
        ("FutureWarning", "py:exception"): "library/exceptions.html#FutureWarning",
        ("OSError", "py:exception"): "library/exceptions.html#OSError",
        ("pathlib.Path", "py:class"): "library/pathlib.html#pathlib.Path",
        ("os.PathLike", "py:class"): "library/os.html#os.PathLike",
        ("enum.Enum", "py:class"): "library/enum.html#enum.Enum",
        ("concurrent.futures.Executor", "py:class"): "library/concurrent.futures.html#concurrent.futures.Executor",
        ("dataclasses.dataclass", "py:function"): "library/dataclasses.html#dataclasses.dataclass",
    }),
    "numpy": ("stable", {
        ("numpy.ndarray", "py:class"): "reference/generated/numpy.ndarray.html#numpy.ndarray",
        ("numpy.random.SeedSequence", "py:class"):
            "reference/random/bit_generators/generated/numpy.random.SeedSequence.html#numpy.random.SeedSequence",
        ("numpy.random.Generator", "py:class"): "reference/random/generator.html#numpy.random.Generator",
        ("numpy.random.default_rng", "py:function"): "reference/random/generator.html#numpy.random.default_rng",
        ("numpy.savez", "py:function"): "reference/generated/numpy.savez.html#numpy.savez",
        ("numpy.load", "py:function"): "reference/generated/numpy.load.html#numpy.load",
    }),
    "scipy": ("stable", {
        ("scipy.optimize.lsq_linear", "py:function"):
            "reference/generated/scipy.optimize.lsq_linear.html#scipy.optimize.lsq_linear",
        ("scipy.optimize.least_squares", "py:function"):
            "reference/generated/scipy.optimize.least_squares.html#scipy.optimize.least_squares",
        ("scipy.optimize.linprog", "py:function"):
            "reference/generated/scipy.optimize.linprog.html#scipy.optimize.linprog",
        ("scipy.sparse.csr_array", "py:class"):
            "reference/generated/scipy.sparse.csr_array.html#scipy.sparse.csr_array",
    }),
    "xarray": ("stable", {
        ("xarray.Dataset", "py:class"): "generated/xarray.Dataset.html#xarray.Dataset",
        ("xarray.DataArray", "py:class"): "generated/xarray.DataArray.html#xarray.DataArray",
        ("xarray.open_dataset", "py:function"): "generated/xarray.open_dataset.html#xarray.open_dataset",
        ("xarray.open_zarr", "py:function"): "generated/xarray.open_zarr.html#xarray.open_zarr",
        ("xarray.Dataset.to_netcdf", "py:method"):
            "generated/xarray.Dataset.to_netcdf.html#xarray.Dataset.to_netcdf",
        ("xarray.Dataset.to_dataframe", "py:method"):
            "generated/xarray.Dataset.to_dataframe.html#xarray.Dataset.to_dataframe",
        ("xarray.Dataset.sel", "py:method"): "generated/xarray.Dataset.sel.html#xarray.Dataset.sel",
    }),
    "torch": ("stable", {
        ("torch.Tensor", "py:class"): "tensors.html#torch.Tensor",
        ("torch.device", "py:class"): "tensor_attributes.html#torch.device",
        ("torch.dtype", "py:class"): "tensor_attributes.html#torch.dtype",
        ("torch.Generator", "py:class"): "generated/torch.Generator.html#torch.Generator",
        ("torch.linalg.matrix_exp", "py:function"):
            "generated/torch.linalg.matrix_exp.html#torch.linalg.matrix_exp",
        ("torch.linalg.lstsq", "py:function"): "generated/torch.linalg.lstsq.html#torch.linalg.lstsq",
        ("torch.set_num_threads", "py:function"): "generated/torch.set_num_threads.html#torch.set_num_threads",
    }),
    "matplotlib": ("stable", {
        ("matplotlib.figure.Figure", "py:class"):
            "api/_as_gen/matplotlib.figure.Figure.html#matplotlib.figure.Figure",
        ("matplotlib.axes.Axes", "py:class"): "api/_as_gen/matplotlib.axes.Axes.html#matplotlib.axes.Axes",
        ("matplotlib.pyplot.subplots", "py:function"):
            "api/_as_gen/matplotlib.pyplot.subplots.html#matplotlib.pyplot.subplots",
        ("matplotlib.pyplot.savefig", "py:function"):
            "api/_as_gen/matplotlib.pyplot.savefig.html#matplotlib.pyplot.savefig",
    }),
}


def write_inventory(project: str, version: str, entries: dict[tuple[str, str], str], path: Path) -> None:
    """Write one Sphinx inventory (format version 2) with ``entries`` to ``path``."""
    header = (f"# Sphinx inventory version 2\n# Project: {project}\n# Version: {version}\n"
              "# The remainder of this file is compressed using zlib.\n").encode()
    lines = "".join(f"{name} {role} 1 {uri} -\n" for (name, role), uri in sorted(entries.items()))
    path.write_bytes(header + zlib.compress(lines.encode(), 9))


if __name__ == "__main__":
    for project, (version, entries) in INVENTORIES.items():
        write_inventory(project, version, entries, HERE / f"{project}.inv")
        print(f"{project}.inv: {len(entries)} names")
