"""The README's report screenshot (docs/img/report.png), made from the tour's own steps.

    make report-screenshot      # or: .venv/bin/python bench/report_screenshot.py

Runs the tour in a temporary folder — `segcli synth` (300 + 60 2D toy cases), `segcli train
experiments/toy-dilated.yaml` (6 epochs), `segcli predict`, `segcli evaluate ... --images` —
then `segcli report metrics.csv -o report.html`, prints that command's output (the README's
`tour:report` block shows it), and saves the top of the page, rendered by headless Chromium, as
docs/img/report.png.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SEGCLI = [sys.executable, "-m", "segcli"]
PNG = REPO / "docs" / "img" / "report.png"


def sh(args: list[str], cwd: Path) -> str:
    done = subprocess.run([*SEGCLI, *args], cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"segcli {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def main() -> None:
    from segcli.report.browser import screenshot

    spec = str(REPO / "experiments" / "toy-dilated.yaml")
    with tempfile.TemporaryDirectory(prefix="segcli-tour-") as tmp:
        work = Path(tmp)
        sh(["synth", "data/toy2d", "--cases", "300", "--seed", "0"], work)
        sh(["synth", "data/toy2d-test", "--cases", "60", "--seed", "1"], work)
        sh(
            [
                "train",
                spec,
                "--set",
                "data.root=data/toy2d",
                "--set",
                "train.epochs=6",
                "--set",
                "output=runs",
            ],
            work,
        )
        sh(
            [
                "predict",
                spec,
                "--set",
                "output=runs",
                "--input",
                "data/toy2d-test/imagesTr",
                "--output",
                "pred",
            ],
            work,
        )
        sh(
            [
                "evaluate",
                spec,
                "--pred",
                "pred",
                "--ref",
                "data/toy2d-test/labelsTr",
                "--output",
                "metrics.csv",
                "--images",
                "data/toy2d-test/imagesTr",
                "--report",
                "first.html",
                "-q",
            ],
            work,
        )
        print("$ segcli report metrics.csv -o report.html")
        print(sh(["report", "metrics.csv", "-o", "report.html"], work).rstrip())
        PNG.parent.mkdir(parents=True, exist_ok=True)
        screenshot(work / "report.html", PNG, width=1100, height=1400)
    print(f"wrote {PNG}", file=sys.stderr)


if __name__ == "__main__":
    main()
