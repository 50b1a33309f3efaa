"""The package's layout rules: one definition of the result schema and of the block layout, small modules, no
import cycles, a core that never imports the CLI, the plots or the sweeps.

These read the source as text (ast), so they hold for code paths no other test runs.
"""
from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import neurosubset as ns
from neurosubset import _schema

PACKAGE = Path(ns.__file__).resolve().parent
MODULES = sorted(p for p in PACKAGE.rglob("*.py"))
MAX_LINES = 500
CORE = ("circuit", "_spec", "allocation", "dynamics", "solvers", "theory", "benchmark", "spiking", "_schema", "_checks")
NOT_IN_CORE = ("cli", "plot", "sweeps")


def _module(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Absolute names of the neurosubset modules that ``path`` imports (at any depth of the file)."""
    tree = ast.parse(path.read_text())
    here = _module(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    out = set()
    for node in ast.walk(tree):
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


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_is_over_500_lines(path):
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES, f"{path.relative_to(PACKAGE)} has {lines} lines (limit {MAX_LINES})"


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
    # edges between top-level modules/packages of neurosubset (the package __init__ itself excluded)
    graph: dict[str, set[str]] = {}
    for path in MODULES:
        src = _top(_module(path))
        if not src:
            continue
        graph.setdefault(src, set()).update(t for t in map(_top, _imports(path)) if t and t != src)
    assert {"benchmark", "circuit", "solvers", "sweeps"} <= set(graph), sorted(graph)  # the scan saw the package
    assert "circuit" in graph["benchmark"] and "benchmark" in graph["sweeps"], graph  # and its real imports
    cycle = _cycle(graph)
    assert cycle is None, f"import cycle: {' -> '.join(cycle)}"


def test_every_module_imports_in_a_fresh_interpreter_in_either_order():
    # a cycle between module-level names shows as an ImportError in one of the two orders
    names = [_module(p) for p in MODULES]
    code = "import importlib, sys\nfor n in sys.argv[1:]:\n    importlib.import_module(n)\n"
    for order in (names, names[::-1]):
        proc = subprocess.run([sys.executable, "-c", code, *order], capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, f"importing {order[0]}... failed:\n{proc.stderr[-2000:]}"


_FLAG_WORDS = {w for flags in (_schema.POINT_STATUS, _schema.FIT_STATUS) for w in flags.meanings}


@pytest.mark.parametrize("path", [p for p in MODULES if p.name != "_schema.py"],
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
