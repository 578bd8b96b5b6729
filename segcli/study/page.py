"""``study.html``: the ranking and every paired comparison of a study, one self-contained page
(the report's page, tables and plots: :mod:`segcli.report.page`)."""

from __future__ import annotations

from collections.abc import Sequence

from segcli.report.page import cell, esc, fmt, page, table
from segcli.study.compare import ALPHA, Pair, RankRow, Scores

__all__ = ["study_page"]


def study_page(
    title: str,
    metric: str,
    folds: int,
    ranking: Sequence[RankRow],
    pairs: Sequence[Pair],
    scores: Scores,
    notes: Sequence[str] = (),
) -> str:
    """The whole HTML document."""
    from segcli.report.plots import scatter_plot

    rank_rows = [
        f'<tr data-variant="{esc(r.variant)}"><td>{r.rank}</td><td>{esc(r.variant)}</td>'
        f"{cell(r.mean)}{cell(r.fold_std)}{cell(r.n)}</tr>"
        for r in ranking
    ]
    pair_rows = []
    for p in pairs:
        s = p.stats
        verdict = f"{p.better} better" if p.better else "no significant difference"
        css = "better" if p.better else ""
        pair_rows.append(
            f'<tr data-a="{esc(p.a)}" data-b="{esc(p.b)}" data-label="{esc(p.label)}">'
            f"<td>{esc(p.a)}</td><td>{esc(p.b)}</td><td>{esc(p.label)}</td>"
            f"{cell(s.mean_a)}{cell(s.mean_b)}{cell(s.mean_diff)}"
            f"<td>{fmt(s.ci_low)} – {fmt(s.ci_high)}</td>{cell(s.p, 3)}{cell(p.p_holm, 3)}"
            f"{cell(s.wins)}{cell(s.ties)}{cell(s.losses)}{cell(s.n)}"
            f'<td class="{css}">{esc(verdict)}</td></tr>'
        )
    plots = []
    for p in pairs:
        cases = sorted(set(scores[p.a]) & set(scores[p.b]))
        xa = [scores[p.a][c].get(p.label, {}).get(metric, float("nan")) for c in cases]
        xb = [scores[p.b][c].get(p.label, {}).get(metric, float("nan")) for c in cases]
        plots.append(scatter_plot(xa, xb, p.a, p.b, f"label {p.label}: {metric}"))
    n_tests = sum(1 for p in pairs if p.stats.p == p.stats.p)
    method = (
        f"Every case was scored by the model of the fold (of {folds}) that did not train on it. "
        f"Ranking: mean over cases of the mean over labels of {esc(metric)}; spread: standard "
        "deviation of the fold means. Pairs: per label, paired by case, difference = B − A; "
        "95% bootstrap interval of the mean difference; two-sided Wilcoxon signed-rank p. "
        f"The p-values are Holm-corrected across all {n_tests} comparisons on this page "
        f"(family-wise error {ALPHA}); a difference is called significant when the corrected "
        f"p is below {ALPHA}."
    )
    body = (
        f"<h1>{esc(title)}</h1>"
        + "".join(f'<p class="muted">{esc(n)}</p>' for n in notes)
        + f'<h2 id="ranking">Ranking by {esc(metric)}</h2>'
        + table(
            ["rank", "variant", f"mean {metric}", "std of fold means", "n cases"],
            rank_rows,
            "ranking",
        )
        + '<h2 id="pairs">Every pair, case by case</h2>'
        + f'<p class="muted">{method}</p>'
        + table(
            [
                "A",
                "B",
                "label",
                "mean A",
                "mean B",
                "mean difference (B − A)",
                "95% CI",
                "Wilcoxon p",
                "Holm p",
                "B better",
                "ties",
                "B worse",
                "n pairs",
                "verdict",
            ],
            pair_rows,
            "pairs",
            sortable=True,
        )
        + '<div class="plots">'
        + "".join(plots)
        + "</div>"
    )
    return page(title, body)
