"""Sphinx configuration of the neurosubset documentation (``make docs``).

The build is offline and strict: ``sphinx-build -W --keep-going -n`` (warnings are errors, nitpicky
cross-references). Cross-references into numpy, scipy, xarray, torch, matplotlib and Python resolve through the
intersphinx inventories committed under ``docs/inventories/`` (nothing is fetched at build time). They are
generated, not downloaded (no network here but the package index, and no installed package ships one):
``docs/inventories/make_inventories.py`` writes minimal inventories of exactly the names the docs reference,
pointing at the projects' real stable URLs; see docs/README.md.
The gallery (``examples/*.py``) and the tutorial (``docs/tutorial_src/*.py``) are executed by sphinx-gallery
on every build, on one torch thread.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE / "_ext"))

import neurosubset  # noqa: E402

project = "neurosubset"
author = "the neurosubset authors"
copyright = "2026, the neurosubset authors"
release = neurosubset.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.intersphinx",
    "sphinx.ext.mathjax",
    "numpydoc",
    "myst_parser",
    "sphinx_gallery.gen_gallery",
    "nsrefs",  # docs/_ext/nsrefs.py: docstring references by defining module -> the documented page
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "inventories", "README.md", "tutorial_src", "**/GALLERY_HEADER.rst",
                    "auto_examples/*.ipynb", "auto_examples/*.py", "auto_examples/*.zip", "tutorial/*.ipynb",
                    "tutorial/*.py", "tutorial/*.zip"]
templates_path = ["_templates"]


# -- strictness ---------------------------------------------------------------------------------------------------
nitpicky = True
# Words numpydoc / autodoc turn into references that are plain English or typing spellings, not objects.
nitpick_ignore = [
    ("py:class", "optional"),
    ("py:class", "array-like"),
    ("py:class", "array_like"),
    ("py:class", "callable"),
    ("py:class", "path-like"),
]

# -- autodoc / autosummary / numpydoc -----------------------------------------------------------------------------
autosummary_generate = True
autosummary_imported_members = True
autodoc_typehints = "none"          # types are in the numpydoc Parameters sections, with shapes and units
autodoc_member_order = "bysource"
autodoc_default_options = {"members": False}
numpydoc_show_class_members = False  # autosummary lists members on the class pages
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False
numpydoc_validation_checks: set[str] = set()

# -- intersphinx: committed inventories only ----------------------------------------------------------------------
INV = HERE / "inventories"
intersphinx_mapping = {
    "python": ("https://docs.python.org/3/", str(INV / "python.inv")),
    "numpy": ("https://numpy.org/doc/stable/", str(INV / "numpy.inv")),
    "scipy": ("https://docs.scipy.org/doc/scipy/", str(INV / "scipy.inv")),
    "xarray": ("https://docs.xarray.dev/en/stable/", str(INV / "xarray.inv")),
    "torch": ("https://docs.pytorch.org/docs/stable/", str(INV / "torch.inv")),
    "matplotlib": ("https://matplotlib.org/stable/", str(INV / "matplotlib.inv")),
}
intersphinx_timeout = 1

# -- MyST ---------------------------------------------------------------------------------------------------------
myst_enable_extensions = ["dollarmath", "colon_fence"]
myst_heading_anchors = 3

# -- sphinx-gallery -----------------------------------------------------------------------------------------------
sphinx_gallery_conf = {
    "examples_dirs": [str(ROOT / "examples"), str(HERE / "tutorial_src")],
    "gallery_dirs": ["auto_examples", "tutorial"],
    "filename_pattern": r".*\.py$",      # execute every example, not only plot_*
    "within_subsection_order": "FileNameSortKey",
    "abort_on_example_error": True,
    "only_warn_on_example_error": False,
    "download_all_examples": False,
    "remove_config_comments": True,
    "backreferences_dir": None,
    "doc_module": (),
    "reference_url": {},
    "image_scrapers": ("nsgallery.scraper",),  # docs/_ext/nsgallery.py: pyplot and plain Figures
    "matplotlib_animations": False,
    "show_memory": False,
    "plot_gallery": "True",
    "capture_repr": ("_repr_html_",),   # Circuit, Allocation, Dataset tables; print() for the rest
    "promote_jupyter_magic": False,
    "min_reported_time": 0,
    "write_computation_times": True,
}

# -- HTML ---------------------------------------------------------------------------------------------------------
html_theme = "pydata_sphinx_theme"
html_title = f"neurosubset {release}"
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "secondary_sidebar_items": ["page-toc"],
    "footer_start": ["copyright"],
    "footer_end": ["sphinx-version"],
}
html_show_sourcelink = False
html_copy_source = False


# -- "Reproducing the paper": analysis/README.md rendered with its figures ----------------------------------------
# analysis/README.md stays the one source of the analysis report (the analysis scripts' authors edit it); at every
# build it is copied to docs/analysis.md (git-ignored) with each figure it names (`data/NAME.png`) shown after the
# paragraph that first names it.
import re  # noqa: E402

_FIGURE = re.compile(r"`data/([\w-]+\.png)`")


def _analysis_page(app) -> None:
    text = (ROOT / "analysis" / "README.md").read_text()
    out, pending, shown = [], [], set()
    in_code = False
    for line in text.split("\n"):
        if line.lstrip().startswith("```"):
            in_code = not in_code
        if not line.strip() and pending and not in_code:
            for name in pending:
                out += ["", f"```{{image}} ../data/{name}", f":alt: data/{name}", ":width: 90%", "```"]
            pending = []
        out.append(line)
        for name in _FIGURE.findall(line):
            if (ROOT / "data" / name).exists() and name not in shown:
                pending.append(name)
                shown.add(name)
    for name in pending:
        out += ["", f"```{{image}} ../data/{name}", f":alt: data/{name}", ":width: 90%", "```"]
    page = HERE / "analysis.md"
    new = "\n".join(out)
    if not page.exists() or page.read_text() != new:
        page.write_text(new)


def setup(app):
    app.connect("builder-inited", _analysis_page)
