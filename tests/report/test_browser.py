"""The report in a real browser: headless Chromium loads it with no console output, the case
table has one row per case and sorts and filters.  Skipped without Chromium unless ``CI`` is set
(CI installs it, see ``.ci/run``: there a missing browser is a failure)."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest

from segcli.cli import app
from segcli.report.browser import find_chromium, open_page

from .conftest import runner

if find_chromium() is None:
    if os.environ.get("CI"):
        raise RuntimeError(
            "CI is set but chromium is missing: .ci/run installs it (apt-get install chromium)"
        )
    pytest.skip(
        "chromium not installed (apt-get install chromium); CI runs these tests",
        allow_module_level=True,
    )


def _numbers(values: list[str]) -> list[float]:
    return [math.nan if v == "" else float(v) for v in values]


def test_single_report_loads_cleanly_and_sorts(evaluated: Path) -> None:
    page = open_page(evaluated / "a.html")
    assert page.console == [] and page.probe["errors"] == []
    assert page.probe["rows"] == 8
    for table in ('id="summary"', 'id="cases"', 'id="provenance"', 'id="findings"'):
        assert table in page.dom
    asc = _numbers(page.probe["asc"])
    finite = [v for v in asc if not math.isnan(v)]
    assert finite == sorted(finite) and asc[: len(finite)] == finite  # NaN sorts last
    desc = [v for v in _numbers(page.probe["desc"]) if not math.isnan(v)]
    assert desc == sorted(desc, reverse=True)
    assert page.probe["filter_box"] and page.probe["visible_after_filter"] == 1


def test_comparison_loads_cleanly(evaluated: Path) -> None:
    out = evaluated / "ab-browser.html"
    result = runner.invoke(
        app, ["report", str(evaluated / "a.csv"), str(evaluated / "b.csv"), "-o", str(out), "-q"]
    )
    assert result.exit_code == 0, result.output
    page = open_page(out)
    assert page.console == [] and page.probe["errors"] == []
    assert page.probe["rows"] == 8
    assert 'id="comparison-b"' in page.dom
