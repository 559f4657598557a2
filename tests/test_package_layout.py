"""The shape of the code: iobs's packages import each other without cycles, and only the pipeline package knows
Snakemake (and results paths, through iobs.pipeline.layout).

A package is iobs.<first component>: iobs.data, iobs.models, ... and a top-level module such as iobs.config. The
graph comes from the modules' own import statements (ast, function-level imports included, since a lazy import is
still a dependency), and every module is imported once, so a module that no longer imports fails here first.
"""

from __future__ import annotations

import ast
import importlib
from collections import defaultdict
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PIPELINE = "iobs.pipeline"
# Outside iobs.pipeline, only iobs.notebooks may import it: it stands in for the `snakemake` object of a notebook
# rule opened by hand, so it rebuilds that rule's inputs from the results layout (iobs.pipeline.layout), as the
# rule does. No module outside iobs.pipeline imports snakemake; the CLI needs neither.
MAY_IMPORT_PIPELINE = {"iobs.notebooks"}


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_of(module: str) -> str:
    return ".".join(module.split(".")[:2])


def imported_modules(path: Path) -> set[str]:
    """Every module that the file at `path` imports, anywhere in it; `from iobs import x` counts as iobs.x."""
    module = module_name(path)
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the module's own package upwards
                package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
                base = ".".join(package[:len(package) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names if base == "iobs")
    return names


def module_files() -> dict[str, Path]:
    return {module_name(path): path for path in sorted((SRC / "iobs").rglob("*.py"))}


def package_graph() -> dict[str, dict[str, list[str]]]:
    """{package: {imported package: ["module imports module", ...]}} between different iobs packages."""
    graph: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for module, path in module_files().items():
        for name in sorted(imported_modules(path)):
            if name.startswith("iobs.") and package_of(name) != package_of(module) and package_of(module) != "iobs":
                graph[package_of(module)][package_of(name)].append(f"{module} imports {name}")
    return graph


def find_cycle(graph: dict[str, dict[str, list[str]]]) -> list[str] | None:
    """One cycle of packages [a, b, ..., a], or None (depth-first search, packages in sorted order)."""
    state: dict[str, str] = {}  # package -> "open" (on the current path) | "done"
    path: list[str] = []

    def visit(package: str) -> list[str] | None:
        state[package] = "open"
        path.append(package)
        for target in sorted(graph.get(package, {})):
            if state.get(target) == "open":
                return path[path.index(target):] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        state[package] = "done"
        path.pop()
        return None

    for package in sorted(graph):
        if package not in state and (cycle := visit(package)):
            return cycle
    return None


def describe(cycle: list[str], graph) -> str:
    return "\n".join(f"  {a} -> {b}: {'; '.join(graph[a][b])}" for a, b in zip(cycle, cycle[1:]))


def test_every_module_imports():
    for module in module_files():
        if not module.endswith("__main__"):  # running the CLI is not importing it
            importlib.import_module(module)


def test_no_import_cycle_between_packages():
    graph = package_graph()
    assert "iobs.data" in graph and "iobs.pipeline" in graph  # the graph was read
    cycle = find_cycle(graph)
    assert cycle is None, "packages import each other in a cycle:\n" + describe(cycle, graph)


def test_only_the_pipeline_knows_snakemake_and_the_results_layout():
    offenders = []
    for module, path in module_files().items():
        if package_of(module) == PIPELINE:
            continue
        for name in imported_modules(path):
            if name.split(".")[0] == "snakemake" or (package_of(name) == PIPELINE
                                                     and module not in MAY_IMPORT_PIPELINE):
                offenders.append(f"{module} imports {name}")
    assert not offenders, "outside iobs.pipeline:\n  " + "\n  ".join(sorted(offenders))


def test_the_cycle_search_finds_and_describes_a_cycle():
    graph = {"a": {"b": ["a.x imports b.y"]}, "b": {"c": ["b.y imports c.z"]}, "c": {"a": ["c.z imports a.x"]}}
    cycle = find_cycle(graph)
    assert cycle == ["a", "b", "c", "a"]
    assert "b -> c: b.y imports c.z" in describe(cycle, graph)
    assert find_cycle({"a": {"b": []}, "b": {}}) is None
