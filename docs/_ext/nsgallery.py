"""A sphinx-gallery image scraper for every matplotlib figure an example makes.

neurosubset's plot functions return :class:`matplotlib.figure.Figure` objects made without pyplot (so that they
never touch a user's pyplot state), which sphinx-gallery's own matplotlib scraper does not see. This scraper
records every Figure created while the docs build (pyplot's and the others), saves each once after the code block
that made it, and closes pyplot's figures. conf.py names it as ``"nsgallery.scraper"``.
"""
from __future__ import annotations

import weakref

import matplotlib

matplotlib.use("Agg")
import matplotlib.figure  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402

_CREATED: list[weakref.ref] = []
_original_init = matplotlib.figure.Figure.__init__


def _recording_init(self, *args, **kwargs):
    _original_init(self, *args, **kwargs)
    _CREATED.append(weakref.ref(self))


matplotlib.figure.Figure.__init__ = _recording_init


def scraper(block, block_vars, gallery_conf, **kwargs):
    """Save the figures made since the last block; return their reST (sphinx-gallery's scraper protocol)."""
    from sphinx_gallery.scrapers import figure_rst

    paths = []
    for ref in list(_CREATED):
        fig = ref()
        if fig is None or not fig.axes:
            continue
        path = next(block_vars["image_path_iterator"])
        fig.savefig(path, dpi=100)
        paths.append(path)
    _CREATED.clear()
    plt.close("all")
    return figure_rst(paths, gallery_conf["src_dir"])
