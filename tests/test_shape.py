"""The package's shape: its subpackages import each other one way only (STYLE.md, "How the parts depend on each
other"), and so do the modules inside them. Every import counts, at module level and inside functions alike (and
under TYPE_CHECKING): a deferred import is still a dependency, only a later one."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

from .conftest import REPO_ROOT

PACKAGE = REPO_ROOT / "scripts" / "repairrl"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def part_of(module: str) -> str:
    """The unit whose dependencies are checked: a subpackage (repairrl.agent) or a top-level module."""
    return ".".join(module.split(".")[:2])


def package_modules() -> set[str]:
    return {module_name(path) for path in PACKAGE.rglob("*.py")}


def imported_modules(path: Path, modules: set[str] | None = None) -> list[tuple[str, int]]:
    """(repairrl module, line) of every import in the file, relative imports resolved. With `modules` (the
    package's), `from repairrl.x import y` names the module repairrl.x.y where y is one, else repairrl.x."""
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                # `from repairrl import agent` imports the subpackage itself
                is_module = base == "repairrl" or (modules is not None and submodule in modules)
                found.append((submodule if is_module else base, node.lineno))
    return [(name, line) for name, line in found if name.split(".")[0] == "repairrl" and name != "repairrl"]


def dependency_graph() -> dict[str, dict[str, list[str]]]:
    """part -> imported part -> the import sites ("file:line") that make the edge."""
    graph: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for path in sorted(PACKAGE.rglob("*.py")):
        source = part_of(module_name(path))
        for imported, line in imported_modules(path):
            target = part_of(imported)
            if target != source:
                graph[source][target].append(f"{path.relative_to(REPO_ROOT)}:{line}")
    return graph


def module_graph() -> dict[str, dict[str, list[str]]]:
    """module -> imported module -> the import sites ("file:line") that make the edge."""
    modules = package_modules()
    graph: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for path in sorted(PACKAGE.rglob("*.py")):
        source = module_name(path)
        for imported, line in imported_modules(path, modules):
            if imported != source:
                graph[source][imported].append(f"{path.relative_to(REPO_ROOT)}:{line}")
    return graph


def cycles(graph: dict[str, dict[str, list[str]]]) -> list[list[str]]:
    """The strongly connected components with more than one part (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, {}):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
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

    for node in sorted({*graph, *(t for targets in graph.values() for t in targets)}):
        if node not in index:
            visit(node)
    return found


def test_the_walk_sees_module_and_function_level_imports(tmp_path):
    graph = {"a": {"b": ["x"]}, "b": {"c": ["y"]}, "c": {"a": ["z"]}, "d": {"a": ["w"]}}
    assert cycles(graph) == [["a", "b", "c"]]
    found = dict(imported_modules(PACKAGE / "evaluate" / "__main__.py"))
    assert "repairrl.evaluate.serve" in found  # imported inside cmd_shard
    assert "repairrl.records" in found  # at module level
    # `from repairrl.grading import outcome` is an import of the module outcome, not only of its package.
    modules = package_modules()
    assert "repairrl.grading.outcome" in dict(imported_modules(PACKAGE / "grading" / "container.py", modules))


def describe_cycles(graph: dict[str, dict[str, list[str]]], components: list[list[str]]) -> str:
    problems = []
    for component in components:
        edges = [f"  {a} -> {b}: {', '.join(graph[a][b][:3])}" for a in component for b in component
                 if b in graph.get(a, {})]
        problems.append(" <-> ".join(component) + "\n" + "\n".join(edges))
    return "\n".join(problems)


def test_no_import_cycles_between_subpackages():
    graph = dependency_graph()
    assert not cycles(graph), "import cycles between parts of repairrl:\n" + describe_cycles(graph, cycles(graph))


# Cycles known and not yet broken, each as a sorted list of modules; none today.
KNOWN_MODULE_CYCLES: list[list[str]] = []


def test_no_import_cycles_between_modules():
    graph = module_graph()
    found = cycles(graph)
    # Equality, not inclusion: a known cycle that is broken must leave this list too.
    assert sorted(found) == sorted(KNOWN_MODULE_CYCLES), "import cycles between modules of repairrl:\n" + (
        describe_cycles(graph, [c for c in found if c not in KNOWN_MODULE_CYCLES])
        or f"no longer found, remove from KNOWN_MODULE_CYCLES: {[c for c in KNOWN_MODULE_CYCLES if c not in found]}"
    )
