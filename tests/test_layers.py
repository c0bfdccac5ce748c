"""The import layers of `fitplan`: every import goes to a module of the same room or of a lower one.

Rooms, lowest first (docs/architecture.md describes what each holds):

    shared      fitplan/*.py except fitplan/__init__.py (units, errors, model_spec, ...)
    models      fitplan/advisor/models/**      } side by side: neither imports the other
    profiles    fitplan/profiles/**            }
    strategies  fitplan/strategies/**
    planner     fitplan/advisor/planner/**
    plans       fitplan/advisor/plans/**
    budgets     fitplan/advisor/budgets/**
    cli         fitplan/advisor/cli/**         } side by side: neither imports the other
    plugin      fitplan/plugin/**              }
    api         fitplan/__init__.py (the public facade: may import anything)

`fitplan/advisor/__init__.py` (the bare `fitplan.advisor` package, which should stay empty) counts
as `shared`, so anyone may import it.

Every import statement counts, wherever it is: at module top level, inside functions and methods,
inside `if TYPE_CHECKING:` and inside try/except. A lazy import inside a function still ties the two
modules together (it runs the first time the function does), so it may not point upward either.
Only the ast of the source is read; nothing under fitplan/ is imported.
"""
from __future__ import annotations

import ast
import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE_DIR = Path(__file__).resolve().parents[1] / "fitplan"

# room -> level; a module may import its own room and any room of a lower level.
LEVELS: dict[str, int] = {
    "shared": 0,
    "models": 1,
    "profiles": 1,
    "strategies": 2,
    "planner": 3,
    "plans": 4,
    "budgets": 5,
    "cli": 6,
    "plugin": 6,
    "api": 7,
}

# path prefix under fitplan/ -> room; checked in order, the first match wins.
ROOM_PREFIXES: tuple[tuple[str, str], ...] = (
    ("advisor/models/", "models"),
    ("advisor/planner/", "planner"),
    ("advisor/plans/", "plans"),
    ("advisor/budgets/", "budgets"),
    ("advisor/cli/", "cli"),
    ("profiles/", "profiles"),
    ("strategies/", "strategies"),
    ("plugin/", "plugin"),
)


@dataclass(frozen=True, order=True)
class Edge:
    """One import statement from one fitplan module to another, with where it sits."""

    source: str
    target: str
    line: int
    where: str  # "top level", "inside function f", "inside function C.m", "inside class C"

    def __str__(self) -> str:
        return f"{self.source} -> {self.target} (line {self.line}, {self.where})"


# --- the module tree ---------------------------------------------------------------------------


def module_name(path: Path) -> str:
    """Dotted name of a file under fitplan/: a package's `__init__.py` names the package."""
    parts = list(path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@functools.cache
def module_files() -> dict[str, Path]:
    """Every module of the tree by dotted name, so imports can be resolved to real files."""
    return {module_name(path): path for path in sorted(PACKAGE_DIR.rglob("*.py"))}


def room_of(path: Path) -> str | None:
    """The room a file belongs to, decided by its path alone; None for a file not yet placed."""
    relative = path.relative_to(PACKAGE_DIR).as_posix()
    if relative == "__init__.py":
        return "api"
    if relative == "advisor/__init__.py" or "/" not in relative:
        return "shared"
    for prefix, room in ROOM_PREFIXES:
        if relative.startswith(prefix):
            return room
    return None


def may_import(importer: str, imported: str) -> bool:
    """Same room, or a strictly lower level: never upward, never sideways to a sibling room."""
    return importer == imported or LEVELS[imported] < LEVELS[importer]


# --- reading imports ---------------------------------------------------------------------------


def resolve_relative(module: str, is_package: bool, level: int, name: str | None) -> str:
    """The absolute name `from .name` means inside `module` (a package is its own `.`)."""
    package = module.split(".") if is_package else module.split(".")[:-1]
    base = package[: len(package) - (level - 1)] if level > 1 else package
    return ".".join([*base, name] if name else base)


def known_target(name: str, known: Iterable[str]) -> str:
    """The longest prefix of `name` below `fitplan` that is a module of the tree, else `name`
    itself (an import of a module that does not exist; test_every_imported_module_exists says so)."""
    names = set(known)
    parts = name.split(".")
    while len(parts) > 1:
        if ".".join(parts) in names:
            return ".".join(parts)
        parts.pop()
    return name


class _ImportCollector(ast.NodeVisitor):
    """Walks the whole tree, keeping the enclosing function/class names for the messages."""

    def __init__(self, module: str, is_package: bool, known: frozenset[str]) -> None:
        self.module, self.is_package, self.known = module, is_package, known
        self.scopes: list[tuple[str, str]] = []  # (kind, name), outermost first
        self.edges: list[Edge] = []

    def where(self) -> str:
        if not self.scopes:
            return "top level"
        kind = "function" if any(k == "function" for k, _ in self.scopes) else "class"
        return f"inside {kind} " + ".".join(name for _, name in self.scopes)

    def add(self, node: ast.stmt, target: str) -> None:
        if target == "fitplan" or target.startswith("fitplan."):
            resolved = known_target(target, self.known)
            self.edges.append(Edge(self.module, resolved, node.lineno, self.where()))

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self.add(node, alias.name)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            base = resolve_relative(self.module, self.is_package, node.level, node.module)
        else:
            base = node.module or ""
        for alias in node.names:
            submodule = f"{base}.{alias.name}"
            self.add(node, submodule if submodule in self.known else base)

    def _scoped(self, kind: str, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) -> None:
        self.scopes.append((kind, node.name))
        self.generic_visit(node)
        self.scopes.pop()

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        self._scoped("function", node)

    def visit_AsyncFunctionDef(self, node: ast.AsyncFunctionDef) -> None:
        self._scoped("function", node)

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self._scoped("class", node)


def imports_in_source(source: str, module: str, is_package: bool, known: Iterable[str]) -> list[Edge]:
    """Every import of a fitplan module in `source`, at any depth (functions, TYPE_CHECKING, try)."""
    collector = _ImportCollector(module, is_package, frozenset(known))
    collector.visit(ast.parse(source))
    return collector.edges


@functools.cache
def all_edges() -> tuple[Edge, ...]:
    """The import graph of the whole tree, read once for all the tests."""
    files = module_files()
    edges: list[Edge] = []
    for name, path in files.items():
        source = path.read_text(encoding="utf-8")
        edges += imports_in_source(source, name, path.name == "__init__.py", files)
    return tuple(sorted(set(edges)))  # `from m import a, b` is one edge, not two


# --- cycles --------------------------------------------------------------------------------------


def strongly_connected(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm: the groups of modules that reach each other, each one a cycle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in sorted(graph.get(node, ())):
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            group: list[str] = []
            while not group or group[-1] != node:
                group.append(stack.pop())
                on_stack.discard(group[-1])
            groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups


def cycles(edges: Iterable[Edge]) -> list[list[str]]:
    """Groups of two or more modules importing each other, and modules importing themselves."""
    edges = list(edges)
    graph: dict[str, set[str]] = {}
    for edge in edges:
        graph.setdefault(edge.source, set()).add(edge.target)
    self_loops = {edge.source for edge in edges if edge.source == edge.target}
    return sorted(g for g in strongly_connected(graph) if len(g) > 1 or g[0] in self_loops)


# --- the tests -----------------------------------------------------------------------------------


def test_every_module_is_in_a_room() -> None:
    unplaced = [path.relative_to(PACKAGE_DIR.parent).as_posix()
                for path in module_files().values() if room_of(path) is None]
    if unplaced:
        pytest.fail("modules in no room (place their folder in ROOM_PREFIXES of tests/test_layers.py "
                    "and in docs/architecture.md):\n  " + "\n  ".join(unplaced), pytrace=False)


def test_every_imported_module_exists() -> None:
    missing = [edge for edge in all_edges() if edge.target not in module_files()]
    if missing:
        pytest.fail("imports of fitplan modules not in the tree:\n"
                    + "\n".join(f"  {edge}" for edge in missing), pytrace=False)


def test_no_upward_or_sideways_import() -> None:
    files = module_files()
    bad: dict[tuple[str, str], list[Edge]] = {}
    for edge in all_edges():
        if edge.target not in files:
            continue  # reported by test_every_imported_module_exists
        source_room, target_room = room_of(files[edge.source]), room_of(files[edge.target])
        if source_room and target_room and not may_import(source_room, target_room):
            bad.setdefault((source_room, target_room), []).append(edge)
    lines = [f"{src} imports {dst}:\n" + "\n".join(f"  {edge}" for edge in group)
             for (src, dst), group in sorted(bad.items())]
    total = sum(len(group) for group in bad.values())
    if bad:
        pytest.fail(f"{total} imports point upward or sideways:\n" + "\n".join(lines), pytrace=False)


def test_no_import_cycle() -> None:
    edges = all_edges()
    found = cycles(edges)
    lines: list[str] = []
    for group in found:
        members = set(group)
        lines.append("cycle: " + ", ".join(group))
        lines += [f"  {edge}" for edge in edges if edge.source in members and edge.target in members]
    if found:
        pytest.fail(f"{len(found)} import cycles (all imports counted):\n" + "\n".join(lines), pytrace=False)


def test_checker_sees_imports_inside_functions_and_type_checking() -> None:
    source = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from fitplan.units import GB\n"
        "class C:\n"
        "    def m(self):\n"
        "        try:\n"
        "            from ..errors import FitplanError\n"
        "        except ImportError:\n"
        "            pass\n"
        "def f():\n"
        "    import fitplan.advisor.cli.report\n"
        "    from . import quantization\n"
    )
    known = ["fitplan", "fitplan.units", "fitplan.errors", "fitplan.advisor", "fitplan.advisor.cli",
             "fitplan.advisor.cli.report", "fitplan.strategies", "fitplan.strategies.quantization"]
    found = {(e.target, e.line, e.where)
             for e in imports_in_source(source, "fitplan.strategies.x", False, known)}
    assert found == {
        ("fitplan.units", 3, "top level"),
        ("fitplan.errors", 7, "inside function C.m"),
        ("fitplan.advisor.cli.report", 11, "inside function f"),
        ("fitplan.strategies.quantization", 12, "inside function f"),
    }


def test_graph_is_not_trivially_empty() -> None:
    edges = all_edges()
    assert len(edges) > 100, f"only {len(edges)} fitplan imports found: is the checker reading the tree?"
    assert len(module_files()) > 50
