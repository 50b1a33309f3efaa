"""What a sweep store's points are checked against: per-point checksums, their verification, and the comparison of
a store's configuration with a request (refused, naming the fields, or an extension of the grid).

A point's checksum is blake2b-64 of its index and the bytes of its stored values (every per-point variable, in
sorted order, as stored), written before its status. Every NaN is hashed as the one canonical NaN (``np.nan``'s
bytes): Zarr drops a chunk equal to its NaN fill and reads back its own NaN, whatever NaN was written, so the
checksum covers what is read back (a point whose trials overflowed verifies like any other). :func:`_verify`
recomputes it for done points (a checksum over the raw bytes, what stores written before this wrote, is accepted
too); a chunk that cannot be decoded is named (point and variable) in one line. :func:`_check_metadata` refuses a
store whose own metadata (root attrs, consolidated metadata, an array's ``.zarray``) is missing or unreadable.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from .._checks import NeurosubsetError
from .._schema import PENDING, var_name

CHECKSUM = "point_checksum"  # store-only variable: not part of the Dataset a sweep returns or a reader loads


class SweepStoreError(NeurosubsetError):
    """A sweep store cannot be used: another configuration, another writer, damage, or not a sweep store."""


def _point_names(ds: xr.Dataset, dims: Sequence[str]) -> list[str]:
    """The per-point variables of a store (point dims in front), sorted: what a point's checksum covers."""
    n = len(dims)
    return sorted(str(k) for k, v in ds.data_vars.items()
                  if tuple(v.dims[:n]) == tuple(dims) and k not in ("status", CHECKSUM))


def _canonical(value: np.ndarray) -> np.ndarray:
    """``value`` with every NaN replaced by ``np.nan`` (one bit pattern; real and imaginary parts alike)."""
    value = np.ascontiguousarray(value)
    if value.dtype.kind not in "fc":
        return value
    nan = np.isnan(value)
    if not nan.any():
        return value
    if value.dtype.kind == "f":
        return np.where(nan, value.dtype.type(np.nan), value)
    out = value.copy()
    for part in (out.real, out.imag):  # views into out
        part[np.isnan(part)] = np.nan
    return out


def checksum(index: tuple[int, ...], values: Sequence[np.ndarray], *, canonical: bool = True) -> int:
    """blake2b-64 of a point's index and the bytes of its stored values (in :func:`_point_names` order), every NaN
    as the canonical one (``canonical=False``: the raw bytes, as stores written before canonical NaNs), as int64
    (never 0, the fill of points without one)."""
    h = hashlib.blake2b(digest_size=8)
    h.update(np.asarray(index, np.int64).tobytes())
    for value in values:
        h.update((_canonical(value) if canonical else np.ascontiguousarray(value)).tobytes())
    out = int.from_bytes(h.digest(), "little", signed=True)
    return out or 1


def _chunk_key(index: tuple[int, ...], ndim: int) -> str:
    return ".".join(map(str, (*index, *[0] * (ndim - len(index)))))


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:200]}"


def _point_label(ds: xr.Dataset, dims: Sequence[str], index: tuple[int, ...]) -> str:
    """``(budget=9, A->O=0.5, B->O=0.5, strategy='spread-rows', m=2)``."""
    parts = []
    keys = json.loads(ds.attrs.get("fraction_keys", "[]"))
    for d, i in zip(dims, index):
        if d == "point" and keys and all(var_name(k) in ds.coords for k in keys):  # the point by its key values
            parts += [f"{k}={float(ds[var_name(k)].values[i])!r}" for k in keys]
            continue
        value = ds[d].values[i] if d in ds.coords else i
        parts.append(f"{d}={value.item() if hasattr(value, 'item') else value!r}")
    return "(" + ", ".join(parts) + ")"


def _toml_differences(old: str, new: str) -> str:
    """The fields in which two circuit specs (TOML text) differ: ``regions.CA3.size: stored 100, requested 120``."""
    import tomllib

    try:
        a, b = tomllib.loads(old), tomllib.loads(new)
    except tomllib.TOMLDecodeError:  # pragma: no cover - both were written by Circuit.to_toml
        return "their TOML text"
    out: list[str] = []

    def walk(x: Any, y: Any, where: str) -> None:
        if isinstance(x, dict) and isinstance(y, dict):
            for k in sorted(set(x) | set(y), key=str):
                walk(x.get(k, "<absent>"), y.get(k, "<absent>"), f"{where}.{k}" if where else str(k))
        elif x != y:
            out.append(f"{where}: stored {x!r}, requested {y!r}")

    walk(a, b, "")
    return "; ".join(out[:5]) + (f"; and {len(out) - 5} more" if len(out) > 5 else "") if out else "formatting only"


def _read_status(path: Path, expected: np.ndarray) -> np.ndarray:
    """The stored point status; a status chunk that cannot be read (a killed write) counts as pending."""
    import zarr

    arr = zarr.open_array(str(path / "status"), mode="r", zarr_format=2)
    try:
        return np.asarray(arr[...])
    except Exception:
        status = np.full(arr.shape, PENDING, np.int8)
        for index in zip(*np.nonzero(expected > 0)):
            with contextlib.suppress(Exception):
                status[index] = arr[index]
        return status


def _verify(path: Path, dims: Sequence[str], names: Sequence[str], done: np.ndarray,
            dtypes: Mapping[str, np.dtype]) -> dict[tuple[int, ...], str]:
    """Check every ``done`` point's values against its checksum; point index -> why it failed."""
    import zarr

    group = zarr.open_group(str(path), mode="r", zarr_format=2)
    indices = [tuple(int(i) for i in idx) for idx in zip(*np.nonzero(done))]
    bad: dict[tuple[int, ...], str] = {}
    if not indices:
        return bad
    data: dict[str, Any] = {}
    arrays = {name: group[name] for name in (*names, CHECKSUM)}  # opened once (each group[...] reads metadata)
    for name in (*names, CHECKSUM):
        arr = arrays[name]
        try:
            data[name] = np.asarray(arr[...])
        except Exception:  # find the point chunks that cannot be decoded
            data[name] = None
            for index in indices:
                try:
                    arr[index]
                except Exception as exc:
                    bad.setdefault(index, f"variable {name!r}: its chunk {name}/{_chunk_key(index, arr.ndim)} "
                                          f"cannot be decoded ({_one_line(exc)})")
            data[name] = arr
    for index in indices:
        if index in bad:
            continue
        values = [np.asarray(data[n][index], dtype=arrays[n].dtype) for n in names]  # the bytes as stored
        stored = int(np.asarray(data[CHECKSUM][index]))
        if stored not in (checksum(index, values), checksum(index, values, canonical=False)):
            bad[index] = f"its values do not match its checksum ({_suspects(path, index, names, arrays)})"
    return bad


def _suspects(path: Path, index: tuple[int, ...], names: Sequence[str], arrays: Mapping[str, Any]) -> str:
    """Which of a failed point's chunks to blame: those written after its status chunk (the commit record, written
    last) were changed later, unless most are (a copy of the store renews every time). A missing chunk file is only a
    suspect when no chunk is newer: Zarr stores no file for a chunk equal to the fill value, so the missing ones of an
    intact point are not damage."""
    chunks = {n: path / n / _chunk_key(index, arrays[n].ndim) for n in names}
    try:
        committed = (path / "status" / _chunk_key(index, len(index))).stat().st_mtime_ns
    except OSError:
        committed = None
    newer = []
    if committed is not None:
        for name, chunk in chunks.items():
            with contextlib.suppress(OSError):
                if chunk.stat().st_mtime_ns > committed:
                    newer.append(f"{name}/{chunk.name}")
    if newer and 2 * len(newer) < len(chunks):  # most chunks newer: a copied store (cp -r), the times say nothing
        return f"changed after the point was written (by its modification time): chunk {', '.join(newer)}"
    missing = [f"{n}/{c.name}" for n, c in chunks.items() if not c.exists()]
    if missing:
        return (f"a chunk was changed or deleted; absent chunk files: {', '.join(missing)} (a chunk equal to the "
                f"fill value has no file, so not every absent one is damage)")
    return "a chunk was changed"


_EXTENSIBLE = ("m", "budget", "strategy")  # grid fields a finished sweep may grow along (seeds come from coordinates)


def _is_extension(stored: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """Whether ``new`` only adds values to the stored ``m``, ``budget`` or ``strategy`` lists, or only raises
    ``trials`` (trial ``i`` of every point depends on the point's seed and ``i`` alone), nothing else differing."""
    if "sweep_config" not in stored or stored.get("config_hash") == new.get("config_hash"):
        return False
    old_cfg, new_cfg = json.loads(stored["sweep_config"]), json.loads(new["sweep_config"])
    differ = {k for k in set(old_cfg) | set(new_cfg) if old_cfg.get(k) != new_cfg.get(k)}
    if differ == {"trials"}:
        return isinstance(old_cfg["trials"], int) and isinstance(new_cfg["trials"], int) and (
            new_cfg["trials"] > old_cfg["trials"])
    return bool(differ) and differ <= set(_EXTENSIBLE) and all(
        set(old_cfg[k]) < set(new_cfg[k]) for k in differ)


def _check_same_config(path: Path, stored: Mapping[str, Any], new: Mapping[str, Any]) -> None:
    if "config_hash" not in stored or "sweep_config" not in stored:
        raise SweepStoreError(f"{str(path)!r} is not a neurosubset sweep store (no 'config_hash' attribute). "
                              f"Choose another store path.")
    if stored["config_hash"] == new["config_hash"]:
        return
    old_cfg, new_cfg = json.loads(stored["sweep_config"]), json.loads(new["sweep_config"])
    differ = sorted(k for k in set(old_cfg) | set(new_cfg) if old_cfg.get(k) != new_cfg.get(k))
    shown = "; ".join(f"{k}: stored {old_cfg.get(k)!r}, requested {new_cfg.get(k)!r}"
                      for k in differ if k != "circuit")
    if "circuit" in differ:
        fields = _toml_differences(old_cfg.get("circuit", ""), new_cfg.get("circuit", ""))
        shown = f"circuit: the circuit specs differ in {fields}" + ("; " + shown if shown else "")
    raise SweepStoreError(f"The store {str(path)!r} holds a sweep with another configuration (config hash "
                          f"{stored['config_hash']}, requested {new['config_hash']}); it differs in {differ} ({shown})."
                          f" Refusing to mix results: use another store path, or overwrite=True (--overwrite) to start "
                          f"over. (Adding values to 'm', 'budget' or 'strategy', and only that, or raising 'trials' "
                          f"alone, extends the store.)" + _patience_hint(old_cfg, differ))


def _patience_hint(old_cfg: Mapping[str, Any], differ: list[str]) -> str:
    """The way back for a store made before the LM's patience existed (every round ran: patience 0)."""
    if "patience" not in differ or old_cfg.get("patience") is not None:
        return ""
    return (" This store was made before the LM stopped early (patience): patience=0 (--patience 0) runs every "
            "round as it did and continues it.")



def _read_json(path: Path) -> Any:
    """The JSON in ``path``; raises OSError / ValueError."""
    return json.loads(path.read_text())


def _metadata_damage(path: Path) -> str | None:
    """Why a sweep store's own metadata cannot be trusted (None: it can): missing or unreadable root attrs
    (``.zattrs``, with ``sweep_config`` and ``config_hash``), consolidated metadata (``.zmetadata``) that is missing,
    unreadable or disagrees with the root attrs, or an array it lists whose ``.zarray`` is missing."""
    try:
        attrs = _read_json(path / ".zattrs")
    except FileNotFoundError:
        return "its root attributes (.zattrs) are missing, so its configuration cannot be verified"
    except (OSError, ValueError) as exc:
        return f"its root attributes (.zattrs) cannot be read ({_one_line(exc)})"
    if not isinstance(attrs, dict) or "sweep_config" not in attrs or "config_hash" not in attrs:
        return ("its root attributes (.zattrs) lack 'sweep_config' / 'config_hash', so its configuration cannot be "
                "verified")
    try:
        consolidated = _read_json(path / ".zmetadata")["metadata"]
    except FileNotFoundError:
        return "its consolidated metadata (.zmetadata) is missing"
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"its consolidated metadata (.zmetadata) cannot be read ({_one_line(exc)})"
    if not isinstance(consolidated, dict):
        return "its consolidated metadata (.zmetadata) cannot be read (no 'metadata' table)"
    copy = consolidated.get(".zattrs", {})
    if isinstance(copy, dict) and copy.get("config_hash", attrs["config_hash"]) != attrs["config_hash"]:
        return (f"its root attributes (.zattrs, config hash {attrs['config_hash']}) disagree with its consolidated "
                f"metadata (.zmetadata, config hash {copy.get('config_hash')})")
    arrays = sorted(key[: -len("/.zarray")] for key in consolidated if key.endswith("/.zarray"))
    for required in ("status", "mp"):
        if required not in arrays:
            return f"its consolidated metadata (.zmetadata) lists no variable {required!r}"
    missing = [name for name in arrays if not (path / name / ".zarray").is_file()]
    if missing:
        return (f"the array metadata of {', '.join(repr(n) for n in missing[:5])}"
                f"{' and more' if len(missing) > 5 else ''} ({missing[0]}/.zarray) is missing")
    return None


def _check_metadata(path: Path, advice: str) -> None:
    """Refuse (one line, :class:`SweepStoreError`) a sweep store whose own metadata is damaged."""
    why = _metadata_damage(path)
    if why is not None:
        raise SweepStoreError(f"The sweep store {str(path)!r} is damaged: {why}. {advice}")


def _looks_like_sweep_store(path: Path) -> bool:
    """A Zarr directory laid out as a sweep store (a ``status`` and a ``point_checksum`` array, or a
    ``sweep_config`` in its consolidated metadata), whatever its root attrs say."""
    if (path / "status").is_dir() and (path / CHECKSUM).is_dir():
        return True
    try:
        return "sweep_config" in (path / ".zmetadata").read_text()
    except OSError:
        return False
