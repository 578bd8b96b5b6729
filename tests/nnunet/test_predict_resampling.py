"""predict with ``data.spacing``: to the training spacing, sliding window, back to the input grid;
train resolves ``auto`` once and stores it; ensembles of checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage

from segcli.data.preprocessing import normalize
from segcli.data.resample import resample_image, resampled_geometry
from segcli.engine.predict import predict_cases
from segcli.engine.train import fit
from segcli.errors import CheckpointError
from segcli.inference import sliding_window
from segcli.io.checkpoint import load_checkpoint
from segcli.io.images import read_geometry, read_label, write_image


def _probabilities(folder: Path, case: str) -> np.ndarray:
    with np.load(folder / f"{case}_probabilities.npz") as npz:
        return npz["probabilities"].astype(np.float32)


def _smooth_case(folder: Path, name: str, shape, geometry, seed: int = 0, sigma: float = 3.0):
    noise = np.random.default_rng(seed).normal(size=shape)
    image = (ndimage.gaussian_filter(noise, sigma) * 400 + 100).astype(np.float32)
    write_image(folder / f"{name}_0000.nii.gz", image, geometry)
    return image


def test_predict_resamples_to_the_training_spacing_and_writes_the_input_grid(
    tmp_path: Path, make_experiment, make_checkpoint, rotated
) -> None:
    exp = make_experiment(tmp_path, data={"spacing": [2.0, 1.0, 1.0]})
    ckpt, model = make_checkpoint(exp, tmp_path / "c.pt", target_spacing=[2.0, 1.0, 1.0])
    geometry = rotated((9, 14, 11), (2.5, 0.8, 1.3))
    image = _smooth_case(tmp_path / "in", "a", geometry.size, geometry)
    out = tmp_path / "pred"
    result = predict_cases(exp, tmp_path / "in", out, [ckpt], device="cpu", probabilities=True)
    assert result.written == ["a"] and not result.failed
    written = read_geometry(out / "a.nii.gz")
    assert written.size == geometry.size
    assert written.spacing == pytest.approx(geometry.spacing)
    assert written.origin == pytest.approx(geometry.origin)
    assert written.direction == pytest.approx(geometry.direction)
    # the pipeline by hand: normalise, cubic resampling, sliding window, linear back
    grid = resampled_geometry(geometry, (2.0, 1.0, 1.0))
    assert grid.size == (11, 11, 14)
    x = resample_image(normalize(image[None], "zscore"), geometry, grid, order=3)
    probs = sliding_window(model, torch.from_numpy(x), [8, 8, 8], overlap=0.5, batch_size=4)
    expected = resample_image(probs.numpy(), grid, geometry, order=1)
    got = _probabilities(out, "a")
    assert got.shape == (3, *geometry.size)
    np.testing.assert_allclose(got, expected, atol=2e-3)
    label, _ = read_label(out / "a.nii.gz")
    agree = label == expected.argmax(0)
    assert agree.mean() > 0.999  # float16 file vs float32: only exact ties may flip


def test_pointwise_model_gives_the_same_probabilities_with_or_without_resampling(
    tmp_path: Path, make_experiment, make_checkpoint, rotated
) -> None:
    """A 1×1×1 network commutes with resampling up to interpolation error on a smooth image,
    also through the two-pass anisotropic path (3 mm / 0.7 mm > 3): probabilities put back on
    a grid other than the one they came from, or a misplaced in-plane pass, would show here."""
    model_spec = {"arch": "cnn", "dims": 3, "filters": 4, "classes": 3, "layers": 1}
    model_spec["kernel_size"] = 1
    native = make_experiment(tmp_path, model=model_spec)
    resampled = make_experiment(tmp_path, model=model_spec, data={"spacing": [1.0, 1.0, 1.0]})
    geometry = rotated((10, 24, 20), (3.0, 0.7, 0.9))
    _smooth_case(tmp_path / "in", "a", geometry.size, geometry, sigma=1.5)
    a, _ = make_checkpoint(native, tmp_path / "native.pt", seed=3)
    b, _ = make_checkpoint(resampled, tmp_path / "resampled.pt", seed=3, target_spacing=[1, 1, 1])
    predict_cases(native, tmp_path / "in", tmp_path / "p0", [a], device="cpu", probabilities=True)
    predict_cases(
        resampled, tmp_path / "in", tmp_path / "p1", [b], device="cpu", probabilities=True
    )
    p0, p1 = _probabilities(tmp_path / "p0", "a"), _probabilities(tmp_path / "p1", "a")
    assert p0.std(axis=(1, 2, 3)).min() > 0.01  # the model responds to the image
    assert np.abs(p0 - p1).max() > 1e-4  # it did resample
    inner = (slice(None), slice(2, -2), slice(2, -2), slice(2, -2))
    # measured 0.0036; probabilities put back half a millimetre off give 0.0116
    assert np.abs(p0 - p1)[inner].mean() < 0.007


def test_spacing_must_match_the_checkpoint(
    tmp_path: Path, make_experiment, make_checkpoint, rotated
) -> None:
    trained = make_experiment(tmp_path, data={"spacing": [2.0, 1.0, 1.0]})
    ckpt, _ = make_checkpoint(trained, tmp_path / "c.pt", target_spacing=[2.0, 1.0, 1.0])
    geometry = rotated((6, 8, 8), (2.0, 1.0, 1.0))
    _smooth_case(tmp_path / "in", "a", geometry.size, geometry)
    for data, match in (
        ({"spacing": [1.0, 1.0, 1.0]}, r"trained at spacing \[2.0, 1.0, 1.0\].*\[1.0, 1.0, 1.0\]"),
        (
            {"spacing": None},
            r"resampled to \[2.0, 1.0, 1.0\] mm but the spec's data.spacing is null",
        ),
    ):
        exp = make_experiment(tmp_path, data=data)
        with pytest.raises(CheckpointError, match=match):
            predict_cases(exp, tmp_path / "in", tmp_path / "pred", [ckpt], device="cpu")
    auto = make_experiment(tmp_path, data={"spacing": "auto"})
    native, _ = make_checkpoint(make_experiment(tmp_path), tmp_path / "native.pt")
    with pytest.raises(CheckpointError, match="no target_spacing"):
        predict_cases(auto, tmp_path / "in", tmp_path / "pred", [native], device="cpu")
    assert not (tmp_path / "pred" / "a.nii.gz").exists()


def test_ensemble_of_checkpoints_at_different_spacings_averages_on_the_input_grid(
    tmp_path: Path, make_experiment, make_checkpoint, rotated
) -> None:
    exp = make_experiment(tmp_path, data={"spacing": "auto"})
    first, _ = make_checkpoint(exp, tmp_path / "f0.pt", seed=1, target_spacing=[2.0, 1.0, 1.0])
    second, _ = make_checkpoint(exp, tmp_path / "f1.pt", seed=2, target_spacing=[1.0, 0.5, 0.5])
    geometry = rotated((7, 10, 9), (2.5, 0.8, 1.3))
    _smooth_case(tmp_path / "in", "a", geometry.size, geometry)
    singles = []
    for ckpt in (first, second):
        out = tmp_path / f"p_{ckpt.stem}"
        predict_cases(exp, tmp_path / "in", out, [ckpt], device="cpu", probabilities=True)
        singles.append(_probabilities(out, "a"))
    out = tmp_path / "ensemble"
    predict_cases(exp, tmp_path / "in", out, [first, second], device="cpu", probabilities=True)
    both = _probabilities(out, "a")
    assert both.shape == (3, *geometry.size)
    np.testing.assert_allclose(both, (singles[0] + singles[1]) / 2, atol=2e-3)
    assert np.abs(singles[0] - singles[1]).max() > 0.05  # the members really differ
    assert read_geometry(out / "a.nii.gz").size == geometry.size


def test_2d_model_on_single_slice_volumes_resamples_in_plane(
    tmp_path: Path, make_experiment, make_checkpoint, rotated
) -> None:
    exp = make_experiment(tmp_path, dims=2, data={"spacing": [0.5, 0.5]})
    ckpt, _ = make_checkpoint(exp, tmp_path / "c.pt", target_spacing=[0.5, 0.5])
    geometry = rotated((1, 12, 10), (3.0, 0.8, 1.1))
    _smooth_case(tmp_path / "in", "a", geometry.size, geometry)
    predict_cases(exp, tmp_path / "in", tmp_path / "pred", [ckpt], device="cpu")
    written = read_geometry(tmp_path / "pred" / "a.nii.gz")
    assert written.size == geometry.size and written.origin == pytest.approx(geometry.origin)


@pytest.mark.slow
def test_train_resolves_auto_spacing_once_and_predict_reuses_it(
    tmp_path: Path, anisotropic_dataset: Path, make_experiment
) -> None:
    exp = make_experiment(
        tmp_path,
        data={
            "root": str(anisotropic_dataset),
            "spacing": "auto",
            "patch_size": [8, 16, 16],
            "val_cases": ["case_3"],
        },
    )
    result = fit(exp, device="cpu")
    median = [4.0, 0.9, 0.9]
    stored = json.loads((result.run_dir / "spacing.json").read_text())["spacing"]
    assert stored == pytest.approx(median)
    state = load_checkpoint(result.run_dir / "checkpoint_best.pt")
    assert state["target_spacing"] == pytest.approx(median)
    assert state["spec"]["data"]["spacing"] == "auto"
    image_path = anisotropic_dataset / "imagesTr" / "case_3_0000.nii.gz"
    out = tmp_path / "pred"
    predict_cases(exp, image_path, out, device="cpu")
    written = read_geometry(out / "case_3.nii.gz")
    source = read_geometry(image_path)
    assert written.size == source.size and written.spacing == pytest.approx(source.spacing)
    assert written.direction == pytest.approx(source.direction)
