"""The layout's rules, read off the imports of ``src/heartbeat`` (every import statement, those inside
functions and under ``TYPE_CHECKING`` too): no module imports itself back through others, the worker
SDK stands alone, and the core knows nothing of HTTP, the command line or the server."""

from __future__ import annotations

import ast
import pathlib

import pytest

SOURCE = pathlib.Path(__file__).resolve().parents[2] / "src"

# Packages of the core: what holds the data and the rules. They never import the layers above them.
CORE = ("auth", "catalog", "db", "events", "ingest", "privacy", "query", "queue", "storage")
ABOVE_CORE = ("api", "app", "cli", "server", "worker", "wsgi", "examples", "dashboard")
# The worker SDK runs on machines without the server: it imports only itself, the version and the
# shared upright frame.
WORKER_MAY_IMPORT = ("heartbeat", "heartbeat.upright")


def module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(SOURCE).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Each module of heartbeat -> the modules of heartbeat it imports (a name imported from a package
    counts as the submodule when there is one)."""
    paths = {module_name(path): path for path in (SOURCE / "heartbeat").rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        imported: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    module = ".".join([*base, *([node.module] if node.module else [])])
                else:
                    module = node.module or ""
                imported.add(module)
                imported.update(f"{module}.{alias.name}" for alias in node.names)
        graph[name] = {target for target in imported if target in paths and target != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, edges = work[-1]
            for target in edges:
                if target not in index:
                    index[target] = low[target] = len(index)
                    stack.append(target)
                    on_stack.add(target)
                    work.append((target, iter(sorted(graph[target]))))
                    break
                if target in on_stack:
                    low[node] = min(low[node], index[target])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


def layer(module: str) -> str:
    return module.split(".")[1] if "." in module else ""


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_module_imports_itself_back_through_others():
    assert cycles(import_graph()) == []


@pytest.mark.parametrize("package", CORE)
def test_the_core_imports_nothing_of_http_the_command_line_the_server_or_the_sdk(package):
    wrong = {
        f"{module} -> {target}"
        for module, targets in import_graph().items()
        if layer(module) == package
        for target in targets
        if layer(target) in ABOVE_CORE
    }
    assert wrong == set()


def test_the_worker_sdk_imports_only_itself_the_version_and_the_upright_frame():
    wrong = {
        f"{module} -> {target}"
        for module, targets in import_graph().items()
        if layer(module) in ("worker", "examples")
        for target in targets
        if layer(target) not in ("worker", "examples") and target not in WORKER_MAY_IMPORT
    }
    assert wrong == set()
