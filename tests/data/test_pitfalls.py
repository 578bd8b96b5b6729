"""The lecture's metric pitfalls as claims that fail when they stop holding.

The predictions are built by ``segcli.data.pitfalls`` (the same arrays docs/lecture.md shows)
and scored by ``segcli.metrics.evaluate_case``; hole counts are checked against a flood fill.
"""

from __future__ import annotations

from collections import deque

import numpy as np
import pytest

from segcli.data.pitfalls import (
    count_holes,
    disk,
    hole_predictions,
    same_dice_predictions,
    shift,
    tiny_lesions,
)
from segcli.metrics import evaluate_case

SPACING = (1.0, 1.0)


def score(pred: np.ndarray, ref: np.ndarray, metrics: list[str]) -> dict[str, float]:
    return evaluate_case(pred.astype(np.uint8), ref.astype(np.uint8), SPACING, [1], metrics)[1]


@pytest.mark.parametrize("radius", [9, 12, 15])
def test_five_predictions_share_dice_but_not_shape(radius: int) -> None:
    ref = disk(64, radius)
    preds = same_dice_predictions(ref, dice=0.6)
    assert len(preds) == 5
    rows = [score(p, ref, ["dice", "iou", "hd95", "assd", "nsd"]) for p in preds.values()]
    dice = [r["dice"] for r in rows]
    assert max(dice) - min(dice) <= 0.01 and abs(np.mean(dice) - 0.6) <= 0.01
    assert all(abs(r["iou"] - 0.6 / 1.4) <= 0.01 for r in rows)
    hd95 = sorted(r["hd95"] for r in rows)
    assert hd95[-1] > 3 * hd95[0]  # the boundary errors differ by a factor of 3 or more
    assert len({round(r["hd95"], 1) for r in rows}) == 5  # and no two are alike
    nsd = [r["nsd"] for r in rows]
    assert max(nsd) - min(nsd) > 0.5


def flood_fill_holes(mask: np.ndarray) -> int:
    """Reference: background regions (8-connected) not reached from outside the image."""
    h, w = mask.shape
    seen = np.zeros((h + 2, w + 2), bool)
    padded = np.pad(mask, 1)
    regions = 0
    for start in zip(*np.nonzero(~padded), strict=True):
        if seen[start]:
            continue
        regions += 1
        queue = deque([start])
        seen[start] = True
        while queue:
            y, x = queue.popleft()
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    ny, nx = y + dy, x + dx
                    inside = 0 <= ny < h + 2 and 0 <= nx < w + 2
                    if inside and not padded[ny, nx] and not seen[ny, nx]:
                        seen[ny, nx] = True
                        queue.append((ny, nx))
    return regions - 1


def test_hole_count_against_flood_fill(rng: np.random.Generator) -> None:
    ring = disk(20, 8) & ~disk(20, 4)
    assert count_holes(ring) == 1 and count_holes(disk(20, 8)) == 0
    # a diagonal gap does not open a hole: the outline's voxels only meet at corners
    diamond = np.zeros((7, 7), bool)
    for y, x in [(1, 3), (2, 2), (2, 4), (3, 1), (3, 5), (4, 2), (4, 4), (5, 3)]:
        diamond[y, x] = True
    assert count_holes(diamond) == flood_fill_holes(diamond) == 0
    for _ in range(30):
        mask = rng.random((12, 13)) < 0.6
        assert count_holes(mask) == flood_fill_holes(mask)


def test_a_hole_near_the_outline_is_invisible_to_overlap_and_percentile_distances() -> None:
    ref = disk(64, 12)
    preds = hole_predictions(ref)
    metrics = ["dice", "hd", "hd95", "assd", "nsd", "cc_pred", "cc_ref"]
    near = score(preds["hole near the outline"], ref, metrics)
    assert near["hd95"] == 0.0 and near["assd"] < 0.05
    assert near["nsd"] > 0.99 and near["dice"] > 0.99
    assert near["cc_pred"] == near["cc_ref"] == 1  # components do not see it either
    assert count_holes(preds["hole near the outline"]) == 1 and count_holes(ref) == 0
    # segcli's boundary includes a hole's rim: the maximum notices it, a central hole more
    assert near["hd"] > 0
    central = score(preds["central hole"], ref, metrics)
    assert central["hd95"] > 5 and count_holes(preds["central hole"]) == 1
    assert count_holes(preds["four holes near the outline"]) == 4


def test_tiny_lesions_dice_collapses_under_a_one_voxel_shift_detection_does_not() -> None:
    ref = tiny_lesions(size=128, count=30, lesion=3, seed=0)
    metrics = ["dice", "lesion_f1", "lesion_tp", "cc_ref"]
    assert score(ref, ref, metrics)["cc_ref"] == 30  # the lesions are separate
    one = score(shift(ref, (0, 1)), ref, metrics)
    assert one["dice"] == pytest.approx(2 / 3) and one["lesion_f1"] == 1.0
    two = score(shift(ref, (0, 2)), ref, metrics)
    assert two["dice"] == pytest.approx(1 / 3) and two["lesion_f1"] == 1.0
    gone = score(shift(ref, (0, 3)), ref, metrics)
    assert gone["dice"] == 0.0 and gone["lesion_f1"] == 0.0
    big = disk(128, 20)
    assert score(shift(big, (0, 1)), big, ["dice"])["dice"] > 0.95  # large: a small loss
    from scipy import ndimage

    lab, n = ndimage.label(ref)
    half = score(np.isin(lab, np.arange(1, n // 2 + 1)), ref, metrics)
    assert abs(half["dice"] - one["dice"]) < 0.01 and half["lesion_f1"] < 0.7
