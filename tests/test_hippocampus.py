"""The real-data spec on a few real MSD Task04 cases (fast; the full run is `make hippocampus`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from segcli.config import load
from segcli.io.checkpoint import load_checkpoint
from segcli.io.images import read_geometry, read_label

REPO = Path(__file__).resolve().parent.parent
SPEC = REPO / "experiments" / "hippocampus.yaml"


def test_specs_load_and_point_at_the_data(hippocampus: Path) -> None:
    for name in ("hippocampus.yaml", "hippocampus-gpu.yaml"):
        exp = load(REPO / "experiments" / name)
        assert exp.model.arch == "unet" and exp.model.dims == 3
        assert exp.model.num_classes == 3 and exp.loss.name == "dice_ce"
        assert (REPO / exp.data.root).resolve() == hippocampus.resolve()


def test_two_iterations_on_four_real_cases_then_predict_keeps_geometry(
    tmp_path: Path, hippocampus: Path
) -> None:
    from segcli.engine.predict import predict_cases
    from segcli.engine.train import fit

    cases = ["hippocampus_001", "hippocampus_003", "hippocampus_004", "hippocampus_006"]
    exp = load(
        SPEC,
        [
            f"data.root={hippocampus}",
            f"data.train_cases={cases[:3]}",
            f"data.val_cases={cases[3:]}",
            "model.filters=4",
            "train.epochs=1",
            "train.iterations_per_epoch=2",
            "train.workers=0",
            f"output={tmp_path}",
        ],
    )
    result = fit(exp, device="cpu")
    run = tmp_path / "hippocampus"
    assert result.iterations == 2 and (run / "checkpoint_best.pt").is_file()
    state = load_checkpoint(run / "checkpoint_best.pt")
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    assert (run / "split.json").read_text().count("hippocampus_") == 4

    out = tmp_path / "pred"
    test_image = hippocampus / "imagesTs" / "hippocampus_118.nii.gz"
    predict_cases(exp, test_image, out, device="cpu")
    written = out / "hippocampus_118.nii.gz"
    assert read_geometry(written).differences(read_geometry(test_image)) == []
    label, _ = read_label(written)
    assert set(np.unique(label)) <= {0, 1, 2}
