"""``segcli plan`` end to end: specs that load and train, bad input, cache, budget, channels."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from segcli.cli import app
from segcli.config import load
from segcli.io.images import make_geometry, write_image
from segcli.plan.budget import Measurement

from .conftest import make_dataset

runner = CliRunner()


def plan(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["plan", *args])
    return result.exit_code, result.output


def train_two_iterations(spec: Path, tmp_path: Path) -> Path:
    from segcli.engine.train import fit

    exp = load(spec, ["train.epochs=1", "train.iterations_per_epoch=2", "train.workers=0",
                      f"output={tmp_path / 'runs'}"])  # fmt: skip
    result = fit(exp, device="cpu")
    assert result.iterations == 2
    return result.run_dir


def test_plan_3d_loads_trains_and_explains(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "ds", cases=5, shape=(16, 16, 16),
                        labels={"0": "background", "1": "blob"})  # fmt: skip
    spec = tmp_path / "exp.yaml"
    code, out = plan(str(root), "-o", str(spec), "--device", "cpu")
    assert code == 0, out
    assert "patch size" in out and "receptive field" in out
    text = spec.read_text()
    assert "# patch size: 16×16×16" in text  # a comment per decision, above its key
    exp = load(spec)
    assert exp.model.arch == "unet" and exp.model.dims == 3
    assert exp.data.patch_size == [16, 16, 16] and exp.model.depth == 2
    assert exp.model.labels == {0: "background", 1: "blob"}
    assert exp.data.normalization == "zscore" and exp.loss.name == "dice_ce"
    assert (tmp_path / "exp.fingerprint.json").is_file()
    train_two_iterations(spec, tmp_path)


def test_json_is_the_same_plan(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "ds", cases=3, shape=(12, 12, 12), radius=2)
    spec = tmp_path / "exp.yaml"
    code, out = plan(str(root), "-o", str(spec), "--json", "--name", "blobs")
    assert code == 0, out
    data = json.loads(out)
    assert data["spec"]["name"] == "blobs"
    assert data["spec"]["data"]["patch_size"] == load(spec).data.patch_size
    names = [d["name"] for d in data["decisions"]]
    assert {"target spacing", "patch size", "pooling", "filters", "schedule"} <= set(names)
    assert all(d["rule"] for d in data["decisions"])


def test_2d_data_gives_a_2d_plan_with_lesion_metrics(toy2d: Path, tmp_path: Path) -> None:
    spec = tmp_path / "toy2d.yaml"
    code, out = plan(str(toy2d), "-o", str(spec))
    assert code == 0, out
    exp = load(spec)
    assert exp.model.dims == 2 and len(exp.data.patch_size) == 2
    # 3×3 lesions: a detection problem
    assert {"lesion_tp", "lesion_fn", "lesion_fp", "lesion_f1"} <= set(exp.evaluation.metrics)
    code, out = plan(str(toy2d), "-o", str(tmp_path / "x.yaml"), "--dims", "3")
    assert code == 1 and "--dims 3" in out and not (tmp_path / "x.yaml").exists()


def test_ct_channel_gets_ct_auto(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "ds", cases=3, shape=(12, 12, 12), radius=2,
                        channel_names={"0": "CT"})  # fmt: skip
    spec = tmp_path / "ct.yaml"
    assert plan(str(root), "-o", str(spec))[0] == 0
    assert load(spec).data.normalization == "ct_auto"


def test_anisotropic_spacing_is_planned_per_axis(tmp_path: Path) -> None:
    from segcli.config.schema import UNetSpec

    root = make_dataset(tmp_path / "ds", cases=3, shape=(10, 48, 48), spacing=(4.0, 0.8, 0.8),
                        radius=4)  # fmt: skip
    spec = tmp_path / "aniso.yaml"
    code, out = plan(str(root), "-o", str(spec))
    assert code == 0, out
    exp = load(spec)
    if "strides" not in UNetSpec.model_fields:
        pytest.skip("this segcli's U-Net has no model.strides yet")
    strides, kernels = exp.model.strides, exp.model.kernel_sizes
    assert strides[0][0] == 1 and strides[0][1:] == [2, 2]  # z not pooled first
    assert kernels[0][0] == 1  # and 1-wide kernels along z
    train_two_iterations(spec, tmp_path)


def test_two_channels_plan_train_predict(tmp_path: Path) -> None:
    from segcli.engine.predict import predict_cases

    root = make_dataset(tmp_path / "ds", cases=4, shape=(12, 12, 12), radius=2, channels=2,
                        channel_names={"0": "T1", "1": "T2"})  # fmt: skip
    spec = tmp_path / "two.yaml"
    assert plan(str(root), "-o", str(spec))[0] == 0
    exp = load(spec, [f"output={tmp_path / 'runs'}"])
    assert exp.model.in_channels == 2
    run = train_two_iterations(spec, tmp_path)
    result = predict_cases(exp, root / "imagesTr", tmp_path / "pred",
                           checkpoints=[run / "checkpoint_last.pt"], device="cpu")  # fmt: skip
    assert not result.failed
    assert len(list((tmp_path / "pred").glob("*.nii.gz"))) == 4


# --------------------------------------------------------------------------- bad input


def assert_nothing_written(tmp_path: Path) -> None:
    assert not (tmp_path / "exp.yaml").exists()
    assert not (tmp_path / "exp.fingerprint.json").exists()


def test_not_a_dataset(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    code, out = plan(str(tmp_path / "empty"), "-o", str(tmp_path / "exp.yaml"))
    assert code == 1 and "imagesTr" in out and "Traceback" not in out
    assert_nothing_written(tmp_path)


def test_geometry_mismatch_names_the_case(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "ds", cases=3, shape=(8, 8, 8), radius=2)
    label = np.zeros((8, 8, 8), np.uint8)
    write_image(root / "labelsTr" / "case01.nii.gz", label, make_geometry((8, 8, 8), (2, 2, 2)))
    code, out = plan(str(root), "-o", str(tmp_path / "exp.yaml"))
    assert code == 1 and "case01" in out and "spacing" in out
    assert_nothing_written(tmp_path)


def test_missing_channel_names_the_case(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "ds", cases=3, shape=(8, 8, 8), radius=2, channels=2)
    os.remove(root / "imagesTr" / "case02_0001.nii.gz")
    code, out = plan(str(root), "-o", str(tmp_path / "exp.yaml"))
    assert code == 1 and "case02" in out and "channel" in out
    assert_nothing_written(tmp_path)


def test_label_not_in_dataset_json(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "ds", cases=2, shape=(8, 8, 8), radius=2,
                        labels={"0": "background", "2": "two"})  # fmt: skip
    code, out = plan(str(root), "-o", str(tmp_path / "exp.yaml"))
    assert code == 1 and "case00" in out and "dataset.json" in out
    assert_nothing_written(tmp_path)


def test_budget_too_small(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import segcli.engine.plan as engine_plan

    root = make_dataset(tmp_path / "ds", cases=3, shape=(8, 8, 8), radius=2)
    slow = Measurement(step_seconds=30.0, val_case_seconds=1.0, load_case_seconds=0.1,
                       startup_seconds=5.0)  # fmt: skip
    monkeypatch.setattr(engine_plan, "measure_spec", lambda *a, **k: slow)
    monkeypatch.setattr(engine_plan, "_startup_seconds", lambda: 5.0)
    code, out = plan(str(root), "-o", str(tmp_path / "exp.yaml"), "--budget-minutes", "1")
    assert code == 1 and "--budget-minutes 1" in out and "too small" in out
    assert_nothing_written(tmp_path)
    code, out = plan(str(root), "-o", str(tmp_path / "exp.yaml"), "--budget-minutes", "-2")
    assert code == 1 and "--budget-minutes" in out


def test_budget_sizes_network_and_schedule(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import segcli.engine.plan as engine_plan

    root = make_dataset(tmp_path / "ds", cases=5, shape=(16, 16, 16))
    seen: list[int] = []

    def fake(spec: dict, *args: object, **kwargs: object) -> Measurement:
        filters = spec["model"]["filters"]
        seen.append(filters)
        # step time ∝ width²: 32 filters 0.16 s, 16 → 0.04 s, 8 → 0.01 s
        return Measurement(0.16 * (filters / 32) ** 2, 0.05, 0.01, 3.0)

    monkeypatch.setattr(engine_plan, "measure_spec", fake)
    monkeypatch.setattr(engine_plan, "_startup_seconds", lambda: 3.0)
    spec = tmp_path / "exp.yaml"
    code, out = plan(str(root), "-o", str(spec), "--budget-minutes", "2", "--json")
    assert code == 0, out
    # 108 s usable: 32 filters ≈ 600 steps (< 2,000), 16 filters ≈ 2,500 → 16 is chosen
    assert seen == [8, 32, 16]
    exp = load(spec)
    assert exp.model.filters == 16
    steps = exp.train.epochs * exp.train.iterations_per_epoch
    assert 2000 <= steps <= 108 / 0.04
    budget = json.loads(out)["budget"]
    assert budget["predicted_seconds"] <= 120 * 0.9


def test_real_one_step_measurement(tmp_path: Path) -> None:
    from segcli.engine.plan import plan_command

    root = make_dataset(tmp_path / "ds", cases=3, shape=(12, 12, 12), radius=2)
    result = plan_command(root, tmp_path / "exp.yaml", budget_minutes=3, device="cpu",
                          measure_steps=1)  # fmt: skip
    candidate = result.plan.candidates[-1]
    assert candidate.measurement is not None and candidate.measurement.step_seconds > 0
    assert result.plan.schedule is not None
    assert result.plan.schedule.predicted_seconds <= 180


# --------------------------------------------------------------------------- cache


def test_fingerprint_cache_reused_and_invalidated(tmp_path: Path) -> None:
    from segcli.engine.plan import plan_command

    root = make_dataset(tmp_path / "ds", cases=3, shape=(8, 8, 8), radius=2)
    spec = tmp_path / "exp.yaml"
    first = plan_command(root, spec, device="cpu")
    assert not first.fingerprint_reused
    second = plan_command(root, spec, device="cpu")
    assert second.fingerprint_reused and second.text == first.text
    # a changed label map makes the cache stale
    shutil.copy(root / "labelsTr" / "case00.nii.gz", root / "labelsTr" / "case01.nii.gz")
    stamp = first.fingerprint_path.stat().st_mtime_ns + 10**9
    os.utime(root / "labelsTr" / "case01.nii.gz", ns=(stamp, stamp))
    third = plan_command(root, spec, device="cpu")
    assert not third.fingerprint_reused
    assert third.fingerprint.cases[1].labels == third.fingerprint.cases[0].labels


def test_dims_2_on_3d_data_plans_slices_and_trains(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "ds", cases=4, shape=(6, 16, 16), radius=2)
    spec = tmp_path / "slices.yaml"
    code, out = plan(str(root), "-o", str(spec), "--dims", "2")
    assert code == 0, out
    exp = load(spec)
    assert exp.model.dims == 3 and exp.data.patch_size[0] == 1
    assert all(s[0] == 1 for s in exp.model.strides)
    assert all(k[0] == 1 for k in exp.model.kernel_sizes)
    # flips of a one-slice patch (negative strides on a length-1 axis) must reach torch
    train_two_iterations(spec, tmp_path)


def test_plan_help_lists_the_spec_options() -> None:
    result = runner.invoke(app, ["plan", "--help"])
    assert result.exit_code == 0
    for flag in ("--output", "--name", "--dims", "--budget-minutes", "--device", "--gpu-memory",
                 "--json"):  # fmt: skip
        assert flag in result.output


def test_output_must_be_yaml(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "ds", cases=2, shape=(8, 8, 8), radius=2)
    code, out = plan(str(root), "-o", str(tmp_path / "exp.json"))
    assert code == 1 and ".yaml" in out


def test_nnunet_regions_in_dataset_json_plan_to_regions_and_train(tmp_path: Path) -> None:
    """nnU-Net v2's region form (lists in labels, regions_class_order) becomes segcli's
    regions: with the same names and order, and the planned spec trains."""
    import json

    import numpy as np

    from segcli.io.images import make_geometry, write_image

    root = make_dataset(tmp_path / "ds", cases=4, shape=(16, 16, 16))
    geometry = make_geometry((16, 16, 16), (1.0, 1.0, 1.0))
    for path in sorted((root / "labelsTr").iterdir()):  # nested: 1 ⊃ 2 ⊃ 3
        label = np.zeros((16, 16, 16), np.uint8)
        label[3:13, 3:13, 3:13] = 1
        label[5:11, 5:11, 5:11] = 2
        label[7:9, 7:9, 7:9] = 3
        write_image(path, label, geometry)
    meta = {
        "channel_names": {"0": "MRI"},
        "labels": {"background": 0, "whole": [1, 2, 3], "core": [2, 3], "enhancing": 3},
        "regions_class_order": [1, 2, 3],
    }
    (root / "dataset.json").write_text(json.dumps(meta))
    spec = tmp_path / "regions.yaml"
    code, out = plan(str(root), "-o", str(spec), "--device", "cpu")
    assert code == 0, out
    exp = load(spec)
    assert list(exp.regions) == ["whole", "core", "enhancing"]
    assert exp.regions == {"whole": [1, 2, 3], "core": [2, 3], "enhancing": [3]}
    assert exp.multilabel and exp.model.num_classes == 3
    assert "nnU-Net regions" in out
    train_two_iterations(spec, tmp_path)


def test_regions_that_cannot_be_decoded_fall_back_to_labels(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "ds", cases=3, shape=(16, 16, 16),
                        labels={"background": 0, "a": [1], "b": [1]})  # fmt: skip
    spec = tmp_path / "fallback.yaml"
    code, out = plan(str(root), "-o", str(spec), "--device", "cpu")
    assert code == 0, out
    exp = load(spec)
    assert exp.regions is None and not exp.multilabel
    assert "cannot be decoded" in out


# --------------------------------------------------------------------------- absent device


def _no_cuda() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the absent-device path is not reachable")


def test_plan_for_a_gpu_this_machine_does_not_have(tmp_path: Path) -> None:
    # a laptop or a login node plans for the GPU node: rules and --gpu-memory alone
    _no_cuda()
    root = make_dataset(tmp_path / "ds", cases=5, shape=(16, 16, 16))
    spec = tmp_path / "gpu.yaml"
    code, out = plan(str(root), "-o", str(spec), "--device", "cuda", "--json")
    assert code == 0, out
    payload = json.loads(out)
    notes = [c for c in payload["checks"] if c["name"] == "device absent"]
    assert len(notes) == 1 and "8 GB" in notes[0]["message"]
    exp = load(spec)
    # the GPU branch: nnU-Net's width and SGD, the batch from the memory rule
    assert exp.model.filters == 32 and exp.train.optimizer == "sgd"
    cpu_spec = tmp_path / "cpu.yaml"
    assert plan(str(root), "-o", str(cpu_spec), "--device", "cpu")[0] == 0
    assert load(cpu_spec).model.filters == 8
    # --gpu-memory is the memory target the rules use (the shrink itself: test_planner.py)
    code, out = plan(str(root), "-o", str(tmp_path / "g.yaml"), "--device", "cuda:1",
                     "--gpu-memory", "3", "--json")  # fmt: skip
    assert code == 0, out
    (note,) = [c for c in json.loads(out)["checks"] if c["name"] == "device absent"]
    assert "cuda:1" in note["message"] and "3 GB" in note["message"]


def test_a_budget_for_an_absent_gpu_is_refused(tmp_path: Path) -> None:
    _no_cuda()
    root = make_dataset(tmp_path / "ds", cases=3, shape=(12, 12, 12), radius=2)
    spec = tmp_path / "exp.yaml"
    code, out = plan(str(root), "-o", str(spec), "--device", "cuda", "--budget-minutes", "5")
    assert code == 1
    assert "--budget-minutes 5 --device cuda" in out and "not on this machine" in out
    assert "Traceback" not in out and not spec.exists()
    code, out = plan(str(root), "-o", str(spec), "--device", "cuda:x")
    assert code == 1 and "--device cuda:x" in out and not spec.exists()


def test_absent_gpu_plan_of_the_shared_hippocampus_matches_nnunet(
    hippocampus: Path, tmp_path: Path
) -> None:
    # nnU-Net v2's 3d_fullres plan of Task04 for its 8 GB reference: patch 40×56×40, three
    # poolings on every axis (kernels 3), 32 → 256 filters; batch 7 from its rule of at most
    # 5 % of the dataset's voxels per batch (208 × 36·50·35 / 40·56·40)
    _no_cuda()
    spec = tmp_path / "hippo.yaml"
    code, out = plan(str(hippocampus), "-o", str(spec), "--device", "cuda")
    assert code == 0, out
    exp = load(spec)
    assert exp.data.patch_size == [40, 56, 40]
    assert exp.model.depth == 3 and exp.model.filters == 32
    assert exp.train.batch_size == 7
    assert exp.data.spacing is None  # every case is 1 mm already
    assert exp.data.normalization == "zscore"


def test_absent_gpu_plan_equals_nnunet_v2s_own_planner(hippocampus: Path, tmp_path: Path) -> None:
    # nnU-Net v2's planner itself (the bench extra; skipped without it) on the same data
    import importlib.util
    import subprocess
    import sys

    _no_cuda()
    if importlib.util.find_spec("nnunetv2") is None:
        pytest.skip("nnunetv2 is not installed (the bench extra)")
    command = Path(sys.executable).with_name("nnUNetv2_plan_and_preprocess")
    if not command.exists():
        pytest.skip(f"{command.name} is not beside {sys.executable}")
    raw = tmp_path / "raw" / "Dataset004_Hippocampus"
    for sub in ("imagesTr", "labelsTr"):
        (raw / sub).mkdir(parents=True)
    for image in sorted((hippocampus / "imagesTr").glob("*.nii.gz")):
        case = image.name.removesuffix(".nii.gz")
        (raw / "imagesTr" / f"{case}_0000.nii.gz").symlink_to(image)
        (raw / "labelsTr" / image.name).symlink_to(hippocampus / "labelsTr" / image.name)
    meta = json.loads((hippocampus / "dataset.json").read_text())
    labels = {name: int(value) for value, name in meta["labels"].items()}
    count = len(list((raw / "labelsTr").iterdir()))
    (raw / "dataset.json").write_text(json.dumps({"channel_names": {"0": "MRI"},
        "labels": labels, "numTraining": count, "file_ending": ".nii.gz"}))  # fmt: skip
    env = dict(
        os.environ,
        nnUNet_raw=str(tmp_path / "raw"),
        nnUNet_preprocessed=str(tmp_path / "pre"),
        nnUNet_results=str(tmp_path / "res"),
    )
    done = subprocess.run([str(command), "-d", "4", "-c", "3d_fullres", "-np", "2", "-npfp", "2",
                           "--no_pp"], env=env, capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    plans = json.loads((tmp_path / "pre" / raw.name / "nnUNetPlans.json").read_text())
    theirs = plans["configurations"]["3d_fullres"]

    spec = tmp_path / "hippo.yaml"
    assert plan(str(hippocampus), "-o", str(spec), "--device", "cuda")[0] == 0
    ours = load(spec)
    assert ours.data.patch_size == theirs["patch_size"]
    assert ours.train.batch_size == theirs["batch_size"]
    arch = theirs["architecture"]["arch_kwargs"]
    widths = [min(ours.model.filters * 2**s, ours.model.max_filters)
              for s in range(ours.model.depth + 1)]  # fmt: skip
    assert widths == arch["features_per_stage"]
    assert [list(s) for s in arch["strides"][1:]] == [[2, 2, 2]] * ours.model.depth
    assert theirs["normalization_schemes"] == ["ZScoreNormalization"]
    assert ours.data.normalization == "zscore"
