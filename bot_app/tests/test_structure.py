"""Structure: no import circles in the package; fake servers only in the repo's tests/fakes/."""

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


# -- one fake of each kind, in one place ----------------------------------------------------------

REPO = Path(__file__).resolve().parents[2]
FAKES_DIR = "tests/fakes/"
SKIPPED_DIRS = {".git", ".venv", "venv", "build", "dist", ".cache", ".collections", ".ansible",
                ".tox", "__pycache__", "node_modules"}
# Importing one of these means serving HTTP (or intercepting it: mocking libraries are fakes too).
SERVER_MODULES = ("http.server", "socketserver", "wsgiref.simple_server", "aiohttp.web",
                  "uvicorn", "hypercorn", "gunicorn", "daphne", "tornado.web", "tornado.httpserver",
                  "twisted.web", "flask", "fastapi", "sanic", "quart", "bottle", "cherrypy",
                  "werkzeug.serving", "starlette.applications", "starlette.routing",
                  "pytest_httpserver", "pytest_localserver", "responses", "respx", "httpretty",
                  "aioresponses", "pytest_httpx")
# Calls that open a listening socket or run a server loop (and ``sock.listen([backlog])``, told
# apart from event APIs such as ``sqlalchemy.event.listen(target, name, fn)`` by its arguments).
SERVER_CALLS = ("create_server", "start_server", "create_unix_server", "start_unix_server",
                "serve_forever")
# A server started as a program: ``[sys.executable, "-m", "uvicorn", ...]``.
SERVER_PROGRAMS = ("uvicorn", "hypercorn", "gunicorn", "http.server")
# What may serve HTTP outside tests/fakes/: the service itself and servers that run the real bot
# (or the benchmark's hello-world baseline). Entries are exact, and each must still be needed.
ALLOWED_PREFIXES = ("bot_app/src/",)
ALLOWED = {
    ("bot_app/bench/hello_app.py", "import starlette.applications"): "the benchmark's baseline app",
    ("bot_app/bench/hello_app.py", "import starlette.routing"): "the benchmark's baseline app",
    ("bot_app/bench/run_bench.py", "program uvicorn"): "runs the baseline app under uvicorn",
    ("bot_app/tests/im/support.py", "import starlette.applications"): "the bot's real routes",
    ("bot_app/tests/im/test_app_integration.py", "import uvicorn"): "the real app over TCP",
    ("tests/playbooks/playbook_support.py", "program uvicorn"): "the real bot behind TLS",
}


def _python_files() -> list[Path]:
    found = []
    for path in REPO.rglob("*.py"):
        rel = path.relative_to(REPO)
        if SKIPPED_DIRS.intersection(rel.parts[:-1]) or rel.as_posix().startswith("tests/output/"):
            continue
        found.append(path)
    return found


def _server_marks(tree: ast.AST) -> set[str]:
    """What in a module serves HTTP: ``import <module>``, ``call <name>``, ``program <name>``,
    ``class asyncio.Protocol``."""
    marks: set[str] = set()

    def imported(name: str) -> None:
        marks.update(f"import {m}" for m in SERVER_MODULES if name == m or name.startswith(m + "."))

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                imported(alias.name)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            imported(node.module)
            for alias in node.names:
                imported(f"{node.module}.{alias.name}")
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if name in SERVER_CALLS or (name == "listen" and len(node.args) <= 1
                                        and not node.keywords):
                marks.add(f"call {name}")
        elif isinstance(node, ast.Constant) and node.value in SERVER_PROGRAMS:
            marks.add(f"program {node.value}")
        elif isinstance(node, ast.ClassDef):
            for base in node.bases:
                if isinstance(base, ast.Attribute) and isinstance(base.value, ast.Name) \
                        and base.value.id == "asyncio" and base.attr.endswith("Protocol"):
                    marks.add("class asyncio.Protocol")
    return marks


def test_fake_servers_live_only_in_tests_fakes() -> None:
    """Test doubles only for what cannot be reached from here, ONE of each kind, in tests/fakes/."""
    this = Path(__file__).resolve()
    found: set[tuple[str, str]] = set()
    for path in _python_files():
        rel = path.relative_to(REPO).as_posix()
        if path.resolve() == this or rel.startswith(FAKES_DIR) or rel.startswith(ALLOWED_PREFIXES):
            continue
        tree = ast.parse(path.read_bytes(), filename=rel)
        found.update((rel, mark) for mark in _server_marks(tree))
    assert (REPO / FAKES_DIR / "openai_provider.py").is_file(), "the fakes moved: update this test"
    unexpected = sorted(found - set(ALLOWED))
    assert unexpected == [], ("an HTTP server (or HTTP mock) outside tests/fakes/: extend the fake "
                              f"there instead (see tests/fakes/README.md): {unexpected}")
    stale = sorted(set(ALLOWED) - found)
    assert stale == [], f"allow-list entries no longer needed: {stale}"


def test_the_guard_sees_a_fake_server() -> None:
    source = ("import asyncio, socket\nfrom http.server import ThreadingHTTPServer\n"
              "socket.socket().listen(8)\nsa.event.listen(engine, 'commit', print)\n"
              "class P(asyncio.Protocol):\n    pass\n"
              "async def main(loop):\n    await loop.create_server(P, '127.0.0.1', 0)\n"
              "CMD = ['python', '-m', 'uvicorn', 'app:app']\n")
    assert _server_marks(ast.parse(source)) == {"import http.server", "class asyncio.Protocol",
                                                "call create_server", "program uvicorn",
                                                "call listen"}
