"""The house's rules, checked on the source: sizes, one-way imports, every fact once.

Each check is the kind of ``python -c`` one-liner a reviewer would write; together they
keep the layout of issue 18 from eroding.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "mh_notebook"
SOURCES = sorted(p for p in PACKAGE.rglob("*.py") if "sim" not in p.relative_to(PACKAGE).parts)
LAYERS = [
    "records",
    "errors",
    "models",
    "formats",
    "client",
    "polling",
    "journal",
    "results",
    "engine",
    "history",
    "analysis",
    "tasks",
    "view",
    "watcher",
    "cli",
]
"""Top to bottom: a module imports only from its own layer or the layers above it."""


def _module(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(["mh_notebook", *parts])


def _imports(path: Path) -> set[str]:
    """Every mh_notebook module ``path`` imports, at the top or inside a function."""
    here = _module(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            target = (
                ".".join([*base, *(node.module or "").split(".")]).strip(".") if node.level else node.module
            )
            if target and target.startswith("mh_notebook"):
                found.add(target)
                found.update(f"{target}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("mh_notebook"))
    modules = {_module(p) for p in SOURCES}
    return {m for m in found if m in modules and m != _module(path)}


def _layer(module: str) -> int:
    name = module.split(".")[1] if "." in module else ""
    return LAYERS.index(name) if name in LAYERS else -1


def test_the_watcher_is_a_facade_and_no_module_is_a_warehouse() -> None:
    sizes = {p.relative_to(PACKAGE).as_posix(): len(p.read_text().splitlines()) for p in SOURCES}
    assert {name: n for name, n in sizes.items() if n > 500} == {}
    facade = next(p for p in SOURCES if "class TaskWatcher" in p.read_text())
    assert len(facade.read_text().splitlines()) <= 320, facade


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.relative_to(PACKAGE).as_posix())
def test_imports_run_one_way(path: Path) -> None:
    """Down the layers only (late imports inside functions included): no circle."""
    if path.name == "__init__.py" and path.parent == PACKAGE:
        return  # the package's front door re-exports from every layer
    mine = _layer(_module(path))
    assert mine >= 0, f"{path} is in no layer: add it to LAYERS"
    upward = sorted(m for m in _imports(path) if _layer(m) > mine)
    assert upward == [], f"{_module(path)} imports from a lower layer"


def test_there_is_no_import_circle() -> None:
    graph = {_module(p): _imports(p) for p in SOURCES if p.name != "__init__.py"}
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in graph.get(node, ()):
            assert state.get(nxt) != 1, " -> ".join([*path, nxt])
            if nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for node in graph:
        if node not in state:
            visit(node, [node])


def test_the_ending_statuses_are_written_once_and_not_found_spelled_once() -> None:
    ending = re.compile(r"""["'](succeeded|failed|cancelled)["']""")
    literals = {
        p.relative_to(PACKAGE).as_posix(): ending.findall(p.read_text())
        for p in SOURCES
        if p.name != "records.py"
    }
    assert {name: found for name, found in literals.items() if found} == {}
    spelled = [
        p.name
        for p in SOURCES
        if p.name != "records.py" and re.search(r"""["']not[ _]found["']""", p.read_text())
    ]
    assert spelled == []
    records = (PACKAGE / "records.py").read_text()
    assert records.count("frozenset({TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.CANCELLED})") == 1
