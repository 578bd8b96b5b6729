"""The import graph of STYLE.md: leaf modules stay light, the CLI starts fast."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

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


# --------------------------------------------------------------------------- the layers
#
# STYLE.md's floors, bottom up.  A module may import its own package and anything in a lower
# layer; never a higher one.  The check reads the import statements of every module (top-level
# and function-level alike: a lazy import runs back up the layers just the same).

_PACKAGE = Path(__file__).resolve().parents[1] / "segcli"

#: package (or top-level module) → its layer; higher layers may import lower ones.
LAYERS: dict[str, int] = {
    "errors": 0,
    "registry": 1,
    "atomic": 1,
    "padding": 1,
    "precision": 1,
    "labels": 1,
    "config": 2,
    "io": 3,
    "metrics": 4,
    "models": 4,
    "losses": 4,
    "postprocess": 4,
    "receptive_field": 5,
    "data": 5,
    "inference": 5,
    "plan": 6,
    "report": 6,
    "study": 7,
    "engine": 8,
    "cli": 9,
    "__main__": 10,
}

#: imports allowed across packages of one layer (importer, imported)
_SIDEWAYS = {("metrics", "postprocess"), ("inference", "data")}


def _unit(module: str) -> str:
    """``segcli.engine.train`` → ``engine``; ``segcli`` itself → ``""``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _imports(path: Path) -> set[str]:
    module = "segcli." + ".".join(path.relative_to(_PACKAGE).with_suffix("").parts)
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.level:  # relative: resolve against the module's package
                base = module.rsplit(".", node.level)[0]
                found.add(f"{base}.{node.module}")
            else:
                found.add(node.module)
    return {name for name in found if name.startswith("segcli.")}


def _violations() -> list[str]:
    bad = []
    for path in sorted(_PACKAGE.rglob("*.py")):
        rel = path.relative_to(_PACKAGE)
        unit = rel.parts[0].removesuffix(".py") if rel.parts[0] != "__init__.py" else ""
        if unit not in LAYERS:
            continue
        for target in _imports(path):
            other = _unit(target)
            if other in ("", unit) or other not in LAYERS:
                continue
            if LAYERS[other] > LAYERS[unit] or (
                LAYERS[other] == LAYERS[unit] and (unit, other) not in _SIDEWAYS
            ):
                bad.append(f"{rel} imports {target} ({unit} → {other})")
    return bad


def test_every_package_has_a_layer() -> None:
    units = {p.name.removesuffix(".py") for p in _PACKAGE.iterdir() if not p.name.startswith(".")}
    units -= {"__init__", "__pycache__", "py.typed"}
    assert units <= set(LAYERS), f"give these a layer in LAYERS: {sorted(units - set(LAYERS))}"


def test_no_import_runs_back_up_the_layers() -> None:
    assert _violations() == []


def test_the_layer_check_sees_a_violation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The check itself can fail: a library module importing the engine is reported."""
    fake = tmp_path / "segcli"
    (fake / "models").mkdir(parents=True)
    (fake / "models" / "bad.py").write_text(
        "def f():\n    from segcli.engine.train import fit\n    return fit\n"
    )
    (fake / "engine").mkdir()
    (fake / "engine" / "ok.py").write_text("from segcli.models import build\n")
    monkeypatch.setattr(sys.modules[__name__], "_PACKAGE", fake)
    assert _violations() == ["models/bad.py imports segcli.engine.train (models → engine)"]


def test_models_describe_themselves_and_receptive_field_reads_them() -> None:
    """receptive_field depends on models (the graph lives there), never the reverse."""
    assert all(
        _unit(target) != "receptive_field"
        for path in (_PACKAGE / "models").rglob("*.py")
        for target in _imports(path)
    )
    assert "torch" not in modules_after_import("segcli.receptive_field")
