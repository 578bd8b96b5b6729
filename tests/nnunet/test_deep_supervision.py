"""Deep supervision (``model.deep_supervision``): auxiliary outputs, their loss, and that only
the full-resolution output is used at inference."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from segcli.config import from_dict
from segcli.config.schema import UNetSpec
from segcli.engine import train as train_engine
from segcli.engine.predict import predict_cases
from segcli.engine.runtime import seed_everything
from segcli.inference import sliding_window
from segcli.io.checkpoint import load_checkpoint
from segcli.io.images import read_label
from segcli.models import build


@pytest.mark.parametrize(
    "dims,size,depth", [(2, (32, 24), 3), (3, (16, 16, 8), 3), (2, (16, 16), 1)]
)
def test_auxiliary_outputs_halve_the_resolution_per_decoder_stage(dims, size, depth) -> None:
    net = build(UNetSpec(dims=dims, filters=2, depth=depth, classes=4, deep_supervision=True))
    outputs = net.train()(torch.randn(2, 1, *size))
    assert isinstance(outputs, list) and len(outputs) == depth  # full res + depth - 1 aux
    for i, out in enumerate(outputs):
        assert tuple(out.shape) == (2, 4, *(s // 2**i for s in size))
    with torch.no_grad():
        single = net.eval()(torch.randn(2, 1, *size))
    assert isinstance(single, torch.Tensor) and tuple(single.shape) == (2, 4, *size)
    plain = build(UNetSpec(dims=dims, filters=2, depth=depth, classes=4))
    extra = sum(p.numel() for p in net.parameters()) - sum(p.numel() for p in plain.parameters())
    widths = [2 * 2**level for level in range(1, depth)]  # 1×1 heads at the lower stages
    assert extra == sum((w + 1) * 4 for w in widths)


def test_loss_weights_are_half_per_level_normalised_with_nearest_targets() -> None:
    generator = torch.Generator().manual_seed(0)
    target = torch.randint(0, 3, (2, 16, 12), generator=generator)
    outputs = [torch.randn(2, 3, 16 // 2**i, 12 // 2**i, generator=generator) for i in range(3)]
    loss_fn = torch.nn.CrossEntropyLoss()
    got = train_engine.compute_loss(loss_fn, outputs, target, multilabel=False)
    # by hand: weights 1, 1/2, 1/4 over 7/4, and the target's every 2^i-th voxel
    parts = [F.cross_entropy(outputs[i], target[:, :: 2**i, :: 2**i]) for i in range(3)]
    expected = (parts[0] + parts[1] / 2 + parts[2] / 4) / 1.75
    torch.testing.assert_close(got, expected)
    single = train_engine.compute_loss(loss_fn, outputs[0], target, multilabel=False)
    torch.testing.assert_close(single, parts[0])


def test_multilabel_targets_are_downsampled_per_channel() -> None:
    target = (torch.rand(1, 2, 8, 8, generator=torch.Generator().manual_seed(1)) > 0.5).float()
    outputs = [torch.zeros(1, 2, 8, 8), torch.zeros(1, 2, 4, 4)]
    loss_fn = torch.nn.BCEWithLogitsLoss()
    got = train_engine.compute_loss(loss_fn, outputs, target, multilabel=True)
    # zero logits: BCE is log 2 whatever the target; the point is that the shapes fit
    torch.testing.assert_close(got, torch.tensor(np.log(2.0), dtype=torch.float32))


def _spec(root: Path, tmp_path: Path, deep_supervision: bool) -> Any:
    return from_dict(
        {
            "name": "ds",
            "data": {"root": str(root), "patch_size": [16, 16], "val_fraction": 0.25},
            "model": {
                "arch": "unet",
                "dims": 2,
                "filters": 4,
                "depth": 3,
                "deep_supervision": deep_supervision,
            },
            "train": {"epochs": 1, "iterations_per_epoch": 2, "batch_size": 4, "workers": 0},
            "inference": {"batch_size": 8},
            "output": str(tmp_path / "runs"),
        }
    )


@pytest.mark.slow
def test_one_epoch_trains_the_auxiliary_heads_and_inference_uses_full_resolution(
    tmp_path: Path, toy2d: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    exp = _spec(toy2d, tmp_path, deep_supervision=True)
    seen: list[Any] = []
    original = train_engine.compute_loss

    def spy(loss_fn, output, target, multilabel):
        seen.append([tuple(o.shape) for o in output] if isinstance(output, list) else output)
        return original(loss_fn, output, target, multilabel)

    monkeypatch.setattr(train_engine, "compute_loss", spy)
    result = train_engine.fit(exp, device="cpu")
    assert len(seen) == 2  # one loss per iteration, each on [full, 1/2, 1/4]
    assert all(shapes == [(4, 2, 16, 16), (4, 2, 8, 8), (4, 2, 4, 4)] for shapes in seen)
    assert np.isfinite(result.rows[-1]["val_dice"])  # validation ran on the full output

    state = load_checkpoint(result.run_dir / "checkpoint_best.pt")
    seed_everything(exp.seed)
    initial = build(exp.model).state_dict()  # the weights training started from
    aux = [k for k in state["model"] if k.startswith("aux_heads.")]
    assert aux and all(not torch.equal(state["model"][k], initial[k]) for k in aux)

    first = sorted((toy2d / "imagesTr").iterdir())[0]
    case = first.name.replace("_0000.nii.gz", "")
    out = tmp_path / "pred"
    predict_cases(exp, first, out, device="cpu")
    label, geometry = read_label(out / f"{case}.nii.gz")
    network = build(exp.model)
    network.load_state_dict(state["model"])
    from segcli.data.loaders import load_cases

    image = load_cases(exp.data, [case], exp.seed)[0].image
    probs = sliding_window(network.eval(), torch.from_numpy(image), [16, 16], batch_size=8)
    assert label.shape == geometry.size == tuple(probs.shape[1:])
    np.testing.assert_array_equal(label, probs.argmax(0).numpy())


@pytest.mark.slow
def test_plain_unet_has_no_auxiliary_heads(tmp_path: Path, toy2d: Path) -> None:
    result = train_engine.fit(_spec(toy2d, tmp_path, deep_supervision=False), device="cpu")
    state = load_checkpoint(result.run_dir / "checkpoint_best.pt")
    assert not any(k.startswith("aux_heads.") for k in state["model"])
