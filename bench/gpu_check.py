"""One prepared GPU check (issue 18): CUDA training in bf16 and fp16, predict, Hippocampus epochs.

    .venv/bin/python bench/gpu_check.py              # on a machine with a CUDA GPU (~5 min)
    .venv/bin/python bench/gpu_check.py --epochs 1   # shorter

Prints one JSON line per check and a Markdown summary; writes nothing under docs/ (the figures
go into a report by hand, with the machine line this prints).  Checks:

1. `auto` resolves to bf16 (compute capability ≥ 8) or fp16 with a gradient scaler.
2. A toy 2D U-Net trains on CUDA in fp32, bf16 and fp16 (the gradient scaler on for fp16
   only) to Dice within 0.03 of fp32; the checkpoints' predictions agree ≥ 99 % with fp32.
3. experiments/hippocampus-gpu.yaml: seconds per epoch for `--epochs` short epochs in the
   resolved `auto` precision (50 iterations each), and `segcli predict` of the result on
   imagesTs/ in fp32 and in `auto`, argmax agreement.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from _harness import REPO, machine, segcli


def toy(precision: str) -> dict:
    return {
        "name": f"toy-{precision}",
        "seed": 0,
        "data": {
            "synthetic": {
                "dims": 2,
                "cases": 24,
                "size": 24,
                "lesion": 5,
                "ring_distance": 2,
                "malign_fraction": 1.0,
            },
            "patch_size": [24, 24],
            "val_fraction": 0.25,
        },
        "model": {"arch": "unet", "dims": 2, "filters": 4, "depth": 2},
        "train": {
            "epochs": 3,
            "iterations_per_epoch": 10,
            "batch_size": 8,
            "workers": 0,
            "lr": 3e-3,
            "precision": precision,
        },
        "inference": {"batch_size": 16, "precision": precision},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    import numpy as np
    import torch

    from segcli.config import from_dict, load
    from segcli.data.synth import generate
    from segcli.engine.runtime import set_quiet
    from segcli.engine.train import fit
    from segcli.inference import sliding_window
    from segcli.io.checkpoint import Checkpoint
    from segcli.models import build
    from segcli.precision import resolve_precision

    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device: this check needs a GPU")
    set_quiet(True)
    report = {"machine": machine(), "auto": resolve_precision("auto", "cuda").describe()}
    print(json.dumps(report))
    cases = [c for c in generate(12, 2, 24, 5, 2, seed=7, malign_fraction=1.0) if c.label.any()]
    preds, dice = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for precision in ("fp32", "bf16", "fp16"):
            exp = from_dict(toy(precision))
            start = time.perf_counter()
            result = fit(exp, run_dir=Path(tmp) / precision, device="cuda")
            net = build(exp.model).cuda().eval()
            net.load_state_dict(Checkpoint.load(Path(tmp) / precision / "checkpoint_best.pt").model)
            preds[precision] = [
                sliding_window(net, c.image[None], (24, 24), precision=precision).argmax(0).cpu()
                for c in cases
            ]
            dice[precision] = result.best_dice
            row = {
                "check": "toy",
                "precision": result.precision,
                "best_dice": result.best_dice,
                "seconds": time.perf_counter() - start,
            }
            print(json.dumps(row))
        for precision in ("bf16", "fp16"):
            agree = float(
                np.mean(
                    [
                        (a == b).float().mean().item()
                        for a, b in zip(preds[precision], preds["fp32"], strict=True)
                    ]
                )
            )
            ok = abs(dice[precision] - dice["fp32"]) < 0.03 and agree >= 0.99
            print(
                json.dumps(
                    {"check": "toy-agreement", "precision": precision, "agree": agree, "ok": ok}
                )
            )

        spec = REPO / "experiments/hippocampus-gpu.yaml"
        exp = load(spec, [f"train.epochs={args.epochs}", "train.iterations_per_epoch=50"])
        run = Path(tmp) / "hippocampus"
        result = fit(exp, run_dir=run, device="cuda")
        seconds = [r["seconds"] for r in result.rows]
        print(
            json.dumps(
                {
                    "check": "hippocampus-gpu epochs",
                    "precision": result.precision,
                    "iterations_per_epoch": 50,
                    "seconds_per_epoch": seconds,
                    "best_dice": result.best_dice,
                }
            )
        )
        root = (REPO / exp.data.root).resolve()
        outs = {}
        for precision in ("fp32", "auto"):
            outs[precision] = Path(tmp) / f"pred-{precision}"
            cmd = ["predict", spec, "-i", root / "imagesTs", "-o", outs[precision]]
            cmd += [
                "--device",
                "cuda",
                "--set",
                f"output={run.parent}",
                "--set",
                f"name={run.name}",
            ]
            cmd += ["--set", f"inference.precision={precision}"]
            seconds = segcli(*cmd, echo=False).seconds
            print(json.dumps({"check": "predict", "precision": precision, "seconds": seconds}))
        from segcli.io.images import read_image

        for path in sorted(outs["fp32"].glob("*.nii.gz")):
            a = read_image(path)[0]
            b = read_image(outs["auto"] / path.name)[0]
            print(
                json.dumps(
                    {
                        "check": "predict-agreement",
                        "case": path.name,
                        "agree": float((a == b).mean()),
                    }
                )
            )


if __name__ == "__main__":
    main()
