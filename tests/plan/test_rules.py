"""The planner's rules against hand-derived values (nnU-Net v2's published Hippocampus plan)."""

from __future__ import annotations

import numpy as np
import pytest

from segcli.plan import rules


def test_hippocampus_spacing_is_the_median() -> None:
    spacings = [(1.0, 1.0, 1.0)] * 5
    choice = rules.target_spacing(spacings, [(36, 50, 35)] * 5)
    assert choice.spacing == (1.0, 1.0, 1.0)
    assert choice.anisotropic_axis is None


def test_hippocampus_topology_matches_nnunet_3d_fullres() -> None:
    # nnU-Net v2, Task04 3d_fullres: median 36×50×35 → patch 40×56×40, 3 poolings per axis
    assert rules.initial_patch((1.0, 1.0, 1.0), (36, 50, 35)) == (36, 50, 35)
    topo = rules.topology((1.0, 1.0, 1.0), (36, 50, 35))
    assert topo.patch == (40, 56, 40)
    assert topo.pools_per_axis == (3, 3, 3)
    assert topo.strides == ((2, 2, 2),) * 3
    assert topo.kernel_sizes == ((3, 3, 3),) * 4
    assert topo.uniform


def test_hippocampus_patch_fits_8gb_without_shrinking() -> None:
    reference = rules.memory_reference(3, 8.0)
    topo, estimate, shrinks = rules.fit_patch_to_memory(
        (1.0, 1.0, 1.0), (36, 50, 35), 32, 320, 3, reference, 2
    )
    assert topo.patch == (40, 56, 40) and shrinks == 0
    assert estimate < reference


def test_anisotropy_rule_takes_the_10th_percentile() -> None:
    # 9 scans at 5 mm, 1 at 1.5 mm; 30 slices vs 256² in plane
    spacings = [(5.0, 0.8, 0.8)] * 9 + [(1.5, 0.8, 0.8)]
    choice = rules.target_spacing(spacings, [(30, 256, 256)] * 10)
    assert choice.anisotropic_axis == 0
    expected = float(np.percentile([5.0] * 9 + [1.5], 10))  # 4.65
    assert choice.spacing == pytest.approx((expected, 0.8, 0.8))
    assert choice.median == (5.0, 0.8, 0.8)


def test_anisotropy_rule_needs_few_voxels_too() -> None:
    # coarse z but as many slices as in-plane voxels: no exception, the median stays
    choice = rules.target_spacing([(5.0, 0.8, 0.8), (1.5, 0.8, 0.8)] * 3, [(200, 256, 256)] * 6)
    assert choice.anisotropic_axis is None
    assert choice.spacing[0] == pytest.approx(3.25)


def test_anisotropic_z_is_pooled_later_with_1_wide_kernels() -> None:
    # 4 mm slices, 0.8 mm in plane: z is > 2× the finest until y/x were pooled twice (3.2 mm)
    topo = rules.topology((4.0, 0.8, 0.8), (40, 160, 160))
    assert topo.strides[0] == (1, 2, 2) and topo.strides[1] == (1, 2, 2)
    assert topo.strides[2] == (2, 2, 2)
    assert topo.kernel_sizes[0] == (1, 3, 3) and topo.kernel_sizes[1] == (1, 3, 3)
    assert topo.kernel_sizes[2] == (3, 3, 3)
    assert topo.kernel_sizes[-1] == (3, 3, 3)  # the bottleneck always 3
    assert topo.pools_per_axis[0] < topo.pools_per_axis[1] == topo.pools_per_axis[2]
    assert not topo.uniform
    # every pooled axis keeps ≥ 4 voxels in the bottleneck
    for axis, size in enumerate(topo.patch):
        assert size // 2 ** topo.pools_per_axis[axis] >= rules.MIN_FEATURE_MAP_EDGE


def test_2d_topology() -> None:
    topo = rules.topology((1.0, 1.0), (32, 32))
    assert topo.patch == (32, 32) and topo.pools_per_axis == (3, 3)
    assert len(topo.kernel_sizes) == topo.depth + 1 == 4


def test_single_axis_pooling_needs_three_times_the_edge() -> None:
    # y can be pooled alone only while ≥ 12 voxels: 12 → 6, then stop (z, x are too small)
    topo = rules.topology((1.0, 1.0, 1.0), (4, 12, 4))
    assert topo.pools_per_axis == (0, 1, 0)


def test_feature_map_size_by_hand() -> None:
    # depth 1, patch 4×4, widths 2 and 4, 3 classes, deep supervision:
    # encoder 2·2·16 + 2·4·4 = 96; decoder level 0: convs 2·2·16 = 64, transpose 2·16 = 32,
    # head 3·16 = 48 → 240
    assert rules.feature_map_size((4, 4), [(2, 2)], (2, 4), 3) == 240


def test_patch_shrinks_under_a_small_memory_target() -> None:
    big = rules.fit_patch_to_memory((1.0, 1.0, 1.0), (128, 128, 128), 32, 320, 2,
                                    rules.memory_reference(3, 8.0), 2)  # fmt: skip
    small = rules.fit_patch_to_memory((1.0, 1.0, 1.0), (128, 128, 128), 32, 320, 2,
                                      rules.memory_reference(3, 2.0), 2)  # fmt: skip
    assert np.prod(small[0].patch) < np.prod(big[0].patch)
    assert small[2] > 0
    assert small[1] / 2 * 2 <= rules.memory_reference(3, 2.0)


def test_batch_size_rule() -> None:
    # headroom 4× the reference batch 2 → 8, but the dataset covers only 5 % → capped
    batch, memory, covered = rules.batch_size_for_memory(100, 400.0, 2, (10, 10, 10), 100_000)
    assert memory == 8 and covered == 5 and batch == 5
    assert rules.batch_size_for_memory(1000, 400.0, 2, (10, 10, 10), 1e9)[0] == 2  # minimum


def test_ct_channel_gets_ct_auto() -> None:
    assert rules.ct_like("CT", True, -1024)[0]
    assert rules.ct_like("ct", False, 0.0)[0]  # the name decides
    assert not rules.ct_like("MRI", True, -1024)[0]  # a named non-CT channel is not guessed
    assert rules.ct_like("channel0", True, -1024)[0]  # unnamed, HU-like intensities
    assert not rules.ct_like("channel0", False, -1024.5)[0]
    assert rules.normalization_for([True]) == "ct_auto"
    assert rules.normalization_for([True, False]) == "zscore"
    assert rules.normalization_for([False]) == "zscore"


def test_stage_widths_cap() -> None:
    assert rules.stage_widths(32, 6, 320) == (32, 64, 128, 256, 320, 320)


@pytest.mark.parametrize(
    ("names", "sided"),
    [
        (["background", "Anterior", "Posterior"], ["Anterior", "Posterior"]),  # MSD Task04
        (["background", "Right_lung", "Left_lung"], ["Right_lung", "Left_lung"]),
        (["kidneyLeft", "spleen"], ["kidneyLeft"]),
        (["LEFT_KIDNEY"], ["LEFT_KIDNEY"]),
        (["left2"], ["left2"]),
        (["background", "liver", "tumour"], []),
        (["bright", "leftover", "rightmost"], []),  # the words, not the letters
    ],
)
def test_sided_label_names_turn_mirroring_off(names: list[str], sided: list[str]) -> None:
    flip, rule = rules.mirroring(names)
    assert flip is (not sided)
    if sided:
        assert rule.startswith("no flips")
        assert [n for n in names if repr(n) in rule] == sided


@pytest.mark.parametrize(
    ("wanted", "expected"),
    [
        ((36, 50, 35), (32, 48, 32)),  # Task04: 40×56×40 would be 42 % padding; 36 is a tie
        ((38, 54, 38), (40, 56, 40)),  # nearer the multiple above: the same as nnU-Net
        ((29, 29, 29), (32, 32, 32)),  # 3 poolings from 29 voxels: 32 is the nearer multiple
        ((35, 20, 35), (32, 20, 32)),  # per axis: 20 pools twice (divisor 4) and stays
        ((64, 64, 64), (64, 64, 64)),  # already a multiple
    ],
)
def test_nearest_patch_rounds_to_the_nearer_multiple_keeping_the_pooling(
    wanted: tuple[int, ...], expected: tuple[int, ...]
) -> None:
    spacing = (1.0, 1.0, 1.0)
    up = rules.topology(spacing, wanted)
    near = rules.nearest_patch(spacing, wanted, up)
    assert near.patch == expected
    assert near.pools_per_axis == up.pools_per_axis
    assert np.prod(near.patch) <= np.prod(up.patch)
