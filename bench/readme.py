"""Regenerate the README tour: rerun its commands and write their real output into README.md.

    make readme                 # or: .venv/bin/python bench/readme.py [--check] [--keep DIR]

Every console block of the tour sits between ``<!-- tour:NAME -->`` and ``<!-- /tour:NAME -->``
markers; :data:`STEPS` says which commands each block shows.  The script copies
``experiments/`` into a temporary working folder, runs every step's commands there in order
(through ``bash``, with this venv's ``segcli`` first on the PATH, no terminal: no progress
bars), and replaces each marked block with the commands and what they printed.  It also copies
the figures the README shows (``docs/img/curves.png`` from the training run, and
``docs/img/overlay.png``: an evaluate overlay chosen from the metrics, see
:func:`reading_of_evaluate`), writes the paragraph that reads the evaluate numbers, and the
line saying when, where and by which command the tour was generated.

To add a tour step: put an empty marked block where it belongs in README.md
(``<!-- tour:NAME -->`` newline ``<!-- /tour:NAME -->``) and a :class:`Step` with the same
name in :data:`STEPS`, in the order the commands must run.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime
import os
import re
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from _harness import REPO, block_body, machine, run, scratch, write_doc
from _harness import replace_block as replace_marked

README = REPO / "README.md"
IMG = REPO / "docs" / "img"
BIN = Path(sys.executable).parent  # the venv's bin: segcli lives beside this python
COLUMNS = "100"  # rich tables wrap at this width, as in a terminal of that size


@dataclass(frozen=True)
class Step:
    """One console block of the tour.

    Attributes:
        name: the marker name in README.md (``<!-- tour:NAME -->``).
        commands: shell commands shown (``$ ...``) and run, in order; a continuation line
            (ending in ``\\``) is shown as written.
        setup: hidden preparation in the working folder before the commands (e.g. write a
            broken spec for the error example).
        fails: the commands are expected to exit non-zero (user errors shown on purpose).
    """

    name: str
    commands: tuple[str, ...]
    setup: Callable[[Path], None] | None = None
    fails: bool = False


def _misspelt_spec(work: Path) -> None:
    text = (work / "experiments" / "toy-dilated.yaml").read_text()
    (work / "exp.yaml").write_text(text.replace("  filters:", "  filtres:", 1))


#: the tour, in the order it runs (each name matches a marked block in README.md)
STEPS: tuple[Step, ...] = (
    Step(
        "synth",
        (
            "segcli synth data/toy2d --cases 300 --seed 0",
            "segcli synth data/toy2d-test --cases 60 --seed 1",
        ),
    ),
    Step("plan", ("segcli plan data/toy2d -o toy2d.yaml",)),
    Step("receptive-field", ("segcli receptive-field experiments/toy-dilated.yaml",)),
    Step(
        "preprocess",
        (
            "segcli preprocess experiments/toy-dilated.yaml --set data.root=data/toy2d",
            "segcli preprocess experiments/toy-dilated.yaml --set data.root=data/toy2d",
        ),
    ),
    Step(
        "train",
        (
            "segcli train experiments/toy-dilated.yaml --set data.root=data/toy2d "
            "--set train.epochs=6",
            "ls -C runs/toy-dilated",
        ),
    ),
    Step(
        "predict",
        (
            "segcli predict experiments/toy-dilated.yaml --input data/toy2d-test/imagesTr "
            "--output pred",
        ),
    ),
    Step(
        "evaluate",
        (
            "segcli evaluate experiments/toy-dilated.yaml --pred pred --ref data/toy2d-test/labelsTr \\\n"
            "      --output metrics.csv --overlays overlays --images data/toy2d-test/imagesTr",
        ),
    ),
    Step("report", ("segcli report metrics.csv -o report.html",)),
    Step(
        "spec-errors",
        (
            "segcli train exp.yaml",
            "segcli train experiments/toy-cnn.yaml --set train.epochs=ten --set model.arch=dilatd",
        ),
        setup=_misspelt_spec,
        fails=True,
    ),
)


def run_step(step: Step, work: Path) -> str:
    """Run ``step`` in ``work``; return the console block text (commands and output)."""
    if step.setup is not None:
        step.setup(work)
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "COLUMNS": COLUMNS,
        "TERM": "dumb",
        "PYTHONWARNINGS": "ignore",
        "SEGCLI_CACHE": "cache",  # the preprocessing cache inside the working folder
    }
    lines = []
    for command in step.commands:
        done = run(
            ["bash", "-c", command], cwd=work, env=env, check=False, echo=False, timeout=1800
        )
        if (done.returncode != 0) != step.fails:
            raise SystemExit(
                f"error: tour step '{step.name}': `{command}` exited {done.returncode}"
                f"{' (expected a failure)' if step.fails else ''}:\n{done.stdout}{done.stderr}"
            )
        output = (done.stdout + done.stderr).rstrip()
        output = output.replace(str(work) + os.sep, "")
        lines.append(f"$ {command}")
        lines.extend(line.expandtabs().rstrip() for line in output.splitlines())
    return "```console\n" + "\n".join(lines) + "\n```"


def _read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def reading_of_evaluate(work: Path) -> tuple[str, str]:
    """The paragraph after the evaluate block, from metrics.csv; and the overlay's case.

    The overlay shown is a case with a false-alarm component if there is one, else the case
    with the lowest Dice, so the figure and the sentence describe the same thing.
    """
    rows = [r for r in _read_rows(work / "metrics.csv") if r["label"] == "1"]
    dice = [float(r["dice"]) for r in rows]
    mean = sum(dice) / len(dice)
    false_alarms = [r for r in rows if float(r["lesion_fp"] or 0) > 0]
    missed = [r for r in rows if float(r["lesion_fn"] or 0) > 0]
    # no reference component at all (tp + fn = 0): a benign case, nothing to find
    benign = [r for r in false_alarms if float(r["lesion_tp"]) + float(r["lesion_fn"]) == 0]
    if false_alarms:
        shown = min(false_alarms, key=lambda r: float(r["dice"]))
        fp = sum(int(float(r["lesion_fp"])) for r in false_alarms)
        what = (
            f"`lesion_fp` counts {fp} false-alarm component(s) in {len(false_alarms)} of "
            f"{len(rows)} cases ({len(benign)} of them benign cases with no lesion to find)"
        )
        figure = (
            f"The overlay above is case `{shown['case']}` (Dice {float(shown['dice']):.3f}), "
            "one of them: compare the predicted contour with the reference."
        )
    else:
        shown = min(rows, key=lambda r: float(r["dice"]))
        what = f"no case has a false-alarm component (`lesion_fp` is 0 in all {len(rows)})"
        figure = (
            f"The overlay above is the case with the lowest Dice, `{shown['case']}` "
            f"({float(shown['dice']):.3f})."
        )
    miss = (
        f"{len(missed)} case(s) miss a lesion (`lesion_fn` > 0)"
        if missed
        else "no lesion is missed (`lesion_fn` is 0 everywhere)"
    )
    text = (
        f"Mean Dice is {mean:.3f}; {what}, and {miss}. {figure} Dice alone would not tell "
        "these apart: always use a combination of metrics, and look at your results."
    )
    return text, shown["case"]


def replace_block(text: str, name: str, body: str) -> str:
    """``text`` with the content between ``<!-- tour:name -->`` and its end marker replaced."""
    start, end = f"<!-- tour:{name} -->", f"<!-- /tour:{name} -->"
    if block_body(text, start, end) is None:
        raise SystemExit(f"error: README.md has no '{start}' ... '{end}' block for step '{name}'")
    return replace_marked(text, start, end, body.strip())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, help="run in this folder and keep it")
    parser.add_argument(
        "--only", nargs="*", help="run only these steps (their inputs must already be there)"
    )
    args = parser.parse_args()
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
    with contextlib.nullcontext(args.keep) if args.keep else scratch("segcli-readme-") as work:
        shutil.copytree(REPO / "experiments", work / "experiments", dirs_exist_ok=True)
        text = README.read_text()
        names = {s.name for s in STEPS}
        for step in STEPS:
            if args.only is not None and step.name not in args.only:
                continue
            print(f"tour step {step.name} ...", file=sys.stderr)
            text = replace_block(text, step.name, run_step(step, work))
            if step.name == "train":
                shutil.copyfile(work / "runs" / "toy-dilated" / "curves.png", IMG / "curves.png")
            if step.name == "evaluate":
                reading, case = reading_of_evaluate(work)
                shutil.copyfile(work / "overlays" / f"{case}.png", IMG / "overlay.png")
                text = replace_block(text, "evaluate-reading", reading)
        unknown = set(re.findall(r"<!-- tour:([\w-]+) -->", text)) - names
        unknown -= {"evaluate-reading", "generated"}
        if unknown:
            raise SystemExit(f"error: README.md blocks with no step in STEPS: {sorted(unknown)}")
        stamp = (
            f"The outputs below are real: `make readme` (`bench/readme.py`) reran these commands "
            f"on {datetime.date.today().isoformat()} on {machine()} and wrote what they printed "
            "(timings are that machine's); `make demo` runs the same steps."
        )
        text = replace_block(text, "generated", stamp)
        write_doc(README, text)


if __name__ == "__main__":
    main()
