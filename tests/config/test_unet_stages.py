"""``model.strides`` / ``model.kernel_sizes``: depth inference, round trip, and errors that
name the key."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from segcli.config import dump, from_dict
from segcli.errors import SpecError


def raw(dims: int = 3, **model: Any) -> dict[str, Any]:
    return {
        "data": {"synthetic": {"dims": dims, "size": 16}, "patch_size": [8, 16, 16][-dims:]},
        "model": {"arch": "unet", "dims": dims, **model},
    }


def test_depth_follows_strides_when_not_given() -> None:
    model = from_dict(raw(strides=[[1, 2, 2], [2, 2, 2], [2, 2, 2]])).model
    assert model.depth == 3
    assert model.stage_strides == [(1, 2, 2), (2, 2, 2), (2, 2, 2)]
    assert model.stage_kernel_sizes == [(3, 3, 3)] * 4


def test_defaults_are_isotropic_stages() -> None:
    model = from_dict(raw(depth=2, kernel_size=5)).model
    assert (model.strides, model.kernel_sizes) == (None, None)
    assert model.stage_strides == [(2, 2, 2)] * 2
    assert model.stage_kernel_sizes == [(5, 5, 5)] * 3


def test_round_trip_keeps_the_stages() -> None:
    exp = from_dict(
        raw(strides=[[1, 2, 2], [2, 2, 2]], kernel_sizes=[[1, 3, 3], [3, 3, 3], [3, 3, 3]])
    )
    again = from_dict(yaml.safe_load(dump(exp)))
    assert again == exp and again.model.depth == 2


@pytest.mark.parametrize(
    ("model", "match"),
    [
        (
            {"strides": [[1, 2], [2, 2, 2]]},
            r"model\.strides\[0\] \[1, 2\] has 2 entries.*dims is 3",
        ),
        ({"strides": [[1, 0, 2]]}, r"model\.strides\[0\] \[1, 0, 2\]: strides must be 1 or more"),
        ({"strides": []}, r"model\.strides is empty"),
        (
            {"depth": 3, "strides": [[2, 2, 2], [2, 2, 2]]},
            r"model\.strides has 2 stages but model\.depth is 3",
        ),
        (
            {"depth": 2, "kernel_sizes": [[3, 3, 3], [3, 3, 3]]},
            r"model\.kernel_sizes has 2 stages but model\.depth is 2; give depth \+ 1 = 3",
        ),
        (
            {"strides": [[2, 2, 2]], "kernel_sizes": [[3, 3, 3], [3, 3, 3], [3, 3, 3]]},
            r"model\.kernel_sizes has 3 stages but model\.depth is 1",
        ),
        (
            {"depth": 1, "kernel_sizes": [[3, 3, 3], [3, 3]]},
            r"model\.kernel_sizes\[1\] \[3, 3\] has 2 entries",
        ),
        (
            {"depth": 1, "kernel_sizes": [[3, 2, 3], [3, 3, 3]]},
            r"model\.kernel_sizes\[0\] \[3, 2, 3\]: a same-padding U-Net needs odd",
        ),
        (
            {"depth": 1, "kernel_sizes": [[3, 0, 3], [3, 3, 3]]},
            r"model\.kernel_sizes\[0\] \[3, 0, 3\]: sizes must be 1 or more",
        ),
        (
            {"depth": 1, "kernel_size": 5, "kernel_sizes": [[3, 3, 3], [3, 3, 3]]},
            r"model\.kernel_size 5 and model\.kernel_sizes are both set",
        ),
        ({"strides": [[1, "two", 2]]}, r"model\.strides\.0\.1"),
    ],
)
def test_bad_stages_name_the_key(model: dict[str, Any], match: str) -> None:
    with pytest.raises(SpecError, match=match):
        from_dict(raw(**model))


def test_valid_padding_allows_even_kernels_per_axis() -> None:
    model = from_dict(raw(depth=1, padding="valid", kernel_sizes=[[2, 3, 3], [3, 3, 3]])).model
    assert model.stage_kernel_sizes == [(2, 3, 3), (3, 3, 3)]


def test_2d_stages() -> None:
    model = from_dict(raw(dims=2, strides=[[1, 2], [2, 2]], kernel_sizes=[[1, 3], [3, 3], [3, 3]]))
    assert model.model.depth == 2 and model.model.stage_strides == [(1, 2), (2, 2)]
