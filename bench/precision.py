"""Benchmark: precision (fp32 / bf16) × activation layout (contiguous / channels-last) on CPU.

    make bench-precision            # or: .venv/bin/python bench/precision.py
    .venv/bin/python bench/precision.py --quick --no-write    # a 2-minute smoke run

Two sections of docs/benchmarks.md:

1. **Step time** (``precision``): one training step (forward under autocast, float32 Dice+CE
   on the float32 logits, backward, gradient clipping, AdamW — the step of ``segcli train``)
   and one inference forward (a batch of windows under ``inference_mode``) for
   - 3D: the U-Net of experiments/hippocampus.yaml (8 filters, depth 3, deep supervision),
     batch 2, patch 40×56×40 — the numbers issue 18 quotes;
   - 2D: a U-Net of 32 filters, depth 4, batch 8, patch 256×256.
   Each of the 4 variants is timed interleaved with the others (median of N steps after
   warm-up), on random inputs: data loading is measured by bench/train.py instead.  The
   layout rule of :func:`segcli.precision.memory_format` is checked against these numbers and
   the verdict printed under the table.
2. **Inference at scale** (``precision-ct``): one CT-sized volume (default 300×512×512, one
   channel) through ``sliding_window`` with the Hippocampus U-Net, fp32 and bf16, and MONAI's
   ``sliding_window_inference`` (fp32 as a MONAI user writes it, and under a bf16 autocast);
   wall time and peak extra resident memory, each in a fresh process.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch
from _harness import (
    REPO,
    child_json,
    cpu_flags,
    doc_options,
    interleaved,
    machine,
    monai_sliding_window,
    peak_growth,
    publish,
    row,
    scratch,
    table,
)
from torch import nn

COMMAND = "make bench-precision  (.venv/bin/python bench/precision.py)"
LAYOUTS = {2: torch.channels_last, 3: torch.channels_last_3d}


def bf16_line() -> str:
    """The CPU's vector and bf16 flags (what decides bf16 and channels-last speed)."""
    from segcli.precision import cpu_bf16_supported

    return f"CPU flags: {cpu_flags()}; torch sees native bf16: {cpu_bf16_supported()}."


def hippocampus_model(dims: int = 3) -> tuple[nn.Module, Any]:
    """The U-Net of experiments/hippocampus.yaml (3D) or a 2D U-Net of 32 filters, depth 4."""
    from segcli.config import load
    from segcli.models import build

    exp = load(REPO / "experiments/hippocampus.yaml")
    spec = exp.model
    if dims == 2:
        spec = spec.model_copy(update={"dims": 2, "filters": 32, "depth": 4})
    torch.manual_seed(0)
    return build(spec), exp


# --------------------------------------------------------------------------- step time


class Step:
    """One training step or one inference forward of a network in one precision and layout."""

    def __init__(
        self, dims: int, precision: str, channels_last: bool, train: bool, batch: int, patch: list
    ) -> None:
        from segcli.losses import build_loss
        from segcli.precision import resolve_precision

        self.model, exp = hippocampus_model(dims)
        self.layout = LAYOUTS[dims] if channels_last else torch.contiguous_format
        self.model.to(memory_format=self.layout)
        self.choice = resolve_precision(precision, "cpu")
        self.train = train
        g = torch.Generator().manual_seed(1)
        self.x = torch.randn(batch, 1, *patch, generator=g).contiguous(memory_format=self.layout)
        self.target = torch.randint(0, 3, (batch, *patch), generator=g)
        self.loss_fn = build_loss(exp.loss, 3, False)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-4)
        self.model.train(train)

    def __call__(self) -> None:
        from segcli.losses.deep_supervision import compute_loss
        from segcli.precision import float32_output

        if not self.train:
            with torch.inference_mode(), self.choice.autocast():
                out = self.model(self.x)
            float32_output(out)
            return
        with self.choice.autocast():
            out = self.model(self.x)
        loss = compute_loss(self.loss_fn, float32_output(out), self.target, False)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(self.model.parameters(), 12.0)
        self.optimizer.step()


def step_section(args: argparse.Namespace) -> tuple[str, list[dict[str, Any]]]:
    cases = [
        (3, 2, [40, 56, 40], "3D U-Net of experiments/hippocampus.yaml, batch 2, 40×56×40"),
        (2, 8, [256, 256], "2D U-Net, 32 filters, depth 4, batch 8, 256×256"),
    ]
    if args.quick:
        cases = [
            (3, 2, [24, 32, 24], "3D U-Net of experiments/hippocampus.yaml, batch 2, 24×32×24"),
            (2, 4, [64, 64], "2D U-Net, 32 filters, depth 4, batch 4, 64×64"),
        ]
    rows: list[dict[str, Any]] = []
    for dims, batch, patch, label in cases:
        for train in (True, False):
            steps = {
                (p, cl): Step(dims, p, cl, train, batch if train else 2 * batch, patch)
                for p in ("fp32", "bf16")
                for cl in (False, True)
            }
            seconds = interleaved(
                {f"{p}/{cl}": s for (p, cl), s in steps.items()}, args.repeats, args.warmup
            )
            base = seconds["fp32/False"]
            for (p, cl), _ in steps.items():
                s = seconds[f"{p}/{cl}"]
                rows.append(
                    {
                        "network": label,
                        "dims": dims,
                        "mode": "train step" if train else f"inference, {2 * batch} windows",
                        "precision": p,
                        "channels_last": cl,
                        "seconds": s,
                        "speedup": base / s,
                    }
                )
            print(json.dumps(rows[-4:]), file=sys.stderr)
    from segcli.precision import memory_format

    lines = [
        "## Precision and layout: step time (`bench/precision.py`)",
        "",
        f"Command: `{COMMAND}{' --quick' if args.quick else ''}`, {time.strftime('%Y-%m-%d')}.  ",
        f"Machine: {machine()}  ",
        bf16_line(),
        "",
        "Best of "
        f"{args.repeats} steps after {args.warmup} warm-up steps, the four variants of a row "
        "group interleaved step by step; random inputs (no data loading).  Train step = "
        "forward under autocast, Dice+CE on float32 logits, backward, clipping, AdamW.",
        "",
        *table(
            [
                "network",
                "work",
                "precision",
                "channels-last",
                "seconds",
                "speed-up vs fp32 contiguous",
            ],
            align="llllrr",
        ),
    ]
    for r in rows:
        layout = "yes" if r["channels_last"] else "no"
        speed = (f"{r['seconds']:.4f}", f"{r['speedup']:.2f}×")
        lines.append(row(r["network"], r["mode"], r["precision"], layout, *speed))
    # the layout rule, checked: channels-last must win in each (network, work, precision)
    verdicts = []
    for dims in sorted({r["dims"] for r in rows}):
        rule = memory_format(dims, "cpu") != torch.contiguous_format
        for mode in dict.fromkeys(r["mode"] for r in rows if r["dims"] == dims):
            for p in ("fp32", "bf16"):
                pair = {
                    r["channels_last"]: r["seconds"]
                    for r in rows
                    if r["dims"] == dims and r["mode"] == mode and r["precision"] == p
                }
                faster = pair[True] < pair[False]
                verdicts.append(
                    f"{dims}D {mode}, {p}: channels-last {pair[False] / pair[True]:.2f}× "
                    f"({'faster' if faster else 'slower'}) — rule says "
                    f"{'channels-last' if rule else 'contiguous'}: "
                    f"{'agrees' if faster == rule else '**disagrees**'}"
                )
    lines += [
        "",
        "Layout rule (`segcli.precision.memory_format`: channels-last for 3D networks on CPU, "
        "contiguous for 2D) "
        "against these measurements:",
        "",
        *[f"- {v}" for v in verdicts],
        "",
        "bf16 runs where `train.precision`/`inference.precision` is `auto` and the CPU has "
        "bf16 instructions (`segcli.precision.cpu_bf16_supported`); without them `auto` is fp32 "
        "and the fp32 rows are what runs.",
    ]
    if args.quick:
        lines += ["", "**Quick setting (smaller patches, few steps): a smoke test, not a result.**"]
    return "\n".join(lines), rows


# --------------------------------------------------------------------------- CT-sized inference


def ct_child(which: str, args: argparse.Namespace) -> None:
    """In a fresh process: one inference over the CT volume; seconds and peak extra MiB."""
    from segcli.inference import sliding_window

    model, exp = hippocampus_model(3)
    model.eval()
    g = torch.Generator().manual_seed(2)
    shape = tuple(args.ct_size)
    image = torch.randn(1, *shape, generator=g)
    patch = tuple(args.ct_patch)
    with torch.inference_mode():  # warm-up: allocator and kernels, on one window
        for precision in ("fp32", "bf16"):
            from segcli.precision import resolve_precision

            with resolve_precision(precision, "cpu").autocast():
                model(torch.zeros(1, 1, *patch))
    with peak_growth() as peak:
        start = time.perf_counter()
        if which.startswith("segcli"):
            probs = sliding_window(
                model,
                image,
                patch,
                overlap=args.ct_overlap,
                batch_size=args.ct_batch,
                precision=which.split("-")[1],
            )
        else:
            context = (
                torch.autocast("cpu", dtype=torch.bfloat16)
                if which == "monai-bf16"
                else torch.autocast("cpu", enabled=False)
            )
            with context:
                probs = monai_sliding_window(model, image, patch, args.ct_batch, args.ct_overlap)
        labels = probs.argmax(0)
        seconds = time.perf_counter() - start
    torch.save(labels.to(torch.uint8), Path(args.ct_labels) / f"{which}.pt")
    print(json.dumps({"seconds": seconds, "peak_mib": peak.mib}))


def ct_section(args: argparse.Namespace, tmp: Path) -> str:
    import monai

    results: dict[str, dict[str, float]] = {}
    variants = ["segcli-fp32", "segcli-bf16", "monai-fp32", "monai-bf16"]
    for which in variants:
        results[which] = child_json(
            __file__,
            *("--ct-child", which, "--ct-labels", tmp, "--ct-size", *args.ct_size),
            *("--ct-patch", *args.ct_patch, "--ct-batch", args.ct_batch),
            *("--ct-overlap", args.ct_overlap),
        )
        print(which, results[which], file=sys.stderr)
    labels = {k: torch.load(tmp / f"{k}.pt") for k in variants}
    agree = {k: float((labels[k] == labels["segcli-fp32"]).double().mean()) * 100 for k in variants}
    from segcli.inference.windows import window_starts

    n = 1
    for axis in window_starts(tuple(args.ct_size), tuple(args.ct_patch), args.ct_overlap):
        n *= len(axis)
    size = "×".join(map(str, args.ct_size))
    lines = [
        "## Inference at scale: a CT-sized volume (`bench/precision.py`)",
        "",
        f"Command: `{COMMAND}{' --quick' if args.quick else ''}`, {time.strftime('%Y-%m-%d')}.  ",
        f"Machine: {machine()}  ",
        bf16_line(),
        "",
        f"One {size} single-channel volume (random intensities), the 3D U-Net of "
        f"experiments/hippocampus.yaml (random weights, seed 0, 3 classes), patch "
        f"{'×'.join(map(str, args.ct_patch))}, overlap {args.ct_overlap}, "
        f"{args.ct_batch} windows per forward, {n} windows, gaussian blending.  Each variant in a "
        f"fresh process: wall time of one call (argmax included) and peak extra resident "
        f"memory (VmHWM after a reset).  MONAI {monai.__version__} "
        "`sliding_window_inference(mode='gaussian', sigma_scale=0.125)` with a softmax "
        "predictor, as a MONAI user writes it; its bf16 row wraps the call in "
        "`torch.autocast('cpu', dtype=torch.bfloat16)`.",
        "",
        *table(
            [
                "inferer",
                "precision",
                "seconds",
                "× MONAI fp32",
                "peak extra MiB",
                "argmax = segcli fp32",
            ],
            align="llrrrr",
        ),
    ]
    base = results["monai-fp32"]["seconds"]
    for which in variants:
        tool, precision = which.split("-")
        r = results[which]
        lines.append(
            f"| {'segcli `sliding_window`' if tool == 'segcli' else 'MONAI'} | {precision} | "
            f"{r['seconds']:.1f} | {r['seconds'] / base:.2f} | {r['peak_mib']:.0f} | "
            f"{agree[which]:.3f} % |"
        )
    ok = lambda c: "met" if c else "**NOT met**"  # noqa: E731
    like = []
    for precision in ("fp32", "bf16"):
        ours, theirs = results[f"segcli-{precision}"], results[f"monai-{precision}"]
        like.append(
            f"{precision} time {ok(ours['seconds'] <= theirs['seconds'])}, memory "
            f"{ok(ours['peak_mib'] <= theirs['peak_mib'])}"
        )
    worst = {
        k: max(results[f"segcli-{p}"][k] for p in ("fp32", "bf16")) for k in ("seconds", "peak_mib")
    }
    best = {
        k: min(results[f"monai-{p}"][k] for p in ("fp32", "bf16")) for k in ("seconds", "peak_mib")
    }
    lines += [
        "",
        "Target: segcli never above MONAI in time or memory.  Like for like (each segcli row "
        f"against MONAI's row of the same precision): {'; '.join(like)}.  Across precisions "
        f"(segcli's slower / larger row against MONAI's faster / leaner one): time "
        f"{ok(worst['seconds'] <= best['seconds'])}, memory "
        f"{ok(worst['peak_mib'] <= best['peak_mib'])}.  Random weights: the argmax agreement "
        "shows the numeric effect of bf16, not segmentation quality (that is in "
        "docs/results.md).",
    ]
    if args.quick:
        lines += ["", "**Quick setting (a small volume): a smoke test, not a result.**"]
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small shapes, few steps")
    parser.add_argument("--repeats", type=int, default=None, help="timed steps (median)")
    parser.add_argument("--warmup", type=int, default=None)
    parser.add_argument("--skip-steps", action="store_true")
    parser.add_argument("--skip-ct", action="store_true")
    parser.add_argument("--ct-size", type=int, nargs=3, default=None, help="z y x")
    parser.add_argument("--ct-patch", type=int, nargs=3, default=[80, 160, 160])
    parser.add_argument("--ct-batch", type=int, default=2)
    parser.add_argument("--ct-overlap", type=float, default=0.5)
    doc_options(parser)
    parser.add_argument("--ct-child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--ct-labels", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.ct_size is None:
        args.ct_size = [48, 96, 96] if args.quick else [300, 512, 512]
    if args.quick and args.ct_patch == [80, 160, 160]:
        args.ct_patch = [32, 48, 48]
    if args.repeats is None:
        args.repeats = 3 if args.quick else 15
    if args.warmup is None:
        args.warmup = 1 if args.quick else 3
    if args.ct_child:
        ct_child(args.ct_child, args)
        return

    if not args.skip_steps:
        publish(args, "precision", step_section(args)[0])
    if not args.skip_ct:
        with scratch("segcli-bench-precision-") as tmp:
            publish(args, "precision-ct", ct_section(args, tmp))


if __name__ == "__main__":
    main()
