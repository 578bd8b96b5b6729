"""Label round trip on real data: volume change per label per case, 1 → 1.5 → 1 mm.

    make bench-resampling       # or: .venv/bin/python bench/resampling.py [--cases 40] [--no-write]

Every label map of the shared MSD Task04 hippocampus set (1 mm isotropic, labels 1 and 2, a few
voxels thick) is resampled to 1.5 mm and back with ``segcli.data.resample.resample_label`` under
three settings: ``onehot`` with cubic B-spline shares (segcli's default), ``onehot`` with linear
shares (nnU-Net's ``order_seg=1``) and ``nearest``.  For each label of each case the relative
volume change ``voxels_after / voxels_before − 1`` is recorded; the table gives its median
(signed: the bias), the median, 95th percentile and maximum of its magnitude, and the mean
round-trip Dice.  The distribution is written into docs/nnunet.md between the
``bench:resampling`` markers with date, machine and command.  Timing is not measured here.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
from concurrent.futures import ProcessPoolExecutor

import numpy as np
from _harness import REPO, doc_options, machine, publish, row, shared_data, table

DATA = shared_data("msd_task04_hippocampus")
DOC = REPO / "docs" / "nnunet.md"
SPACING = (1.5, 1.5, 1.5)
#: (row name, resample_label mode, onehot share order)
SETTINGS = (
    ("onehot, cubic B-spline shares (default)", "onehot", 3),
    ("onehot, linear shares (nnU-Net order_seg=1)", "onehot", 1),
    ("nearest", "nearest", 1),
)


def round_trip(path: str) -> list[tuple[str, int, float, float]]:
    """``(setting, label, relative volume change, Dice)`` for every setting and label of a case."""
    import SimpleITK as sitk

    from segcli.data.resample import resample_label, resampled_geometry
    from segcli.io.images import read_label

    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    label, geometry = read_label(path)
    grid = resampled_geometry(geometry, SPACING)
    rows = []
    for name, mode, order in SETTINGS:
        there = resample_label(label, geometry, grid, mode, order=order)
        back = resample_label(there, grid, geometry, mode, order=order)
        for k in (int(v) for v in np.unique(label) if v):
            a, b = label == k, back == k
            dice = 2 * (a & b).sum() / (a.sum() + b.sum())
            rows.append((name, k, float(b.sum() / a.sum() - 1), float(dice)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=None, help="first N cases only (quick)")
    parser.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1))
    doc_options(parser, DOC)
    args = parser.parse_args()
    if not DATA.is_dir():
        sys.exit(f"error: {DATA} not found (the shared hippocampus data set)")
    files = sorted(str(p) for p in (DATA / "labelsTr").glob("*.nii.gz") if p.name[0] != ".")
    files = files[: args.cases] if args.cases else files
    with ProcessPoolExecutor(args.workers) as pool:
        rows = [r for case in pool.map(round_trip, files, chunksize=8) for r in case]

    command = "make bench-resampling" + (f" (--cases {args.cases})" if args.cases else "")
    lines = [
        "### Label round trip on real data (generated)",
        "",
        f"Generated {datetime.date.today().isoformat()} by `{command}` (`bench/resampling.py`).",
        f"Machine: {machine()}.",
        "",
        f"MSD Task04 hippocampus, {len(files)} cases at 1 mm, labels 1 and 2 "
        f"({len(files) * 2} label volumes), resampled to {SPACING[0]} mm and back. "
        "Δ = relative volume change after the round trip; |Δ| statistics over all label volumes.",
        "",
        *table(
            ["label resampling", "median Δ (bias)", "median abs Δ", "95th pct abs Δ"]
            + ["worst abs Δ", "mean Dice"]
        ),
    ]
    for name, _, _ in SETTINGS:
        delta = np.array([r[2] for r in rows if r[0] == name]) * 100
        dice = np.array([r[3] for r in rows if r[0] == name])
        mag = np.abs(delta)
        stats = (np.median(mag), np.percentile(mag, 95), mag.max())
        percents = (f"{v:.2f} %" for v in stats)
        lines.append(row(name, f"{np.median(delta):+.2f} %", *percents, f"{dice.mean():.3f}"))
    publish(args, "resampling", "\n".join(lines))


if __name__ == "__main__":
    main()
