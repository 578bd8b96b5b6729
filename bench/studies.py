"""The lecture's comparisons as studies, and Hippocampus variants with a fold ensemble.

    make study-lecture          # or: .venv/bin/python bench/studies.py lecture
    make study-hippocampus      # or: .venv/bin/python bench/studies.py hippocampus [--budget-minutes 30]

``lecture``: toy data from ``segcli synth`` (2-D, 200 cases, seed 0) and two studies on 5
folds each, every variant trained on the same folds and scored out of fold:

* receptive field: ``experiments/toy-cnn.yaml`` (7×7) against ``toy-dilated.yaml`` (15×15);
* class imbalance: the dilated network with ``ce``, ``dice`` and ``dice_ce``.

``hippocampus``: the shared MSD Hippocampus data less 40 held-back cases; two variants of
``experiments/hippocampus.yaml`` on 3 folds within a CPU budget (``segcli study
--budget-minutes``), then the winner's 3-fold ensemble against its fold-0 model alone on the
held-back cases (paired Dice, Wilcoxon).

Each writes its section of docs/studies.md (with the command, date and machine) and the study
pages under docs/studies/.
"""

from __future__ import annotations

import argparse
import datetime
import shutil
from pathlib import Path
from typing import Any

import yaml
from _harness import REPO, doc_options, link_cases, machine, row, scratch, table, write_block

DOC = REPO / "docs" / "studies.md"
PAGES = REPO / "docs" / "studies"
HEADER = (
    "# Studies\n\n"
    "Comparisons answered with cross-validation and a test, written by `bench/studies.py`\n"
    "(`make study-lecture`, `make study-hippocampus`).  Every variant is trained on the same\n"
    "folds and every case is scored by the fold model that did not see it; p-values are\n"
    "Holm-corrected across all the comparisons of a study.\n"
)


def _study(path: Path, out: Path, sets: list[str], budget: float | None = None) -> Any:
    from segcli.engine.runtime import set_quiet
    from segcli.engine.study import run_study

    set_quiet(True)
    return run_study(path, out, sets, budget_minutes=budget, device="cpu")


def _table(result: Any, metric: str) -> list[str]:
    lines = table(
        ["rank", "variant", f"out-of-fold {metric}", "std of fold means", "cases"],
        [(r.rank, r.variant, f"{r.mean:.4f}", f"{r.fold_std:.4f}", r.n) for r in result.ranking],
        align="rlrrr",
    )
    columns = ["A", "B", "label", "mean A", "mean B", "95% CI of B − A", "Wilcoxon p", "Holm p"]
    lines += ["", *table([*columns, "verdict"], align="lllrrlrrl")]
    for p in result.pairs:
        s = p.stats
        verdict = f"**{p.better} better**" if p.better else "no significant difference"
        lines.append(
            f"| {p.a} | {p.b} | {p.label} | {s.mean_a:.4f} | {s.mean_b:.4f} | "
            f"{s.ci_low:+.4f} … {s.ci_high:+.4f} | {s.p:.3g} | {p.p_holm:.3g} | {verdict} |"
        )
    if result.ensemble is not None:
        winner = result.ranking[0]
        lines += [
            "",
            f"The top two averaged ({result.ensemble.variant}), every case by the fold that held "
            f"it out: {metric} {result.ensemble.mean:.4f} against {winner.mean:.4f} for "
            f"{winner.variant} alone, so best.yaml is "
            + ("the ensemble of the two." if result.ensemble_chosen else f"{winner.variant}."),
        ]
    return lines


def _keep_page(result: Any, name: str) -> str:
    PAGES.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(result.folder / "study.html", PAGES / f"{name}.html")
    return f"studies/{name}.html"


def lecture(args: argparse.Namespace) -> str:
    from segcli.engine.synth import run_synth

    with scratch("segcli-study-lecture-") as work:
        data = work / "toy2d"
        run_synth(data, dims=2, cases=args.cases, seed=0)
        sets = [f"data.root={data}", f"train.epochs={args.epochs}", "train.workers=0"]
        rf = work / "rf.yaml"
        rf.write_text(
            yaml.safe_dump(
                {
                    "variants": {
                        "cnn-7x7": str(REPO / "experiments" / "toy-cnn.yaml"),
                        "dilated-15x15": str(REPO / "experiments" / "toy-dilated.yaml"),
                    },
                    "folds": args.folds,
                }
            )
        )
        losses = work / "loss.yaml"
        losses.write_text(
            yaml.safe_dump(
                {
                    "base": str(REPO / "experiments" / "toy-dilated.yaml"),
                    "vary": {"loss.name": ["ce", "dice", "dice_ce"]},
                    "folds": args.folds,
                }
            )
        )
        first = _study(rf, work / "rf", sets)
        second = _study(losses, work / "loss", sets)
        command = "python bench/studies.py lecture" + (
            f" --cases {args.cases} --epochs {args.epochs} --folds {args.folds}"
        )
        lines = [
            "## The lecture's comparisons",
            "",
            f"`{command}` (`make study-lecture`) on {datetime.date.today().isoformat()}, "
            f"{machine()}.",
            "",
            f"Data: `segcli synth` 2-D, {args.cases} cases, seed 0; every variant "
            f"{args.epochs} epochs per fold (`--set train.epochs={args.epochs}`), {args.folds} "
            "folds, ranked by out-of-fold Dice of the malign lesions.",
            "",
            "### Receptive field: 7×7 against 15×15",
            "",
            *_table(first, "dice"),
            "",
            f"The page: [{_keep_page(first, 'receptive-field')}]({_keep_page(first, 'receptive-field')}).",
            "",
            "### Class imbalance: which loss",
            "",
            *_table(second, "dice"),
            "",
            f"The page: [{_keep_page(second, 'loss')}]({_keep_page(second, 'loss')}).",
        ]
        return "\n".join(lines)


def _link_cases(src: Path, dst: Path, names: list[str]) -> None:
    """A dataset folder ``dst`` of the cases ``names`` of ``src`` (symlinks) and its dataset.json."""
    link_cases(src, names, dst / "imagesTr", dst / "labelsTr")
    shutil.copyfile(src / "dataset.json", dst / "dataset.json")


def _dice(result: Any) -> dict[str, dict[int, float]]:
    return {
        case: {label: r.values["dice"] for label, r in per.items()}
        for case, per in result.cases.items()
    }


def hippocampus(args: argparse.Namespace) -> str:
    import numpy as np
    from hippocampus_cache import hippocampus_data

    from segcli.config import load
    from segcli.engine.crossval import fold_experiment
    from segcli.engine.evaluate import evaluate_folders
    from segcli.engine.predict import predict_cases
    from segcli.report import stats

    shared = hippocampus_data()
    names = sorted(p.name.removesuffix(".nii.gz") for p in (shared / "labelsTr").glob("*.nii.gz"))
    order = np.random.default_rng(0).permutation(len(names))
    held = sorted(names[i] for i in order[: args.held_back])
    rest = sorted(set(names) - set(held))
    with scratch("segcli-study-hippocampus-") as work:
        _link_cases(shared, work / "data", rest)
        _link_cases(shared, work / "test", held)
        study = work / "study.yaml"
        study.write_text(
            yaml.safe_dump(
                {
                    "base": str(REPO / "experiments" / "hippocampus.yaml"),
                    "vary": {"model.filters": [8, 16]},
                    "folds": args.folds,
                }
            )
        )
        result = _study(study, work / "study", [f"data.root={work / 'data'}"], args.budget_minutes)
        best = load(result.best)
        scores = {}
        alone = fold_experiment(best, 0).model_copy(update={"ensemble": []})  # its own fold 0
        for tag, exp in (("ensemble", best), ("fold 0", alone)):
            pred = work / f"pred-{tag.replace(' ', '')}"
            predict_cases(exp, work / "test" / "imagesTr", pred, device="cpu")
            evaluated = evaluate_folders(
                pred, work / "test" / "labelsTr", work / f"{tag.replace(' ', '')}.csv", ["dice"]
            )
            scores[tag] = _dice(evaluated)
        cases = sorted(scores["ensemble"])
        labels = sorted(next(iter(scores["ensemble"].values())))
        lines = [
            "## Hippocampus: variants on 3 folds, and the fold ensemble",
            "",
            f"`python bench/studies.py hippocampus --budget-minutes {args.budget_minutes:g}` "
            f"(`make study-hippocampus`) on {datetime.date.today().isoformat()}, "
            f"{machine()}.",
            "",
            f"`experiments/hippocampus.yaml` with `model.filters` 8 and 16 on {len(rest)} cases, "
            f"{args.folds} folds, the study's {args.budget_minutes:g} CPU minutes split between "
            f"its runs (`segcli study --budget-minutes`); {len(held)} cases held back "
            "(seed 0) for the ensemble test.",
            "",
            *_table(result, "dice"),
            "",
            f"The page: [{_keep_page(result, 'hippocampus')}]({_keep_page(result, 'hippocampus')}).",
            "",
            "### best.yaml ("
            + (
                f"the top two variants' {2 * args.folds} fold models"
                if result.ensemble_chosen
                else f"the winner's {args.folds}-fold ensemble"
            )
            + f") against the winner's fold-0 model, {len(held)} held-back cases",
            "",
            *table(
                ["label", "Dice fold 0", "Dice ensemble", "95% CI of the difference", "Wilcoxon p"],
                align="lrrlr",
            ),
        ]
        for label in labels:
            single = [scores["fold 0"][c][label] for c in cases]
            ens = [scores["ensemble"][c][label] for c in cases]
            p = stats.paired(single, ens, True)
            interval = f"{p.ci_low:+.4f} … {p.ci_high:+.4f}"
            lines.append(row(label, f"{p.mean_a:.4f}", f"{p.mean_b:.4f}", interval, f"{p.p:.3g}"))
        return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="which", required=True)
    lec = sub.add_parser("lecture")
    lec.add_argument("--cases", type=int, default=200)
    lec.add_argument("--epochs", type=int, default=6)
    lec.add_argument("--folds", type=int, default=5)
    doc_options(lec, DOC)
    hip = sub.add_parser("hippocampus")
    hip.add_argument("--budget-minutes", type=float, default=30.0)
    hip.add_argument("--folds", type=int, default=3)
    hip.add_argument("--held-back", type=int, default=40)
    doc_options(hip, DOC)
    args = parser.parse_args()
    body = lecture(args) if args.which == "lecture" else hippocampus(args)
    print(body)
    if not args.no_write:
        start, end = f"<!-- studies:{args.which} -->", f"<!-- /studies:{args.which} -->"
        write_block(args.doc, start, end, body, empty=HEADER)


if __name__ == "__main__":
    main()
