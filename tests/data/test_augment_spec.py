"""``data.augment`` in the spec: nnU-Net's preset, overrides, old specs, errors, the loader."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from segcli.cli import app
from segcli.config import load
from segcli.config.loader import dump, from_dict
from segcli.config.schema import AugmentSpec, DataSpec
from segcli.data.augment import (
    RandomBlur,
    RandomBrightness,
    RandomContrast,
    RandomFlip,
    RandomGamma,
    RandomIntensity,
    RandomLowResolution,
    RandomNoise,
    RandomRot90,
    build_augment,
)
from segcli.data.loaders import PatchDataset, build_loader, list_case_names, load_cases

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"

#: nnU-Net v2's training augmentation as read in MIC-DKFZ/nnUNet (0e49508),
#: nnunetv2/training/nnUNetTrainer/nnUNetTrainer.py: get_training_transforms and
#: configure_rotation_dummyDA_mirroring_and_inital_patch_size
NNUNET = {
    "rotation": {"probability": 0.2, "degrees": None},  # ±30° 3D, ±180° 2D / pseudo-2D
    "scaling": {"probability": 0.2, "factor": (0.7, 1.4)},  # p_scaling, scaling
    "elastic": {"probability": 0.0},  # p_elastic_deform=0
    "noise": {"probability": 0.1, "std": (0.0, 0.1), "channel_probability": 1.0},
    "blur": {"probability": 0.2, "sigma": (0.5, 1.0), "channel_probability": 0.5},
    "brightness": {"probability": 0.15, "factor": (0.75, 1.25), "channel_probability": 1.0},
    "contrast": {"probability": 0.15, "factor": (0.75, 1.25), "channel_probability": 1.0},
    "low_resolution": {"probability": 0.25, "zoom": (0.5, 1.0), "channel_probability": 0.5},
    "inverted_gamma": {"probability": 0.1, "gamma": (0.7, 1.5), "channel_probability": 1.0},
    "gamma": {"probability": 0.3, "gamma": (0.7, 1.5), "channel_probability": 1.0},
}


def test_the_preset_is_nnunet_v2s_training_augmentation() -> None:
    spec = AugmentSpec(preset="nnunet")
    for name, values in NNUNET.items():
        block = getattr(spec, name)
        for key, value in values.items():
            assert getattr(block, key) == value, (name, key)
    # mirroring: every axis with probability 0.5 (MirrorTransform(allowed_axes=(0, 1, 2)))
    assert spec.flip and spec.probability == 0.5 and spec.flip_axes is None
    assert spec.interpolation == "linear" and spec.label_interpolation == "onehot"
    assert not spec.rotate90 and not spec.intensity


def test_the_preset_builds_nnunets_pipeline_in_its_order() -> None:
    augment = build_augment(AugmentSpec(preset="nnunet"), 3, spacing=(1.0, 1.0, 1.0))
    assert [type(t) for t in augment.transforms] == [
        RandomNoise,
        RandomBlur,
        RandomBrightness,
        RandomContrast,
        RandomLowResolution,
        RandomGamma,
        RandomGamma,
        RandomFlip,
    ]
    assert [t.inverted for t in augment.transforms[5:7]] == [True, False]
    spatial = augment.spatial
    assert spatial is not None and spatial.coarse_axis is None
    assert (spatial.rotation_probability, spatial.scaling_probability) == (0.2, 0.2)
    assert spatial.elastic_probability == 0.0 and spatial.scale == (0.7, 1.4)
    # thick slices: blur, low resolution and the spatial transform stay in-plane
    aniso = build_augment(AugmentSpec(preset="nnunet"), 3, spacing=(5.0, 0.7, 0.7))
    assert aniso.spatial.coarse_axis == 0
    assert aniso.transforms[1].coarse_axis == 0 and aniso.transforms[4].coarse_axis == 0


def test_transforms_next_to_the_preset_override_it_key_by_key() -> None:
    spec = AugmentSpec(
        preset="nnunet",
        elastic={"probability": 0.2},
        noise=None,
        gamma={"gamma": [0.8, 1.2]},
        flip=False,
    )
    assert spec.elastic.probability == 0.2 and spec.elastic.sigma == (9.0, 13.0)
    assert spec.noise is None  # null leaves a preset transform out
    assert spec.gamma.gamma == (0.8, 1.2) and spec.gamma.probability == 0.3
    assert not spec.flip
    built = build_augment(spec, 2)
    assert RandomNoise not in {type(t) for t in built.transforms}
    assert RandomFlip not in {type(t) for t in built.transforms}
    # without the preset a block alone has nnU-Net's values too, and nothing else is on
    alone = AugmentSpec(flip=False, blur={})
    assert alone.blur.probability == 0.2 and alone.rotation is None and alone.noise is None


def test_the_resolved_spec_loads_back_to_itself() -> None:
    raw = {
        "data": {
            "synthetic": {"dims": 3},
            "patch_size": [16, 16, 16],
            "augment": {"preset": "nnunet", "elastic": {"probability": 0.3}, "noise": None},
        },
        "model": {"arch": "unet", "dims": 3},
    }
    exp = from_dict(raw)
    again = from_dict(yaml.safe_load(dump(exp)))
    assert again == exp and again.data.augment.noise is None


@pytest.mark.parametrize("path", sorted(EXPERIMENTS.glob("*.yaml")), ids=lambda p: p.stem)
def test_old_specs_load_and_build_what_they_did(path: Path) -> None:
    augment = load(path).data.augment
    raw = yaml.safe_load(path.read_text())["data"]["augment"]
    assert set(raw) <= {"flip", "rotate90", "intensity", "probability"}
    assert augment.preset is None
    assert all(getattr(augment, name) is None for name in NNUNET)
    built = build_augment(augment, len(load(path).data.patch_size))
    expected = [
        cls
        for cls, on in ((RandomFlip, augment.flip), (RandomRot90, augment.rotate90),
                        (RandomIntensity, augment.intensity))
        if on
    ]  # fmt: skip
    assert [type(t) for t in built.transforms] == expected and built.spatial is None


#: sums over items 0..3 of PatchDataset with {flip, rotate90, intensity, probability 0.6} on
#: 4 synthetic cases of 16 voxels a side, seed 3 — drawn by the code before nnU-Net's
#: transforms existed (commit 707dfb2): (Σ image, Σ image², Σ label · (voxel index mod 7))
LEGACY = {
    (2, 12): [(25.5313, 203.8641, 0), (-2.2749, 110.541, 25), (37.595, 242.546, 0),
              (-5.6439, 138.615, 27)],
    (2, 20): [(-249.2821, 623.742, 0), (-174.8347, 455.3526, 18), (-220.3693, 604.7002, 0),
              (-205.9867, 550.6563, 38)],
    (3, 12): [(123.561, 1789.5615, 80), (12.9853, 1725.6984, 83), (-209.8689, 1212.6486, 79),
              (-343.4008, 1336.0267, 80)],
    (3, 20): [(-5500.0738, 11707.8128, 55), (-5152.8161, 10897.1053, 61),
              (-5325.5413, 10293.356, 107), (-5152.8161, 10897.1053, 107)],
}  # fmt: skip


@pytest.mark.parametrize(("dims", "patch"), list(LEGACY))
def test_old_augmentation_draws_the_patches_it_drew_before(dims: int, patch: int) -> None:
    spec = DataSpec(synthetic={"dims": dims, "cases": 4, "size": 16}, patch_size=[12] * dims)
    cases = load_cases(spec, list_case_names(spec, 0), seed=0)
    augment = AugmentSpec(flip=True, rotate90=True, intensity=True, probability=0.6)
    ds = PatchDataset(cases, [patch] * dims, 0.5, augment, length=30, seed=3)
    for i, (total, square, weighted) in enumerate(LEGACY[(dims, patch)]):
        image, label = ds[i]
        image = image.numpy().astype(np.float64)
        label = label.numpy()
        assert image.sum() == pytest.approx(total, abs=2e-3)
        assert (image**2).sum() == pytest.approx(square, abs=2e-3)
        assert int((label * (np.arange(label.size).reshape(label.shape) % 7)).sum()) == weighted


@pytest.mark.parametrize(
    ("augment", "key"),
    [
        ({"preset": "nnUNet"}, "data.augment.preset"),
        ({"noise": {"stdd": [0, 0.1]}}, "data.augment.noise.stdd"),
        ({"scaling": {"factor": [1.4, 0.7]}}, "data.augment.scaling.factor"),
        ({"rotation": {"degrees": [-200, 30]}}, "data.augment.rotation.degrees"),
        ({"gamma": {"probability": 1.5}}, "data.augment.gamma.probability"),
        ({"low_resolution": {"zoom": [0.5, 2]}}, "data.augment.low_resolution.zoom"),
        ({"flip_axes": [0, 5]}, "data.augment.flip_axes"),
        ({"interpolation": "bicubic"}, "data.augment.interpolation"),
    ],
)
def test_a_bad_augment_key_exits_1_naming_it(tmp_path: Path, augment: dict, key: str) -> None:
    spec = yaml.safe_load((EXPERIMENTS / "toy-cnn.yaml").read_text())
    spec["data"]["augment"] = augment
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(spec))
    result = CliRunner().invoke(app, ["receptive-field", str(path)])
    assert result.exit_code == 1, result.output
    assert key in " ".join(result.output.split()) and "Traceback" not in result.output


def test_the_preset_loader_is_reproducible_and_the_same_for_any_worker_count() -> None:
    spec = DataSpec(synthetic={"dims": 3, "cases": 3, "size": 20}, patch_size=[12, 12, 12])
    cases = load_cases(spec, list_case_names(spec, 0), seed=0)
    augment = AugmentSpec(preset="nnunet", rotation={"probability": 0.7})
    ds = PatchDataset(cases, [12, 12, 12], 0.5, augment, length=8, seed=1)
    batches = []
    for workers in (0, 2):
        loader = build_loader(ds, batch_size=4, workers=workers, seed=0)
        ds.set_epoch(0)
        batches.append([(i.clone(), lab.clone()) for i, lab in loader])
        del loader
    for (i0, l0), (i2, l2) in zip(*batches, strict=True):
        assert torch.equal(i0, i2) and torch.equal(l0, l2)
    assert not torch.equal(ds[(1, 0)][0], ds[(0, 0)][0])  # another epoch, other patches
