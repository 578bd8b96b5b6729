"""Deep supervision with ``valid`` padding: each output's target is the reference voxel under it.

A valid U-Net crops every stage centrally, so its auxiliary outputs do not cover the patch and
"every s-th voxel" of the target is the wrong voxel.  The brute-force check builds a valid U-Net
whose weights copy the input along the skip path (a centre tap in every convolution, nothing
through the up-convolutions) and feeds it the voxels' own indices: each head then *outputs* the
index of the input voxel it stands for, which must be the voxel the loss gives it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from segcli.losses.deep_supervision import compute_loss, grid_target
from segcli.models.unet import UNet, supervision_grids


def _copying_unet(strides: list[list[int]] | None, depth: int) -> UNet:
    """A valid U-Net (no norm, ReLU) that passes channel 0 along the skip path unchanged."""
    net = UNet(
        2,
        1,
        2,
        filters=2,
        depth=depth,
        padding="valid",
        norm="none",
        activation="relu",
        deep_supervision=True,
        strides=strides,
    )
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, nn.Conv2d | nn.ConvTranspose2d):
                module.weight.zero_()
                if module.bias is not None:
                    module.bias.zero_()
        for block in [*net.encoder, *net.decoder]:  # decoder input: [skip, upsampled]
            for conv in block.convs:
                centre = tuple(k // 2 for k in conv.kernel_size)
                conv.weight[(0, 0, *centre)] = 1.0
        for head in [net.head, *net.aux_heads]:
            head.weight[0, 0, 0, 0] = 1.0
    return net


@pytest.mark.parametrize(
    "strides,depth,size",
    [(None, 3, (92, 100)), ([[1, 2], [2, 2]], 2, (30, 48)), (None, 2, (44, 52))],
)
def test_each_head_gets_the_reference_voxel_it_stands_for(strides, depth, size) -> None:
    net = _copying_unet(strides, depth).train()
    h, w = size
    index = torch.arange(h * w, dtype=torch.float32).reshape(h, w)
    top = float(h * w)
    # decreasing values: max-pooling keeps the first voxel of each block (nnU-Net's convention)
    with torch.no_grad():
        outputs = net((top - index)[None, None])
    grids = supervision_grids(net, size)
    assert grids is not None and len(grids) == len(outputs) == depth
    assert [g.stride for g in grids] == net.deep_supervision_scales
    target = index.long()[None]  # (B, *spatial): each voxel's own index
    for out, grid in zip(outputs, grids, strict=True):
        seen = (top - out[0, 0]).round().long()  # the input index each output voxel copied
        spatial = tuple(out.shape[2:])
        assert torch.equal(grid_target(target, grid, spatial)[0], seen)
        # brute force, voxel by voxel
        for p in range(spatial[0]):
            for q in range(spatial[1]):
                y = grid.offset[0] + p * grid.stride[0]
                x = grid.offset[1] + q * grid.stride[1]
                assert int(seen[p, q]) == y * w + x


def test_valid_loss_scores_each_output_against_its_own_voxels() -> None:
    net = _copying_unet(None, 3).train()
    size = (92, 100)
    grids = supervision_grids(net, size)
    assert grids is not None
    generator = torch.Generator().manual_seed(3)
    target = torch.randint(0, 2, (2, *size), generator=generator)
    outputs = [
        torch.randn(2, 2, *o.shape[2:], generator=generator) for o in net(torch.zeros(2, 1, *size))
    ]
    got = compute_loss(nn.CrossEntropyLoss(), outputs, target, False, grids=grids)
    parts = []
    for out, grid in zip(outputs, grids, strict=True):
        n = out.shape[2:]
        sl = tuple(
            slice(o, o + (k - 1) * s + 1, s)
            for o, s, k in zip(grid.offset, grid.stride, n, strict=True)
        )
        parts.append(nn.functional.cross_entropy(out, target[(slice(None), *sl)]))
    expected = (parts[0] + parts[1] / 2 + parts[2] / 4) / 1.75
    torch.testing.assert_close(got, expected)
    # the full-resolution output's voxels are the centre crop of the single-output loss
    single = compute_loss(nn.CrossEntropyLoss(), outputs[0], target, False)
    torch.testing.assert_close(single, parts[0])


def test_same_padding_and_other_networks_keep_every_sth_voxel() -> None:
    same = UNet(2, 1, 2, filters=2, depth=3, deep_supervision=True)
    grids = same.deep_supervision_grids((32, 24))
    assert [g.offset for g in grids] == [(0, 0)] * 3
    assert [g.stride for g in grids] == same.deep_supervision_scales
    assert supervision_grids(same, (32, 24)) is None  # the loss downsamples exactly
    plain = UNet(2, 1, 2, filters=2, depth=3, padding="valid")
    assert supervision_grids(plain, (92, 100)) is None  # one output: centre crop


def test_grid_outside_the_target_is_refused() -> None:
    target = torch.zeros(1, 8, 8, dtype=torch.long)
    with pytest.raises(ValueError, match="runs outside"):
        grid_target(target, ((2, 0), (2, 1)), (4, 8))
    assert np.array_equal(grid_target(target, ((1, 0), (2, 1)), (4, 8)).shape, (1, 4, 8))


def test_training_a_valid_unet_with_deep_supervision_passes_the_grids(
    tmp_path: Path, toy2d: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from segcli.config import from_dict
    from segcli.engine import train as train_engine

    exp = from_dict(
        {
            "name": "dsvalid",
            "data": {"root": str(toy2d), "patch_size": [44, 52], "val_fraction": 0.25},
            "model": {
                "arch": "unet",
                "dims": 2,
                "filters": 2,
                "depth": 2,
                "padding": "valid",
                "norm": "none",
                "deep_supervision": True,
            },
            "train": {"epochs": 1, "iterations_per_epoch": 1, "batch_size": 2, "workers": 0},
            "output": str(tmp_path / "runs"),
        }
    )
    seen: list[Any] = []
    original = train_engine.compute_loss

    def spy(loss_fn, output, target, multilabel, grids=None):  # type: ignore[no-untyped-def]
        seen.append(grids)
        return original(loss_fn, output, target, multilabel, grids=grids)

    monkeypatch.setattr(train_engine, "compute_loss", spy)
    result = train_engine.fit(exp, device="cpu")
    assert result.epochs_run == 1 and np.isfinite(result.rows[0]["train_loss"])
    net = UNet(2, 1, 2, filters=2, depth=2, padding="valid", deep_supervision=True)
    assert seen == [net.deep_supervision_grids((44, 52))]
