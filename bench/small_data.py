"""Small data on MSD Task04 Hippocampus: where augmentation pays, and fine-tuning (issue 24).

    make small-data                      # or: .venv/bin/python bench/small_data.py  (~50 min)
    .venv/bin/python bench/small_data.py --quick --doc /tmp/small.md   # smoke run (~3 min)

1. The split: the 42 validation cases of ``experiments/hippocampus.yaml`` (runs/hippocampus/
   split.json when that run exists, else the spec's own seeded 80/20 split, which is the same)
   for every run; the other 166 cases are the training pool, shuffled with a fixed seed into
   half A and half B.  The small training sets are the first 10, 20 and 40 cases of half B
   (nested: 10 ⊂ 20 ⊂ 40).  Everything is written to ``OUT/split.json``.
2. Each size is trained four times with the same budget (epochs × iterations × batch, the
   spec's network and schedule): no augmentation, today's set (the spec's ``data.augment``),
   ``{preset: nnunet}`` and the preset without its mirroring (``flip: false``, as today's set;
   both left out, and said so, where this segcli has no preset).  Each run
   validates at half and at the full budget (the convergence check of the table) and its last
   checkpoint is scored: ``segcli predict`` and ``segcli evaluate --metrics dice`` on the 42
   validation cases.
3. Fine-tuning: a network trained on half A (83 cases, same budget, today's set) is fine-tuned
   (``train.init_from``, its default warm-up) on the 10 cases of half B, same budget, against
   the same 10 trained from scratch (the 10-case today's-set run of step 2).

Every comparison is paired by case (per-case Dice averaged over the two labels) with a 95%
bootstrap interval of the mean difference (segcli.report.stats.paired); the section's verdict
sentences are derived from those intervals.  Results of finished runs are kept in
``OUT/<run>/result.json`` and reused by a rerun with the same budget (``--fresh``: retrain).
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import math
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from _harness import (
    REPO,
    SEGCLI,
    doc_options,
    link_cases,
    machine,
    publish,
    row,
    shared_data,
    table,
)
from _harness import run as run_command

sys.path.insert(0, str(REPO))  # this tree's segcli (a frozen worktree's, when run from one)

SPEC = REPO / "experiments" / "hippocampus.yaml"
DOC = REPO / "docs" / "results.md"
SECTION = "small-data"
DATASET = "msd_task04_hippocampus"
#: the seed of the pool's halves (the validation split is the spec's own)
SPLIT_SEED = 24
SIZES = (10, 20, 40)
FINE_TUNE_CASES = 10
LABELS = {1: "anterior", 2: "posterior"}

#: augmentation setting → (table label, data.augment)
AUGMENT: dict[str, tuple[str, dict[str, Any] | None]] = {
    "none": ("none", {"flip": False, "rotate90": False, "intensity": False}),
    "today": ("today's set", None),  # None: the spec's own data.augment
    "preset": ("preset nnunet", {"preset": "nnunet"}),
    # the preset mirrors (flip: true, as nnU-Net does) where the spec leaves flips out for this
    # data: the preset without them tells the two apart
    "preset-noflip": ("preset nnunet without flips", {"preset": "nnunet", "flip": False}),
}


@dataclass(frozen=True)
class Budget:
    """The training budget every run gets (the spec's batch size)."""

    epochs: int
    iterations: int

    @property
    def val_every(self) -> int:
        return max(1, self.epochs // 2)  # validated at half and at the full budget


FULL = Budget(epochs=16, iterations=80)
QUICK = Budget(epochs=2, iterations=3)


# --------------------------------------------------------------------------- the split


def data_root(given: Path | None) -> Path:
    """The shared Hippocampus folder: ``--data``, else ``shared/data`` beside this checkout or
    beside the main checkout of this worktree."""
    if given is not None:
        return given.resolve()
    folder = shared_data(DATASET)
    if not folder.is_dir():
        raise SystemExit(f"no {DATASET} beside this checkout (or the main one); pass --data DIR")
    return folder


def make_split(root: Path, quick: bool) -> dict[str, Any]:
    """Validation cases, training pool, its halves and the nested small training sets."""
    from segcli.config import load
    from segcli.data.loaders import list_case_names, split_cases

    exp = load(SPEC, [f"data.root={root}"])
    names = list_case_names(exp.data, exp.seed)
    known = REPO / "runs" / "hippocampus" / "split.json"
    if known.is_file():
        stored = json.loads(known.read_text())
        pool, val, source = sorted(stored["train"]), sorted(stored["val"]), str(known)
    else:
        pool, val = split_cases(names, exp.data, exp.seed)
        source = (
            f"the seeded split of experiments/hippocampus.yaml, seed {exp.seed}, val_fraction "
            f"{exp.data.val_fraction}: the one make hippocampus writes to runs/hippocampus/split.json"
        )
    order = [str(n) for n in np.random.default_rng(SPLIT_SEED).permutation(pool)]
    half_a, half_b = sorted(order[: len(order) // 2]), order[len(order) // 2 :]
    if quick:  # a smoke run: a few validation cases, a small pretraining half
        val, half_a = val[:4], half_a[:12]
    return {
        "source": source,
        "val": val,
        "pool": pool,
        "half_a": half_a,
        "half_b": sorted(half_b),
        "subsets": {str(n): sorted(half_b[:n]) for n in SIZES},
    }


def link(root: Path, names: list[str], out: Path) -> tuple[Path, Path]:
    """Folders of symlinks to the images and labels of ``names`` (for predict / evaluate)."""
    images, labels = out / "images", out / "labels"
    link_cases(root, names, images, labels)
    return images, labels


def has_preset() -> bool:
    """Whether this segcli knows ``data.augment: {preset: nnunet}``."""
    from segcli.config.schema import AugmentSpec
    from segcli.errors import SpecError

    try:
        AugmentSpec(preset="nnunet")  # type: ignore[call-arg]
    except (ValueError, TypeError, SpecError):
        return False
    return True


# --------------------------------------------------------------------------- one run


def segcli(*args: str | Path, log: Path) -> float:
    """``python -m segcli ARGS`` in this tree (cwd and PYTHONPATH); wall seconds.  Output to
    ``log``; a failure ends the script with the log's tail."""
    done = run_command([*SEGCLI, *args], env={**os.environ, "PYTHONPATH": str(REPO)}, check=False)
    with log.open("a") as handle:
        handle.write(done.stdout + done.stderr)
    if done.returncode != 0:
        tail = "\n".join(log.read_text().splitlines()[-30:])
        raise SystemExit(f"failed ({done.returncode}): {' '.join(done.cmd)}\n{tail}")
    return done.seconds


def write_spec(
    path: Path,
    name: str,
    out: Path,
    root: Path,
    train: list[str],
    val: list[str],
    budget: Budget,
    augment: dict[str, Any] | None,
    init_from: Path | None = None,
) -> None:
    """The Hippocampus spec with this run's cases, budget and augmentation."""
    spec = yaml.safe_load(SPEC.read_text())
    spec["name"], spec["output"] = name, str(out)
    spec["data"].update(root=str(root), train_cases=train, val_cases=val)
    spec["data"].pop("val_fraction", None)
    if augment is not None:
        spec["data"]["augment"] = augment
    spec["train"].update(
        epochs=budget.epochs, iterations_per_epoch=budget.iterations, val_every=budget.val_every
    )
    if init_from is not None:
        spec["train"]["init_from"] = str(init_from)
    path.write_text(yaml.safe_dump(spec, sort_keys=False))


def score(run: Path, images: Path, labels: Path) -> dict[str, Any]:
    """Predict the validation cases with the run's last checkpoint and score them (Dice)."""
    log = run / "bench.log"
    pred = run / "pred_val"
    shutil.rmtree(pred, ignore_errors=True)
    segcli(
        "predict",
        run / "config.yaml",
        "-i",
        images,
        "-o",
        pred,
        "--checkpoint",
        run / "checkpoint_last.pt",
        "--device",
        "cpu",
        "--quiet",
        log=log,
    )
    metrics = run / "val_metrics.csv"
    segcli(
        "evaluate",
        "--pred",
        pred,
        "--ref",
        labels,
        "--output",
        metrics,
        "--metrics",
        "dice",
        "--labels",
        ",".join(map(str, LABELS)),
        "--quiet",
        log=log,
    )
    per_case: dict[str, dict[int, float]] = {}
    with metrics.open() as handle:
        for row in csv.DictReader(handle):
            per_case.setdefault(row["case"], {})[int(row["label"])] = float(row["dice"])
    cases = sorted(per_case)
    return {
        "cases": cases,
        "dice": {str(k): [per_case[c][k] for c in cases] for k in LABELS},
    }


def train_and_score(
    name: str,
    out: Path,
    root: Path,
    train: list[str],
    val: list[str],
    budget: Budget,
    augment: dict[str, Any] | None,
    images: Path,
    labels: Path,
    fresh: bool,
    init_from: Path | None = None,
) -> dict[str, Any]:
    """Train run ``name`` (unless a result with this budget is kept), score its last checkpoint."""
    run = out / name
    kept = run / "result.json"
    if kept.is_file() and not fresh:
        result = json.loads(kept.read_text())
        if result.get("budget") == [budget.epochs, budget.iterations]:
            print(f"{name}: kept result of an earlier run ({kept})", file=sys.stderr)
            return result
    shutil.rmtree(run, ignore_errors=True)
    run.mkdir(parents=True)
    spec = run.parent / f"{name}.yaml"
    write_spec(spec, name, out, root, train, val, budget, augment, init_from)
    seconds = segcli(
        "train", spec, "--device", "cpu", "--quiet", "--output", run, log=run / "bench.log"
    )
    with (run / "log.csv").open() as handle:
        validated = [float(r["val_dice"]) for r in csv.DictReader(handle) if r["val_dice"]]
    validated = [v for v in validated if not math.isnan(v)]
    result = {
        "budget": [budget.epochs, budget.iterations],
        "train_cases": len(train),
        "train_seconds": seconds,
        "val_dice_log": validated,
        **score(run, images, labels),
    }
    kept.write_text(json.dumps(result, indent=1) + "\n")
    return result


def pretrained_score(run: Path, images: Path, labels: Path) -> dict[str, Any]:
    """The pretrained network itself on the validation cases (kept beside its run)."""
    kept = run / "result_as_is.json"
    if not kept.is_file():
        kept.write_text(json.dumps(score(run, images, labels), indent=1) + "\n")
    return json.loads(kept.read_text())


# --------------------------------------------------------------------------- the section


def mirroring(settings: list[str]) -> str:
    """Which settings mirror patches, as the schema resolves them (``data.augment.flip``)."""
    from segcli.config.schema import AugmentSpec

    today = yaml.safe_load(SPEC.read_text())["data"]["augment"]
    flips = [
        f"{AUGMENT[s][0]} {'yes' if AugmentSpec(**(AUGMENT[s][1] or today)).flip else 'no'}"
        for s in settings
    ]
    return f"Mirroring (`flip`): {', '.join(flips)}."


def as_is_sentence(stats: Any) -> str:
    """What fine-tuning on the small set did to the pretrained network (``stats``: fine-tuned
    against the pretrained network as is)."""
    v = verdict(stats)
    what = {
        "pays": "raised",
        "hurts": "lowered",
        "no clear difference": "did not clearly change",
    }[v]
    return (
        f"Against the pretrained network as is, fine-tuning on them {what} the Dice on the "
        f"validation cases ({stats.mean_diff:+.3f}, 95% CI {stats.ci_low:+.3f} … "
        f"{stats.ci_high:+.3f})."
    )


def case_dice(result: dict[str, Any]) -> np.ndarray:
    """Per-case Dice averaged over the labels."""
    return np.mean([result["dice"][str(k)] for k in LABELS], axis=0)


def versus(base: dict[str, Any], other: dict[str, Any]) -> Any:
    """Paired comparison of ``other`` against ``base`` on the same cases."""
    from segcli.report.stats import paired

    assert base["cases"] == other["cases"]
    return paired(case_dice(base), case_dice(other), higher_is_better=True)


def verdict(stats: Any) -> str:
    """``pays`` / ``hurts`` when the 95% interval of the mean difference excludes 0."""
    if stats.ci_low > 0:
        return "pays"
    if stats.ci_high < 0:
        return "hurts"
    return "no clear difference"


def delta(stats: Any) -> str:
    return f"{stats.mean_diff:+.3f} ({stats.ci_low:+.3f} … {stats.ci_high:+.3f})"


def dice_cells(result: dict[str, Any]) -> list[str]:
    labels = [f"{np.mean(result['dice'][str(k)]):.3f}" for k in LABELS]
    return [*labels, f"**{case_dice(result).mean():.3f}**"]


def minutes(result: dict[str, Any]) -> str:
    return f"{result['train_seconds'] / 60:.1f}"


def convergence(result: dict[str, Any]) -> str:
    log = result.get("val_dice_log") or []
    return " → ".join(f"{v:.3f}" for v in log[-2:]) if log else "—"


#: a rise of the validation Dice from half to full budget above this: still improving
STILL_RISING = 0.005


def convergence_sentence(runs: dict[str, dict[str, Any]]) -> str:
    """Which runs were still improving at the end of the budget (run label → result)."""
    rises = {
        name: log[-1] - log[-2]
        for name, r in runs.items()
        if len(log := r.get("val_dice_log") or []) >= 2
    }
    if not rises:
        return ""
    rising = [f"{name} ({rise:+.3f})" for name, rise in rises.items() if rise > STILL_RISING]
    if not rising:
        return (
            f"Every run had converged within the budget: its validation Dice changed by at most "
            f"{STILL_RISING} between half and full budget."
        )
    return (
        f"Still improving at the end of the budget (validation Dice up by more than "
        f"{STILL_RISING} from half to full budget): {', '.join(rising)}; a longer schedule may "
        f"move {'it' if len(rising) == 1 else 'them'}.  The other runs changed by at most "
        f"{STILL_RISING}."
    )


def augmentation_sentence(results: dict[tuple[int, str], Any], settings: list[str]) -> str:
    """Where augmentation pays and where not, from the paired intervals against ``none``: a
    setting pays at a size when the 95% interval of its mean Dice gain lies above 0."""
    words = {"pays": "pays", "hurts": "costs Dice", "no clear difference": "no clear difference"}
    parts, pays, not_pays = [], [], []
    for n in SIZES:
        found = [
            (s, versus(results[(n, "none")], results[(n, s)]))
            for s in settings
            if s != "none" and (n, "none") in results and (n, s) in results
        ]
        if not found:
            continue
        listed = " and ".join(
            f"{AUGMENT[s][0]} {stats.mean_diff:+.3f} ({words[verdict(stats)]})"
            for s, stats in found
        )
        parts.append(f"at {n} cases {listed}")
        winners = [AUGMENT[s][0] for s, stats in found if verdict(stats) == "pays"]
        (pays if winners else not_pays).append((n, winners))
    if not parts:
        return ""
    summary = []
    if pays:
        summary.append(
            "augmentation pays at " + ", ".join(f"{n} cases ({' and '.join(w)})" for n, w in pays)
        )
    if not_pays:
        sizes = ", ".join(str(n) for n, _ in not_pays)
        summary.append(f"at {sizes} cases no setting beats training without augmentation")
    return (
        "Against no augmentation (mean Dice over both labels, paired by case): "
        + "; ".join(parts)
        + f".  So, on this data and budget, {'; '.join(summary)}."
    )


def section(
    split: dict[str, Any],
    results: dict[tuple[int, str], Any],
    settings: list[str],
    fine: dict[str, Any] | None,
    budget: Budget,
    batch: int,
    command: str,
    missing_preset: bool,
    seconds: float,
    machine_line: str,
) -> str:
    """The markdown of the docs/results.md section."""
    today = yaml.safe_load(SPEC.read_text())["data"]["augment"]
    flow = ", ".join(f"{k}: {str(v).lower()}" for k, v in today.items())
    lines = [
        "## Small data: where augmentation pays, and fine-tuning",
        "",
        f"Written by `{command}` on {datetime.date.today().isoformat()} "
        f"({seconds / 60:.0f} min of training in all).  Machine: {machine_line}.",
        "",
        f"Network and schedule: `experiments/hippocampus.yaml` (3D U-Net, filters 8, depth 3, "
        f"deep supervision, Dice+CE, AdamW, poly).  Budget, the same for every run: "
        f"**{budget.epochs} epochs × {budget.iterations} iterations × batch {batch}** "
        f"({budget.epochs * budget.iterations} steps); validation at half and at the full "
        "budget (the convergence column), and the last checkpoint is scored.",
        "",
        f"Cases: the same **{len(split['val'])} validation cases** for every run "
        f"({split['source']}); the other {len(split['pool'])} cases shuffled (seed "
        f"{SPLIT_SEED}) into half A ({len(split['half_a'])}) and half B "
        f"({len(split['half_b'])}); the training sets are the first 10, 20 and 40 cases of "
        "half B (nested).  Augmentation: *none* = `{flip: false, rotate90: false, intensity: "
        f"false}}`; *today's set* = the spec's `{{{flow}}}`; *preset nnunet* = "
        "`{preset: nnunet}` (nnU-Net's transforms and probabilities); *preset nnunet without flips* "
        f"= `{{preset: nnunet, flip: false}}`.  {mirroring(settings)}",
        "",
        "Dice on the validation cases; Δ = mean per-case difference to no augmentation with "
        "its 95% bootstrap interval (one training run per cell: the interval covers the "
        "case-to-case spread, not the run-to-run spread of training).",
        "",
        *table(
            ["training cases", "augmentation", "Dice anterior", "Dice posterior", "mean Dice"]
            + ["Δ vs none (95% CI)", "val Dice at ½ → full budget", "train min (wall)"],
            align="rlrrrllr",
        ),
    ]
    for n in SIZES:
        for s in settings:
            if (n, s) not in results:
                continue
            r = results[(n, s)]
            d = "—" if s == "none" else delta(versus(results[(n, "none")], r))
            cells = [str(n), AUGMENT[s][0], *dice_cells(r), d, convergence(r)]
            lines.append(row(*cells, f"{r['train_seconds'] / 60:.1f}"))
    lines += ["", augmentation_sentence(results, settings)]
    labelled = {f"{AUGMENT[s][0]} at {n} cases": r for (n, s), r in results.items()}
    lines += ["", convergence_sentence(labelled)]
    if missing_preset:
        lines += [
            "",
            "*preset nnunet* is left out: this segcli has no `data.augment.preset` yet.",
        ]
    if fine is not None:
        scratch, tuned, pre = fine["scratch"], fine["fine_tuned"], fine["pretrained"]
        stats = versus(scratch, tuned)
        v = verdict(stats)
        outcome = {
            "pays": "fine-tuning pays",
            "hurts": "fine-tuning does worse than training from scratch",
            "no clear difference": "fine-tuning makes no clear difference",
        }[v]
        n_a = len(split["half_a"])
        lines += [
            "",
            f"### Fine-tuning: {FINE_TUNE_CASES} cases of half B",
            "",
            f"Pretrained on half A ({n_a} cases, today's set, the same budget: "
            f"{pre['train_seconds'] / 60:.1f} min), then fine-tuned with `train.init_from` "
            f"(its default warm-up: {fine['warmup']} epoch(s)) on the {FINE_TUNE_CASES} "
            "cases of the table's smallest set, the same budget, today's set; against the "
            "same cases trained from scratch (the table's 10-case today's-set run).",
            "",
            *table(
                ["network", "Dice anterior", "Dice posterior", "mean Dice"]
                + ["Δ vs scratch (95% CI)", "val Dice at ½ → full budget", "train min (wall)"],
                align="lrrrllr",
            ),
            row(
                f"from scratch on {FINE_TUNE_CASES} cases",
                *dice_cells(scratch),
                "—",
                convergence(scratch),
                minutes(scratch),
            ),
            row(
                f"pretrained on half A ({n_a} cases), as is",
                *dice_cells(pre["as_is"]),
                delta(versus(scratch, pre["as_is"])),
                convergence(pre),
                minutes(pre),
            ),
            row(
                f"pretrained, fine-tuned on the {FINE_TUNE_CASES}",
                *dice_cells(tuned),
                delta(stats),
                convergence(tuned),
                minutes(tuned),
            ),
            "",
            f"On these {FINE_TUNE_CASES} cases {outcome}: {stats.mean_diff:+.3f} mean Dice "
            f"against training from scratch (95% CI {stats.ci_low:+.3f} … {stats.ci_high:+.3f}; "
            f"better on {stats.wins} of {stats.n} validation cases).  "
            + as_is_sentence(versus(pre["as_is"], tuned)),
            "",
            convergence_sentence({"pretraining": pre, "fine-tuning": tuned}),
        ]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny budget, 4 cases")
    parser.add_argument(
        "--epochs",
        type=int,
        default=FULL.epochs,
        help=f"epochs of {FULL.iterations} steps per run (default {FULL.epochs})",
    )
    parser.add_argument("--data", type=Path, default=None, help=f"the {DATASET} folder")
    parser.add_argument("--out", type=Path, default=None, help="runs (default runs/small-data)")
    doc_options(parser, DOC)
    parser.add_argument("--fresh", action="store_true", help="retrain runs kept from earlier")
    parser.add_argument(
        "--no-fine-tune", action="store_true", help="leave out the fine-tuning comparison"
    )
    args = parser.parse_args()
    # one torch thread per process (this one and every run; torch is not imported yet): on a
    # shared 2-core machine a second intra-op thread waits on a descheduled partner at every
    # layer (measured under load 6: 16 s per 80-step epoch with one thread, 100-170 s with two)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    budget = QUICK if args.quick else Budget(args.epochs, FULL.iterations)
    out = (
        args.out or REPO / "runs" / ("small-data-quick" if args.quick else "small-data")
    ).resolve()
    out.mkdir(parents=True, exist_ok=True)
    root = data_root(args.data)
    split = make_split(root, args.quick)
    (out / "split.json").write_text(json.dumps(split, indent=1) + "\n")
    images, labels = link(root, split["val"], out / "val")
    preset = has_preset()
    # the machine as the runs found it (a rerun that reuses kept runs reports their machine)
    stated = out / "machine.txt"
    if not stated.is_file() or args.fresh:
        stated.write_text(machine() + "\n")
    settings = [s for s in AUGMENT if not s.startswith("preset") or preset]
    batch = int(yaml.safe_load(SPEC.read_text())["train"]["batch_size"])

    def one(name: str, train: list[str], augment: Any, init: Path | None = None) -> Any:
        return train_and_score(
            name, out, root, train, split["val"], budget, augment, images, labels, args.fresh, init
        )

    results: dict[tuple[int, str], Any] = {}
    for n in SIZES:
        for s in settings:
            results[(n, s)] = one(f"n{n}-{s}", split["subsets"][str(n)], AUGMENT[s][1])
    fine = None
    if not args.no_fine_tune:
        pre = one("pretrain-half-a", split["half_a"], None)
        pre["as_is"] = pretrained_score(out / "pretrain-half-a", images, labels)
        small = split["subsets"][str(FINE_TUNE_CASES)]
        init = out / "pretrain-half-a" / "checkpoint_last.pt"
        tuned = one(f"n{FINE_TUNE_CASES}-fine-tuned", small, None, init)
        from segcli.config.schema import fine_tune_warmup_epochs

        fine = {
            "scratch": results[(FINE_TUNE_CASES, "today")],
            "fine_tuned": tuned,
            "pretrained": pre,
            "warmup": fine_tune_warmup_epochs(budget.epochs),
        }
    command = "make small-data" if not args.quick else "python bench/small_data.py --quick"
    body = section(
        split,
        results,
        settings,
        fine,
        budget,
        batch,
        command,
        not preset,
        # training wall clock of every run shown (kept results count with their own time)
        sum(r["train_seconds"] for r in results.values())
        + (
            fine["pretrained"]["train_seconds"] + fine["fine_tuned"]["train_seconds"] if fine else 0
        ),
        stated.read_text().strip(),
    )
    publish(args, SECTION, body)


if __name__ == "__main__":
    main()
