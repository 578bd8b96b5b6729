"""``segcli evaluate --compare-postprocessing``: mean Dice per label before and after each step,
nnU-Net's keep rule, the table and ``<stem>_postprocessing.csv``."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from segcli.cli import app
from segcli.engine.evaluate import evaluate_command, evaluate_folders
from segcli.engine.metrics_output import POSTPROCESSING_COLUMNS
from segcli.io.dataset import pair_cases
from segcli.io.images import make_geometry, write_image
from segcli.metrics.postprocessing_gain import compare_postprocessing, postprocessing_steps


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 1.0 if not (a.any() or b.any()) else 2 * (a & b).sum() / (a.sum() + b.sum())


def crafted(root: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Two cases.  Label 1: a blob plus a spurious speck (largest component helps) and a hole
    the reference does not have (fill holes helps).  Label 2: two true blobs, one much smaller
    (largest component hurts)."""
    cases = {}
    for i in range(2):
        ref = np.zeros((24, 24), np.uint8)
        ref[2:10, 2:10] = 1
        ref[14:22, 2:12] = 2
        ref[14 : 16 + i, 18:20] = 2  # a small second component of label 2
        pred = ref.copy()
        pred[5:7, 5:7] = 0  # a hole in label 1
        pred[20 - i, 20] = 1  # a false speck of label 1
        pred[9, 2:4] = 0  # a small miss at the border of label 1 (not a hole)
        cases[f"case_{i}"] = (pred, ref)
        geometry = make_geometry(ref.shape, (0.8, 1.2))
        write_image(root / "pred" / f"case_{i}.nii.gz", pred, geometry)
        write_image(root / "ref" / f"case_{i}.nii.gz", ref, geometry)
    return cases


def test_rows_match_a_direct_dice_computation(tmp_path: Path) -> None:
    cases = crafted(tmp_path)
    rows = compare_postprocessing(
        pair_cases(tmp_path / "pred", tmp_path / "ref"), [1, 2], postprocessing_steps(min_size=3)
    )
    assert [(r.step, r.label) for r in rows] == [
        (step, label)
        for step in ("largest_component", "min_size=3", "fill_holes")
        for label in (1, 2)
    ]
    by_key = {(r.step, r.label): r for r in rows}
    for label in (1, 2):
        before = np.mean([dice(p == label, r == label) for p, r in cases.values()])
        for step in ("largest_component", "min_size=3", "fill_holes"):
            assert by_key[(step, label)].dice_before == pytest.approx(before)
        assert (before < 1) == (label == 1)  # label 1 has the crafted errors, 2 is perfect
    # largest component: removes label 1's speck (better), label 2's true small blob (worse)
    assert by_key[("largest_component", 1)].keep
    assert not by_key[("largest_component", 2)].keep
    assert (
        by_key[("largest_component", 2)].dice_after < by_key[("largest_component", 2)].dice_before
    )
    # min_size 3 removes the 1-voxel speck but keeps the 4- and 6-voxel blobs of label 2
    assert by_key[("min_size=3", 1)].keep and not by_key[("min_size=3", 2)].keep
    assert by_key[("min_size=3", 2)].delta == 0.0
    # fill holes: label 1's hole is filled (better); label 2 has none (unchanged, not kept)
    assert by_key[("fill_holes", 1)].keep and not by_key[("fill_holes", 2)].keep
    expected = np.mean([dice(_filled(p) == 1, r == 1) for p, r in cases.values()])
    assert by_key[("fill_holes", 1)].dice_after == pytest.approx(expected)
    assert all(r.n == 2 for r in rows)


def _filled(pred: np.ndarray) -> np.ndarray:
    out = pred.copy()
    out[5:7, 5:7] = 1
    return out


def test_evaluate_writes_the_csv_beside_the_metrics(tmp_path: Path, make_experiment) -> None:
    crafted(tmp_path)
    exp = make_experiment(tmp_path, dims=2, inference={"postprocess": {"min_size": 3}})
    output = tmp_path / "out" / "metrics.csv"
    evaluate_command(
        tmp_path / "pred",
        tmp_path / "ref",
        output,
        exp.evaluation,
        workers=1,
        compare_postprocessing=True,
        postprocess_min_size=exp.inference.postprocess.min_size,
    )
    with (tmp_path / "out" / "metrics_postprocessing.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert tuple(rows[0]) == POSTPROCESSING_COLUMNS
    assert [r["step"] for r in rows] == ["largest_component"] * 2 + ["min_size=3"] * 2 + [
        "fill_holes"
    ] * 2
    keep = {(r["step"], r["label"]): r["keep"] for r in rows}
    assert (
        keep[("largest_component", "1")] == "true" and keep[("largest_component", "2")] == "false"
    )
    for r in rows:
        assert float(r["delta"]) == pytest.approx(float(r["dice_after"]) - float(r["dice_before"]))
    # without a spec there is no min_size to try
    evaluate_command(
        tmp_path / "pred", tmp_path / "ref", output, workers=1, compare_postprocessing=True
    )
    with (tmp_path / "out" / "metrics_postprocessing.csv").open() as handle:
        assert {r["step"] for r in csv.DictReader(handle)} == {"largest_component", "fill_holes"}


def test_cli_flag_prints_the_table_and_writes_the_csv(tmp_path: Path) -> None:
    crafted(tmp_path)
    out = tmp_path / "m.csv"
    args = ["evaluate", "--pred", str(tmp_path / "pred"), "--ref", str(tmp_path / "ref")]
    result = CliRunner().invoke(
        app, [*args, "--output", str(out), "--workers", "1", "--compare-postprocessing"]
    )
    assert result.exit_code == 0, result.output
    assert "largest_component" in result.output and "keep" in result.output
    assert (tmp_path / "m_postprocessing.csv").is_file()
    plain = CliRunner().invoke(app, [*args, "--output", str(tmp_path / "n.csv"), "--workers", "1"])
    assert plain.exit_code == 0 and not (tmp_path / "n_postprocessing.csv").exists()


@pytest.mark.parametrize("labels", [None, [2]])
def test_the_worker_pool_compares_as_the_single_process_reference(
    tmp_path: Path, labels: list[int] | None
) -> None:
    """evaluate runs the comparison in its workers, on the maps it read for the metrics; it
    must give the rows of compare_postprocessing, which reads every pair again in one process."""
    crafted(tmp_path)
    steps = postprocessing_steps(min_size=3)
    result = evaluate_folders(
        tmp_path / "pred",
        tmp_path / "ref",
        tmp_path / "m.csv",
        ["dice"],
        labels=labels,
        workers=2,
        postprocessing=steps,
    )
    reference = compare_postprocessing(
        pair_cases(tmp_path / "pred", tmp_path / "ref"), labels or [1, 2], steps
    )
    assert list(result.postprocessing) == reference
