"""Scale: preprocessing, start-up and train memory against CT cases; predict memory.

Preprocessing, training start-up and memory against the number of CT cases, and predict memory
against volume size and classes.

    make bench-scale            # or: .venv/bin/python bench/scale.py [--cases 4,16,64]
    .venv/bin/python bench/scale.py --cases 2,3 --size 96 --slices 20,30 --predict-size 96 \\
        --predict-slices 24 --predict-big-slices 40 --steps 3 --no-write     # a smoke run

Part 1 (cases): CT-like datasets (int16 HU, 512×512×Z, anisotropic spacing, so resampling is
needed; ``make_ct_dataset``) of N cases; N = 4, 16, 64 share their first cases (one set of the
largest N is generated, smaller N link to a prefix of it).  A spec is planned once with
``segcli plan`` on the largest set; then for each N, each command in a fresh process with its
own empty ``$SEGCLI_CACHE``:

* ``segcli preprocess --workers W`` cold (wall, s/case, the cache folder's size on disk) and
  again warm;
* ``segcli train`` in ``data.cache=disk`` mode (no validation, one epoch of ``--steps``
  iterations): wall, the ``data ready in X s`` start-up it prints (cache already built),
  iterations/s from log.csv, and the peak memory of the whole process tree (parent,
  DataLoader workers, preprocessing workers) polled every 0.2 s: the sum of RSS and the sum
  of PSS (forked workers share pages, which RSS counts once per process);
* the same in ``data.cache=memory`` mode for N <= ``--memory-max-cases``.

Beside it nnU-Net v2 (when ``nnunetv2`` imports) on the largest set, with as many processes:
``nnUNetv2_plan_and_preprocess -d 501 -c 3d_fullres -np W -npfp W --verify_dataset_integrity
--no_pp`` (fingerprint, checks, plan), then ``nnUNetv2_preprocess -d 501 -c 3d_fullres -np W``
(the preprocessing alone, set against ``segcli preprocess``), each timed, and the size of
``nnUNetPlans_3d_fullres``.

Part 2 (predict): a tiny 3D U-Net (filters 4, depth 2, C classes) trained for one iteration,
then ``segcli predict`` on one generated volume in a fresh process, peak RSS of its tree; for
C = 4 and 14 on 512×512×100 (native grid: no ``data.spacing``) → bytes per voxel and per voxel
and class, and C = 14 on 512×512×500 (target <= 6 GB).  ``--baseline-ref REF`` repeats the
512×512×100 pair with the segcli of another commit (a temporary ``git worktree``).

Targets (printed as met / NOT met): disk-mode train memory at the largest N within 1.25× of
the smallest N; cached start-up <= 10 s at the largest N; ``segcli preprocess`` seconds per case
no slower than ``nnUNetv2_preprocess`` with the same number of processes; predict of
512×512×500 with 14 classes <= 6 GB.

Everything generated lives in one temporary folder, removed at the end (also on errors).
Needs the bench extra (psutil; nnunetv2 for the comparison).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime
import json
import math
import os
import re
import shlex
import shutil
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from _harness import (
    REPO,
    SEGCLI,
    CommandFailed,
    block_body,
    doc_options,
    git,
    machine,
    publish,
    row,
    run,
    scratch,
    table,
    worktree,
)

SECTION = "scale"
PART_CASES, PART_PREDICT = "cases", "predict"
ORGANS = ("liver", "spleen", "kidney")
#: mean HU of each organ (liver, spleen, kidney; further classes of the predict sets after them)
ORGAN_HU = (60, 45, 150)
#: organ radii as fractions of (Z, body radius y, body radius x)
ORGAN_RADII = ((0.22, 0.42, 0.38), (0.14, 0.20, 0.18), (0.12, 0.15, 0.12))
DATASET_ID, DATASET_NAME = 501, "Dataset501_CTLike"
GB = 1e9
MIB = 2**20


# --------------------------------------------------------------------------- the data


def make_ct_volume(
    rng: np.random.Generator, shape: Sequence[int], classes: int = 4
) -> tuple[np.ndarray, np.ndarray]:
    """A CT-like int16 HU volume ``(Z, Y, X)`` and its uint8 label map (values 0..classes-1).

    Air (-1024) around a body ellipse (the same in every slice) of soft tissue whose mean
    varies smoothly in -100..100 HU; ``classes - 1`` organ ellipsoids at random positions inside
    the body, each with its own HU (labels 1.. in order, later ones drawn over earlier ones);
    uniform noise of ±25 HU everywhere, clipped at -1024.
    """
    from scipy import ndimage

    z, y, x = (int(s) for s in shape)
    cy, cx = y / 2 + rng.uniform(-0.03, 0.03) * y, x / 2 + rng.uniform(-0.03, 0.03) * x
    ry, rx = rng.uniform(0.33, 0.40) * y, rng.uniform(0.40, 0.46) * x
    yy = np.arange(y, dtype=np.float32)[:, None]
    xx = np.arange(x, dtype=np.float32)[None, :]
    body = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1.0
    coarse = rng.uniform(-100, 100, (6, 6))
    tissue = ndimage.zoom(coarse, (y / 6, x / 6), order=1, grid_mode=True, mode="nearest")
    plane = np.where(body, tissue[:y, :x], -1024).astype(np.int16)
    image = np.empty((z, y, x), np.int16)
    image[...] = plane
    label = np.zeros((z, y, x), np.uint8)
    for k in range(1, classes):
        hu = ORGAN_HU[k - 1] if k <= len(ORGAN_HU) else int(rng.integers(-80, 250))
        frac = ORGAN_RADII[k - 1] if k <= len(ORGAN_RADII) else (0.10, 0.12, 0.12)
        radii = np.array([frac[0] * z, frac[1] * ry, frac[2] * rx]) * rng.uniform(0.85, 1.15, 3)
        radii = np.maximum(radii, 1.5)
        # centre inside the body, far enough from its edge for most of the organ to fit
        angle, dist = rng.uniform(0, 2 * np.pi), np.sqrt(rng.uniform(0, 1)) * 0.5
        centre = np.array(
            [
                rng.uniform(0.3, 0.7) * z,
                cy + dist * ry * np.sin(angle),
                cx + dist * rx * np.cos(angle),
            ]
        )
        _ellipsoid(image, label, centre, radii, hu, k)
    image += rng.integers(-25, 26, size=image.shape, dtype=np.int16)
    np.maximum(image, np.int16(-1024), out=image)
    return image, label


def _ellipsoid(
    image: np.ndarray, label: np.ndarray, centre: np.ndarray, radii: np.ndarray, hu: int, k: int
) -> None:
    """Paint an axis-aligned ellipsoid (voxel units) with ``hu`` and label ``k`` (its box only)."""
    lo = [max(0, math.floor(c - r)) for c, r in zip(centre, radii, strict=True)]
    hi = [min(s, math.ceil(c + r) + 1) for c, r, s in zip(centre, radii, image.shape, strict=True)]
    if any(h <= lo_i for lo_i, h in zip(lo, hi, strict=True)):
        return
    grid = np.ogrid[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
    inside = sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii, strict=True)) < 1.0
    box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    image[box][inside] = hu
    label[box][inside] = k


def _write_case(job: tuple[str, str, int, int, int, tuple[int, int], int]) -> tuple[str, int]:
    """Generate and write one case (a process-pool job); its name and voxel count."""
    import SimpleITK as sitk

    from segcli.io.images import make_geometry, to_sitk, write_image

    root, name, seed, index, size, slices, classes = job
    rng = np.random.default_rng([seed, index])
    z = int(rng.integers(slices[0], slices[1] + 1))
    inplane = float(rng.uniform(0.7, 0.9))
    geometry = make_geometry((z, size, size), (float(rng.uniform(2.0, 3.0)), inplane, inplane))
    image, label = make_ct_volume(rng, (z, size, size), classes)
    # write_image stores signed integers as int32 (segcli.io.images._compact_dtype); CT is
    # int16 on disk, so the image goes through to_sitk + SimpleITK directly (fast zlib level)
    path = Path(root) / "imagesTr" / f"{name}_0000.nii.gz"
    sitk.WriteImage(to_sitk(image, geometry), str(path), True, 1)
    write_image(Path(root) / "labelsTr" / f"{name}.nii.gz", label, geometry)
    return name, image.size


def case_names(n: int) -> list[str]:
    return [f"ct_{i:03d}" for i in range(n)]


def dataset_json(n: int, classes: int = 4) -> dict[str, Any]:
    """nnU-Net v2's dataset.json for ``n`` CT cases with labels 0..classes-1."""
    labels = {"background": 0}
    for k in range(1, classes):
        labels[ORGANS[k - 1] if k <= len(ORGANS) else f"organ{k}"] = k
    return {
        "name": "CTLike",
        "channel_names": {"0": "CT"},
        "labels": labels,
        "numTraining": n,
        "file_ending": ".nii.gz",
    }


def make_ct_dataset(
    root: str | Path,
    n: int,
    seed: int,
    slices: tuple[int, int] = (100, 180),
    size: int = 512,
    classes: int = 4,
    workers: int = 1,
) -> list[str]:
    """Write ``n`` CT-like cases in the MSD / nnU-Net v2 layout under ``root``; their names.

    Case ``i`` depends on ``(seed, i)`` only, so a set of ``n`` cases starts with the cases of
    every smaller set of the same seed.  Each is ``size``×``size``×Z int16 HU (Z drawn in
    ``slices``), in-plane spacing drawn in 0.7–0.9 mm, z spacing in 2–3 mm, written as
    imagesTr/<case>_0000.nii.gz and labelsTr/<case>.nii.gz, plus dataset.json.
    """
    root = Path(root)
    (root / "imagesTr").mkdir(parents=True, exist_ok=True)
    (root / "labelsTr").mkdir(parents=True, exist_ok=True)
    jobs = [
        (str(root), name, seed, i, size, tuple(slices), classes)
        for i, name in enumerate(case_names(n))
    ]
    if workers > 1 and n > 1:
        with ProcessPoolExecutor(min(workers, n)) as pool:
            done = list(pool.map(_write_case, jobs))
    else:
        done = [_write_case(job) for job in jobs]
    (root / "dataset.json").write_text(json.dumps(dataset_json(n, classes), indent=2))
    return [name for name, _ in done]


def link_subset(full: Path, root: Path, n: int, classes: int = 4) -> Path:
    """A dataset folder whose first ``n`` cases are symlinks into ``full``."""
    for sub in ("imagesTr", "labelsTr"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for name in case_names(n):
        for sub, file in (("imagesTr", f"{name}_0000.nii.gz"), ("labelsTr", f"{name}.nii.gz")):
            (root / sub / file).symlink_to(full / sub / file)
    (root / "dataset.json").write_text(json.dumps(dataset_json(n, classes), indent=2))
    return root


# --------------------------------------------------------------------------- measuring


def folder_bytes(folder: Path) -> int:
    """Bytes on disk (allocated blocks, like du) of the files under ``folder``."""
    total = 0
    for dirpath, _dirs, files in os.walk(folder):
        for file in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, file)).st_blocks * 512
    return total


def data_ready_seconds(output: str) -> float | None:
    """The ``data ready in X s`` figure ``segcli train`` prints (None when absent)."""
    match = re.search(r"data ready in ([0-9.]+) s", output)
    return float(match.group(1)) if match else None


def epoch_seconds(run: Path) -> float:
    """The ``seconds`` of the last row of ``run``/log.csv."""
    with open(run / "log.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return float(rows[-1]["seconds"])


def read_spec(path: Path) -> dict[str, Any]:
    import yaml

    return yaml.safe_load(path.read_text())


# --------------------------------------------------------------------------- part 1: cases


def cases_part(args: argparse.Namespace, tmp: Path, env: dict[str, str]) -> dict[str, Any]:
    """Plan once, then preprocess (cold, warm) and train (disk, memory) for each N."""
    ns = sorted(args.cases)
    full = tmp / "ct_full"
    t0 = time.perf_counter()
    make_ct_dataset(full, ns[-1], args.seed, args.slices, args.size, workers=args.workers)
    gen_seconds = time.perf_counter() - t0
    raw_bytes = folder_bytes(full)
    voxels = []
    import SimpleITK as sitk

    for name in case_names(ns[-1]):
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(full / "imagesTr" / f"{name}_0000.nii.gz"))
        reader.ReadImageInformation()
        voxels.append(math.prod(reader.GetSize()))
    print(
        f"generated {ns[-1]} cases in {gen_seconds:.0f} s ({raw_bytes / MIB:,.0f} MiB .nii.gz)",
        file=sys.stderr,
    )

    spec = tmp / "spec" / "ct.yaml"
    spec.parent.mkdir()
    plan_env = dict(env, SEGCLI_CACHE=str(tmp / "cache-plan"))
    plan = run(
        [*SEGCLI, "plan", full, "-o", spec, "--device", args.device],
        env=plan_env,
        log=tmp / "plan.log",
        poll=args.poll,
    )
    shutil.rmtree(tmp / "cache-plan", ignore_errors=True)
    planned = read_spec(spec)
    print(f"planned in {plan.seconds:.0f} s: {planned.get('data')}", file=sys.stderr)

    rows = []
    for n in ns:
        root = full if n == ns[-1] else link_subset(full, tmp / f"ct_{n}", n)
        cache = tmp / f"cache_{n}"
        cache.mkdir()
        n_env = dict(env, SEGCLI_CACHE=str(cache))
        common = ["--set", f"data.root={root}"]
        entry: dict[str, Any] = {"n": n}
        pre = [*SEGCLI, "preprocess", spec, "--workers", args.workers, *common]
        cold = run(pre, env=n_env, log=tmp / f"pre_cold_{n}.log", poll=args.poll)
        entry["cold"] = cold.figures()
        entry["cache_bytes"] = folder_bytes(cache)
        warm = run(pre, env=n_env, log=tmp / f"pre_warm_{n}.log", poll=args.poll)
        entry["warm"] = warm.figures()
        print(
            f"N={n}: preprocess cold {cold.seconds:.1f} s, warm {warm.seconds:.1f} s, "
            f"cache {entry['cache_bytes'] / MIB:,.0f} MiB",
            file=sys.stderr,
        )
        modes = ["disk"] + (["memory"] if n <= args.memory_max_cases else [])
        for mode in modes:
            run_dir = tmp / f"run_{n}_{mode}"
            train = [*SEGCLI, "train", spec, "--output", run_dir, "--device", args.device, *common]
            sets = [f"data.cache={mode}", "data.val_fraction=0", "train.epochs=1"]
            sets += [f"train.iterations_per_epoch={args.steps}", *args.train_set]
            train += [part for item in sets for part in ("--set", item)]
            result = run(train, env=n_env, log=tmp / f"train_{n}_{mode}.log", poll=args.poll)
            ready = data_ready_seconds(result.stdout + result.stderr)
            seconds = epoch_seconds(run_dir)
            entry[mode] = dict(
                result.figures(),
                ready=ready,
                epoch_seconds=seconds,
                it_per_s=args.steps / seconds if seconds > 0 else float("nan"),
            )
            print(
                f"N={n}: train {mode}: {result.seconds:.1f} s, data ready {ready} s, "
                f"{args.steps / seconds:.2f} it/s, peak RSS {result.rss / MIB:,.0f} MiB, "
                f"PSS {result.pss / MIB:,.0f} MiB ({result.procs} processes)",
                file=sys.stderr,
            )
            shutil.rmtree(run_dir, ignore_errors=True)
        shutil.rmtree(cache, ignore_errors=True)  # the caches of all N would not fit together
        rows.append(entry)

    nnunet = None if args.skip_nnunet else nnunet_part(args, tmp, env, full, ns[-1])
    return {
        "rows": rows,
        "plan": plan.figures(),
        "planned": planned,
        "gen_seconds": gen_seconds,
        "raw_bytes": raw_bytes,
        "voxels": voxels,
        "nnunet": nnunet,
    }


def nnunet_command(name: str) -> list[str] | None:
    """An nnU-Net v2 console script beside this Python (else on PATH); None without nnunetv2."""
    import importlib.util

    if importlib.util.find_spec("nnunetv2") is None:
        return None
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return [str(beside)]
    found = shutil.which(name)
    return [found] if found else None


def nnunet_part(
    args: argparse.Namespace, tmp: Path, env: dict[str, str], full: Path, n: int
) -> dict[str, Any]:
    """nnU-Net v2's fingerprint + plan, then its preprocessing, of the same ``n`` cases."""
    plan_cmd = nnunet_command("nnUNetv2_plan_and_preprocess")
    pre_cmd = nnunet_command("nnUNetv2_preprocess")
    if plan_cmd is None or pre_cmd is None:
        return {"missing": "nnunetv2 is not installed (the bench extra)"}
    base = tmp / "nnunet"
    raw = base / "raw" / DATASET_NAME
    link_subset(full, raw, n)
    nn_env = dict(
        env,
        nnUNet_raw=str(base / "raw"),
        nnUNet_preprocessed=str(base / "preprocessed"),
        nnUNet_results=str(base / "results"),
    )
    w = str(args.workers)
    try:
        dataset = ["-d", str(DATASET_ID), "-c", "3d_fullres", "-np", w]
        plan = run(
            [*plan_cmd, *dataset, "-npfp", w, "--verify_dataset_integrity", "--no_pp"],
            env=nn_env,
            log=tmp / "nnunet_plan.log",
            poll=args.poll,
        )
        pre = run(
            [*pre_cmd, *dataset],
            env=nn_env,
            log=tmp / "nnunet_pre.log",
            poll=args.poll,
        )
    except CommandFailed as exc:
        print(exc, file=sys.stderr)
        return {"missing": f"nnU-Net failed: {str(exc).splitlines()[-1][:200]}"}
    folder = next((base / "preprocessed").glob("Dataset501*"), base / "preprocessed")
    plans = json.loads((folder / "nnUNetPlans.json").read_text())
    fullres = plans["configurations"]["3d_fullres"]
    out = {
        "n": n,
        "plan": plan.figures(),
        "pre": pre.figures(),
        "bytes": folder_bytes(folder / "nnUNetPlans_3d_fullres"),
        "spacing": fullres.get("spacing"),
        "patch_size": fullres.get("patch_size"),
    }
    print(
        f"nnU-Net: plan {plan.seconds:.1f} s, preprocess {pre.seconds:.1f} s, "
        f"{out['bytes'] / MIB:,.0f} MiB",
        file=sys.stderr,
    )
    shutil.rmtree(base, ignore_errors=True)
    return out


# --------------------------------------------------------------------------- part 2: predict


def predict_spec(root: Path, classes: int, patch: Sequence[int], output: Path) -> dict[str, Any]:
    """A tiny 3D U-Net spec on ``root``'s native grid (no data.spacing); keys every segcli
    since the first 3D U-Net reads, so that ``--baseline-ref`` commits load it too."""
    return {
        "name": f"predict-c{classes}",
        "seed": 0,
        "data": {
            "root": str(root),
            "val_fraction": 0,
            "patch_size": list(patch),
            "normalization": "ct",
            "window": [-1000, 1000],
            "spacing": None,
        },
        "model": {
            "arch": "unet",
            "dims": 3,
            "in_channels": 1,
            "classes": classes,
            "filters": 4,
            "depth": 2,
        },
        "train": {
            "epochs": 1,
            "iterations_per_epoch": 1,
            "batch_size": 1,
            "workers": 0,
        },
        "output": str(output),
    }


def predict_one(
    args: argparse.Namespace,
    tmp: Path,
    env: dict[str, str],
    classes: int,
    volume: Path,
    voxels: int,
    tag: str,
    python_path: str | None = None,
) -> dict[str, Any]:
    """Train the tiny net for ``classes`` (one iteration), predict ``volume``; peak memory."""
    import yaml

    work = tmp / f"predict_{tag}_c{classes}"
    data = work / "data"
    make_ct_dataset(
        data, 2, args.seed + 1, (args.patch[0], args.patch[0] + 8), args.train_size, classes
    )
    spec = work / "spec.yaml"
    spec.write_text(yaml.safe_dump(predict_spec(data, classes, args.patch, work / "runs")))
    run_dir = work / "run"
    run_env = dict(env, SEGCLI_CACHE=str(work / "cache"))
    cwd = REPO
    if python_path is not None:
        # `python -m segcli` imports from the working folder first: run in the other tree
        run_env["PYTHONPATH"] = python_path
        cwd = Path(python_path)
    run(
        [*SEGCLI, "train", spec, "--output", run_dir, "--device", args.device],
        env=run_env,
        log=work / "train.log",
        poll=args.poll,
        cwd=cwd,
    )
    result = run(
        [*SEGCLI, "predict", spec, "--input", volume, "--output", work / "pred"]
        + ["--checkpoint", run_dir / "checkpoint_last.pt", "--device", args.device],
        env=run_env,
        log=work / "predict.log",
        poll=args.poll,
        cwd=cwd,
    )
    out = dict(result.figures(), classes=classes, voxels=voxels, tag=tag)
    print(
        f"predict [{tag}] C={classes}, {voxels / 1e6:.1f} M voxels: {result.seconds:.1f} s, "
        f"peak RSS {result.rss / MIB:,.0f} MiB, PSS {result.pss / MIB:,.0f} MiB",
        file=sys.stderr,
    )
    shutil.rmtree(work, ignore_errors=True)
    return out


def write_volume(path: Path, size: int, slices: int, seed: int) -> int:
    """One CT-like image of ``size``×``size``×``slices`` for predict; its voxel count."""
    import SimpleITK as sitk

    from segcli.io.images import make_geometry, to_sitk

    rng = np.random.default_rng([seed, 999])
    image, _ = make_ct_volume(rng, (slices, size, size), 4)
    geometry = make_geometry(image.shape, (2.5, 0.8, 0.8))
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(to_sitk(image, geometry), str(path), True, 1)
    return int(image.size)


def predict_part(args: argparse.Namespace, tmp: Path, env: dict[str, str]) -> dict[str, Any]:
    small = tmp / "volumes" / "small_0000.nii.gz"
    big = tmp / "volumes" / "big_0000.nii.gz"
    small_voxels = write_volume(small, args.predict_size, args.predict_slices, args.seed)
    rows = [
        predict_one(args, tmp, env, classes, small, small_voxels, "now")
        for classes in (4, args.predict_classes)
    ]
    big_voxels = write_volume(big, args.predict_size, args.predict_big_slices, args.seed)
    small.unlink()  # the big one next to it: both at once would be needless disk
    rows.append(predict_one(args, tmp, env, args.predict_classes, big, big_voxels, "now"))
    big.unlink()
    baseline = []
    if args.baseline_ref:
        small_voxels = write_volume(small, args.predict_size, args.predict_slices, args.seed)
        commit = git("rev-parse", "--short", args.baseline_ref)
        with worktree(args.baseline_ref, tmp / "baseline") as tree:
            for classes in (4, args.predict_classes):
                baseline.append(
                    predict_one(
                        args, tmp, env, classes, small, small_voxels, f"{commit}", str(tree)
                    )
                )
    return {"rows": rows, "baseline": baseline, "baseline_commit": args.baseline_ref}


# --------------------------------------------------------------------------- report


def _verdict(ok: bool) -> str:
    return "met" if ok else "**NOT met**"


def _mib(n: float) -> str:
    return f"{n / MIB:,.0f}"


def cases_text(args: argparse.Namespace, r: dict[str, Any]) -> str:
    rows, planned, nn = r["rows"], r["planned"], r["nnunet"]
    data, train = planned.get("data", {}), planned.get("train", {})
    model = planned.get("model", {})
    voxels = np.array(r["voxels"], float)
    lines = [
        "### Preprocessing, start-up and training memory against the number of cases",
        "",
        f"CT-like cases (`make_ct_dataset`): int16 HU, {args.size}×{args.size}×Z with Z in "
        f"{args.slices[0]}–{args.slices[1]} (mean {voxels.mean() / 1e6:.1f} M voxels), "
        f"in-plane spacing 0.7–0.9 mm, z 2–3 mm, 3 organs; the {rows[-1]['n']}-case set is "
        f"{r['raw_bytes'] / MIB:,.0f} MiB of .nii.gz (generated in {r['gen_seconds']:.0f} s).  "
        f"`segcli plan` on it ({r['plan']['seconds']:.0f} s): spacing {data.get('spacing')}, "
        f"patch {data.get('patch_size')}, normalization {data.get('normalization')}, "
        f"{model.get('arch')} with {model.get('filters')} filters, batch "
        f"{train.get('batch_size')}, {train.get('workers')} DataLoader workers.  "
        f"`segcli preprocess --workers {args.workers}`; train: one epoch of {args.steps} "
        f"iterations, no validation, `--device {args.device}`"
        + (f", `--set {' --set '.join(args.train_set)}`" if args.train_set else "")
        + ".  Memory: peak over 0.2 s polls of the process tree's summed RSS (shared pages "
        "counted in every process) and summed PSS (shared pages split between processes).",
        "",
        *table(
            ["N", "preprocess cold s", "s/case", "cache MiB (per case)"]
            + ["preprocess peak RSS / PSS MiB", "warm s", "train mode", "data ready s", "it/s"]
            + ["train wall s", "peak RSS MiB", "peak PSS MiB", "processes"],
            align="rrrrrrlrrrrrr",
        ),
    ]
    for entry in rows:
        n, cold = entry["n"], entry["cold"]
        first = True
        for mode in ("disk", "memory"):
            t = entry.get(mode)
            if t is None:
                continue
            head = (
                f"| {n} | {cold['seconds']:.1f} | {cold['seconds'] / n:.2f} | "
                f"{_mib(entry['cache_bytes'])} ({_mib(entry['cache_bytes'] / n)}) | "
                f"{_mib(cold['rss'])} / {_mib(cold['pss'])} | {entry['warm']['seconds']:.1f} |"
                if first
                else "| | | | | | |"
            )
            first = False
            ready = "–" if t["ready"] is None else f"{t['ready']:.1f}"
            lines.append(
                f"{head} {mode} | {ready} | {t['it_per_s']:.2f} | {t['seconds']:.1f} | "
                f"{_mib(t['rss'])} | {_mib(t['pss'])} | {t['procs']} |"
            )
    lines.append("")
    if nn is None:
        lines.append("nnU-Net v2: left out (`--skip-nnunet`).")
    elif "missing" in nn:
        lines.append(f"nnU-Net v2: not run — {nn['missing']}.")
    else:
        lines += [
            f"nnU-Net v2 on the same {nn['n']} cases (`{DATASET_NAME}`, 3d_fullres: spacing "
            f"{nn['spacing']}, patch {nn['patch_size']}), {args.workers} processes:",
            "",
            *table(
                ["step", "seconds", "s/case", "peak RSS / PSS MiB", "on disk MiB"], align="lrrrr"
            ),
            f"| `nnUNetv2_plan_and_preprocess -np {args.workers} -npfp {args.workers} "
            f"--verify_dataset_integrity --no_pp` (fingerprint, checks, plan) | "
            f"{nn['plan']['seconds']:.1f} | {nn['plan']['seconds'] / nn['n']:.2f} | "
            f"{_mib(nn['plan']['rss'])} / {_mib(nn['plan']['pss'])} | |",
            f"| `nnUNetv2_preprocess -c 3d_fullres -np {args.workers}` | "
            f"{nn['pre']['seconds']:.1f} | {nn['pre']['seconds'] / nn['n']:.2f} | "
            f"{_mib(nn['pre']['rss'])} / {_mib(nn['pre']['pss'])} | {_mib(nn['bytes'])} |",
            f"| segcli: `segcli plan` | {r['plan']['seconds']:.1f} | "
            f"{r['plan']['seconds'] / nn['n']:.2f} | {_mib(r['plan']['rss'])} / "
            f"{_mib(r['plan']['pss'])} | |",
            f"| segcli: `segcli preprocess --workers {args.workers}` | "
            f"{rows[-1]['cold']['seconds']:.1f} | {rows[-1]['cold']['seconds'] / nn['n']:.2f} | "
            f"{_mib(rows[-1]['cold']['rss'])} / {_mib(rows[-1]['cold']['pss'])} | "
            f"{_mib(rows[-1]['cache_bytes'])} |",
        ]
    return "\n".join(lines)


def cases_targets(r: dict[str, Any]) -> tuple[list[str], list[str]]:
    """The target lines and the sentences of 'what the figures say' for part 1."""
    rows, nn = r["rows"], r["nnunet"]
    lo, hi = rows[0], rows[-1]
    targets, says = [], []
    if lo["n"] != hi["n"]:
        rss, pss = hi["disk"]["rss"] / lo["disk"]["rss"], hi["disk"]["pss"] / lo["disk"]["pss"]
        targets.append(
            f"- Disk-mode train memory at N={hi['n']} within 1.25× of N={lo['n']}: summed RSS "
            f"{rss:.2f}× — {_verdict(rss <= 1.25)}; summed PSS {pss:.2f}× — "
            f"{_verdict(pss <= 1.25)}."
        )
        says.append(
            f"going from {lo['n']} to {hi['n']} cases ({hi['n'] / lo['n']:.3g}× the data) "
            f"multiplies disk-mode training memory by {pss:.2f} (PSS; RSS {rss:.2f})"
        )
        mem = [entry for entry in rows if "memory" in entry]
        if len(mem) >= 2:
            grow = mem[-1]["memory"]["pss"] - mem[0]["memory"]["pss"]
            per_case = grow / (mem[-1]["n"] - mem[0]["n"])
            says.append(
                f"memory mode grows by {_mib(per_case)} MiB of PSS per case "
                f"(N={mem[0]['n']}→{mem[-1]['n']})"
            )
    ready = hi["disk"]["ready"]
    targets.append(
        f"- Cached start-up at N={hi['n']} ≤ 10 s: "
        + ("not printed" if ready is None else f"{ready:.1f} s — {_verdict(ready <= 10)}")
        + "."
    )
    per_case = hi["cold"]["seconds"] / hi["n"]
    if nn is not None and "missing" not in nn:
        theirs = nn["pre"]["seconds"] / nn["n"]
        targets.append(
            f"- `segcli preprocess` s/case ≤ `nnUNetv2_preprocess` s/case ({nn['n']} cases, "
            f"same processes): {per_case:.2f} vs {theirs:.2f} — {_verdict(per_case <= theirs)}."
        )
        says.append(
            f"segcli preprocesses a case in {per_case:.2f} s against nnU-Net's {theirs:.2f} s "
            f"({theirs / per_case:.2f}× its speed) and stores "
            f"{hi['cache_bytes'] / max(nn['bytes'], 1):.2f}× nnU-Net's bytes"
        )
    else:
        targets.append(
            "- `segcli preprocess` s/case against nnU-Net: not judged (nnU-Net not run)."
        )
    says.append(
        f"a warm `segcli preprocess` of {hi['n']} cases takes {hi['warm']['seconds']:.1f} s "
        f"against {hi['cold']['seconds']:.1f} s cold"
    )
    return targets, says


def predict_text(args: argparse.Namespace, p: dict[str, Any]) -> tuple[str, list[str], list[str]]:
    rows, base = p["rows"], p["baseline"]
    c_lo, c_hi = rows[0], rows[1]
    big = rows[2]
    lines = [
        "### Predict memory",
        "",
        f"A 3D U-Net with 4 filters, depth 2, C classes, trained for one iteration on two "
        f"small cases, then `segcli predict --device {args.device}` on one CT-like int16 "
        f"volume on its native grid (spec without `data.spacing`; patch "
        f"{'×'.join(map(str, args.patch))}), in a fresh process: peak summed RSS / PSS of "
        "its process tree, polled every 0.2 s.",
        "",
        *table(
            ["segcli", "volume", "classes", "seconds", "peak RSS MiB", "peak PSS MiB"]
            + ["RSS bytes/voxel"],
            align="llrrrrr",
        ),
    ]

    def shape(r: dict[str, Any]) -> str:
        z = r["voxels"] // (args.predict_size**2)
        return f"{args.predict_size}×{args.predict_size}×{z}"

    for r in [*rows, *base]:
        memory = (_mib(r["rss"]), _mib(r["pss"]), f"{r['rss'] / r['voxels']:.1f}")
        lines.append(row(r["tag"], shape(r), r["classes"], f"{r['seconds']:.1f}", *memory))
    dc = c_hi["classes"] - c_lo["classes"]
    per_class = (c_hi["rss"] - c_lo["rss"]) / c_lo["voxels"] / dc
    lines += [
        "",
        f"From the {shape(c_lo)} pair: {c_lo['rss'] / c_lo['voxels']:.1f} bytes/voxel at "
        f"C={c_lo['classes']}, {c_hi['rss'] / c_hi['voxels']:.1f} at C={c_hi['classes']}, "
        f"slope {per_class:.2f} bytes per voxel per class.",
    ]
    says = [
        f"predict needs {c_hi['rss'] / c_hi['voxels']:.1f} bytes per voxel with "
        f"{c_hi['classes']} classes ({per_class:.2f} per extra class)"
    ]
    if big["voxels"] > c_hi["voxels"]:
        marginal = (big["rss"] - c_hi["rss"]) / (big["voxels"] - c_hi["voxels"])
        lines[-1] += (
            f"  From {shape(c_hi)} to {shape(big)} at C={big['classes']}: {marginal:.1f} bytes "
            "per added voxel (the fixed cost of the process left out)."
        )
        says.append(f"{marginal:.1f} per voxel added to the volume")
    if len(base) == 2:
        b_per_class = (base[1]["rss"] - base[0]["rss"]) / base[0]["voxels"] / dc
        ref = p["baseline_commit"]
        name = ref if ref == base[0]["tag"] else f"{ref} = {base[0]['tag']}"
        lines[-1] += (
            f"  Before (segcli at `{name}`): {base[0]['rss'] / base[0]['voxels']:.1f} and "
            f"{base[1]['rss'] / base[1]['voxels']:.1f} bytes/voxel, slope {b_per_class:.2f}."
        )
        says.append(
            f"segcli at {ref} needed {base[1]['rss'] / base[1]['voxels']:.1f} bytes per voxel "
            f"with {c_hi['classes']} classes on {shape(c_hi)} "
            f"(now {c_hi['rss'] / base[1]['rss']:.2f}× that)"
        )
    targets = [
        f"- Predict of {shape(big)} with {big['classes']} classes ≤ 6 GB: "
        f"{big['rss'] / GB:.2f} GB peak summed RSS — {_verdict(big['rss'] <= 6 * GB)}."
    ]
    return "\n".join(lines), targets, says


def report(args: argparse.Namespace, cases: dict | None, predict: dict | None, head: str) -> str:
    parts = {}
    targets: list[str] = []
    says: list[str] = []
    if cases is not None:
        t, s = cases_targets(cases)
        parts[PART_CASES] = "\n".join([cases_text(args, cases), "", "Targets:", "", *t])
        targets, says = targets + t, says + s
    if predict is not None:
        text, t, s = predict_text(args, predict)
        parts[PART_PREDICT] = "\n".join([text, "", "Target:", "", *t])
        targets, says = targets + t, says + s
    lines = [
        "## Scale: cases, start-up, memory (`bench/scale.py`)",
        "",
        head,
        "",
    ]
    doc = args.doc.read_text() if args.doc.exists() else ""
    for name in (PART_CASES, PART_PREDICT):
        text = parts.get(name)
        if text is None:
            old = block_body(doc, f"<!-- scale-part:{name} -->", f"<!-- /scale-part:{name} -->")
            if old is None:
                continue
            text = old
            lines.append(f"*(part `{name}` kept from an earlier run: not rerun this time)*")
            lines.append("")
        lines += [f"<!-- scale-part:{name} -->", text, f"<!-- /scale-part:{name} -->", ""]
    if says:
        lines += ["What the figures say: " + "; ".join(says) + "."]
    if args.smoke:
        lines += ["", "**Reduced sizes: a smoke test, not a result.**"]
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=_ints, default=[4, 16, 64], help="N list, e.g. 4,16,64")
    parser.add_argument("--size", type=int, default=512, help="in-plane size of the cases")
    parser.add_argument("--slices", type=_ints, default=[100, 180], help="Z range, e.g. 100,180")
    parser.add_argument("--steps", type=int, default=20, help="train iterations per run (K)")
    parser.add_argument(
        "--workers", type=int, default=2, help="processes: segcli preprocess, nnU-Net -np/-npfp"
    )
    parser.add_argument(
        "--memory-max-cases", type=int, default=16, help="train in memory mode up to this N"
    )
    parser.add_argument(
        "--train-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra --set for the train runs (repeatable)",
    )
    parser.add_argument("--device", default="cpu", help="segcli --device (default cpu)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--poll", type=float, default=0.2, help="memory poll interval, s")
    parser.add_argument("--skip-nnunet", action="store_true", help="no nnU-Net comparison")
    parser.add_argument("--predict-size", type=int, default=512, help="predict volume in-plane")
    parser.add_argument("--predict-slices", type=int, default=100)
    parser.add_argument("--predict-big-slices", type=int, default=500)
    parser.add_argument("--predict-classes", type=int, default=14, help="the larger C")
    parser.add_argument(
        "--patch", type=_ints, default=[32, 128, 128], help="predict net's patch (Z,Y,X)"
    )
    parser.add_argument("--predict-only", action="store_true", help="part 2 only")
    parser.add_argument("--skip-predict", action="store_true", help="part 1 only")
    parser.add_argument(
        "--baseline-ref", default=None, metavar="GITREF", help="predict 'before' figures"
    )
    parser.add_argument("--tmp", default=None, help="parent of the temporary folder")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    doc_options(parser)
    args = parser.parse_args(argv)
    if args.predict_only and args.skip_predict:
        parser.error("--predict-only and --skip-predict exclude each other")
    if len(args.slices) != 2 or len(args.patch) != 3 or not args.cases:
        parser.error("--slices takes LOW,HIGH, --patch Z,Y,X and --cases at least one N")
    args.slices = tuple(sorted(args.slices))
    args.train_size = min(args.predict_size, max(args.patch[1:]))
    args.smoke = (
        args.size < 512
        or args.predict_size < 512
        or max(args.cases) < 64
        or args.steps < 20
        or args.predict_big_slices < 500
    )
    try:
        import psutil  # noqa: F401
    except ImportError:
        parser.error("needs psutil: pip install -e '.[dev,bench]' (make bench-scale does)")

    given = argv if argv is not None else sys.argv[1:]
    doc_flags = {"--no-write", "--doc", args.doc.as_posix()}  # the command measures without them
    shown = [a for a in given if a not in doc_flags and not a.startswith("--doc=")]
    command = shlex.join([".venv/bin/python", "bench/scale.py", *shown])
    head = (
        f"Command: `{command}`"
        + (" (`make bench-scale`)" if not shown else "")
        + f", {datetime.date.today().isoformat()}.  \nMachine: {machine()}."
    )
    env = dict(os.environ)
    env.pop("SEGCLI_CACHE", None)
    cases = predict = None
    with scratch("segcli-scale-", parent=args.tmp, keep=args.keep) as tmp:
        need = (
            0 if args.predict_only else max(args.cases) * args.size**2 * sum(args.slices) / 2 * 12
        )
        if shutil.disk_usage(tmp).free < need:
            print(
                f"warning: {shutil.disk_usage(tmp).free / GB:.0f} GB free in {tmp.parent}, the run "
                f"may need about {need / GB:.0f} GB (--tmp elsewhere)",
                file=sys.stderr,
            )
        if not args.predict_only:
            cases = cases_part(args, tmp, env)
        if not args.skip_predict:
            predict = predict_part(args, tmp, env)
    publish(args, SECTION, report(args, cases, predict, head))
    return 0


if __name__ == "__main__":
    sys.exit(main())
