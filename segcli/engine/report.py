"""``segcli report`` (and ``evaluate --report``): the console side of :mod:`segcli.report`.

Parses the comma-separated flags, draws a progress bar over the overlays and says what was
written.  The page itself is built by :func:`segcli.report.write_report`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from segcli.engine.runtime import info, progress_bar
from segcli.errors import SpecError
from segcli.report import ReportResult, write_report

__all__ = ["report_command"]


def _split(text: str | None, flag: str) -> list[str] | None:
    if text is None:
        return None
    parts = [part.strip() for part in text.split(",")]
    if not all(parts):
        raise SpecError(
            f"{flag}: empty name in {text!r}; give comma-separated values, e.g. {flag} A,B"
        )
    return parts


def report_command(
    csvs: Sequence[Path],
    output: Path,
    names: str | None = None,
    images: Path | None = None,
    pred: str | None = None,
    ref: Path | None = None,
    worst: int = 5,
) -> ReportResult:
    """Write the report of ``csvs`` to ``output`` (see :func:`segcli.report.write_report`).

    Args:
        csvs: one evaluate CSV, or several to compare (the first is the baseline).
        output: the HTML file.
        names: comma-separated display names, one per CSV.
        images, ref: folders for every run (override the sidecars).
        pred: comma-separated prediction folders, one per CSV (override the sidecars).
        worst: worst cases per label shown with an overlay.
    """
    from rich.markup import escape

    with progress_bar(transient=True) as bar:
        job = bar.add_task("drawing overlays", total=None, status="")
        result = write_report(
            csvs,
            output,
            names=_split(names, "--names"),
            pred_dirs=_split(pred, "--pred"),
            ref_dir=ref,
            images_dir=images,
            worst=worst,
            progress=lambda case: bar.update(job, advance=1, status=case),
        )
    if result.dropped:
        info(
            escape(
                f"left out of the comparison (not in every run's CSV): {', '.join(result.dropped)}"
            )
        )
    what = "report" if len(csvs) == 1 else f"comparison of {len(csvs)} runs"
    gaps = f", {result.gaps} with a stated gap" if result.gaps else ""
    info(
        escape(
            f"wrote the {what} to {result.path} ({result.bytes / 1e6:.2f} MB; {result.cases} cases, "
            f"{result.labels} label(s), {result.overlays} overlay(s){gaps}); open it in a browser"
        )
    )
    return result
