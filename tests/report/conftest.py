"""Fixtures for the report tests: tiny 3D evaluations on disk, and an HTML table reader."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from segcli.cli import app
from segcli.io.images import make_geometry, write_image

runner = CliRunner()


def write(path: Path, array: np.ndarray) -> None:
    write_image(path, array, make_geometry(array.shape, (2.0, 1.0, 1.0)))


def make_cases(root: Path, count: int = 8) -> Path:
    """``count`` 3D cases with labels 1 and 2 and two predictions: ``predA`` (shifted by one
    voxel, a hole in case 0, a stray label 7 in case 1, label 2 missed in case 2, a far blob in
    case 3) and ``predB`` (shifted by two voxels).  Case 4 has label 2 in neither mask."""
    for i in range(count):
        ref = np.zeros((8, 24, 24), np.uint8)
        ref[2:6, 4:14, 4 + i % 3 : 15] = 1
        if i != 4:
            ref[3:5, 16:20, 16:20] = 2
        a = np.roll(ref, 1, axis=2)
        b = np.roll(ref, 2, axis=2)
        if i == 0:
            a[3:5, 7:10, 8:11] = 0  # an enclosed hole
        if i == 1:
            a[6, 22, 22] = 7  # a label no reference has
        if i == 2:
            a[a == 2] = 0  # label 2 missed: its distances are NaN
        if i == 3:
            a = ref.copy()
            a[6:8, 0:4, 18:24] = 1  # a far stray blob: Dice stays high, HD95 jumps
        write(root / "ref" / f"case_{i:02d}.nii.gz", ref)
        write(root / "predA" / f"case_{i:02d}.nii.gz", a)
        write(root / "predB" / f"case_{i:02d}.nii.gz", b)
        write(root / "img" / f"case_{i:02d}_0000.nii.gz", ref.astype(np.float32) * 50 + i)
    return root


METRICS = "dice,iou,hd95,assd,nsd,cc_ref,cc_pred,lesion_f1"


def evaluate(root: Path, pred: str, csv_name: str, *extra: str) -> object:
    return runner.invoke(
        app,
        [
            "evaluate",
            "--pred",
            str(root / pred),
            "--ref",
            str(root / "ref"),
            "--output",
            str(root / csv_name),
            "--workers",
            "1",
            "--metrics",
            METRICS,
            "--labels",
            "1,2",
            "--quiet",
            *extra,
        ],
    )


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Both predictions evaluated (A with ``--report``); returns the folder."""
    root = make_cases(tmp_path_factory.mktemp("report"))
    result = evaluate(
        root, "predA", "a.csv", "--images", str(root / "img"), "--report", str(root / "a.html")
    )
    assert result.exit_code == 0, result.output
    result = evaluate(root, "predB", "b.csv")
    assert result.exit_code == 0, result.output
    return root


class Tables(HTMLParser):
    """Collect every ``<table id=...>``: rows of cells, each cell ``(text, attrs)``."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[tuple[str, dict[str, str | None]]]]] = {}
        self.images = 0
        self.gaps: list[str] = []
        self._table: str | None = None
        self._cell: tuple[list[str], dict[str, str | None]] | None = None
        self._in_gap = False
        self._gap_text: list[str] = []
        self.scripts_external = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "table":
            self._table = a.get("id") or f"anon{len(self.tables)}"
            self.tables[self._table] = []
        elif tag == "tr" and self._table is not None:
            self.tables[self._table].append([])
        elif tag in ("td", "th") and self._table is not None:
            self._cell = ([], a)
        elif tag == "img":
            self.images += 1
            assert (a.get("src") or "").startswith("data:image/png;base64,")
        elif tag == "div" and a.get("class") == "gap":
            self._in_gap, self._gap_text = True, []
        elif tag in ("script", "link") and (a.get("src") or a.get("href")):
            self.scripts_external += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self._table is not None:
            self.tables[self._table][-1].append(("".join(self._cell[0]).strip(), self._cell[1]))
            self._cell = None
        elif tag == "table":
            self._table = None
        elif tag == "div" and self._in_gap:
            self.gaps.append("".join(self._gap_text))
            self._in_gap = False

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell[0].append(data)
        if self._in_gap:
            self._gap_text.append(data)


def parse(path: Path) -> Tables:
    reader = Tables()
    reader.feed(path.read_text(encoding="utf-8"))
    return reader
