"""Region-based labels (segcli.labels, segcli.losses.regions, segcli.metrics.regions).

References are brute-force loops over voxels and regions, written independently of the
vectorised code under test.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from segcli.labels import (
    check_region_labels,
    decode_regions,
    default_regions,
    encode_regions,
    region_problems,
    write_values,
)
from segcli.losses.regions import region_target
from segcli.metrics.regions import evaluate_regions, mean_foreground_dice

NESTED = ((1, 2), (2,))
BRATS = ((1, 2, 3), (2, 3), (3,))  # whole tumour, tumour core, enhancing tumour


def brute_encode(label_map: np.ndarray, regions: tuple[tuple[int, ...], ...]) -> np.ndarray:
    out = np.zeros((len(regions), *label_map.shape), dtype=bool)
    for index in np.ndindex(*label_map.shape):
        for k, region in enumerate(regions):
            out[(k, *index)] = int(label_map[index]) in region
    return out


def nested_regions(depth: int) -> tuple[tuple[int, ...], ...]:
    """Hierarchy 1 ⊃ 2 ⊃ ... : region k holds values k+1..depth."""
    return tuple(tuple(range(k + 1, depth + 1)) for k in range(depth))


@st.composite
def maps_and_regions(draw: st.DrawFn) -> tuple[np.ndarray, tuple[tuple[int, ...], ...]]:
    kind = draw(st.sampled_from(["nested", "flat", "mixed"]))
    depth = draw(st.integers(1, 4))
    if kind == "nested":
        regions = nested_regions(depth)
    elif kind == "flat":
        regions = default_regions(depth)
    else:  # an organ {1, 2, 3} holding two disjoint lesion types {2}, {3}
        regions = ((1, 2, 3), (2,), (3,))
        depth = 3
    shape = draw(st.sampled_from([(7,), (5, 6), (3, 4, 5)]))
    label_map = draw(arrays(np.uint8, shape, elements=st.integers(0, depth)))
    return label_map, regions


@settings(max_examples=60, deadline=None)
@given(maps_and_regions())
def test_encode_matches_brute_force_and_decode_inverts_it(case: tuple) -> None:
    label_map, regions = case
    masks = encode_regions(label_map, regions)
    np.testing.assert_array_equal(masks, brute_encode(label_map, regions))
    np.testing.assert_array_equal(decode_regions(masks, regions), label_map)
    # probabilities thresholded at 0.5 decode the same
    probs = np.where(masks, 0.9, 0.1).astype(np.float32)
    np.testing.assert_array_equal(decode_regions(probs, regions), label_map)
    torch_target = region_target(torch.from_numpy(label_map[None].astype(np.int64)), regions)
    np.testing.assert_array_equal(torch_target[0].numpy(), masks.astype(np.float32))


def test_decoding_order_later_regions_overwrite() -> None:
    # the lesion channel fires where the organ channel does not: the lesion still wins
    probs = np.array([[0.9, 0.2, 0.9, 0.1], [0.1, 0.8, 0.8, 0.2]], dtype=np.float32)
    assert decode_regions(probs, NESTED).tolist() == [1, 2, 2, 0]
    assert write_values(NESTED) == (1, 2)
    assert write_values(BRATS) == (1, 2, 3)
    assert write_values(((1, 2, 3), (2,), (3,))) == (1, 2, 3)


def test_plain_multilabel_is_one_region_per_label() -> None:
    label_map = np.array([[0, 1], [2, 3]])
    masks = encode_regions(label_map, default_regions(3))
    assert [m.sum() for m in masks] == [1, 1, 1]
    assert masks[2, 1, 1] and not masks[2, 1, 0]


@pytest.mark.parametrize(
    ("regions", "fragment"),
    [
        ((), "at least one region"),
        (((1, 2),), "several label values [1, 2]"),
        (((1,), (1,)), "same region"),
        (((2,), (1, 2)), "no label value of its own"),
        (((0, 1),), "0 is background"),
        (((), (1,)), "is empty"),
    ],
)
def test_unusable_regions_are_explained(regions: tuple, fragment: str) -> None:
    problems = region_problems(regions)
    assert any(fragment in p for p in problems), problems


def test_stray_label_value_is_a_data_error() -> None:
    from segcli.errors import DataError

    class Case:
        name = "c7"
        label = np.array([[0, 1], [3, 2]], dtype=np.uint8)

    with pytest.raises(DataError, match="case 'c7'.*value 3.*no region"):
        check_region_labels([Case()], {"organ": [1, 2], "lesion": [2]})
    check_region_labels([Case()], {"organ": [1, 2, 3], "lesion": [2], "cyst": [3]})


def brute_dice(p: np.ndarray, r: np.ndarray) -> float:
    tp = fp = fn = 0
    for a, b in zip(p.ravel().tolist(), r.ravel().tolist(), strict=True):
        tp += a and b
        fp += a and not b
        fn += b and not a
    return 1.0 if tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn)


@settings(max_examples=40, deadline=None)
@given(
    arrays(np.uint8, (6, 7), elements=st.integers(0, 3)),
    arrays(np.uint8, (6, 7), elements=st.integers(0, 3)),
)
def test_region_dice_against_brute_force(pred: np.ndarray, ref: np.ndarray) -> None:
    regions = {"tumour": [1, 2, 3], "core": [2, 3], "enhancing": [3]}
    scores = evaluate_regions(pred, ref, (1.0, 1.0), regions, ["dice", "vol_ref"])
    for name, values in regions.items():
        p, r = np.isin(pred, values), np.isin(ref, values)
        assert scores[name]["dice"] == pytest.approx(brute_dice(p, r))
        assert scores[name]["vol_ref"] == pytest.approx(r.sum() / 1000)
    mean = mean_foreground_dice(pred, ref, (1.0, 1.0), 3, as_tuple(regions))
    assert mean == pytest.approx(np.mean([scores[n]["dice"] for n in regions]))


def as_tuple(regions: dict[str, list[int]]) -> tuple[tuple[int, ...], ...]:
    return tuple(tuple(v) for v in regions.values())


def test_region_and_label_dice_differ_on_a_nested_miss() -> None:
    ref = np.zeros((10, 10), np.uint8)
    ref[2:8, 2:8] = 1
    ref[4:6, 4:6] = 2
    pred = ref.copy()
    pred[4:6, 4:6] = 1  # lesion missed, organ outline perfect
    scores = evaluate_regions(pred, ref, (1.0, 1.0), {"organ": [1, 2], "lesion": [2]}, ["dice"])
    assert scores["organ"]["dice"] == 1.0 and scores["lesion"]["dice"] == 0.0


@pytest.mark.parametrize("name", ["bce", "dice", "dice_ce", "focal"])
def test_region_losses_reward_the_region_target_not_the_label_channels(name: str) -> None:
    """Logits that encode the regions score ~0; logits of the exclusive label channels (the
    organ channel off on the lesion) score clearly worse under every sigmoid loss."""
    from segcli.config.loader import from_dict
    from segcli.losses import build_loss

    rng = np.random.default_rng(1)
    label = torch.from_numpy(rng.integers(0, 3, size=(2, 8, 8)))
    spec = from_dict(
        {
            "data": {"root": "x"},
            "model": {"arch": "dilated"},
            "regions": {"organ": [1, 2], "lesion": [2]},
            "loss": {"name": name},
        }
    )
    loss_fn = build_loss(spec.loss, spec.model.num_classes, spec.multilabel, None)
    target = region_target(label, NESTED)
    right = loss_fn(12.0 * (2 * target - 1), target)
    exclusive = region_target(label, default_regions(2))
    wrong = loss_fn(12.0 * (2 * exclusive - 1), target)
    assert float(right) < 0.01
    assert float(wrong) > float(right) + 0.05
