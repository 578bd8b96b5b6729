"""segcli.report is a library layer: it never imports the engine, the CLI or torch."""

from __future__ import annotations

import subprocess
import sys


def test_report_library_does_not_import_engine_cli_or_torch() -> None:
    code = (
        "import sys, segcli.report, segcli.report.build, segcli.report.pitfalls, "
        "segcli.report.overlay, segcli.report.plots; print('\\n'.join(sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = set(out.stdout.split())
    assert not any(m.startswith("segcli.engine") for m in loaded)
    assert "segcli.cli" not in loaded and "typer" not in loaded and "torch" not in loaded
