"""Reproduce the lecture's three experiments and write docs/lecture.md.

    make lecture          # or: .venv/bin/python bench/lecture.py [--quick]

1. Receptive field: toy-cnn (RF 7) against toy-dilated (RF 15, same parameter count).
2. Class imbalance: bce, weighted_ce, dice and dice_ce on a short, equal budget.
3. A 2D and a 3D U-Net on the same problem, with their receptive fields.

Every model trains on `segcli synth` data (seed 0) and is scored on a separate synth set
(seed 1) with the same predict / evaluate code the CLI runs.  Scores are split by the
ground truth the generator records in dataset.json: mean Dice over malign cases, and the
number of benign cases with any false-positive voxel.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
from _harness import REPO, machine, row, table, timed_fit, write_doc

DOC = REPO / "docs" / "lecture.md"


def synth(root: Path, dims: int, cases: int, seed: int) -> None:
    from segcli.engine.synth import run_synth

    if not (root / "dataset.json").is_file():
        run_synth(root, dims=dims, cases=cases, seed=seed)


def malign_flags(root: Path) -> dict[str, bool]:
    meta = json.loads((root / "dataset.json").read_text())
    return {
        Path(e["label"]).name.removesuffix(".nii.gz"): bool(e["malign"]) for e in meta["training"]
    }


def run(spec: str, overrides: list[str], test_root: Path, work: Path) -> dict[str, Any]:
    """Train, predict the test set, evaluate; return the figures of one table row."""
    from segcli.config import load
    from segcli.engine.evaluate import evaluate_folders
    from segcli.engine.predict import predict_cases
    from segcli.engine.receptive import receptive_field_report

    exp = load(REPO / "experiments" / spec, [f"output={work / 'runs'}", *overrides])
    result, train_seconds = timed_fit(exp)
    pred_dir = work / "pred" / exp.name
    predict_cases(exp, test_root / "imagesTr", pred_dir, device="cpu", overwrite=True)
    ev = evaluate_folders(
        pred_dir,
        test_root / "labelsTr",
        work / f"{exp.name}.csv",
        metrics=["dice", "hd95", "lesion_fp", "vol_pred"],
        labels=[1],
        workers=1,
    )
    flags = malign_flags(test_root)
    malign = [ev.values[c][1]["dice"] for c in ev.values if flags[c]]
    benign_fp = sum(1 for c in ev.values if not flags[c] and ev.values[c][1]["vol_pred"] > 0)
    rf = receptive_field_report(exp)
    last = result.rows[-1]
    return {
        "name": exp.name,
        "arch": exp.model.arch,
        "dims": exp.model.dims,
        "loss": exp.loss.name,
        "parameters": rf["parameters"],
        "rf": rf["receptive_field"],
        "train_seconds": train_seconds,
        "epochs": len(result.rows),
        "final_train_loss": last["train_loss"],
        "best_val_dice": result.best_dice,
        "malign_dice": float(np.mean(malign)),
        "malign_n": len(malign),
        "benign_fp": benign_fp,
        "benign_n": sum(1 for c in ev.values if not flags[c]),
        "curve": [(int(r["epoch"]) + 1, r["train_loss"], r["val_dice"]) for r in result.rows],
    }


def network_table(rows: list[dict[str, Any]], name: Any) -> list[str]:
    """The table of trained networks: ``name(row)`` names each."""
    columns = ["network", "receptive field", "parameters", "train time (s)", "best val Dice"]
    columns += ["malign Dice (test)", "benign FP (test)"]
    return table(
        columns,
        [
            [
                name(r),
                "×".join(str(v) for v in r["rf"]),
                f"{r['parameters']:,}",
                f"{r['train_seconds']:.0f}",
                f"{r['best_val_dice']:.3f}",
                f"{r['malign_dice']:.3f} (n={r['malign_n']})",
                f"{r['benign_fp']} of {r['benign_n']}",
            ]
            for r in rows
        ],
        align="llrrrrr",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "lecture")
    args = parser.parse_args()
    from segcli.engine.runtime import set_quiet

    set_quiet(True)
    work: Path = args.work
    train2d, test2d = work / "toy2d", work / "toy2d-test"
    train3d, test3d = work / "toy3d", work / "toy3d-test"
    synth(train2d, 2, 400, 0)
    synth(test2d, 2, 100, 1)
    synth(train3d, 3, 100, 0)
    synth(test3d, 3, 40, 1)

    def go(spec: str, root: Path, test: Path, *extra: str) -> dict[str, Any]:
        row = run(spec, [f"data.root={root}", *extra], test, work)
        print(json.dumps({k: v for k, v in row.items() if k != "curve"}), file=sys.stderr)
        return row

    rf_rows = [go("toy-cnn.yaml", train2d, test2d), go("toy-dilated.yaml", train2d, test2d)]
    loss_rows = [
        go(
            "toy-dilated.yaml",
            train2d,
            test2d,
            f"name=loss-{loss}",
            f"loss.name={loss}",
            "train.epochs=3",
            "data.augment.rotate90=false",
        )
        for loss in ("bce", "weighted_ce", "dice", "dice_ce")
    ]
    unet_rows = [go("toy-unet.yaml", train2d, test2d), go("toy3d-unet.yaml", train3d, test3d)]

    out = [
        "# The lecture's experiments, reproduced",
        "",
        "Written by `make lecture` (`.venv/bin/python bench/lecture.py`), which runs the commands",
        "below through segcli's own train / predict / evaluate code and fills in these tables.",
        f"Machine: {machine()}.",
        "",
        "Data: `segcli synth data/toy2d --cases 400 --seed 0` for training (20% held out for",
        "validation) and `segcli synth data/toy2d-test --cases 100 --seed 1` for testing; the 3D",
        "runs use `--dims 3` with 100 and 40 cases.  *Malign Dice* is the mean Dice over test",
        "cases with a ringed (malign) lesion; *benign FP* counts benign test cases in which any",
        "pixel was labelled malign.  A model that labels nothing scores malign Dice 0 and no",
        "false positives; mean Dice over all cases would then still be the benign share (~0.44),",
        "which is why the table splits them — always use a combination of metrics.",
        "",
        "## 1. Receptive field: the ring is 5 pixels from the lesion border",
        "",
        "```",
        "segcli train experiments/toy-cnn.yaml",
        "segcli train experiments/toy-dilated.yaml",
        "segcli predict experiments/toy-dilated.yaml -i data/toy2d-test/imagesTr -o pred/toy-dilated",
        "segcli evaluate experiments/toy-dilated.yaml --pred pred/toy-dilated --ref data/toy2d-test/labelsTr -o toy-dilated.csv",
        "```",
        "",
        *network_table(rf_rows, lambda r: r["name"]),
    ]
    cnn, dil = rf_rows
    same = "exactly the same" if cnn["parameters"] == dil["parameters"] else "NOT the same"
    out += [
        "",
        f"Both networks have {same} number of parameters ({dil['parameters']:,}).  With a 7×7 field",
        "the plain CNN cannot see the ring from any lesion pixel, so ringed and unringed lesions",
        "look identical to it; the dilated network's 15×15 field reaches the ring and separates",
        "them.",
        "",
        "## 2. Class imbalance: 9 of 1024 pixels are positive in half the images",
        "",
        "Each loss trains the dilated network for the same short budget (3 epochs × 40",
        "iterations of 32 images; `--set loss.name=<loss> --set train.epochs=3`).",
        "",
        *table(
            [
                "loss",
                "final train loss",
                "val Dice per epoch",
                "malign Dice (test)",
                "benign FP (test)",
            ],
            align="lrlrr",
        ),
    ]
    for r in loss_rows:
        curve = ", ".join("–" if math.isnan(d) else f"{d:.3f}" for _, _, d in r["curve"])
        benign = f"{r['benign_fp']} of {r['benign_n']}"
        out.append(
            row(r["loss"], f"{r['final_train_loss']:.4f}", curve, f"{r['malign_dice']:.3f}", benign)
        )
    out += [
        "",
        "The lecture's point shows in the first row: plain BCE is minimised by labelling",
        "(almost) nothing, so its loss is already small while the segmentation is poor.",
        "Class weights (inverse class frequency, `weights: auto`) and the Dice loss put the few",
        "foreground pixels on an equal footing and learn the task within the same budget.",
        "",
        "## 3. U-Nets in 2D and 3D",
        "",
        "```",
        "segcli train experiments/toy-unet.yaml",
        "segcli synth data/toy3d --dims 3 --cases 100 && segcli train experiments/toy3d-unet.yaml",
        "segcli receptive-field experiments/toy3d-unet.yaml",
        "```",
        "",
        *network_table(unet_rows, lambda r: f"{r['name']} ({r['dims']}D)"),
    ]
    verdicts = []
    for r in unet_rows:
        solved = r["malign_dice"] >= 0.95 and r["benign_fp"] == 0
        verdicts.append(
            f"{r['name']} ({r['dims']}D) {'solves' if solved else 'does not solve'} it on this "
            f"schedule (malign Dice {r['malign_dice']:.3f}, {r['benign_fp']} of {r['benign_n']} "
            "benign cases with a false alarm)"
        )
    out += [
        "",
        "Pooling gives the U-Nets fields far larger than the 13-voxel span of lesion plus ring, "
        "so what remains is the schedule: measured, " + "; ".join(verdicts) + ".  In 3D the "
        "ring is a cubic shell, a rarer signal per training iteration on the short CPU schedule.",
        "",
    ]
    from lecture_windows import END, START
    from lecture_windows import sections as window_sections

    out += [START, *window_sections(work, train2d), END, ""]  # issue 15, items 4-8 and 10
    import lecture_metrics  # metric pitfalls and multilabel regions (bench/lecture_metrics.py)

    out += [lecture_metrics.START, *lecture_metrics.sections(work), lecture_metrics.END, ""]
    write_doc(DOC, "\n".join(out))


if __name__ == "__main__":
    main()
