"""The lecture's checks: receptive field vs objects, imbalance, small structures."""

from __future__ import annotations

from segcli.plan.checks import (
    LESION_METRICS,
    imbalance_checks,
    receptive_field_checks,
    small_structure_checks,
)
from segcli.plan.fingerprint import LabelSummary


def summary(value: int, extent: tuple[int, ...], volume: float, components: float = 1.0,
            share: float = 0.01) -> LabelSummary:  # fmt: skip
    return LabelSummary(value, f"l{value}", share, 5, components, int(components),
                        tuple(float(e) for e in extent), extent, volume, volume)  # fmt: skip


def test_field_smaller_than_the_object_warns_with_both_numbers() -> None:
    # the lecture: a 3-layer CNN sees 7×7; a 15×15 object does not fit
    checks = receptive_field_checks((7, 7), (32, 32), {1: summary(1, (15, 15), 225)})
    assert len(checks) == 1 and checks[0].level == "warning"
    assert "15×15" in checks[0].message and "7×7" in checks[0].message
    # the dilated network sees 15×15: it fits
    ok = receptive_field_checks((15, 15), (32, 32), {1: summary(1, (15, 15), 225)})
    assert [c.level for c in ok] == ["ok"]


def test_patch_smaller_than_the_object_warns() -> None:
    checks = receptive_field_checks((99, 99), (16, 16), {1: summary(1, (20, 10), 200)})
    assert checks[0].level == "warning" and "patch" in checks[0].message


def test_small_lesions_add_lesion_metrics() -> None:
    checks, add = small_structure_checks({1: summary(1, (3, 3), 9.0)})
    assert add and all(m in checks[0].message for m in LESION_METRICS)
    checks, add = small_structure_checks({1: summary(1, (30, 30), 5000.0, components=4.0)})
    assert add and "4 components" in checks[0].message
    assert small_structure_checks({1: summary(1, (30, 30), 5000.0)}) == ([], False)


def test_imbalance_names_the_rarest_label() -> None:
    checks = imbalance_checks({1: summary(1, (3, 3), 9, share=0.3),
                               2: summary(2, (3, 3), 9, share=0.001)})  # fmt: skip
    assert len(checks) == 1 and "l2 (0.10%)" in checks[0].message
