"""Arrows point one way: flows -> pipelines -> xai_checks."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

FORBIDDEN = {
    "xai_checks": ["mlflow", "prefect", "great_expectations", "pipelines", "flows"],
    "pipelines": ["prefect", "flows"],
}


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_no_upper_layer(package):
    import pathlib

    root = pathlib.Path(__file__).parents[1] / package
    modules = [
        f"{package}." + ".".join(p.relative_to(root).with_suffix("").parts)
        for p in root.rglob("*.py")
        if p.name != "__init__.py"
    ]
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        f"bad = [n for n in {FORBIDDEN[package]!r} if n in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"{package} pulls in {out.stdout.strip()}"
    assert len(modules) >= 3


ROOT = Path(__file__).parents[1]
PACKAGES = ("xai_checks", "pipelines", "flows", "benchmarks")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """Project modules ``path`` imports anywhere (function bodies and type-checking blocks
    included: a circle of type hints couples modules too): ``from a.b import c`` names
    ``a.b.c`` when that is a module."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return {name for name in found if name in modules}


def _import_graph() -> dict[str, set[str]]:
    paths = {
        _module_name(path): path for package in PACKAGES for path in (ROOT / package).rglob("*.py")
    }
    modules = set(paths)
    return {name: _imports(path, modules) - {name} for name, path in paths.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
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

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_module_imports_itself_back_through_others():
    """An import circle (even one hidden in a function body) couples modules for good."""
    assert _cycles(_import_graph()) == []


def test_the_circle_check_finds_a_circle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]


def test_private_modules_are_used_only_inside_their_package():
    """``pkg._helper`` is the package's own business: other packages use its public API."""
    offenders = []
    for module, imports in _import_graph().items():
        for target in imports:
            parts = target.split(".")
            private = [i for i, part in enumerate(parts) if part.startswith("_") and i > 0]
            if not private:
                continue
            owner = ".".join(parts[: private[0]])
            if not (module == owner or module.startswith(owner + ".")):
                offenders.append(f"{module} imports {target}")
    assert offenders == []
