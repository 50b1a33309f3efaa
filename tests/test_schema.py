"""The package's layout rules: one definition of the result schema, of the block layout and of the block assembly;
no import cycles, between top-level packages or between any two modules; no private name used across packages
except through :mod:`neurosubset._internal`; a core that never imports the CLI, the plots or the sweeps.

These read the source as text (ast), so they hold for code paths no other test runs. The module-graph, private-name
and block-assembly checks are functions of a ``{path: source}`` dict, so they are also run on the sources of
:data:`OLD` (from ``git show``) to prove they catch what they are meant to catch.
"""
from __future__ import annotations

import ast
import re
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

import neurosubset as ns
from neurosubset import _schema

PACKAGE = Path(ns.__file__).resolve().parent
REPO = PACKAGE.parent
MODULES = sorted(p for p in PACKAGE.rglob("*.py"))
SCRIPTS = sorted([*(REPO / "analysis").glob("*.py"), *(REPO / "benchmarks").glob("*.py")])
# the commit before dynamics became a package: four block assemblies (dynamics._blocks, _continuous._blocks,
# theory/exact._block, _stability.loop_matrix) and analysis/ scripts importing neurosubset._schema directly
OLD = "e8a9a35"
CORE = ("circuit", "_spec", "allocation", "dynamics", "solvers", "theory", "benchmark", "spiking", "_schema", "_checks")
NOT_IN_CORE = ("cli", "plot", "sweeps")


def _module(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def _imports(path: Path, *, typing: bool = True) -> set[str]:
    """Absolute names of the neurosubset modules that ``path`` imports (at any depth of the file; those under
    ``if TYPE_CHECKING:``, which never run, only with ``typing``)."""
    tree = ast.parse(path.read_text())
    here = _module(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    skip = set() if typing else {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                                 and _is_type_checking(node.test) for stmt in node.body for n in ast.walk(stmt)}
    out = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            if target.startswith("neurosubset"):
                out.add(target)
                out.update(f"{target}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("neurosubset"))
    return out


def _top(name: str) -> str:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_the_core_never_imports_cli_plot_or_sweeps():
    for path in MODULES:
        if _top(_module(path)) not in CORE:
            continue
        bad = {name for name in _imports(path) if _top(name) in NOT_IN_CORE}
        assert not bad, f"{path.relative_to(PACKAGE)} imports {sorted(bad)}"


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of a directed graph (as the path that closes it), or None: depth-first search with colours."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished

    def visit(node: str, trail: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*trail, node, nxt]
            if nxt not in state:
                found = visit(nxt, [*trail, node])
                if found:
                    return found
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node, [])
            if found:
                return found
    return None


def test_the_cycle_finder_finds_cycles_and_only_cycles():
    # hand-made graphs: a DAG with a diamond, a 3-cycle behind a tail, a self-loop
    assert _cycle({"a": {"b", "c"}, "b": {"d"}, "c": {"d"}, "d": set()}) is None
    # the search starts at the alphabetically first node, "a", which lies on the cycle
    assert _cycle({"t": {"a"}, "a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"t": {"u"}, "u": {"v"}, "v": {"u"}}) == ["t", "u", "v", "u"]  # reached through a tail
    assert _cycle({"x": {"x"}}) == ["x", "x"]


def test_there_are_no_import_cycles_between_top_level_modules():
    # edges between top-level modules/packages of neurosubset (the package __init__ itself excluded): every import,
    # lazy ones too (the layers form a DAG even when a cycle is broken by importing late), but not those under
    # `if TYPE_CHECKING:`, which never run (annotating `circuit: Circuit` is no dependency; `circuit: Any` was the
    # dodge the old count forced)
    graph: dict[str, set[str]] = {}
    for path in MODULES:
        src = _top(_module(path))
        if not src:
            continue
        graph.setdefault(src, set()).update(t for t in map(_top, _imports(path, typing=False)) if t and t != src)
    assert {"benchmark", "circuit", "solvers", "sweeps"} <= set(graph), sorted(graph)  # the scan saw the package
    assert "circuit" in graph["benchmark"] and "benchmark" in graph["sweeps"], graph  # and its real imports
    cycle = _cycle(graph)
    assert cycle is None, f"import cycle: {' -> '.join(cycle)}"


# ----------------------------------------------------------------------------------------------------- sources as data
def _sources(paths: list[Path]) -> dict[str, str]:
    """``{path relative to the repository (posix): source}`` of the given files."""
    return {p.relative_to(REPO).as_posix(): p.read_text() for p in paths}


def _git_sources(commit: str, folder: str) -> dict[str, str]:
    """``{path: source}`` of every ``.py`` file under ``folder`` at ``commit`` (``git show`` in this repository)."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(REPO), *args], check=True, capture_output=True, text=True).stdout

    names = [n for n in git("ls-tree", "-r", "--name-only", commit, "--", folder).split() if n.endswith(".py")]
    assert names, f"no .py file under {folder} at {commit}"
    return {n: git("show", f"{commit}:{n}") for n in names}


def _by_place(found: list[str]) -> list[str]:
    """``path:line message`` strings, once each, by path then line."""
    return sorted(set(found), key=lambda v: (v.partition(":")[0], int(v.partition(":")[2].split()[0])))


def _dotted(path: str) -> tuple[str, bool]:
    """Module name of a repository path and whether it is a package (``__init__.py``)."""
    parts = path[: -len(".py")].split("/")
    return (".".join(parts[:-1]), True) if parts[-1] == "__init__" else (".".join(parts), False)


@dataclass(frozen=True)
class _Import:
    line: int
    target: str  # the absolute module after ``from`` (or the name after ``import``)
    names: tuple[str, ...]  # the names of ``from target import ...``; () for ``import target``
    runtime: bool  # runs when the module is imported: not in a function body, not under ``if TYPE_CHECKING:``
    asnames: tuple[str | None, ...]  # the ``as`` name of each name (of the target for ``import target as x``)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_sites(source: str, module: str, is_package: bool) -> list[_Import]:
    """Every import statement of a module, at any depth, relative ones made absolute, each marked ``runtime`` or not
    (class bodies and module-level ``if``/``try``/``with`` blocks run at import time; function bodies do not)."""
    out: list[_Import] = []
    package = module.split(".") if is_package else module.split(".")[:-1]

    def visit(node: ast.AST, runtime: bool) -> None:
        if isinstance(node, ast.Import):
            out.extend(_Import(node.lineno, a.name, (), runtime, (a.asname,)) for a in node.names)
            return
        if isinstance(node, ast.ImportFrom):
            target = node.module or ""
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            out.append(_Import(node.lineno, target, tuple(a.name for a in node.names), runtime,
                               tuple(a.asname for a in node.names)))
            return
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            runtime = False
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.body:
                visit(child, False)
            for child in node.orelse:
                visit(child, runtime)
            return
        for child in ast.iter_child_nodes(node):
            visit(child, runtime)

    visit(ast.parse(source), True)
    return out


def _imported(imp: _Import, modules: Mapping[str, object]) -> Iterator[tuple[str, str | None]]:
    """``(module, name)`` pairs an import reads: ``from pkg import sub`` of a submodule is ``(pkg.sub, None)``."""
    if not imp.names:
        yield imp.target, None
    for name in imp.names:
        sub = f"{imp.target}.{name}"
        yield (sub, None) if sub in modules else (imp.target, name)


def _encloses(package: str, module: str) -> bool:
    return module == package or module.startswith(package + ".")


def _module_graph(sources: Mapping[str, str]) -> dict[str, set[str]]:
    """Module -> the modules of ``sources`` it imports when it is itself imported.

    Only runtime imports count (see :func:`_import_sites`). Importing ``a.b.c`` also runs the ``__init__`` of ``a.b``:
    that edge is added unless ``a.b`` encloses the importer (then it is already being imported).
    """
    modules = dict(_dotted(p) for p in sources)
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for path, source in sources.items():
        me, is_package = _dotted(path)
        for imp in _import_sites(source, me, is_package):
            if not imp.runtime:
                continue
            for target, _ in _imported(imp, modules):
                while target and target not in modules:  # `import a.b.x` where x is a name: the module a.b
                    target = target.rpartition(".")[0]
                parts = target.split(".")
                implicit = {".".join(parts[:i]) for i in range(1, len(parts))}
                graph[me].update(t for t in implicit if t in modules and not _encloses(t, me))
                if target and target != me:
                    graph[me].add(target)
    return graph


def test_the_module_graph_reads_runtime_imports_only():
    # a hand-made package: a TYPE_CHECKING import and a lazy import are no edges; a class body's import is one;
    # importing pkg.sub.leaf runs pkg/sub/__init__ (an edge), importing from one's own package's __init__ is one
    src = {
        "pkg/__init__.py": "from . import a\n",
        "pkg/a.py": ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .b import B\nelse:\n    import os\n"
                     "def f():\n    from .b import g\nclass C:\n    from .c import h\n"),
        "pkg/b.py": "from .sub.leaf import x\n",
        "pkg/c.py": "import numpy\n",
        "pkg/sub/__init__.py": "from .leaf import x\nfrom .. import b\n",
        "pkg/sub/leaf.py": "import pkg.c\nx = 1\n",
    }
    graph = _module_graph(src)
    assert graph == {"pkg": {"pkg.a"}, "pkg.a": {"pkg.c"}, "pkg.b": {"pkg.sub", "pkg.sub.leaf"}, "pkg.c": set(),
                     "pkg.sub": {"pkg.sub.leaf", "pkg.b"}, "pkg.sub.leaf": {"pkg.c"}}, graph
    # pkg.b -> pkg/sub/__init__ -> pkg.b: the cycle through a package's __init__ that a per-file view misses
    assert _cycle(graph) == ["pkg.b", "pkg.sub", "pkg.b"]
    # a name taken from one's own package's __init__, which imports this module: a cycle
    assert _module_graph({"q/__init__.py": "from .m import v\n", "q/m.py": "from . import w\nv = 1\n"}) == {
        "q": {"q.m"}, "q.m": {"q"}}


def test_the_module_graph_would_catch_the_old_bounded_multistart_cycle():
    # at OLD (and today) solvers/bounded.py imports multistart inside a function (lazily): no module-level cycle;
    # the same import at module level is one, and the graph of the whole old package shows it
    old = _git_sources(OLD, "neurosubset")
    graph = _module_graph(old)
    assert "neurosubset.solvers.bounded" in graph["neurosubset.solvers.multistart"]
    assert "neurosubset.solvers.multistart" not in graph["neurosubset.solvers.bounded"]
    lazy = "    from .multistart import trial_status\n"
    assert lazy in old["neurosubset/solvers/bounded.py"]
    hoisted = dict(old)
    hoisted["neurosubset/solvers/bounded.py"] = (old["neurosubset/solvers/bounded.py"].replace(lazy, "")
                                                 + lazy.lstrip())
    cycle = _cycle(_module_graph(hoisted))
    assert cycle is not None and {"neurosubset.solvers.bounded", "neurosubset.solvers.multistart"} <= set(cycle), cycle


def test_there_are_no_import_cycles_between_any_two_modules():
    """The module-level import graph of every module of the package, inside packages too, has no cycle.

    An edge is an import that runs when the importing module is imported. Not edges: imports under
    ``if TYPE_CHECKING:`` (annotations only) and imports inside function bodies; a lazy import is how the package
    takes an optional dependency or one that would otherwise close a cycle (it runs when the function is called,
    after every module involved has finished importing). Importing ``a.b.c`` runs ``a/b/__init__.py``: an edge.
    """
    graph = _module_graph(_sources(MODULES))
    assert len(graph) == len(MODULES)  # the scan saw the package, its real imports, inside packages too
    assert "neurosubset.solvers.bounded" in graph["neurosubset.solvers.multistart"], graph
    assert "neurosubset.dynamics" in graph["neurosubset.circuit"], graph
    cycle = _cycle(graph)
    assert cycle is None, f"module-level import cycle: {' -> '.join(cycle)}"


# ------------------------------------------------------------------------------------------ private names stay inside
# Private modules of the root package that are its shared infrastructure: any module of the package may import
# their public names (their private names stay theirs). analysis/ and benchmarks/ get them through _internal. A new
# top-level private module is private to itself until it is listed here (the satellites _stability, _continuous and
# _steady, each imported by many modules, were exactly what this list must not hold: concepts without a home).
SHARED_PRIVATE = {
    "neurosubset._checks": "errors, warnings and argument checks raised by every module",
    "neurosubset._schema": "the result schema (status flags, variable names, attrs) every writer and reader uses",
    "neurosubset._partial": "the mp command's interrupted results and their resume file (cli)",
    "neurosubset._spec": "the spec types (Region, Projection, roles) and TOML I/O under circuit, layout, connectome",
    "neurosubset._outputs": "safe output files (checks, atomic writes, fsync) for the CLI, results and sweep stores",
    "neurosubset._memory": "memory estimates and trial chunking for benchmark, sweeps and the circuit check",
    "neurosubset._repr": "text/HTML display of circuits, allocations and certificates (below those classes)",
}
INTERNAL = "neurosubset._internal"


def _private(part: str) -> bool:
    return part.startswith("_") and not (part.startswith("__") and part.endswith("__"))


def _owner(module: str) -> str:
    """The 'package' a private thing belongs to: a subpackage of neurosubset as a whole, each module directly
    under neurosubset as its own, ``neurosubset/__init__`` as ``neurosubset``; a script (analysis/x.py) as itself."""
    return ".".join(module.split(".")[:2])


def _private_imports(sources: Mapping[str, str]) -> list[str]:
    """Imports of a private neurosubset name or module across packages, as ``path:line message``.

    ``sources``: ``{path: source}`` of the package's modules and of scripts (any path outside ``neurosubset/``).
    Every import counts, lazy and TYPE_CHECKING ones too. A name or a module path component with a leading
    underscore (not a dunder) is private. Allowed:

    - inside one package (:func:`_owner`): ``theory/optimal.py`` may take ``_columns`` from ``theory/_ranks.py``;
    - the public names of :data:`SHARED_PRIVATE` modules, by any module of the package;
    - anything by :data:`INTERNAL` itself, the one door: it re-exports, under public names, what analysis/ and
      benchmarks/ need; scripts may import its public names and nothing else private of neurosubset
      (also not as attributes: ``ns._schema.meta``, ``ns.theory._ranks``);
    - no module of the package imports :data:`INTERNAL` (it is for scripts, and imports from everywhere).
    """
    modules = {_dotted(p)[0]: p for p in sources if p.startswith("neurosubset/")}
    out = []
    for path, source in sources.items():
        me, is_package = _dotted(path)
        inside = path.startswith("neurosubset/")
        if me == INTERNAL:
            continue
        for imp in _import_sites(source, me, is_package):
            if not (imp.target == "neurosubset" or imp.target.startswith("neurosubset.")):
                continue
            for target, name in _imported(imp, modules):
                shown = target + (f".{name}" if name else "")
                if target == INTERNAL:
                    if inside:
                        out.append(f"{path}:{imp.line} imports {shown}: {INTERNAL} is for analysis/ and benchmarks/")
                    elif name and _private(name):
                        out.append(f"{path}:{imp.line} imports private {shown}; re-export it under a public name")
                    continue
                private_module = any(_private(part) for part in target.split("."))
                private_name = bool(name) and _private(name)
                if not (private_module or private_name):
                    continue
                if inside and (_owner(target) == _owner(me) or (target in SHARED_PRIVATE and not private_name)):
                    continue
                fix = "make it public or import it inside its package" if inside else f"import it from {INTERNAL}"
                out.append(f"{path}:{imp.line} imports private {shown} across packages; {fix}")
        if inside:
            continue
        tree = ast.parse(source)
        bound: set[str] = set()  # the script's names bound to neurosubset modules and objects
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                bound.update((a.asname or a.name).split(".")[0] for a in node.names
                             if a.name == "neurosubset" or a.name.startswith("neurosubset."))
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("neurosubset"):
                bound.update(a.asname or a.name for a in node.names)
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and _private(node.attr):
                root = node.value
                while isinstance(root, ast.Attribute):
                    root = root.value
                if isinstance(root, ast.Name) and root.id in bound:
                    out.append(f"{path}:{node.lineno} reads private {ast.unparse(node)}; import it from {INTERNAL}")
    return _by_place(out)


def test_the_private_name_check_flags_only_private_imports_across_packages():
    src = {
        "neurosubset/__init__.py": "from ._checks import ParameterError\nfrom ._schema import version as _version\n",
        "neurosubset/_checks.py": "", "neurosubset/_schema.py": "", "neurosubset/_internal.py":
            "from .theory._ranks import _columns as rank_columns\n",
        "neurosubset/benchmark.py": "def _check_flag(): pass\nfrom .solvers._device import check_device\n",
        "neurosubset/solvers/__init__.py": "", "neurosubset/solvers/_device.py": "",
        "neurosubset/solvers/lm.py": "from ._device import check_device\nfrom .. import _schema\n",
        "neurosubset/theory/__init__.py": "", "neurosubset/theory/_ranks.py": "",
        "neurosubset/theory/optimal.py": "from ._ranks import _columns\nfrom .._checks import _private_helper\n",
        "neurosubset/responses/__init__.py": "",
        "neurosubset/responses/fitting.py": "def f():\n    from ..benchmark import DEFAULT_TOL, _check_flag\n",
        "neurosubset/plot.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ._internal import x\n",
        "analysis/a.py": ("import neurosubset as ns\nfrom neurosubset._internal import rank_columns, meta\n"
                          "from neurosubset.benchmark import draw_trials\nns._schema.meta\nns.theory.certify\n"),
        "benchmarks/b.py": "from neurosubset._schema import DONE\nfrom neurosubset import _schema\n"
                           "from neurosubset._internal import _x\nimport neurosubset.theory._ranks\n",
    }
    assert _private_imports(src) == [
        "analysis/a.py:4 reads private ns._schema; import it from neurosubset._internal",
        "benchmarks/b.py:1 imports private neurosubset._schema.DONE across packages; import it from "
        "neurosubset._internal",
        "benchmarks/b.py:2 imports private neurosubset._schema across packages; import it from neurosubset._internal",
        "benchmarks/b.py:3 imports private neurosubset._internal._x; re-export it under a public name",
        "benchmarks/b.py:4 imports private neurosubset.theory._ranks across packages; import it from "
        "neurosubset._internal",
        "neurosubset/benchmark.py:2 imports private neurosubset.solvers._device.check_device across packages; make it "
        "public or import it inside its package",
        "neurosubset/plot.py:3 imports neurosubset._internal.x: neurosubset._internal is for analysis/ and benchmarks/",
        "neurosubset/responses/fitting.py:2 imports private neurosubset.benchmark._check_flag across packages; make "
        "it public or import it inside its package",
        "neurosubset/theory/optimal.py:2 imports private neurosubset._checks._private_helper across packages; make it "
        "public or import it inside its package",
    ]


def test_the_private_name_check_catches_the_old_code():
    # at OLD, analysis/ imported neurosubset._schema and neurosubset.theory._ranks._columns directly, and the
    # satellites _stability / _continuous and dynamics' private helpers were imported all over the package
    old = {**_git_sources(OLD, "neurosubset"), **_git_sources(OLD, "analysis")}
    found = _private_imports(old)
    for where, what in (("analysis/scaling.py:42 ", "neurosubset.theory._ranks._columns"),
                        ("analysis/common.py:24 ", "neurosubset._schema.meta"),
                        ("neurosubset/benchmark.py:44 ", "neurosubset._stability.loops"),
                        ("neurosubset/simulate.py:15 ", "neurosubset._continuous"),
                        ("neurosubset/responses/rates.py:19 ", "neurosubset.dynamics._blocks"),
                        ("neurosubset/solvers/steady.py:44 ", "neurosubset.dynamics._adjoint_layout")):
        assert any(v.startswith(where) and f" {what} " in v for v in found), (where, what, found)


def test_no_private_name_is_imported_across_packages():
    """No module of the package, nor any script of analysis/ and benchmarks/, imports a private name or module
    (a path component or name with one leading underscore) of another package. Packages: each subpackage
    (``neurosubset/dynamics``) is one, each module directly under ``neurosubset/`` its own, ``neurosubset/__init__``
    ``neurosubset``. Every import counts (lazy and ``TYPE_CHECKING`` ones too). Allowed:

    - private names and modules used inside their own package (``theory/optimal.py`` <- ``theory/_ranks._columns``);
    - the public names of the shared private modules :data:`SHARED_PRIVATE` (``_checks``, ``_schema``, ``_spec``,
      ``_outputs``, ``_memory``, ``_repr``) by any module of the package;
    - :mod:`neurosubset._internal` itself, which re-exports under public names what the scripts need; the scripts
      take private things from there only (its public names; no ``neurosubset._x`` import, no ``ns._x`` attribute);
    - nothing else: no module of the package imports :mod:`neurosubset._internal`.
    """
    assert set(SHARED_PRIVATE) <= {_module(p) for p in MODULES}, "a SHARED_PRIVATE entry names no module"
    assert (PACKAGE / "_internal.py").exists()
    found = _private_imports(_sources(MODULES + SCRIPTS))
    assert not found, "private names imported across packages:\n" + "\n".join(found)


# --------------------------------------------------------------------------------------------- one block assembly
BLOCKS = "neurosubset/dynamics/blocks.py"
BLOCK_MATRIX = "neurosubset.dynamics.blocks.block_matrix"
_LAYOUT_CALLS = {"projections_into", "block_slices"}  # + reading `.projections` or `.projection[...]`
_ALLOCATE = {"zeros", "zeros_like", "empty", "empty_like", "full", "full_like", "new_zeros", "new_full", "new_empty"}
_JOIN = {"cat", "concat", "concatenate", "hstack", "vstack", "column_stack", "row_stack", "block", "block_diag",
         "bmat"}


def _callee(node: ast.Call) -> str:
    f = node.func
    return f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""


def _own_nodes(func: ast.AST) -> Iterator[ast.AST]:
    """The nodes of a function's own body: nested functions and classes are functions of their own."""
    todo = list(ast.iter_child_nodes(func))
    while todo:
        node = todo.pop()
        yield node
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            todo.extend(ast.iter_child_nodes(node))


def _names(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}


def _bound(target: ast.AST) -> set[str]:
    """Names an assignment target binds or writes into: ``a``, ``a, (b, c)``, ``a[i]`` (``a``), not ``i``."""
    if isinstance(target, ast.Name):
        return {target.id}
    if isinstance(target, (ast.Tuple, ast.List)):
        return set().union(*map(_bound, target.elts)) if target.elts else set()
    if isinstance(target, (ast.Starred, ast.Subscript)):
        return _bound(target.value)
    return set()


def _shallow_names(node: ast.AST) -> set[str]:
    """Names an expression passes along as they are: ``a``, ``(a, b)``, ``zip(a, b)``, not ``a @ b`` or ``f(a)``."""
    if isinstance(node, ast.Name):
        return {node.id}
    if isinstance(node, (ast.Tuple, ast.List)):
        return set().union(*map(_shallow_names, node.elts)) if node.elts else set()
    if isinstance(node, ast.Starred):
        return _shallow_names(node.value)
    if isinstance(node, ast.Call) and _callee(node) in ("zip", "enumerate", "reversed"):
        return set().union(*map(_shallow_names, node.args)) if node.args else set()
    return set()


def _reads_layout(nodes: list[ast.AST]) -> bool:
    """Whether a function walks the projections between regions: calls ``projections_into`` / ``block_slices`` or
    reads ``.projections`` / ``.projection[...]``."""
    for node in nodes:
        if isinstance(node, ast.Call) and _callee(node) in _LAYOUT_CALLS:
            return True
        if isinstance(node, ast.Attribute) and node.attr == "projections" and isinstance(node.ctx, ast.Load):
            return True
        if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Attribute) \
                and node.value.attr == "projection":
            return True
    return False


def _axis(node: ast.Call) -> object:
    """The axis a join runs along (None: not a literal)."""
    name = _callee(node)
    if name in ("hstack", "column_stack"):
        return -1
    if name in ("vstack", "row_stack"):
        return -2
    given = [k.value for k in node.keywords if k.arg in ("dim", "axis")] or node.args[1:2]
    try:
        return ast.literal_eval(given[0]) if given else 0
    except ValueError:
        return None


_POSITION_CALLS = {"block_slices", "slices", "offsets"}  # the layout's positions of regions and weights


def _places_blocks(nodes: list[ast.AST]) -> tuple[str, str] | None:
    """How a function places blocks into one matrix, as ``(kind, where)``, or None.

    ``"write"``: a subscript write ``out[..., post, pre] (+)= ...`` into an array the function allocated
    (``np.zeros``, ``new_zeros``, ... or a name passed along from one) at block positions: two indices that are
    positions of regions (from ``slices`` / ``block_slices`` / ``offsets`` or ``slice(...)`` the function builds), or
    one from ``block_slices``. ``"join"``: ``np.block``-like calls, or joins (``torch.cat``, ``np.concatenate``,
    ...) along two literal axes (rows of blocks, then the rows).
    """
    allocated: set[str] = set()
    positions: set[str] = set()  # names holding positions of regions in a neuron vector
    pairs: set[str] = set()  # names holding (post, pre) positions of a weight: from block_slices
    for node in nodes:
        if isinstance(node, ast.Assign):
            todo = [(t, node.value) for t in node.targets]
            while todo:
                target, value = todo.pop()
                if isinstance(target, (ast.Tuple, ast.List)) and isinstance(value, (ast.Tuple, ast.List)) \
                        and len(target.elts) == len(value.elts):
                    todo.extend(zip(target.elts, value.elts))
                    continue
                calls = {_callee(n) for n in ast.walk(value) if isinstance(n, ast.Call)}
                if isinstance(value, ast.Call) and _callee(value) in _ALLOCATE:
                    allocated |= _bound(target)
                if calls & (_POSITION_CALLS | {"slice"}):
                    positions |= _bound(target)
                if "block_slices" in calls:
                    pairs |= _bound(target)
    for _ in range(3):  # names passed along: `for mat, cols in ((a, ...), (b, ...))`, `for name, (post, pre) in ...`
        for node in nodes:
            bound = [(node.target, node.iter)] if isinstance(node, (ast.For, ast.comprehension)) else [
                (t, node.value) for t in node.targets] if isinstance(node, ast.Assign) else []
            for target, value in bound:
                mentioned = _names(value) | {_callee(n) for n in ast.walk(value) if isinstance(n, ast.Call)}
                if _shallow_names(value) & allocated:
                    allocated |= _bound(target)
                if mentioned & (positions | _POSITION_CALLS):
                    positions |= _bound(target)
                if mentioned & (pairs | {"block_slices"}):
                    pairs |= _bound(target)
    for node in nodes:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(
            node, ast.AugAssign) else []
        for target in (t for tt in targets for t in ast.walk(tt)):
            if isinstance(target, ast.Subscript) and isinstance(target.value, ast.Name) \
                    and target.value.id in allocated:
                index = target.slice.elts if isinstance(target.slice, ast.Tuple) else [target.slice]
                at = [_names(i) for i in index]
                if sum(bool(n & positions) for n in at) >= 2 or (len(index) == 1 and at[0] & pairs):
                    return "write", f"writes blocks into {target.value.id} (line {target.lineno})"
    joins = [n for n in nodes if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and _callee(n) in _JOIN]
    for node in joins:
        if _callee(node) in ("block", "block_diag", "bmat"):
            return "join", f"calls {_callee(node)} (line {node.lineno})"
    axes = {_axis(n) for n in joins} - {None}
    if len(axes) >= 2:
        return "join", f"joins along axes {sorted(axes)} (line {joins[0].lineno})"
    return None


@dataclass
class _Function:
    path: str
    line: int
    reads_layout: bool
    places: tuple[str, str] | None
    calls: list[tuple[int, str, str]]  # (line, called name (`f` of `x.f(...)`), resolved qualified name or "")


def _functions(sources: Mapping[str, str]) -> dict[str, _Function]:
    """Every function and method of ``sources`` by qualified name, with its calls resolved through the imports
    (re-exports followed): the call graph of the package."""
    modules = dict(_dotted(p) for p in sources)
    trees = {p: ast.parse(s) for p, s in sources.items()}
    tables: dict[str, dict[str, str]] = {}
    for path, tree in trees.items():
        me, is_package = _dotted(path)
        table = tables.setdefault(me, {})
        for imp in _import_sites(sources[path], me, is_package):
            if not imp.names:  # `import a.b` binds a, `import a.b as c` binds c to a.b
                top = imp.target.partition(".")[0]
                table[imp.asnames[0] or top] = imp.target if imp.asnames[0] else top
            for name, alias in zip(imp.names, imp.asnames):
                table[alias or name] = f"{imp.target}.{name}"
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                table[node.name] = f"{me}.{node.name}"

    def canonical(name: str) -> str:
        for _ in range(10):  # follow re-exports: neurosubset.dynamics.block_matrix -> ...dynamics.blocks.block_matrix
            module, _, attr = name.rpartition(".")
            if module in modules and attr in tables.get(module, {}) and tables[module][attr] != name:
                name = tables[module][attr]
            else:
                break
        return name

    def resolve(expr: ast.expr, me: str, cls: str | None) -> str:
        if isinstance(expr, ast.Name):
            return canonical(tables[me].get(expr.id, ""))
        if isinstance(expr, ast.Attribute):
            if isinstance(expr.value, ast.Name) and expr.value.id in ("self", "cls") and cls:
                return f"{me}.{cls}.{expr.attr}"
            base = resolve(expr.value, me, cls)
            return canonical(f"{base}.{expr.attr}") if base else ""
        return ""

    out: dict[str, _Function] = {}
    for path, tree in trees.items():
        me, _ = _dotted(path)

        def visit(node: ast.AST, prefix: str, cls: str | None) -> None:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.ClassDef):
                    visit(child, f"{prefix}.{child.name}", child.name)
                elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    nodes = list(_own_nodes(child))
                    calls = [(n.lineno, _callee(n), resolve(n.func, me, cls))
                             for n in nodes if isinstance(n, ast.Call)]
                    out[f"{prefix}.{child.name}"] = _Function(path, child.lineno, _reads_layout(nodes),
                                                              _places_blocks(nodes), calls)
                    visit(child, f"{prefix}.{child.name}", cls)

        visit(tree, me, None)
    return out


def _assembles(name: str, functions: Mapping[str, _Function], callers: Mapping[str, set[str]], home: str) -> str:
    """Why the function ``name`` assembles a block matrix ('' if it does not): it writes blocks at layout positions,
    or it joins blocks and reads the projections between regions, or is handed them by a caller outside ``home``
    that reads them (a helper of an assembly)."""
    f = functions[name]
    if not f.places:
        return ""
    kind, where = f.places
    if kind == "write":
        return f"{where} at positions of the index layout"
    if f.reads_layout:
        return f"reads the projections between regions and {where}"
    handed = sorted(g for g in callers.get(name, ()) if functions[g].reads_layout and functions[g].path != home)
    return f"is handed the projections by {', '.join(handed)} and {where}" if handed else ""


def _block_assemblies(sources: Mapping[str, str], home: str = BLOCKS, one: str = BLOCK_MATRIX) -> list[str]:
    """Where ``sources`` assemble a block matrix of weights outside ``home``, as ``path:line message``.

    On the call graph of :func:`_functions` (calls resolved through imports and re-exports), see :func:`_assembles`.
    Violations: a function outside ``home`` that assembles; a definition named like ``one`` elsewhere; a call written
    ``block_matrix`` that does not resolve to ``one``; a call from outside ``home`` to an assembling function of
    ``home`` other than ``one`` (everyone goes through ``one``).
    """
    functions = _functions(sources)
    callers: dict[str, set[str]] = {}
    for name, f in functions.items():
        for _, _, target in f.calls:
            callers.setdefault(target, set()).add(name)
    why = {name: _assembles(name, functions, callers, home) for name in functions}
    out = []
    short = one.rpartition(".")[2]
    for name, f in functions.items():
        if name.rpartition(".")[2] == short and name != one:
            out.append(f"{f.path}:{f.line} defines {name}: a second {short}")
        if why[name] and f.path != home:
            out.append(f"{f.path}:{f.line} {name} assembles a block matrix: it {why[name]}; use {one}")
        for line, called, target in f.calls:
            if called == short and target != one:
                out.append(f"{f.path}:{line} {name} calls {target or 'an unresolved ' + called}, not {one}")
            if target != one and why.get(target) and functions[target].path == home and f.path != home:
                out.append(f"{f.path}:{line} {name} calls {target}, an assembly of {home} other than {one}")
    return _by_place(out)


def test_the_block_check_on_a_hand_made_package():
    src = {
        "neurosubset/__init__.py": "",
        "neurosubset/dynamics/__init__.py": "from .blocks import block_matrix\n",
        "neurosubset/dynamics/blocks.py": (
            "import numpy as np\nimport torch\n"
            "def block_matrix(circuit, weights, rows, cols):\n"
            "    if not torch.is_tensor(weights[0]):\n"
            "        return _numpy_blocks(circuit, weights, rows, cols)\n"
            "    lines = [torch.cat([weights[p.name] for p in circuit.projections_into(r)], dim=-1) for r in rows]\n"
            "    return torch.cat(lines, dim=-2)\n"
            "def _numpy_blocks(circuit, weights, rows, cols):\n"
            "    out = np.zeros((9, 9))\n"
            "    for name, (post, pre) in circuit.block_slices(rows, cols).items():\n"
            "        out[post, pre] += weights[name]\n"
            "    return out\n"),
        "neurosubset/a.py": (
            "import numpy as np\nimport torch\n"
            "from .dynamics import block_matrix as bm\n"  # through a re-export, renamed: still the one
            "from .dynamics.blocks import _numpy_blocks\n"
            "def uses(c, w):\n    return bm(c, w, 'hidden', 'hidden')\n"
            "def around(c, w):\n    return _numpy_blocks(c, w, [], [])\n"
            # not block matrices: a scatter of triples, a neuron vector, weights joined along one axis
            "def scatter(t, shape):\n    out = np.zeros(shape)\n    out[t[:, 0], t[:, 1]] = t[:, 2]\n    return out\n"
            "def vector(c, x):\n    v = np.zeros(c.n_in)\n    for r, s in c.slices('input').items():\n"
            "        v[s] = x[r]\n    return v\n"
            "def theta(c, w):\n    return torch.cat([w[p.name].flatten() for p in c.projections], dim=-1)\n"),
        "neurosubset/b.py": (
            "import numpy as np\nimport torch\n"
            "def block_matrix(c, w, rows, cols):\n    return None\n"
            "def loop_matrix(c, loop, w):\n"  # as _stability.loop_matrix was
            "    pos, start = {}, 0\n"
            "    for name in loop.regions:\n"
            "        pos[name], start = slice(start, start + c.region[name].size), start + c.region[name].size\n"
            "    out = np.zeros((start, start))\n"
            "    for name in loop.projections:\n"
            "        p = c.projection[name]\n"
            "        out[..., pos[p.post], pos[p.pre]] += w[name]\n"
            "    return out\n"
            "def caller(c, w, rows, cols):\n"
            "    names = {(r, q): [p.name for p in c.projections_into(r) if p.pre == q] for r in rows for q in cols}\n"
            "    return _join(w, names, rows, cols)\n"
            "def _join(w, names, rows, cols):\n"  # a helper handed the projections
            "    lines = [torch.cat([w[n] for q in cols for n in names[r, q]], dim=-1) for r in rows]\n"
            "    return torch.cat(lines, dim=-2)\n"
            "def local(c, w):\n    return block_matrix(c, w, 'a', 'b')\n"),
    }
    found = [v.split(" ", 2)[:2] for v in _block_assemblies(src)]
    assert found == [["neurosubset/a.py:8", "neurosubset.a.around"],  # goes around block_matrix
                     ["neurosubset/b.py:3", "defines"],  # a second block_matrix
                     ["neurosubset/b.py:5", "neurosubset.b.loop_matrix"],  # writes blocks
                     ["neurosubset/b.py:17", "neurosubset.b._join"],  # joins blocks it is handed
                     ["neurosubset/b.py:21", "neurosubset.b.local"]], _block_assemblies(src)  # its own block_matrix


@pytest.mark.slow
def test_the_block_check_finds_the_four_old_assemblies():
    # at OLD the block matrix was assembled by dynamics._blocks, _continuous._blocks, theory/exact._block and
    # _stability.loop_matrix (and, the check finds, by Circuit.expected_spectral_radius, spiking.hawkes.linear_form
    # and plot.masks._mask_matrix)
    found = _block_assemblies(_git_sources(OLD, "neurosubset"))
    for where in ("neurosubset/dynamics.py:174 neurosubset.dynamics._blocks ",
                  "neurosubset/_continuous.py:142 neurosubset._continuous._blocks ",
                  "neurosubset/theory/exact.py:100 neurosubset.theory.exact._block ",
                  "neurosubset/_stability.py:98 neurosubset._stability.loop_matrix "):
        assert any(v.startswith(where) for v in found), (where, found)


@pytest.mark.slow
def test_the_block_assembly_is_defined_once():
    """No function of the package outside ``neurosubset/dynamics/blocks.py`` assembles a block matrix, and every
    call of ``block_matrix`` is :func:`neurosubset.dynamics.blocks.block_matrix` (see :func:`_block_assemblies`)."""
    sources = _sources(MODULES)
    functions = _functions(sources)
    # the check recognises the one assembly and sees its users (it does not pass by seeing nothing)
    assert _assembles(BLOCK_MATRIX, functions, {}, BLOCKS), "the check no longer recognises block_matrix"
    users = {f.path for f in functions.values() if any(t == BLOCK_MATRIX for _, _, t in f.calls)}
    assert len(users) >= 5, users
    found = _block_assemblies(sources)
    assert not found, "block matrices assembled outside neurosubset.dynamics.blocks:\n" + "\n".join(found)


@pytest.mark.slow
def test_every_module_imports_in_a_fresh_interpreter_in_either_order():
    # a cycle between module-level names shows as an ImportError in one of the two orders
    names = [_module(p) for p in MODULES]
    code = "import importlib, sys\nfor n in sys.argv[1:]:\n    importlib.import_module(n)\n"
    for order in (names, names[::-1]):
        proc = subprocess.run([sys.executable, "-c", code, *order], capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, f"importing {order[0]}... failed:\n{proc.stderr[-2000:]}"


_FLAG_WORDS = {w for flags in (_schema.POINT_STATUS, _schema.FIT_STATUS) for w in flags.meanings}


@pytest.mark.parametrize("path", [p for p in MODULES if not p.name.endswith("_schema.py")],
                         ids=lambda p: str(p.relative_to(PACKAGE)))
def test_status_numbers_and_long_names_are_defined_only_in_schema(path):
    tree = ast.parse(path.read_text())
    where = path.relative_to(PACKAGE)
    # no module-level constant named after a status flag (DONE = 2; OFF_GRID, PENDING, ... = range(5))
    for node in tree.body:
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names = [t.id for target in targets for t in ast.walk(target) if isinstance(t, ast.Name)]
            clash = [n for n in names if n.isupper() and n.lower() in _FLAG_WORDS]
            assert not clash, f"{where}:{node.lineno} defines status flag(s) {clash}; import them from _schema"
    for node in ast.walk(tree):
        # no dict literal spelling a long_name or flag attrs
        if isinstance(node, ast.Dict):
            for key in node.keys:
                if isinstance(key, ast.Constant) and key.value in ("long_name", "flag_values", "flag_meanings"):
                    pytest.fail(f"{where}:{node.lineno} spells {key.value!r}; take it from neurosubset._schema")
        # no keyword long_name=... (attrs.update(long_name=...))
        if isinstance(node, ast.keyword) and node.arg in ("long_name", "flag_values", "flag_meanings"):
            pytest.fail(f"{where}:{node.value.lineno} spells {node.arg}=...; take it from neurosubset._schema")
        # no string of flag meanings ("off_grid pending done ...")
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            words = set(node.value.split())
            if len(words) >= 3 and words <= _FLAG_WORDS:
                pytest.fail(f"{where}:{node.lineno} spells flag meanings {node.value!r}")


_OFFSET_LOOP = re.compile(r"(\w+)\s*\+=\s*\w+\.size\b")


@pytest.mark.parametrize("path", [p for p in MODULES if p.name not in ("circuit.py",)],
                         ids=lambda p: str(p.relative_to(PACKAGE)))
def test_block_offsets_are_computed_only_by_circuit(path):
    # the pattern every earlier copy used: a running offset advanced by region sizes
    text = path.read_text()
    hits = [m.group(0) for m in _OFFSET_LOOP.finditer(text)]
    assert not hits, f"{path.relative_to(PACKAGE)} accumulates block offsets ({hits}); use the Circuit's layout"
    assert "np.cumsum([r.size" not in text and "cumsum(sizes" not in text


def test_flags_carry_cf_attrs_of_the_variables_own_type():
    for flags in (_schema.POINT_STATUS, _schema.FIT_STATUS):
        attrs = flags.attrs()
        assert attrs["flag_values"].dtype == np.int8
        assert attrs["flag_meanings"].split() == list(flags.meanings)
        assert all(re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", w) for w in flags.meanings)
        assert [flags[w] for w in flags.meanings] == list(range(len(flags.meanings)))
    assert (_schema.OFF_GRID, _schema.PENDING, _schema.DONE) == (0, 1, 2)  # 0 is zarr's fill value: off-grid
