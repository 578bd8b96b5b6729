"""The lecture's metric pitfalls and its multilabel question, measured (docs/lecture.md).

    .venv/bin/python bench/lecture_metrics.py [--work DIR]   # rewrites its block of docs/lecture.md
    make lecture                                             # the whole document

:func:`sections` returns the markdown of four sections and writes their figures to docs/img/:

* Same Dice, different shape: five predictions of one disk, all with Dice 0.6
   (``segcli.data.pitfalls.same_dice_predictions``), scored by ``segcli.metrics``.
* Holes: near-perfect distances for a prediction with a hole; the hole count sees it.
* Tiny lesions: Dice against lesion-wise F1 when many small lesions shift by a voxel.
* Multiclass vs multilabel: softmax over 3 classes against sigmoid regions
   ({organ: [1, 2], lesion: [2]}) on the nested toy (``segcli synth --nested``), trained
   with segcli's own train / predict code, scored per region and per label.

Every number in the prose below is computed here; nothing is typed in by hand.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from _harness import REPO, machine, row, table, timed_fit, write_block

IMG = REPO / "docs" / "img"
DOC = REPO / "docs" / "lecture.md"
START, END = "<!-- lecture:metrics -->", "<!-- /lecture:metrics -->"
DISTANCE_METRICS = ["dice", "iou", "hd", "hd95", "assd", "nsd", "cc_pred"]
REGIONS = {"organ": [1, 2], "lesion": [2]}


def _scores(pred: np.ndarray, ref: np.ndarray, metrics: list[str]) -> dict[str, float]:
    from segcli.metrics import evaluate_case

    return evaluate_case(pred.astype(np.uint8), ref.astype(np.uint8), (1.0, 1.0), [1], metrics)[1]


def _cells(scores: dict[str, float], **digits: int) -> list[str]:
    """``scores[name]`` with ``digits[name]`` decimals, in the order of ``digits``."""
    return [f"{scores[name]:.{d}f}" for name, d in digits.items()]


def _panels(
    path: Path, ref: np.ndarray, preds: dict[str, np.ndarray], titles: dict[str, str], zoom=None
) -> None:
    """One row of panels: the prediction in grey, the reference outline in red."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from segcli.metrics.surface import boundary

    names = list(preds)
    fig, axes = plt.subplots(1, len(names), figsize=(2.3 * len(names), 3.0), squeeze=False)
    outline = np.ma.masked_where(~boundary(ref), np.ones(ref.shape))
    for ax, name in zip(axes[0], names, strict=True):
        show = preds[name]
        ax.imshow(show, cmap="Greys", vmin=0, vmax=1.6, interpolation="nearest")
        ax.imshow(outline, cmap="autumn", vmin=0, vmax=1, interpolation="nearest", alpha=0.9)
        if zoom is not None:
            ax.set_xlim(zoom[1]), ax.set_ylim(zoom[0][::-1])
        ax.set_title(titles.get(name, name), fontsize=8)
        ax.set_xticks([]), ax.set_yticks([])
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------- 4. same Dice


def same_dice() -> list[str]:
    from segcli.data.pitfalls import count_holes, disk, same_dice_predictions

    ref = disk(64, 12)
    preds = same_dice_predictions(ref, dice=0.6)
    rows = {name: _scores(p, ref, DISTANCE_METRICS) for name, p in preds.items()}
    holes = {name: count_holes(p) for name, p in preds.items()}
    _panels(
        IMG / "lecture-same-dice.png",
        ref,
        {"reference": ref, **preds},
        {n: f"{n}\nDice {r['dice']:.3f}, HD95 {r['hd95']:.1f}" for n, r in rows.items()},
    )
    dice = [r["dice"] for r in rows.values()]
    hd95 = [r["hd95"] for r in rows.values()]
    nsd = [r["nsd"] for r in rows.values()]
    out = [
        '### "Dice scores do not take shape into account"',
        "",
        f"Five predictions of one reference disk (radius 12 voxels, {int(ref.sum())} voxels, "
        "1 mm spacing), each built by `segcli.data.pitfalls.same_dice_predictions` to have",
        "Dice 0.6 — hence IoU 0.6/1.4 ≈ 0.43, not the lecture's 0.4, since IoU = Dice/(2 − Dice).",
        "Scores are `segcli.metrics.evaluate_case` (the `segcli evaluate` columns; NSD at",
        "τ = 1 mm) and the hole count of `segcli.metrics.morphology.count_holes`.",
        "",
        "![five predictions with Dice 0.6](img/lecture-same-dice.png)",
        "",
        *table(
            ["prediction", "Dice", "IoU", "HD (mm)", "HD95 (mm)", "ASSD (mm)", "NSD", "components"]
            + ["holes"],
            align="l" + "r" * 8,
        ),
    ]
    for name, r in rows.items():
        scores = _cells(r, dice=3, iou=3, hd=1, hd95=1, assd=2, nsd=2)
        out.append(row(name, *scores, int(r["cc_pred"]), holes[name]))
    best = min(rows, key=lambda n: rows[n]["hd95"])
    worst = max(rows, key=lambda n: rows[n]["hd95"])
    holed = [n for n in rows if holes[n] > 0]
    split = [n for n in rows if rows[n]["cc_pred"] > 1]
    out += [
        "",
        f"Dice spans {min(dice):.3f}–{max(dice):.3f}, while HD95 spans {min(hd95):.1f}–"
        f"{max(hd95):.1f} mm ({best} to {worst}) and NSD {min(nsd):.2f}–{max(nsd):.2f}.",
        f"The concentric erosion and dilation score NSD {rows['shrunk']['nsd']:.2f} and "
        f"{rows['grown']['nsd']:.2f}: their outlines have the reference's shape but no",
        "boundary voxel within 1 mm of it.  "
        f"With a hole: {', '.join(holed) or 'none'}; with more than one component: "
        f"{', '.join(split) or 'none'}.",
        "Overlap alone cannot tell these apart: report a distance metric and a count beside it.",
        "",
    ]
    return out


# --------------------------------------------------------------------------- 5. holes


def holes() -> list[str]:
    from segcli.data.pitfalls import count_holes, disk, hole_predictions

    ref = disk(64, 12)
    preds = hole_predictions(ref)
    rows = {name: _scores(p, ref, [*DISTANCE_METRICS, "masd"]) for name, p in preds.items()}
    counts = {name: count_holes(p) for name, p in preds.items()}
    _panels(
        IMG / "lecture-holes.png",
        ref,
        preds,
        {n: f"{n}\nHD95 {r['hd95']:.1f}, holes {counts[n]}" for n, r in rows.items()},
        zoom=((8, 56), (8, 56)),
    )
    near = rows["hole near the outline"]
    out = [
        '### "Distance metrics don\'t see holes"',
        "",
        "A perfect prediction of the same disk, and copies with holes punched into it",
        "(`segcli.data.pitfalls.hole_predictions`).",
        "",
        "![predictions with holes](img/lecture-holes.png)",
        "",
        *table(
            ["prediction", "Dice", "HD (mm)", "HD95 (mm)", "ASSD (mm)", "NSD"]
            + ["components (`cc_pred`)", "holes"],
            align="l" + "r" * 7,
        ),
    ]
    for name, r in rows.items():
        scores = _cells(r, dice=3, hd=1, hd95=1, assd=2, nsd=3)
        out.append(row(name, *scores, int(r["cc_pred"]), counts[name]))
    out += [
        "",
        f"The hole near the outline leaves HD95 at {near['hd95']:.1f} mm and ASSD at "
        f"{near['assd']:.2f} mm, NSD at {near['nsd']:.3f} and Dice at {near['dice']:.3f}: by",
        "every overlap and percentile-distance score the prediction is as good as perfect, and",
        "the component count (`cc_pred`, face-connected foreground) is 1 as for the",
        "reference.  What sees it is the hole count: background components that do not reach",
        "the image border (`count_holes`; it is `cc` applied to the background, with",
        "8-connectivity).  segcli's boundary — like MONAI's — includes the rim of a hole, so",
        f"distances are not blind to holes: the maximum (HD {near['hd']:.1f} mm) notices the",
        "one voxel, and a central hole moves HD95 to "
        f"{rows['central hole']['hd95']:.1f} mm.  A hole close to the outline is what they",
        "miss.  segcli evaluate has no hole column; `--set inference.postprocess.fill_holes=true`",
        "removes them at predict time.",
        "",
    ]
    return out


# --------------------------------------------------------------------------- 6. tiny lesions


def tiny() -> list[str]:
    from segcli.data.pitfalls import disk, shift, tiny_lesions

    ref = tiny_lesions(size=128, count=30, lesion=3, seed=0)
    metrics = ["dice", "lesion_tp", "lesion_fn", "lesion_fp", "lesion_f1"]
    cases: dict[str, np.ndarray] = {
        "exact": ref,
        "all shifted 1 voxel": shift(ref, (0, 1)),
        "all shifted 1 voxel diagonally": shift(ref, (1, 1)),
        "all shifted 2 voxels": shift(ref, (0, 2)),
        "all shifted 3 voxels (= lesion size)": shift(ref, (0, 3)),
    }
    # half of the lesions exact, the other half missed
    from scipy import ndimage

    lab, n = ndimage.label(ref)
    cases["half exact, half missed"] = np.isin(lab, np.arange(1, n // 2 + 1))
    rows = {name: _scores(p, ref, metrics) for name, p in cases.items()}
    big = disk(128, 20)
    big_rows = {k: _scores(shift(big, (0, k)), big, ["dice"]) for k in (1, 2)}
    _panels(
        IMG / "lecture-tiny-lesions.png",
        ref,
        {k: cases[k] for k in ("exact", "all shifted 1 voxel", "half exact, half missed")},
        {n: f"{n}\nDice {rows[n]['dice']:.2f}, F1 {rows[n]['lesion_f1']:.2f}" for n in rows},
        zoom=((0, 64), (0, 64)),
    )
    one = rows["all shifted 1 voxel"]
    half = rows["half exact, half missed"]
    out = [
        '### "Dice for very small lesions → detection problem"',
        "",
        f"{n} lesions of 3×3 voxels in a 128×128 image (`segcli.data.pitfalls.tiny_lesions`),",
        "predicted exactly, shifted, or half missed.  Lesion-wise counts are `segcli evaluate`'s",
        "`lesion_*` columns: a reference component is found when any predicted voxel overlaps it.",
        "",
        "![tiny lesions (top-left quarter of the image)](img/lecture-tiny-lesions.png)",
        "",
        *table(
            ["prediction", "Dice", "lesions found", "missed", "false alarms", "lesion F1"],
            align="lrrrrr",
        ),
    ]
    for name, r in rows.items():
        counts = (int(r["lesion_tp"]), int(r["lesion_fn"]), int(r["lesion_fp"]))
        out.append(row(name, f"{r['dice']:.3f}", *counts, f"{r['lesion_f1']:.3f}"))
    same = abs(one["dice"] - half["dice"]) < 0.01
    out += [
        "",
        f"A one-voxel shift finds every lesion (F1 {one['lesion_f1']:.2f}) and scores Dice "
        f"{one['dice']:.3f}; missing half of the lesions outright scores Dice "
        f"{half['dice']:.3f} (F1 {half['lesion_f1']:.2f})"
        + (
            " — the same Dice for a perfect detector and for one that misses half the findings."
            if same
            else "."
        ),
        f"The same one-voxel shift costs a disk of radius 20 only {1 - big_rows[1]['dice']:.3f} "
        f"Dice (Dice {big_rows[1]['dice']:.3f}; {big_rows[2]['dice']:.3f} at two voxels).",
        "On small lesions, report lesion-wise detection (`lesion_f1`) beside Dice.",
        "",
    ]
    return out


# --------------------------------------------------------------------------- 7. multilabel


def _train_nested(work: Path, name: str, overrides: list[str]) -> dict[str, Any]:
    from segcli.config import load
    from segcli.engine.predict import predict_cases

    exp = load(
        REPO / "experiments" / "toy-nested.yaml",
        [
            f"data.root={work / 'nested'}",
            f"output={work / 'runs'}",
            f"name={name}",
            *overrides,
        ],
    )
    result, seconds = timed_fit(exp)
    pred_dir = work / "pred" / name
    predict_cases(
        exp,
        work / "nested-test" / "imagesTr",
        pred_dir,
        device="cpu",
        probabilities=True,
        overwrite=True,
    )
    return {"exp": exp, "seconds": seconds, "pred": pred_dir, "best": result.best_dice}


def _score_nested(run: dict[str, Any], test: Path) -> dict[str, float]:
    from scipy import ndimage

    from segcli.io.images import read_label
    from segcli.metrics import evaluate_case
    from segcli.metrics.regions import evaluate_regions

    organ, lesion, lesion_f1, tissue, decoys, sums = [], [], [], [], 0, []
    for ref_path in sorted((test / "labelsTr").glob("*.nii.gz")):
        case = ref_path.name.removesuffix(".nii.gz")
        ref, _ = read_label(ref_path)
        pred, _ = read_label(run["pred"] / ref_path.name)
        probs = np.load(run["pred"] / f"{case}_probabilities.npz")["probabilities"].astype(float)
        regions = evaluate_regions(pred, ref, (1.0, 1.0), REGIONS, ["dice", "lesion_f1"])
        organ.append(regions["organ"]["dice"])
        if (ref == 2).any():
            lesion.append(regions["lesion"]["dice"])
        lesion_f1.append(regions["lesion"]["lesion_f1"])
        tissue.append(evaluate_case(pred, ref, (1.0, 1.0), [1], ["dice"])[1]["dice"])
        # predicted lesion components outside the reference organ: the decoys, labelled
        comp, n = ndimage.label(pred == 2)
        decoys += sum(1 for k in range(1, n + 1) if not (ref[comp == k] > 0).any())
        if (ref == 2).any():
            sums.append(float(probs.sum(0)[ref == 2].mean()))
    return {
        "organ": float(np.mean(organ)),
        "lesion": float(np.mean(lesion)),
        "lesion_n": len(lesion),
        "lesion_f1": float(np.mean(lesion_f1)),
        "tissue": float(np.mean(tissue)),
        "decoys": decoys,
        "sum": float(np.mean(sums)),
    }


def _nested_figure(path: Path, test: Path, runs: dict[str, dict[str, Any]]) -> None:
    """Image, reference and both predictions of the first test cases with a lesion and a decoy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from segcli.io.images import read_image

    refs = sorted((test / "labelsTr").glob("*.nii.gz"))
    shown = []
    for ref_path in refs:
        ref, _ = read_image(ref_path)
        image, _ = read_image(test / "imagesTr" / ref_path.name.replace(".nii.gz", "_0000.nii.gz"))
        if (ref == 2).any() and (image > 0.8).sum() > (ref == 2).sum() + 5:  # lesion and decoy
            shown.append((ref_path, image, ref))
        if len(shown) == 3:
            break
    columns = ["image", "reference", *runs]
    fig, axes = plt.subplots(
        len(shown), len(columns), figsize=(2.2 * len(columns), 2.3 * len(shown))
    )
    axes = np.atleast_2d(axes)
    for line, (ref_path, image, ref) in enumerate(shown):
        maps = [image, ref] + [read_image(r["pred"] / ref_path.name)[0] for r in runs.values()]
        for col, (name, data) in enumerate(zip(columns, maps, strict=True)):
            ax = axes[line, col]
            if col == 0:
                ax.imshow(data, cmap="gray", interpolation="nearest")
            else:
                ax.imshow(data, cmap="viridis", vmin=0, vmax=2, interpolation="nearest")
            if line == 0:
                ax.set_title(name, fontsize=8)
            ax.set_xticks([]), ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def multilabel(work: Path) -> list[str]:
    from segcli.engine.synth import run_synth

    train, test = work / "nested", work / "nested-test"
    for root, cases, seed in ((train, 160, 0), (test, 60, 1)):
        if not (root / "dataset.json").is_file():
            run_synth(root, cases=cases, seed=seed, nested=True)
    runs = {
        "softmax over 3 classes": _train_nested(
            work, "nested-softmax", ["regions=null", "model.classes=3"]
        ),
        "sigmoid per region": _train_nested(work, "nested-regions", []),
    }
    rows = {name: _score_nested(run, test) for name, run in runs.items()}
    _nested_figure(IMG / "lecture-nested.png", test, runs)
    soft, sig = rows["softmax over 3 classes"], rows["sigmoid per region"]
    epochs = runs["sigmoid per region"]["exp"].train.epochs
    out = [
        '## Multiclass vs multilabel: "what would be the output function?"',
        "",
        "```",
        "segcli synth data/nested --nested --cases 160 --seed 0",
        "segcli train experiments/toy-nested.yaml                                   # sigmoid regions",
        "segcli train experiments/toy-nested.yaml --set regions=null --set model.classes=3  # softmax",
        "segcli predict experiments/toy-nested.yaml -i data/nested-test/imagesTr -o pred/nested",
        "segcli evaluate experiments/toy-nested.yaml --pred pred/nested --ref data/nested-test/labelsTr -o nested.csv",
        "```",
        "",
        "With `regions` in the spec, `segcli evaluate` scores each region (its `label` column",
        "holds the region's name) from the integer label maps, by the same definition as the",
        "training targets; the table below uses that definition on both models' label maps.",
        "",
        "The nested toy (`segcli synth --nested`): an organ (label 1) holding 0–2 lesions",
        "(label 2, brighter), and in half of the images a bright decoy outside the organ that is",
        "no lesion.  The spec key `regions: {organ: [1, 2], lesion: [2]}` makes one sigmoid",
        "channel per *region* — the organ channel's target is labels 1 and 2 together, the",
        "lesion's is label 2 — with the Dice+BCE loss on region targets, as nnU-Net's",
        "region-based training does; predict writes labels back by applying the regions in",
        "order (the lesion drawn over the organ).  The softmax model has 3 exclusive classes.",
        f"Both: the same dilated network, {epochs} epochs of 25 iterations, seed 0; scored on 60",
        "test cases (seed 1) from the label maps written by `segcli predict`.",
        "",
        "![nested toy: image, reference, both predictions (0 background, 1 organ, 2 lesion)]"
        "(img/lecture-nested.png)",
        "",
        *table(
            ["output function", "train time (s)", "organ region Dice"]
            + ["lesion region Dice (cases with lesions)", "lesion F1", "organ-tissue label Dice"]
            + ["decoys labelled lesion", "channel sum on lesion voxels"],
            align="l" + "r" * 7,
        ),
    ]
    for name, r in rows.items():
        out.append(
            f"| {name} | {runs[name]['seconds']:.0f} | {r['organ']:.3f} | {r['lesion']:.3f} "
            f"(n={r['lesion_n']}) | {r['lesion_f1']:.3f} | {r['tissue']:.3f} | {r['decoys']} | "
            f"{r['sum']:.2f} |"
        )
    out += [
        "",
        "The answer to the lecture's question is in the last column: a multilabel output uses",
        "a **sigmoid per label**, so a lesion voxel can be organ *and* lesion at once — its",
        f"channels sum to {sig['sum']:.2f} on lesion voxels, where softmax probabilities always",
        f"sum to {soft['sum']:.2f}.  Softmax must pick one class per voxel and gets the nested",
        "region only by adding classes back together; the region network predicts each",
        "region directly.",
        (
            "On this toy both learn the task in the same budget"
            if abs(soft["organ"] - sig["organ"]) < 0.02
            and abs(soft["lesion"] - sig["lesion"]) < 0.02
            else "On this toy the two differ"
        )
        + f" (organ Dice {soft['organ']:.3f} vs {sig['organ']:.3f}, lesion Dice "
        f"{soft['lesion']:.3f} vs {sig['lesion']:.3f}): nesting is what regions express, not",
        "a free gain in accuracy — use them when structures overlap or nest and the regions",
        "are what is evaluated (BraTS: whole tumour ⊃ tumour core ⊃ enhancing tumour).",
        "Train time is the wall clock on the machine named above.",
        "",
    ]
    return out


def sections(work: Path) -> list[str]:
    """Markdown lines of the four sections; figures go to docs/img/lecture-*.png."""
    started = time.perf_counter()
    load, cores = os.getloadavg()[0], os.cpu_count() or 1
    out = [
        "## Metric pitfalls",
        "",
        "Written by `bench/lecture_metrics.py` (part of `make lecture`; alone: "
        "`.venv/bin/python bench/lecture_metrics.py`),",
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {machine()}.",
        f"Load average when it started: {load:.1f} on {cores} cores"
        + (
            " — other jobs shared the machine, so the times below are contended, not clean."
            if load > 0.5 * cores
            else " (a quiet machine)."
        ),
        "",
    ]
    out += same_dice()
    out += holes()
    out += tiny()
    out += multilabel(work)
    out += [f"(This part ran in {time.perf_counter() - started:.0f} s.)", ""]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "lecture")
    parser.add_argument("--doc", type=Path, default=DOC, help="the document to update")
    args = parser.parse_args()
    from segcli.engine.runtime import set_quiet

    set_quiet(True)
    lines = sections(args.work)
    write_block(args.doc, START, END, "\n".join(lines))
    print(f"wrote its block of {args.doc}", file=sys.stderr)


if __name__ == "__main__":
    main()
