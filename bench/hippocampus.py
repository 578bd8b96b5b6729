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
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import machine, marked_sections  # noqa: E402
from hippocampus_monai import matching_args  # noqa: E402

SEGCLI = [sys.executable, "-m", "segcli"]
DOC = REPO / "docs" / "results.md"
IMG = REPO / "docs" / "img"


def sh(cmd: list[str], log: Path | None = None) -> float:
    print("$", " ".join(cmd), file=sys.stderr)
    start = time.perf_counter()
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if log is not None:
        log.write_text(out.stdout + out.stderr)
    if out.returncode != 0:
        raise SystemExit(f"command failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    return time.perf_counter() - start


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


def link_split(root: Path, names: list[str], dest: Path) -> tuple[Path, Path]:
    images, labels = dest / "images", dest / "labels"
    for folder in (images, labels):
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
    for name in names:
        os.symlink((root / "imagesTr" / f"{name}.nii.gz").resolve(), images / f"{name}.nii.gz")
        os.symlink((root / "labelsTr" / f"{name}.nii.gz").resolve(), labels / f"{name}.nii.gz")
    return images, labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--spec", default="experiments/hippocampus.yaml")
    parser.add_argument("--skip-monai", action="store_true")
    args = parser.parse_args()
    from segcli.config import load

    exp = load(REPO / args.spec)
    root = (REPO / exp.data.root).resolve()
    run = REPO / exp.output / exp.name
    shutil.rmtree(run, ignore_errors=True)
    metrics = "dice,iou,hd95,assd,masd,nsd"

    train_seconds = sh([*SEGCLI, "train", args.spec], run.parent / f"{exp.name}-train.log")
    split = json.loads((run / "split.json").read_text())
    val_images, val_labels = link_split(root, split["val"], run / "val")
    pred = run / "pred_val"
    sh([*SEGCLI, "predict", args.spec, "-i", str(val_images), "-o", str(pred), "--overwrite"])
    csv_path = run / "val_metrics.csv"
    overlays = run / "overlays"
    sh(
        [
            *SEGCLI,
            "evaluate",
            args.spec,
            "--pred",
            str(pred),
            "--ref",
            str(val_labels),
            "-o",
            str(csv_path),
            "--metrics",
            metrics,
            "--overlays",
            str(overlays),
            "--images",
            str(val_images),
            "--report",
            str(run / "report.html"),
        ],
        run / "evaluate.log",
    )
    test_pred = run / "pred_test"
    sh(
        [
            *SEGCLI,
            "predict",
            args.spec,
            "-i",
            str(root / "imagesTs"),
            "-o",
            str(test_pred),
            "--overwrite",
        ]
    )
    from segcli.io.images import read_geometry

    test_case = sorted((root / "imagesTs").glob("*.nii.gz"))[0]
    geometry_ok = (
        read_geometry(test_case).differences(read_geometry(test_pred / test_case.name)) == []
    )
    rf = json.loads(
        subprocess.run(
            [*SEGCLI, "receptive-field", args.spec, "--json"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    log = [r for r in csv.DictReader((run / "log.csv").open())]
    best = max((r for r in log if r["val_dice"]), key=lambda r: float(r["val_dice"]))

    monai = None
    if not args.skip_monai:
        monai_dir = REPO / exp.output / f"{exp.name}-monai"
        shutil.rmtree(monai_dir, ignore_errors=True)
        sh(
            [
                sys.executable,
                "bench/hippocampus_monai.py",
                "--split",
                str(run / "split.json"),
                "--budget-seconds",
                f"{train_seconds:.0f}",
                "--output",
                str(monai_dir),
                *matching_args(exp),
            ],
            monai_dir.parent / "monai.log",
        )
        monai_csv = monai_dir / "val_metrics.csv"
        sh(
            [
                *SEGCLI,
                "evaluate",
                args.spec,
                "--pred",
                str(monai_dir / "pred_val"),
                "--ref",
                str(val_labels),
                "-o",
                str(monai_csv),
                "--metrics",
                metrics,
            ]
        )
        sh(
            [
                *SEGCLI,
                "report",
                str(csv_path),
                str(monai_csv),
                "-o",
                str(run / "compare-monai.html"),
                "--names",
                "segcli,MONAI",
            ]
        )
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
        "| label | Dice mean | Dice median | HD95 mean (mm) | HD95 median | ASSD mean (mm) | ASSD median | NSD@1mm mean | NSD median |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def row(table: dict, label: str) -> str:
        cells = []
        for metric in ("dice", "hd95", "assd", "nsd"):
            s = table[(label, metric)]
            cells += [f"{s['mean']:.3f}", f"{s['median']:.3f}"]
        return f"| {label} ({names[label]}) | " + " | ".join(cells) + " |"

    lines += [row(ours, "1"), row(ours, "2"), ""]
    lines += [
        f"`segcli predict` on `imagesTs/` ({test_case.name}, unlabelled): label map written with the input's "
        f"exact geometry: **{'yes' if geometry_ok else 'NO'}**.",
        "",
    ]
    if monai is not None:
        table, info = monai
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
            "| tool | label | Dice mean | Dice median | HD95 mean (mm) | HD95 median | ASSD mean (mm) | ASSD median | NSD@1mm mean | NSD median |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for label in ("1", "2"):
            lines.append(row(ours, label).replace("| ", "| segcli | ", 1))
            lines.append(row(table, label).replace("| ", "| MONAI | ", 1))
        lines.append("")
    reports = REPO / "docs" / "reports"
    reports.mkdir(parents=True, exist_ok=True)
    shutil.copy(run / "report.html", reports / "hippocampus.html")
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
        shutil.copy(run / "compare-monai.html", reports / "hippocampus-vs-monai.html")
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
            "| label | metric | segcli mean | MONAI mean | difference | 95% CI | Wilcoxon p | MONAI wins / ties / losses | verdict |",
            "|---|---|---:|---:|---:|---|---:|---|---|",
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
    DOC.write_text("\n".join(lines) + "\n" + (f"\n{kept}\n" if kept else ""))
    print(f"wrote {DOC}", file=sys.stderr)


if __name__ == "__main__":
    main()
