"""evaluate_case: the registry, label handling, cropping, empty masks and the lecture's pitfall."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes, arrays

import segcli.metrics as metrics_module
from segcli.config.schema import METRIC_NAMES
from segcli.errors import SpecError
from segcli.metrics import ALL_METRICS, METRICS, evaluate_case, evaluate_labels
from segcli.metrics.surface import hd, hd95, nsd, surface_distances

DISTANCES = ("hd", "hd95", "assd", "masd")


def test_registry_matches_spec_names() -> None:
    assert ALL_METRICS == METRIC_NAMES
    assert set(METRICS.names()) == set(ALL_METRICS)
    assert {n for n in ALL_METRICS if METRICS.get(n).needs_distances} == {*DISTANCES, "nsd"}


def test_unknown_metric_suggests_the_closest() -> None:
    with pytest.raises(SpecError, match=r"did you mean 'hd95'"):
        evaluate_case(np.zeros((3, 3), int), np.zeros((3, 3), int), (1, 1), metrics=["hd59"])


# Both empty / prediction only / reference only — SPEC.md's table.
EMPTY_TABLE = {
    "both": {"dice": 1, "iou": 1, "nsd": 1, "hd": 0, "hd95": 0, "assd": 0, "masd": 0},
    "pred_only": {"dice": 0, "iou": 0, "nsd": 0, **dict.fromkeys(DISTANCES, math.nan)},
    "ref_only": {"dice": 0, "iou": 0, "nsd": 0, **dict.fromkeys(DISTANCES, math.nan)},
}


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("case", list(EMPTY_TABLE))
def test_empty_mask_table(case: str, dims: int) -> None:
    blob = np.zeros((6,) * dims, np.uint8)
    blob[(slice(2, 4),) * dims] = 1
    empty = np.zeros_like(blob)
    pred, ref = {"both": (empty, empty), "pred_only": (blob, empty), "ref_only": (empty, blob)}[
        case
    ]
    values = evaluate_case(pred, ref, (0.7,) * dims, labels=[1])[1]
    for name, expected in EMPTY_TABLE[case].items():
        got = values[name]
        assert (math.isnan(got) and math.isnan(expected)) or got == expected, name
    if case == "both":
        assert values["lesion_f1"] == 1 and values["precision"] == values["recall"] == 1
    else:
        assert values["lesion_f1"] == 0
        assert math.isnan(values["recall" if case == "pred_only" else "precision"])


def test_equal_dice_can_hide_very_different_hausdorff() -> None:
    """The lecture's pitfall: same TP/FP/FN, but one error sits far from the structure."""
    ref = np.zeros((40, 40), np.uint8)
    ref[10:20, 10:20] = 1
    near = ref.copy()
    near[10:20, 10] = 0  # drop the left column
    near[10:20, 20] = 1  # add a column on the right
    far = ref.copy()
    far[10:20, 10] = 0
    far[30:35, 30:32] = 1  # the same 10 voxels, far away
    a = evaluate_case(near, ref, (1.0, 1.0))[1]
    b = evaluate_case(far, ref, (1.0, 1.0))[1]
    assert a["dice"] == b["dice"] == pytest.approx(0.9)
    assert a["hd"] == 1.0 and b["hd"] > 15
    assert b["hd95"] > 3 * a["hd95"]
    assert (a["cc_pred"], b["cc_pred"], a["lesion_fp"], b["lesion_fp"]) == (1, 2, 0, 1)


@settings(max_examples=60, deadline=None)
@given(
    arrays(
        np.uint8,
        array_shapes(min_dims=2, max_dims=3, min_side=2, max_side=9),
        elements=st.integers(0, 3),
    ),
    st.data(),
)
def test_cropped_multilabel_pass_equals_whole_image_per_label(pred, data) -> None:
    """Cropping to the union box and one find_objects pass change nothing."""
    ref = data.draw(arrays(np.uint8, pred.shape, elements=st.integers(0, 3)))
    spacing = tuple(data.draw(st.floats(0.3, 3.0)) for _ in pred.shape)
    got = evaluate_case(pred, ref, spacing, metrics=["dice", "hd", "hd95", "nsd", "cc_ref"])
    present = sorted((set(np.unique(pred)) | set(np.unique(ref))) - {0})
    assert sorted(got) == present
    for label in present:
        d = surface_distances(pred == label, ref == label, spacing, method="edt")
        for name, expected in (("hd", hd(d)), ("hd95", hd95(d)), ("nsd", nsd(d, 1.0))):
            value = got[label][name]
            assert (math.isnan(value) and math.isnan(expected)) or value == pytest.approx(expected)


@settings(max_examples=60, deadline=None)
@given(
    arrays(
        np.uint8,
        array_shapes(min_dims=2, max_dims=3, min_side=1, max_side=8),
        elements=st.integers(0, 2),
    ),
    st.data(),
)
def test_swap_symmetry_of_case_metrics(pred, data) -> None:
    ref = data.draw(arrays(np.uint8, pred.shape, elements=st.integers(0, 2)))
    spacing = tuple(data.draw(st.floats(0.3, 3.0)) for _ in pred.shape)
    a = evaluate_case(pred, ref, spacing, labels=[1, 2])
    b = evaluate_case(ref, pred, spacing, labels=[1, 2])
    pairs = [(m, m) for m in ("dice", "iou", "hd", "hd95", "assd", "masd", "nsd")] + [
        ("precision", "recall"),
        ("vol_ref", "vol_pred"),
        ("cc_ref", "cc_pred"),
        ("lesion_fn", "lesion_fp"),
    ]
    for label in (1, 2):
        for x, y in pairs:
            u, v = a[label][x], b[label][y]
            assert (math.isnan(u) and math.isnan(v)) or u == pytest.approx(v), (label, x)


def test_labels_default_present_values_and_absent_requested_label() -> None:
    pred = np.zeros((8, 8), np.int16)
    ref = np.zeros((8, 8), np.int16)
    ref[1:3, 1:3] = 1
    pred[5:7, 5:7] = 4
    assert sorted(evaluate_case(pred, ref, (1, 1))) == [1, 4]
    got = evaluate_case(pred, ref, (1, 1), labels=[7, 1], metrics=["dice", "hd"])
    assert list(got) == [1, 7]
    assert got[7] == {"dice": 1.0, "hd": 0.0}
    assert got[1]["dice"] == 0.0 and math.isnan(got[1]["hd"])


def test_boolean_masks_and_metric_order() -> None:
    ref = np.zeros((5, 5), bool)
    ref[1:4, 1:4] = True
    got = evaluate_case(ref, ref, (1, 1), metrics=["nsd", "dice", "nsd"])
    assert list(got[1]) == ["nsd", "dice"] and got[1] == {"nsd": 1.0, "dice": 1.0}


def test_distances_skipped_unless_asked_and_computed_once_per_label(monkeypatch) -> None:
    calls = []
    real = metrics_module.surface_distances

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(metrics_module, "surface_distances", counting)
    labels = np.zeros((10, 10), np.uint8)
    labels[1:4, 1:4], labels[6:9, 6:9] = 1, 2
    evaluate_case(labels, labels, (1, 1), metrics=["dice", "vol_ref", "lesion_f1"])
    assert calls == []
    evaluate_case(labels, labels, (1, 1))
    assert len(calls) == 2


def test_nsd_tolerance_and_volumes_use_spacing() -> None:
    ref = np.zeros((3, 12, 12), np.uint8)
    ref[1, 3:8, 3:8] = 1
    pred = np.roll(ref, 1, axis=2)  # 0.8 mm along x
    low = evaluate_case(pred, ref, (2.0, 0.8, 0.8), nsd_tolerance=0.5)[1]
    high = evaluate_case(pred, ref, (2.0, 0.8, 0.8), nsd_tolerance=0.8)[1]
    assert low["nsd"] < high["nsd"] == 1.0
    assert low["hd"] == pytest.approx(0.8)
    assert low["vol_ref"] == pytest.approx(25 * 2.0 * 0.8 * 0.8 / 1000)


def test_evaluate_labels_reports_voxel_counts_and_status() -> None:
    pred = np.zeros((6, 6), np.uint8)
    ref = np.zeros((6, 6), np.uint8)
    ref[0:2, 0:2] = 1
    pred[4:6, 4:6] = 2
    pred[0, 0] = 3
    ref[0, 1] = 3
    results = {r.label: r for r in evaluate_labels(pred, ref, (1, 1), labels=[1, 2, 3, 4])}
    assert results[1].status == "missed" and results[1].ref_voxels == 3
    assert results[2].status == "false_alarm" and results[2].pred_voxels == 4
    assert results[3].status == "both"
    assert results[4].status == "absent"


@pytest.mark.parametrize(
    ("pred", "ref", "spacing", "labels", "message"),
    [
        (np.zeros((3, 3)), np.zeros((3, 3), int), (1, 1), None, "dtype float64"),
        (np.full((3, 3), -1), np.zeros((3, 3), int), (1, 1), None, "negative"),
        (np.zeros((3, 3), int), np.zeros((3, 4), int), (1, 1), None, "shape"),
        (np.zeros((3, 3), int), np.zeros((3, 3), int), (1, 1, 1), None, "spacing"),
        (np.zeros((3, 3), int), np.zeros((3, 3), int), (1, -1), None, "spacing"),
        (np.zeros((3, 3), int), np.zeros((3, 3), int), (1, 1), [0], "labels"),
        (np.zeros((3, 3), int), np.zeros((3, 3), int), (1, 1), [1.5], "labels"),
    ],
)
def test_bad_inputs_raise_value_error(pred, ref, spacing, labels, message) -> None:
    with pytest.raises(ValueError, match=message):
        evaluate_case(pred, ref, spacing, labels=labels)


def test_negative_tolerance_rejected() -> None:
    with pytest.raises(ValueError, match="nsd_tolerance"):
        evaluate_case(np.zeros((3, 3), int), np.zeros((3, 3), int), (1, 1), nsd_tolerance=-0.1)
