"""Does the preprocessing cache change Hippocampus training?  Batches and start-up, old vs new.

    make bench-hippocampus-cache     # or: .venv/bin/python bench/hippocampus_cache.py [--baseline REF]

``experiments/hippocampus.yaml`` (the spec behind ``make time-to-dice``) is run through the
data path of a baseline commit (before the cache: every run decodes every case into memory)
and of this tree (the cache, ``data.cache: auto`` → memory for this dataset): the first
``--batches`` training batches drawn by each are compared element by element, and the
wall clock of ``load_train_data`` (split, preprocessing, loading; what runs before the first
step) is timed for the baseline, the cold cache and the warm cache.  Equal batches mean equal
training steps, so time-to-Dice can only change by the start-up.  Each measurement runs in its
own process; the baseline's code comes from a ``git worktree`` of ``--baseline``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from _harness import REPO, doc_options, machine, publish, run, scratch, shared_data, table, worktree

SPEC = REPO / "experiments" / "hippocampus.yaml"

#: what one child process runs: time load_train_data, draw batches, save them
CHILD = r"""
import json, sys, time
import numpy as np
from segcli.config import load
from segcli.engine.train_data import load_train_data, patch_loader
spec, out, batches, root = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
exp = load(spec, ["train.workers=0", "train.iterations_per_epoch=%d" % batches, "data.root=" + root])
import segcli; print("segcli from", segcli.__file__, file=sys.stderr)
started = time.perf_counter()
data = load_train_data(exp)
seconds = time.perf_counter() - started
dataset, loader = patch_loader(exp, data.train_cases, "cpu", world=1)
dataset.set_epoch(0)
images, labels = [], []
for image, label in loader:
    images.append(image.numpy()); labels.append(label.numpy())
np.savez(out, images=np.stack(images), labels=np.stack(labels))
print(json.dumps({"seconds": seconds, "train": len(data.train_cases), "val": len(data.val_cases)}))
"""


def hippocampus_data() -> Path:
    """The shared Hippocampus data beside this checkout (or beside the main one, when this
    runs from a ``git worktree``)."""
    path = shared_data("msd_task04_hippocampus")
    if not path.is_dir():
        raise SystemExit("the shared msd_task04_hippocampus data set was not found beside the repo")
    return path


def child(pythonpath: Path, out: Path, batches: int, cache: Path) -> dict:
    """The segcli of ``pythonpath`` in a fresh process: CHILD's figures."""
    env = {**os.environ, "PYTHONPATH": str(pythonpath), "SEGCLI_CACHE": str(cache)}
    argv = [sys.executable, "-c", CHILD, SPEC, out, batches, hippocampus_data()]
    done = run(argv, cwd=pythonpath, env=env, echo=False)  # `-c` imports from cwd first
    where = [line for line in done.stderr.splitlines() if line.startswith("segcli from")]
    assert where and where[-1].endswith(f"{Path(pythonpath).name}/segcli/__init__.py"), where
    return done.json()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default="c18de81", help="git ref before the cache")
    parser.add_argument("--batches", type=int, default=40)
    doc_options(parser)
    args = parser.parse_args()
    import numpy as np

    with (
        scratch("segcli-hippo-cache-") as work,
        worktree(args.baseline, work / "baseline") as baseline,
    ):
        old = child(baseline, work / "old.npz", args.batches, work / "unused-cache")
        cold = child(REPO, work / "cold.npz", args.batches, work / "cache")
        warm = child(REPO, work / "warm.npz", args.batches, work / "cache")
        a, b, c = (np.load(work / f"{n}.npz") for n in ("old", "cold", "warm"))
        image_diff = float(np.abs(a["images"] - b["images"]).max())
        scale = float(np.abs(a["images"]).max())
        labels_equal = bool((a["labels"] == b["labels"]).all())
        warm_equal = bool((b["images"] == c["images"]).all() and (b["labels"] == c["labels"]).all())
    batch = f"{args.batches} batches of {a['images'].shape[1]}×{list(a['images'].shape[2:])}"
    same = image_diff <= 1e-5 * max(scale, 1.0) and labels_equal
    body = "\n".join(
        [
            "## Preprocessing cache on Hippocampus: same batches, start-up",
            "",
            f"`python bench/hippocampus_cache.py --baseline {args.baseline}` on "
            f"{time.strftime('%Y-%m-%d')}, {machine()}.",
            "",
            f"`experiments/hippocampus.yaml` ({old['train']} training, {old['val']} validation "
            f"cases), {batch}, one process each, no loader workers:",
            "",
            *table(["data path", "before the first step (s)"], align="lr"),
            f"| baseline {args.baseline} (decode every case into memory) | {old['seconds']:.1f} |",
            f"| preprocessing cache, cold (built now) | {cold['seconds']:.1f} |",
            f"| preprocessing cache, warm (second run) | {warm['seconds']:.1f} |",
            "",
            f"Largest difference between the baseline's and the cache's image batches: "
            f"{image_diff:.2e} (largest value {scale:.1f}); label batches "
            f"{'identical' if labels_equal else 'DIFFERENT'}; cold and warm cache "
            f"{'identical' if warm_equal else 'DIFFERENT'}.",
            "",
            (
                "The batches are equal to float rounding, so training takes the same steps: "
                "time-to-Dice changes only by the start-up above (`make time-to-dice` "
                "measures the rest)."
                if same
                else "The batches differ: training is not step-for-step the baseline's."
            ),
        ]
    )
    publish(args, "hippocampus-cache", body)


if __name__ == "__main__":
    main()
