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


def _nearest_reference(target: torch.Tensor, spatial: tuple[int, ...]) -> torch.Tensor:
    """Brute force: output voxel ``i`` takes the target voxel ``floor(i · full / out)`` per axis
    (the last ``len(spatial)`` axes; loops over every output voxel)."""
    full = target.shape[-len(spatial) :]
    out = torch.empty((*target.shape[: -len(spatial)], *spatial), dtype=target.dtype)
    for index in np.ndindex(*spatial):
        source = tuple(i * n // m for i, n, m in zip(index, full, spatial, strict=True))
        out[(..., *index)] = target[(..., *source)]
    return out


SHAPES = [
    [(16, 12), (8, 6), (4, 3)],  # isotropic halving
    [(16, 12), (8, 12), (4, 6)],  # per-axis strides: (2, 1) then (2, 2)
    [(8, 8, 4), (4, 4, 4), (2, 2, 2)],  # 3-D, the last axis pooled once
]


@pytest.mark.parametrize("shapes", SHAPES)
@pytest.mark.parametrize("multilabel", [False, True])
def test_each_head_is_pulled_towards_its_own_nearest_downsampled_target(
    shapes: list[tuple[int, ...]], multilabel: bool
) -> None:
    """The gradient of the loss on head ``k`` reveals the target head ``k`` was scored against
    (cross-entropy: the target class is the only negative entry; BCE: negative where the
    target is 1); it must be the brute-force nearest downsampling of the full target."""
    generator = torch.Generator().manual_seed(len(shapes[-1]) + multilabel)
    if multilabel:
        target = (torch.rand(2, 3, *shapes[0], generator=generator) > 0.5).float()
        loss_fn: torch.nn.Module = torch.nn.BCEWithLogitsLoss()
    else:
        target = torch.randint(0, 3, (2, *shapes[0]), generator=generator)
        loss_fn = torch.nn.CrossEntropyLoss()
    outputs = [torch.randn(2, 3, *shape, generator=generator).requires_grad_() for shape in shapes]
    train_engine.compute_loss(loss_fn, outputs, target, multilabel=multilabel).backward()
    for out, shape in zip(outputs, shapes, strict=True):
        grad = out.grad
        assert grad is not None and grad.abs().sum() > 0  # every head takes part
        seen = (grad < 0).float() if multilabel else grad.argmin(1)
        torch.testing.assert_close(seen, _nearest_reference(target, shape).to(seen.dtype))


@pytest.mark.parametrize("multilabel", [False, True])
def test_each_head_s_loss_responds_to_its_own_target(multilabel: bool) -> None:
    """Heads that predict their own downsampled target perfectly give a loss near 0; making any
    single head wrong (the others still perfect) raises the loss by about that head's weight."""
    shapes = SHAPES[1]
    generator = torch.Generator().manual_seed(3)
    if multilabel:
        target = (torch.rand(2, 2, *shapes[0], generator=generator) > 0.5).float()
        loss_fn: torch.nn.Module = torch.nn.BCEWithLogitsLoss()
    else:
        target = torch.randint(0, 2, (2, *shapes[0]), generator=generator)
        loss_fn = torch.nn.CrossEntropyLoss()

    def perfect(shape: tuple[int, ...], flip: bool = False) -> torch.Tensor:
        t = _nearest_reference(target, shape)
        onehot = t if multilabel else F.one_hot(t, 2).movedim(-1, 1).float()
        return 30.0 * ((1 - onehot) if flip else onehot) - 15.0

    right = [perfect(shape) for shape in shapes]
    loss = train_engine.compute_loss(loss_fn, right, target, multilabel)
    assert float(loss) < 1e-5
    raised = []
    for k in range(len(shapes)):
        wrong = [perfect(s, flip=(i == k)) for i, s in enumerate(shapes)]
        raised.append(float(train_engine.compute_loss(loss_fn, wrong, target, multilabel)))
    # every head counts, with weights 1/2^k (normalised): the wrong head costs w_k times 30
    # (CE: the wrong class leads by a margin of 30) or 15 (BCE: each logit is 15 on the wrong side)
    weights = np.array([1.0, 0.5, 0.25]) / 1.75
    np.testing.assert_allclose(raised, (15.0 if multilabel else 30.0) * weights, rtol=1e-3)


def test_deep_supervision_network_outputs_fit_the_loss_and_train_every_head() -> None:
    """The real model's outputs (a 2-D U-Net, depth 3) through the real loss: each head gets a
    gradient that reveals its own downsampled target."""
    torch.manual_seed(0)
    net = build(UNetSpec(dims=2, filters=2, depth=3, classes=3, deep_supervision=True)).train()
    outputs = net(torch.randn(2, 1, 16, 16))
    for out in outputs:
        out.retain_grad()
    target = torch.randint(0, 3, (2, 16, 16), generator=torch.Generator().manual_seed(1))
    loss = train_engine.compute_loss(torch.nn.CrossEntropyLoss(), outputs, target, False)
    loss.backward()
    for out in outputs:
        expected = _nearest_reference(target, tuple(out.shape[2:]))
        torch.testing.assert_close(out.grad.argmin(1), expected)
    heads = [p.grad for name, p in net.named_parameters() if name.startswith("aux_heads.")]
    assert heads and all(g is not None and g.abs().sum() > 0 for g in heads)


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

    def spy(loss_fn, output, target, multilabel, grids=None):
        seen.append([tuple(o.shape) for o in output] if isinstance(output, list) else output)
        return original(loss_fn, output, target, multilabel, grids=grids)

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
    probs = sliding_window(
        network.eval(),
        torch.from_numpy(image),
        [16, 16],
        batch_size=8,
        precision=exp.inference.precision,  # predict runs the spec's precision (auto: bf16 here)
    )
    assert label.shape == geometry.size == tuple(probs.shape[1:])
    np.testing.assert_array_equal(label, probs.argmax(0).numpy())


@pytest.mark.slow
def test_plain_unet_has_no_auxiliary_heads(tmp_path: Path, toy2d: Path) -> None:
    result = train_engine.fit(_spec(toy2d, tmp_path, deep_supervision=False), device="cpu")
    state = load_checkpoint(result.run_dir / "checkpoint_best.pt")
    assert not any(k.startswith("aux_heads.") for k in state["model"])
