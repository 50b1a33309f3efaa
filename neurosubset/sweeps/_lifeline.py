"""Preloaded by the sweep's forkserver: make the forkserver die with the process that started it.

Imported elsewhere (by a test, by documentation tools) it does nothing: it acts only when it is imported from
``multiprocessing.forkserver.main``, the forkserver's own loop.
"""
from __future__ import annotations

import sys


def _in_forkserver() -> bool:
    frame = sys._getframe(1)
    while frame is not None:
        code = frame.f_code
        if code.co_name == "main" and code.co_filename.replace("\\", "/").endswith("multiprocessing/forkserver.py"):
            return True
        frame = frame.f_back
    return False


if _in_forkserver():
    from .executors import die_with_parent

    die_with_parent()
