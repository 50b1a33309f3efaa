"""Resolve cross-references of neurosubset's docstrings to the objects the API reference documents.

The docstrings name objects by where they are defined (``:class:`~neurosubset.circuit.Circuit```,
``:func:`neurosubset.theory.certify```) or relative to their own module (``:func:`fitting.localize```), while the
API reference documents them where users import them (``neurosubset.Circuit``). On a reference Sphinx cannot
resolve, this extension imports the target (absolute, or relative to the referring module, class and parent
packages) and

* links it to the documented page when it is the same object (``neurosubset.theory.certify`` ->
  ``neurosubset.certify``);
* renders it as plain code, without a link, when it exists but is internal (not on any API page, e.g.
  ``neurosubset.connectivity.init_sd``);
* leaves the warning (an error under ``-W``) when no such object exists: a reference to a renamed or removed name
  still fails the build.
"""
from __future__ import annotations

import importlib
import inspect
import re
from typing import Any

_MISSING = object()


def _resolve(dotted: str) -> Any:
    """The object named by ``dotted`` (a module, then attributes), or ``_MISSING``."""
    parts = dotted.split(".")
    if parts[0] != "neurosubset":
        return _MISSING
    obj: Any = _MISSING
    i = len(parts)
    while i > 0:
        try:
            obj = importlib.import_module(".".join(parts[:i]))
            break
        except ImportError:
            i -= 1
    if obj is _MISSING:
        return _MISSING
    for attr in parts[i:]:
        try:
            obj = inspect.getattr_static(obj, attr)
        except AttributeError:
            # dataclass fields and annotated class attributes without a default
            # and instance attributes a class's numpydoc "Attributes" section documents ("name : type")
            annotations = getattr(obj, "__annotations__", {}) if inspect.isclass(obj) else {}
            fields = getattr(obj, "__dataclass_fields__", {})
            documented = inspect.isclass(obj) and re.search(rf"^\s*{re.escape(attr)}\s*:", obj.__doc__ or "", re.M)
            if attr in annotations or attr in fields or documented:
                return ("field", obj, attr)
            return _MISSING
    return obj


def _key(obj: Any) -> Any:
    """A hashable identity of ``obj`` that survives re-exports, classmethods and properties."""
    if isinstance(obj, (classmethod, staticmethod)):
        obj = obj.__func__
    if isinstance(obj, property):
        obj = obj.fget
    obj = getattr(obj, "__func__", obj)
    if isinstance(obj, tuple) and len(obj) == 3 and obj[0] == "field":
        return ("field", id(obj[1]), obj[2])
    if inspect.ismodule(obj) or inspect.isclass(obj) or inspect.isroutine(obj):
        return id(obj)
    return None  # constants (numbers, tuples) are not identified by value


def _documented(env) -> dict[Any, tuple[str, str]]:
    cache = getattr(env, "_nsrefs_documented", None)
    if cache is None:
        cache = {}
        for fullname, entry in env.get_domain("py").objects.items():
            key = _key(_resolve(fullname))
            if key is not None:
                cache.setdefault(key, (fullname, entry.objtype))
        env._nsrefs_documented = cache
    return cache


def _candidates(target: str, module: str | None, cls: str | None) -> list[str]:
    target = target.lstrip("~.")
    out = [target]
    if module:
        parts = module.split(".")
        if cls:
            out.append(f"{module}.{cls}.{target}")
        for i in range(len(parts), 0, -1):
            out.append(".".join(parts[:i] + [target]))
    return out


def _docstring_owner(node) -> str | None:
    """The dotted name of the object whose docstring holds ``node`` ("...:docstring of NAME"), if any."""
    while node is not None:
        source = getattr(node, "source", None) or ""
        if "docstring of " in source:
            return source.rsplit("docstring of ", 1)[1].strip()
        node = node.parent
    return None


def _autosummary_row_owner(node) -> str | None:
    """Inside an autosummary table: the defining module of the row's object (its summary line's context)."""
    from docutils import nodes
    from sphinx import addnodes

    row = node.parent
    while row is not None and not isinstance(row, nodes.row):
        row = row.parent
    if row is None:
        return None
    # the row's first cell names the documented object (already resolved to a link, or still pending)
    for ref in row.findall(lambda n: isinstance(n, (nodes.reference, addnodes.pending_xref))):
        name = ref.get("reftitle") or ref.get("reftarget") or ""
        obj = _resolve(name)
        module = getattr(obj, "__module__", None)
        if module:
            return f"{module}.{getattr(obj, '__name__', '')}"
        break
    return None


def missing_reference(app, env, node, contnode):
    if node.get("refdomain") != "py":
        return None
    target = node.get("reftarget", "")
    names = _candidates(target, node.get("py:module"), node.get("py:class"))
    owner = _docstring_owner(node) or _autosummary_row_owner(node)
    if owner:  # relative to where the docstring is defined (its module, its class)
        names += _candidates(target, owner, None)
    for name in names:
        obj = _resolve(name)
        if obj is _MISSING:
            continue
        documented = _documented(env).get(_key(obj))
        if documented is not None:
            fullname, objtype = documented
            domain = env.get_domain("py")
            role = {"function": "func", "method": "meth", "class": "class", "exception": "exc",
                    "property": "attr", "attribute": "attr", "data": "data", "module": "mod"}.get(objtype, "obj")
            return domain.resolve_xref(env, node["refdoc"], app.builder, role, fullname, node, contnode)
        return contnode  # exists, but internal: plain code without a link
    return None


def setup(app):
    app.connect("missing-reference", missing_reference)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
