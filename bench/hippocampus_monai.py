"""A plain MONAI training script for MSD Task04 Hippocampus, for a side-by-side with segcli.

    .venv/bin/python bench/hippocampus_monai.py --split runs/hippocampus/split.json \
        --budget-seconds 600 --output runs/hippocampus-monai

Written the way a MONAI user would write it (the tutorials' 3D U-Net recipe): MONAI's UNet
with residual units, DiceCELoss, RandCropByPosNegLabeld (1 positive : 2 negative, the same
foreground share as segcli's 0.33), flips (unless --no-flip) and intensity augmentation, AdamW, and
`sliding_window_inference` with gaussian blending for the validation cases.  It trains for the
same wall-clock budget as the segcli run it is compared with, on the same split, and writes
NIfTI predictions that `segcli evaluate` then scores with exactly the same metric code.

Images are read with SimpleITK (MONAI's default NIfTI reader needs nibabel) and z-scored per
volume, as in segcli.  Both training crops and inference windows pad with the image minimum —
a MONAI script that pads crops with the minimum but windows with 0 (MONAI's default) loses
most of its Dice on this data set.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
import torch
from _harness import REPO, shared_data


def load(path: Path) -> tuple[np.ndarray, sitk.Image]:
    image = sitk.ReadImage(str(path))
    return sitk.GetArrayFromImage(image), image


def matching_args(exp: Any) -> list[str]:
    """This script's options that give it a segcli spec's data choices: patch, batch size,
    learning rate and flips (bench/hippocampus.py and bench/time_to_dice.py compare like with
    like; the network, loss and loop stay MONAI's)."""
    return [
        "--patch",
        *map(str, exp.data.patch_size),
        "--batch-size",
        str(exp.train.batch_size),
        "--lr",
        str(exp.train.lr),
        "--flip" if exp.data.augment.flip else "--no-flip",
    ]


def main() -> None:
    from monai.data import DataLoader, Dataset
    from monai.inferers import sliding_window_inference
    from monai.losses import DiceCELoss
    from monai.networks.nets import UNet
    from monai.transforms import (
        Compose,
        RandCropByPosNegLabeld,
        RandFlipd,
        RandScaleIntensityd,
        RandShiftIntensityd,
        SpatialPadd,
    )
    from monai.utils import set_determinism

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--root", type=Path, default=shared_data("msd_task04_hippocampus"))
    parser.add_argument("--split", type=Path, required=True, help="split.json of the segcli run")
    parser.add_argument("--budget-seconds", type=float, default=600)
    parser.add_argument("--output", type=Path, default=REPO / "runs/hippocampus-monai")
    parser.add_argument("--patch", type=int, nargs=3, default=[40, 56, 40])
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--flip",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="random flips on the three axes (the tutorials' recipe; --no-flip as a segcli "
        "spec with data.augment.flip false)",
    )
    parser.add_argument(
        "--val-every",
        type=int,
        default=0,
        help="every N iterations: mean validation Dice with a timestamp into --val-log "
        "(0: never; bench/time_to_dice.py uses 320, segcli's 4 epochs × 80 iterations)",
    )
    parser.add_argument("--val-log", type=Path, default=None, help="JSON lines, one per validation")
    parser.add_argument("--val-max-cases", type=int, default=None)
    args = parser.parse_args()

    start = time.perf_counter()
    set_determinism(seed=0)
    split = json.loads(args.split.read_text())
    patch = tuple(args.patch)

    def case(name: str) -> dict:
        image, _ = load(args.root / "imagesTr" / f"{name}.nii.gz")
        label, _ = load(args.root / "labelsTr" / f"{name}.nii.gz")
        image = image.astype(np.float32)
        image = (image - image.mean()) / max(float(image.std()), 1e-8)
        return {
            "image": image[None],
            "label": label.astype(np.int64)[None],
            "min": float(image.min()),
        }

    train_data = [case(n) for n in split["train"]]
    # pad every crop with its image's own minimum (the same value inference pads with below)
    for item in train_data:
        pad = SpatialPadd(keys=["image"], spatial_size=patch, mode="constant", value=item["min"])
        item["image"] = np.asarray(pad({"image": item["image"]})["image"])
        item["label"] = np.asarray(
            SpatialPadd(keys=["label"], spatial_size=patch, mode="constant")(
                {"label": item["label"]}
            )["label"]
        )
    transforms = Compose(
        [
            RandCropByPosNegLabeld(
                keys=["image", "label"],
                label_key="label",
                spatial_size=patch,
                pos=1,
                neg=2,
                num_samples=1,
            ),
            *(
                RandFlipd(keys=["image", "label"], prob=0.5, spatial_axis=axis)
                for axis in (range(3) if args.flip else ())
            ),
            RandScaleIntensityd(keys=["image"], factors=0.1, prob=0.5),
            RandShiftIntensityd(keys=["image"], offsets=0.1, prob=0.5),
        ]
    )
    loader = DataLoader(
        Dataset([{"image": d["image"], "label": d["label"]} for d in train_data], transforms),
        batch_size=args.batch_size,
        shuffle=True,
        num_workers=args.workers,
        persistent_workers=args.workers > 0,
    )
    model = UNet(
        spatial_dims=3,
        in_channels=1,
        out_channels=3,
        channels=(16, 32, 64, 128),
        strides=(2, 2, 2),
        num_res_units=2,
        norm="instance",
    )
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    iterations = 0
    losses: list[float] = []
    deadline = start + args.budget_seconds
    val_names = split["val"][: args.val_max_cases]
    val_data = [case(n) for n in val_names] if args.val_every else []

    def probabilities(x: torch.Tensor, cval: float) -> torch.Tensor:
        """Softmax of a whole image ``(1, C, *spatial)`` by MONAI's sliding window (overlap 0.5,
        Gaussian blend, padded with ``cval``), for validation and the final predictions alike."""
        return sliding_window_inference(
            x,
            roi_size=patch,
            sw_batch_size=4,
            predictor=lambda t: torch.softmax(model(t), 1),
            overlap=0.5,
            mode="gaussian",
            padding_mode="constant",
            cval=cval,
        )

    def validate() -> float:
        """Mean foreground Dice over the validation cases (segcli's validation Dice)."""
        from segcli.metrics import evaluate_case

        model.eval()
        dices = []
        with torch.no_grad():
            for item in val_data:
                probs = probabilities(torch.from_numpy(item["image"])[None], item["min"])
                pred = probs.argmax(1)[0].numpy()
                spacing = (1.0,) * pred.ndim  # Dice does not depend on it
                scores = evaluate_case(
                    pred, item["label"][0], spacing, labels=[1, 2], metrics=["dice"]
                )
                dices.append(float(np.mean([scores[k]["dice"] for k in (1, 2)])))
        model.train()
        return float(np.mean(dices))

    model.train()
    while time.perf_counter() < deadline:
        for batch in loader:
            output = model(batch["image"])
            loss = loss_fn(output, batch["label"])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            iterations += 1
            losses.append(float(loss))
            if args.val_every and iterations % args.val_every == 0 and args.val_log:
                dice = validate()
                with args.val_log.open("a") as handle:
                    record = {
                        "seconds": time.perf_counter() - start,
                        "iteration": iterations,
                        "val_dice": dice,
                    }
                    handle.write(json.dumps(record) + "\n")
            if time.perf_counter() >= deadline:
                break
    train_seconds = time.perf_counter() - start

    model.eval()
    out_dir = args.output / "pred_val"
    out_dir.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        for name in split["val"]:
            array, reference = load(args.root / "imagesTr" / f"{name}.nii.gz")
            image = array.astype(np.float32)
            image = (image - image.mean()) / max(float(image.std()), 1e-8)
            x = torch.from_numpy(image)[None, None]
            probs = probabilities(x, float(image.min()))
            pred = probs.argmax(1)[0].numpy().astype(np.uint8)
            written = sitk.GetImageFromArray(pred)
            written.CopyInformation(reference)
            sitk.WriteImage(written, str(out_dir / f"{name}.nii.gz"), True)
    summary = {
        "iterations": iterations,
        "batch_size": args.batch_size,
        "train_seconds": train_seconds,
        "total_seconds": time.perf_counter() - start,
        "final_loss": float(np.mean(losses[-20:])) if losses else float("nan"),
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    (args.output / "summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary), file=sys.stderr)


if __name__ == "__main__":
    main()
