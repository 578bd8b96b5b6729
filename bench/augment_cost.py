"""What nnU-Net's augmentation costs on the CPU, and whether 2 loader workers keep up.

    make bench-augment        # or: .venv/bin/python bench/augment_cost.py [--quick] [--no-write]

Three tables for docs/benchmarks.md (section ``augment``):

1. Backends, one thread (a loader worker's setting): the resampling of one rotated and scaled
   crop by ``scipy.ndimage.map_coordinates`` against ``torch.nn.functional.grid_sample`` (image
   linear, labels one-hot and nearest), and the low-resolution simulation by
   ``scipy.ndimage.zoom`` against ``torch.nn.functional.interpolate``; segcli uses the faster.
2. Per transform, milliseconds per patch when it fires (``segcli.data.augment.cost
   .transform_costs``, the planner's measurement) at the Hippocampus patch sizes 40×56×40 and
   32×48×32 and a CT patch 64×160×160 (1 channel, 3 classes), and the expected milliseconds
   per patch of nnU-Net's preset (probability × cost), cheapest first.
3. experiments/hippocampus.yaml on the shared MSD Hippocampus data with 2 loader workers:
   patches per second the loader alone delivers, and a real training loop (``fit``, 2 loader
   workers, no validation): step time and the share of the loop spent waiting for data —
   without augmentation, with the spec's own (intensity), with nnU-Net's preset (no flips,
   as the spec).  Each in a fresh process, the variants in turn for 2 rounds, the best of each
   kept (other users' load only slows).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import numpy as np
from _harness import REPO, child_json, doc_options, interleaved, machine, publish, scratch, table

SPEC = REPO / "experiments" / "hippocampus.yaml"
PATCHES = [(40, 56, 40), (32, 48, 32), (64, 160, 160)]
#: batches the loader-alone timing skips: worker start-up and the 2 × 4 batches prefetched
SKIP = 10
#: the training-loop variants: name → data.augment
VARIANTS = {
    "none": {"flip": False, "intensity": False},
    "spec (intensity)": None,  # experiments/hippocampus.yaml's own
    "nnU-Net preset": {"preset": "nnunet", "flip": False},
}


def _ms(seconds: float) -> str:
    ms = seconds * 1e3
    return f"{ms:.2f}" if ms < 1 else f"{ms:.1f}" if ms < 100 else f"{ms:.0f}"


# --------------------------------------------------------------------------- 1. backends


def backends(repeats: int) -> list[list[str]]:
    """scipy vs torch for what the spatial transform and the low-resolution simulation do."""
    import torch

    torch.set_num_threads(1)
    return [row for patch in (PATCHES[0], PATCHES[2]) for row in _backends_at(patch, repeats)]


def _backends_at(patch: tuple[int, ...], repeats: int) -> list[list[str]]:
    import torch
    import torch.nn.functional as F
    from scipy import ndimage

    from segcli.data.augment.spatial import RandomSpatial, _coordinates, _Grid, _linear

    rows = []
    spatial = RandomSpatial(rotation_probability=1.0, degrees=(20, 20),
                            scaling_probability=1.0, scale=(1.1, 1.1))  # fmt: skip
    draw = spatial.draw(np.random.default_rng(0), patch)
    rng = np.random.default_rng(1)
    image = rng.normal(size=(1, *draw.crop_size)).astype(np.float32)
    offsets = np.indices(draw.crop_size) - (np.array(draw.crop_size) - 1).reshape(3, 1, 1, 1) / 2
    radius = np.sqrt((offsets**2).sum(0)) / (min(draw.crop_size) / 2)
    label = np.zeros(draw.crop_size, np.uint8)
    label[radius < 0.8] = 1
    label[radius < 0.4] = 2

    def scipy_image() -> Any:
        return ndimage.map_coordinates(image[0], _coordinates(draw), order=1, mode="nearest")

    def scipy_onehot() -> Any:
        coords = _coordinates(draw)
        shares = [ndimage.map_coordinates((label == v).astype(np.float32), coords, order=1)
                  for v in (1, 2)]  # fmt: skip
        background = 1 - shares[0] - shares[1]
        return np.argmax([background, *shares], axis=0)

    def scipy_nearest() -> Any:
        return ndimage.map_coordinates(label, _coordinates(draw), order=0, mode="nearest")

    def torch_nearest() -> Any:
        grid = _Grid(draw)
        return grid.sample(label[None].astype(np.float32), mode="nearest")

    timed = interleaved(
        {
            "scipy image": scipy_image,
            "torch image": lambda: _Grid(draw).sample(image),
            "scipy onehot": scipy_onehot,
            "torch onehot": lambda: _linear(None, label, _Grid(draw)),
            "scipy nearest": scipy_nearest,
            "torch nearest": torch_nearest,
        },
        repeats=repeats,
        warmup=1,
    )
    size = "×".join(map(str, patch))
    crop = "×".join(map(str, draw.crop_size))
    for what, key, used in (("image, linear", "image", "torch"),
                            ("labels, one-hot (2 classes)", "onehot", "torch"),
                            ("labels, nearest", "nearest", "scipy")):  # fmt: skip
        s, t = timed[f"scipy {key}"], timed[f"torch {key}"]
        rows.append([f"resample {what}", f"{size} (crop {crop})", _ms(s), _ms(t), used])

    x = rng.normal(size=patch).astype(np.float32)
    small = [round(s * 0.7) for s in patch]

    def scipy_lowres() -> Any:
        down = ndimage.zoom(x, [a / b for a, b in zip(small, patch, strict=True)], order=0,
                            grid_mode=True, mode="grid-constant")  # fmt: skip
        return ndimage.zoom(down, [a / b for a, b in zip(patch, down.shape, strict=True)],
                            order=1, grid_mode=True, mode="nearest")  # fmt: skip

    def torch_lowres() -> Any:
        t = torch.from_numpy(x)[None, None]
        down = F.interpolate(t, size=small, mode="nearest-exact")
        return F.interpolate(down, size=patch, mode="trilinear")[0, 0].numpy()

    low = interleaved({"scipy": scipy_lowres, "torch": torch_lowres}, repeats, warmup=1)
    rows.append(["low resolution (zoom 0.7)", size, _ms(low["scipy"]), _ms(low["torch"]),
                 "torch"])  # fmt: skip
    return rows


# --------------------------------------------------------------------------- 2. per transform


def per_transform(
    repeats: dict[tuple[int, ...], int],
) -> tuple[list[str], list[list[str]], str, dict[tuple[int, ...], float]]:
    """The per-transform table, the cheap-first orders, and the preset's expected seconds per
    patch at each patch size."""
    from segcli.config.schema import AugmentSpec
    from segcli.data.augment.cost import cheap_first, expected_cost, probability, transform_costs

    spec = AugmentSpec(preset="nnunet")
    costs = {
        patch: transform_costs(
            spec, patch, (1.0, 1.0, 1.0), channels=1, classes=3, repeats=repeats[patch]
        )  # fmt: skip
        for patch in PATCHES
    }
    names = list(costs[PATCHES[0]])
    rows = []
    for name in names:
        p = probability(spec, name)
        cells = [f"`{name}`", f"{p:g}" + (" per axis" if name == "flip" else "")]
        cells += [_ms(costs[patch][name]) for patch in PATCHES]
        rows.append(cells)
    rows.append(["**expected per patch** (Σ probability × cost)", ""]
                + [f"**{_ms(expected_cost(spec, costs[patch]))}**" for patch in PATCHES])  # fmt: skip
    order = {patch: cheap_first(spec, costs[patch]) for patch in PATCHES}
    orders = "; ".join(f"{'×'.join(map(str, p))}: {', '.join(order[p])}" for p in PATCHES)
    columns = ["transform", "probability"] + [f"{'×'.join(map(str, p))} ms" for p in PATCHES]
    expected = {patch: expected_cost(spec, costs[patch]) for patch in PATCHES}
    return columns, rows, orders, expected


# --------------------------------------------------------------------------- 3. hippocampus


def _exp(variant: str, extra: list[str]) -> Any:
    from _harness import shared_data

    from segcli.config import load

    overrides = [f"data.root={shared_data('msd_task04_hippocampus')}", *extra]
    augment = VARIANTS[variant]
    if augment is not None:
        overrides.append("data.augment=" + json.dumps(augment))
    return load(SPEC, overrides)


def loader_child(variant: str, batches: int) -> dict[str, Any]:
    """Patches per second of the spec's loader (2 workers), nothing else running."""
    from segcli.engine.runtime import set_quiet
    from segcli.engine.train_data import load_train_data, patch_loader

    set_quiet(True)
    exp = _exp(variant, [f"train.iterations_per_epoch={batches + SKIP}", "train.workers=2"])
    data = load_train_data(exp)
    dataset, loader = patch_loader(exp, data.train_cases, "cpu", world=1)
    dataset.set_epoch(0)
    batches_seen, start = 0, time.perf_counter()
    for _ in loader:
        batches_seen += 1
        if batches_seen == SKIP:  # the workers are up and what they prefetched is consumed
            start = time.perf_counter()
    seconds = time.perf_counter() - start
    patches = (batches_seen - SKIP) * exp.train.batch_size
    return {"variant": variant, "patches_per_s": patches / seconds}


def fit_child(variant: str, iterations: int, run_dir: str) -> dict[str, Any]:
    """A short training run with 2 loader workers: step time and the data-wait share."""
    from segcli.engine.runtime import set_quiet
    from segcli.engine.train import fit

    set_quiet(True)
    exp = _exp(variant, ["data.val_fraction=0", "train.epochs=1", "train.workers=2",
                         f"train.iterations_per_epoch={iterations}"])  # fmt: skip
    result = fit(exp, run_dir=run_dir, device="cpu")
    busy = result.data_seconds + result.compute_seconds
    return {
        "variant": variant,
        "iterations": result.iterations,
        "batch_size": exp.train.batch_size,
        "step_s": result.compute_seconds / result.iterations,
        "wait_share": result.data_seconds / busy,
        "it_per_s": result.iterations / busy,
    }


def hippocampus(
    batches: int, iterations: int, rounds: int
) -> tuple[list[list[str]], list[dict[str, Any]]]:
    """Each variant's loader alone and training loop, in fresh processes, the variants taken in
    turn for ``rounds`` rounds (so that other users' load hits each alike); per variant the
    fastest loader and the training run with the fastest step (other work only slows)."""
    loaders: dict[str, list[dict[str, Any]]] = {v: [] for v in VARIANTS}
    runs: dict[str, list[dict[str, Any]]] = {v: [] for v in VARIANTS}
    with scratch("segcli-bench-augment-") as tmp:
        for r in range(rounds):
            for i, variant in enumerate(VARIANTS):
                loader = child_json(__file__, "--loader-child", variant, "--batches", batches)
                print(loader, file=sys.stderr)
                loaders[variant].append(loader)
                run = child_json(__file__, "--fit-child", variant, "--iterations", iterations,
                                 "--run-dir", tmp / f"run{r}-{i}")  # fmt: skip
                print(run, file=sys.stderr)
                runs[variant].append(run)
    rows, results = [], []
    best = {v: min(runs[v], key=lambda x: x["step_s"]) for v in VARIANTS}
    for variant in VARIANTS:
        loader = max(loaders[variant], key=lambda x: x["patches_per_s"])
        run = best[variant]
        need = run["batch_size"] / run["step_s"]
        rows.append([
            variant,
            f"{loader['patches_per_s']:.0f}",
            f"{run['step_s'] * 1e3:.0f}",
            f"{need:.1f}",
            f"{run['it_per_s']:.2f}",
            f"{100 * run['wait_share']:.1f} %",
            "yes" if keeps_up(run["wait_share"], best["none"]["wait_share"]) else "no",
        ])  # fmt: skip
        results.append({**loader, **run})
    return rows, results


def keeps_up(wait_share: float, unaugmented: float) -> bool:
    """The loader keeps up when the loop waits for data under 10 % of the time, or no more than
    2 points longer than without augmentation (what reading and batching alone cost)."""
    return wait_share < 0.1 or wait_share <= unaugmented + 0.02


# --------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny settings (smoke test)")
    parser.add_argument("--batches", type=int, default=60)
    parser.add_argument("--iterations", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--loader-child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--fit-child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--run-dir", default=None, help=argparse.SUPPRESS)
    doc_options(parser)
    args = parser.parse_args()
    if args.loader_child:
        print(json.dumps(loader_child(args.loader_child, args.batches)))
        return
    if args.fit_child:
        print(json.dumps(fit_child(args.fit_child, args.iterations, args.run_dir)))
        return
    if args.quick:
        args.batches, args.iterations, args.rounds = 4, 4, 1
    began = time.perf_counter()
    header = machine()
    repeats = 2 if args.quick else 7
    backend_rows = backends(repeats)
    costs_repeats = {p: (2 if args.quick else (4 if max(p) > 100 else 12)) for p in PATCHES}
    columns, cost_rows, orders, expected = per_transform(costs_repeats)
    loop_rows, results = hippocampus(args.batches, args.iterations, args.rounds)
    by = {r["variant"]: r for r in results}
    preset, plain = by["nnU-Net preset"], by["none"]
    keeps = keeps_up(preset["wait_share"], plain["wait_share"])
    # CPU seconds per batch the 2 workers spend beyond the unaugmented loader's
    extra = 2 * preset["batch_size"] * (1 / preset["patches_per_s"] - 1 / plain["patches_per_s"])
    verdict = (
        f"With nnU-Net's preset the loop waited for data {100 * preset['wait_share']:.1f} % of "
        f"the time (without augmentation {100 * plain['wait_share']:.1f} %) and ran "
        f"{preset['it_per_s']:.2f} it/s against {plain['it_per_s']:.2f} "
        f"({100 * (preset['it_per_s'] / plain['it_per_s'] - 1):+.0f} %; the step "
        f"{preset['step_s'] * 1e3:.0f} ms against {plain['step_s'] * 1e3:.0f} ms, while by the "
        f"loader-alone rates the workers' augmentation takes {extra * 1e3:.1f} ms more CPU per "
        "batch): on 2 cores the "
        + ("loader keeps up with this network's step."
           if keeps else
           "loader does **not** keep up with this network's step; the planner should shrink the "
           "set, cheapest first (`segcli.data.augment.cost.fit_to_allowance`).")
    )  # fmt: skip
    from segcli.data.augment.cost import per_patch_allowance

    allowance = per_patch_allowance(preset["step_s"], preset["batch_size"], 2)
    ct = expected[PATCHES[2]] * 1e3
    verdict += (
        f"  Per patch the 2 workers have {allowance * 1e3:.0f} ms (`per_patch_allowance`: "
        f"workers × step / batch) against the preset's expected {expected[PATCHES[1]] * 1e3:.1f} ms "
        f"at 32×48×32.  At the CT patch 64×160×160 the preset's expected {ct:.0f} ms per patch "
        f"caps 2 workers at {2000 / ct:.0f} patches/s: a step on a batch of 2 shorter than "
        f"{ct:.0f} ms (a GPU's) would wait for data, and the planner then keeps the cheapest "
        "transforms that fit (`fit_to_allowance`)."
    )
    lines = [
        "## Augmentation cost on the CPU (`bench/augment_cost.py`)",
        "",
        f"`make bench-augment` on {header}; {time.perf_counter() - began:.0f} s in all.",
        "",
        "**Backends**, one thread (a loader worker's setting), fastest of "
        f"{repeats} interleaved runs: one rotated (20° about each axis) and scaled (1.1) "
        "resampling of the crop the patch needs; the low-resolution simulation (nearest down "
        "to 0.7, linear back).  segcli uses the faster of each (cubic images, which torch "
        "cannot do in 3D, use scipy).",
        "",
        *table(
            ["operation", "patch", "scipy ms", "torch ms", "segcli uses"], backend_rows, "llrrl"
        ),  # fmt: skip
        "",
        "**Per transform**, milliseconds per patch when it fires (mean over patches with fresh "
        "draws; a spatial transform includes copying its larger crop), one thread, 1 channel, 3 "
        "label classes, nnU-Net's preset (`data.augment: {preset: nnunet}`; elastic is off "
        "there, its cost shown for `elastic: {probability: p}`).  "
        "`segcli.data.augment.cost.transform_costs` measures the same for the planner.",
        "",
        *table(columns, cost_rows, "llrrr"),
        "",
        f"Cheapest first by expected cost: {orders}.",
        "",
        "**Hippocampus** (`experiments/hippocampus.yaml`: 3D U-Net, 8 filters, batch 2, patch "
        "32×48×32) with 2 loader workers.  Loader alone: patches per second with no training "
        f"running ({args.batches} batches after the first {SKIP}).  Training: {args.iterations} "
        "iterations of `fit` (2 loader workers, no validation), the step's compute time and the "
        "share of the loop spent waiting for a batch; the loader keeps up when that share "
        "stays under 10 % or within 2 points of the unaugmented loop's.  Each in a fresh "
        f"process, the variants in turn, {args.rounds} rounds: the fastest loader and the run "
        "with the fastest step of each (other users' work on this machine only slows).",
        "",
        *table(
            [
                "augmentation",
                "loader alone, patches/s",
                "step ms",
                "patches/s the step needs",
                "it/s in the loop",
                "waiting for data",
                "keeps up",
            ],
            loop_rows,
            "lrrrrrl",
        ),  # fmt: skip
        "",
        verdict,
    ]
    publish(args, "augment", "\n".join(lines))


if __name__ == "__main__":
    main()
