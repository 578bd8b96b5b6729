"""Fixtures of the reliability battery: a tiny data set and the checks every failure must pass.

A user error through the real CLI must exit 1 with one message that names the culprit and what
to do, show no traceback, and leave every file under the test folder exactly as it was (no
output appeared, nothing was half-written, no temp file was left behind).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import Result


@pytest.fixture(scope="session")
def toy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four 2D ring-lesion cases (16×16, lesion 2, ring distance 3) in the MSD layout."""
    from segcli.data.synth import generate, write_dataset

    out = tmp_path_factory.mktemp("reliability_toy")
    write_dataset(out, generate(4, dims=2, size=16, lesion=2, ring_distance=3, seed=0))
    return out


def snapshot(root: Path) -> dict[str, str]:
    """Every file under ``root`` (hidden ones too) → SHA-1 of its bytes."""
    return {
        str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def flat(text: str) -> str:
    """``text`` with every run of white space made one space (messages may wrap)."""
    return " ".join(text.split())


@pytest.fixture
def user_error() -> Callable[..., None]:
    """``user_error(result, *needles, code=1)``: the checks of a clean user error."""

    def check(result: Result, *needles: str, code: int = 1) -> None:
        output = result.output
        assert result.exit_code == code, output
        assert isinstance(result.exception, SystemExit | None), repr(result.exception)
        assert "Traceback" not in output
        assert "error:" in output
        text = flat(output)
        for needle in needles:
            assert flat(needle) in text, f"{needle!r} not in {text!r}"

    return check


@pytest.fixture
def unchanged() -> Callable[[Path], Any]:
    """``with unchanged(root): ...`` — no file under ``root`` appears, changes or disappears."""
    from contextlib import contextmanager

    @contextmanager
    def guard(root: Path):  # type: ignore[no-untyped-def]
        before = snapshot(root)
        yield
        after = snapshot(root)
        assert sorted(set(after) - set(before)) == [], "files appeared"
        assert sorted(set(before) - set(after)) == [], "files disappeared"
        changed = sorted(k for k in before if before[k] != after[k])
        assert changed == [], "files changed"

    return guard
