"""The lecture's claims about windows, tiles and architectures, measured (issue 15, items 4–8, 10).

    .venv/bin/python bench/lecture_windows.py [--quick]   # rewrites its block of docs/lecture.md
    make lecture                                          # the whole document (bench/lecture.py)

:func:`sections` runs every experiment and returns the markdown; figures go to docs/img/.
Every model trains on `segcli synth` toy data with short schedules, so the whole part takes a
few minutes on two CPU cores.  ``--quick`` (or ``quick=True``) shrinks data and schedules
further to check that the script works; its numbers are not meant for the document.

Items: 10 parameter counts and receptive fields of every shipped spec; 8 overlap-tile
prediction for the 2015 U-Net; 4 overlap and blending, and errors against the distance to the
window border; 5 Ciresan's sliding-window classifier against the dense network; 6 FCN-32s/16s/8s;
7 transposed convolution against interpolation + convolution in the U-Net.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from _harness import REPO, machine, row, table, timed_fit, write_block

DOC = REPO / "docs" / "lecture.md"
IMG = REPO / "docs" / "img"
START, END = "<!-- lecture:windows -->", "<!-- /lecture:windows -->"


# --------------------------------------------------------------------------- helpers


def _raw(spec: str) -> dict[str, Any]:
    return yaml.safe_load((REPO / "experiments" / spec).read_text())


def _experiment(raw: dict[str, Any], **sections: Any) -> Any:
    from segcli.config.loader import from_dict

    merged = dict(raw)
    for key, value in sections.items():
        if (
            isinstance(value, dict)
            and isinstance(merged.get(key), dict)
            and key not in ("model", "loss")
        ):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return from_dict(merged)


def _train(exp: Any) -> tuple[Any, Any, float]:
    """Train ``exp`` from scratch on the CPU; (network with the best weights, result, seconds)."""
    import torch

    from segcli.io.checkpoint import load_checkpoint
    from segcli.models import build

    run_dir = Path(exp.output) / exp.name
    result, seconds = timed_fit(exp)
    best = run_dir / "checkpoint_best.pt"
    state = load_checkpoint(best if best.is_file() else run_dir / "checkpoint_last.pt")
    torch.manual_seed(0)
    net = build(exp.model)
    net.load_state_dict(state["model"])
    return net.eval(), result, seconds


def _probs(net: Any, exp: Any, image: np.ndarray, **override: Any) -> Any:
    from segcli.inference.overlap_tile import predict_probabilities

    inf = exp.inference
    settings = {
        "overlap": inf.overlap,
        "blend": inf.blend,
        "batch_size": inf.batch_size,
        "pad_mode": inf.pad_mode,
        **override,
    }
    import torch

    return predict_probabilities(
        net, torch.from_numpy(_normalized(exp, image)), inf.patch_size, **settings
    )


def _normalized(exp: Any, image: np.ndarray) -> np.ndarray:
    """``image`` (spatial) as the network saw it in training: (1, *spatial), spec's scheme."""
    from segcli.data.preprocessing import normalize

    return normalize(image[None], exp.data.normalization, exp.data.window)


def _scores(preds: list[np.ndarray], cases: list[Any], metrics: list[str]) -> dict[str, Any]:
    """Mean of ``metrics`` over malign cases (finite values), misses and benign false alarms."""
    from segcli.metrics import evaluate_case

    values: dict[str, list[float]] = {m: [] for m in metrics}
    missed = benign_fp = 0
    for pred, case in zip(preds, cases, strict=True):
        if not case.malign:
            benign_fp += int(pred.any())
            continue
        if not pred.any():
            missed += 1
        scored = evaluate_case(pred.astype(np.uint8), case.label, (1.0,) * pred.ndim, [1], metrics)
        for m in metrics:
            v = float(scored[1][m])
            if math.isfinite(v):
                values[m].append(v)
    out: dict[str, Any] = {m: float(np.mean(v)) if v else float("nan") for m, v in values.items()}
    out.update(
        missed=missed,
        malign=sum(c.malign for c in cases),
        benign_fp=benign_fp,
        benign=sum(not c.malign for c in cases),
    )
    return out


def _f(value: float, digits: int = 3) -> str:
    return "–" if not math.isfinite(value) else f"{value:.{digits}f}"


def _quality(sc: dict[str, Any]) -> list[str]:
    """Malign Dice, HD95, NSD, missed malign and benign FP cells of :func:`_scores`' figures."""
    return [
        _f(sc["dice"]),
        _f(sc["hd95"], 2),
        _f(sc["nsd"]),
        f"{sc['missed']} of {sc['malign']}",
        f"{sc['benign_fp']} of {sc['benign']}",
    ]


# --------------------------------------------------------------------------- item 10


def parameter_table() -> list[str]:
    """Parameter counts and receptive fields of every shipped spec (no training)."""
    from segcli.config import load
    from segcli.engine.receptive import receptive_field_report

    rows = []
    for path in sorted((REPO / "experiments").glob("*.yaml")):
        exp = load(path)
        report = receptive_field_report(exp)
        m = exp.model
        shape = f"{m.arch}" + (f", depth {m.depth}" if hasattr(m, "depth") else "")
        shape += f", {m.padding} padding" if hasattr(m, "padding") else ""
        rows.append(
            f"| `experiments/{path.name}` | {m.dims}D {shape} | {report['parameters']:,} | "
            f"{'×'.join(str(v) for v in report['receptive_field'])} | "
            f"{'×'.join(str(v) for v in report['input_size'])} → "
            f"{'×'.join(str(v) for v in report['output_size'])} |"
        )
    paper = next(r for r in rows if "unet-2015" in r)
    count = int(paper.split("|")[3].strip().replace(",", ""))
    quoted = 31_030_658
    return [
        "## 10. Parameters and receptive fields of every shipped spec",
        "",
        "`segcli receptive-field <spec>` for each file in `experiments/` (analytic field of a",
        "unit far from the image border, per axis; sizes for the spec's `data.patch_size`).",
        "",
        *table(
            ["spec", "network", "parameters", "receptive field", "patch → output"], align="llrll"
        ),
        *rows,
        "",
        f"The lecture quizzes the 2015 U-Net's parameter count: it quotes {quoted:,}; segcli "
        f"builds `experiments/unet-2015.yaml` with {count:,} "
        f"({'the same' if count == quoted else 'NOT the same'}), and maps a 572×572 tile to "
        "388×388 as in the paper's Figure 1.",
        "",
    ]


# --------------------------------------------------------------------------- item 8


def overlap_tile_section(work: Path, train2d: Path, quick: bool) -> list[str]:
    """The 2015 U-Net predicts any image size; a small valid U-Net trains and predicts."""
    import torch

    from segcli.config import load
    from segcli.data.synth import generate
    from segcli.inference.overlap_tile import overlap_tile, tile_geometry
    from segcli.models import build

    exp = load(REPO / "experiments" / "unet-2015.yaml")
    torch.manual_seed(0)
    paper = build(exp.model).eval()
    shape = (45, 37) if quick else (77, 61)
    image = torch.randn(1, *shape, generator=torch.Generator().manual_seed(0))
    runs = []
    for patch in (252, 316):
        geo = tile_geometry(paper, (patch, patch))
        start = time.perf_counter()
        probs = overlap_tile(paper, image, (patch, patch))
        runs.append((patch, geo, time.perf_counter() - start, probs))
    diff = float((runs[0][3] - runs[1][3]).abs().max())

    # a small valid U-Net of the same design, trained on the toy with overlap-tile validation
    small = _experiment(
        _raw("unet-2015.yaml"),
        name="unet-2015-small",
        data={"root": str(train2d), "patch_size": [60, 60], "val_fraction": 0.05},
        model={
            **_raw("unet-2015.yaml")["model"],
            "filters": 8,
            "depth": 2,
            "norm": "batch",  # tile-independent in eval mode (instance norm would not be)
            "activation": "leaky_relu",
        },
        loss={"name": "dice_ce"},
        train={
            "epochs": 2 if quick else 10,
            "iterations_per_epoch": 10 if quick else 20,
            "batch_size": 16,
            "optimizer": "adamw",
            "lr": 0.003,
            "workers": 0,
        },
        inference={"batch_size": 8, "pad_mode": "reflect"},
        output=str(work / "runs"),
    )
    net, result, seconds = _train(small)
    test = generate(20 if quick else 100, dims=2, size=45, seed=1)  # odd size: 45×45
    preds = [_probs(net, small, c.image).argmax(0).numpy() for c in test]
    same_shape = all(p.shape == c.image.shape for p, c in zip(preds, test, strict=True))
    sc = _scores(preds, test, ["dice"])
    geo_small = tile_geometry(net, (60, 60))

    lines = [
        "## 8. The 2015 U-Net and its overlap-tile strategy",
        "",
        "```",
        "segcli train experiments/unet-2015.yaml      # valid padding: 572×572 → 388×388",
        "segcli predict experiments/unet-2015.yaml -i images/ -o pred/   # any image size",
        "```",
        "",
        "A valid-padding network's output is smaller than its input, so `predict` (and",
        "validation during training) tile the image as in the paper: output tiles of `T` voxels",
        "(the largest multiple of the network's total stride within its output) tile the image",
        "exactly; each reads an input tile larger by the border on every side; the image is",
        "mirrored where a tile leaves it; every tile starts on the stride grid, so each",
        "max-pooling groups the same voxels whatever the tile size (`segcli/inference/",
        "overlap_tile.py`).  The 2015 U-Net itself (random weights — the point is geometry)",
        f"on a {shape[0]}×{shape[1]} image:",
        "",
        *table(
            ["input tile", "output tile used", "border", "tiles", "time (s)", "output size"],
            align="llrrrl",
        ),
    ]
    for patch, geo, secs, probs in runs:
        tiles = math.prod(math.ceil(n / t) for n, t in zip(shape, geo.output_tile, strict=True))
        used = f"{geo.output_tile[0]}×{geo.output_tile[1]} (of {geo.network_output[0]})"
        size = tuple(probs.shape[1:])
        lines.append(
            row(f"{patch}×{patch}", used, geo.border_before[0], tiles, f"{secs:.1f}", size)
        )
    lines += [
        "",
        f"The two tilings agree to {diff:.1e} (largest absolute difference of the",
        "probabilities); `tests/inference/test_overlap_tile.py` checks this, the input's",
        "geometry for odd sizes in 2D and 3D, and equality with one pass over the whole",
        "mirror-padded image — and, as a control, that tiles *not* aligned to the stride give a",
        "different answer.",
        "",
        f"The same design at toy scale (filters 8, depth 2, valid padding, leaky ReLU; batch "
        f"norm, so that in evaluation a voxel's output does not depend on the tile it sits in, "
        f"as instance norm's would: input tile 60 → "
        f"output {geo_small.network_output[0]}, border {geo_small.border_before[0]}) trains on",
        f"the toy in {seconds:.0f} s ({_schedule(small)}, learning rate "
        f"{small.train.lr}, validation by overlap-tile,",
        f"best validation Dice {result.best_dice:.3f}) and predicts {len(test)} test images of",
        f"45×45 pixels — odd, smaller than one input tile — with the input's size "
        f"({'every one' if same_shape else 'NOT every one'}): malign Dice {_f(sc['dice'])} "
        f"(n={sc['malign']}), false alarms in {sc['benign_fp']} of {sc['benign']} benign images.",
        "",
    ]
    return lines


# --------------------------------------------------------------------------- item 4


def _border_distance(shape: tuple[int, ...], starts: list[list[int]], patch: list[int]) -> Any:
    """Per pixel: distance to the nearest border of the (non-overlapping) window holding it."""
    per_axis = []
    for n, axis_starts, p in zip(shape, starts, patch, strict=True):
        d = np.empty(n, dtype=np.int64)
        for s in axis_starts:
            i = np.arange(s, min(s + p, n))
            d[i] = np.minimum(i - s, s + p - 1 - i)
        per_axis.append(d)
    return np.minimum.outer(per_axis[0], per_axis[1])


def overlap_section(net: Any, exp: Any, quick: bool) -> list[str]:
    """Dice and time against overlap and blend; errors against the window-border distance."""
    from segcli.data.synth import generate
    from segcli.inference.windows import window_starts

    size = 96
    test = generate(40 if quick else 100, dims=2, size=size, seed=2)
    patch = list(exp.inference.patch_size)
    rows, preds_by = [], {}
    for blend in ("constant", "gaussian"):
        for overlap in (0.0, 0.25, 0.5, 0.75):
            start = time.perf_counter()
            preds = [
                _probs(net, exp, c.image, overlap=overlap, blend=blend).argmax(0).numpy()
                for c in test
            ]
            seconds = time.perf_counter() - start
            preds_by[(blend, overlap)] = preds
            sc = _scores(preds, test, ["dice"])
            windows = math.prod(len(s) for s in window_starts((size, size), patch, overlap))
            rows.append((blend, overlap, windows, seconds, sc))

    starts = window_starts((size, size), patch, 0.0)
    dist = _border_distance((size, size), starts, patch)
    bins = [(0, 1), (2, 3), (4, 7), (8, 15)]
    by_distance, rates = [], {}
    for lo, hi in bins:
        mask = (dist >= lo) & (dist <= hi)
        cells: list[object] = [f"{lo}–{hi}", f"{int(mask.sum()) * len(test):,}"]
        for key in (("constant", 0.0), ("gaussian", 0.5)):
            errors = sum(
                int(((p != c.label) & mask).sum()) for p, c in zip(preds_by[key], test, strict=True)
            )
            lesion = sum(int(((c.image > 0.5) & mask).sum()) for c in test)
            rates[(key, lo)] = 1e4 * errors / (mask.sum() * len(test))
            cells += [errors, f"{rates[(key, lo)]:.1f}", f"{100 * errors / max(lesion, 1):.1f}"]
        by_distance.append(cells)

    near0, far0 = rates[(("constant", 0.0), 0)], rates[(("constant", 0.0), 8)]
    near5, far5 = rates[(("gaussian", 0.5), 0)], rates[(("gaussian", 0.5), 8)]
    best = max(rows, key=lambda r: (r[4]["dice"], -r[3]))
    timing = {(r[0], r[1]): r[3] for r in rows}
    slow = timing[("gaussian", 0.75)] / max(timing[("gaussian", 0.0)], 1e-9)
    _boundary_figure(test, preds_by, dist, size)
    lines = [
        "## 4. Overlap and blending; errors at the window border",
        "",
        "```",
        "segcli predict experiments/toy-dilated.yaml -i images/ -o pred/ \\",
        "    --set inference.overlap=0.25 --set inference.blend=constant",
        "```",
        "",
        f"The dilated CNN of table 1 ({_schedule(exp)}) predicts {len(test)} toy images of",
        f"{size}×{size} pixels (`segcli synth --size {size} --seed 2`: one lesion each, anywhere)",
        f"with its training window of {patch[0]}×{patch[1]}, so lesions fall at every distance",
        "from the window borders.  Time is the whole set on this machine.",
        "",
        *table(
            ["blend", "overlap", "windows per image", "time (s)", "malign Dice", "missed malign"]
            + ["benign FP"],
            align="lrrrrrr",
        ),
    ]
    for blend, overlap, windows, seconds, sc in rows:
        outcome = (f"{sc['missed']} of {sc['malign']}", f"{sc['benign_fp']} of {sc['benign']}")
        lines.append(row(blend, overlap, windows, f"{seconds:.1f}", _f(sc["dice"]), *outcome))
    lines += [
        "",
        "Errors by distance to the nearest border of the window that predicted the pixel (the",
        "non-overlapping windows of overlap 0; the same pixels are shown for overlap 0.5 with",
        "gaussian blending).  Rates per 10,000 pixels, and per 100 bright (lesion or ring)",
        "pixels, where the errors happen:",
        "",
        *table(
            ["distance (px)", "pixels", "errors, overlap 0", "per 10⁴", "per 100 bright"]
            + ["errors, overlap 0.5 gaussian", "per 10⁴", "per 100 bright"],
            by_distance,
            align="l" + "r" * 7,
        ),
        "",
        "![errors at the window border](img/lecture-window-border.png)",
        "",
        "The network's receptive field is 15×15 and it pads each window with zeros, so a malign",
        "lesion whose ring lies across a window border looks benign from inside that window.",
        f"Measured: with overlap 0, {_f(near0, 1)} errors per 10⁴ pixels within 1 px of a "
        f"window border against {_f(far0, 1)} at 8–15 px; with overlap 0.5 and gaussian "
        f"blending, {_f(near5, 1)} against {_f(far5, 1)}.  The best malign Dice "
        f"({_f(best[4]['dice'])}) came with {best[0]} blending at overlap {best[1]}; overlap "
        f"0.75 took {slow:.1f}× the time of overlap 0 (gaussian).",
        "",
    ]
    return lines


def _boundary_figure(test: list[Any], preds_by: dict, dist: np.ndarray, size: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from segcli.atomic import atomic_open

    wrong = [
        i
        for i, c in enumerate(test)
        if c.malign
        and not preds_by[("constant", 0.0)][i].any()
        and preds_by[("gaussian", 0.5)][i].any()
    ]
    i = wrong[0] if wrong else next(i for i, c in enumerate(test) if c.malign)
    fig, axes = plt.subplots(1, 3, figsize=(9, 3.2))
    panels = [
        (test[i].image, "image (window grid dashed)"),
        (preds_by[("constant", 0.0)][i], "overlap 0"),
        (preds_by[("gaussian", 0.5)][i], "overlap 0.5, gaussian"),
    ]
    for ax, (array, title) in zip(axes, panels, strict=True):
        ax.imshow(array, cmap="gray", interpolation="nearest")
        for k in range(32, size, 32):
            ax.axhline(k - 0.5, color="tab:orange", ls="--", lw=0.8)
            ax.axvline(k - 0.5, color="tab:orange", ls="--", lw=0.8)
        ax.contour(test[i].label, levels=[0.5], colors="tab:green", linewidths=0.8)
        ax.set_title(title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("malign lesion at a window border (green: reference)", fontsize=10)
    fig.tight_layout()
    IMG.mkdir(parents=True, exist_ok=True)
    with atomic_open(IMG / "lecture-window-border.png", "wb") as handle:
        fig.savefig(handle, format="png", dpi=90)
    plt.close(fig)


def _schedule(exp: Any) -> str:
    t = exp.train
    return (
        f"{t.epochs} epochs × {t.iterations_per_epoch} iterations of {t.batch_size}, "
        f"{exp.loss.name} loss"
    )


# --------------------------------------------------------------------------- item 5


def ciresan_section(work: Path, train2d: Path, quick: bool) -> list[str]:
    """The same trained weights as a sliding-window classifier and as a dense network."""
    import torch

    from segcli.data.synth import generate
    from segcli.inference.patch_classifier import classify_every_pixel
    from segcli.models import build, count_parameters

    exp = _experiment(
        _raw("toy-dilated.yaml"),
        name="ciresan",
        model={"arch": "patch_cnn", "dims": 2, "filters": 8, "hidden": 32, "mode": "dense"},
        loss={"name": "dice"},
        train={
            "epochs": 1 if quick else 2,
            "iterations_per_epoch": 5 if quick else 20,
            "batch_size": 8,
        },
        data={"root": str(train2d), "patch_size": [32, 32], "val_fraction": 0.02},
        output=str(work / "runs"),
    )
    dense, result, seconds = _train(exp)
    window = build(exp.model.model_copy(update={"mode": "window"})).eval()
    window.load_state_dict(dense.state_dict())
    size = 32 if quick else 64
    image = torch.from_numpy(generate(1, dims=2, size=size, seed=3)[0].image[None])
    start = time.perf_counter()
    with torch.inference_mode():
        dense_out = dense(image[None])[0]
    dense_s = time.perf_counter() - start
    start = time.perf_counter()
    window_out = classify_every_pixel(window, image, dense.window, batch_size=256)
    window_s = time.perf_counter() - start
    diff = float((dense_out - window_out).abs().max())
    scale = float(dense_out.abs().max())
    agree = bool((dense_out.argmax(0) == window_out.argmax(0)).all())
    return [
        "## 5. Sliding-window patch classification (Ciresan) against a fully convolutional run",
        "",
        f"`patch_cnn` is the lecture's {dense.window}×{dense.window} window classifier (kernels",
        "4, 5, 4, 4 with 2×2 max-pooling, fully connected layers as convolutions; 8 maps and 32",
        f"hidden units here, {count_parameters(dense):,} parameters).  Trained densely on the toy",
        f"({_schedule(exp)}, {seconds:.0f} s, best validation Dice {result.best_dice:.3f}), its",
        "weights are loaded into `mode: window` and run both ways on one",
        f"{size}×{size} image:",
        "",
        *table(["run", "forward passes", "time (s)"], align="lrr"),
        f"| sliding window: the {dense.window}×{dense.window} window around each pixel, "
        f"classified (`classify_every_pixel`, batches of 256) | {size * size:,} windows | "
        f"{window_s:.2f} |",
        f"| dense (filter rarefaction, one pass) | 1 | {dense_s:.3f} |",
        "",
        f"Largest difference between the two logit maps: {diff:.1e} (logits up to {scale:.1f});",
        f"the argmax labels {'agree at every pixel' if agree else 'DIFFER'}.  The dense run is "
        f"{window_s / max(dense_s, 1e-9):.0f}× faster here: neighbouring windows share almost",
        "all their computation, which the dense network does once.",
        "`tests/inference/test_patch_classifier.py` checks the equality in float32 at the",
        "lecture's window size, in 2D and 3D.",
        "",
    ]


# --------------------------------------------------------------------------- items 6 and 7


def _compare(
    variants: list[tuple[str, Any]], test: list[Any]
) -> list[tuple[str, Any, float, dict[str, Any], list[Any]]]:
    out = []
    for label, exp in variants:
        net, result, seconds = _train(exp)
        probs = [_probs(net, exp, c.image) for c in test]
        preds = [p.argmax(0).numpy() for p in probs]
        out.append((label, result, seconds, _scores(preds, test, ["dice", "hd95", "nsd"]), net))
    return out


FCN_SIZE, FCN_LESION = (
    64,
    12,
)  # images and lesions large enough for stride-32 scores to mean something


def fcn_section(work: Path, quick: bool) -> list[str]:
    """FCN-32s/16s/8s on 64×64 images with 12×12 lesions: boundary accuracy of the skips."""
    from segcli.data.synth import generate, write_dataset
    from segcli.models import count_parameters

    train_dir = work / f"toy2d-{FCN_SIZE}-{FCN_LESION}"
    if not (train_dir / "dataset.json").is_file():
        cases = generate(200, dims=2, size=FCN_SIZE, lesion=FCN_LESION, seed=0)
        write_dataset(train_dir, cases)
    test = generate(30 if quick else 60, dims=2, size=FCN_SIZE, lesion=FCN_LESION, seed=1)
    train = {
        "epochs": 2 if quick else 6,
        "iterations_per_epoch": 10 if quick else 20,
        "batch_size": 16,
        "lr": 0.003,
    }
    variants = []
    for variant in ("32s", "16s", "8s"):
        model = {
            "arch": "fcn",
            "dims": 2,
            "filters": 8,
            "max_filters": 64,
            "variant": variant,
            "convs_per_stage": [2, 2, 2, 2, 2],
            "norm": "batch",
        }
        exp = _experiment(
            _raw("toy-dilated.yaml"),
            name=f"fcn-{variant}",
            model=model,
            train=train,
            data={
                "root": str(train_dir),
                "val_fraction": 0.1,
                "patch_size": [FCN_SIZE, FCN_SIZE],
            },
            output=str(work / "runs"),
        )
        variants.append((f"FCN-{variant}", exp))
    rows = _compare(variants, test)
    n = FCN_SIZE
    lines = [
        "## 6. FCN-32s, 16s and 8s: what the skips do to boundaries",
        "",
        "On the 32×32 toy with 3×3 lesions a stride-32 score map is a single value, so the",
        f"comparison runs on larger images: `segcli synth --size {n} --lesion {FCN_LESION}` "
        f"({n}×{n} images, {FCN_LESION}×{FCN_LESION} lesions, ringed = malign; 200 training "
        f"cases, {len(test)} test cases with seed 1).",
        "Three FCNs with the same VGG-style encoder (5 stages of two 3×3 convolutions, 8→64",
        f"maps, batch norm, 2×2 pooling: a {n // 32}×{n // 32} score map at stride 32) and the "
        f"same budget ({_schedule(variants[0][1])}, learning rate 0.003, whole {n}×{n} images "
        "as patches).",
        "FCN-32s upsamples its stride-32 scores straight to the image; 16s and 8s first add",
        "scores from the stride-16 and stride-8 pooling outputs.  HD95 and NSD (tolerance",
        "1 px) are means over malign cases where both masks are non-empty.",
        "",
        *table(
            ["network", "parameters", "train time (s)", "malign Dice", "HD95 (px)", "NSD"]
            + ["missed malign", "benign FP"],
            align="l" + "r" * 7,
        ),
    ]
    for label, _result, seconds, sc, net in rows:
        lines.append(row(label, f"{count_parameters(net):,}", f"{seconds:.0f}", *_quality(sc)))
    silent = [label for label, *_r, sc, _net in rows if sc["missed"] == sc["malign"]]
    lines += [
        "",
        f"A stride-32 score map holds one value per 32×32 pixels, so a {FCN_LESION}-pixel "
        "lesion's border can only come from the",
        "upsampling; the 16s and 8s skips add scores computed at finer strides.  Measured: "
        f"lowest HD95 {_best(rows, 'hd95', min)}, highest NSD {_best(rows, 'nsd', max)}, "
        f"highest malign Dice {_best(rows, 'dice', max)}."
        + (
            f"  {' and '.join(silent)} found no malign lesion on this budget: its "
            "training stays on the empty-prediction plateau (validation Dice of an empty "
            f"mask).  Geometry says why: its output is the bilinear upsampling "
            f"(align_corners false) of a {n // 32}×{n // 32} score map, constant on the "
            f"{n // 4}×{n // 4} corner blocks and bilinear between them, so its largest value "
            f"lies in a corner block and any non-empty mask contains a whole {n // 4}×{n // 4} "
            f"block: it cannot outline a {FCN_LESION}×{FCN_LESION} lesion anywhere else, and "
            "the empty mask is the best it can do for most cases."
            if silent
            else ""
        ),
        "",
    ]
    return lines


def _best(rows: list[Any], metric: str, pick: Any) -> str:
    finite = [(r[3][metric], r[0]) for r in rows if math.isfinite(r[3][metric])]
    if not finite or all(r[3]["missed"] == r[3]["malign"] for r in rows):
        return "(none: no network found a malign lesion on this budget)"
    if len({v for v, _ in finite}) == 1:
        return f"(all equal: {_f(finite[0][0], 2 if metric == 'hd95' else 3)})"
    value, label = pick(finite)
    return f"{label} ({_f(value, 2 if metric == 'hd95' else 3)})"


def _phase_amplitude(logits: Any, label: np.ndarray) -> float:
    """Std of the mean foreground logit over the four 2×2 grid phases, away from lesions."""
    from scipy.ndimage import binary_dilation

    fg = (logits[1] - logits[0]).numpy()
    keep = ~binary_dilation(label > 0, iterations=8)
    means = [fg[a::2, b::2][keep[a::2, b::2]].mean() for a in (0, 1) for b in (0, 1)]
    return float(np.std(means))


def upconv_section(work: Path, train2d: Path, test: list[Any], quick: bool) -> list[str]:
    import torch

    # the shipped spec (filters 16, instance norm, z-score, Dice + cross-entropy), shorter
    train = {"epochs": 2 if quick else 4, "iterations_per_epoch": 10 if quick else 20}
    variants = []
    for upsample in ("transpose", "interp"):
        exp = _experiment(
            _raw("toy-unet.yaml"),
            name=f"unet-{upsample}",
            model={
                **_raw("toy-unet.yaml")["model"],
                "upsample": upsample,
            },
            train=train,
            data={"root": str(train2d), "val_fraction": 0.05},
            output=str(work / "runs"),
        )
        variants.append((upsample, exp))
    rows = _compare(variants, test)
    amplitudes = []
    for _label, _result, _seconds, _sc, net in rows:
        values = []
        for case in test[:40]:
            image = torch.from_numpy(_normalized(variants[0][1], case.image))
            with torch.inference_mode():
                logits = net(image[None])[0]
            values.append(_phase_amplitude(logits, case.label))
        amplitudes.append(float(np.mean(values)))
    _checkerboard_figure(rows, test, variants[0][1])
    lines = [
        "## 7. Up-convolution: transposed convolution against interpolation + convolution",
        "",
        "```",
        "segcli train experiments/toy-unet.yaml --set model.upsample=interp",
        "```",
        "",
        "Two U-Nets as `experiments/toy-unet.yaml` (filters 16, depth 3, instance norm) with",
        f"the same shortened budget ({_schedule(variants[0][1])});",
        "`transpose` is the paper's 2×2 stride-2 transposed convolution, `interp` bilinear",
        "upsampling followed by a 1×1 convolution.  *Checkerboard* is the standard deviation of",
        "the mean foreground logit over the four positions of the 2×2 upsampling grid, on",
        "background at least 8 px from any lesion of 40 test images: a stride-2 transposed",
        "convolution with a 2×2 kernel gives each grid position its own weights, so any",
        "imbalance shows as a periodic pattern; interpolation cannot produce one by itself.",
        "",
        *table(
            ["upsampling", "train time (s)", "malign Dice", "HD95 (px)", "NSD", "benign FP"]
            + ["checkerboard (logit std)"],
            align="l" + "r" * 6,
        ),
    ]
    for (label, _result, seconds, sc, _net), amp in zip(rows, amplitudes, strict=True):
        quality = _quality(sc)
        del quality[3]  # no "missed malign" column here
        lines.append(row(label, f"{seconds:.0f}", *quality, f"{amp:.3f}"))
    lines += [
        "",
        f"Measured: the checkerboard amplitude of `transpose` is "
        f"{amplitudes[0] / max(amplitudes[1], 1e-12):.1f}× that of `interp`"
        f" ({amplitudes[0]:.3f} against {amplitudes[1]:.3f}); malign Dice "
        f"{_f(rows[0][3]['dice'])} against {_f(rows[1][3]['dice'])}.  The pictures show the",
        "foreground logit of one test image (background range stretched):",
        "",
        "![foreground logit maps of both U-Nets](img/lecture-upconv.png)",
        "",
    ]
    return lines


def _checkerboard_figure(rows: list[Any], test: list[Any], exp: Any) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from segcli.atomic import atomic_open

    case = next(c for c in test if c.malign)
    fig, axes = plt.subplots(1, 1 + len(rows), figsize=(3.2 * (1 + len(rows)), 3.2))
    axes[0].imshow(case.image, cmap="gray", interpolation="nearest")
    axes[0].set_title("image", fontsize=9)
    for ax, (label, *_rest, net) in zip(axes[1:], rows, strict=True):
        with torch.inference_mode():
            logits = net(torch.from_numpy(_normalized(exp, case.image))[None])[0]
        fg = (logits[1] - logits[0]).numpy()
        lo, hi = np.percentile(fg, [1, 60])  # stretch the background range
        ax.imshow(np.clip(fg, lo, hi), cmap="magma", interpolation="nearest")
        ax.set_title(f"{label}: foreground logit", fontsize=9)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    IMG.mkdir(parents=True, exist_ok=True)
    with atomic_open(IMG / "lecture-upconv.png", "wb") as handle:
        fig.savefig(handle, format="png", dpi=90)
    plt.close(fig)


# --------------------------------------------------------------------------- entry points


def sections(work: Path, train2d: Path, quick: bool = False) -> list[str]:
    """Run every experiment of this part; return its markdown lines (figures: docs/img/).

    Args:
        work: scratch folder (run folders go to ``work/runs``).
        train2d: the 2D toy training set (``segcli synth --cases 400 --seed 0``).
        quick: tiny data and schedules, to check the script; not for the document.
    """
    from segcli.config import load
    from segcli.data.synth import generate
    from segcli.engine.runtime import set_quiet

    set_quiet(True)
    started = time.perf_counter()
    test = generate(30 if quick else 100, dims=2, seed=1)  # = segcli synth --cases 100 --seed 1
    dilated = load(
        REPO / "experiments" / "toy-dilated.yaml",
        [
            f"data.root={train2d}",
            f"output={work / 'runs'}",
            "name=windows-dilated",
            "data.val_fraction=0.05",
            "loss.name=dice",
            f"train.epochs={2 if quick else 4}",
            f"train.iterations_per_epoch={10 if quick else 20}",
        ],
    )
    net, _result, _seconds = _train(dilated)
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    out = [
        "# Windows, tiles and architectures",
        "",
        "Written by `bench/lecture_windows.py` (part of `make lecture`"
        + (", QUICK setting: not for reading" if quick else "")
        + f"), {stamp}, on {machine()}; load average {os.getloadavg()[0]:.1f} at the start "
        "(above the core count, the times below are contended).",
        "",
    ]
    out += parameter_table()
    out += overlap_tile_section(work, train2d, quick)
    out += overlap_section(net, dilated, quick)
    out += ciresan_section(work, train2d, quick)
    out += fcn_section(work, quick)
    out += upconv_section(work, train2d, test, quick)
    out += [f"(This part ran in {time.perf_counter() - started:.0f} s.)", ""]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "lecture")
    parser.add_argument("--quick", action="store_true", help="tiny setting, to check the script")
    parser.add_argument("--doc", type=Path, default=DOC, help="the document to update")
    args = parser.parse_args()
    train2d = args.work / "toy2d"
    if not (train2d / "dataset.json").is_file():
        from segcli.engine.synth import run_synth

        run_synth(train2d, dims=2, cases=400, seed=0)
    lines = sections(args.work, train2d, quick=args.quick)
    write_block(args.doc, START, END, "\n".join(lines))
    print(f"wrote its block of {args.doc}", file=sys.stderr)


if __name__ == "__main__":
    main()
