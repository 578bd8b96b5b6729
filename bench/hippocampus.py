"""MSD Task04 Hippocampus end to end, side by side with a plain MONAI script; writes docs/results.md.

    make hippocampus        # or: .venv/bin/python bench/hippocampus.py

1. `segcli train experiments/hippocampus.yaml` (the CPU budget: ≤ 10 minutes, validation
   included); the train/validation split is written to the run folder (split.json).
2. `segcli predict` + `segcli evaluate` on the held-back validation cases, with overlays and
   the HTML report (copied to docs/reports/hippocampus.html).
3. bench/hippocampus_monai.py with the same split and the same wall-clock budget, scored by the
   same `segcli evaluate`; `segcli report` compares the two runs case by case
   (docs/reports/hippocampus-vs-monai.html).
4. `segcli predict` on imagesTs/ (one unlabelled case) and a geometry check.
5. `segcli receptive-field experiments/hippocampus.yaml`.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import shutil
import sys
from pathlib import Path

from _harness import (
    REPO,
    SEGCLI,
    link_cases,
    machine,
    marked_sections,
    row,
    run,
    table,
    write_doc,
)
from hippocampus_monai import matching_args

DOC = REPO / "docs" / "results.md"
IMG = REPO / "docs" / "img"
METRIC_COLUMNS = ["Dice mean", "Dice median", "HD95 mean (mm)", "HD95 median"]
METRIC_COLUMNS += ["ASSD mean (mm)", "ASSD median", "NSD@1mm mean", "NSD median"]


def sh(cmd: list, log: Path | None = None) -> float:
    """Run ``cmd`` in the repository; its wall seconds."""
    return run(cmd, log=log).seconds


def summary_rows(path: Path) -> dict[tuple[str, str], dict[str, float]]:
    with path.open() as handle:
        return {
            (r["label"], r["metric"]): {
                k: float(v) if v not in ("", None) else math.nan
                for k, v in r.items()
                if k not in ("label", "metric")
            }
            for r in csv.DictReader(handle)
        }


def per_case(path: Path) -> list[dict[str, str]]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--spec", default="experiments/hippocampus.yaml")
    parser.add_argument("--skip-monai", action="store_true")
    args = parser.parse_args()
    from segcli.config import load

    exp = load(REPO / args.spec)
    root = (REPO / exp.data.root).resolve()
    run_dir = REPO / exp.output / exp.name
    shutil.rmtree(run_dir, ignore_errors=True)
    metrics = "dice,iou,hd95,assd,masd,nsd"

    spec = [args.spec]
    train_seconds = sh([*SEGCLI, "train", *spec], run_dir.parent / f"{exp.name}-train.log")
    split = json.loads((run_dir / "split.json").read_text())
    val_images, val_labels = run_dir / "val" / "images", run_dir / "val" / "labels"
    link_cases(root, split["val"], val_images, val_labels)
    pred = run_dir / "pred_val"
    sh([*SEGCLI, "predict", *spec, "-i", val_images, "-o", pred, "--overwrite"])
    csv_path = run_dir / "val_metrics.csv"
    overlays = run_dir / "overlays"
    evaluate = [*SEGCLI, "evaluate", *spec, "--pred", pred, "--ref", val_labels, "-o", csv_path]
    evaluate += ["--metrics", metrics, "--overlays", overlays, "--images", val_images]
    sh([*evaluate, "--report", run_dir / "report.html"], run_dir / "evaluate.log")
    test_pred = run_dir / "pred_test"
    sh([*SEGCLI, "predict", *spec, "-i", root / "imagesTs", "-o", test_pred, "--overwrite"])
    from segcli.io.images import read_geometry

    test_case = sorted((root / "imagesTs").glob("*.nii.gz"))[0]
    geometry_ok = (
        read_geometry(test_case).differences(read_geometry(test_pred / test_case.name)) == []
    )
    rf = run([*SEGCLI, "receptive-field", args.spec, "--json"]).json()
    log = [r for r in csv.DictReader((run_dir / "log.csv").open())]
    best = max((r for r in log if r["val_dice"]), key=lambda r: float(r["val_dice"]))

    monai = None
    if not args.skip_monai:
        monai_dir = REPO / exp.output / f"{exp.name}-monai"
        shutil.rmtree(monai_dir, ignore_errors=True)
        script = [sys.executable, "bench/hippocampus_monai.py", "--split", run_dir / "split.json"]
        script += ["--budget-seconds", f"{train_seconds:.0f}", "--output", monai_dir]
        sh([*script, *matching_args(exp)], monai_dir.parent / "monai.log")
        monai_csv = monai_dir / "val_metrics.csv"
        evaluate = [*SEGCLI, "evaluate", *spec, "--pred", monai_dir / "pred_val"]
        sh([*evaluate, "--ref", val_labels, "-o", monai_csv, "--metrics", metrics])
        compare = ["-o", run_dir / "compare-monai.html", "--names", "segcli,MONAI"]
        sh([*SEGCLI, "report", csv_path, monai_csv, *compare])
        monai = (
            summary_rows(monai_csv.with_name("val_metrics_summary.csv")),
            json.loads((monai_dir / "summary.json").read_text()),
        )

    ours = summary_rows(csv_path.with_name("val_metrics_summary.csv"))
    cases = per_case(csv_path)
    by_case: dict[str, list[float]] = {}
    for r in cases:
        by_case.setdefault(r["case"], []).append(float(r["dice"]) if r["dice"] else 0.0)
    worst = sorted(by_case, key=lambda c: sum(by_case[c]) / len(by_case[c]))[:3]
    IMG.mkdir(parents=True, exist_ok=True)
    for old in IMG.glob("hippocampus_worst_*.png"):
        old.unlink()
    for i, name in enumerate(worst, 1):
        shutil.copy(overlays / f"{name}.png", IMG / f"hippocampus_worst_{i}_{name}.png")

    names = {"1": "anterior", "2": "posterior"}
    lines = [
        "# Real data: MSD Task04 Hippocampus",
        "",
        "Written by `make hippocampus` (`.venv/bin/python bench/hippocampus.py`).",
        f"Machine: {machine()}.",
        "",
        f"Data: `{exp.data.root}` — 208 labelled 3D MRI crops (about 36×50×35 voxels, 1 mm), labels",
        "1 = anterior (head), 2 = posterior (body and tail).  Split: a fixed, seeded 80/20 split",
        f"({len(split['train'])} training / {len(split['val'])} validation cases), written to",
        f"`{exp.output}/{exp.name}/split.json` and reused by the MONAI script.",
        "",
        "Commands (what the script runs):",
        "",
        "```",
        f"segcli train {args.spec}",
        f"segcli predict {args.spec} -i <validation images> -o {exp.output}/{exp.name}/pred_val",
        f"segcli evaluate {args.spec} --pred {exp.output}/{exp.name}/pred_val --ref <validation labels> \\",
        f"    -o {exp.output}/{exp.name}/val_metrics.csv --metrics {metrics} --overlays {exp.output}/{exp.name}/overlays --images <validation images>",
        f"python bench/hippocampus_monai.py --split {exp.output}/{exp.name}/split.json --budget-seconds <segcli's training time>",
        "```",
        "",
        f"## segcli, CPU budget (`{args.spec}`)",
        "",
        f"Training wall clock: **{train_seconds / 60:.1f} min** (data loading and validation included); "
        f"{len(log)} epochs × {exp.train.iterations_per_epoch} iterations × batch {exp.train.batch_size}; "
        f"best validation Dice {float(best['val_dice']):.4f} at epoch {int(best['epoch']) + 1}.  "
        f"The network: 3D U-Net, {rf['parameters']:,} parameters, receptive field "
        f"{'×'.join(map(str, rf['receptive_field']))} voxels for a "
        f"{'×'.join(map(str, exp.data.patch_size))} patch — larger than the whole crop, so every voxel sees all of it.",
        "",
        *table(["label", *METRIC_COLUMNS], align="l" + "r" * 8),
    ]

    def cells(summary: dict, label: str) -> list[str]:
        out = []
        for metric in ("dice", "hd95", "assd", "nsd"):
            s = summary[(label, metric)]
            out += [f"{s['mean']:.3f}", f"{s['median']:.3f}"]
        return out

    lines += [
        row(f"1 ({names['1']})", *cells(ours, "1")),
        row(f"2 ({names['2']})", *cells(ours, "2")),
        "",
    ]
    lines += [
        f"`segcli predict` on `imagesTs/` ({test_case.name}, unlabelled): label map written with the input's "
        f"exact geometry: **{'yes' if geometry_ok else 'NO'}**.",
        "",
    ]
    if monai is not None:
        summary, info = monai
        lines += [
            "## Side by side: a plain MONAI script, same split, same wall-clock budget",
            "",
            f"`bench/hippocampus_monai.py`: MONAI {__import__('monai').__version__} UNet (residual units, "
            f"{info['parameters']:,} parameters), DiceCELoss, RandCropByPosNegLabeld, "
            f"{'flips, ' if exp.data.augment.flip else ''}intensity augmentation, AdamW, with the "
            f"spec's patch {'×'.join(map(str, exp.data.patch_size))}, batch size and learning "
            f"rate; {info['iterations']} iterations × batch {info['batch_size']} in "
            f"{info['train_seconds'] / 60:.1f} min; gaussian `sliding_window_inference`; scored by the same "
            "`segcli evaluate`.",
            "",
            *table(["tool", "label", *METRIC_COLUMNS], align="ll" + "r" * 8),
        ]
        for label in ("1", "2"):
            lines.append(row("segcli", f"{label} ({names[label]})", *cells(ours, label)))
            lines.append(row("MONAI", f"{label} ({names[label]})", *cells(summary, label)))
        lines.append("")
    reports = REPO / "docs" / "reports"
    reports.mkdir(parents=True, exist_ok=True)
    shutil.copy(run_dir / "report.html", reports / "hippocampus.html")
    lines += [
        "## The report",
        "",
        f"`segcli evaluate ... --report` wrote the validation report: [docs/reports/hippocampus.html]"
        f"(reports/hippocampus.html) ({(reports / 'hippocampus.html').stat().st_size / 1e6:.1f} MB, "
        "one self-contained file: summary with bootstrap intervals, box plots, overlays of the "
        "percentile and worst cases, the pitfalls found, every case).",
        "",
    ]
    if monai is not None:
        shutil.copy(run_dir / "compare-monai.html", reports / "hippocampus-vs-monai.html")
        from segcli.report import load_run
        from segcli.report.stats import paired

        ours_run = load_run(csv_path, name="segcli")
        monai_run = load_run(monai_dir / "val_metrics.csv", name="MONAI")
        lines += [
            "`segcli report val_metrics.csv monai/val_metrics.csv --names segcli,MONAI` compares the "
            "two on the same validation cases: [docs/reports/hippocampus-vs-monai.html]"
            "(reports/hippocampus-vs-monai.html).  Paired by case (difference = MONAI − segcli; "
            "95% bootstrap interval; Wilcoxon signed-rank p):",
            "",
            *table(
                ["label", "metric", "segcli mean", "MONAI mean", "difference", "95% CI"]
                + ["Wilcoxon p", "MONAI wins / ties / losses", "verdict"],
                align="llrrrlrll",
            ),
        ]
        for label in ours_run.labels:
            for metric, better_high in (("dice", True), ("hd95", False), ("nsd", True)):
                p = paired(
                    ours_run.column(label, metric), monai_run.column(label, metric), better_high
                )
                verdict = p.verdict.replace("B ", "MONAI ")
                lines.append(
                    f"| {label} ({names[str(label)]}) | {metric} | {p.mean_a:.3f} | {p.mean_b:.3f} | "
                    f"{p.mean_diff:+.3f} | {p.ci_low:+.3f} … {p.ci_high:+.3f} | {p.p:.3g} | "
                    f"{p.wins} / {p.ties} / {p.losses} | {verdict} |"
                )
        lines.append("")
    lines += [
        "## The three worst validation cases",
        "",
        "Reference and prediction contours on the image (look at your results):",
        "",
    ]
    for i, name in enumerate(worst, 1):
        dice = ", ".join(f"{d:.3f}" for d in by_case[name])
        lines += [
            f"{i}. `{name}` (Dice per label: {dice})",
            "",
            f"   ![{name}](img/hippocampus_worst_{i}_{name}.png)",
            "",
        ]
    kept = marked_sections(DOC)  # sections other scripts write (bench/time_to_dice.py)
    write_doc(DOC, "\n".join(lines) + "\n" + (f"\n{kept}\n" if kept else ""))


if __name__ == "__main__":
    main()
