"""The import graph of STYLE.md: leaf modules stay light, the CLI starts fast."""

from __future__ import annotations

import subprocess
import sys

import pytest


def modules_after_import(module: str) -> set[str]:
    code = f"import sys, {module}; print('\\n'.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_package_and_cli_do_not_import_torch() -> None:
    loaded = modules_after_import("segcli.cli")
    assert "torch" not in loaded
    assert "segcli.engine.train" not in loaded


@pytest.mark.parametrize("module", ["segcli.config", "segcli.errors", "segcli.registry"])
def test_leaf_modules_stay_light(module: str) -> None:
    loaded = modules_after_import(module)
    assert "torch" not in loaded and "typer" not in loaded and "SimpleITK" not in loaded


@pytest.mark.parametrize("module", ["segcli.metrics", "segcli.inference", "segcli.models"])
def test_library_layers_do_not_import_engine_or_cli(module: str) -> None:
    loaded = modules_after_import(module)
    assert not any(m.startswith("segcli.engine") for m in loaded)
    assert "segcli.cli" not in loaded and "typer" not in loaded
