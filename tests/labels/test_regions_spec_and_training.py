"""The ``regions`` spec key end to end: validation, the nested toy, training and predict."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from segcli.config.loader import from_dict
from segcli.errors import SpecError

REPO = Path(__file__).resolve().parents[2]
BASE = {"data": {"root": "x"}, "model": {"arch": "dilated"}}


def test_regions_imply_sigmoid_channels_one_per_region() -> None:
    exp = from_dict({**BASE, "regions": {"organ": [1, 2], "lesion": [2]}})
    assert exp.multilabel is True
    assert exp.model.num_classes == 2
    assert exp.region_values == ((1, 2), (2,))
    plain = from_dict({**BASE, "multilabel": True, "model": {"arch": "dilated", "classes": 3}})
    assert plain.region_values == ((1,), (2,), (3,))
    assert from_dict(BASE).region_values is None


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        ({"regions": {"organ": [1, 2]}}, "regions: 'organ' would decode to several"),
        ({"regions": {"organ": "1"}}, "regions.organ: got '1'"),
        ({"regions": {"lesion": [2], "organ": [1, 2]}}, "regions: 'lesion' has no label value"),
        ({"regions": {"a": [0, 1]}}, "regions: 'a' holds 0"),
        ({"regions": {"o": [1, 2], "l": [2]}, "multilabel": False}, "remove multilabel: false"),
        (
            {"regions": {"o": [1, 2], "l": [2]}, "model": {"arch": "dilated", "classes": 3}},
            "set model.classes to 2",
        ),
        ({"regions": {"o": [1, 2], "l": [2]}, "loss": {"name": "ce"}}, "softmax loss"),
    ],
)
def test_bad_regions_name_the_key(extra: dict, fragment: str) -> None:
    with pytest.raises(SpecError) as err:
        from_dict({**BASE, **extra})
    assert fragment in str(err.value)


def test_nested_toy_structure_and_default_toy_unchanged(tmp_path: Path) -> None:
    from segcli.cli import app
    from segcli.data.synth import generate_nested

    for case in generate_nested(20, dims=2, seed=0) + generate_nested(3, dims=3, size=16, seed=1):
        lesion, organ = case.label == 2, case.label >= 1
        assert set(np.unique(case.label)) <= {0, 1, 2} and organ.any()
        # every lesion voxel lies in the organ's interior: all face neighbours are organ too
        for axis in range(case.label.ndim):
            for shift in (1, -1):
                assert np.roll(organ, shift, axis=axis)[lesion].all()
        if lesion.any():
            assert case.image[lesion].mean() > case.image[organ & ~lesion].mean() + 0.3
    assert sum(c.malign for c in generate_nested(20, seed=0)) >= 10  # most cases hold lesions
    result = CliRunner().invoke(app, ["synth", str(tmp_path / "n"), "--nested", "--cases", "4"])
    assert result.exit_code == 0, result.output
    import json

    meta = json.loads((tmp_path / "n" / "dataset.json").read_text())
    assert meta["labels"] == {"0": "background", "1": "organ", "2": "lesion"}
    assert meta["regions"] == {"organ": [1, 2], "lesion": [2]}


@pytest.mark.slow
def test_nested_toy_regions_reach_dice_090_and_predict_writes_labels(tmp_path: Path) -> None:
    """The issue's outcome test: a short region-based schedule learns both nested regions."""
    from segcli.config import load
    from segcli.engine.predict import predict_cases
    from segcli.engine.runtime import set_quiet
    from segcli.engine.synth import run_synth
    from segcli.engine.train import fit
    from segcli.io.images import read_label
    from segcli.metrics.regions import evaluate_regions

    set_quiet(True)
    run_synth(tmp_path / "train", cases=80, seed=0, nested=True)
    run_synth(tmp_path / "test", cases=20, seed=1, nested=True)
    exp = load(
        REPO / "experiments" / "toy-nested.yaml",
        [f"data.root={tmp_path / 'train'}", f"output={tmp_path / 'runs'}", "train.epochs=20"],
    )
    fit(exp, device="cpu")
    predict_cases(exp, tmp_path / "test" / "imagesTr", tmp_path / "pred", device="cpu")
    scores: dict[str, list[float]] = {"organ": [], "lesion": []}
    lesion_cases = 0
    for ref_path in sorted((tmp_path / "test" / "labelsTr").glob("*.nii.gz")):
        pred, _ = read_label(tmp_path / "pred" / ref_path.name)
        ref, _ = read_label(ref_path)
        assert set(np.unique(pred)) <= {0, 1, 2}
        lesion_cases += bool((ref == 2).any())
        found = evaluate_regions(pred, ref, (1.0, 1.0), exp.regions or {}, ["dice"])
        if (ref == 2).any():  # lesion Dice only where there is a lesion: no free 1.0s
            scores["lesion"].append(found["lesion"]["dice"])
        scores["organ"].append(found["organ"]["dice"])
    assert lesion_cases >= 5
    assert np.mean(scores["organ"]) >= 0.9, scores
    assert np.mean(scores["lesion"]) >= 0.9, scores


def test_region_run_end_to_end_writes_nested_label_maps(tmp_path: Path) -> None:
    """A two-epoch region run: config.yaml keeps the regions, predict decodes them to labels,
    and a checkpoint trained with other regions is refused."""
    import yaml

    from segcli.config.loader import from_dict
    from segcli.engine.predict import predict_cases
    from segcli.engine.runtime import set_quiet
    from segcli.engine.synth import run_synth
    from segcli.engine.train import fit
    from segcli.errors import CheckpointError
    from segcli.io.images import read_geometry, read_label

    set_quiet(True)
    run_synth(tmp_path / "data", cases=8, seed=0, nested=True)
    raw = {
        "name": "regions",
        "data": {"root": str(tmp_path / "data"), "patch_size": [32, 32], "val_fraction": 0.25},
        "model": {"arch": "dilated", "filters": 4},
        "regions": {"organ": [1, 2], "lesion": [2]},
        "train": {"epochs": 2, "iterations_per_epoch": 3, "batch_size": 4, "workers": 0},
        "output": str(tmp_path / "runs"),
    }
    exp = from_dict(raw)
    fit(exp, device="cpu")
    saved = yaml.safe_load((tmp_path / "runs" / "regions" / "config.yaml").read_text())
    assert saved["regions"] == {"organ": [1, 2], "lesion": [2]} and saved["multilabel"] is True
    assert from_dict(saved) == exp  # the resolved spec loads back unchanged
    images = tmp_path / "data" / "imagesTr"
    result = predict_cases(exp, images, tmp_path / "pred", device="cpu", probabilities=True)
    assert not result.failed and len(result.written) == 8
    for name in result.written:
        labels, geometry = read_label(tmp_path / "pred" / f"{name}.nii.gz")
        assert set(np.unique(labels)) <= {0, 1, 2}
        assert geometry.size == read_geometry(images / f"{name}_0000.nii.gz").size
        probs = np.load(tmp_path / "pred" / f"{name}_probabilities.npz")["probabilities"]
        assert probs.shape[0] == 2  # one sigmoid channel per region
        from segcli.labels import decode_regions

        clear = (np.abs(probs.astype(np.float32) - 0.5) > 1e-3).all(0)  # float16 rounding
        decoded = decode_regions(probs.astype(np.float32), ((1, 2), (2,)))
        np.testing.assert_array_equal(labels[clear], decoded[clear])
    other = from_dict({**raw, "regions": {"whole": [1, 2], "inner": [1]}})
    with pytest.raises(CheckpointError, match="regions"):
        predict_cases(other, images, tmp_path / "pred2", device="cpu")


@pytest.mark.parametrize("offset", [0, 2])  # 2: label values 3, 4 lie outside region numbers 1..2
def test_evaluate_with_a_regions_spec_scores_regions_by_name(tmp_path: Path, offset: int) -> None:
    import csv

    import yaml

    from segcli.cli import app
    from segcli.io.images import make_geometry, write_image

    rng = np.random.default_rng(3)
    (tmp_path / "pred").mkdir()
    (tmp_path / "ref").mkdir()
    expected: dict[tuple[str, str], float] = {}
    for i in range(3):
        ref = np.zeros((16, 16), np.uint8)
        ref[3:12, 3:12] = 1 + offset
        if offset == 0:  # else no reference holds the lesion value that predictions do
            ref[5:8, 5:8] = 2
        pred = ref.copy()
        flip = rng.random((16, 16)) < 0.15
        pred[flip] = np.array([0, 1 + offset, 2 + offset])[rng.integers(0, 3, int(flip.sum()))]
        geometry = make_geometry(ref.shape, (1.0, 1.0))
        write_image(tmp_path / "pred" / f"c{i}.nii.gz", pred, geometry)
        write_image(tmp_path / "ref" / f"c{i}.nii.gz", ref, geometry)
        regions = {"organ": [1 + offset, 2 + offset], "lesion": [2 + offset]}
        for name, values in regions.items():
            p, r = np.isin(pred, values), np.isin(ref, values)
            expected[(f"c{i}", name)] = 2 * (p & r).sum() / (p.sum() + r.sum())
    spec = {
        "data": {"root": str(tmp_path)},
        "model": {"arch": "dilated"},
        "regions": regions,
        "evaluation": {"metrics": ["dice", "hd95"]},
    }
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))  # order matters
    args = ["evaluate", str(tmp_path / "exp.yaml"), "--pred", str(tmp_path / "pred")]
    args += ["--ref", str(tmp_path / "ref"), "--output", str(tmp_path / "m.csv"), "--workers", "1"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "stray" not in result.output.lower()  # the regions' label values are the ones scored
    rows = list(csv.DictReader((tmp_path / "m.csv").read_text().splitlines()))
    assert {(r["case"], r["label"]) for r in rows} == set(expected)
    for r in rows:
        assert float(r["dice"]) == pytest.approx(expected[(r["case"], r["label"])])
    summary = list(csv.DictReader((tmp_path / "m_summary.csv").read_text().splitlines()))
    assert {r["label"] for r in summary} == {"organ", "lesion"}
    bad = CliRunner().invoke(app, [*args, "--labels", "1"])
    assert bad.exit_code == 1 and "regions" in bad.output
