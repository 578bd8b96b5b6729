"""``segcli predict`` engine (segcli/engine/predict.py) on tiny NIfTI files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from segcli.config import Experiment, from_dict
from segcli.data.preprocessing import normalize
from segcli.engine.predict import predict_cases
from segcli.errors import CheckpointError, DataError
from segcli.inference import sliding_window
from segcli.io.checkpoint import save_checkpoint
from segcli.io.dataset import find_inputs
from segcli.io.images import make_geometry, read_geometry, read_image, read_label, write_image


def spec(tmp_path: Path, dims: int = 3, **sections: Any) -> Experiment:
    patch = [8] * dims
    raw: dict[str, Any] = {
        "name": "tiny",
        "data": {"root": str(tmp_path / "unused"), "patch_size": patch},
        "model": {"arch": "cnn", "dims": dims, "filters": 3, "classes": 3, "layers": 2},
        "inference": {"batch_size": 3, "overlap": 0.5},
        "output": str(tmp_path / "runs"),
    }
    for key, value in sections.items():
        merge = isinstance(raw.get(key), dict) and "arch" not in value
        raw[key] = {**raw[key], **value} if merge else value
    return from_dict(raw)


def rotated(shape: tuple[int, ...]):
    """Anisotropic spacing, a non-zero origin and a rotated direction."""
    dims = len(shape)
    c, s = np.cos(0.4), np.sin(0.4)
    rot = np.eye(dims)
    rot[:2, :2] = [[c, -s], [s, c]]
    return make_geometry(shape, (2.5, 0.8, 1.3)[-dims:], (-10.0, 33.5, 4.25)[:dims], rot.ravel())


def write_case(folder: Path, name: str, shape: tuple[int, ...], channels: int = 1, seed: int = 0):
    rng = np.random.default_rng(seed)
    geometry = rotated(shape)
    arrays = []
    for c in range(channels):
        array = (rng.normal(size=shape) * 50 + 100).astype(np.float32)
        write_image(folder / f"{name}_{c:04d}.nii.gz", array, geometry)
        arrays.append(array)
    return np.stack(arrays), geometry


def expected_labels(
    exp: Experiment, models: list[torch.nn.Module], image: np.ndarray
) -> np.ndarray:
    x = torch.from_numpy(normalize(image, exp.data.normalization))
    probs = torch.stack(
        [
            sliding_window(
                m,
                x,
                exp.inference.patch_size,
                overlap=0.5,
                batch_size=3,
                precision=exp.inference.precision,  # predict runs the spec's precision
            )
            for m in models
        ]
    ).mean(0)
    return probs.argmax(0).numpy()


# --------------------------------------------------------------------------- end to end


def test_3d_cases_keep_exact_geometry_and_drop_the_channel_suffix(
    tmp_path: Path, make_checkpoint
) -> None:
    exp = spec(tmp_path)
    ckpt, model = make_checkpoint(exp, Path(exp.run_dir) / "checkpoint_best.pt")
    images = tmp_path / "imagesTs"
    a, geo_a = write_case(images, "case_a", (11, 9, 7), seed=1)
    b, _ = write_case(images, "case_b", (5, 12, 10), seed=2)  # axis 0 smaller than the patch
    result = predict_cases(exp, images, tmp_path / "pred", device="cpu")
    assert result.written == ["case_a", "case_b"] and not result.failed
    assert result.checkpoints == [ckpt]
    assert sorted(p.name for p in (tmp_path / "pred").iterdir()) == [
        "case_a.nii.gz",
        "case_b.nii.gz",
    ]
    label, geo = read_label(tmp_path / "pred" / "case_a.nii.gz")
    assert (
        geo
        == read_geometry(images / "case_a_0000.nii.gz")
        == read_image(images / "case_a_0000.nii.gz")[1]
    )
    assert geo.spacing == pytest.approx(geo_a.spacing) and geo.direction == pytest.approx(
        geo_a.direction
    )
    np.testing.assert_array_equal(label, expected_labels(exp, [model], a))
    label_b, _ = read_label(tmp_path / "pred" / "case_b.nii.gz")
    assert label_b.shape == (5, 12, 10)
    np.testing.assert_array_equal(label_b, expected_labels(exp, [model], b))
    assert "predicted 2 case(s)" in result.summary()


def test_two_channels_are_stacked_and_a_single_file_brings_its_siblings(
    tmp_path: Path, make_checkpoint
) -> None:
    exp = spec(tmp_path, dims=2, model={"in_channels": 2})
    _, model = make_checkpoint(exp, Path(exp.run_dir) / "checkpoint_best.pt")
    images = tmp_path / "images"
    image, _ = write_case(images, "ct_007", (13, 10), channels=2)
    write_case(images, "ct_008", (9, 9), channels=2)
    assert list(find_inputs(images / "ct_007_0000.nii.gz")) == ["ct_007"]
    result = predict_cases(exp, images / "ct_007_0000.nii.gz", tmp_path / "pred", device="cpu")
    assert result.written == ["ct_007"]
    label, _ = read_label(tmp_path / "pred" / "ct_007.nii.gz")
    np.testing.assert_array_equal(label, expected_labels(exp, [model], image))


def test_existing_outputs_are_skipped_unless_overwrite(tmp_path: Path, make_checkpoint) -> None:
    exp = spec(tmp_path, dims=2)
    make_checkpoint(exp, Path(exp.run_dir) / "checkpoint_best.pt")
    images = tmp_path / "images"
    write_case(images, "a", (10, 10))
    write_case(images, "b", (10, 10))
    out = tmp_path / "pred"
    predict_cases(exp, images, out, device="cpu")
    sentinel = np.full((10, 10), 7, dtype=np.uint8)
    write_image(out / "a.nii.gz", sentinel, rotated((10, 10)))
    again = predict_cases(exp, images, out, device="cpu")
    assert again.skipped == ["a", "b"] and again.written == []
    assert "skipped 2" in again.summary()
    assert (read_label(out / "a.nii.gz")[0] == 7).all()
    redo = predict_cases(exp, images, out, device="cpu", overwrite=True)
    assert redo.written == ["a", "b"]
    assert (read_label(out / "a.nii.gz")[0] < 3).all()


def test_probabilities_file_and_ensemble_average(tmp_path: Path, make_checkpoint) -> None:
    exp = spec(tmp_path, dims=2)
    first, m1 = make_checkpoint(exp, tmp_path / "one.pt", seed=1)
    second, m2 = make_checkpoint(exp, tmp_path / "two.pt", seed=2)
    images = tmp_path / "images"
    image, _ = write_case(images, "a", (14, 11))
    singles = []
    for ckpt in (first, second):
        out = tmp_path / f"pred_{ckpt.stem}"
        predict_cases(exp, images, out, checkpoints=[ckpt], device="cpu", probabilities=True)
        singles.append(np.load(out / "a_probabilities.npz")["probabilities"].astype(np.float32))
    out = tmp_path / "pred_ens"
    result = predict_cases(
        exp, images, out, checkpoints=[first, second], device="cpu", probabilities=True
    )
    assert result.checkpoints == [first, second]
    with np.load(out / "a_probabilities.npz") as npz:
        assert list(npz) == ["probabilities"]
        probs = npz["probabilities"]
    assert probs.dtype == np.float16 and probs.shape == (3, 14, 11)
    np.testing.assert_allclose(probs.sum(0), 1.0, atol=3e-3)
    np.testing.assert_allclose(probs, (singles[0] + singles[1]) / 2, atol=1e-3)
    label, _ = read_label(out / "a.nii.gz")
    np.testing.assert_array_equal(label, expected_labels(exp, [m1, m2], image))


def test_multilabel_writes_the_highest_label_above_half(tmp_path: Path, make_checkpoint) -> None:
    exp = spec(tmp_path, dims=2, multilabel=True, loss={"name": "bce"})
    make_checkpoint(exp, Path(exp.run_dir) / "checkpoint_best.pt")
    images = tmp_path / "images"
    write_case(images, "a", (16, 12))
    predict_cases(exp, images, tmp_path / "pred", device="cpu", probabilities=True)
    probs = np.load(tmp_path / "pred" / "a_probabilities.npz")["probabilities"].astype(np.float32)
    assert (probs.sum(0) > 1.01).any()  # sigmoid per label, not a softmax
    expected = np.zeros(probs.shape[1:], dtype=np.uint8)
    for k in range(3):
        expected[probs[k] > 0.5] = k + 1
    label, _ = read_label(tmp_path / "pred" / "a.nii.gz")
    border = np.abs(probs - 0.5).min(0) < 1e-3  # float16 rounding may flip these
    np.testing.assert_array_equal(label[~border], expected[~border])


def test_2d_model_accepts_single_slice_volumes(tmp_path: Path, make_checkpoint) -> None:
    exp = spec(tmp_path, dims=2)
    _, model = make_checkpoint(exp, Path(exp.run_dir) / "checkpoint_best.pt")
    images = tmp_path / "images"
    image, geometry = write_case(images, "slice", (1, 12, 9))
    predict_cases(exp, images, tmp_path / "pred", device="cpu")
    label, geo = read_label(tmp_path / "pred" / "slice.nii.gz")
    assert label.shape == (1, 12, 9) and geo.size == geometry.size
    np.testing.assert_array_equal(label[0], expected_labels(exp, [model], image[:, 0]))


# --------------------------------------------------------------------------- failures


def test_a_broken_case_leaves_no_file_and_the_others_finish(
    tmp_path: Path, make_checkpoint
) -> None:
    exp = spec(tmp_path, dims=2)
    make_checkpoint(exp, Path(exp.run_dir) / "checkpoint_best.pt")
    images = tmp_path / "images"
    write_case(images, "a", (10, 10))
    (images / "b_0000.nii.gz").write_bytes(b"not a nifti at all")
    nan = np.ones((10, 10), dtype=np.float32)
    nan[3, 4] = np.nan
    write_image(images / "c_0000.nii.gz", nan, rotated((10, 10)))
    write_case(images, "d", (10, 10, 10))  # 3-D image for a 2-D model
    result = predict_cases(exp, images, tmp_path / "pred", device="cpu", probabilities=True)
    assert result.written == ["a"]
    assert set(result.failed) == {"b", "c", "d"}
    assert "b_0000.nii.gz" in result.failed["b"] and "cannot read" in result.failed["b"]
    assert "c_0000.nii.gz" in result.failed["c"] and "NaN" in result.failed["c"]
    assert "d_0000.nii.gz" in result.failed["d"] and "model is 2-D" in result.failed["d"]
    assert sorted(p.name for p in (tmp_path / "pred").iterdir()) == [
        "a.nii.gz",
        "a_probabilities.npz",
    ]
    assert "3 failed" in result.summary()


def test_wrong_channel_count_names_the_file_and_the_expected_count(
    tmp_path: Path, make_checkpoint
) -> None:
    exp = spec(tmp_path, dims=2, model={"in_channels": 2})
    make_checkpoint(exp, Path(exp.run_dir) / "checkpoint_best.pt")
    write_case(tmp_path / "images", "a", (10, 10), channels=1)
    result = predict_cases(exp, tmp_path / "images", tmp_path / "pred", device="cpu")
    assert "a_0000.nii.gz" in result.failed["a"] and "in_channels = 2" in result.failed["a"]
    assert not (tmp_path / "pred" / "a.nii.gz").exists()


def test_checkpoint_of_another_model_is_refused_with_the_differing_keys(
    tmp_path: Path, make_checkpoint
) -> None:
    exp = spec(tmp_path, dims=2)
    other = spec(tmp_path, dims=2, model={"arch": "dilated", "dims": 2, "filters": 5, "classes": 3})
    ckpt, _ = make_checkpoint(other, tmp_path / "other.pt")
    write_case(tmp_path / "images", "a", (10, 10))
    with pytest.raises(CheckpointError) as info:
        predict_cases(exp, tmp_path / "images", tmp_path / "pred", checkpoints=[ckpt], device="cpu")
    message = str(info.value)
    assert str(ckpt) in message and "model.arch" in message and "model.filters" in message
    assert not (tmp_path / "pred").exists()


def test_weights_that_do_not_fit_are_refused(tmp_path: Path) -> None:
    exp = spec(tmp_path, dims=2)
    path = tmp_path / "broken.pt"
    save_checkpoint(
        path, {"model": {"nonsense": torch.zeros(2)}, "spec": exp.model_dump(mode="json")}
    )
    write_case(tmp_path / "images", "a", (10, 10))
    with pytest.raises(
        CheckpointError, match=r"broken\.pt: the weights do not fit model.arch 'cnn'"
    ):
        predict_cases(exp, tmp_path / "images", tmp_path / "pred", checkpoints=[path], device="cpu")


def test_default_checkpoint_falls_back_to_last_then_fails_clearly(
    tmp_path: Path, make_checkpoint
) -> None:
    exp = spec(tmp_path, dims=2)
    write_case(tmp_path / "images", "a", (10, 10))
    with pytest.raises(CheckpointError, match="no checkpoint_best.pt or checkpoint_last.pt"):
        predict_cases(exp, tmp_path / "images", tmp_path / "pred", device="cpu")
    last, _ = make_checkpoint(exp, Path(exp.run_dir) / "checkpoint_last.pt")
    result = predict_cases(exp, tmp_path / "images", tmp_path / "pred", device="cpu")
    assert result.checkpoints == [last] and "checkpoint_last.pt" in result.notes[0]


def test_dataset_root_as_input_points_at_the_images_folder(tmp_path: Path) -> None:
    write_case(tmp_path / "ds" / "imagesTs", "a", (10, 10))
    with pytest.raises(DataError, match=r"point --input at the images folder.*imagesTs"):
        find_inputs(tmp_path / "ds")
    with pytest.raises(DataError, match="input not found"):
        find_inputs(tmp_path / "nowhere")


def test_resampling_spec_needs_a_checkpoint_trained_at_that_spacing(
    tmp_path: Path, make_checkpoint
) -> None:
    exp = spec(tmp_path, dims=2, data={"spacing": [1.0, 1.0]})
    ckpt, _ = make_checkpoint(spec(tmp_path, dims=2), tmp_path / "native.pt")  # no target_spacing
    write_case(tmp_path / "images", "a", (10, 10))
    with pytest.raises(CheckpointError, match="data.spacing.*no target_spacing"):
        predict_cases(exp, tmp_path / "images", tmp_path / "pred", [ckpt], device="cpu")


def test_ct_auto_needs_statistics_in_the_checkpoint(tmp_path: Path, make_checkpoint) -> None:
    exp = spec(tmp_path, dims=2, data={"normalization": "ct_auto"})
    ckpt, _ = make_checkpoint(exp, tmp_path / "c.pt")
    write_case(tmp_path / "images", "a", (10, 10))
    with pytest.raises(CheckpointError, match="normalization_stats"):
        predict_cases(exp, tmp_path / "images", tmp_path / "pred", checkpoints=[ckpt], device="cpu")
    stats = {"low": [50.0], "high": [150.0], "mean": [100.0], "std": [20.0]}
    ckpt, _ = make_checkpoint(exp, tmp_path / "c.pt", normalization_stats=stats)
    result = predict_cases(
        exp, tmp_path / "images", tmp_path / "pred", checkpoints=[ckpt], device="cpu"
    )
    assert result.written == ["a"]


# --------------------------------------------------------------------------- ensemble: runs


def _run_folder(exp: Experiment, make_checkpoint, seed: int) -> Path:
    """``exp``'s run folder as training leaves it: config.yaml and checkpoint_best.pt."""
    from segcli.config import dump

    run = exp.run_folder
    run.mkdir(parents=True, exist_ok=True)
    (run / "config.yaml").write_text(dump(exp))
    make_checkpoint(exp, run / "checkpoint_best.pt", seed=seed)
    return run


def test_spec_ensemble_averages_runs_each_with_its_own_spec(
    tmp_path: Path, make_checkpoint
) -> None:
    # another architecture, normalisation and window: each member predicts as it was trained
    first = spec(tmp_path, dims=2)
    other = spec(tmp_path, dims=2, name="other", data={"normalization": "minmax"},
                 model={"arch": "dilated", "dims": 2, "filters": 2, "classes": 3,
                        "dilations": [1, 2]},
                 inference={"patch_size": [6, 6], "overlap": 0.25, "batch_size": 2})  # fmt: skip
    _run_folder(first, make_checkpoint, seed=1)
    member = _run_folder(other, make_checkpoint, seed=2)
    images = tmp_path / "images"
    write_case(images, "a", (14, 11))
    singles = []
    for exp in (first, other):
        out = tmp_path / f"single_{exp.name}"
        predict_cases(exp, images, out, device="cpu", probabilities=True)
        singles.append(np.load(out / "a_probabilities.npz")["probabilities"].astype(np.float32))
    both = first.model_copy(update={"ensemble": [str(member)]})
    out = tmp_path / "ensemble"
    result = predict_cases(both, images, out, device="cpu", probabilities=True)
    assert result.checkpoints == [first.run_folder / "checkpoint_best.pt",
                                  member / "checkpoint_best.pt"]  # fmt: skip
    probs = np.load(out / "a_probabilities.npz")["probabilities"].astype(np.float32)
    np.testing.assert_allclose(probs, (singles[0] + singles[1]) / 2, atol=2e-3)
    assert not np.allclose(singles[0], singles[1], atol=0.05)  # the members do differ
    label, _ = read_label(out / "a.nii.gz")
    np.testing.assert_array_equal(label, probs.argmax(0))


def test_ensemble_members_that_cannot_join_are_named(tmp_path: Path, make_checkpoint) -> None:
    from segcli.errors import SpecError

    first = spec(tmp_path, dims=2)
    _run_folder(first, make_checkpoint, seed=1)
    images = tmp_path / "images"
    write_case(images, "a", (14, 11))
    missing = first.model_copy(update={"ensemble": [str(tmp_path / "nowhere")]})
    with pytest.raises(CheckpointError, match="nowhere"):
        predict_cases(missing, images, tmp_path / "o1", device="cpu")
    two = spec(tmp_path, dims=2, name="two",
               model={"arch": "cnn", "dims": 2, "filters": 3, "classes": 2, "layers": 2})  # fmt: skip
    member = _run_folder(two, make_checkpoint, seed=2)
    mixed = first.model_copy(update={"ensemble": [str(member)]})
    with pytest.raises(SpecError, match=f"ensemble member {member}: its outputs"):
        predict_cases(mixed, images, tmp_path / "o2", device="cpu")
    assert not (tmp_path / "o2" / "a.nii.gz").exists()


def test_a_cross_validated_member_gives_all_its_folds_or_fold_k(
    tmp_path: Path, make_checkpoint
) -> None:
    from segcli.engine.predict import ensemble_member

    first = spec(tmp_path, dims=2)
    for k in (0, 1):
        fold = spec(tmp_path, dims=2, name="cv", data={"folds": 2, "fold": k})
        _run_folder(fold, make_checkpoint, seed=k)
    folder = tmp_path / "runs" / "cv"
    member, paths = ensemble_member(first, folder)
    assert member.data.fold is None and member.data.folds == 2
    assert paths == [
        folder / "fold_0" / "checkpoint_best.pt",
        folder / "fold_1" / "checkpoint_best.pt",
    ]
    one = spec(tmp_path, dims=2, data={"folds": 2, "fold": 1})  # predict --fold 1
    assert ensemble_member(one, folder)[1] == [folder / "fold_1" / "checkpoint_best.pt"]
    # --checkpoint given: exactly those checkpoints, the members left out
    _run_folder(first, make_checkpoint, seed=3)
    images = tmp_path / "images"
    write_case(images, "a", (14, 11))
    both = first.model_copy(update={"ensemble": [str(folder)]})
    only = first.run_folder / "checkpoint_best.pt"
    result = predict_cases(both, images, tmp_path / "o", checkpoints=[only], device="cpu")
    assert result.checkpoints == [only]
