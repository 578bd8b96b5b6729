"""The README's report screenshot (docs/img/report.png), made from the tour's own steps.

    make report-screenshot      # or: .venv/bin/python bench/report_screenshot.py

Runs the tour in a temporary folder — `segcli synth` (300 + 60 2D toy cases), `segcli train
experiments/toy-dilated.yaml` (6 epochs), `segcli predict`, `segcli evaluate ... --images` —
then `segcli report metrics.csv -o report.html`, prints that command's output (the README's
`tour:report` block shows it), and saves the top of the page, rendered by headless Chromium, as
docs/img/report.png.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from _harness import REPO, scratch, segcli

PNG = REPO / "docs" / "img" / "report.png"


def sh(command: str, cwd: Path) -> str:
    """``segcli COMMAND`` (a shell-quoted line) in ``cwd``; what it printed."""
    return segcli(*shlex.split(command), cwd=cwd, echo=False).stdout


def main() -> None:
    from segcli.report.browser import screenshot

    spec = shlex.quote(str(REPO / "experiments" / "toy-dilated.yaml"))
    test = "data/toy2d-test"
    with scratch("segcli-tour-") as work:
        sh("synth data/toy2d --cases 300 --seed 0", work)
        sh(f"synth {test} --cases 60 --seed 1", work)
        sh(f"train {spec} --set data.root=data/toy2d --set train.epochs=6 --set output=runs", work)
        sh(f"predict {spec} --set output=runs --input {test}/imagesTr --output pred", work)
        sh(
            f"evaluate {spec} --pred pred --ref {test}/labelsTr --output metrics.csv "
            f"--images {test}/imagesTr --report first.html -q",
            work,
        )
        print("$ segcli report metrics.csv -o report.html")
        print(sh("report metrics.csv -o report.html", work).rstrip())
        PNG.parent.mkdir(parents=True, exist_ok=True)
        screenshot(work / "report.html", PNG, width=1100, height=1400)
    print(f"wrote {PNG}", file=sys.stderr)


if __name__ == "__main__":
    main()
