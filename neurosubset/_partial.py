"""The ``mp`` command's interrupted results: what an interrupted run leaves beside its ``--out``, and its resume.

An ``mp`` run interrupted (Ctrl-C, SIGTERM) after at least one chunk of trials writes those trials to ``--out`` as
a result marked ``partial = 1`` (attrs ``trials_done``, ``trials_requested``; see
:class:`neurosubset.benchmark.PartialResult`) and, beside it, the hidden file ``.<out name>.resume.npz``: the
finished trials' per-trial values (numpy arrays only, read back without pickle) and a key of the request. The same
command run again finds both, fits only the remaining trials (trial ``i`` depends on ``(seed, m, i)`` only) and
replaces the partial result by the complete one, equal to an uninterrupted run's; the resume file is then removed.
A partial result without its resume file (or of another request) is an existing file like any other: refused
without ``--overwrite``.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from .allocation import Allocation
from .benchmark import FitResult
from .circuit import Circuit
from .draws import Trials
from .dynamics.sparse_map import choose_layout
from .options import FitOptions

_ARRAYS = ("theta", "residual", "matched", "restarts", "status")
_OPTIONAL = ("max_real_eig", "sign_violations", "decision", "outcome", "proof_kind", "witness_scale")
_REJECTED = ("teacher_rejected", "student_rejected")
FORMAT = 1


def resume_path(out: str | os.PathLike) -> Path:
    """The hidden resume file beside ``out``: ``.<name>.resume.npz``."""
    out = Path(out)
    return out.with_name(f".{out.name}.resume.npz")


def request_key(circuit: Circuit, alloc: Allocation, m: int, trials: int, seed: int, options: FitOptions) -> str:
    """SHA-256 of what the trials' values depend on: circuit spec, plastic synapses, ``m``, ``trials``, ``seed``
    and the options as results record them (threads, chunk and device excluded: they do not change results), and
    the weights layout where sparse (another decider chain; a dense request keeps the key it had before the field)."""
    parts = [circuit.to_toml(), {k: np.asarray(v).tolist() for k, v in sorted(alloc.indices.items())},
             int(m), int(trials), int(seed), options.to_attrs()]
    layout = choose_layout(circuit, options.weights_layout).value
    if layout != "dense":
        parts.append({"weights_layout": layout})
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def save(out: str | os.PathLike, res: FitResult, key: str) -> Path:
    """Write ``res``'s per-trial values (no weights) and ``key`` to :func:`resume_path` (temp file, then rename)."""
    path = resume_path(out)
    n = int(res.matched.size)
    arrays: dict[str, Any] = {name: np.asarray(getattr(res, name)) for name in _ARRAYS}
    arrays["mp_by_round_counts"] = np.rint(np.asarray(res.mp_by_round) * n)
    present = {}
    for name in _OPTIONAL:
        value = getattr(res, name)
        present[name] = value is not None
        if value is not None:
            arrays[name] = np.asarray(value)
    for name in _REJECTED:
        value = getattr(res.trials, name)
        present[name] = value is not None
        if value is not None:
            arrays[name] = np.asarray(value)
    meta = {"format": FORMAT, "key": key, "trials_done": n, "exact": bool(res.exact), "dale": bool(res.dale),
            "stable": bool(res.stable), "present": present}
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}.npz")
    try:
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return path


def load(out: str | os.PathLike, key: str) -> FitResult | None:
    """The finished trials of an interrupted run of this request (``key``), or None: ``out`` is no partial result,
    its resume file is missing or unreadable, or they belong to another request. The FitResult has no weights
    and no solver objects (the resumed run supplies them)."""
    out, path = Path(out), resume_path(out)
    try:
        with xr.open_dataset(out, engine="h5netcdf") as ds:
            partial, done = int(ds.attrs.get("partial", 0)), int(ds.attrs.get("trials_done", -1))
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
        meta = json.loads(arrays.pop("meta").tobytes().decode())
    except (OSError, ValueError, KeyError):
        return None
    if not partial or meta.get("format") != FORMAT or meta.get("key") != key or meta.get("trials_done") != done:
        return None
    n = done
    present = meta["present"]
    optional = {name: arrays[name] if present.get(name) else None for name in _OPTIONAL}
    rejected = {name: arrays[name] if present.get(name) else None for name in _REJECTED}
    trials = Trials({}, {}, np.zeros((n, 0)), rejected["teacher_rejected"], rejected["student_rejected"])
    return FitResult(trials=trials, student={}, theta=arrays["theta"], residual=arrays["residual"],
                     matched=arrays["matched"], restarts=arrays["restarts"],
                     mp_by_round=arrays["mp_by_round_counts"] / max(n, 1), solver="", tol=float("nan"),
                     status=arrays["status"], options=None, dale=meta["dale"], stable=meta["stable"],
                     exact=meta["exact"], **optional)


def clear(out: str | os.PathLike) -> None:
    """Remove the resume file beside ``out`` (after the complete result replaced the partial one)."""
    with contextlib.suppress(FileNotFoundError):
        resume_path(out).unlink()
