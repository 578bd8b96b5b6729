"""Time-to-Dice on MSD Task04 Hippocampus: segcli (fp32 and bf16) against a plain MONAI script.

    make time-to-dice          # or: .venv/bin/python bench/time_to_dice.py   (~35 min quiet)
    .venv/bin/python bench/time_to_dice.py --quick --no-write    # a smoke run (~5 min)
    .venv/bin/python bench/time_to_dice.py --rerun monai-0       # one run again, keep the rest

1. `segcli train experiments/hippocampus.yaml` twice, `train.precision` fp32 and bf16 (same
   seed, same split), each in its own process; every validation (mean foreground Dice over
   the validation cases, every ``train.val_every`` epochs) is timestamped from the start of
   the process's work (data loading included) by the loop's ``on_epoch_end`` hook.
2. bench/hippocampus_monai.py on the same split (split.json of the fp32 run) for the same
   10-minute budget, twice: as the tutorials write it (patch 40×56×40, flips on three axes)
   and with the spec's data choices (patch, batch size, learning rate, flips:
   ``hippocampus_monai.matching_args``), so that the second differs from segcli only in the
   tool.  Both validate at segcli's interval in iterations (``val_every`` ×
   ``iterations_per_epoch``) with the same Dice, timestamped the same way; validation time
   counts in MONAI's clock as in segcli's.
3. `segcli predict` of the fp32 run's best checkpoint on the validation images with
   `inference.precision` fp32 and bf16: argmax agreement per voxel.

Reported (docs/results.md, section ``time-to-dice``): wall clock to first reach mean validation
Dice 0.85 and 0.86, the Dice at the 10-minute mark (the last validation at or before it), the
best Dice; bf16 vs fp32 Dice; predict's bf16/fp32 agreement.  Targets (issue 18): segcli
reaches 0.85 and 0.86 in at most half of MONAI's time, its 10-minute Dice beats MONAI's; bf16
Dice within 0.005 of fp32; agreement ≥ 99.5 %.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from _harness import REPO, SEGCLI, doc_options, link_cases, machine, publish, row, run, table

SPEC = "experiments/hippocampus.yaml"
THRESHOLDS = (0.85, 0.86)
MONAI_RECIPE = "MONAI script, tutorial recipe (fp32)"
MONAI_MATCHED = "MONAI script, the spec's data choices (fp32)"
DOC = REPO / "docs" / "results.md"


#: nnU-Net's patch for this data set (the median crop shape, rounded up): the ablation's
ABLATION_PATCH = [40, 56, 40]


def segcli_runs(exp: Any, ablation: bool) -> dict[str, tuple[str, str, list[str]]]:
    """Run folder name → (table label, precision, spec overrides): the spec in fp32 and bf16,
    then (``ablation``) bf16 with each of the spec's two measured data choices undone."""
    runs = {"fp32": ("segcli fp32", "fp32", []), "bf16": ("segcli bf16", "bf16", [])}
    if ablation:
        flip = not exp.data.augment.flip
        patch = "×".join(map(str, ABLATION_PATCH))
        runs["bf16-flip"] = (
            f"ablation: segcli bf16, flips {'on' if flip else 'off'}",
            "bf16",
            [f"data.augment.flip={str(flip).lower()}"],
        )
        runs["bf16-patch"] = (
            f"ablation: segcli bf16, patch {patch}",
            "bf16",
            [f"data.patch_size={ABLATION_PATCH}".replace(" ", "")],
        )
    return runs


def segcli_child(name: str, out: Path, overrides: list[str]) -> None:
    """Train run ``name`` of :func:`segcli_runs` in this process; print the timestamped
    validations as JSON (last line)."""
    start = time.perf_counter()
    from segcli.config import load
    from segcli.engine.runtime import set_quiet
    from segcli.engine.train import fit

    set_quiet(True)
    _label, precision, extra = segcli_runs(load(REPO / SPEC, overrides), ablation=True)[name]
    exp = load(
        REPO / SPEC,
        [f"train.precision={precision}", f"output={out}", f"name={name}", *extra, *overrides],
    )
    records: list[dict[str, Any]] = []

    def on_epoch_end(row: dict[str, Any]) -> None:
        if not math.isnan(row["val_dice"]):
            records.append(
                {
                    "seconds": time.perf_counter() - start,
                    "epoch": int(row["epoch"]) + 1,
                    "val_dice": float(row["val_dice"]),
                }
            )

    result = fit(exp, device="cpu", on_epoch_end=on_epoch_end)
    summary = {
        "precision": result.precision,
        "validations": records,
        "train_seconds": time.perf_counter() - start,
        "iterations": exp.train.epochs * exp.train.iterations_per_epoch,
    }
    print(json.dumps(summary))


def first_reach(validations: list[dict[str, Any]], threshold: float) -> float | None:
    """Seconds at the first validation with Dice ≥ ``threshold`` (None: never)."""
    return next((v["seconds"] for v in validations if v["val_dice"] >= threshold), None)


def dice_at(validations: list[dict[str, Any]], seconds: float) -> float:
    """The last validation Dice at or before ``seconds`` (NaN: none yet)."""
    done = [v["val_dice"] for v in validations if v["seconds"] <= seconds]
    return done[-1] if done else math.nan


def agreement(a: Path, b: Path) -> float:
    """Voxel share (percent) where two folders of label maps agree, pooled over cases."""
    import numpy as np

    from segcli.io.images import read_image

    same = total = 0
    for path in sorted(a.glob("*.nii.gz")):
        x = np.asarray(read_image(path)[0])
        y = np.asarray(read_image(b / path.name)[0])
        same += int((x == y).sum())
        total += x.size
    return 100.0 * same / max(total, 1)


def monai_command(
    args: argparse.Namespace, exp: Any, monai_dir: Path, val_log: Path, extra: list[str]
) -> list[str]:
    """bench/hippocampus_monai.py on the fp32 run's split, for the budget, validating at
    segcli's interval (``exp``: the spec as segcli runs it), with ``extra`` options."""
    cmd = [
        sys.executable,
        "bench/hippocampus_monai.py",
        "--split",
        str(args.output / "fp32" / "split.json"),
        "--budget-seconds",
        f"{args.budget_seconds:.0f}",
        "--output",
        str(monai_dir),
        "--val-every",
        str(val_every(exp)),
        "--val-log",
        str(val_log),
        *extra,
    ]
    return cmd + (["--val-max-cases", "4"] if args.quick else [])


def val_every(exp: Any) -> int:
    """MONAI's validation interval in iterations: segcli's (val_every × iterations_per_epoch)."""
    return exp.train.val_every * exp.train.iterations_per_epoch


def quick_overrides(args: argparse.Namespace) -> list[str]:
    """The spec overrides of this run: the smoke-test schedule with --quick, then --set."""
    quick = ["train.epochs=2", "train.iterations_per_epoch=6", "train.val_every=1"]
    quick += ["train.val_max_cases=4"]
    return [*(quick if args.quick else []), *args.overrides]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny schedule (smoke test)")
    parser.add_argument("--budget-seconds", type=float, default=600.0)
    parser.add_argument("--output", type=Path, default=REPO / "runs" / "time-to-dice")
    parser.add_argument("--skip-monai", action="store_true")
    parser.add_argument(
        "--no-ablation",
        action="store_true",
        help="skip the two bf16 runs that undo the spec's data choices",
    )
    doc_options(parser, DOC)
    parser.add_argument(
        "--rerun",
        nargs="+",
        default=None,
        metavar="RUN",
        help="keep the finished runs in --output and train only these again (fp32, bf16, "
        "bf16-flip, bf16-patch, monai-0, monai-1), e.g. one that other work slowed down",
    )
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    overrides = quick_overrides(args)
    if args.child:
        segcli_child(args.child, args.output, overrides)
        return
    if args.quick:
        args.budget_seconds = min(args.budget_seconds, 60.0)

    from segcli.config import load

    exp = load(REPO / SPEC, overrides)  # the spec as every segcli run of this benchmark sees it
    root = (REPO / exp.data.root).resolve()
    if args.rerun is None:
        shutil.rmtree(args.output, ignore_errors=True)
    args.output.mkdir(parents=True, exist_ok=True)

    def again(run_name: str, result: Path) -> bool:
        return args.rerun is None or run_name in args.rerun or not result.is_file()

    results: dict[str, dict[str, Any]] = {}
    for name in segcli_runs(exp, not args.no_ablation):
        result = args.output / f"segcli-{name}.json"
        if again(name, result):
            cmd = [sys.executable, __file__, "--child", name, "--output", str(args.output)]
            cmd += [part for o in overrides for part in ("--set", o)]
            out = run(cmd, log=args.output / f"segcli-{name}.log").stdout
            result.write_text(out.strip().splitlines()[-1])
        results[name] = json.loads(result.read_text())
        print(name, results[name], file=sys.stderr)

    split = json.loads((args.output / "fp32" / "split.json").read_text())
    # MONAI twice: the tutorials' recipe (patch 40×56×40, flips), and with the spec's data
    # choices (patch, batch size, learning rate, flips) so that only the tool differs
    from hippocampus_monai import matching_args

    monai: dict[str, dict[str, Any]] = {}
    variants = {} if args.skip_monai else {MONAI_RECIPE: [], MONAI_MATCHED: matching_args(exp)}
    for key, (name, extra) in enumerate(variants.items()):
        monai_dir = args.output / f"monai-{key}"
        val_log = args.output / f"monai-{key}-validations.jsonl"
        if again(f"monai-{key}", monai_dir / "summary.json"):
            shutil.rmtree(monai_dir, ignore_errors=True)
            val_log.unlink(missing_ok=True)
            cmd = monai_command(args, exp, monai_dir, val_log, extra)
            run(cmd, log=args.output / f"monai-{key}.log")
        summary = json.loads((monai_dir / "summary.json").read_text())
        validations = [json.loads(line) for line in val_log.read_text().splitlines() if line]
        monai[name] = {**summary, "validations": validations}

    # predict's agreement: the fp32 run's checkpoint, inference in fp32 and in bf16
    val_names = split["val"][:4] if args.quick else split["val"]
    images = args.output / "val" / "images"
    link_cases(root, val_names, images)
    preds = {}
    for precision in ("fp32", "bf16"):
        preds[precision] = args.output / f"pred-{precision}"
        cmd = [*SEGCLI, "predict", SPEC, "-i", str(images)]
        cmd += ["-o", str(preds[precision]), "--overwrite", "--device", "cpu"]
        for o in (f"output={args.output}", "name=fp32", f"inference.precision={precision}"):
            cmd += ["--set", o]
        run(cmd, log=args.output / f"predict-{precision}.log")
    agree = agreement(preds["bf16"], preds["fp32"])

    body = report(args, exp, results, monai, agree, len(split["train"]), len(val_names))
    publish(args, "time-to-dice", body)


def report(
    args: argparse.Namespace,
    exp: Any,
    results: dict[str, dict[str, Any]],
    monai: dict[str, dict[str, Any]],
    agree: float,
    n_train: int,
    n_val: int,
) -> str:
    from hippocampus_monai import matching_args

    budget = args.budget_seconds
    fmt = lambda s: "not reached" if s is None else f"{s / 60:.1f} min"  # noqa: E731
    labels = segcli_runs(exp, ablation=True)
    runs = [(labels[k][0], results[k]["validations"]) for k in ("fp32", "bf16")]
    runs += [(name, record["validations"]) for name, record in monai.items()]
    runs += [(labels[k][0], r["validations"]) for k, r in results.items() if k.startswith("bf16-")]
    lines = [
        "## Time to Dice: segcli against a plain MONAI script",
        "",
        f"Written by `make time-to-dice` (`.venv/bin/python bench/time_to_dice.py"
        f"{' --quick' if args.quick else ''}`), {time.strftime('%Y-%m-%d')}.  ",
        f"Machine: {machine()}.",
        "",
        f"Same split ({n_train} training / {n_val} validation cases, the fp32 run's split.json), "
        f"one run each.  segcli: `{SPEC}` (validation every {exp.train.val_every} "
        "epochs) with `train.precision` fp32 and bf16.  MONAI: bench/hippocampus_monai.py for "
        f"{budget / 60:g} min, validating every {val_every(exp)} iterations (the same interval "
        "in samples), twice: the tutorial recipe (MONAI's residual UNet, patch 40×56×40, flips "
        "on three axes) and the same script given the spec's data choices (`"
        + " ".join(matching_args(exp))
        + "`), where only the tool differs.  "
        "Clock: from the start "
        "of each process's work (data loading and validation included) to the end of the "
        "validation; Dice: mean over labels 1 and 2 and over the validation cases "
        "(`segcli.metrics`).  The ablation rows train the spec in bf16 with one of its two "
        "data choices undone (flips; nnU-Net's median-shape patch): what each choice buys.",
        "",
        *table(
            ["run", *(f"first Dice ≥ {t}" for t in THRESHOLDS), f"Dice at {budget / 60:.0f} min"]
            + ["best Dice", "validations"],
            align="lrrrrr",
        ),
    ]
    for name, vals in runs:
        best = max((v["val_dice"] for v in vals), default=math.nan)
        reach = (fmt(first_reach(vals, t)) for t in THRESHOLDS)
        lines.append(row(name, *reach, f"{dice_at(vals, budget):.4f}", f"{best:.4f}", len(vals)))
    lines += ["", "Every validation (minutes: Dice):", ""]
    for name, vals in runs:
        points = ", ".join(f"{v['seconds'] / 60:.1f}: {v['val_dice']:.3f}" for v in vals)
        lines.append(f"- {name}: {points}")
    fp32 = max(v["val_dice"] for v in results["fp32"]["validations"])
    bf16 = max(v["val_dice"] for v in results["bf16"]["validations"])
    ok = lambda c: "met" if c else "**NOT met**"  # noqa: E731
    lines += [
        "",
        "Targets (issue 18):",
        "",
    ]
    ours = runs[1][1] if results["bf16"]["precision"] == "bf16" else runs[0][1]
    for name, record in monai.items():
        theirs = record["validations"]
        for t in THRESHOLDS:
            a, b = first_reach(ours, t), first_reach(theirs, t)
            met = a is not None and (b is None or a <= 0.5 * b)
            lines.append(
                f"- Dice {t}: segcli bf16 in {fmt(a)} vs {name} {fmt(b)}, at most half — {ok(met)}"
            )
        d_ours, d_monai = dice_at(ours, budget), dice_at(theirs, budget)
        lines.append(
            f"- Dice at {budget / 60:.0f} min: segcli bf16 {d_ours:.4f} vs {name} "
            f"{d_monai:.4f} — {ok(d_ours > d_monai)}"
        )
    lines += [
        f"- bf16 training: best validation Dice {bf16:.4f} vs fp32 {fp32:.4f} "
        f"(difference {bf16 - fp32:+.4f}), within 0.005 — {ok(abs(bf16 - fp32) <= 0.005)}",
        f"- `segcli predict` of the fp32 checkpoint, `inference.precision` bf16 vs fp32: "
        f"argmax agreement {agree:.3f} % over the {n_val} validation cases, ≥ 99.5 % — "
        f"{ok(agree >= 99.5)}",
    ]
    if args.quick:
        lines += ["", "**Quick setting (a few iterations, 4 validation cases): a smoke test.**"]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
