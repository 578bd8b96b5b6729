"""``normalization: ct_auto`` on the TotalSegmentator example CT: the statistics, and that train
stores them and predict reuses them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from segcli.config import from_dict
from segcli.data import statistics
from segcli.data.preprocessing import normalize
from segcli.engine.predict import predict_cases
from segcli.engine.train import fit
from segcli.inference import sliding_window
from segcli.io.checkpoint import load_checkpoint
from segcli.io.images import make_geometry, read_image, read_label, write_image
from segcli.models import build

CASE = "example_ct_sm"


def _data_spec(root: Path):
    raw = {"data": {"root": str(root), "normalization": "ct_auto", "patch_size": [16] * 3}}
    return from_dict({**raw, "model": {"arch": "cnn", "dims": 3}}).data


@pytest.fixture(scope="module")
def foreground(totalseg: Path) -> np.ndarray:
    image, _ = read_image(totalseg / "imagesTr" / f"{CASE}.nii.gz")
    label, _ = read_label(totalseg / "labelsTr" / f"{CASE}.nii.gz")
    return image[label > 0].astype(np.float64)


def test_statistics_equal_a_direct_numpy_computation_without_sampling(
    foreground: np.ndarray, totalseg: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(statistics, "SAMPLES_PER_CASE", 10**9)
    stats = statistics.foreground_intensity_stats(_data_spec(totalseg), [CASE])
    low, high = np.percentile(foreground, [0.5, 99.5])
    clipped = np.clip(foreground, low, high)
    assert stats["low"] == pytest.approx([low]) and stats["high"] == pytest.approx([high])
    assert stats["mean"] == pytest.approx([clipped.mean()], rel=1e-9)
    assert stats["std"] == pytest.approx([clipped.std()], rel=1e-9)
    assert low < -900 and high > 300  # lungs (air) and bone are both foreground here


def test_sampled_statistics_stay_within_their_sampling_error(
    foreground: np.ndarray, totalseg: Path
) -> None:
    """10,000 of 110,225 foreground voxels: distribution-free bounds at about 3 sigma."""
    assert foreground.size > statistics.SAMPLES_PER_CASE
    stats = statistics.foreground_intensity_stats(_data_spec(totalseg), [CASE], seed=0)
    # the sample 0.5 % quantile lies between the population's 0.3 % and 0.8 % quantiles
    lo_band = np.percentile(foreground, [0.3, 0.8])
    hi_band = np.percentile(foreground, [99.2, 99.7])
    assert lo_band[0] <= stats["low"][0] <= lo_band[1]
    assert hi_band[0] <= stats["high"][0] <= hi_band[1]
    clipped = np.clip(foreground, stats["low"][0], stats["high"][0])
    standard_error = clipped.std() / np.sqrt(statistics.SAMPLES_PER_CASE)
    assert abs(stats["mean"][0] - clipped.mean()) < 4 * standard_error
    assert stats["std"][0] == pytest.approx(clipped.std(), rel=0.04)
    again = statistics.foreground_intensity_stats(_data_spec(totalseg), [CASE], seed=0)
    assert again == stats  # deterministic in the seed


@pytest.mark.slow
def test_train_stores_the_statistics_and_predict_reuses_them(
    tmp_path: Path, totalseg: Path
) -> None:
    # a crop of the CT with its organs merged into one foreground label (ct_auto: label > 0)
    root = tmp_path / "ct"
    image, geometry = read_image(totalseg / "imagesTr" / f"{CASE}.nii.gz")
    label, _ = read_label(totalseg / "labelsTr" / f"{CASE}.nii.gz")
    crop = (slice(None), slice(30, 70), slice(40, 88))
    image, label = image[crop], (label[crop] > 0).astype(np.uint8)
    grid = make_geometry(image.shape, geometry.spacing)
    write_image(root / "imagesTr" / f"{CASE}.nii.gz", image.astype(np.int16), grid)
    write_image(root / "labelsTr" / f"{CASE}.nii.gz", label, grid)
    raw = {
        "name": "ct",
        "data": {
            "root": str(root),
            "normalization": "ct_auto",
            "patch_size": [16, 16, 16],
            "val_fraction": 0,
        },
        "model": {"arch": "cnn", "dims": 3, "filters": 3, "classes": 2, "layers": 2},
        "train": {"epochs": 1, "iterations_per_epoch": 1, "batch_size": 2, "workers": 0},
        "inference": {"batch_size": 8, "overlap": 0.25},
        "output": str(tmp_path / "runs"),
    }
    exp = from_dict(raw)
    result = fit(exp, device="cpu")
    expected = statistics.foreground_intensity_stats(exp.data, [CASE], exp.seed)
    stored = json.loads((result.run_dir / "normalization.json").read_text())
    state = load_checkpoint(result.run_dir / "checkpoint_best.pt")
    assert stored == state["normalization_stats"] == expected
    fg = image[label > 0].astype(np.float64)
    assert fg.size > statistics.SAMPLES_PER_CASE  # sampled, so the seed matters
    assert expected["low"][0] == pytest.approx(np.percentile(fg, 0.5), abs=30)

    out = tmp_path / "pred"
    predict_cases(exp, root / "imagesTr", out, device="cpu", probabilities=True)
    with np.load(out / f"{CASE}_probabilities.npz") as npz:
        got = npz["probabilities"].astype(np.float32)
    network = build(exp.model).eval()
    network.load_state_dict(state["model"])

    def by_hand(stats: dict) -> np.ndarray:
        x = torch.from_numpy(normalize(image[None], "ct_auto", stats=stats))
        return sliding_window(network, x, [16] * 3, overlap=0.25, batch_size=8).numpy()

    np.testing.assert_allclose(got, by_hand(expected), atol=2e-3)
    other = {**expected, "mean": [expected["mean"][0] + 300.0]}
    assert np.abs(by_hand(other) - got).max() > 0.01  # the statistics matter
