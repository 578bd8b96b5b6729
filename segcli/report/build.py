"""Build the report: one run (summary, distributions, cases to look at, pitfalls, case table) or
a comparison of runs on the same cases (paired statistics, scatters, the cases that changed most).

    >>> write_report(["metrics.csv"], "report.html")                       # one run
    >>> write_report(["a.csv", "b.csv"], "compare.html", names=["A", "B"]) # comparison

Nothing is written until the whole page is built; the file appears whole (atomic rename).
"""

from __future__ import annotations

import base64
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from segcli.atomic import atomic_open
from segcli.errors import DataError, SpecError
from segcli.report import stats
from segcli.report.data import Run, load_run
from segcli.report.overlay import CaseFiles, load_case
from segcli.report.page import cell, esc, fmt, page, table

__all__ = ["PERCENTILES", "ReportResult", "select_cases", "write_report"]

#: Percentile cases shown per label (by Dice).
PERCENTILES = (5, 25, 50, 75, 95)
#: Cases shown per comparison pair (those whose Dice changed most).
CHANGED_MOST = 5

Progress = Callable[[str], None]


@dataclass(frozen=True)
class ReportResult:
    """What :func:`write_report` wrote: the file, its size, and what it holds."""

    path: Path
    bytes: int
    cases: int
    labels: int
    overlays: int
    gaps: int
    #: metrics left out of a comparison because not every run has them
    dropped: tuple[str, ...] = ()


def _rank_metric(run: Run) -> str:
    return "dice" if "dice" in run.metrics else run.metrics[0]


def select_cases(run: Run, worst: int) -> dict[str, list[str]]:
    """The cases to show with an overlay: ``{case: [why, ...]}`` in order of first mention.

    Per label, the cases at the 5th, 25th, 50th, 75th and 95th percentile of Dice (the case at
    rank ``round(p/100 * (n - 1))`` of the cases sorted by Dice, NaN left out, ties by name),
    then the ``worst`` lowest-Dice cases (ties: larger HD95 first, when present).  Without a
    Dice column, the first metric (lower-is-better metrics ranked the other way round).
    """
    metric = _rank_metric(run)
    flip = stats.direction(metric) == "lower"
    chosen: dict[str, list[str]] = {}
    for label in run.labels:
        title = run.label_title(label)
        pairs = [(c, run.values[c][label][metric]) for c in run.cases]
        finite = [(c, v) for c, v in pairs if not math.isnan(v)]
        ordered = sorted(finite, key=lambda cv: ((-cv[1] if flip else cv[1]), cv[0]))
        if ordered:
            for p in PERCENTILES:
                case = ordered[int(round(p / 100 * (len(ordered) - 1)))][0]
                chosen.setdefault(case, []).append(f"{title}: {p}th percentile of {metric}")

        def badness(cv: tuple[str, float], label: int = label) -> tuple[float, float, str]:
            value = cv[1]
            score = -math.inf if math.isnan(value) else (-value if flip else value)
            hd = run.values[cv[0]][label].get("hd95", math.nan)
            return (score, -(hd if not math.isnan(hd) else math.inf), cv[0])

        for rank, (case, _) in enumerate(sorted(pairs, key=badness)[: max(0, worst)], start=1):
            chosen.setdefault(case, []).append(f"{title}: worst #{rank} by {metric}")
    return chosen


def _overlay_html(
    run: Run,
    case: str,
    title: str,
    files: CaseFiles | None = None,
    centre: tuple[int, ...] | None = None,
) -> tuple[str, bool]:
    """``(<img>, ok)`` of one case, or a stated gap in its place (``files``: already read;
    ``centre``: the 3D slice position, default the centre of the case's largest error)."""
    from segcli.report.overlay import render_case

    if files is None:
        files = load_case(case, run.pred_dir, run.ref_dir, run.images_dir)
    if files.pred is None or files.ref is None:
        return f'<div class="gap">No overlay for {esc(case)}: {esc(files.gap)}.</div>', False
    png = render_case(
        files.pred, files.ref, files.spacing, files.image, run.labels, title, centre=centre
    )
    img = (
        f'<img alt="overlay of {esc(case)}" src="data:image/png;base64,'
        f'{base64.b64encode(png).decode("ascii")}">'
    )
    note = f'<div class="gap">{esc(files.gap)}.</div>' if files.gap else ""
    return img + note, not files.gap


def _case_metrics_table(runs: Sequence[Run], case: str) -> str:
    labels = runs[0].labels
    metrics = runs[0].metrics
    header = [
        "metric",
        *(
            f"{r.name} · {r.label_title(lbl)}" if len(runs) > 1 else r.label_title(lbl)
            for lbl in labels
            for r in runs
        ),
    ]
    rows = [
        f"<tr><td>{esc(m)}</td>"
        + "".join(cell(r.values[case][lbl].get(m, math.nan)) for lbl in labels for r in runs)
        + "</tr>"
        for m in metrics
    ]
    return table(header, rows, css="case-metrics")


def _header(runs: Sequence[Run], title: str) -> str:
    from segcli import __version__

    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    first = runs[0]
    rows = [
        ("produced by", f"segcli {__version__} (segcli report), {now}"),
        ("cases", str(len(first.cases))),
        ("labels", ", ".join(first.label_title(lbl) for lbl in first.labels)),
        ("metrics", ", ".join(first.metrics)),
    ]
    for run in runs:
        prefix = f"{run.name}: " if len(runs) > 1 else ""
        meta = run.meta
        rows.append((f"{prefix}metrics CSV", str(run.csv.resolve())))
        rows.append(
            (
                f"{prefix}evaluation",
                (
                    f"segcli {meta.get('segcli_version', '?')}, {meta.get('created', '?')}, spec "
                    f"{meta.get('spec_name') or '(none)'}, NSD tolerance {meta.get('nsd_tolerance', '?')} mm"
                )
                if meta
                else "no sidecar record beside the CSV: folders from the command line only",
            )
        )
        for key, what in (
            ("pred_dir", "predictions"),
            ("ref_dir", "references"),
            ("images_dir", "images"),
        ):
            folder = getattr(run, key)
            rows.append((f"{prefix}{what}", str(folder) if folder else "(unknown)"))
    body = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in rows)
    return f'<h1>{esc(title)}</h1><table class="meta" id="provenance">{body}</table>'


# --------------------------------------------------------------------------- one run


def _summary_section(run: Run) -> str:
    from segcli.report.pitfalls import case_status

    header = [
        "label",
        "metric",
        "mean",
        "median",
        "std",
        "IQR",
        "Q1",
        "Q3",
        "95% CI of mean",
        "n",
        "left out",
        "why left out",
    ]
    rows = []
    for label in run.labels:
        for metric in run.metrics:
            column = run.column(label, metric)
            s = stats.summarize_values(column)
            why = ""
            if s.n_nan:
                kinds: dict[str, int] = {}
                for case, value in zip(run.cases, column, strict=True):
                    if math.isnan(value):
                        status = case_status(run, case, label)
                        kinds[status] = kinds.get(status, 0) + 1
                why = "; ".join(f"{n} {k.replace('_', ' ')}" for k, n in sorted(kinds.items()))
            ci = f"{fmt(s.ci_low)} – {fmt(s.ci_high)}"
            rows.append(
                f'<tr data-label="{label}" data-metric="{esc(metric)}"><td>{esc(run.label_title(label))}</td>'
                f"<td>{esc(metric)}</td>{cell(s.mean)}{cell(s.median)}{cell(s.std)}{cell(s.iqr)}"
                f'{cell(s.q1)}{cell(s.q3)}<td data-lo="{s.ci_low!r}" data-hi="{s.ci_high!r}">{ci}</td>'
                f"{cell(s.n)}{cell(s.n_nan)}<td>{esc(why)}</td></tr>"
            )
    note = (
        f'<p class="muted">NaN values are left out of every statistic; the interval is a '
        f"percentile bootstrap of the mean ({stats.BOOTSTRAP_RESAMPLES} resamples, fixed seed).</p>"
    )
    return '<h2 id="summary-h">Summary</h2>' + note + table(header, rows, "summary")


def _distribution_section(run: Run) -> str:
    from segcli.metrics import METRICS
    from segcli.report.plots import box_plot

    plots = [
        box_plot(
            [(run.label_title(lbl), run.column(lbl, m)) for lbl in run.labels],
            m,
            METRICS.get(m).unit,
        )
        for m in run.metrics
    ]
    return (
        '<h2 id="distributions">Distributions</h2><p class="muted">One box per label; every case '
        'is a point (NaN left out).</p><div class="plots">' + "".join(plots) + "</div>"
    )


def _cases_section(run: Run, worst: int, progress: Progress) -> tuple[str, int, int]:
    chosen = select_cases(run, worst)
    parts = []
    drawn = gaps = 0
    for case, reasons in chosen.items():
        progress(case)
        picture, ok = _overlay_html(run, case, case)
        drawn += picture.startswith("<img")
        gaps += not ok
        parts.append(
            f'<div class="case" data-case="{esc(case)}"><div>{picture}</div><div><h3>{esc(case)}</h3>'
            f"<p>{'<br>'.join(esc(r) for r in reasons)}</p>{_case_metrics_table([run], case)}</div></div>"
        )
    intro = (
        f'<h2 id="cases-to-look-at">Cases to look at</h2><p class="muted">Per label the '
        f"{', '.join(f'{p}th' for p in PERCENTILES)} percentile cases by {_rank_metric(run)} and "
        f"the {worst} worst; reference solid, prediction dashed, errors filled; 3D: three "
        "orthogonal slices through the largest error.</p>"
    )
    return intro + "".join(parts), drawn, gaps


def _pitfalls_section(run: Run) -> str:
    from segcli.report.pitfalls import find_pitfalls, scan_maps

    findings = find_pitfalls(run, scan_maps(run))
    if not findings:
        items = "<p>None of the checks found anything.</p>"
    else:
        items = "".join(
            f'<div class="finding"><b>{esc(f.title)}</b>{esc(f.text)}'
            + (
                f'<br><span class="muted">cases: {esc(", ".join(f.cases[:20]))}'
                + (f" and {len(f.cases) - 20} more" if len(f.cases) > 20 else "")
                + "</span>"
                if f.cases
                else ""
            )
            + "</div>"
            for f in findings
        )
    return '<h2 id="pitfalls">Pitfalls found in the data</h2><div id="findings">' + items + "</div>"


def _case_table(runs: Sequence[Run]) -> str:
    first = runs[0]
    header = ["case"]
    for run in runs:
        for label in first.labels:
            for metric in first.metrics:
                prefix = f"{run.name} " if len(runs) > 1 else ""
                header.append(f"{prefix}L{label} {metric}")
    rows = []
    for case in first.cases:
        cells = "".join(
            cell(run.values[case][label][metric])
            for run in runs
            for label in first.labels
            for metric in first.metrics
        )
        rows.append(f'<tr data-case="{esc(case)}"><td>{esc(case)}</td>{cells}</tr>')
    return (
        '<h2 id="all-cases">All cases</h2><p class="muted">Click a column to sort; type to filter '
        "(needs JavaScript). L1 = label 1.</p>"
        + table(header, rows, "cases", sortable=True, filterable=True)
    )


def _nav(items: Sequence[tuple[str, str]]) -> str:
    return "<nav>" + "".join(f'<a href="#{a}">{esc(t)}</a>' for a, t in items) + "</nav>"


def _single(run: Run, worst: int, progress: Progress) -> tuple[str, int, int]:
    cases, drawn, gaps = _cases_section(run, worst, progress)
    body = (
        _header([run], f"segcli evaluation report: {run.name}")
        + _nav(
            [
                ("summary-h", "summary"),
                ("pitfalls", "pitfalls"),
                ("distributions", "distributions"),
                ("cases-to-look-at", "cases to look at"),
                ("all-cases", "all cases"),
            ]
        )
        + _summary_section(run)
        + _pitfalls_section(run)
        + _distribution_section(run)
        + cases
        + _case_table([run])
    )
    return page(f"segcli report: {run.name}", body), drawn, gaps


# --------------------------------------------------------------------------- comparison


def _check_same_cases(runs: Sequence[Run]) -> None:
    first = runs[0]
    for run in runs[1:]:
        for a, b in ((first, run), (run, first)):
            missing = [c for c in a.cases if c not in b.values]
            if missing:
                raise DataError(
                    f"case '{missing[0]}' is in {a.csv} but not in {b.csv}"
                    + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
                    + "; a comparison needs the same cases in every run"
                )
        if run.labels != first.labels:
            raise DataError(
                f"{run.csv} scores labels {list(run.labels)}, {first.csv} scores "
                f"{list(first.labels)}; compare runs evaluated on the same labels (--labels)"
            )


def _comparison_section(base: Run, other: Run, metrics: Sequence[str]) -> str:
    from segcli.report.plots import scatter_plot

    header = [
        "label",
        "metric",
        f"mean {base.name}",
        f"mean {other.name}",
        f"mean difference ({other.name} − {base.name})",
        "95% CI",
        "Wilcoxon p",
        "wins",
        "ties",
        "losses",
        "n pairs",
        "verdict",
    ]
    rows, scatters = [], []
    for label in base.labels:
        for metric in metrics:
            way = stats.direction(metric)
            p = stats.paired(
                base.column(label, metric),
                other.column(label, metric),
                None if way == "none" else way == "higher",
            )
            verdict = p.verdict.replace("B ", f"{other.name} ")
            css = "better" if "better" in verdict else ("worse" if "worse" in verdict else "")
            wtl = (
                (cell(p.wins), cell(p.ties), cell(p.losses))
                if way != "none"
                else ("<td>—</td>", cell(p.ties), "<td>—</td>")
            )
            rows.append(
                f'<tr data-label="{label}" data-metric="{esc(metric)}"><td>{esc(base.label_title(label))}</td>'
                f"<td>{esc(metric)}</td>{cell(p.mean_a)}{cell(p.mean_b)}{cell(p.mean_diff)}"
                f'<td data-lo="{p.ci_low!r}" data-hi="{p.ci_high!r}">{fmt(p.ci_low)} – {fmt(p.ci_high)}</td>'
                f'{cell(p.p, 3)}{"".join(wtl)}{cell(p.n)}<td class="{css}">{esc(verdict)}</td></tr>'
            )
        for metric in [m for m in ("dice", "hd95") if m in metrics] or list(metrics[:1]):
            scatters.append(
                scatter_plot(
                    base.column(label, metric),
                    other.column(label, metric),
                    base.name,
                    other.name,
                    f"{base.label_title(label)}: {metric}",
                )
            )
    intro = (
        f'<h2 id="compare-{esc(other.name)}">{esc(other.name)} against {esc(base.name)}</h2>'
        '<p class="muted">Paired by case. Difference = '
        f"{esc(other.name)} − {esc(base.name)}; a 95% bootstrap interval that contains 0 means no "
        "significant difference. Wins/losses follow each metric's direction (lower is better "
        "for distances); volumes and component counts have no direction. Pairs with a NaN "
        "are left out.</p>"
    )
    return (
        intro
        + table(header, rows, f"comparison-{other.name}", css="comparison")
        + '<div class="plots">'
        + "".join(scatters)
        + "</div>"
    )


def _changed_most(
    base: Run, other: Run, metrics: Sequence[str], progress: Progress
) -> tuple[str, int, int]:
    """Overlays of the cases whose ``metric`` (Dice when shared, else the first shared metric)
    changed most between the runs; cases where it changed by no finite amount come last and
    say so."""
    metric = "dice" if "dice" in metrics else metrics[0]
    change: dict[str, float] = {}
    for case in base.cases:
        deltas = [
            abs(other.values[case][lbl][metric] - base.values[case][lbl][metric])
            for lbl in base.labels
        ]
        finite = [d for d in deltas if math.isfinite(d)]
        change[case] = max(finite) if finite else math.nan
    top = sorted(
        base.cases,
        key=lambda c: (math.isnan(change[c]), -change[c] if change[c] == change[c] else 0, c),
    )[:CHANGED_MOST]
    parts, drawn, gaps = [], 0, 0
    for case in top:
        progress(case)
        pictures = []
        loaded = [load_case(case, r.pred_dir, r.ref_dir, r.images_dir) for r in (base, other)]
        centre = _shared_centre(loaded, base.labels)
        for run, files in zip((base, other), loaded, strict=True):
            picture, ok = _overlay_html(run, case, f"{run.name}: {case}", files, centre)
            drawn += picture.startswith("<img")
            gaps += not ok
            pictures.append(f"<div>{picture}</div>")
        parts.append(
            f'<div class="case" data-case="{esc(case)}"><div class="pair">{"".join(pictures)}</div>'
            f"<div><h3>{esc(case)}</h3>"
            + (
                f"<p>largest change of {esc(metric)} over labels: {fmt(change[case])}</p>"
                if not math.isnan(change[case])
                else f"<p>no finite change of {esc(metric)} in any label (NaN or infinite)</p>"
            )
            + f"{_case_metrics_table([base, other], case)}</div></div>"
        )
    return (
        f"<h3>Cases that changed most ({esc(other.name)} vs {esc(base.name)}, by {esc(metric)})</h3>"
        + "".join(parts),
        drawn,
        gaps,
    )


def _shared_centre(loaded: Sequence[CaseFiles], labels: Sequence[int]) -> tuple[int, ...] | None:
    """One slice position for both runs' overlays: the largest error of either prediction."""
    import numpy as np

    from segcli.report.overlay import error_centre

    usable = [f for f in loaded if f.pred is not None and f.ref is not None]
    if not usable or usable[0].ref is None or usable[0].ref.ndim != 3:
        return None
    ref = usable[0].ref
    ref_fg = np.isin(ref, labels)
    wrong = np.zeros(ref.shape, bool)
    pred_fg = np.zeros(ref.shape, bool)
    for files in usable:
        if files.pred is not None and files.pred.shape == ref.shape:
            fg = np.isin(files.pred, labels)
            pred_fg |= fg
            wrong |= (fg | ref_fg) & (np.where(fg, files.pred, 0) != np.where(ref_fg, ref, 0))
    return error_centre(pred_fg, ref_fg, wrong)


def _comparison(runs: Sequence[Run], progress: Progress) -> tuple[str, int, int, tuple[str, ...]]:
    _check_same_cases(runs)
    base = runs[0]
    metrics = [m for m in base.metrics if all(m in r.metrics for r in runs[1:])]
    if not metrics:
        raise DataError(f"{base.csv} and the other CSVs have no metric column in common")
    dropped = sorted({m for r in runs for m in r.metrics} - set(metrics))
    for run in runs[1:]:  # the same case order as the baseline; same references and images
        run.cases = base.cases
        run.ref_dir = run.ref_dir or base.ref_dir
        run.images_dir = run.images_dir or base.images_dir
    for run in runs:  # every section below reads only the shared metrics
        run.metrics = tuple(metrics)
    sections, drawn, gaps = [], 0, 0
    for other in runs[1:]:
        sections.append(_comparison_section(base, other, metrics))
        html, d, g = _changed_most(base, other, metrics, progress)
        sections.append(html)
        drawn, gaps = drawn + d, gaps + g
    names = ", ".join(r.name for r in runs)
    note = (
        f'<p class="muted">Each run is compared with the first ({esc(base.name)}).'
        + (
            f" Metrics not in every run are left out (a comparison needs both sides): "
            f"{esc(', '.join(dropped))}."
            if dropped
            else ""
        )
        + "</p>"
    )
    body = (
        _header(runs, f"segcli comparison: {names}") + note + "".join(sections) + _case_table(runs)
    )
    return page(f"segcli comparison: {names}", body), drawn, gaps, tuple(dropped)


# --------------------------------------------------------------------------- entry point


def write_report(
    csvs: Sequence[str | Path],
    output: str | Path,
    names: Sequence[str] | None = None,
    pred_dirs: Sequence[str | Path] | None = None,
    ref_dir: str | Path | None = None,
    images_dir: str | Path | None = None,
    worst: int = 5,
    progress: Progress | None = None,
) -> ReportResult:
    """Write the HTML report of one evaluate CSV, or the comparison of several.

    Args:
        csvs: evaluate CSVs (one: a run's report; several: a comparison with the first as
            baseline).
        output: the HTML file to write.
        names: display names, one per CSV (default: the CSV stems).
        pred_dirs: prediction folders, one per CSV (default: from each sidecar).
        ref_dir, images_dir: reference and image folders for every run (default: sidecars).
        worst: how many worst cases per label get an overlay (single run).
        progress: called with each case name as its overlay is drawn.

    Raises:
        SpecError: bad ``names``/``pred_dirs`` count, ``worst`` < 0, output not ``.html``-able.
        DataError: a CSV is missing or not an evaluate CSV; runs with different cases.
    """
    output = Path(output)
    if not csvs:
        raise SpecError("give at least one metrics CSV: segcli report METRICS.csv -o report.html")
    if worst < 0:
        raise SpecError(f"--worst must be 0 or more, got {worst}")
    if output.is_dir():
        raise DataError(f"{output}: is a folder; give -o a file name, e.g. report.html")
    for what, given in (("--names", names), ("--pred", pred_dirs)):
        if given is not None and len(given) != len(csvs):
            raise SpecError(f"{what}: {len(given)} given for {len(csvs)} CSV(s); give one per CSV")
    if names is not None and len(set(names)) != len(names):
        raise SpecError(f"--names must be distinct, got {', '.join(names)}")
    runs = [
        load_run(
            path,
            name=names[i] if names else None,
            pred_dir=pred_dirs[i] if pred_dirs else None,
            ref_dir=ref_dir,
            images_dir=images_dir,
        )
        for i, path in enumerate(csvs)
    ]
    if names is None and len({r.name for r in runs}) != len(runs):
        for i, run in enumerate(runs):
            run.name = f"{chr(ord('A') + i)} ({run.name})" if i < 26 else f"run {i + 1}"
    tick: Progress = progress or (lambda _case: None)
    dropped: tuple[str, ...] = ()
    if len(runs) == 1:
        text, drawn, gaps = _single(runs[0], worst, tick)
    else:
        text, drawn, gaps, dropped = _comparison(runs, tick)
    data = text.encode("utf-8")
    with atomic_open(output, "wb", what="the report") as handle:
        handle.write(data)
    return ReportResult(
        output, len(data), len(runs[0].cases), len(runs[0].labels), drawn, gaps, dropped
    )
