"""Bad input through the real CLI: exit 1, one message naming the culprit, no traceback, no output.

Each scenario builds a small broken world in ``tmp_path`` (a copy of a 4-case toy data set, a
spec, maybe a checkpoint), runs one ``segcli`` command through Typer's ``CliRunner`` and checks
that the command failed cleanly *and* that no file under ``tmp_path`` appeared, changed or was
left half-written.  A few scenarios are regression tests of bugs this battery found (marked
"regression" below).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from segcli.cli import app
from segcli.config import load
from segcli.io.checkpoint import save_checkpoint
from segcli.io.images import make_geometry, read_label, write_image
from segcli.models import build

runner = CliRunner()


class World:
    """A scratch folder with a copy of the toy data set, a spec writer and checkpoint makers."""

    def __init__(self, root: Path, toy: Path) -> None:
        self.root = root
        self.data = root / "data"
        shutil.copytree(toy, self.data)
        self.blocker = root / "blocker"  # a regular file where a folder would be needed
        self.blocker.write_text("not a folder\n")
        self.pred = root / "pred"  # perfect predictions: a copy of the references
        shutil.copytree(self.data / "labelsTr", self.pred)

    # ---------------------------------------------------------------- specs

    def raw(self, **sections: Any) -> dict[str, Any]:
        raw: dict[str, Any] = {
            "name": "tiny",
            "seed": 0,
            "data": {"root": str(self.data), "patch_size": [16, 16], "val_fraction": 0.25},
            "model": {"arch": "dilated", "dims": 2, "filters": 4, "dilations": [1, 2]},
            "train": {"epochs": 1, "iterations_per_epoch": 2, "batch_size": 2, "workers": 0},
            "inference": {"batch_size": 4},
            "output": str(self.root / "runs"),
        }
        for key, value in sections.items():
            replace = not isinstance(value, dict) or "arch" in value
            raw[key] = value if replace else {**raw.get(key, {}), **value}
        return raw

    def spec(self, file: str = "exp.yaml", **sections: Any) -> Path:
        path = self.root / file
        path.write_text(yaml.safe_dump(self.raw(**sections)))
        return path

    def checkpoint(self, spec: Path, path: Path | None = None, **extra: Any) -> Path:
        """A checkpoint of ``spec``'s model, as segcli train writes it (plus ``extra`` keys)."""
        exp = load(spec)
        torch.manual_seed(0)
        state = {"model": build(exp.model).state_dict(), "spec": exp.model_dump(mode="json")}
        path = path or self.root / "ck.pt"
        save_checkpoint(path, {**state, "epoch": 0, "best_dice": 0.0, "best_epoch": 0, **extra})
        return path

    # ---------------------------------------------------------------- broken files

    def label(self, case: str = "ring_001", folder: str = "data/labelsTr") -> Path:
        return self.root / folder / f"{case}.nii.gz"

    def image(self, case: str = "ring_001") -> Path:
        return self.data / "imagesTr" / f"{case}_0000.nii.gz"

    def rewrite_label(self, path: Path, change: Callable[[np.ndarray], np.ndarray]) -> None:
        array, geometry = read_label(path)
        write_image(path, change(array), geometry)

    def regrid(self, path: Path, what: str) -> None:
        """Rewrite ``path`` with one aspect of its grid changed."""
        array, g = read_label(path)
        if what == "size":
            array = array[:-1]
            g = make_geometry(array.shape, g.spacing, g.origin, g.direction)
        elif what == "spacing":
            g = make_geometry(g.size, (2.0, 1.0), g.origin, g.direction)
        elif what == "origin":
            g = make_geometry(g.size, g.spacing, (3.0, 0.0), g.direction)
        else:
            g = make_geometry(g.size, g.spacing, g.origin, (0.0, 1.0, 1.0, 0.0))
        write_image(path, array, g)


def paint(value: int) -> Callable[[np.ndarray], np.ndarray]:
    """A change that sets the first voxel of a label map to ``value``."""

    def change(array: np.ndarray) -> np.ndarray:
        array = array.astype(np.int16)
        array.flat[0] = value
        return array

    return change


def garble(path: Path) -> None:
    path.write_bytes(b"not an image " * 20)


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def train(w: World, *extra: str, **sections: Any) -> list[str]:
    return ["train", str(w.spec(**sections)), *extra]


def predict(w: World, *extra: str, spec: Path | None = None, ckpt: bool = True) -> list[str]:
    spec = spec or w.spec()
    args = ["predict", str(spec), "--input", str(w.data / "imagesTr")]
    args += ["--output", str(w.root / "out"), "--device", "cpu"]
    if ckpt and "--checkpoint" not in extra:
        args += ["--checkpoint", str(w.checkpoint(spec))]
    return [*args, *extra]


def evaluate(w: World, *extra: str, output: Path | None = None) -> list[str]:
    out = output or w.root / "metrics" / "m.csv"
    args = ["evaluate", "--pred", str(w.pred), "--ref", str(w.data / "labelsTr")]
    return [*args, "--output", str(out), "--workers", "1", *extra]


def existing_run(w: World, path: Path | None = None, **extra: Any) -> Path:
    """A run folder holding checkpoint_last.pt, as after one epoch of training."""
    spec = w.spec()
    return w.checkpoint(spec, path or w.root / "runs" / "tiny" / "checkpoint_last.pt", **extra)


Scenario = Callable[[World], tuple[list[str], list[str]]]

# name → (world → (argv, what the message must say))
SCENARIOS: dict[str, Scenario] = {
    # ---- spec keys: misspelt, mistyped, per command
    "train-misspelt-key": lambda w: (
        train(w, model={"filtres": 4}),
        ["exp.yaml", "model.filtres", "did you mean 'model.filters'?"],
    ),
    "train-mistyped-value": lambda w: (
        train(w, train={"epochs": "many"}),
        ["exp.yaml", "train.epochs", "'many'"],
    ),
    "train-misspelt-override": lambda w: (
        train(w, "--set", "train.epoch=2"),
        ["train.epoch", "did you mean 'train.epochs'?"],
    ),
    "predict-misspelt-key": lambda w: (
        predict(w, spec=w.spec(inference={"overlapp": 0.5}), ckpt=False),
        ["exp.yaml", "inference.overlapp", "did you mean 'inference.overlap'?"],
    ),
    "predict-mistyped-override": lambda w: (
        predict(w, "--set", "inference.overlap=half"),
        ["inference.overlap", "'half'"],
    ),
    "evaluate-misspelt-key": lambda w: (
        evaluate(w, str(w.spec(evaluation={"metric": ["dice"]}))),
        ["exp.yaml", "evaluation.metric", "did you mean 'evaluation.metrics'?"],
    ),
    "evaluate-mistyped-metric": lambda w: (
        evaluate(w, str(w.spec(evaluation={"metrics": ["dice", "hd96"]}))),
        ["evaluation.metrics.1", "'hd96'", "hd95"],
    ),
    "receptive-field-mistyped-value": lambda w: (
        ["receptive-field", str(w.spec(model={"dilations": [1, "two"]}))],
        ["exp.yaml", "model.dilations.1", "'two'"],
    ),
    "receptive-field-misspelt-override": lambda w: (
        ["receptive-field", str(w.spec()), "--set", "model.dilatoins=[1]"],
        ["model.dilatoins", "did you mean 'model.dilations'?"],
    ),
    # regression: a run named '..' trained into the parent of the output folder
    "train-run-name-escapes-output": lambda w: (
        train(w, name=".."),
        ["exp.yaml", "name", "'..'"],
    ),
    # ---- missing or unreadable files and folders
    **{
        f"{command}-missing-spec": (
            lambda w, command=command, extra=extra: (
                [command, str(w.root / "nope.yaml"), *(f"{f}={w.root / a}" for f, a in extra)],
                ["nope.yaml: spec file not found"],
            )
        )
        for command, extra in (
            ("train", []),
            ("predict", [("--input", "data"), ("--output", "out")]),
            ("evaluate", [("--pred", "pred"), ("--ref", "data"), ("--output", "m.csv")]),
            ("receptive-field", []),
        )
    },
    "train-spec-is-a-folder": lambda w: (
        ["train", str(w.data)],
        ["data: cannot read the spec file"],
    ),
    "train-spec-not-a-mapping": lambda w: (
        ["train", str(w.root / "blocker")],
        ["blocker: the spec must be a YAML mapping"],
    ),
    "train-missing-data-root": lambda w: (
        train(w, data={"root": str(w.root / "nowhere")}),
        ["data.root", "nowhere", "does not exist", "segcli synth"],
    ),
    "predict-missing-input": lambda w: (
        predict(w, "--input", str(w.root / "nowhere")),
        ["nowhere: input not found"],
    ),
    "predict-missing-checkpoint": lambda w: (
        predict(w, "--checkpoint", str(w.root / "nope.pt"), ckpt=False),
        ["nope.pt: checkpoint not found"],
    ),
    "predict-no-checkpoint-in-run-folder": lambda w: (
        predict(w, ckpt=False),
        ["no checkpoint_best.pt or checkpoint_last.pt", "--checkpoint"],
    ),
    "evaluate-missing-reference-folder": lambda w: (
        ["evaluate", "--pred", str(w.pred), "--ref", str(w.root / "nowhere"), "-o", "m.csv"],
        ["nowhere: reference folder not found"],
    ),
    "evaluate-missing-partner": lambda w: (
        (w.pred / "ring_002.nii.gz").unlink() or evaluate(w),
        ["case 'ring_002'", "has no prediction"],
    ),
    "train-unreadable-image": lambda w: (
        garble(w.image()) or train(w),
        ["ring_001_0000.nii.gz", "cannot read", "re-export or re-download"],
    ),
    # ---- truncated .nii.gz
    "train-truncated-image": lambda w: (
        truncate(w.image()) or train(w),
        ["ring_001_0000.nii.gz", "truncated"],
    ),
    "train-truncated-label": lambda w: (
        truncate(w.label()) or train(w),
        ["labelsTr/ring_001.nii.gz", "truncated"],
    ),
    "predict-truncated-input": lambda w: (
        truncate(w.image()) or predict(w, "--input", str(w.image())),
        ["1 case(s) failed", "ring_001", "truncated"],
    ),
    "evaluate-truncated-prediction": lambda w: (
        truncate(w.label(folder="pred")) or evaluate(w),
        ["case 'ring_001'", "pred/ring_001.nii.gz", "truncated"],
    ),
    # ---- label maps with float or negative values, or values the model does not have
    "train-float-label": lambda w: (
        w.rewrite_label(w.label(), lambda a: a.astype(np.float32) + 0.5) or train(w),
        ["labelsTr/ring_001.nii.gz", "non-integer"],
    ),
    "train-negative-label": lambda w: (
        w.rewrite_label(w.label(), lambda a: a.astype(np.int16) - 1) or train(w),
        ["labelsTr/ring_001.nii.gz", "negative"],
    ),
    "evaluate-float-label": lambda w: (
        w.rewrite_label(w.label(folder="pred"), lambda a: a.astype(np.float32) + 0.5)
        or evaluate(w),
        ["case 'ring_001'", "pred/ring_001.nii.gz", "non-integer"],
    ),
    "evaluate-negative-label": lambda w: (
        w.rewrite_label(w.label(folder="pred"), lambda a: a.astype(np.int8) - 1) or evaluate(w),
        ["case 'ring_001'", "negative"],
    ),
    # regression: a label value >= model.classes crashed the loss (IndexError traceback)
    "train-label-beyond-classes": lambda w: (
        w.rewrite_label(w.label("ring_001"), paint(3)) or train(w),
        ["value 3", "model.classes to 4"],
    ),
    # ---- images and labels on different grids
    **{
        f"train-label-{what}-differs": (
            lambda w, what=what: (
                w.regrid(w.label("ring_002"), what) or train(w),
                ["case 'ring_002'", "label ring_002.nii.gz vs image", what],
            )
        )
        for what in ("size", "spacing", "origin", "direction")
    },
    **{
        f"evaluate-prediction-{what}-differs": (
            lambda w, what=what: (
                w.regrid(w.label("ring_002", folder="pred"), what) or evaluate(w),
                ["case 'ring_002'", "prediction ring_002.nii.gz vs reference", what],
            )
        )
        for what in ("size", "spacing", "origin", "direction")
    },
    # ---- a data set with no cases
    "train-no-cases": lambda w: (
        [p.unlink() for p in (w.data / "imagesTr").iterdir()] and train(w),
        ["imagesTr: no images found"],
    ),
    "predict-no-cases": lambda w: (
        (w.root / "empty").mkdir() or predict(w, "--input", str(w.root / "empty")),
        ["empty: no images found"],
    ),
    "evaluate-no-cases": lambda w: (
        shutil.rmtree(w.pred) or w.pred.mkdir() or evaluate(w),
        ["pred: no prediction label maps found"],
    ),
    # ---- patches and networks that do not fit
    "train-unet-too-deep-for-patch": lambda w: (
        train(w, model={"arch": "unet", "dims": 2, "filters": 2, "depth": 6}),
        ["data.patch_size [16, 16]", "model.arch 'unet'", "smallest size that works is 64"],
    ),
    "receptive-field-unet-too-deep-for-patch": lambda w: (
        ["receptive-field", str(w.spec(model={"arch": "unet", "dims": 2, "depth": 6}))],
        ["data.patch_size [16, 16]", "smallest size that works is 64"],
    ),
    "predict-unet-too-deep-for-patch": lambda w: (
        predict(w, spec=w.spec(model={"arch": "unet", "dims": 2, "filters": 2, "depth": 6})),
        ["inference.patch_size [16, 16]", "smallest size that works is 64"],
    ),
    # regression: validation crashed after the first epoch (ValueError traceback)
    "train-inference-patch-does-not-fit": lambda w: (
        train(
            w,
            model={"arch": "unet", "dims": 2, "filters": 2, "depth": 2},
            inference={"patch_size": [18, 18]},
        ),
        ["inference.patch_size [18, 18]", "nearby sizes that work: 16 or 20"],
    ),
    # regression: validation of a shrinking network crashed after the first epoch; valid
    # padding now validates by overlap-tile, a strided window classifier is refused up front
    "train-window-classifier-with-validation": lambda w: (
        train(
            w,
            model={"arch": "patch_cnn", "dims": 2, "filters": 2, "hidden": 3, "mode": "window"},
            data={"patch_size": [111, 111]},
        ),
        ["maps inference.patch_size [111, 111] to [2, 2]", "model.mode: dense", "val_fraction: 0"],
    ),
    # regression: data.synthetic too small for its lesion and ring raised a bare ValueError
    "train-synthetic-too-small": lambda w: (
        train(w, data={"root": None, "synthetic": {"size": 8, "lesion": 3, "ring_distance": 3}}),
        ["data.synthetic", "spans 9 voxels", "data.synthetic.size to 9"],
    ),
    # ---- checkpoints from another architecture or another segcli version
    "predict-checkpoint-of-another-arch": lambda w: (
        predict(
            w,
            "--checkpoint",
            str(w.checkpoint(w.spec("cnn.yaml", model={"arch": "cnn", "dims": 2}))),
            ckpt=False,
        ),
        ["ck.pt", 'model.arch: checkpoint "cnn", spec "dilated"', "config.yaml"],
    ),
    "predict-checkpoint-of-another-version": lambda w: (
        predict(w, "--checkpoint", str(w.checkpoint(w.spec(), format_version=99)), ckpt=False),
        ["ck.pt", "checkpoint format 99", "expects 1", "segcli version that wrote it"],
    ),
    "predict-checkpoint-without-version": lambda w: (
        predict(w, "--checkpoint", str(w.checkpoint(w.spec(), format_version=None)), ckpt=False),
        ["ck.pt", "no format_version"],
    ),
    "predict-truncated-checkpoint": lambda w: (
        truncate(ck := w.checkpoint(w.spec())) or predict(w, "--checkpoint", str(ck), ckpt=False),
        ["ck.pt: not a readable checkpoint", "truncated or corrupt"],
    ),
    "resume-checkpoint-of-another-version": lambda w: (
        existing_run(w, format_version=2) and train(w, "--resume"),
        ["checkpoint_last.pt", "checkpoint format 2"],
    ),
    "resume-with-another-model": lambda w: (
        existing_run(w) and train(w, "--resume", "--set", "model.filters=5"),
        ["checkpoint_last.pt: cannot resume", "'model'", "config.yaml"],
    ),
    # ---- output folders that cannot be written (a path under a regular file)
    "train-output-under-a-file": lambda w: (
        train(w, "--output", str(w.blocker / "run")),
        ["blocker/run", "blocker is a file, not a folder", "--output"],
    ),
    "train-spec-output-under-a-file": lambda w: (
        train(w, output=str(w.blocker / "runs")),
        ["blocker/runs/tiny", "blocker is a file, not a folder"],
    ),
    "predict-output-under-a-file": lambda w: (
        predict(w, "--output", str(w.blocker / "out")),
        ["blocker/out", "is a file, not a folder", "--output"],
    ),
    "predict-output-is-a-file": lambda w: (
        predict(w, "--output", str(w.blocker)),
        ["blocker is a file, not a folder", "--output"],
    ),
    "evaluate-output-under-a-file": lambda w: (
        evaluate(w, output=w.blocker / "m.csv"),
        ["blocker is a file, not a folder", "--output"],
    ),
    "evaluate-output-is-a-folder": lambda w: (
        evaluate(w, output=w.data),
        ["is a folder", "CSV file name"],
    ),
    "evaluate-overlays-under-a-file": lambda w: (
        evaluate(w, "--overlays", str(w.blocker / "png")),
        ["blocker is a file, not a folder", "--overlays"],
    ),
    # ---- runs: an existing run without --resume, --resume with nothing to resume
    "train-existing-run-without-resume": lambda w: (
        existing_run(w) and train(w),
        ["runs/tiny: already holds a training run", "--resume"],
    ),
    "train-resume-with-nothing-to-resume": lambda w: (
        train(w, "--resume"),
        ["checkpoint_last.pt: nothing to resume", "start without --resume"],
    ),
}

NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
SCENARIOS_NO_CUDA: dict[str, Scenario] = {
    "train-cuda-without-gpu": lambda w: (
        train(w, "--device", "cuda"),
        ["--device cuda: CUDA is not available", "--device cpu"],
    ),
    "predict-cuda-without-gpu": lambda w: (
        predict(w, "--device", "cuda"),
        ["--device cuda: CUDA is not available", "--device cpu"],
    ),
}


@pytest.mark.parametrize(
    "scenario",
    [
        *SCENARIOS,
        *(pytest.param(name, marks=NO_CUDA) for name in SCENARIOS_NO_CUDA),
    ],
)
def test_bad_input_exits_1_with_a_message_and_writes_nothing(
    scenario: str, tmp_path: Path, toy: Path, user_error, unchanged
) -> None:
    world = World(tmp_path, toy)
    args, needles = {**SCENARIOS, **SCENARIOS_NO_CUDA}[scenario](world)
    with unchanged(tmp_path):
        result = runner.invoke(app, args)
    user_error(result, *needles)


def test_unreadable_spec_file_names_it(
    tmp_path: Path, toy: Path, monkeypatch: pytest.MonkeyPatch, user_error
) -> None:
    """Root reads everything, so an unreadable spec is simulated by the OS error it raises."""
    spec = World(tmp_path, toy).spec()
    real = Path.read_text

    def refuse(self: Path, *args: Any, **kwargs: Any) -> str:
        if self == spec:
            raise PermissionError(13, "Permission denied", str(self))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", refuse)
    for command in (["train"], ["receptive-field"]):
        result = runner.invoke(app, [*command, str(spec)])
        user_error(result, "exp.yaml: cannot read the spec file", "Permission denied")


# --------------------------------------------------------------------------- real processes


def _segcli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "segcli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
    )


@pytest.mark.parametrize(
    "scenario",
    ["train-label-beyond-classes", "evaluate-prediction-spacing-differs", "predict-missing-input"],
)
def test_errors_in_a_real_process_exit_1_without_traceback(
    scenario: str, tmp_path: Path, toy: Path, unchanged
) -> None:
    world = World(tmp_path, toy)
    args, needles = SCENARIOS[scenario](world)
    with unchanged(tmp_path):
        proc = _segcli(*args, cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    text = " ".join(proc.stderr.split())
    assert text.startswith("error: ")
    for needle in needles:
        assert needle in text


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    quiet = _segcli("train", "nope.yaml", cwd=tmp_path)
    debug = _segcli("--debug", "train", "nope.yaml", cwd=tmp_path)
    assert quiet.returncode == debug.returncode == 1
    assert "Traceback" not in quiet.stderr
    assert (
        "Traceback" in debug.stderr and "SpecError: nope.yaml: spec file not found" in debug.stderr
    )
