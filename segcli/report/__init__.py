"""``segcli report``: look at your results — one self-contained HTML file per evaluation.

A single run's report (summary statistics with bootstrap intervals, box plots with every case,
the percentile and worst cases with overlays, the metric pitfalls found in the data, a sortable
case table) or a comparison of runs on the same cases (paired differences with bootstrap
intervals, Wilcoxon signed-rank p-values, wins/ties/losses, scatters, the cases that changed
most).  Layers: :mod:`~segcli.report.stats` (pure statistics), :mod:`~segcli.report.data`
(the CSV and its sidecar), :mod:`~segcli.report.pitfalls`, :mod:`~segcli.report.overlay`,
:mod:`~segcli.report.plots`, :mod:`~segcli.report.page` (HTML), :mod:`~segcli.report.build`.

    >>> from segcli.report import write_report
    >>> write_report(["metrics.csv"], "report.html").bytes
"""

from segcli.report.build import ReportResult, write_report
from segcli.report.data import load_run, meta_path, write_meta

__all__ = ["ReportResult", "load_run", "meta_path", "write_meta", "write_report"]
