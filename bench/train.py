"""Training-loop throughput: iterations per second, share of time waiting for data, peak memory.

    make bench-train            # or: .venv/bin/python bench/train.py [--workers 0 2]

Trains experiments/toy3d-unet.yaml for a short schedule on freshly generated 3D toy data (no
validation) once per worker count and writes a table to docs/benchmarks.md.  Target: the loop
waits for data less than 10% of the time with 2 workers.
"""

from __future__ import annotations

import argparse
import datetime
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import machine, write_section  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def run_one(workers: int, data_root: str, iterations: int, run_dir: str) -> dict:
    """Train in this process and return the measurements (called in a subprocess)."""
    from segcli.config import load
    from segcli.engine.runtime import set_quiet
    from segcli.engine.train import fit

    set_quiet(True)
    exp = load(
        REPO / "experiments/toy3d-unet.yaml",
        [
            f"data.root={data_root}",
            "data.val_fraction=0",
            "train.epochs=2",
            f"train.iterations_per_epoch={iterations}",
            f"train.workers={workers}",
        ],
    )
    start = time.perf_counter()
    result = fit(exp, run_dir=run_dir, device="cpu")
    seconds = time.perf_counter() - start
    busy = result.data_seconds + result.compute_seconds
    return {
        "workers": workers,
        "iterations": result.iterations,
        "batch_size": exp.train.batch_size,
        "seconds": seconds,
        "it_per_s": result.iterations / busy,
        "data_wait_share": result.data_seconds / busy,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--child", type=str, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        workers, root, run_dir = args.child.split("|")
        print(json.dumps(run_one(int(workers), root, args.iterations, run_dir)))
        return
    from segcli.data.synth import generate, write_dataset

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "toy3d"
        write_dataset(root, generate(40, dims=3, seed=0))
        for workers in args.workers:
            child = f"{workers}|{root}|{Path(tmp) / f'run{workers}'}"
            out = subprocess.run(
                [sys.executable, __file__, "--iterations", str(args.iterations), "--child", child],
                capture_output=True,
                text=True,
                check=True,
            )
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(rows[-1], file=sys.stderr)
    lines = [
        "## Training loop (`bench/train.py`)",
        "",
        f"Command: `.venv/bin/python bench/train.py --iterations {args.iterations}`, "
        f"{datetime.date.today().isoformat()} "
        f"(experiments/toy3d-unet.yaml: 3D U-Net, 8 filters, depth 3, patch 32³, batch 4, "
        "2 epochs, no validation, CPU).",
        "",
        f"Machine: {machine()}.",
        "",
        "| workers | iterations | iterations/s | samples/s | data-wait share | peak RSS (MB) |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['workers']} | {r['iterations']} | {r['it_per_s']:.2f} | "
            f"{r['it_per_s'] * r['batch_size']:.1f} | {100 * r['data_wait_share']:.1f}% | "
            f"{r['peak_rss_mb']:.0f} |"
        )
    share = next((r["data_wait_share"] for r in rows if r["workers"] == 2), None)
    if share is not None:
        verdict = "met" if share < 0.10 else "NOT met"
        lines += [
            "",
            f"Target: data-wait share < 10% with 2 workers — {verdict} ({100 * share:.1f}%).",
        ]
    write_section("train", "\n".join(lines))


if __name__ == "__main__":
    main()
