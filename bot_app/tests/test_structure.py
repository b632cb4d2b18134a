"""The package has no import circles (module-level imports; ``if TYPE_CHECKING:`` ones excluded)."""

from __future__ import annotations

import ast
from pathlib import Path

import clawbot_app

ROOT = Path(clawbot_app.__file__).parent


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(("clawbot_app", *parts)).removesuffix(".__init__")


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.parse(path.read_text()).body:  # top level only: not TYPE_CHECKING, not lazy
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name.startswith("clawbot_app")}


def test_no_import_circles() -> None:
    graph = {_module(p): _imports(p) for p in ROOT.rglob("*.py")}
    assert "clawbot_app.config" in graph and graph["clawbot_app.auth"]
    circles = []
    for start in graph:
        stack = [(start, (start,))]
        while stack:
            node, path = stack.pop()
            for dep in graph.get(node, ()):
                if dep == start:
                    circles.append(" -> ".join((*path, dep)))
                elif dep not in path and len(path) < 12:
                    stack.append((dep, (*path, dep)))
    assert circles == [], circles
