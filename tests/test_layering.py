"""Arrows point one way: flows -> pipelines -> xai_checks."""

from __future__ import annotations

import subprocess
import sys

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
