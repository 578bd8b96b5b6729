"""``segcli plan`` on real and made datasets; writes docs/plan.md.

    make plan-docs          # .venv/bin/python bench/plan.py docs
    make plan-hippocampus   # .venv/bin/python bench/plan.py hippocampus [--budget-minutes 10]

``docs``: the plans (decision tables and checks) for the shared Hippocampus data beside
nnU-Net v2's documented 3d_fullres plan, the shared CT example, a 2D toy dataset
(``segcli synth --dims 2``), Hippocampus resampled to 4 × 0.8 × 0.8 mm (anisotropic), and a
two-channel dataset that is planned, trained briefly and predicted.  No timing: these plans
are made without --budget-minutes, so they do not depend on the machine.

``hippocampus``: ``segcli plan --budget-minutes N`` (default 10), then ``segcli train`` on the
written spec as it is, ``segcli predict`` + ``segcli evaluate`` on the validation split; the
same for ``experiments/hippocampus.yaml`` (its epochs scaled by N/10 when N < 10, so both get
the same wall clock); the measured wall clocks and Dice go into the section between the
``plan-hippocampus`` markers of docs/plan.md (date, machine, command).  Both specs use
``val_fraction 0.2`` with seed 0, so the validation split is the same (checked).
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path

from _harness import (
    REPO,
    SEGCLI,
    block_body,
    link_cases,
    machine,
    replace_block,
    row,
    run,
    shared_data,
    table,
    write_doc,
)

DOC = REPO / "docs" / "plan.md"
WORK = REPO / "runs" / "plan-bench"
HIPPO = shared_data("msd_task04_hippocampus")
CT = shared_data("totalsegmentator_example_ct")
START, END = "<!-- plan-hippocampus -->", "<!-- /plan-hippocampus -->"

#: nnU-Net v2's documented 3d_fullres plan for MSD Task04 (Isensee et al. 2021, nnU-Net's
#: plans file for Dataset004_Hippocampus): what the rules give on the 260 MSD cases
NNUNET_TASK04 = {
    "target spacing": "1×1×1 mm",
    "median shape": "36×50×35",
    "patch size": "40×56×40",
    "pooling": "3 per axis (2×2×2 ×3)",
    "kernels": "3×3×3 everywhere",
    "filters": "32→64→128→256",
    "batch size": "9",
    "normalization": "zscore",
    "loss": "dice_ce, deep supervision",
    "sampling": "foreground 33 %",
    "augmentation": "mirroring on 3 axes, rotation, scaling, noise, blur, brightness, contrast, "
    "low resolution, gamma",
    "schedule": "1000 epochs × 250 iterations, SGD 0.01",
}


def settled_load(max_wait: float = 90.0) -> float:
    """The 1-minute load average once the previous job's tail has decayed (at most ``max_wait``
    seconds): the budget run measures this machine, so it starts on a quiet one if it can."""
    cores = os.cpu_count() or 1
    deadline = time.monotonic() + max_wait
    while os.getloadavg()[0] > cores * 0.75 and time.monotonic() < deadline:
        time.sleep(5)
    return os.getloadavg()[0]


def load_note(start: float, budget: bool = False) -> str:
    """Whether other work shared the CPUs while this ran (1-minute load averages)."""
    # only the reading taken before the work began tells about other jobs: at the end the
    # 1-minute average is this script's own training (2 threads and the loader workers)
    end = os.getloadavg()[0]
    cores = os.cpu_count() or 1
    if start <= cores * 0.75:
        return (
            f"The machine was otherwise idle when the run began (load average {start:.1f}; "
            f"{end:.1f} at the end, this run's own work, on {cores} cores)."
        )
    return (
        f"**Possibly contended run**: the 1-minute load average was {start:.1f} on {cores} cores "
        f"when the run began ({end:.1f} at the end), so times here may be slower than on a "
        "quiet machine"
        + (" and the budget-fitted plan is smaller than it would be there." if budget else ".")
    )


def sh(cmd: list[str], log: Path | None = None) -> float:
    """Run ``cmd`` in the repository; its wall seconds."""
    return run(cmd, log=log).seconds


def rel(path: Path) -> str:
    """``path`` relative to the repository (the commands run there), symlinks kept."""
    return os.path.relpath(path.absolute(), REPO)


def plan_json(root: Path, spec: Path, *extra: str) -> dict:
    return json.loads(run([*SEGCLI, "plan", rel(root), "-o", rel(spec), "--json", *extra]).stdout)


def section(title: str, text: str, plan: dict, *before: str, checks: bool = True) -> list[str]:
    """A dataset's section: title, what was run, ``before`` (paragraphs), its decisions and
    (``checks``) its checks."""
    out = [f"## {title}", "", text, ""]
    for paragraph in before:
        out += [paragraph, ""]
    out += [decision_table(plan), ""]
    return out + ([checks_list(plan), ""] if checks else [])


def decision_table(plan: dict) -> str:
    rows = [(d["name"], d["value"], d["rule"].replace("|", "/")) for d in plan["decisions"]]
    return "\n".join(table(["decision", "value", "rule and numbers"], rows))


def checks_list(plan: dict) -> str:
    return "\n".join(f"- **{c['level']}** {c['name']}: {c['message']}" for c in plan["checks"])


def value(plan: dict, name: str) -> str:
    return next(d["value"] for d in plan["decisions"] if d["name"] == name)


# --------------------------------------------------------------------------- made datasets


def make_anisotropic(dest: Path, cases: int = 40) -> Path:
    """Hippocampus resampled to 4 mm slices (z) and 0.8 mm in plane (linear / nearest)."""
    import SimpleITK as sitk

    if (dest / "dataset.json").is_file():
        return dest
    shutil.rmtree(dest, ignore_errors=True)
    for sub in ("imagesTr", "labelsTr"):
        (dest / sub).mkdir(parents=True)
    names = sorted(p.name for p in (HIPPO / "labelsTr").glob("*.nii.gz"))[:cases]
    spacing_xyz = (0.8, 0.8, 4.0)  # SimpleITK order: x, y, z
    for name in names:
        for sub, interp in (("imagesTr", sitk.sitkLinear), ("labelsTr", sitk.sitkNearestNeighbor)):
            image = sitk.ReadImage(str(HIPPO / sub / name))
            size = [
                max(1, round(n * s / t))
                for n, s, t in zip(image.GetSize(), image.GetSpacing(), spacing_xyz, strict=True)
            ]
            out = sitk.Resample(image, size, sitk.Transform(), interp, image.GetOrigin(),
                                spacing_xyz, image.GetDirection(), 0, image.GetPixelID())  # fmt: skip
            sitk.WriteImage(out, str(dest / sub / name))
    meta = json.loads((HIPPO / "dataset.json").read_text())
    meta.pop("training", None)
    (dest / "dataset.json").write_text(json.dumps(meta, indent=1))
    return dest


def make_two_channel(dest: Path) -> Path:
    """toy3d with a second channel: the same scene under independent noise."""
    import numpy as np

    from segcli.data.synth import generate
    from segcli.io.images import make_geometry, write_image

    if (dest / "dataset.json").is_file():
        return dest
    shutil.rmtree(dest, ignore_errors=True)
    for sub in ("imagesTr", "labelsTr"):
        (dest / sub).mkdir(parents=True)
    rng = np.random.default_rng(1)
    for case in generate(24, dims=3, size=24, lesion=3, ring_distance=4, seed=0):
        geometry = make_geometry(case.image.shape, (1.0, 1.0, 1.0))
        second = case.image + rng.normal(0, 0.2, case.image.shape).astype(np.float32)
        write_image(dest / "imagesTr" / f"{case.name}_0000.nii.gz", case.image, geometry)
        write_image(dest / "imagesTr" / f"{case.name}_0001.nii.gz", second, geometry)
        write_image(dest / "labelsTr" / f"{case.name}.nii.gz", case.label, geometry)
    meta = {"name": "toy3d-two-channel", "channel_names": {"0": "T1", "1": "T2"},
            "labels": {"background": 0, "malign": 1}}  # fmt: skip
    (dest / "dataset.json").write_text(json.dumps(meta, indent=1))
    return dest


# --------------------------------------------------------------------------- docs


def hippocampus_vs_nnunet(plan: dict) -> str:
    ours = {d["name"]: d["value"] for d in plan["decisions"]}
    augment = plan["spec"]["data"]["augment"]
    flips = augment.get("flip", True)
    passes = next(
        d["numbers"]["passes_per_case"] for d in plan["decisions"] if d["name"] == "augmentation"
    )
    why = {
        "target spacing": "same rule (median; no anisotropy)",
        "median shape": "same rule; segcli's 208 shared cases vs MSD's 260",
        "patch size": "same rule: median shape rounded up to a multiple of 2³"
        if ours["patch size"] == NNUNET_TASK04["patch size"]
        else "on a CPU the median shape goes to the nearest multiple of 2³, not the next one "
        "(the step time grows with the padded voxels; `--device cuda` rounds up as nnU-Net "
        "does)",
        "pooling": "same rule (stop at a 4-voxel bottleneck edge)",
        "kernels": "same rule (isotropic: 3 everywhere)",
        "filters": "nnU-Net sizes for a GPU (32 → 320); without a budget on a CPU segcli starts "
        "at 8 (see the rule); with --budget-minutes it is the widest of 32/16/8 that gets 2,000 "
        "steps",
        "batch size": "nnU-Net's rule gives 9 on 260 cases (5 % dataset cap); on a CPU time, not "
        "memory, limits and segcli takes nnU-Net's minimum 2",
        "normalization": "same rule (not CT → z-score)",
        "loss": "same",
        "sampling": "same foreground share",
        "augmentation": (
            "nnU-Net's transforms (`preset: nnunet`)"
            if "preset" in augment
            else f"the schedule draws {passes:.0f} patches per case, too few to learn them by "
            "heart: the light set (intensity) instead of nnU-Net's transforms"
        )
        + (
            "; segcli mirrors too"
            if flips
            else "; no flips: the labels name a side (Anterior, Posterior), and mirroring costs "
            "Dice on this data (the flips ablation of docs/results.md, time to Dice)"
        ),
        "schedule": "nnU-Net trains for days on a GPU; segcli fits the schedule to a budget "
        "(AdamW 3e-3 for short schedules)",
    }
    rows = table(["decision", "nnU-Net v2 3d_fullres (Task04)", "segcli plan", "same rule?"])
    for name, theirs in NNUNET_TASK04.items():
        mine = ours.get(name, "")
        if name == "pooling":
            mine = mine.split(":")[0] + ": " + next(
                d["rule"].split("poolings per axis ")[-1] for d in plan["decisions"]
                if d["name"] == "pooling"
            ) + " per axis"  # fmt: skip
        if name == "loss":
            mine = "dice_ce, deep supervision"
        if name == "schedule":
            mine = ours["schedule"] + ", " + ours["optimizer"]
        rows.append(row(name, theirs, mine, why[name]))
    return "\n".join(rows)


def docs() -> None:
    WORK.mkdir(parents=True, exist_ok=True)
    load_start = os.getloadavg()[0]
    sections: list[str] = []
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")

    hippo = plan_json(HIPPO, WORK / "hippocampus.yaml", "--device", "cpu")
    sections += section(
        "MSD Task04 Hippocampus beside nnU-Net v2",
        f"`segcli plan {rel(HIPPO)} -o {rel(WORK / 'hippocampus.yaml')} --device cpu` (no budget:"
        " the rules alone).  nnU-Net v2's documented 3d_fullres plan for the same task: spacing "
        "1×1×1, median shape 36×50×35, patch 40×56×40, 3 poolings per axis.",
        hippo,
        hippocampus_vs_nnunet(hippo),
    )

    ct = plan_json(CT, WORK / "ct.yaml", "--device", "cpu")
    sections += section(
        "The shared CT example (TotalSegmentator, one case, 41 sparse labels)",
        f"`segcli plan {rel(CT)} -o {rel(WORK / 'ct.yaml')} --device cpu`.  No dataset.json: the "
        "channel is recognised as CT from its integer intensities down to about −1000 (HU), so "
        "ct_auto; sparse label ids give 118 outputs with evaluation.labels listing the 41 used; "
        "small structures add the lesion-wise metrics.",
        ct,
    )

    toy2d = WORK / "toy2d"
    if not (toy2d / "dataset.json").is_file():
        sh([*SEGCLI, "synth", rel(toy2d), "--dims", "2", "--cases", "200", "--seed", "0"])
    p2 = plan_json(toy2d, WORK / "toy2d.yaml", "--device", "cpu")
    sections += section(
        "A 2D dataset (`segcli synth --dims 2`)",
        f"`segcli plan {rel(toy2d)} -o {rel(WORK / 'toy2d.yaml')} --device cpu`: the images are 2D,"
        " so the plan is 2D; the 3×3 lesions make it a detection problem (lesion metrics).",
        p2,
    )

    aniso = make_anisotropic(WORK / "hippocampus-aniso")
    pa = plan_json(aniso, WORK / "aniso.yaml", "--device", "cpu")
    sections += section(
        "Anisotropic: Hippocampus resampled to 4 mm slices, 0.8 mm in plane",
        f"40 Hippocampus cases resampled with SimpleITK to spacing 4×0.8×0.8 mm (z, y, x) "
        f"(`bench/plan.py`), then `segcli plan {rel(aniso)} -o {rel(WORK / 'aniso.yaml')} "
        "--device cpu`.  The plan keeps 4 mm, pools z fewer times than y and x (not before their "
        "spacing has come within 2× of z's) and starts with 1-wide kernels along z: "
        f"**pooling {value(pa, 'pooling')}**, **kernels {value(pa, 'kernels')}**.",
        pa,
    )

    two = make_two_channel(WORK / "toy3d-2ch")
    spec = WORK / "two-channel.yaml"
    p3 = plan_json(two, spec, "--device", "cpu", "--name", "plan-two-channel")
    runs = WORK / "runs"
    shutil.rmtree(runs / "plan-two-channel", ignore_errors=True)
    sets = ["--set", f"output={rel(runs)}", "--set", "train.epochs=3",
            "--set", "train.iterations_per_epoch=20"]  # fmt: skip
    train_s = sh([*SEGCLI, "-q", "train", rel(spec), *sets], WORK / "two-channel-train.log")
    pred = WORK / "two-channel-pred"
    shutil.rmtree(pred, ignore_errors=True)
    sh([*SEGCLI, "-q", "predict", rel(spec), *sets, "-i", rel(two / "imagesTr"), "-o", rel(pred)])
    n_pred = len(list(pred.glob("*.nii.gz")))
    sections += section(
        "Two channels: planned, trained, predicted",
        "toy3d (24 cases, 24³) with a second channel (the same scene under independent noise; "
        "dataset.json names them T1 and T2).  Planned, trained with the schedule shortened to "
        f"3 epochs × 20 iterations (`--set`; {train_s:.0f} s here), predicted: **{n_pred} label "
        f"maps written**, in_channels {p3['spec']['model']['in_channels']}.",
        p3,
        checks=False,
    )

    header = [
        "# segcli plan: nnU-Net's self-configuration, explained and checked",
        "",
        "Written by `make plan-docs` (`.venv/bin/python bench/plan.py docs`) on "
        f"{now}; machine: {machine()}.  The plans below are made without `--budget-minutes`, so "
        "they follow from the rules alone and do not depend on the machine's speed.  The "
        "Hippocampus budget run (`make plan-hippocampus`) writes its own section at the end.",
        "",
        load_note(load_start),
        "",
        "Every row is a decision `segcli plan` prints (and writes as a comment above the key in "
        "the spec), with the rule and the numbers that produced it.",
        "",
    ]
    kept = block_body(DOC.read_text(), START, END) if DOC.is_file() else None
    body = "\n".join(header + sections).rstrip() + "\n"
    body += f"\n{START}\n{'(run `make plan-hippocampus`)' if kept is None else kept}\n{END}"
    write_doc(DOC, body + "\n")


# --------------------------------------------------------------------------- hippocampus


def mean_dice(summary: Path) -> tuple[float, dict[str, float]]:
    per_label = {}
    with summary.open() as handle:
        for row in csv.DictReader(handle):
            if row["metric"] == "dice":
                per_label[row["label"]] = float(row["mean"])
    return sum(per_label.values()) / len(per_label), per_label


def train_and_score(spec: Path, name: str, sets: list[str], val: list[str]) -> dict:
    run_dir = WORK / "runs" / name
    shutil.rmtree(run_dir, ignore_errors=True)
    all_sets = ["--set", f"output={rel(WORK / 'runs')}", "--set", f"name={name}", *sets]
    seconds = sh([*SEGCLI, "-q", "train", rel(spec), *all_sets], WORK / f"{name}-train.log")
    split = json.loads((run_dir / "split.json").read_text())
    if sorted(split["val"]) != sorted(val):
        raise SystemExit(f"{name}: validation split differs from the planned spec's")
    images, labels = run_dir / "val" / "images", run_dir / "val" / "labels"
    link_cases(HIPPO, split["val"], images, labels)
    pred = run_dir / "pred_val"
    sh([*SEGCLI, "-q", "predict", rel(spec), *all_sets, "-i", rel(images), "-o", rel(pred)])
    csv_path = run_dir / "val_metrics.csv"
    sh([*SEGCLI, "-q", "evaluate", rel(spec), *all_sets, "--pred", rel(pred), "--ref",
        rel(labels), "-o", rel(csv_path), "--metrics", "dice"])  # fmt: skip
    mean, per_label = mean_dice(csv_path.with_name("val_metrics_summary.csv"))
    log = list(csv.DictReader((run_dir / "log.csv").open()))
    return {"seconds": seconds, "mean": mean, "per_label": per_label, "epochs": len(log),
            "split": split}  # fmt: skip


def hippocampus(budget: float) -> None:
    WORK.mkdir(parents=True, exist_ok=True)
    load_start = settled_load()
    spec = WORK / "hippocampus-planned.yaml"
    started = time.perf_counter()
    plan = plan_json(HIPPO, spec, "--budget-minutes", f"{budget:g}", "--name", "plan-hippocampus")
    plan_seconds = time.perf_counter() - started
    # the validation split of the planned spec = hippocampus.yaml's (both val_fraction 0.2, seed 0)
    from segcli.config import load
    from segcli.data.loaders import list_case_names, split_cases

    exp = load(spec)
    _, val = split_cases(list_case_names(exp.data, exp.seed), exp.data, exp.seed)
    hand = load(REPO / "experiments" / "hippocampus.yaml")
    _, hand_val = split_cases(list_case_names(hand.data, hand.seed), hand.data, hand.seed)
    if sorted(val) != sorted(hand_val):
        raise SystemExit("the planned spec's validation split differs from hippocampus.yaml's")
    planned = train_and_score(spec, "plan-hippocampus", [], val)
    scale = min(1.0, budget / 10.0)
    hand_epochs = max(1, round(hand.train.epochs * scale))
    hand_sets = [] if scale == 1.0 else [
        "--set", f"train.epochs={hand_epochs}",
        "--set", f"train.val_every={max(1, round(hand.train.val_every * scale))}",
    ]  # fmt: skip
    reference = train_and_score(REPO / "experiments" / "hippocampus.yaml", "plan-hippocampus-hand",
                                hand_sets, val)  # fmt: skip
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    budget_info = plan["budget"]
    model = plan["spec"]["model"]
    train = plan["spec"]["train"]
    lines = [
        "## Hippocampus: a planned spec beside the hand-tuned one",
        "",
        f"Written by `make plan-hippocampus` (`.venv/bin/python bench/plan.py hippocampus "
        f"--budget-minutes {budget:g}`) on {now}; machine: {machine()}.",
        "",
        load_note(load_start, budget=True),
        "",
        f"1. `segcli plan {rel(HIPPO)} -o {rel(spec)} --budget-minutes {budget:g}` "
        f"({plan_seconds:.0f} s, fingerprint and step timing included): "
        f"{model['filters']} filters, depth {model['depth']}, patch "
        f"{'×'.join(map(str, plan['spec']['data']['patch_size']))}, batch "
        f"{train['batch_size']}, {train['epochs']} epochs × {train['iterations_per_epoch']} "
        f"iterations; predicted wall clock {budget_info['predicted_seconds'] / 60:.1f} min.",
        "2. `segcli train` on that spec as written, `segcli predict` + `segcli evaluate` on the "
        f"{len(val)} validation cases (the split of experiments/hippocampus.yaml: val_fraction "
        "0.2, seed 0 — checked equal).",
        "3. The same for `experiments/hippocampus.yaml`"
        + (f" with its schedule scaled to the budget ({hand_epochs} epochs)" if scale < 1 else "")
        + ".",
        "",
        *table(
            ["spec", "training wall clock (min)", "budget (min)", "mean Dice", "Dice per label"],
            align="lrrrl",
        ),
    ]
    for name, r in (
        ("planned (segcli plan)", planned),
        ("experiments/hippocampus.yaml", reference),
    ):
        labels = ", ".join(f"{k}: {v:.3f}" for k, v in r["per_label"].items())
        lines.append(
            row(name, f"{r['seconds'] / 60:.2f}", f"{budget:g}", f"{r['mean']:.4f}", labels)
        )
    diff = planned["mean"] - reference["mean"]
    within = planned["seconds"] <= budget * 60
    lines += [
        "",
        f"Planned minus hand-tuned mean Dice: **{diff:+.4f}** (target: within 0.01); the planned "
        f"run {'kept' if within else 'did NOT keep'} the {budget:g}-minute budget "
        f"({planned['seconds'] / 60:.2f} min, process start and data loading included).",
    ]
    if budget < 10:
        lines += [
            "",
            f"A {budget:g}-minute budget is a quick check of the pipeline, not the 10-minute "
            "target: rerun `make plan-hippocampus` (10 minutes) on a quiet machine.",
        ]
    if math.isnan(diff):
        raise SystemExit("no Dice")
    old = DOC.read_text() if DOC.is_file() else "# segcli plan\n\n(run `make plan-docs`)\n"
    write_doc(DOC, replace_block(old, START, END, "\n".join(lines)).rstrip() + "\n")
    print(
        f"planned {planned['mean']:.4f} in {planned['seconds']:.0f} s; "
        f"hand-tuned {reference['mean']:.4f} in {reference['seconds']:.0f} s",
        file=sys.stderr,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    sub.add_parser("docs", help="plans of five datasets → docs/plan.md")
    h = sub.add_parser("hippocampus", help="plan, train, evaluate vs experiments/hippocampus.yaml")
    h.add_argument("--budget-minutes", type=float,
                   default=float(os.environ.get("PLAN_BUDGET_MINUTES", "10")))  # fmt: skip
    args = parser.parse_args()
    if args.what == "docs":
        docs()
    else:
        hippocampus(args.budget_minutes)


if __name__ == "__main__":
    main()
